"""A dataset with its own classes, end to end through the command line: embed, check, train,
evaluate, predict (the README's "Your own dataset" walk-through), on images of odd sizes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cagnet.cli import main

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _sets(overrides):
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.mark.slow
def test_embed_check_train_evaluate_predict(custom_dataset, custom_overrides, tmp_path, capsys):
    root = custom_dataset
    assert main(["embed", str(root)]) == 0
    assert main(["check", str(root), "--no-progress"]) == 0
    assert "OK; checked metadata and 7 image/annotation pair(s)" in capsys.readouterr().out

    # the tutorial config as it is, pointed at the dataset: its data.synthetic does not apply here
    sets = _sets(custom_overrides)
    runs = tmp_path / "runs"
    assert main(["train", "--config", "tutorial", "--schedule", "step1", "--out", str(runs / "step1"), *sets,
                 "--set", "schedules.step1.iterations=3", "--no-progress"]) == 0
    assert "finished at iteration 3" in capsys.readouterr().out
    assert main(["train", "--config", "tutorial", "--schedule", "mixed", "--out", str(runs / "mixed"), *sets,
                 "--set", "schedules.mixed.iterations=2", "--set", "schedules.mixed.interval_step1=1",
                 "--set", "schedules.mixed.interval_step2=1", "--no-progress"]) == 0
    assert "finished at iteration 2" in capsys.readouterr().out
    assert not (root / "benchmark.json").exists()
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "images", "labels_refined.txt", "split",
                                                      "word_vectors"]

    checkpoint = str(runs / "mixed" / "checkpoint.pt")
    for protocol in ("original", "full"):
        scores_path = tmp_path / f"scores_{protocol}.json"
        assert main(["evaluate", "--config", "tutorial", "--checkpoint", checkpoint, *sets, "--protocol", protocol,
                     "--json", str(scores_path), "--no-progress"]) == 0
        assert "3 test images" in capsys.readouterr().out
        scores = json.loads(scores_path.read_text())["scores"]
        assert scores["class_names"] == ["sky", "grass", "road", "potted plant", "water"]
        assert scores["num_seen"] == 3 and scores["num_unseen"] == 2 and len(scores["class_iou"]) == 5

    out = tmp_path / "predictions"
    images = root / "images" / "val"
    assert main(["predict", "--config", "tutorial", "--checkpoint", checkpoint, *sets, str(images),
                 "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    sizes = [Image.open(path).size for path in sorted(images.iterdir())]   # (width, height), odd sizes
    assert len(records) == len(sizes) == 3 and len(set(sizes)) == 3
    for record, (width, height) in zip(records, sizes):
        assert (record["height"], record["width"]) == (height, width)
        labels = np.asarray(Image.open(record["labels"]))
        assert labels.shape == (height, width) and set(np.unique(labels)) <= {0, 1, 2, 3, 4}
        assert Image.open(record["overlay"]).format == "PNG"
        assert {c["name"]: c["unseen"] for c in record["classes"]} == {
            "sky": False, "grass": False, "road": False, "potted plant": True, "water": True}


def test_top_p_is_checked_for_self_training_only(custom_dataset, custom_overrides, tmp_path, cli_error):
    assert main(["embed", str(custom_dataset)]) == 0
    sets = _sets(custom_overrides)
    err = cli_error(["train", "--config", "tutorial", "--schedule", "st", "--out", str(tmp_path / "st"), *sets,
                     "--set", "schedules.st.top_p=7", "--init-model", str(tmp_path / "none.pt")])
    assert "schedules.st.top_p: 7 exceeds the 6 classifier outputs" in err


def test_a_folder_that_is_neither_a_dataset_nor_the_benchmark_is_not_overwritten(tmp_path, cli_error):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    err = cli_error(["train", "--config", "tutorial", "--set", f"data.root={folder}", "--out", str(tmp_path / "r")])
    assert str(folder) in err and "refusing to overwrite" in err
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]
