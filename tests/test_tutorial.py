import pytest

from cagnet.config import SCHEDULE_NAMES, load_train_config
from cagnet.data import default_data_root
from cagnet.errors import ConfigError
from cagnet.tutorial import (BUDGET_VARIABLE, SMOKE_INTERVALS, SMOKE_ITERATIONS, default_runs_root, project_root,
                             run_budget, smoke_overrides)


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(BUDGET_VARIABLE, raising=False)
    assert run_budget() == "full"
    monkeypatch.setenv(BUDGET_VARIABLE, "smoke")
    assert run_budget() == "smoke"
    monkeypatch.setenv(BUDGET_VARIABLE, "smok")
    with pytest.raises(ConfigError, match="CAGNET_BUDGET.*'smok'"):
        run_budget()


def test_smoke_overrides_shrink_every_schedule_of_the_tutorial():
    full = load_train_config("tutorial")
    smoke = load_train_config("tutorial", smoke_overrides())
    assert set(SMOKE_ITERATIONS) == set(SCHEDULE_NAMES)
    for name in SCHEDULE_NAMES:
        assert smoke.schedule(name).iterations == SMOKE_ITERATIONS[name] < full.schedule(name).iterations
    for name in ("mixed", "st_mixed"):
        for key, value in SMOKE_INTERVALS.items():
            assert getattr(smoke.schedule(name), key) == value
    # nothing else changes
    assert smoke.model == full.model and smoke.data == full.data


def test_runs_and_data_live_in_the_project_root(monkeypatch):
    from cagnet import files

    root = project_root()
    assert files.project_root() == root
    assert (root / "pyproject.toml").is_file() and (root / "cagnet" / "tutorial.py").is_file()
    assert default_runs_root("tutorial", "full") == root / "runs" / "tutorial"
    assert default_runs_root("tutorial", "smoke") == root / "runs" / "tutorial_smoke"
    with pytest.raises(ConfigError, match="'fast'"):
        default_runs_root("tutorial", "fast")
    monkeypatch.delenv("CAGNET_DATA", raising=False)
    assert default_data_root() == root / "data" / "synthetic"


def test_smoke_overrides_shrink_the_pretraining_too():
    full = load_train_config("tutorial")
    smoke = load_train_config("tutorial", smoke_overrides())
    assert smoke.pretrain.iterations < full.pretrain.iterations
    assert smoke.pretrain.num_images < full.pretrain.num_images


@pytest.mark.slow
def test_chapter_sets_up_a_notebook_and_shares_its_runs(tiny_train_overrides, tmp_path, monkeypatch):
    import torch

    from cagnet.tutorial import chapter

    monkeypatch.setenv(BUDGET_VARIABLE, "full")
    previous = torch.get_num_threads()
    try:
        ch = chapter(runs_root=tmp_path, num_threads=1,
                     overrides=[*tiny_train_overrides, "schedules.step1.iterations=2"])
        assert torch.get_num_threads() == 1 and ch.config.runtime.num_threads == 1
    finally:
        torch.set_num_threads(previous)
    assert ch.budget == "full" and ch.runs_root == tmp_path and ch.config.schedule("step1").iterations == 2
    assert ch.num_seen == 12 and ch.num_unseen == 4 and len(ch.class_names) == 16
    assert len(ch.dataset("validation")) == 8 and ch.dataset("validation").split == "validation"
    assert "12 seen" in ch.describe()
    folder = ch.cagnet_run("step1")
    assert folder == ch.runs.cagnet_folder("step1") and (folder / "checkpoint.pt").is_file()
    stamp = (folder / "checkpoint.pt").stat().st_mtime_ns
    again = chapter(runs_root=tmp_path, num_threads=0, overrides=[*tiny_train_overrides, "schedules.step1.iterations=2"])
    assert again.cagnet_run("step1") == folder and (folder / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert not again.cagnet_model("step1").training


def test_error_breakdown_reads_the_error_map_of_a_hand_built_prediction():
    import numpy as np

    from cagnet.tutorial import error_breakdown

    names = ["red_dotted", "red_wavy", "blue_wavy"]            # blue_wavy unseen
    labels = [np.array([[0, 1], [2, 255]])]
    predicted = [np.array([[0, 0], [1, 2]])]                  # red_wavy -> red_dotted, blue_wavy -> red_wavy
    table = error_breakdown(labels, {"CaGNet": predicted}, names, num_seen=2)
    row = table.loc["CaGNet"]
    assert row["wrong"] == pytest.approx(2 / 3)
    assert row["wrong pixels within one colour"] == pytest.approx(0.5)
    assert sum(row[name] for name in table.columns if name not in ("wrong", "wrong pixels within one colour",
                                                                     "most frequent confusion")) == pytest.approx(2 / 3)
