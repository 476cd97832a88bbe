"""cagnet.models.convert: original checkpoint layout <-> project model."""
from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from cagnet.errors import CheckpointError
from cagnet.models import (CaGNet, build_cagnet, config_from_original_state_dict, count_parameters, load_checkpoint,
                           original_to_project_key, project_to_original_key, read_checkpoint,
                           save_original_checkpoint, to_original_state_dict)

MANIFEST_PRESETS = {
    "manifest_voc12.json": "original_voc12",
    "manifest_context.json": "original_context",
    "manifest_cocostuff.json": "original_cocostuff",
    "manifest_small.json": "small_reference",
}


def tiny_model(seed: int) -> CaGNet:
    torch.manual_seed(seed)
    model = build_cagnet("tiny")
    # random BN statistics and embeddings, so that a round trip has something to carry
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                buffer.copy_(torch.rand_like(buffer) + 0.5)
            else:
                buffer.fill_(seed + 1)
    return model


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------- manifests
@pytest.mark.parametrize("manifest_name", sorted(MANIFEST_PRESETS))
def test_manifest_maps_completely(original_reference_dir: Path, manifest_name: str):
    manifest = json.loads((original_reference_dir / manifest_name).read_text())
    entries = {e["key"]: e for e in manifest["keys"]}
    model = build_cagnet(MANIFEST_PRESETS[manifest_name], device="meta")
    converted = to_original_state_dict(model)
    assert list(converted) == [e["key"] for e in manifest["keys"]]  # same keys, same order
    for key, tensor in converted.items():
        assert list(tensor.shape) == entries[key]["shape"], key
        assert str(tensor.dtype) == entries[key]["dtype"], key
    model_keys = set(model.state_dict())
    mapped = {original_to_project_key(k) for k in entries}
    assert mapped == model_keys  # nothing left over on either side
    # parameters are the manifest's non-statistics entries
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    expected = sum(torch.Size(e["shape"]).numel() for e in manifest["keys"]
                   if not e["key"].endswith(statistics) and not e["key"].startswith("Em_"))
    assert count_parameters(model) == expected


@pytest.mark.parametrize("manifest_name", sorted(MANIFEST_PRESETS))
def test_config_inferred_from_manifest_shapes(original_reference_dir: Path, manifest_name: str):
    manifest = json.loads((original_reference_dir / manifest_name).read_text())
    state = {e["key"]: torch.empty(e["shape"], device="meta") for e in manifest["keys"]}
    preset = build_cagnet(MANIFEST_PRESETS[manifest_name], device="meta").config
    inferred = config_from_original_state_dict(state, num_unseen=preset.num_unseen)
    assert inferred == preset


# ---------------------------------------------------------------- round trips
def test_round_trip_original_project_original(tmp_path: Path):
    source = tiny_model(1)
    original = OrderedDict((k, v.clone()) for k, v in to_original_state_dict(source).items())
    target = tiny_model(2)
    report = load_checkpoint(target, original)
    assert report.layout == "original" and not report.left_initialised
    assert_same_state(to_original_state_dict(target), original)
    # through a file in the original wrapper
    path = save_original_checkpoint(target, tmp_path / "00000042.pth", iteration=42)
    again = tiny_model(3)
    report = load_checkpoint(again, path)
    assert report.iteration == 42 and report.source == str(path)
    assert_same_state(to_original_state_dict(again), original)
    assert_same_state(again.state_dict(), source.state_dict())


def test_round_trip_of_official_small_weights(original_reference_dir: Path):
    spec = importlib.util.spec_from_file_location("official_state_dict", original_reference_dir / "official_state_dict.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    weights = official.make_state_dict(official.load_manifest(original_reference_dir / "manifest_small.json"), 11)
    model = build_cagnet("small_reference")
    load_checkpoint(model, {"iteration": 7, "state_dict": weights})
    assert_same_state(to_original_state_dict(model), weights)


def test_project_layout_loads():
    source, target = tiny_model(1), tiny_model(2)
    report = load_checkpoint(target, source.state_dict())
    assert report.layout == "project"
    assert_same_state(target.state_dict(), source.state_dict())


# ---------------------------------------------------------------- prefixes and partial files
def test_dataparallel_module_prefix(tmp_path: Path):
    source = tiny_model(1)
    wrapped = OrderedDict(("module." + k, v) for k, v in to_original_state_dict(source).items())
    path = tmp_path / "dp.pth"
    torch.save({"iteration": 5, "state_dict": wrapped}, path)
    target = tiny_model(2)
    load_checkpoint(target, path)
    assert_same_state(target.state_dict(), source.state_dict())


def test_bare_state_dict_without_wrapper(tmp_path: Path):
    source = tiny_model(1)
    path = tmp_path / "bare.pth"
    torch.save(to_original_state_dict(source), path)
    target = tiny_model(2)
    assert load_checkpoint(target, path).iteration is None
    assert_same_state(target.state_dict(), source.state_dict())


def _backbone_init(model: CaGNet, prefix: str = "back.scale.", with_aspp: bool = False) -> OrderedDict:
    """A DeepLabV2 init file: ResNet body (and optionally ASPP) only, no num_batches_tracked."""
    keep = ("back.scale.layer",) + (("back.scale.aspp",) if with_aspp else ())
    return OrderedDict((prefix + k[len("back.scale."):], v.clone()) for k, v in to_original_state_dict(model).items()
                       if k.startswith(keep) and not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("prefix", ["back.scale.", "scale.", ""])
def test_backbone_only_init_file(tmp_path: Path, prefix: str):
    source, target = tiny_model(1), tiny_model(2)
    untouched = {k: v.clone() for k, v in target.state_dict().items()}
    path = tmp_path / "deeplabv2_resnet101_init.pth"
    torch.save(_backbone_init(source, prefix), path)
    report = load_checkpoint(target, path)
    assert report.layout == "backbone"
    assert report.left_initialised == ["backbone.aspp", "class_embeddings", "context", "discriminator",
                                       "generator", "seen_class_embeddings"]
    assert "left initialised: backbone.aspp" in str(report)
    after, reference = target.state_dict(), source.state_dict()
    for key in after:
        if key.startswith(("backbone.stem", "backbone.res")) and not key.endswith("num_batches_tracked"):
            assert torch.equal(after[key], reference[key]), key
        else:
            assert torch.equal(after[key], untouched[key]), key


def test_backbone_init_with_aspp_loads_aspp():
    source, target = tiny_model(1), tiny_model(2)
    report = load_checkpoint(target, _backbone_init(source, with_aspp=True))
    assert "backbone.aspp" not in report.left_initialised
    assert torch.equal(target.backbone.aspp.branches[3].bias, source.backbone.aspp.branches[3].bias)


def test_backbone_init_of_another_depth_is_refused():
    # a ResNet-50-like file (fewer blocks) must not silently leave blocks random
    source = build_cagnet("tiny")
    target = build_cagnet("tiny", backbone_blocks=(1, 1, 2, 1))
    with pytest.raises(CheckpointError, match=r"missing keys: back\.scale\.layer4\.block2"):
        load_checkpoint(target, _backbone_init(source), name="r50_init.pth")


# ---------------------------------------------------------------- bad files
def _raises_one_line(model: CaGNet, source, match: str, name: str | None = None) -> str:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(model, source, name=name) if name else load_checkpoint(model, source)
    message = str(info.value)
    assert "\n" not in message
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # unchanged
    return message


def test_wrong_shape_names_file_and_key(tmp_path: Path):
    state = to_original_state_dict(tiny_model(1))
    state["dis.cls.weight"] = torch.zeros(5, 256, 1, 1)
    path = tmp_path / "wrong_shape.pth"
    torch.save({"iteration": 1, "state_dict": state}, path)
    message = _raises_one_line(tiny_model(2), path, "wrong_shape.pth")
    assert "dis.cls.weight file [5, 256, 1, 1] vs model [17, 256, 1, 1]" in message


def test_unknown_key_names_file_and_key(tmp_path: Path):
    state = to_original_state_dict(tiny_model(1))
    state["back.scale.extra.conv.weight"] = torch.zeros(1)
    path = tmp_path / "unknown_key.pth"
    torch.save(state, path)
    message = _raises_one_line(tiny_model(2), path, "unknown_key.pth")
    assert "unexpected keys: back.scale.extra.conv.weight" in message


def test_missing_key_is_refused_for_full_checkpoint():
    state = to_original_state_dict(tiny_model(1))
    del state["gen.mlp.5.bias"]
    del state["back.scale.contextual2.conv.weight"]
    message = _raises_one_line(tiny_model(2), state, "missing keys", name="partial.pth")
    assert "partial.pth" in message and "gen.mlp.5.bias" in message and "contextual2" in message


def test_missing_num_batches_tracked_is_tolerated():
    source = tiny_model(1)
    state = OrderedDict((k, v) for k, v in to_original_state_dict(source).items()
                        if not k.endswith("num_batches_tracked"))
    target = tiny_model(2)
    load_checkpoint(target, state)
    assert torch.equal(target.backbone.res2[0].reduce.bn.running_var, source.backbone.res2[0].reduce.bn.running_var)


def test_many_missing_keys_are_abbreviated():
    state = OrderedDict((k, v) for k, v in to_original_state_dict(tiny_model(1)).items() if not k.startswith("gen."))
    message = _raises_one_line(tiny_model(2), state, "more", name="x.pth")
    assert len(message) < 600


def test_text_file_is_not_a_checkpoint(tmp_path: Path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint\n")
    _raises_one_line(tiny_model(1), path, "notes.pth")


class Payload:
    """Any non-tensor class: weights_only loading must refuse to rebuild it."""


def test_pickled_object_is_refused_without_executing(tmp_path: Path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Payload()}}, path)
    message = _raises_one_line(tiny_model(1), path, "evil.pth")
    assert "Payload" in message and "weights_only" in message


def test_missing_file_and_non_mapping(tmp_path: Path):
    _raises_one_line(tiny_model(1), tmp_path / "absent.pth", "absent.pth")
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    _raises_one_line(tiny_model(1), path, "list.pth")
    path = tmp_path / "nontensor.pth"
    torch.save({"state_dict": {"a": 1}}, path)
    _raises_one_line(tiny_model(1), path, "nontensor.pth")


def test_other_architecture_checkpoint_is_refused():
    small = to_original_state_dict(build_cagnet("small_reference", device="meta"))
    state = OrderedDict((k, torch.zeros(v.shape, dtype=v.dtype)) for k, v in small.items())
    message = _raises_one_line(tiny_model(1), state, "shape mismatch", name="small.pth")
    assert "small.pth" in message


# ---------------------------------------------------------------- key functions
def test_key_functions():
    assert original_to_project_key("back.scale.layer4.block23.proj.bn.running_var") == \
        "backbone.res4.22.shortcut.bn.running_var"
    assert project_to_original_key("backbone.res4.22.shortcut.bn.running_var") == \
        "back.scale.layer4.block23.proj.bn.running_var"
    assert original_to_project_key("gen.mlp.5.weight") == "generator.output.weight"
    assert original_to_project_key("gen.mlp.4.weight") is None  # not the output layer of a 5-layer MLP
    assert original_to_project_key("gen.mlp.3.weight", generator_layers=3) == "generator.output.weight"
    assert original_to_project_key("back.scale.contextual0.conv.weight") is None
    assert original_to_project_key("something.else") is None
    with pytest.raises(KeyError):
        project_to_original_key("backbone.head.weight")


def test_read_checkpoint_unwraps(tmp_path: Path):
    path = tmp_path / "ck.pth"
    torch.save({"iteration": 3, "state_dict": {"module.a": torch.ones(1)}}, path)
    state, iteration, name = read_checkpoint(path)
    assert list(state) == ["a"] and iteration == 3 and name == str(path)
