"""Backbone pretraining on generated textures: its scenes never show a benchmark class, it is
deterministic and cached, and every method starts from it through the original init layout."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from cagnet.config import load_train_config
from cagnet.data import synthetic
from cagnet.data.pretraining import (PRETRAIN_COLOURS, PRETRAIN_PATTERNS, PretrainingSceneConfig,
                                     benchmark_hue_margin, generate_pretraining_sample, hue_distance, hue_of_rgb,
                                     illuminated_hue_margin)
from cagnet.data.scenes import SceneLighting
from cagnet.errors import ConfigError
from cagnet.models import build_cagnet, load_checkpoint
from cagnet.pretrain import (PRETRAINED, PretrainNet, cached_pretrained, ensure_pretrained, pretrain_backbone,
                             pretrained_path, recipe, resolve_init_model, scene_lighting)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SCENES = PretrainingSceneConfig(seed=5, num_images=6, image_size=64)


def _config(tiny_train_overrides, *extra):
    return load_train_config("tutorial", [*tiny_train_overrides, *extra])


# ------------------------------------------------------------------------------ scenes
def test_scenes_are_deterministic_and_labelled_by_pattern_and_colour():
    image, patterns, colours = generate_pretraining_sample(SCENES, 3)
    again = generate_pretraining_sample(PretrainingSceneConfig(seed=5, num_images=50, image_size=64), 3)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(patterns, again[1])
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert patterns.shape == colours.shape == (64, 64)
    assert patterns.max() < len(PRETRAIN_PATTERNS) and colours.max() < len(PRETRAIN_COLOURS)
    assert len(np.unique(patterns * 10 + colours)) >= 2   # several regions
    assert not np.array_equal(image, generate_pretraining_sample(SCENES, 4)[0])


def test_no_pretraining_colour_is_a_benchmark_colour():
    assert set(PRETRAIN_COLOURS).isdisjoint(synthetic.COLOURS)
    assert benchmark_hue_margin() >= 15.0
    # painted pixels: every strongly coloured pixel of the scenes is far in hue from every benchmark colour
    benchmark_hues = [hue_of_rgb(rgb) for rgb in synthetic.COLOURS.values()]
    for index in range(4):
        image = generate_pretraining_sample(SCENES, index)[0].reshape(-1, 3).astype(float)
        vivid = image[(image.max(1) - image.min(1)) > 90]          # foreground, not the grey background
        assert len(vivid) > 100
        hues = np.array([hue_of_rgb(p) for p in vivid[::7]])
        distances = np.array([[hue_distance(h, b) for b in benchmark_hues] for h in hues]).min(1)
        assert np.quantile(distances, 0.05) > 8.0   # pixel noise moves a few hues only a little


# Computed with the code as it was before scenes could be lit: plain scenes and the plain recipe are unchanged.
PLAIN_SCENES_SHA256 = "8ddd8b9934efb89c8d414b5020c0bd2495fd5d940dcfdaf3b15ee874085a0700"
PLAIN_TUTORIAL_BACKBONE = "deeplabv2_1-1-1-1_w8_09c02a5a3897.pt"
LIT = dataclasses.replace(SCENES, lighting=synthetic.SyntheticConfig(appearance="scene").lighting)


def test_plain_scenes_and_the_plain_recipe_are_unchanged():
    digest = hashlib.sha256()
    for index in range(4):
        for array in generate_pretraining_sample(SCENES, index):
            digest.update(array.tobytes())
    assert digest.hexdigest() == PLAIN_SCENES_SHA256
    plain = load_train_config("tutorial")
    assert scene_lighting(plain) is None and "lighting" not in recipe(plain)
    assert pretrained_path(plain).name == PLAIN_TUTORIAL_BACKBONE
    assert recipe(load_train_config("tutorial", ["data.synthetic=null"])) == recipe(plain)


def test_lit_scenes_are_the_plain_scenes_under_a_light():
    image, patterns, colours = generate_pretraining_sample(LIT, 2)
    plain_image, plain_patterns, plain_colours = generate_pretraining_sample(SCENES, 2)
    np.testing.assert_array_equal(patterns, plain_patterns)
    np.testing.assert_array_equal(colours, plain_colours)
    assert np.abs(image.astype(int) - plain_image).mean() > 5
    unlit = dataclasses.replace(SCENES, lighting=SceneLighting())
    np.testing.assert_array_equal(generate_pretraining_sample(unlit, 2)[0], plain_image)


def test_lit_pretraining_colours_stay_apart_from_the_benchmark_colours_under_the_same_light():
    assert illuminated_hue_margin(SceneLighting()) == pytest.approx(benchmark_hue_margin())
    assert illuminated_hue_margin(LIT.lighting) >= 10.0
    assert illuminated_hue_margin(dataclasses.replace(LIT.lighting, illuminant_strength=1.5)) < 10.0  # the check bites


def test_the_recipe_holds_the_benchmarks_scene_factor():
    scene = load_train_config("tutorial", ["data.synthetic.appearance=scene"])
    expected = synthetic.SyntheticConfig(appearance="scene").lighting
    assert scene_lighting(scene) == expected
    assert recipe(scene)["lighting"] == {"illuminant_strength": expected.illuminant_strength,
                                         "shading_strength": expected.shading_strength,
                                         "scale_range": list(expected.scale_range)}
    plain = load_train_config("tutorial")
    weaker = load_train_config("tutorial", ["data.synthetic.appearance=scene",
                                            "data.synthetic.illuminant_strength=0.5"])
    assert len({pretrained_path(c).name for c in (plain, scene, weaker)}) == 3
    # the strengths of a plain benchmark are not used, so they do not change its backbone
    assert recipe(load_train_config("tutorial", ["data.synthetic.illuminant_strength=0.5"])) == recipe(plain)


def test_a_lit_benchmark_pretrains_on_lit_scenes(tiny_train_overrides, monkeypatch, tmp_path):
    import cagnet.pretrain

    drawn = []

    def capture(scenes, progress=False):
        drawn.append(scenes.lighting)
        raise RuntimeError("scenes drawn")

    monkeypatch.setattr(cagnet.pretrain, "generate_pretraining_set", capture)
    lit = synthetic.SyntheticConfig(appearance="scene").lighting
    for extra, expected in (("data.synthetic={appearance: scene}", lit), ("data.synthetic={}", None)):
        with pytest.raises(RuntimeError, match="scenes drawn"):
            pretrain_backbone(_config(tiny_train_overrides, extra), tmp_path / "backbone.pt", progress=False)
        assert drawn[-1] == expected


def test_the_benchmark_patterns_are_drawn_by_the_benchmark_code():
    assert PRETRAIN_PATTERNS[:4] == synthetic.PATTERNS
    assert len(set(PRETRAIN_PATTERNS)) == len(PRETRAIN_PATTERNS) == 8


# ------------------------------------------------------------------------------ the network and its file
def test_body_weights_use_the_original_init_layout_and_load_into_every_method():
    net = PretrainNet((1, 1, 1, 1), 8)
    state = net.body_state_dict()
    assert all(k.startswith("back.scale.layer") for k in state)
    assert not any("aspp" in k for k in state)
    model = build_cagnet("tiny", base_width=8, feature_dim=16, context_width=16, generator_widths=(16,) * 5,
                         discriminator_width=16)
    report = load_checkpoint(model, {"iteration": 1, "state_dict": state})
    assert report.layout == "backbone" and "backbone.aspp" in report.left_initialised
    assert torch.equal(model.backbone.stem.conv.conv.weight, net.backbone.stem.conv.conv.weight)
    assert torch.equal(model.backbone.res5[0].increase.bn.running_var, net.backbone.res5[0].increase.bn.running_var)


@pytest.mark.slow
def test_pretraining_is_deterministic_cached_and_keyed_by_its_recipe(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, f"pretrain.cache_dir={tmp_path / 'cache'}")
    assert cached_pretrained(config) is None
    first = ensure_pretrained(config, progress=False)
    assert not first.reused and first.path == pretrained_path(config) and first.path.is_file()
    info = json.loads(first.path.with_suffix(".json").read_text())
    assert info["recipe"]["pretrain"]["iterations"] == 3 and 0.0 <= info["pattern_accuracy"] <= 1.0
    stamp = first.path.stat().st_mtime_ns
    again = ensure_pretrained(config, progress=False)
    assert again.reused and again.path.stat().st_mtime_ns == stamp      # reused, not trained again
    other = pretrain_backbone(config, tmp_path / "other.pt", progress=False)
    a = torch.load(first.path, weights_only=True)["state_dict"]
    b = torch.load(other.path, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # deterministic
    # another recipe (or another backbone width) is another file; the cache dir does not count
    assert pretrained_path(_config(tiny_train_overrides, "pretrain.seed=1")) != pretrained_path(config)
    assert pretrained_path(_config(tiny_train_overrides, "model.base_width=4")) != pretrained_path(config)
    assert pretrained_path(config).name == pretrained_path(
        _config(tiny_train_overrides, f"pretrain.cache_dir={tmp_path / 'x'}")).name


@pytest.mark.slow
def test_step1_and_the_baselines_start_from_the_pretrained_backbone(tiny_train_overrides, tmp_path):
    from cagnet.train.baselines import build_spnet, build_zs3net
    from cagnet.train.loading import prepare_dataset
    from cagnet.train.engine import Trainer

    config = _config(tiny_train_overrides)
    assert config.schedule("step1").init_model == PRETRAINED
    path = resolve_init_model(PRETRAINED, config, progress=False)
    body = torch.load(path, weights_only=True)["state_dict"]
    trainer = Trainer(config, "step1", tmp_path / "run", stop_at=1, progress=False, verbose=False)
    stem = trainer.model.backbone.stem.conv.conv.weight.detach().cpu().clone()   # before the one iteration
    trainer.run()
    assert torch.equal(stem, body["back.scale.layer1.conv1.conv.weight"])
    info = prepare_dataset(config)
    for build in (build_spnet, build_zs3net):
        model = build(config, info)
        assert torch.equal(model.backbone.stem.conv.conv.weight, body["back.scale.layer1.conv1.conv.weight"])
        scratch = build(config, info, init=False)
        assert not torch.equal(scratch.backbone.stem.conv.conv.weight, body["back.scale.layer1.conv1.conv.weight"])


def test_init_model_values_other_than_pretrained_pass_through(tiny_train_overrides):
    config = _config(tiny_train_overrides)
    assert resolve_init_model(None, config) is None
    assert resolve_init_model("some/file.pth", config) == "some/file.pth"


def test_a_config_without_pretrain_section_cannot_use_it():
    config = load_train_config("voc12")
    assert config.pretrain is None
    with pytest.raises(ConfigError, match="no pretrain section"):
        resolve_init_model(PRETRAINED, config)


def test_pretrain_settings_are_validated():
    with pytest.raises(ConfigError, match="pretrain.iterations"):
        load_train_config("tutorial", ["pretrain.iterations=0"])
    with pytest.raises(ConfigError, match="pretrain.bogus"):
        load_train_config("tutorial", ["pretrain.bogus=1"])


@pytest.mark.slow
def test_cli_pretrain_builds_then_reuses(tiny_train_overrides, tmp_path, capsys):
    from cagnet.cli import main

    sets = [a for o in tiny_train_overrides for a in ("--set", o)] + ["--set", f"pretrain.cache_dir={tmp_path}"]
    assert main(["pretrain", "--config", "tutorial", *sets, "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "pretrained backbone:" in first and "trained in" in first and "pattern accuracy" in first
    assert main(["pretrain", "--config", "tutorial", *sets, "--no-progress"]) == 0
    assert "(cached)" in capsys.readouterr().out


def test_cli_pretrain_errors_are_one_line(cli_error):
    assert "no pretrain section" in cli_error(["pretrain", "--config", "voc12"])
    assert "pretrain.lr" in cli_error(["pretrain", "--config", "tutorial", "--set", "pretrain.lr=-1"])
