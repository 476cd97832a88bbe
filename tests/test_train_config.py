"""Training configuration: packaged configs, the original's values, errors naming the key."""
from __future__ import annotations

import pytest
import yaml

from cagnet.config import (PACKAGED_CONFIGS, SCHEDULE_KEYS_READ_BY, SCHEDULE_NAMES, ScheduleConfig, TrainConfig,
                           check_unread_schedule_keys, load_train_config, train_config_from_dict, unread_schedule_keys)
from cagnet.config_io import to_dict
from cagnet.errors import ConfigError


@pytest.mark.parametrize("name", PACKAGED_CONFIGS)
def test_packaged_configs_load_and_round_trip(name):
    config = load_train_config(name)
    assert isinstance(config, TrainConfig)
    assert config.name == name
    assert all(getattr(config.schedules, s) is not None for s in SCHEDULE_NAMES)
    assert train_config_from_dict(to_dict(config)) == config


def test_dataset_configs_use_the_original_models():
    assert load_train_config("voc12").model.num_outputs == 21
    assert load_train_config("context").model.num_outputs == 34
    assert load_train_config("cocostuff").model.num_outputs == 183
    assert load_train_config("voc12").model.backbone_blocks == (3, 4, 23, 3)
    assert load_train_config("tutorial").model.backbone == "deeplabv2_tiny"


# (original file, schedule, lr key of the original) for the files the reference folder ships
ORIGINAL_FILES = [
    ("voc12.yaml", "voc12", "step1", "lr", "ITER_MAX"),
    ("voc12_finetune.yaml", "voc12", "mixed", "lr_transfer", "ITER_MAX_TRANSFER"),
    ("configs_st_voc.yaml", "voc12", "st", "lr_st", "ITER_MAX_ST"),
    ("configs_st_transfer_voc.yaml", "voc12", "st_mixed", "lr_st_transfer", "ITER_MAX_ST_TRANSFER"),
    ("context.yaml", "context", "step1", "lr", "ITER_MAX"),
    ("context_finetune.yaml", "context", "mixed", "lr_transfer", "ITER_MAX_TRANSFER"),
    ("cocostuff.yaml", "cocostuff", "step1", "lr", "ITER_MAX"),
    ("cocostuff_finetune.yaml", "cocostuff", "mixed", "lr_transfer", "ITER_MAX_TRANSFER"),
]


def _value(section, key):
    for part in key.split("."):
        section = getattr(section, part)
    return section


@pytest.mark.parametrize("filename, name, schedule, lr_key, iter_key", ORIGINAL_FILES)
def test_packaged_values_equal_the_original_configs(original_reference_dir, filename, name, schedule, lr_key,
                                                    iter_key):
    original = yaml.safe_load((original_reference_dir / "configs" / filename).read_text())
    _check_schedule_against_original(original, load_train_config(name), schedule, lr_key, iter_key)


# CaGNetv2's files (shared/original_cagnetv2/configs): voc12_pa3.yaml is its patch-wise step 1; the
# patch-wise finetuning is the pixel-wise *_finetune_pi.yaml with voc12_pa3's patch keys (crop 376,
# patchsize 3, a block bank); Context and COCO-Stuff ship only pixel-wise files, so their _pa3
# configs take the same patch keys. (original file, config, schedule, lr key, iteration key, crop
# the packaged config uses instead of the file's: the derived patch key)
ORIGINAL_V2_FILES = [
    ("voc12_pa3.yaml", "voc12_pa3", "step1", "lr", "ITER_MAX", None),
    ("voc12_finetune_pi.yaml", "voc12_pa3", "mixed", "lr_transfer", "ITER_MAX_TRANSFER", 376),
    ("context_pi.yaml", "context_pa3", "step1", "lr", "ITER_MAX", 376),
    ("context_finetune_pi.yaml", "context_pa3", "mixed", "lr_transfer", "ITER_MAX_TRANSFER", 376),
    ("cocostuff_pi.yaml", "cocostuff_pa3", "step1", "lr", "ITER_MAX", 376),
    ("cocostuff_finetune_pi.yaml", "cocostuff_pa3", "mixed", "lr_transfer", "ITER_MAX_TRANSFER", 376),
]


@pytest.mark.parametrize("filename, name, schedule, lr_key, iter_key, crop", ORIGINAL_V2_FILES)
def test_packaged_patch_values_equal_the_original_v2_configs(original_v2_reference_dir, filename, name, schedule,
                                                             lr_key, iter_key, crop):
    original = yaml.safe_load((original_v2_reference_dir / "configs" / filename).read_text())
    config = load_train_config(name)
    if crop is not None:   # the derived patch key: a feature grid of whole 3x3 blocks
        assert original["IMAGE"]["SIZE"]["TRAIN"] == 368
        original["IMAGE"]["SIZE"]["TRAIN"] = crop
    _check_schedule_against_original(original, config, schedule, lr_key, iter_key)
    assert config.model.patch_size == original.get("patchsize", 3)
    assert config.model.num_outputs == original["dis"]["out_dim_cls"]
    for step2 in ("mixed", "st_mixed"):   # the block bank (the original's generated_patch_dir)
        section = config.schedule(step2)
        assert (section.block_source, section.fuse_ratio) == ("bank", 8)
        assert section.bank_path is None and config.patches is not None   # the bank of section patches


def _check_schedule_against_original(original: dict, config, schedule: str, lr_key: str, iter_key: str) -> None:
    """Every value of the original config file that schedule ``schedule`` of ``config`` reads."""
    section = config.schedule(schedule)
    assert section.iterations == original[iter_key]
    assert section.backbone_lr == pytest.approx(original["back_opt"][lr_key])
    assert section.generator_lr == pytest.approx(original["gen_opt"][lr_key])
    assert section.discriminator_lr == pytest.approx(original["dis_opt"][lr_key])
    assert section.update_backbone == (original["update_back"] == "t")
    assert section.backbone_poly_every == original["back_scheduler"]["lr_decay_iter"]
    for mine, theirs in ((section.generator_decay, original["gen_scheduler"]),
                         (section.discriminator_decay, original["dis_scheduler"])):
        assert (mine.start_decay_iter, mine.step_size) == (theirs["start_decay_iter"], theirs["step_size"])
        assert mine.gamma == pytest.approx(theirs["gamma"])
    # the original's value of every key the schedule reads; the others are left at their defaults
    defaults = ScheduleConfig(iterations=1)
    for key, value in [*((f"losses.{k}", v) for k, v in vars(section.losses).items()),
                       *((k, getattr(section, k)) for k in ("gen_unseen_rate", "top_p", "interval_step1",
                                                            "interval_step2", "first"))]:
        name_in_original = key.split(".")[-1]
        if schedule in SCHEDULE_KEYS_READ_BY.get(key, SCHEDULE_NAMES):
            assert value == pytest.approx(original[name_in_original]), key
        else:
            assert value == _value(defaults, key), key
    batch = section.batch_size or config.data.batch_size
    if "BATCH_SIZE" in original:
        assert batch == original["BATCH_SIZE"]["TRAIN"]
    if "IMAGE" in original:
        assert (section.crop_size or config.data.crop_size) == original["IMAGE"]["SIZE"]["TRAIN"]
    assert config.optim.backbone_momentum == original["back_opt"]["MOMENTUM"]
    assert config.optim.backbone_weight_decay == original["back_opt"]["WEIGHT_DECAY"]
    assert config.optim.discriminator_weight_decay == original["dis_opt"]["weight_decay"]
    assert config.optim.generator_weight_decay == original["gen_opt"]["weight_decay"]
    assert config.losses.gan_type == original["gan_type"]


def test_overrides_apply_with_types():
    config = load_train_config("tutorial", ["schedules.step1.iterations=7", "data.root=/x", "runtime.amp=bf16",
                                            "model.feature_dim=32"])
    assert config.schedule("step1").iterations == 7
    assert config.data.root == "/x"
    assert config.runtime.amp == "bf16"
    assert config.model.feature_dim == 32


@pytest.mark.parametrize("override, message", [
    ("schedules.step1.itrations=3", "unknown config key 'schedules.step1.itrations' (did you mean 'iterations'?)"),
    ("runtime.ampp=bf16", "unknown config key 'runtime.ampp' (did you mean 'amp'?)"),
    ("runtime.amp=fp8", "runtime.amp: expected one of"),
    ("schedules.mixed.first=step3", "schedules.mixed.first"),
    ("schedules.st.iterations=0", "schedules.st.iterations: must be > 0"),
    ("schedules.step1.generator_decay.gamma=-1", "schedules.step1.generator_decay.gamma"),
    ("data.crop_size=big", "data.crop_size: expected an integer"),
    ("data.synthetic.num_trian=3", "data.synthetic"),
    ("model.feature_dimm=3", "feature_dimm"),
    ("optim.lr_multipliers.aspp=3", "unknown config key 'optim.lr_multipliers.aspp'"),
    ("runtime.device=tpu", "runtime.device"),
    ("schedules.step1.backbone_lr=.nan", "schedules.step1.backbone_lr: expected a finite number, got nan"),
    ("schedules.step1.losses.lambda_B_KLD=-.inf", "schedules.step1.losses.lambda_B_KLD: expected a finite number"),
    ("schedules.step1.generator_lr=1e999", "schedules.step1.generator_lr: expected a finite number"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_train_config("tutorial", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_config_name_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown config 'voc2012'"):
        load_train_config("voc2012")
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(str(tmp_path / "nope.yaml"))


def test_config_from_a_yaml_file_takes_its_stem_as_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {preset: tiny}\nschedules:\n  step1: {iterations: 5}\n")
    config = load_train_config(str(path))
    assert config.name == "mine"
    assert config.schedule("step1").iterations == 5
    with pytest.raises(ConfigError, match="no schedules.mixed section"):
        config.schedule("mixed")


def test_missing_required_iterations_names_the_section():
    with pytest.raises(ConfigError, match="schedules.step1"):
        load_train_config({"schedules": {"step1": {}}})


@pytest.mark.parametrize("name", ["voc12", "context", "cocostuff"])
def test_original_dataset_configs_give_no_key_their_schedule_ignores(name):
    assert unread_schedule_keys(load_train_config(name)) == []


def test_keys_a_schedule_ignores_are_named_with_the_schedules_that_read_them():
    config = load_train_config("tutorial")
    assert unread_schedule_keys(config) == []    # the packaged configs carry only keys their schedules read
    for name in ("voc12", "context", "cocostuff"):
        check_unread_schedule_keys(load_train_config(name))
    # a loaded config with an ignored key is refused, naming the key and the schedules that read it
    with pytest.raises(ConfigError, match=r"^schedules\.step1\.top_p: 5 would be ignored: only st reads it"):
        load_train_config("tutorial", ["schedules.step1.top_p=5"])
    with pytest.raises(ConfigError, match=r"^schedules\.st\.first: 'step2' would be ignored: only mixed and st_mixed"):
        load_train_config("tutorial", ["schedules.st.first=step2"])
    with pytest.raises(ConfigError, match=r"^schedules\.step1\.losses\.lambda_G_cls_transfer: 1\.0 would be ignored"):
        load_train_config("tutorial", ["schedules.step1.losses.lambda_G_cls_transfer=1"])
    # keys left at their defaults, and keys of the schedules that read them, are fine
    load_train_config("tutorial", ["schedules.step1.top_p=1", "schedules.mixed.gen_unseen_rate=30",
                                   "schedules.st.top_p=3"])
