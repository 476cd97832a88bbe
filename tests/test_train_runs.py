"""Run folders: recipes, finished and current runs, the model of a run."""
from __future__ import annotations

import os

import pytest
import torch

from cagnet.config import load_train_config
from cagnet.config_io import to_dict
from cagnet.errors import ConfigError
from cagnet.train import runs
from cagnet.train.engine import train

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _config(overrides, *extra):
    return load_train_config("tutorial", [*overrides, *extra])


def test_finished_run_matches_the_recipe(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=2")
    folder = tmp_path / "step1"
    assert not runs.finished_run(folder, "step1", config)                  # nothing there yet
    train(config, "step1", folder, progress=False, verbose=False)
    assert runs.finished_run(folder, "step1", config)
    # runtime settings other than the seed, and schedules after step1, are not part of its recipe
    assert runs.finished_run(folder, "step1", _config(tiny_train_overrides, "schedules.step1.iterations=2",
                                                        "runtime.log_interval=1", "schedules.mixed.iterations=7"))
    recipe = runs.run_recipe(to_dict(config), "step1")
    assert recipe["seed"] == config.runtime.seed and list(recipe["schedules"]) == ["step1"]
    assert "runtime" not in recipe
    assert list(runs.run_recipe(to_dict(config), "st")["schedules"]) == ["step1", "mixed", "st"]
    for changed in ("schedules.step1.backbone_lr=0.002", "runtime.seed=5", "losses.gan_type=gan",
                    "schedules.step1.iterations=3"):
        assert not runs.finished_run(folder, "step1", _config(tiny_train_overrides,
                                                                "schedules.step1.iterations=2", changed)), changed
    assert not runs.finished_run(folder, "mixed", config)                  # another schedule's run
    lines = (folder / "eval.jsonl").read_text().splitlines()
    (folder / "eval.jsonl").write_text("\n".join(lines[:-1]) + "\n")           # final evaluation missing
    assert not runs.finished_run(folder, "step1", config)
    (folder / "eval.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")               # unreadable
    assert not runs.finished_run(folder, "step1", config)
    (folder / "checkpoint.pt").unlink()                                       # missing
    assert not runs.finished_run(folder, "step1", config)
    with pytest.raises(ConfigError, match="unknown schedule 'step2'"):
        runs.run_recipe(to_dict(config), "step2")


def test_current_run_needs_a_finished_run_newer_than_its_start(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=2", "schedules.mixed.iterations=2")
    assert not runs.current_run(tmp_path, "step1", config)
    train(config, "step1", tmp_path / "step1", progress=False, verbose=False)
    assert runs.current_run(tmp_path, "step1", config)                      # no init_from
    assert not runs.current_run(tmp_path, "mixed", config)
    trained = train(config, "mixed", tmp_path / "mixed", progress=False, verbose=False)
    assert runs.current_run(tmp_path, "mixed", config)
    step1_checkpoint = tmp_path / "step1" / "checkpoint.pt"
    later = (tmp_path / "mixed" / "checkpoint.pt").stat().st_mtime + 10
    os.utime(step1_checkpoint, (later, later))                                # step 1 trained again since
    assert not runs.current_run(tmp_path, "mixed", config)
    step1_checkpoint.unlink()                                                 # its start is gone
    assert not runs.current_run(tmp_path, "mixed", config)
    model = runs.load_run_model(tmp_path / "mixed", config)
    assert not model.training
    assert next(runs.load_run_model(tmp_path / "mixed", config, torch.device("cpu")).parameters()).device.type == "cpu"
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained.model.state_dict()[name].cpu()), name
