"""The project's CaGNetv2 parts compute what the original implementation computes.

``patch_reference.pt`` (README of the reference folder) holds seeded inputs, the original's
weights and the outputs the ORIGINAL code computed (CPU, float32, eval mode): the patch
classifier (class logits, GAN score, patch-centre and all-position loss / accuracy), the
label-block PixelCNN in its three condition forms, ``fill_in_hole`` and the step-2 tiling of
blocks and per-block noise. The folder is ``$CAGNET_ORIGINAL_V2_REFERENCE`` when set, else
``../shared/original_cagnetv2`` from the project root; without it every test here is skipped.
Sizes are read from the file's shapes, so another seed of the same format passes too.

Tolerances follow from the computation, not from one machine's result. Every compared
tensor is a float32 sum of products, and two implementations (or two BLAS / conv kernels)
may add the terms in another order. Such sums differ by a few float32 epsilons (1.2e-7) times
the sum of the terms' magnitudes, ``sum |w| |x| + |b|``; errors of earlier layers reach an
output multiplied by the same weights, larger only by their cancellation ratio (about the
square root of their few hundred to few thousand terms). A tolerance of ``RELATIVE = 1e-5``
times the magnitude of the terms of an output's last sum covers both with margin, while a
change of the architecture (the perturbation tests at the end) moves outputs by a sizeable
fraction of that magnitude. A sigmoid is 1/4-Lipschitz, so the GAN score keeps its logit's
tolerance; a mean cross-entropy moves by at most twice the largest logit error (logsumexp
and the target logit are 1-Lipschitz in the max norm), plus the rounding of its own mean.
Integer outputs (hole filling, tiling) and copied values (noise) must be equal. (On the stored
reference the differences are 2-3 eps of the terms' magnitude, 30x below the tolerance.)

The reference's PixelCNN weights are at their initial scale and its embeddings have unit
norm: its logits depend on the input blocks by less than 1e-7 (the condition terms and the
biases make them). So the PixelCNN comparisons check the layer structure, the positional
pattern of the masks and the condition path, not the input path; the causality of the masks
on the input is tested in ``tests/test_patches.py`` on a network where the input matters.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import require_reference

from cagnet.data.blocks import fill_block_holes, tile_blocks, tile_noise
from cagnet.losses.segmentation import patch_centre_accuracy, patch_centre_loss
from cagnet.models import (Discriminator, LabelBlockPixelCNN, build_cagnet, causal_mask, load_original_discriminator,
                           load_original_pixelcnn)

#: float32 sums agree to a few eps (1.2e-7) of their terms' magnitude; 1e-5 leaves room for the
#: cancellation in earlier layers (module docstring)
RELATIVE = 1e-5
REFERENCE_KEYS = ("seed", "ps3_state_dict", "ps3_feature", "ps3_cls", "ps3_gan", "ps3_gt", "ps3_loss_centres",
                  "ps3_acc_centres", "ps3_loss_all", "ps3_acc_all", "pixelcnn_state_dict", "pixelcnn_emb_all",
                  "pixelcnn_blocks", "pixelcnn_logits", "pixelcnn_condition_class",
                  "pixelcnn_logits_condition_class", "pixelcnn_unconditioned_logits", "mask_A", "mask_B",
                  "fill_in", "fill_out", "fill_still_masked", "tile_blocks", "tile_label_map",
                  "noise_per_patch", "noise_map")


@pytest.fixture(scope="module")
def reference() -> dict:
    path = require_reference("v2", "patch_reference.pt")
    return torch.load(path / "patch_reference.pt", map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- helpers
def term_magnitude(conv: torch.nn.Conv2d, conv_input: torch.Tensor) -> torch.Tensor:
    """``sum |w| |x| + |b|`` of each output of ``conv`` on ``conv_input``: the size of its terms."""
    bias = conv.bias.abs() if conv.bias is not None else None
    return F.conv2d(conv_input.abs(), conv.weight.abs(), bias, conv.stride, conv.padding, conv.dilation)


def inputs_of(modules: list[torch.nn.Module], run) -> list[torch.Tensor]:
    """The input each of ``modules`` receives (last call) during ``run()``."""
    seen: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, args[0].detach()))
               for i, m in enumerate(modules)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return [seen[i] for i in range(len(modules))]


def assert_within(value: torch.Tensor, expected: torch.Tensor, tolerance: torch.Tensor | float, what: str) -> None:
    assert value.shape == expected.shape, f"{what}: shape {tuple(value.shape)} vs {tuple(expected.shape)}"
    excess = (value.double() - expected.double()).abs() - torch.as_tensor(tolerance).double()
    assert excess.max() <= 0, (f"{what}: max difference {(value - expected).abs().max():.3g} exceeds the "
                               f"tolerance by {excess.max():.3g}")


def discriminator_from(reference: dict) -> Discriminator:
    state = reference["ps3_state_dict"]
    hidden, feature_dim = state["fc.conv.weight"].shape[:2]
    model = Discriminator(feature_dim, hidden, state["cls.weight"].shape[0], patch_size=state["cls_3.weight"].shape[-1])
    report = load_original_discriminator(model, state, name="ps3_state_dict")
    assert len(report.loaded) == len(state) and not report.initialised
    return model.eval()


def classifier_outputs(model: Discriminator, feature: torch.Tensor):
    """(class logits, their tolerance, GAN score, its tolerance)."""
    outputs = []
    with torch.no_grad():
        cls_input, gan_input = inputs_of([model.cls_head, model.gan_head], lambda: outputs.append(model(feature)))
        score, logits = outputs[0]
        return (logits, RELATIVE * term_magnitude(model.cls_head, cls_input),
                score, RELATIVE * term_magnitude(model.gan_head, gan_input))


def pixelcnn_from(reference: dict) -> LabelBlockPixelCNN:
    state = reference["pixelcnn_state_dict"]
    layers = sum(1 for k in state if re.fullmatch(r"conv\d+\.0\.weight", k))
    width, embedding_dim, kernel = state["conv1.0.weight"].shape[:3]
    model = LabelBlockPixelCNN(state[f"conv{layers + 1}.weight"].shape[0], embedding_dim, width, layers, kernel,
                               conditioned="b1" in state)
    report = load_original_pixelcnn(model, state, name="pixelcnn_state_dict")
    assert report.left_initialised == ["class_embeddings"]
    model.set_class_embeddings(reference["pixelcnn_emb_all"])
    return model.eval()


PIXELCNN_FORMS = {
    # reference key: condition given to forward (None: unconditioned)
    "pixelcnn_logits": lambda r: r["pixelcnn_blocks"],                       # the original's training form
    "pixelcnn_logits_condition_class": lambda r: r["pixelcnn_condition_class"],  # its sampling form
    "pixelcnn_unconditioned_logits": lambda r: None,
}


def pixelcnn_outputs(model: LabelBlockPixelCNN, reference: dict, form: str) -> tuple[torch.Tensor, torch.Tensor]:
    blocks, condition = reference["pixelcnn_blocks"], PIXELCNN_FORMS[form](reference)
    outputs = []
    with torch.no_grad():
        last, = inputs_of([model.output], lambda: outputs.append(model(blocks, condition)))
    logits = outputs[0]
    return logits, RELATIVE * term_magnitude(model.output, last)


def loss_tolerance(logits_tolerance: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    return 2 * logits_tolerance.max() + RELATIVE * loss.abs()


def accuracy_slack(logits: torch.Tensor, tolerance: torch.Tensor, labels: torch.Tensor, patch_size: int) -> float:
    """How far an accuracy may move with logits within tolerance: the share of labelled
    (centre) positions whose two largest logits are closer than twice the tolerance."""
    centre = (patch_size - 1) // 2
    top = logits[:, :, centre::patch_size, centre::patch_size].topk(2, dim=1).values
    close = (top[:, 0] - top[:, 1]) <= 2 * tolerance[:, :, centre::patch_size, centre::patch_size].amax(1)
    labelled = labels[:, centre::patch_size, centre::patch_size] != 255
    return float((close & labelled).sum()) / max(int(labelled.sum()), 1)


# ---------------------------------------------------------------- the reference
def test_reference_has_every_tensor(reference):
    assert not [k for k in REFERENCE_KEYS if k not in reference]


def test_reference_is_not_trivial(reference):
    # the comparisons mean something only if the outputs vary and the ignore label occurs
    for key in ("ps3_cls", "ps3_gan", "pixelcnn_logits", "pixelcnn_logits_condition_class", "noise_map"):
        assert reference[key].std() > 100 * RELATIVE, key
    assert 0 < (reference["ps3_gt"] == 255).float().mean() < 0.5
    assert (reference["fill_in"] == 255).any() and not (reference["fill_out"] == 255).all()
    # the three condition forms differ, so each comparison tests its own form
    assert not torch.allclose(reference["pixelcnn_logits"], reference["pixelcnn_unconditioned_logits"], atol=1e-3)
    assert not torch.allclose(reference["pixelcnn_logits"], reference["pixelcnn_logits_condition_class"], atol=1e-3)


# ---------------------------------------------------------------- patch classifier
def test_patch_classifier_matches_original(reference):
    model = discriminator_from(reference)
    logits, logits_tol, score, score_tol = classifier_outputs(model, reference["ps3_feature"])
    assert_within(logits, reference["ps3_cls"], logits_tol, "class logits")
    assert_within(score, reference["ps3_gan"], score_tol, "GAN score")   # sigmoid: 1/4-Lipschitz
    # the tolerance is a small fraction of the spread of the values compared
    assert logits_tol.max() < 1e-3 * reference["ps3_cls"].std()


def test_patch_classifier_in_the_cagnet_model_matches_original(reference):
    # the same head inside a CaGNet built with model.patch_size = 3, through model.classify
    state = reference["ps3_state_dict"]
    hidden, feature_dim = state["fc.conv.weight"].shape[:2]
    outputs = state["cls.weight"].shape[0]
    model = build_cagnet("small_reference", feature_dim=feature_dim, discriminator_width=hidden,
                         num_seen=outputs - 1 - 5, num_unseen=5, patch_size=3, device="cpu")
    load_original_discriminator(model.discriminator, {"dis." + k: v for k, v in state.items()})
    model.eval()
    _, logits_tol, _, score_tol = classifier_outputs(model.discriminator, reference["ps3_feature"])
    with torch.no_grad():
        assert_within(model.classify(reference["ps3_feature"]), reference["ps3_cls"], logits_tol, "model.classify")
        assert_within(model.gan_score(reference["ps3_feature"]), reference["ps3_gan"], score_tol, "model.gan_score")


@pytest.mark.parametrize("patch_size,suffix", [(3, "centres"), (1, "all")])
def test_patch_centre_loss_and_accuracy_match_original(reference, patch_size, suffix):
    model = discriminator_from(reference)
    logits, logits_tol, _, _ = classifier_outputs(model, reference["ps3_feature"])
    labels = reference["ps3_gt"]
    expected_loss, expected_acc = reference[f"ps3_loss_{suffix}"], reference[f"ps3_acc_{suffix}"]
    loss = patch_centre_loss(logits, labels, patch_size)
    assert_within(loss, expected_loss, loss_tolerance(logits_tol, expected_loss), f"loss ({suffix})")
    accuracy = patch_centre_accuracy(logits, labels, patch_size)
    slack = accuracy_slack(logits, logits_tol, labels, patch_size)
    assert abs(float(accuracy) - float(expected_acc)) <= slack + 1e-7, f"accuracy ({suffix})"
    # on the reference's own logits too (the loss function alone)
    loss_on_reference = patch_centre_loss(reference["ps3_cls"], labels, patch_size)
    assert_within(loss_on_reference, expected_loss, RELATIVE * expected_loss.abs(), f"loss on reference logits ({suffix})")


# ---------------------------------------------------------------- PixelCNN
def test_masks_match_original(reference):
    side = reference["mask_A"].shape[-1]
    assert torch.equal(causal_mask(side, "A"), reference["mask_A"].float())
    assert torch.equal(causal_mask(side, "B"), reference["mask_B"].float())


@pytest.mark.parametrize("form", sorted(PIXELCNN_FORMS))
def test_pixelcnn_matches_original(reference, form):
    model = pixelcnn_from(reference)
    logits, tolerance = pixelcnn_outputs(model, reference, form)
    assert_within(logits, reference[form], tolerance, form)


# ---------------------------------------------------------------- blocks
def test_fill_in_hole_matches_original(reference):
    filled, still_missing = fill_block_holes(reference["fill_in"])
    assert filled.dtype == reference["fill_out"].dtype
    assert torch.equal(filled, reference["fill_out"])
    assert torch.equal(still_missing, reference["fill_still_masked"].bool())


def test_tiling_matches_original(reference):
    blocks = reference["tile_blocks"]
    label_map = reference["tile_label_map"]
    assert torch.equal(tile_blocks(blocks, label_map.shape[-2:]), label_map)
    patch_size = reference["noise_map"].shape[-1] // reference["noise_per_patch"].shape[-1]
    assert torch.equal(tile_noise(reference["noise_per_patch"], patch_size), reference["noise_map"])


# ---------------------------------------------------------------- the tests can fail
def _transposed_patch_kernel(model: Discriminator) -> None:
    with torch.no_grad():
        model.patch_conv.weight.copy_(model.patch_conv.weight.transpose(-1, -2).clone())


def _gan_head_through_patch_conv(model: Discriminator) -> None:
    def forward(feature):
        shared = model.hidden(feature)
        return torch.sigmoid(model.gan_head(model.patch_conv(shared))), model.cls_head(model.patch_conv(shared))
    model.forward = forward


def _patch_conv_with_activation(model: Discriminator) -> None:
    model.patch_conv = torch.nn.Sequential(model.patch_conv, torch.nn.ReLU())


CLASSIFIER_PERTURBATIONS = {
    "transposed_patch_kernel": (_transposed_patch_kernel, "ps3_cls"),
    "gan_head_through_patch_conv": (_gan_head_through_patch_conv, "ps3_gan"),
    "patch_conv_with_activation": (_patch_conv_with_activation, "ps3_cls"),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIER_PERTURBATIONS))
def test_perturbed_classifier_fails_comparison(reference, name):
    perturb, key = CLASSIFIER_PERTURBATIONS[name]
    model = discriminator_from(reference)
    perturb(model)
    logits, logits_tol, score, score_tol = classifier_outputs(model, reference["ps3_feature"])
    value, tolerance = (logits, logits_tol) if key == "ps3_cls" else (score, score_tol)
    with pytest.raises(AssertionError):
        assert_within(value, reference[key], tolerance, name)


def test_other_centre_offset_fails_comparison(reference):
    model = discriminator_from(reference)
    logits, logits_tol, _, _ = classifier_outputs(model, reference["ps3_feature"])
    labels = reference["ps3_gt"]
    wrong = F.cross_entropy(logits[:, :, 0::3, 0::3], labels[:, 0::3, 0::3], ignore_index=255)
    assert (wrong - reference["ps3_loss_centres"]).abs() > loss_tolerance(logits_tol, wrong)


def _mask_a_everywhere(model: LabelBlockPixelCNN) -> None:
    for layer in model.layers:
        layer.conv.mask.copy_(causal_mask(layer.conv.kernel_size[0], "A"))


def _condition_on_first_layer_only(model: LabelBlockPixelCNN) -> None:
    with torch.no_grad():
        for layer in model.layers[1:]:
            layer.condition_weight.zero_()


def _condition_before_activation(model: LabelBlockPixelCNN) -> None:
    # h @ b added between BN and ReLU instead of after the ReLU
    for layer in model.layers:
        def forward(x, condition=None, layer=layer):
            out = layer.norm(layer.conv(x))
            if condition is not None:
                term = condition @ layer.condition_weight
                out = out + (term[:, :, None, None] if term.dim() == 2 else term.permute(0, 3, 1, 2))
            return layer.activation(out)
        layer.forward = forward


PIXELCNN_PERTURBATIONS = {
    "mask_a_everywhere": (_mask_a_everywhere, "pixelcnn_unconditioned_logits"),
    "condition_on_first_layer_only": (_condition_on_first_layer_only, "pixelcnn_logits_condition_class"),
    "condition_before_activation": (_condition_before_activation, "pixelcnn_logits"),
}


@pytest.mark.parametrize("name", sorted(PIXELCNN_PERTURBATIONS))
def test_perturbed_pixelcnn_fails_comparison(reference, name):
    perturb, form = PIXELCNN_PERTURBATIONS[name]
    model = pixelcnn_from(reference)
    perturb(model)
    logits, tolerance = pixelcnn_outputs(model, reference, form)
    with pytest.raises(AssertionError):
        assert_within(logits, reference[form], tolerance, name)


def test_other_fill_order_or_tiling_fails_comparison(reference):
    # columns before rows fills differently on the reference's holes
    def fill_columns_first(blocks):
        return fill_block_holes(blocks.transpose(-1, -2))[0].transpose(-1, -2)
    assert not torch.equal(fill_columns_first(reference["fill_in"]), reference["fill_out"])
    # column-major tiling
    blocks = reference["tile_blocks"]
    label_map = reference["tile_label_map"]
    assert not torch.equal(tile_blocks(blocks, label_map.shape[-2:]).transpose(-1, -2), label_map)
