"""The comparison methods' runner: run folders named by recipe, reused instead of retrained,
shared between configurations with the same runs, the calibrated rows and their calibration
split, and CaGNetv2's patch-wise config."""
from __future__ import annotations

import json
import math

import pytest
import torch

from cagnet.config import PACKAGED_CONFIGS, load_train_config
from cagnet.config_io import to_dict
from cagnet.errors import ConfigError
from cagnet.methods import (DEFAULT_METHODS, METHODS, MethodRuns, Task, calibrated_method, check_methods,
                            patchwise_config, patchwise_overrides, recipe_digest, run_seeds, run_task, trained_method)

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
    assert record["calibration"] == "validation" and math.isfinite(record["seen_penalty"])
    assert isinstance(record["best_at_edge"], bool) and "trained_on_calibration_images" not in record
    plain = runs.run("SPNet")
    assert plain["num_images"] == record["num_images"] == 8
    (folder,) = tmp_path.glob("spnet-*")
    assert (folder / "calibration.json").is_file()


@pytest.mark.slow
def test_without_a_validation_split_spnet_c_holds_training_images_out(custom_dataset, custom_overrides, tmp_path):
    from cagnet.cli import main

    assert main(["embed", str(custom_dataset)]) == 0
    config = load_train_config("tutorial", [*custom_overrides, "schedules.step1.iterations=2",
                                            "schedules.mixed.iterations=2"])
    runs = MethodRuns(config, 0, tmp_path)
    assert runs.calibration == "held_out" and runs.held_out == 1
    record = runs.run("SPNet-c")
    assert record["calibration"] == "held_out" and record["held_out_images"] == 1
    assert record["trained_on_calibration_images"] is False       # SPNet trains without the held-out image
    # the other methods' models are shared with their uncalibrated rows: trained on every image
    other = runs.run("ZS3Net-c")
    assert other["calibration"] == "held_out" and other["trained_on_calibration_images"] is True
    stored = json.loads((runs.run_folder("ZS3Net") / "calibration.json").read_text())
    assert stored["held_out_images"] == 1 and len(stored["balance"]) == len(stored["penalties"])


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


def test_method_names():
    assert METHODS[:4] == ("SPNet", "SPNet-c", "ZS3Net", "ZS3Net-c") and len(METHODS) == 14
    assert set(DEFAULT_METHODS) == {"SPNet", "SPNet-c", "ZS3Net", "ZS3Net+ST", "CaGNet", "CaGNet+ST"}
    assert trained_method("CaGNet+ST-c") == "CaGNet+ST" and trained_method("CaGNetv2") == "CaGNetv2"
    assert calibrated_method("ZS3Net+ST") == calibrated_method("ZS3Net+ST-c") == "ZS3Net+ST-c"
    assert check_methods(["CaGNetv2-c", "CaGNet-c", "SPNet"]) == ("SPNet", "CaGNet-c", "CaGNetv2-c")
    with pytest.raises(ConfigError, match="unknown method 'CaGNet-c-c'"):
        check_methods(["CaGNet-c-c"])


@pytest.mark.slow
def test_calibrated_rows_reuse_the_trained_model(tiny_train_overrides, tmp_path):
    from cagnet.evaluate import evaluate

    runs = MethodRuns(_config(tiny_train_overrides), 0, tmp_path, split="validation")
    plain = runs.run("CaGNet")
    stamps = _mtimes(tmp_path)
    calibrated = runs.run("CaGNet-c")
    assert _mtimes(tmp_path) == stamps                                   # nothing trained again
    assert calibrated["calibration"] == "validation" and math.isfinite(calibrated["seen_penalty"])
    assert isinstance(calibrated["best_at_edge"], bool)
    # scored on the split it was chosen on: the oracle, and no worse than the plain argmax (penalty 0 is tried)
    assert calibrated["hiou"] == calibrated["oracle_hiou"] >= plain["hiou"]
    # its scores are evaluate's at the chosen penalty, from the sweep's forward pass
    direct = evaluate(runs.model("CaGNet-c"), runs.eval_set, runs.info, test_size=runs.config.data.test_size,
                      batch_size=runs.config.data.test_batch_size, seen_penalty=calibrated["seen_penalty"])
    for key in ("hiou", "miou", "seen_miou", "unseen_miou", "pixel_acc", "mean_acc"):
        assert calibrated[key] == pytest.approx(direct[key]), key
    assert 0.0 <= calibrated["seen_as_unseen"] <= 1.0 and calibrated["num_images"] == 8
    stored = json.loads((runs.run_folder("CaGNet") / "calibration.json").read_text())
    assert runs.run_folder("CaGNet") == runs.cagnet_folder("mixed")
    assert stored["method"] == "CaGNet-c" and stored["seen_penalty"] == calibrated["seen_penalty"]
    assert 0.0 in stored["penalties"] and len(stored["unseen_share"]) == len(stored["penalties"])
    assert runs.penalty("CaGNet")["seen_penalty"] == runs.penalty("CaGNet-c")["seen_penalty"] \
        == calibrated["seen_penalty"]
    assert runs.penalty("SPNet")["method"] == "SPNet-c"


@pytest.mark.parametrize("name", ["tutorial", "voc12", "context", "cocostuff"])
def test_the_patchwise_form_of_a_packaged_config_is_its_pa3_config(name):
    config = load_train_config(name)
    overrides = patchwise_overrides(config)
    assert "model.patch_size=3" in overrides
    patch = load_train_config(name, list(overrides))
    expected = to_dict(load_train_config(f"{name}_pa3"))
    assert to_dict(patch) == {**expected, "name": name}


def test_the_patchwise_form_of_other_configs(tmp_path, monkeypatch):
    # a tutorial with a small crop: the crop grows to the next whole 3x3 grid, 48 (7x7) -> 64 (9x9)
    def small_overrides():
        return ["data.crop_size=48", "schedules.mixed.crop_size=40"]

    small = load_train_config("tutorial", small_overrides())
    overrides = patchwise_overrides(small)
    assert overrides[:3] == ("model.patch_size=3", "data.crop_size=64", "schedules.mixed.crop_size=40")
    # the rest: tutorial_pa3's other differences from tutorial, as they are there
    expected = to_dict(load_train_config("tutorial_pa3", ["data.crop_size=64", "schedules.mixed.crop_size=40"]))
    assert to_dict(load_train_config("tutorial", [*small_overrides(), *overrides])) == {**expected, "name": "tutorial"}
    # a config of its own (no packaged _pa3): the patch size and the crop only
    data = to_dict(load_train_config("tutorial"))
    data["name"] = "my_config"
    mine = load_train_config(data)
    assert patchwise_overrides(mine) == ("model.patch_size=3", "data.crop_size=136")
    # the block source: pure one-class blocks, or a bank of label blocks
    assert patchwise_overrides(mine, "pure")[2:] == ("schedules.mixed.block_source=pure", "schedules.mixed.bank_path=null",
                                                     "schedules.st_mixed.block_source=pure",
                                                     "schedules.st_mixed.bank_path=null")
    bank = tmp_path / "bank.pt"
    bank.write_bytes(b"")
    patch = patchwise_config(mine, str(bank))
    assert patch.model.patch_size == 3 and patch.schedule("st_mixed").block_source == "bank"
    assert patch.schedule("mixed").bank_path == str(bank)
    # a bank that is not there: one line naming it, before anything trains
    missing = tmp_path / "none.pt"
    with pytest.raises(ConfigError, match=rf"schedules.mixed.bank_path {missing}: no such file.*--patch-bank"):
        patchwise_config(mine, str(missing))
    assert patchwise_config(load_train_config("voc12"), "pure").schedule("mixed").block_source == "pure"
    with pytest.raises(ConfigError, match="patch-wise already"):
        patchwise_overrides(load_train_config("tutorial_pa3"))
    with pytest.raises(ConfigError, match="empty"):
        patchwise_overrides(mine, " ")
    import cagnet.train.steps

    monkeypatch.setattr(cagnet.train.steps, "feature_grid", lambda model, size: (size[0] // 8, size[1] // 8 + 1))
    with pytest.raises(ConfigError, match="cannot derive a patch-wise crop from data.crop_size 128"):
        patchwise_overrides(mine)
    assert {"tutorial", "voc12", "context", "cocostuff"} <= {n.removesuffix("_pa3") for n in PACKAGED_CONFIGS}


@pytest.mark.slow
def test_cagnetv2_rows_train_the_patchwise_config(tiny_train_overrides, tmp_path):
    # pure one-class blocks: no bank of label blocks to build for this test
    runs = MethodRuns(_config(tiny_train_overrides), 0, tmp_path, split="validation", patch_bank="pure")
    record = runs.run("CaGNetv2")
    model = runs.model("CaGNetv2")
    assert model.discriminator.patch_size == 3 and runs.model("CaGNet").discriminator.patch_size == 1
    patch = runs.patchwise()
    assert patch.config.model.patch_size == 3 and patch.config.data.crop_size == 64     # 48 -> a 9x9 grid
    assert patch.config.schedule("mixed").block_source == "pure"
    assert runs.run_folder("CaGNetv2-c") == patch.cagnet_folder("mixed") != runs.cagnet_folder("mixed")
    assert "patch_size: 3" in (patch.cagnet_folder("step1") / "config.yaml").read_text()
    assert record["num_images"] == 8 and 0.0 <= record["hiou"] <= 1.0
    calibrated = runs.run("CaGNetv2-c")
    assert calibrated["hiou"] >= record["hiou"] and calibrated["calibration"] == "validation"
