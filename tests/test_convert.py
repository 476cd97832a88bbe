"""cagnet.models.convert: original checkpoint layout <-> project model; torchvision ResNets -> backbone."""
from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from cagnet.errors import CheckpointError, ConfigError
from cagnet.models import (CaGNet, build_cagnet, check_input_normalization, config_from_original_state_dict,
                           count_parameters, load_checkpoint, original_to_project_key, project_to_original_key,
                           read_checkpoint, save_original_checkpoint, to_original_state_dict,
                           torchvision_to_project_key)

MANIFEST_PRESETS = {
    "manifest_voc12.json": "original_voc12",
    "manifest_context.json": "original_context",
    "manifest_cocostuff.json": "original_cocostuff",
    "manifest_small.json": "small_reference",
}


def tiny_model(seed: int, patch_size: int = 1) -> CaGNet:
    torch.manual_seed(seed)
    model = build_cagnet("tiny", patch_size=patch_size)
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


# ---------------------------------------------------------------- torchvision ResNets
def _torchvision_resnet(layers, seed: int, dilated: bool = False) -> torch.nn.Module:
    """A torchvision ResNet of ``layers`` bottlenecks (random weights, random BN state), eval mode."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(seed)
    net = ResNet(Bottleneck, list(layers), replace_stride_with_dilation=[False, dilated, dilated])
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def torchvision_small(tmp_path_factory):
    """(torchvision ResNet [1, 2, 1, 1], its state dict file) matching the small_reference backbone."""
    net = _torchvision_resnet((1, 2, 1, 1), seed=5)
    path = tmp_path_factory.mktemp("tv") / "resnet_small.pth"
    torch.save(net.state_dict(), path)
    return net, path


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_torchvision_weights_load_into_the_resnet_body(torchvision_small):
    net, path = torchvision_small
    model = build_cagnet("small_reference")
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_checkpoint(model, path)
    assert report.layout == "torchvision" and report.normalization == "imagenet"
    assert report.ignored == ["fc.weight", "fc.bias"]
    assert "ignored (no DeepLabV2 counterpart): fc.weight, fc.bias" in str(report)
    assert report.left_initialised == ["backbone.aspp", "class_embeddings", "context", "discriminator",
                                       "generator", "seen_class_embeddings"]
    source = net.state_dict()
    after = model.state_dict()
    mapped = {torchvision_to_project_key(k): k for k in source if not k.startswith("fc.")}
    assert set(mapped) == {k for k in after if k.startswith(("backbone.stem", "backbone.res"))}
    for project_key, key in mapped.items():
        assert torch.equal(after[project_key], source[key]), key
    for key in after:
        if key not in mapped:
            assert torch.equal(after[key], untouched[key]), key


@torch.no_grad()
def test_converted_features_equal_torchvision_where_the_architectures_agree(torchvision_small):
    net, path = torchvision_small
    model = build_cagnet("small_reference").eval()
    load_checkpoint(model, path)
    body = model.backbone
    torch.manual_seed(0)
    image = torch.randn(1, 3, 65, 66)   # sides 4k+1, 4k+2: the stem conv outputs are odd, max-pools agree

    stem_conv = net.relu(net.bn1(net.conv1(image)))
    assert _close(body.stem.conv(image), stem_conv)
    stem = net.maxpool(stem_conv)
    assert _close(body.stem(image), stem)
    res2 = net.layer1(stem)
    assert _close(body.res2(stem), res2)
    # res3: the first block differs (stride on the 3x3 conv in torchvision, on the 1x1 reduce
    # conv here); its shortcut and the later blocks agree
    assert not _close(body.res3[0](res2), net.layer2[0](res2))
    assert body.res3[0](res2).shape == net.layer2[0](res2).shape
    assert _close(body.res3[0].shortcut(res2), net.layer2[0].downsample(res2))
    res3_in = net.layer2[0](res2)
    assert _close(body.res3[1](res3_in), net.layer2[1](res3_in))

    # an even side: ceil-mode pooling adds a row; the overlap agrees
    even = torch.randn(1, 3, 64, 65)
    ours, theirs = body.stem(even), net.maxpool(net.relu(net.bn1(net.conv1(even))))
    assert ours.shape[-2] == theirs.shape[-2] + 1 and ours.shape[-1] == theirs.shape[-1]
    assert _close(ours[..., :theirs.shape[-2], :], theirs)


@torch.no_grad()
def test_dilated_stages_equal_torchvision_dilated_resnet_after_their_first_block():
    net = _torchvision_resnet((1, 1, 2, 2), seed=6, dilated=True)   # dilation 2 in layer3, 4 in layer4
    model = build_cagnet("small_reference", backbone_blocks=(1, 1, 2, 2)).eval()
    load_checkpoint(model, net.state_dict(), name="tv_dilated")
    body = model.backbone
    x = torch.randn(1, 512, 9, 11)
    # first blocks: torchvision dilates res4's first 3x3 by 1 and res5's by 2, DeepLabV2 by 2 and 4
    assert not _close(body.res4[0](x), net.layer3[0](x))
    assert _close(body.res4[0].shortcut(x), net.layer3[0].downsample(x))
    y = net.layer3[0](x)
    assert _close(body.res4[1](y), net.layer3[1](y))
    z = net.layer3(x)
    assert not _close(body.res5[0](z), net.layer4[0](z))
    w = net.layer4[0](z)
    assert _close(body.res5[1](w), net.layer4[1](w))


def test_torchvision_resnet101_fits_the_voc12_model_and_not_tiny(tmp_path: Path):
    from torchvision.models import resnet101

    state = resnet101(weights=None).state_dict()
    model = build_cagnet("original_voc12")
    report = load_checkpoint(model, state, name="resnet101.pth")
    assert report.layout == "torchvision" and report.ignored == ["fc.weight", "fc.bias"]
    assert torch.equal(model.backbone.res4[22].conv3x3.conv.weight, state["layer3.22.conv2.weight"])
    message = _raises_one_line(build_cagnet("tiny"), state, "shape mismatch", name="resnet101.pth")
    assert "resnet101.pth (torchvision layout)" in message and "conv1.weight file [64, 3, 7, 7] vs model" in message


def test_torchvision_source_uses_the_weights_api(monkeypatch, torchvision_small):
    from torchvision.models._api import WeightsEnum

    net, _ = torchvision_small
    requested = []

    def fake_get_state_dict(self, *args, **kwargs):
        requested.append((str(self), kwargs))
        return net.state_dict()

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    report = load_checkpoint(build_cagnet("small_reference"), "torchvision:resnet101")
    assert requested[0][0] == "ResNet101_Weights.IMAGENET1K_V1" and requested[0][1]["weights_only"] is True
    assert report.source == "torchvision:resnet101" and report.layout == "torchvision"
    load_checkpoint(build_cagnet("small_reference"), "torchvision:resnet50:IMAGENET1K_V2")
    assert requested[1][0] == "ResNet50_Weights.IMAGENET1K_V2"


def test_torchvision_source_errors(monkeypatch):
    from torchvision.models._api import WeightsEnum

    model = build_cagnet("small_reference", device="meta")
    with pytest.raises(CheckpointError, match="unknown torchvision model 'vgg16'"):
        load_checkpoint(model, "torchvision:vgg16")
    with pytest.raises(CheckpointError, match="no weights 'IMAGENET9K' for resnet101 .known: IMAGENET1K_V1"):
        load_checkpoint(model, "torchvision:resnet101:IMAGENET9K")

    def offline(self, *args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, "torchvision:resnet101")
    message = str(info.value)
    assert "\n" not in message and message.startswith("torchvision:resnet101: cannot read torchvision's")
    assert "name resolution" in message and "checkpoints" in message


def test_input_normalization_of_each_layout(torchvision_small):
    _, path = torchvision_small
    report = load_checkpoint(build_cagnet("small_reference"), path)
    check_input_normalization(report, "imagenet")
    with pytest.raises(ConfigError, match=r"expect data.normalization=imagenet .*config has caffe; "
                                          r"add --set data.normalization=imagenet"):
        check_input_normalization(report, "caffe")
    original = load_checkpoint(tiny_model(2), to_original_state_dict(tiny_model(1)))
    assert original.normalization == "caffe"
    with pytest.raises(ConfigError, match="data.normalization=caffe"):
        check_input_normalization(original, "imagenet")
    project = load_checkpoint(tiny_model(2), tiny_model(1).state_dict())
    assert project.normalization is None
    check_input_normalization(project, "imagenet")   # unknown: not checked
    trained = {"iteration": 3, "state_dict": tiny_model(1).state_dict(), "config": {"data": {"normalization": "imagenet"}}}
    assert load_checkpoint(tiny_model(2), trained).normalization == "imagenet"


def test_torchvision_key_functions():
    assert torchvision_to_project_key("layer3.22.conv2.weight") == "backbone.res4.22.conv3x3.conv.weight"
    assert torchvision_to_project_key("layer1.0.downsample.1.running_var") == "backbone.res2.0.shortcut.bn.running_var"
    assert torchvision_to_project_key("bn1.num_batches_tracked") == "backbone.stem.conv.bn.num_batches_tracked"
    assert torchvision_to_project_key("fc.weight") is None
    from cagnet.models.convert import project_to_torchvision_key

    for key in ("conv1.weight", "bn1.running_mean", "layer4.2.bn3.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.bias"):
        assert project_to_torchvision_key(torchvision_to_project_key(key)) == key


# ---------------------------------------------------------------- CaGNetv2's patch classifier
def tiny_patch_model(seed: int) -> CaGNet:
    """:func:`tiny_model` with the 3x3 patch classifier (``model.patch_size: 3``)."""
    return tiny_model(seed, patch_size=3)


def test_patch_keys_map_both_ways():
    assert original_to_project_key("dis.cls_3.weight") == "discriminator.patch_conv.weight"
    assert project_to_original_key("discriminator.patch_conv.bias") == "dis.cls_3.bias"
    original = to_original_state_dict(tiny_patch_model(1))
    keys = [k for k in original if k.startswith("dis.")]
    assert keys == ["dis.fc.conv.weight", "dis.fc.conv.bias", "dis.pred.weight", "dis.pred.bias",
                    "dis.cls_3.weight", "dis.cls_3.bias", "dis.cls.weight", "dis.cls.bias"]


def test_patch_model_round_trip_through_an_original_file(tmp_path: Path):
    source = tiny_patch_model(1)
    path = save_original_checkpoint(source, tmp_path / "patch.pth", iteration=9)
    state, _, _ = read_checkpoint(path)
    config = config_from_original_state_dict(state, num_unseen=source.config.num_unseen,
                                             backbone="deeplabv2_tiny", freeze_bn=False)
    assert config.patch_size == 3
    target = build_cagnet(config)
    report = load_checkpoint(target, path)
    assert not report.initialised and not report.left_initialised
    assert_same_state(target.state_dict(), source.state_dict())
    pixel_state = to_original_state_dict(tiny_model(1))
    assert config_from_original_state_dict(pixel_state, num_unseen=4).patch_size == 1


@pytest.mark.parametrize("layout", ["original", "project"])
def test_pixelwise_checkpoint_starts_a_patch_model_as_the_pixelwise_one(layout):
    pixel = tiny_model(1).eval()
    source = to_original_state_dict(pixel) if layout == "original" else pixel.state_dict()
    patch = tiny_patch_model(2)
    report = load_checkpoint(patch, source, name="pixel.pth")
    assert report.layout == layout
    assert report.initialised == ["discriminator.patch_conv"] and not report.left_initialised
    assert "initialised as the pixel-wise head (identity 3x3): discriminator.patch_conv" in str(report)
    patch.eval()
    feature = torch.rand(2, pixel.config.feature_dim, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(patch.classify(feature), pixel.classify(feature), rtol=0, atol=1e-5)
        image = torch.randn(1, 3, 48, 56)
        torch.testing.assert_close(patch(image), pixel(image), rtol=0, atol=1e-5)
    weight = patch.discriminator.patch_conv.weight
    assert torch.equal(weight[:, :, 1, 1], torch.eye(weight.shape[0])) and weight.abs().sum() == weight.shape[0]


def test_patch_checkpoint_into_a_pixelwise_model_is_refused_with_a_hint():
    state = to_original_state_dict(tiny_patch_model(1))
    message = _raises_one_line(tiny_model(2), state, "unexpected keys", name="patch.pth")
    assert "dis.cls_3.weight" in message and "model.patch_size=3" in message


def test_backbone_file_leaves_the_patch_conv_as_it_is():
    model = tiny_patch_model(2)
    before = model.discriminator.patch_conv.weight.clone()
    report = load_checkpoint(model, _backbone_init(tiny_model(1)))
    assert report.layout == "backbone" and not report.initialised and "discriminator" in report.left_initialised
    assert torch.equal(model.discriminator.patch_conv.weight, before)


def test_discriminator_state_dict_in_the_original_layout():
    from cagnet.models import Discriminator, load_original_discriminator, to_original_discriminator_state_dict

    torch.manual_seed(0)
    source = Discriminator(6, 8, 5, patch_size=3)
    original = to_original_discriminator_state_dict(source)
    assert list(original) == ["fc.conv.weight", "fc.conv.bias", "pred.weight", "pred.bias", "cls_3.weight",
                              "cls_3.bias", "cls.weight", "cls.bias"]
    for state in (original, OrderedDict(("dis." + k, v) for k, v in original.items()), source.state_dict()):
        target = Discriminator(6, 8, 5, patch_size=3)
        report = load_original_discriminator(target, state)
        assert len(report.loaded) == 8
        assert_same_state(target.state_dict(), source.state_dict())
    # a pixel-wise discriminator's file into a patch one: identity start
    pixel = Discriminator(6, 8, 5)
    target = Discriminator(6, 8, 5, patch_size=3)
    report = load_original_discriminator(target, to_original_discriminator_state_dict(pixel))
    assert report.initialised == ["discriminator.patch_conv"]
    feature = torch.rand(1, 6, 4, 4)
    torch.testing.assert_close(target.eval().classify(feature), pixel.eval().classify(feature), rtol=0, atol=1e-6)
    with pytest.raises(CheckpointError, match="unexpected keys: dis.cls_3.weight"):
        load_original_discriminator(Discriminator(6, 8, 5), original)
