"""Tests of cagnet.data.check and ``python -m cagnet check``."""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cagnet.cli import main
from cagnet.data.check import check_dataset, run_check

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_fake_dataset(root: Path, seed=0) -> Path:
    """6 labels (seen 1 2 3, unseen 5 4), train a b c, test (val) d e, fastText/word2vec pickles."""
    rng = np.random.default_rng(seed)
    (root / "split").mkdir(parents=True)
    (root / "labels_refined.txt").write_text("0\tbackground\n1\tcat\n2\tdog\n3\ttree\n4\tcar\n5\tsky\n")
    np.save(root / "split" / "seen_cls.npy", np.array([1, 2, 3]))
    np.save(root / "split" / "novel_cls.npy", np.array([5, 4]))
    for folder, ids in (("train", "abc"), ("val", "de")):
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for k, image_id in enumerate(ids):
            image = rng.integers(0, 256, size=(16, 18, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / folder / f"{image_id}{'.jpg' if k % 2 else '.png'}")
            label = rng.choice(np.array([0, 1, 2, 3, 4, 5, 255], dtype=np.uint8), size=(16, 18))
            Image.fromarray(label).save(root / "annotations" / folder / f"{image_id}.png")
    (root / "word_vectors").mkdir()
    for stem in ("fasttext", "word2vec"):
        (root / "word_vectors" / f"{stem}.pkl").write_bytes(pickle.dumps(rng.normal(size=(6, 300)), protocol=3))
    return root


def _break_dataset(root: Path) -> dict[str, Path]:
    """Four independent problems; returns the file each one should be reported against."""
    broken = {
        "missing annotation": root / "annotations" / "train" / "b.png",
        "truncated image": root / "images" / "train" / "c.png",
        "label id": root / "annotations" / "val" / "d.png",
        "embedding shape": root / "word_vectors" / "word2vec.pkl",
    }
    broken["missing annotation"].unlink()
    data = broken["truncated image"].read_bytes()
    broken["truncated image"].write_bytes(data[: len(data) // 2])
    label = np.zeros((16, 18), dtype=np.uint8)
    label[0, 0] = 9
    Image.fromarray(label).save(broken["label id"])
    broken["embedding shape"].write_bytes(pickle.dumps(np.ones((5, 300)), protocol=3))
    return broken


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fake_root(tmp_path) -> Path:
    return make_fake_dataset(tmp_path / "fake")


def test_valid_dataset_has_no_problems(fake_root, capsys):
    report = run_check(fake_root, progress=False)
    assert report.problems == [] and report.pairs_checked == 5
    assert main(["check", str(fake_root), "--no-progress"]) == 0
    assert "OK" in capsys.readouterr().out


def test_every_problem_is_listed_once_per_line(fake_root, capsys):
    broken = _break_dataset(fake_root)
    before = _snapshot(fake_root)
    problems = check_dataset(fake_root, progress=False)
    assert len(problems) == 4, problems
    for kind, path in broken.items():
        assert sum(str(path) in line for line in problems) == 1, (kind, problems)
    assert all("\n" not in line for line in problems)
    assert main(["check", str(fake_root), "--no-progress"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == problems and "4 problem(s)" in out[-1]
    assert _snapshot(fake_root) == before  # read-only


def test_split_and_embedding_options(fake_root, capsys):
    _break_dataset(fake_root)
    train_only = check_dataset(fake_root, splits=("train",), embedding="none", progress=False)
    assert len(train_only) == 2 and all("/train/" in line for line in train_only)
    assert main(["check", str(fake_root), "--split", "test", "--embedding", "none", "--no-progress"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "d.png" in lines[0]


def test_size_mismatch_and_bad_metadata_are_reported(fake_root):
    Image.fromarray(np.zeros((16, 17), dtype=np.uint8)).save(fake_root / "annotations" / "val" / "e.png")
    np.save(fake_root / "split" / "novel_cls.npy", np.array([5, 40]))
    problems = check_dataset(fake_root, progress=False)
    assert any("e.png" in line and "differs" in line for line in problems), problems
    assert any("novel_cls.npy" in line and "40" in line for line in problems), problems


def test_missing_folder_exits_1(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere"), "--no-progress"]) == 1
    assert "not found" in capsys.readouterr().out


def test_module_entry_point(fake_root):
    _break_dataset(fake_root)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "cagnet", "check", str(fake_root), "--split", "train"],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "b.png" in result.stdout and "c.png" in result.stdout
