"""One training iteration: gradient routing of the step-1 losses, step-2 label prior,
self-training labels, pixel-concatenated discriminator calls, feature grids."""
from __future__ import annotations

import math

import pytest
import torch

from cagnet.config import LossWeights
from cagnet.data import IGNORE_INDEX
from cagnet.data.transforms import resize_labels
from cagnet.models import build_cagnet
from cagnet.train import steps
from cagnet.train.distributed import DistContext, wrap_parts

S, U = 6, 3

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _build(**overrides):
    torch.manual_seed(0)
    net = build_cagnet("tiny", num_seen=S, num_unseen=U, feature_dim=16, context_width=16, embedding_dim=8,
                       generator_widths=(32, 32), generator_dropouts=(0.1, 0.1), discriminator_width=32, **overrides)
    net.set_class_embeddings(torch.nn.functional.normalize(torch.randn(S + U, 8), dim=1))
    net.train()
    return net


@pytest.fixture()
def model():
    return _build()


def _batch(seed=1, size=40):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 3, size, size, generator=generator) * 50
    labels = torch.randint(0, S, (2, size, size), generator=generator)
    labels[:, :8] = IGNORE_INDEX
    return image, labels


def _grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def _run_step1(model, weights, seed=5):
    model.zero_grad(set_to_none=True)
    parts = wrap_parts(model, DistContext(), train_backbone=True)
    image, labels = _batch()
    torch.manual_seed(seed)
    out = steps.step1(parts, image, labels, weights)
    out.total.backward()
    return out


def test_each_loss_reaches_only_its_own_part(model):
    """Zeroing the backbone's and generator's loss weights leaves the discriminator's gradient
    unchanged (and the same for the other parts): no loss leaks into another part."""
    full = LossWeights(lambda_D_cls_fake=0.25, lambda_G_cls=0.5)
    _run_step1(model, full)
    reference = {name: _grads(getattr(model, name)) for name in ("discriminator", "generator", "backbone", "context")}

    no_b_no_g = LossWeights(lambda_B_KLD=0, lambda_B_cls=0, lambda_G_GAN=0, lambda_G_Content=0,
                            lambda_D_cls_fake=0.25, lambda_G_cls=0)
    _run_step1(model, no_b_no_g)
    for mine, theirs in zip(_grads(model.discriminator), reference["discriminator"]):
        assert torch.equal(mine, theirs)
    for part in ("generator", "backbone", "context"):
        assert all(g is None or not g.any() for g in _grads(getattr(model, part))), part

    only_g = LossWeights(lambda_B_KLD=0, lambda_B_cls=0, lambda_D_cls_real=0, lambda_D_cls_fake=0,
                         lambda_G_cls=0.5)
    _run_step1(model, only_g)
    for mine, theirs in zip(_grads(model.generator), reference["generator"]):
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-7)
    for part in ("backbone", "context"):
        assert all(g is None or not g.any() for g in _grads(getattr(model, part))), part

    only_b = LossWeights(lambda_G_GAN=0, lambda_G_Content=0, lambda_D_cls_real=0, lambda_D_cls_fake=0)
    _run_step1(model, only_b)
    for part in ("backbone", "context"):
        for mine, theirs in zip(_grads(getattr(model, part)), reference[part]):
            assert (mine is None and theirs is None) or torch.allclose(mine, theirs, rtol=1e-5, atol=1e-8)
    assert all(g is None or not g.any() for g in _grads(model.generator))


def test_step1_logs_finite_values_and_generator_input_is_detached(model):
    out = _run_step1(model, LossWeights())
    expected = {"loss_D", "loss_B", "loss_G", "gan_D", "gan_G", "cls_real", "cls_fake", "kl", "mmd",
                "acc_real", "acc_fake"}
    assert set(out.logs) == expected
    assert all(math.isfinite(v.item()) for v in out.logs.values())
    assert out.trains_backbone and out.trains_generator
    total = out.logs["loss_D"] + out.logs["loss_B"] + out.logs["loss_G"]
    assert out.total.item() == pytest.approx(total.item(), rel=1e-5)


def test_frozen_backbone_gets_no_gradient(model):
    parts = wrap_parts(model, DistContext(), train_backbone=False)
    image, labels = _batch()
    out = steps.step1(parts, image, labels, LossWeights(lambda_D_cls_real=0.75, lambda_D_cls_fake=0.25),
                      train_backbone=False)
    out.total.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.context.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert "loss_B" not in out.logs and not out.trains_backbone


def test_unseen_prior_values():
    prior = steps.unseen_prior(15, 5, 9)
    assert prior.shape == (20,)
    assert prior.sum().item() == pytest.approx(1.0)
    assert prior[0].item() == pytest.approx(1 / (15 + 5 * 10))
    assert prior[15].item() == pytest.approx(10 / (15 + 5 * 10))


def test_step2_labels_follow_the_prior_statistically():
    torch.manual_seed(0)
    prior = steps.unseen_prior(S, U, 4.0)           # unseen classes: 5 / (6 + 15) each
    labels = steps.sample_step2_labels(prior, (8, 50, 50), torch.device("cpu"))
    counts = torch.bincount(labels.flatten(), minlength=S + U).double()
    n = labels.numel()
    for k in range(S + U):
        p = prior[k].item()
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[k].item() - n * p) < 5 * sigma, (k, counts[k].item(), n * p)
    unseen_share = counts[S:].sum().item() / n
    assert unseen_share == pytest.approx(15 / 21, abs=0.02)
    assert labels.min() >= 0 and labels.max() < S + U


def test_step2_trains_only_the_classifier(model):
    parts = wrap_parts(model, DistContext(), train_backbone=False)
    prior = steps.unseen_prior(S, U, 3.0)
    out = steps.step2(parts, 2, (5, 5), prior, LossWeights(lambda_D_cls_fake_transfer=0.125),
                      device=torch.device("cpu"))
    out.total.backward()
    assert not out.trains_generator and not out.trains_backbone
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.discriminator.cls_head.weight.grad.abs().sum() > 0
    assert not model.discriminator.gan_head.weight.grad.any()   # present (zero) for DDP
    model.zero_grad(set_to_none=True)
    out = steps.step2(parts, 2, (5, 5), prior, LossWeights(lambda_D_cls_fake_transfer=1, lambda_G_cls_transfer=1),
                      device=torch.device("cpu"))
    out.total.backward()
    assert out.trains_generator
    assert all(p.grad is not None for p in model.generator.parameters())


def test_discriminate_concatenated_call_equals_separate_calls(model):
    model.eval()
    features = [torch.rand(2, 16, 5, 5), torch.rand(2, 16, 3, 3), torch.rand(1, 16, 4, 6)]
    together = steps.discriminate(model.discriminator, features)
    frozen = steps.discriminate_frozen(model.discriminator, features)
    for f, (score, logits), (score_f, logits_f) in zip(features, together, frozen):
        assert torch.allclose(score, model.gan_score(f), atol=1e-6)
        assert torch.allclose(logits, model.classify(f), atol=1e-5)
        assert torch.equal(score, score_f) and torch.equal(logits, logits_f)


def test_feature_grid_on_meta_matches_a_real_forward(model):
    for size in ((48, 48), (41, 57), (24, 36)):
        with torch.no_grad():
            real = model.backbone(torch.zeros(1, 3, *size)).shape[-2:]
        assert steps.feature_grid(model, size) == tuple(real)
    grids = steps.step1_grids(model, (48, 48))
    assert grids == [steps.feature_grid(model, (48, 48)), steps.feature_grid(model, (24, 24)),
                     steps.feature_grid(model, (36, 36)), steps.feature_grid(model, (48, 48))]


def test_pseudo_labels_fill_ignored_pixels_with_unseen_classes(model):
    image, labels = _batch()
    generator_state = torch.get_rng_state()
    with torch.no_grad():
        model.discriminator.cls_head.bias[S:S + U] += 100.0   # unseen classes win everywhere
    pseudo = steps.pseudo_labels(model, image, labels, top_p=1)
    assert torch.equal(torch.get_rng_state(), generator_state)   # eval mode: no randomness
    assert model.training
    grid = steps.feature_grid(model, image.shape[-2:])
    resized = steps.resize_labels(labels, grid)
    ignored = resized == IGNORE_INDEX
    assert pseudo.shape == resized.shape
    assert torch.equal(pseudo[~ignored], resized[~ignored])
    assert ((pseudo[ignored] >= S) & (pseudo[ignored] < S + U)).all()
    with torch.no_grad():
        model.discriminator.cls_head.bias[S:S + U] -= 200.0   # now never among the top 1
    assert torch.equal(steps.pseudo_labels(model, image, labels, top_p=1), resized)


def test_generator_embeddings_for_unseen_pseudo_labels(model):
    labels = torch.tensor([[[0, S, S + 1, IGNORE_INDEX]]])
    zero = steps.generator_embeddings(model, labels, "zero")
    word = steps.generator_embeddings(model, labels, "word")
    assert torch.equal(zero[0, :, 0, 0], model.class_embeddings[0])
    assert not zero[0, :, 0, 1:].any()                      # the original's seen table: zero rows
    assert torch.equal(word[0, :, 0, 1], model.class_embeddings[S])
    assert not word[0, :, 0, 3].any()


def test_bf16_autocast_step_on_cpu(model):
    parts = wrap_parts(model, DistContext(), train_backbone=True)
    image, labels = _batch()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    out = steps.step1(parts, image, labels, LossWeights(), amp="bf16")
    assert all(math.isfinite(v.item()) for v in out.logs.values())
    assert out.total.dtype == torch.float32
    out.total.backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.requires_grad]
    assert sum(changed) > 0.9 * len(changed)


def test_step1_with_host_labels_computes_the_same_losses(model):
    """CPU labels passed alongside (for the MMD loss's run layout) change nothing but where the
    layout is computed."""
    parts = wrap_parts(model, DistContext(), train_backbone=True)
    image, labels = _batch()
    outputs = []
    for host_labels in (None, labels.clone()):
        torch.manual_seed(3)
        outputs.append(steps.step1(parts, image, labels, LossWeights(), host_labels=host_labels))
    assert outputs[0].logs.keys() == outputs[1].logs.keys()
    for name in outputs[0].logs:
        assert torch.equal(outputs[0].logs[name], outputs[1].logs[name]), name


# ------------------------------------------------------------------ ablations of the contextual latent
class _RecordingGenerator(torch.nn.Module):
    """The generator, keeping a copy of every condition ``[embedding ; latent]`` it gets."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator
        self.conditions = []

    def forward(self, condition):
        self.conditions.append(condition.detach().clone())
        return self.generator(condition)


def _step1_of(**overrides):
    """(model, step output, generator's latent input [N, C, h, w], labelled mask [N, h, w]) of one
    step 1 of a freshly built model on the fixed batch and seed."""
    net = _build(**overrides)
    parts = wrap_parts(net, DistContext(), train_backbone=True)
    parts.generator = recorder = _RecordingGenerator(parts.generator)
    image, labels = _batch()
    torch.manual_seed(5)
    out = steps.step1(parts, image, labels, LossWeights(lambda_D_cls_fake=0.25, lambda_G_cls=0.5))
    out.total.backward()
    latent = recorder.conditions[0][:, net.config.embedding_dim:]
    mask = resize_labels(labels, latent.shape[-2:]) != IGNORE_INDEX
    return net, out, latent, mask


def _grads_of(net, part):
    return [p.grad for p in getattr(net, part).parameters()]


def test_default_step1_is_the_contextual_one_bit_for_bit():
    default, explicit = _step1_of(), _step1_of(context_latent="contextual")
    assert default[1].logs.keys() == explicit[1].logs.keys()
    for name in default[1].logs:
        assert torch.equal(default[1].logs[name], explicit[1].logs[name]), name
    assert torch.equal(default[2], explicit[2])
    for a, b in zip(default[0].parameters(), explicit[0].parameters()):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("mode", ["zeroed", "shuffled"])
def test_latent_ablations_change_only_what_the_generator_gets(mode):
    # no classifier dropout: the permutation's draw would shift the classifier's dropout masks
    base_net, base, base_latent, mask = _step1_of(discriminator_dropout=0.0)
    net, out, latent, _ = _step1_of(context_latent=mode, discriminator_dropout=0.0)
    # the real-feature path, its KL and the backbone's gradients are CaGNet's
    for name in ("cls_real", "kl", "loss_B", "acc_real"):
        assert torch.equal(out.logs[name], base.logs[name]), name
    for part in ("backbone", "context"):
        for a, b in zip(_grads_of(net, part), _grads_of(base_net, part)):
            assert (a is None and b is None) or torch.equal(a, b), part
    assert not torch.equal(out.logs["mmd"], base.logs["mmd"])
    pixels, base_pixels = latent.permute(0, 2, 3, 1), base_latent.permute(0, 2, 3, 1)
    if mode == "zeroed":
        assert not latent.any() and base_latent.any()
    else:
        # the same codes (same draw of the reparameterisation), moved between labelled pixels
        moved, kept = pixels[mask], base_pixels[mask]
        assert not torch.equal(moved, kept)
        assert sorted(map(tuple, moved.tolist())) == sorted(map(tuple, kept.tolist()))
        assert torch.equal(pixels[~mask], base_pixels[~mask])


def test_step1_without_the_contextual_code_feeds_noise_and_has_no_kl():
    net, out, latent, _ = _step1_of(context_latent="none")
    assert out.logs["kl"].item() == 0.0
    # N(0, I) per pixel, as in step 2 (2 x 16 x 5 x 5 draws)
    assert abs(latent.mean().item()) < 0.15 and abs(latent.std().item() - 1) < 0.15
    assert all(g is None for g in _grads_of(net, "context"))
    assert all(g is not None and g.any() for g in _grads_of(net.backbone, "aspp"))   # the backbone still learns
    assert math.isfinite(out.total.item())
