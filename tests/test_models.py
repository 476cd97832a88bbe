"""cagnet.models: shapes, frozen BN, KL, latent, determinism, gradients, configs, meta device."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from cagnet.errors import ConfigError
from cagnet.losses import kl_divergence
from cagnet.models import (MODEL_PRESETS, CaGNet, FrozenBatchNorm2d, ModelConfig, build_cagnet, count_parameters,
                           max_fuse, model_config, real_feature, resize_mask, resize_to_scale)

# parameters of the original voc12 model (conv/BN/linear weights and biases, not BN statistics
# or embedding tables); test_convert.py checks the same layout against the manifest
ORIGINAL_VOC12_PARAMETERS = 101_621_006


def tiny_model(seed: int = 0, **overrides) -> CaGNet:
    torch.manual_seed(seed)
    return build_cagnet("tiny", **overrides)


def image_batch(n: int = 2, h: int = 64, w: int = 72, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def grid(size: int) -> int:
    """Output-stride-8 grid of the Caffe-style stem: conv /2 (floor), pool /2 (ceil), res3 /2."""
    conv = (size - 1) // 2 + 1
    pool = -(-(conv - 1) // 2) + 1
    return (pool - 1) // 2 + 1


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("arch,h,w", [("tiny", 64, 72), ("small_reference", 88, 104)])
def test_output_shapes(arch, h, w):
    torch.manual_seed(0)
    model = build_cagnet(arch).eval()
    cfg = model.config
    gh, gw = grid(h), grid(w)
    with torch.no_grad():
        out = model.extract(image_batch(2, h, w), torch.ones(2, h, w, dtype=torch.bool))
        for t in (out.feature, out.latent, out.mu, out.logvar, out.semantic, out.fused):
            assert t.shape == (2, cfg.feature_dim, gh, gw)
        assert out.kl.shape == ()
        assert len(out.scale_features) == 3
        for scale, f in zip(cfg.scales, out.scale_features):
            assert f.shape[-2:] == (grid(int(h * scale)), grid(int(w * scale)))
        assert len(out.classification_features) == 4
        labels = torch.randint(0, cfg.num_classes, (2, gh, gw))
        fake = model.generate(model.embed_labels(labels, "all"), out.latent)
        assert fake.shape == out.feature.shape
        assert model.classify(fake).shape == (2, cfg.num_outputs, gh, gw)
        assert model.gan_score(out.feature).shape == (2, 1, gh, gw)
        assert model(image_batch(2, h, w)).shape == (2, cfg.num_outputs, gh, gw)


def test_small_reference_grid_is_12_by_14():
    assert (grid(88), grid(104)) == (12, 14)


def test_single_scale_extract():
    model = tiny_model().eval()
    with torch.no_grad():
        out = model.extract(image_batch(), multi_scale=False)
    assert len(out.scale_features) == 1 and out.fused is out.feature
    assert out.classification_features == [out.feature]


def test_tiny_features_are_not_saturated_at_initialisation():
    # from scratch on pixel-scale input (BGR minus mean, std ~60): trainable BN keeps the
    # ASPP output small enough for the sigmoids to pass gradients
    model = tiny_model().train()
    with torch.no_grad():
        out = model.extract(60 * image_batch(), multi_scale=False)
        score = model.gan_score(out.feature)
    saturated = ((out.feature < 1e-3) | (out.feature > 1 - 1e-3)).float().mean().item()
    assert saturated < 0.05
    assert (out.feature >= 0).all() and (out.feature <= 1).all()
    assert (score >= 0).all() and (score <= 1).all()
    assert (out.logvar >= 0).all()  # ReLU on logvar


def test_architecture_constants_of_the_original():
    model = build_cagnet("original", device="meta")
    assert [b.dilation[0] for b in model.backbone.aspp.branches] == [6, 12, 18, 24]
    assert [b.padding[0] for b in model.backbone.aspp.branches] == [6, 12, 18, 24]
    assert all(b.bias is not None for b in model.backbone.aspp.branches)
    assert [c.dilation[0] for c in model.context.branches] == [1, 2, 5]
    assert [c.padding[0] for c in model.context.branches] == [1, 2, 5]
    assert all(c.bias is None for c in model.context.branches)
    assert [len(s) for s in (model.backbone.res2, model.backbone.res3, model.backbone.res4, model.backbone.res5)] == [3, 4, 23, 3]
    assert model.backbone.res3[0].reduce.conv.stride == (2, 2)
    assert model.backbone.res3[0].conv3x3.conv.stride == (1, 1)
    assert model.backbone.res4[0].conv3x3.conv.dilation == (2, 2)
    assert model.backbone.res5[0].conv3x3.conv.dilation == (4, 4)
    assert model.backbone.stem.pool.ceil_mode
    assert [c.out_channels for c in model.generator.hidden] == [1024, 960, 864, 784, 720]
    assert [d.p for d in model.generator.dropouts] == [0.1, 0.1, 0.3, 0.5, 0.5]
    assert model.generator.hidden[0].in_channels == 1200
    assert model.discriminator.cls_head.out_channels == 21
    assert model.discriminator.dropout.p == 0.5


# ---------------------------------------------------------------- frozen BN
def test_frozen_bn_stays_frozen_in_train_mode():
    model = tiny_model(freeze_bn=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items() if ".bn." in k}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    out = model.extract(image_batch(), torch.ones(2, 64, 72, dtype=torch.bool))
    (model.classify(out.feature).mean() + out.kl).backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.backbone.stem.conv.conv.weight.grad is not None


def test_unfrozen_bn_option_trains():
    model = tiny_model().train()  # the tiny preset trains its BN (it learns from scratch)
    assert not model.config.freeze_bn and build_cagnet("original", device="meta").config.freeze_bn
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(type(m) is nn.BatchNorm2d and m.training for m in bns)
    mean_before = model.backbone.stem.conv.bn.running_mean.clone()
    model.extract(image_batch(), multi_scale=False)
    assert not torch.equal(mean_before, model.backbone.stem.conv.bn.running_mean)


# ---------------------------------------------------------------- KL and latent
def test_kl_zero_for_standard_normal():
    zeros = torch.zeros(2, 5, 4, 6)
    mask = torch.rand(2, 4, 6, generator=torch.Generator().manual_seed(0)) > 0.5
    assert kl_divergence(zeros, zeros, mask).item() == 0.0
    assert kl_divergence(zeros, zeros).item() == 0.0


def test_kl_value_and_mask():
    mu = torch.zeros(1, 3, 2, 2)
    logvar = torch.zeros(1, 3, 2, 2)
    mu[..., 0, 0] = 2.0          # labelled pixel: KL = 0.5 * mu^2 = 2 per channel
    mu[..., 1, 1] = 100.0        # unlabelled pixel: must not count
    logvar[..., 1, 1] = 200.0    # exp overflows to inf here: still no NaN
    mask = torch.tensor([[[True, True], [True, False]]])
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    kl = kl_divergence(mu, logvar, mask)
    assert kl.item() == pytest.approx(2.0 * 3 / 9)
    kl.backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(logvar.grad).all()
    assert mu.grad[..., 1, 1].eq(0).all() and mu.grad[..., 0, 0].ne(0).all()
    mu, logvar = mu.detach(), logvar.detach()
    assert kl_divergence(mu, logvar, torch.zeros(1, 2, 2, dtype=torch.bool)).item() == 0.0


def test_kl_mask_resized_with_legacy_nearest():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, ::2, ::2] = True  # floor(i * 8 / 4) = 0, 2, 4, 6: every sampled pixel is labelled
    assert resize_mask(mask, (4, 4)).all()
    mu = torch.ones(1, 2, 4, 4)
    assert kl_divergence(mu, torch.zeros_like(mu), resize_mask(mask, (4, 4))).item() == pytest.approx(0.5)


def test_eval_latent_is_mu_and_train_latent_is_sampled():
    model = tiny_model()
    image = image_batch()
    model.eval()
    with torch.no_grad():
        out = model.extract(image)
    assert torch.equal(out.latent, out.mu)
    model.train()
    with torch.no_grad():
        out = model.extract(image, multi_scale=False)
    noise = (out.latent - out.mu) / torch.exp(0.5 * out.logvar)
    assert not torch.equal(out.latent, out.mu)
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05


def test_real_feature_formula():
    h = torch.tensor([-2.0, 0.0, 3.0])
    z = torch.tensor([1.0, -1.0, 0.0])
    expected = torch.sigmoid(h + h * torch.sigmoid(z))
    assert torch.allclose(real_feature(h, z), expected)


# ---------------------------------------------------------------- determinism
def test_same_seed_same_model_and_outputs():
    a, b = tiny_model(3), tiny_model(3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    a.eval()
    with torch.no_grad():
        first, second = a(image_batch()), a(image_batch())
    assert torch.equal(first, second)
    a.train()
    torch.manual_seed(5)
    train_1 = a.extract(image_batch()).fused
    torch.manual_seed(5)
    train_2 = a.extract(image_batch()).fused
    assert torch.equal(train_1, train_2)
    assert not torch.equal(tiny_model(4).backbone.aspp.branches[0].weight, a.backbone.aspp.branches[0].weight)


# ---------------------------------------------------------------- gradients
def _grads(module: nn.Module) -> list:
    return [p.grad for p in module.parameters() if p.requires_grad]


def test_backbone_losses_reach_backbone_and_context():
    model = tiny_model().train()
    out = model.extract(image_batch(), torch.ones(2, 64, 72, dtype=torch.bool))
    loss = 100 * out.kl + sum(model.classify(f).logsumexp(1).mean() for f in out.classification_features)
    loss.backward()
    for part in (model.backbone, model.context, model.discriminator.shared, model.discriminator.cls_head):
        assert all(g is not None and torch.isfinite(g).all() for g in _grads(part))
    assert all(p.grad is None for p in model.generator.parameters())


def test_detached_generator_input_keeps_generator_loss_out_of_backbone():
    model = tiny_model().train()
    out = model.extract(image_batch(), multi_scale=False)
    labels = torch.randint(0, model.config.num_seen, out.feature.shape[:1] + out.feature.shape[2:])
    fake = model.generate(model.embed_labels(labels, "seen"), out.latent.detach())
    (model.gan_score(fake).mean() + (fake - out.feature.detach()).abs().mean()).backward()
    assert all(g is not None for g in _grads(model.generator))
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.context.parameters())


def test_undetached_generator_input_reaches_context():
    model = tiny_model().train()
    out = model.extract(image_batch(), multi_scale=False)
    labels = torch.zeros(out.feature.shape[:1] + out.feature.shape[2:], dtype=torch.long)
    model.generate(model.embed_labels(labels, "all"), out.latent).mean().backward()
    assert model.context.mu.weight.grad is not None


def test_param_groups_cover_trainable_parameters_once():
    model = tiny_model()
    groups = model.param_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert groups["context_gates"] == [model.context.gates.weight]


# ---------------------------------------------------------------- embeddings
def test_class_embeddings_fill_both_tables():
    table = np.random.default_rng(0).normal(size=(16, 100)).astype(np.float32)
    model = build_cagnet("tiny", class_embeddings=table)
    assert torch.equal(model.class_embeddings, torch.from_numpy(table))
    assert torch.equal(model.seen_class_embeddings[:12], torch.from_numpy(table[:12]))
    assert model.seen_class_embeddings.shape == (256, 100)
    assert (model.seen_class_embeddings[12:] == 0).all()
    labels = torch.tensor([[[0, 255], [11, 3]]])
    seen = model.embed_labels(labels, "seen")
    assert seen.shape == (1, 100, 2, 2)
    assert torch.equal(seen[0, :, 0, 1], torch.zeros(100))
    assert torch.equal(seen[0, :, 1, 0], torch.from_numpy(table[11]))
    assert "seen_class_embeddings" in model.state_dict() and "class_embeddings" in model.state_dict()
    assert all(p is not model.class_embeddings for p in model.parameters())


def test_class_embeddings_set_counts():
    table = torch.randn(20, 8)
    model = build_cagnet("tiny", class_embeddings=table, num_unseen=6)
    assert (model.config.num_seen, model.config.num_unseen, model.config.embedding_dim) == (14, 6, 8)
    with pytest.raises(ConfigError, match="rows"):
        build_cagnet("tiny", class_embeddings=table, num_seen=10, num_unseen=3)


# ---------------------------------------------------------------- multi-scale helpers
def test_resize_to_scale_truncates_size():
    image = torch.randn(1, 3, 90, 101)
    assert resize_to_scale(image, 0.75).shape[-2:] == (67, 75)
    assert resize_to_scale(image, 1.0) is image


def test_max_fuse_is_pixelwise_max_on_first_grid():
    a = torch.zeros(1, 2, 4, 4)
    b = torch.ones(1, 2, 2, 2)
    c = torch.full((1, 2, 4, 4), 0.5)
    c[..., 0, 0] = 3.0
    fused = max_fuse([a, b, c])
    assert fused.shape == a.shape
    assert fused[..., 0, 0].eq(3.0).all() and fused[..., 1:, 1:].eq(1.0).all()


# ---------------------------------------------------------------- devices, dtypes, layouts
def test_meta_construction_of_original_and_parameter_count():
    model = build_cagnet("original", device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert count_parameters(model) == ORIGINAL_VOC12_PARAMETERS
    frozen_bn = sum(p.numel() for m in model.modules() if isinstance(m, FrozenBatchNorm2d) for p in m.parameters())
    assert count_parameters(model, trainable_only=True) == ORIGINAL_VOC12_PARAMETERS - frozen_bn


def test_channels_last_matches_contiguous():
    model = tiny_model().eval()
    image = image_batch()
    with torch.no_grad():
        expected = model(image)
        model = model.to(memory_format=torch.channels_last)
        got = model(image.to(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)


def test_autocast_runs_and_kl_is_float32():
    model = tiny_model().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.extract(image_batch(), torch.ones(2, 64, 72, dtype=torch.bool))
        logits = model.classify(out.fused)
    assert out.kl.dtype == torch.float32 and torch.isfinite(out.kl)
    assert torch.isfinite(logits.float()).all()


# ---------------------------------------------------------------- configs
def test_presets_and_overrides():
    assert set(MODEL_PRESETS) >= {"original", "small_reference", "tiny"}
    cfg = model_config("tiny", feature_dim=32)
    assert cfg.feature_dim == 32 and cfg.backbone_blocks == (1, 1, 1, 1) and cfg.base_width == 16
    swapped = model_config("original", backbone="deeplabv2_tiny")
    assert swapped.backbone_blocks == (1, 1, 1, 1) and swapped.base_width == 16
    small = MODEL_PRESETS["small_reference"]
    assert (small.feature_dim, small.embedding_dim, small.generator_input_dim, small.num_outputs) == (48, 40, 88, 21)


def test_config_dict_round_trip_with_yaml_lists():
    cfg = model_config("tiny")
    values = cfg.to_dict()
    assert isinstance(values["scales"], list)
    assert ModelConfig.from_dict(values) == cfg
    assert ModelConfig.from_dict({"preset": "tiny", "feature_dim": 24}).feature_dim == 24


@pytest.mark.parametrize("overrides,match", [
    ({"preset": "resnet9000"}, "resnet9000"),
    ({"feature_dimm": 3}, "feature_dimm"),
    ({"backbone": "vgg16"}, "vgg16"),
    ({"backbone_blocks": [1, 2, 3]}, "backbone_blocks"),
    ({"feature_dim": "600"}, "feature_dim"),
    ({"scales": [0.5, 1.0]}, "scales"),
    ({"generator_dropouts": [0.1]}, "generator_dropouts"),
    ({"num_unseen": -1}, "num_unseen"),
    ({"patch_size": 2}, r"model.patch_size: must be one of 1, 3"),
    ({"patch_size": 5}, r"model.patch_size"),
    ({"patch_size": 0}, r"model.patch_size"),
    ({"patch_size": "3"}, r"model.patch_size"),
    ({"patch_size": True}, r"model.patch_size"),
    ({"patch_size": 3.0}, r"model.patch_size"),
])
def test_bad_config_raises_one_line_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        ModelConfig.from_dict(overrides)
    assert "\n" not in str(info.value)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_config("tiny").feature_dim = 3


# ---------------------------------------------------------------- stable random initialisation
def _stage_scales(backbone, image: torch.Tensor) -> dict[str, float]:
    """Root mean square of the stem's, each stage's and the ASPP's output."""
    scales = {}
    x = backbone.stem(image)
    scales["stem"] = x.pow(2).mean().sqrt().item()
    for name in ("res2", "res3", "res4", "res5"):
        x = getattr(backbone, name)(x)
        scales[name] = x.pow(2).mean().sqrt().item()
    scales["aspp"] = backbone.aspp(x).pow(2).mean().sqrt().item()
    return scales


def test_stable_random_init_keeps_resnet101_activations_near_unit_scale():
    """ResNet-101 (23 blocks in res4) from random weights with frozen BN: plain Kaiming grows the
    activations ~1.4x per block (to ~1e7 at a Caffe-scale input); the stable initialisation keeps
    every stage near unit scale."""
    from cagnet.models.backbone import NOMINAL_INPUT_STD, DeepLabV2, stable_random_init
    from cagnet.models.cagnet import kaiming_init

    torch.manual_seed(0)
    backbone = DeepLabV2((3, 4, 23, 3), 64, feature_dim=32).eval()
    kaiming_init(backbone)
    image = NOMINAL_INPUT_STD["caffe"] * image_batch(1, 33, 33)
    with torch.no_grad():
        plain = _stage_scales(backbone, image)
        stable_random_init(backbone, NOMINAL_INPUT_STD["caffe"])
        stable = _stage_scales(backbone, image)
    assert plain["res4"] > 1e3 * plain["res3"] and plain["aspp"] > 1e5   # the failure this initialisation avoids
    assert all(0.1 < value < 10.0 for value in stable.values()), stable
    # the residual branches start at zero (each block is the identity) but still train
    last_convs = [block.increase.conv.weight for stage in (backbone.res2, backbone.res4) for block in stage]
    assert all(not w.any() for w in last_convs)
    backbone.aspp(backbone.res5(backbone.res4(backbone.res3(backbone.res2(backbone.stem(image)))))).sum().backward()
    assert backbone.res4[10].increase.conv.weight.grad.abs().sum() > 0
    assert not backbone.stem.conv.bn.weight.requires_grad      # the frozen BN it relies on


# ---------------------------------------------------------------- patch classifier (CaGNetv2)
PIXELWISE_DISCRIMINATOR_KEYS = ["shared.weight", "shared.bias", "gan_head.weight", "gan_head.bias",
                                "cls_head.weight", "cls_head.bias"]


def test_patch_size_1_is_the_pixelwise_model():
    model = tiny_model()
    assert model.config.patch_size == 1 and model.discriminator.pixelwise
    assert list(model.discriminator.state_dict()) == PIXELWISE_DISCRIMINATOR_KEYS
    assert not hasattr(model.discriminator, "patch_conv")
    assert ModelConfig.from_dict({"preset": "tiny"}).to_dict()["patch_size"] == 1


def test_patch_size_3_adds_a_3x3_conv_before_the_class_head():
    pixel, patch = tiny_model(), tiny_model(patch_size=3)
    width = patch.config.discriminator_width
    keys = list(patch.discriminator.state_dict())
    assert keys == [*PIXELWISE_DISCRIMINATOR_KEYS[:4], "patch_conv.weight", "patch_conv.bias",
                    *PIXELWISE_DISCRIMINATOR_KEYS[4:]]
    conv = patch.discriminator.patch_conv
    assert (conv.kernel_size, conv.padding, conv.in_channels, conv.out_channels) == ((3, 3), (1, 1), width, width)
    assert count_parameters(patch) - count_parameters(pixel) == width * width * 9 + width
    assert not patch.discriminator.pixelwise
    assert "discriminator.patch_conv.weight" in dict(patch.named_parameters())
    assert patch.param_groups()["discriminator"] == list(patch.discriminator.parameters())
    assert ModelConfig.from_dict({"preset": "tiny", "patch_size": 3}).patch_size == 3


@pytest.mark.parametrize("h,w", [(1, 1), (2, 5), (7, 3)])
def test_patch_classifier_keeps_the_spatial_size(h, w):
    model = tiny_model(patch_size=3).eval()
    feature = torch.rand(2, model.config.feature_dim, h, w)
    with torch.no_grad():
        assert model.classify(feature).shape == (2, model.config.num_outputs, h, w)
        assert model.gan_score(feature).shape == (2, 1, h, w)
        score, logits = model.discriminator(feature)
        assert torch.equal(logits, model.classify(feature)) and torch.equal(score, model.gan_score(feature))


def test_patch_classifier_sees_a_3x3_neighbourhood_and_the_gan_head_does_not():
    model = tiny_model(patch_size=3).eval()
    feature = torch.rand(1, model.config.feature_dim, 5, 5)
    changed = feature.clone()
    changed[:, :, 2, 2] += 1.0
    with torch.no_grad():
        difference = (model.classify(changed) - model.classify(feature)).abs().amax(1)[0]
        score_difference = (model.gan_score(changed) - model.gan_score(feature)).abs()[0, 0]
    near = torch.zeros(5, 5, dtype=torch.bool)
    near[1:4, 1:4] = True
    # (not exactly 0 outside: a Winograd / FFT conv kernel may spread rounding noise over its tile)
    assert difference[near].min() > 1e-4 and difference[~near].max() < 1e-6
    assert score_difference[2, 2] > 1e-4 and score_difference.flatten()[torch.arange(25) != 12].max() < 1e-6


def test_identity_patch_conv_gives_the_pixelwise_classifier():
    pixel = tiny_model(1).eval()
    patch = tiny_model(2, patch_size=3).eval()
    state = {k: v for k, v in pixel.discriminator.state_dict().items()}
    patch.discriminator.load_state_dict(state, strict=False)
    patch.discriminator.init_patch_conv_as_identity()
    feature = torch.rand(2, pixel.config.feature_dim, 4, 7)
    with torch.no_grad():
        torch.testing.assert_close(patch.classify(feature), pixel.classify(feature), rtol=0, atol=1e-5)
        assert torch.equal(patch.gan_score(feature), pixel.gan_score(feature))
    pixel.discriminator.init_patch_conv_as_identity()   # no-op without a patch conv


def test_patch_model_runs_end_to_end():
    model = tiny_model(patch_size=3).eval()
    image = image_batch(1, 64, 72)
    with torch.no_grad():
        out = model.extract(image, torch.ones(1, 64, 72, dtype=torch.bool))
        assert model(image).shape == (1, model.config.num_outputs, grid(64), grid(72))
        assert all(model.classify(f).shape[-2:] == f.shape[-2:] for f in out.classification_features)


def test_discriminator_refuses_other_patch_sizes():
    from cagnet.models import Discriminator
    with pytest.raises(ConfigError, match=r"patch size must be one of 1, 3 \(got 5\)"):
        Discriminator(8, 16, 5, patch_size=5)


# ---------------------------------------------------------------- ablations of the contextual module
@pytest.mark.parametrize("overrides,match", [
    ({"context_latent": "off"}, r"model.context_latent: must be one of contextual, none, zeroed, shuffled"),
    ({"context_latent": None}, r"model.context_latent"),
    ({"context_gates": "no"}, r"model.context_gates: must be true or false"),
    ({"context_gates": 1}, r"model.context_gates"),
])
def test_bad_context_options_raise_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        ModelConfig.from_dict(overrides)
    assert "\n" not in str(info.value)


def test_default_is_the_contextual_gated_model_exactly():
    assert ModelConfig().context_latent == "contextual" and ModelConfig().context_gates is True
    default, explicit = tiny_model(2), tiny_model(2, context_latent="contextual", context_gates=True)
    assert all(torch.equal(x, y) for x, y in zip(default.state_dict().values(), explicit.state_dict().values()))
    outputs = []
    for model in (default, explicit):
        torch.manual_seed(7)
        outputs.append(model.train().extract(image_batch(), multi_scale=False))
    assert torch.equal(outputs[0].latent, outputs[1].latent) and torch.equal(outputs[0].feature, outputs[1].feature)


@pytest.mark.parametrize("mode", ["zeroed", "shuffled"])
def test_generator_only_ablations_keep_the_real_feature_path(mode):
    """``zeroed`` / ``shuffled`` change what the generator gets in step 1 only: the model's own
    forward (features, latent, KL, inference) is CaGNet's, bit for bit."""
    base, ablated = tiny_model(1), tiny_model(1, context_latent=mode)
    mask = torch.ones(2, 64, 72, dtype=torch.bool)
    results = []
    for model in (base, ablated):
        torch.manual_seed(3)
        train_out = model.train().extract(image_batch(), mask)
        with torch.no_grad():
            results.append((train_out, model.eval()(image_batch())))
    (a, logits_a), (b, logits_b) = results
    for name in ("feature", "latent", "mu", "logvar", "kl", "fused"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(logits_a, logits_b)


def test_no_context_model_has_no_latent_code_and_the_same_backbone():
    base, model = tiny_model(1), tiny_model(1, context_latent="none")
    # same parameters and keys (checkpoint layouts unchanged); the unused module is frozen
    assert list(base.state_dict()) == list(model.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(base.state_dict().values(), model.state_dict().values()))
    assert not any(p.requires_grad for p in model.context.parameters())
    assert all(p.requires_grad for p in model.backbone.aspp.parameters())
    model.train()
    out = model.extract(image_batch(), torch.ones(2, 64, 72, dtype=torch.bool), multi_scale=False)
    assert not out.latent.any() and not out.mu.any() and not out.logvar.any()
    assert out.kl.item() == 0.0
    # the real feature is sigmoid(h + h * sigmoid(0)) = sigmoid(1.5 h) on the same h as CaGNet's
    torch.testing.assert_close(out.feature, torch.sigmoid(1.5 * out.semantic))
    assert torch.equal(out.semantic, base.train().extract(image_batch(), multi_scale=False).semantic)
    (out.kl + model.classify(out.feature).logsumexp(1).mean()).backward()
    assert all(p.grad is None for p in model.context.parameters())
    assert all(p.grad is not None for p in model.backbone.aspp.parameters())
    model.eval()
    with torch.no_grad():
        semantic = model.extract(image_batch(), multi_scale=False).semantic
        torch.testing.assert_close(model(image_batch()), model.classify(torch.sigmoid(1.5 * semantic)))


def test_ungated_contextual_module_fuses_the_branches_as_they_are():
    gated, ungated = tiny_model(1).context, tiny_model(1, context_gates=False).context
    assert torch.equal(gated.gates.weight, ungated.gates.weight) and not ungated.gates.weight.requires_grad
    semantic = torch.randn(2, gated.mu.in_channels, 6, 7, generator=torch.Generator().manual_seed(0))
    x, branches = torch.sigmoid(semantic), []
    for branch in ungated.branches:
        x = torch.relu(branch(x))
        branches.append(x)
    expected = ungated.mu(torch.relu(ungated.fuse(torch.cat(branches, dim=1))))
    out = ungated.eval()(semantic)
    torch.testing.assert_close(out.mu, expected)
    assert not torch.allclose(gated.eval()(semantic).mu, out.mu)          # the gates (in [0.5, 1)) matter
    out.mu.sum().backward()
    assert ungated.gates.weight.grad is None and ungated.fuse.weight.grad is not None


def test_shuffle_pixels_permutes_the_masked_codes_only():
    from cagnet.models.contextual import generator_latent, shuffle_pixels

    latent = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[0, :2] = True
    mask[1, 3] = True
    shuffled = shuffle_pixels(latent, mask, torch.Generator().manual_seed(0))
    before, after = latent.permute(0, 2, 3, 1)[mask], shuffled.permute(0, 2, 3, 1)[mask]
    assert not torch.equal(before, after)
    # whole C-vectors move (a row permutation), across images; unmasked pixels keep theirs
    assert sorted(map(tuple, before.tolist())) == sorted(map(tuple, after.tolist()))
    assert torch.equal(latent.permute(0, 2, 3, 1)[~mask], shuffled.permute(0, 2, 3, 1)[~mask])
    assert torch.equal(shuffled, shuffle_pixels(latent, mask, torch.Generator().manual_seed(0)))
    assert generator_latent("contextual", latent, mask) is latent
    assert not generator_latent("zeroed", latent, mask).any()
    noise = generator_latent("none", torch.zeros(4, 8, 16, 16), mask, torch.Generator().manual_seed(0))
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    with pytest.raises(ValueError, match="context latent mode"):
        generator_latent("random", latent, mask)


def test_ablated_models_convert_to_the_original_layout_and_back():
    """Same keys for every ablation: an original-layout checkpoint loads into each; a model the
    original would run differently (no latent code, no gates) is not exported to its layout."""
    from cagnet.errors import CheckpointError
    from cagnet.models import load_checkpoint, to_original_state_dict

    reference_keys = list(to_original_state_dict(tiny_model(0)))
    for overrides in ({"context_latent": "none"}, {"context_latent": "shuffled"}, {"context_gates": False}):
        source = tiny_model(5)
        state = to_original_state_dict(source)
        assert list(state) == reference_keys, overrides
        target = tiny_model(6, **overrides)
        load_checkpoint(target, dict(state))
        assert all(torch.equal(x, y) for x, y in zip(source.state_dict().values(), target.state_dict().values()))
        if overrides == {"context_latent": "shuffled"}:   # a training-time ablation: it runs as CaGNet
            assert list(to_original_state_dict(target)) == reference_keys
        else:
            key = next(iter(overrides))
            with pytest.raises(CheckpointError, match=f"model.{key}: .* runs differently in the original code"):
                to_original_state_dict(target)
