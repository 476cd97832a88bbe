"""The comparison methods' runner: run folders named by recipe, reused instead of retrained,
shared between configurations with the same runs, and SPNet-c's calibration split."""
from __future__ import annotations

import pytest
import torch

from cagnet.config import load_train_config
from cagnet.errors import ConfigError
from cagnet.methods import MethodRuns, Task, check_methods, recipe_digest, run_seeds, run_task

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY = ["schedules.step1.iterations=2", "schedules.mixed.iterations=4", "schedules.mixed.interval_step1=2",
        "schedules.mixed.interval_step2=2"]


def _config(overrides, *extra):
    return load_train_config("tutorial", [*overrides, *TINY, *extra])


def _mtimes(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*.pt")}


@pytest.mark.slow
def test_runs_are_reused_and_shared_by_recipe(tiny_train_overrides, tmp_path):
    runs = MethodRuns(_config(tiny_train_overrides), 0, tmp_path)
    first = runs.run("CaGNet")
    spnet = runs.run("SPNet")
    stamps = _mtimes(tmp_path)
    assert len([p for p in stamps if p.name == "checkpoint.pt"]) == 2       # step1 + mixed
    # the same recipe again, in a new runner: nothing is trained, the scores are the same
    again = MethodRuns(_config(tiny_train_overrides), 0, tmp_path)
    assert again.run("CaGNet")["hiou"] == first["hiou"] and again.run("SPNet")["hiou"] == spnet["hiou"]
    assert _mtimes(tmp_path) == stamps
    # a change of the mixed schedule only: the step-1 run is shared, a new mixed run is trained
    other = MethodRuns(_config(tiny_train_overrides, "schedules.mixed.gen_unseen_rate=3"), 0, tmp_path)
    other.run("CaGNet")
    assert other.cagnet_folder("step1") == runs.cagnet_folder("step1")
    assert other.cagnet_folder("mixed") != runs.cagnet_folder("mixed")
    assert {p: t for p, t in _mtimes(tmp_path).items() if p in stamps} == stamps
    # another seed is another recipe
    assert MethodRuns(_config(tiny_train_overrides), 1, tmp_path).cagnet_folder("step1") != runs.cagnet_folder("step1")


@pytest.mark.slow
def test_spnet_c_calibrates_on_the_validation_split_when_there_is_one(tiny_train_overrides, tmp_path):
    runs = MethodRuns(_config(tiny_train_overrides), 0, tmp_path, split="test")
    assert runs.calibration == "validation" and runs.held_out == 0
    record = runs.run("SPNet-c")
    assert record["calibration"] == "validation" and record["seen_penalty"] >= 0
    plain = runs.run("SPNet")
    assert plain["num_images"] == record["num_images"] == 8
    (folder,) = tmp_path.glob("spnet-*")
    assert (folder / "calibration.json").is_file()


@pytest.mark.slow
def test_without_a_validation_split_spnet_c_holds_training_images_out(custom_dataset, custom_overrides, tmp_path):
    from cagnet.cli import main

    assert main(["embed", str(custom_dataset)]) == 0
    config = load_train_config("tutorial", [*custom_overrides, "schedules.step1.iterations=2"])
    runs = MethodRuns(config, 0, tmp_path)
    assert runs.calibration == "held_out" and runs.held_out == 1
    record = runs.run("SPNet-c")
    assert record["calibration"] == "held_out" and record["held_out_images"] == 1


@pytest.mark.slow
def test_run_task_adds_context_diagnostics_to_cagnet_rows(tiny_train_overrides, tmp_path):
    runs = MethodRuns(_config(tiny_train_overrides), 0, tmp_path, split="validation")
    record = run_task(runs, Task("CaGNet", "CaGNet", diagnostics=True))
    assert {"kl", "latent_mean_std", "saturated_fraction", "generated_unseen_accuracy",
            "real_unseen_accuracy"} <= set(record["diagnostics"])
    assert "diagnostics" not in run_task(runs, Task("SPNet", "SPNet", diagnostics=True))


def test_run_seeds_checks_its_arguments(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides)
    tasks = [Task("SPNet", "SPNet")]
    with pytest.raises(ConfigError, match="no seed"):
        run_seeds(config, [], tmp_path, tasks)
    with pytest.raises(ConfigError, match="duplicate seeds"):
        run_seeds(config, [1, 1], tmp_path, tasks)
    with pytest.raises(ConfigError, match="jobs"):
        run_seeds(config, [0], tmp_path, tasks, jobs=0)
    with pytest.raises(ConfigError, match="duplicate row names"):
        run_seeds(config, [0], tmp_path, tasks * 2)
    with pytest.raises(ConfigError, match="unknown method"):
        check_methods(["CaGNet++"])


def test_recipe_digest_is_stable_and_order_free():
    assert recipe_digest({"a": 1, "b": [1, 2]}) == recipe_digest({"b": [1, 2], "a": 1})
    assert recipe_digest({"a": 1}) != recipe_digest({"a": 2}) and len(recipe_digest({})) == 12


@pytest.mark.slow
def test_a_baseline_file_of_another_recipe_is_not_reused(tiny_train_overrides, tmp_path):
    runs = MethodRuns(_config(tiny_train_overrides), 0, tmp_path)
    model = runs.spnet()
    (folder,) = tmp_path.glob("spnet-*")
    (folder / "recipe.json").write_text('{"method": "spnet", "changed": true}')
    retrained = MethodRuns(_config(tiny_train_overrides), 0, tmp_path).spnet()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), retrained.state_dict().values()))
    assert '"changed"' not in (folder / "recipe.json").read_text()
