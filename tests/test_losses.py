"""Tests of cagnet.losses: classification, GAN kinds, gradient penalty, KL and the MMD loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cagnet.losses import (
    GAN_KINDS,
    classification_loss,
    discriminator_gan_loss,
    gan_loss,
    generator_gan_loss,
    gradient_penalty,
    kl_divergence,
    mmd_loss,
    mmd_loss_loop,
)


# ------------------------------------------------------------------------------------------
# label layouts for the MMD tests
# ------------------------------------------------------------------------------------------
def _layout(name: str, shape, generator: torch.Generator) -> torch.Tensor:
    n, h, w = shape
    if name == "random_classes":      # many short runs
        labels = torch.randint(0, 3, shape, generator=generator)
    elif name == "with_ignored":
        labels = torch.randint(0, 3, shape, generator=generator)
        labels[torch.rand(shape, generator=generator) < 0.4] = 255
    elif name == "single_pixel_runs":  # labels alternate: every run has length 1
        labels = (torch.arange(n * h * w) % 2).reshape(shape)
    elif name == "one_long_run":       # a single class over everything but a few ignored pixels
        labels = torch.full(shape, 4)
        labels[0, 0, :2] = 255
    elif name == "blocks":             # piecewise-constant regions, runs spanning rows
        labels = torch.full(shape, 255)
        labels[:, : h // 2, : w // 2] = 1
        labels[:, h // 2:, :] = 2
        labels[0, 1:3, w // 2:] = 1
    elif name == "all_ignored":
        labels = torch.full(shape, 255)
    else:
        raise KeyError(name)
    return labels


LAYOUTS = ["random_classes", "with_ignored", "single_pixel_runs", "one_long_run", "blocks"]


def _features(seed: int, shape, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    predict = torch.rand(shape, generator=generator, dtype=dtype)
    target = torch.rand(shape, generator=generator, dtype=dtype)
    return predict, target, generator


# ------------------------------------------------------------------------------------------
# MMD
# ------------------------------------------------------------------------------------------
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24


def _label_runs(labels: torch.Tensor, ignore_index: int = 255) -> list[list[int]]:
    """Flat (N, H, W) pixel indices of each run of equal labels (the loss's definition)."""
    flat = labels.reshape(-1).tolist()
    labelled = [i for i, label in enumerate(flat) if label != ignore_index]
    runs, start = [], 0
    for k in range(1, len(labelled) + 1):
        if k == len(labelled) or flat[labelled[k]] != flat[labelled[start]]:
            runs.append(labelled[start:k])
            start = k
    return runs


def mmd_float32_error_bound(predict, target, labels, bandwidths=(2.0, 5.0, 10.0, 20.0, 40.0, 60.0)) -> float:
    """A worst-case bound on |float32 mmd_loss - exact value| for these inputs, from the sizes
    of the terms (not from any machine's result), so that it holds on every BLAS code path.

    Per run, S = 0.5 sum_ij v_i v_j sum_s expm1(c_s d_ij^2) with |v_i| = 1/L over the 2L
    stacked features centred on their mean, z_i. In float32 (unit roundoff u):
    - the centring is one subtraction per entry, off by u |z_i| (an error of the centre itself
      moves every feature alike and leaves the distances unchanged); the squared distance
      |z_i|^2 + |z_j|^2 - 2 z_i.z_j, from C-term dot products, is off by at most
      (C + 4) u (|z_i| + |z_j|)^2, which moves the kernel sum by |K'(d^2)| times that;
    - each kernel-minus-one value (one expm1 and a chain of products) is off by at most 16 u
      of its size, and the sums over 2L rows and 2L columns add 4L u of the summed sizes;
    so |dS| <= u [(4L + 16) A + (C + 4) D] with A = 0.5 sum |v_i v_j| sum_s |expm1(c_s d^2)| and
    D = 0.5 sum |v_i v_j| sum_s |c_s| exp(c_s d^2) (|z_i| + |z_j|)^2. The run's loss sqrt(S)
    moves by dS / (2 sqrt(S)) plus one rounding, and the mean over R runs adds R u.
    Worst-case sums make it loose (on the layouts below, 29 to over 10^4 times the errors
    measured on an AVX2 CPU with MKL's AVX2 and SSE4.2 kernels; the AVX-512 error that broke a
    fixed 1e-5 relative tolerance, 5.6e-7 absolute, is 1/350 of it), and where S is a tiny
    difference of large terms it says honestly that float32 guarantees little
    (``test_mmd_close_features``).
    """
    channels = predict.shape[1]
    p_rows = predict.double().permute(0, 2, 3, 1).reshape(-1, channels)
    t_rows = target.double().permute(0, 2, 3, 1).reshape(-1, channels)
    u = FLOAT32_UNIT_ROUNDOFF
    runs = _label_runs(labels)
    bound, losses = 0.0, []
    for run in runs:
        length = len(run)
        x = torch.cat([p_rows[run], t_rows[run]])
        centre = x.mean(0)
        squared = torch.cdist(x - centre, x - centre).square()
        v = torch.cat([torch.full((length,), 1.0 / length), torch.full((length,), -1.0 / length)]).double()
        weights = (v[:, None] * v[None, :]).abs()
        size = (x - centre).norm(dim=1)
        kernel_minus_one = sum(torch.expm1(-squared / (2 * sigma)) for sigma in bandwidths)
        kernel_slope = sum(torch.exp(-squared / (2 * sigma)) / (2 * sigma) for sigma in bandwidths)
        statistic = 0.5 * (v[:, None] * v[None, :] * kernel_minus_one).sum()
        a = 0.5 * (weights * sum(torch.expm1(-squared / (2 * s)).abs() for s in bandwidths)).sum()
        d = 0.5 * (weights * kernel_slope * (size[:, None] + size[None, :]) ** 2).sum()
        error = u * ((4 * length + 16) * a + (channels + 4) * d)
        root = statistic.clamp_min(0).sqrt()
        losses.append(root)
        bound += float(error / (2 * root) + u * root) if root > 0 else float(error.sqrt())
    return bound / len(runs) + len(runs) * u * float(sum(losses) / len(runs))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_mmd_vectorised_equals_loop(layout, seed):
    predict, target, generator = _features(seed, (2, 5, 6, 7))
    labels = _layout(layout, (2, 6, 7), generator)
    # the loop in float64 is the exact value of the formula
    expected = mmd_loss_loop(predict.double(), target.double(), labels)
    assert expected > 0
    for chunk_elements in (1 << 21, 7, 1):
        # same formula: float64 agrees to rounding
        actual = mmd_loss(predict.double(), target.double(), labels,
                          chunk_elements=chunk_elements)
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=0)
        # float32 computation: within the rounding bound of its terms (any CPU)
        actual = mmd_loss(predict, target, labels, chunk_elements=chunk_elements)
        assert actual.dtype == torch.float32
        assert abs(actual.double() - expected) <= mmd_float32_error_bound(predict, target, labels)


def test_mmd_close_features():
    """Nearly equal features (a well-trained generator): the statistic is a tiny difference.

    In float64 the vectorised form still equals the loop; in float32 any implementation that
    expands |a - b|^2 = |a|^2 + |b|^2 - 2ab (the original's included) loses relative accuracy
    here, so float32 is checked against the rounding bound of its terms.
    """
    predict, _, generator = _features(3, (2, 64, 6, 7), dtype=torch.float64)
    target = predict + 1e-3 * torch.randn(predict.shape, generator=generator, dtype=torch.float64)
    labels = _layout("blocks", (2, 6, 7), generator)
    expected = mmd_loss_loop(predict, target, labels)
    torch.testing.assert_close(mmd_loss(predict, target, labels), expected, rtol=1e-8, atol=0)
    predict32, target32 = predict.float(), target.float()
    expected32 = mmd_loss_loop(predict32.double(), target32.double(), labels)   # of the float32 inputs
    bound = mmd_float32_error_bound(predict32, target32, labels)
    assert abs(mmd_loss(predict32, target32, labels).double() - expected32) <= bound


def test_mmd_all_ignored_is_zero_with_grad():
    predict, target, generator = _features(0, (2, 4, 3, 3))
    predict.requires_grad_(True)
    labels = _layout("all_ignored", (2, 3, 3), generator)
    loss = mmd_loss(predict, target, labels)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(predict.grad, torch.zeros_like(predict))


def test_mmd_identical_features_zero_without_nan_grad():
    predict, _, generator = _features(0, (1, 4, 4, 5))
    predict.requires_grad_(True)
    labels = _layout("with_ignored", (1, 4, 5), generator)
    loss = mmd_loss(predict, predict.detach().clone(), labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(predict.grad).all() and not predict.grad.any()


@pytest.mark.parametrize("layout", ["with_ignored", "one_long_run", "single_pixel_runs"])
@pytest.mark.parametrize("chunk_elements", [1 << 21, 3])
def test_mmd_gradient_matches_loop(layout, chunk_elements):
    predict, target, generator = _features(5, (2, 3, 3, 4), dtype=torch.float64)
    labels = _layout(layout, (2, 3, 4), generator)
    grads = []
    for function in (mmd_loss_loop,
                     lambda p, t, g: mmd_loss(p, t, g, chunk_elements=chunk_elements)):
        p, t = predict.clone().requires_grad_(True), target.clone().requires_grad_(True)
        function(p, t, labels).backward()
        grads.append((p.grad, t.grad))
    for actual, expected in zip(grads[1], grads[0]):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-10)


def test_mmd_gradcheck_chunked():
    predict, target, generator = _features(6, (1, 3, 3, 3), dtype=torch.float64)
    labels = _layout("blocks", (1, 3, 3), generator)
    predict.requires_grad_(True)
    target.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, t: mmd_loss(p, t, labels, chunk_elements=2), (predict, target))


def test_mmd_autocast_and_half_inputs():
    predict, target, generator = _features(7, (2, 8, 4, 4))
    labels = _layout("with_ignored", (2, 4, 4), generator)
    predict16, target16 = predict.bfloat16(), target.bfloat16()
    expected = mmd_loss(predict16.float(), target16.float(), labels)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        actual = mmd_loss(predict16, target16, labels)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=0)
    # gradients too, also when backward() itself runs inside the autocast region
    grads = []
    for use_autocast in (False, True):
        p = predict16.float().requires_grad_(True)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=use_autocast):
            mmd_loss(p, target16.float(), labels).backward()
        grads.append(p.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-8)


def test_mmd_buckets_of_many_run_lengths_equal_the_loop():
    """Runs of lengths 1..~200 fall into many buckets (and several row blocks per kernel matrix)."""
    generator = torch.Generator().manual_seed(8)
    labels = torch.full((2, 16, 16), 255)
    position, value = 0, 0
    flat = labels.view(-1)
    for length in (1, 2, 3, 5, 8, 9, 11, 13, 15, 17, 23, 31, 40, 60, 70, 200):
        flat[position:position + length] = value % 3
        position += length + 1          # an ignored pixel between runs of the same label
        value += 1
    predict = torch.rand(2, 6, 16, 16, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 6, 16, 16, generator=generator, dtype=torch.float64)
    expected = mmd_loss_loop(predict, target, labels)
    for chunk_elements in (None, 100):
        torch.testing.assert_close(mmd_loss(predict, target, labels, chunk_elements=chunk_elements), expected,
                                   rtol=1e-10, atol=0)
        predict32, target32 = predict.float(), target.float()
        exact32 = mmd_loss_loop(predict32.double(), target32.double(), labels)   # of the float32 inputs
        actual = mmd_loss(predict32, target32, labels, chunk_elements=chunk_elements).double()
        assert abs(actual - exact32) <= mmd_float32_error_bound(predict32, target32, labels)


def test_mmd_gpu_tiling_and_channels_last_features(monkeypatch):
    """The tiling a GPU uses (coarse buckets, whole buckets per block) and channels-last
    features (gathered as pixel rows) give the same value and gradients, here on the CPU."""
    from cagnet.losses import mmd

    predict, target, generator = _features(9, (2, 5, 6, 7), dtype=torch.float64)
    labels = _layout("with_ignored", (2, 6, 7), generator)
    p, t = predict.clone().requires_grad_(True), target.clone().requires_grad_(True)
    mmd_loss_loop(p, t, labels).backward()
    monkeypatch.setitem(mmd.MMD_TILING, "cpu", mmd.MMD_TILING["cuda"])
    q = predict.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    s = target.clone().requires_grad_(True)
    value = mmd_loss(q, s, labels)
    value.backward()
    torch.testing.assert_close(value, mmd_loss_loop(predict, target, labels), rtol=1e-10, atol=0)
    torch.testing.assert_close(q.grad, p.grad, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(s.grad, t.grad, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("bandwidths", [(2.0, 5.0, 10.0, 20.0, 40.0, 60.0), (3.0,), (2.0, 2.0, 7.0), (0.7, 3.3)])
def test_mmd_kernel_sum_equals_one_expm1_per_bandwidth(bandwidths):
    """One expm1 and products (integer multiples of one coefficient, the original's bandwidths)
    or one expm1 per bandwidth (others): the same kernel sums and derivatives."""
    from cagnet.losses.mmd import _KernelSum

    kernel = _KernelSum(bandwidths)
    assert (kernel.counts is not None) == (bandwidths != (0.7, 3.3))
    squared = torch.cat([torch.linspace(0.0, 1e-6, 5), torch.linspace(0.0, 400.0, 200)]).double()
    coefficients = [-0.5 / sigma for sigma in bandwidths]
    values = sum(torch.expm1(c * squared) for c in coefficients)
    derivative = sum(c * torch.exp(c * squared) for c in coefficients)
    # kernel values are at most 1 (times |c| for the derivative): rounding of order 1e-16 of that
    torch.testing.assert_close(kernel.values(kernel.scale * squared), values, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(kernel.derivative(kernel.scale * squared), derivative, rtol=1e-12, atol=1e-15)
    near = squared < 1e-5   # nearly equal features: expm1 values ~1e-7, still accurate relatively
    torch.testing.assert_close(kernel.values(kernel.scale * squared[near]), values[near], rtol=1e-12, atol=0)
    # float32: the products keep the small "minus one" values relatively accurate
    torch.testing.assert_close(kernel.values(kernel.scale * squared.float()).double(), values, rtol=2e-6, atol=1e-6)


def test_mmd_rejects_mismatched_shapes():
    predict, target, _ = _features(0, (2, 3, 4, 4))
    with pytest.raises(ValueError, match="labels"):
        mmd_loss(predict, target, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="predict"):
        mmd_loss(predict, target[:, :2], torch.zeros(2, 4, 4, dtype=torch.long))


# ------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------
def test_classification_loss_mean_over_labelled_pixels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, generator=generator)
    labels = torch.randint(0, 5, (2, 3, 4), generator=generator)
    labels[0, 0] = 255
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(classification_loss(logits, labels), expected)
    keep = labels != 255
    manual = -F.log_softmax(logits, 1).gather(1, labels.clamp(max=4)[:, None])[:, 0][keep].mean()
    torch.testing.assert_close(classification_loss(logits, labels), manual)


def test_classification_loss_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = classification_loss(logits, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# ------------------------------------------------------------------------------------------
# GAN losses
# ------------------------------------------------------------------------------------------
def _scores(value, shape=(2, 1, 3, 3)):
    return torch.full(shape, float(value))


@pytest.mark.parametrize("kind", ["lsgan", "ls", "gan"])
def test_perfect_discriminator_has_low_loss_and_fooled_one_high(kind):
    perfect = discriminator_gan_loss(_scores(1.0), _scores(0.0), kind)
    fooled = discriminator_gan_loss(_scores(0.0), _scores(1.0), kind)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    assert fooled.item() > 1.0
    assert torch.isfinite(fooled)
    # the generator wants its features judged real
    assert generator_gan_loss(_scores(1.0), kind).item() == pytest.approx(0.0, abs=1e-6)
    assert generator_gan_loss(_scores(0.0), kind).item() > 0.5


def test_lsgan_is_l1_and_ls_is_squared():
    scores = torch.tensor([0.2, 0.7, 0.9]).reshape(1, 1, 1, 3)
    assert gan_loss(scores, True, "lsgan").item() == pytest.approx((0.8 + 0.3 + 0.1) / 3)
    assert gan_loss(scores, False, "lsgan").item() == pytest.approx((0.2 + 0.7 + 0.9) / 3)
    assert gan_loss(scores, True, "ls").item() == pytest.approx((0.64 + 0.09 + 0.01) / 3)


def test_gan_loss_averages_over_masked_pixels_only():
    scores = torch.tensor([[0.0, 1.0], [0.5, 0.25]]).reshape(1, 1, 2, 2)
    mask = torch.tensor([[True, False], [True, False]]).reshape(1, 2, 2)
    assert gan_loss(scores, True, "lsgan", mask).item() == pytest.approx((1.0 + 0.5) / 2)
    empty = torch.zeros_like(mask)
    scores.requires_grad_(True)
    loss = gan_loss(scores, True, "lsgan", empty)
    assert loss.item() == 0.0 and loss.grad_fn is not None


def test_gan_bce_logits_and_scores_agree_and_stay_finite():
    logits = torch.linspace(-4, 4, 9).reshape(1, 1, 3, 3)
    for real in (True, False):
        torch.testing.assert_close(gan_loss(logits, real, "gan", logits=True),
                                   gan_loss(torch.sigmoid(logits), real, "gan"))
    extreme = torch.tensor([-200.0, 200.0]).reshape(1, 1, 1, 2).requires_grad_(True)
    loss = gan_loss(extreme, True, "gan", logits=True)
    assert loss.item() == pytest.approx(100.0, rel=1e-6)
    loss.backward()
    assert torch.isfinite(extreme.grad).all()


def test_wgan_losses_are_signed_means():
    critic = torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2)
    assert gan_loss(critic, True, "wgan-gp").item() == pytest.approx(-2.0)
    assert gan_loss(critic, False, "wgan-gp").item() == pytest.approx(2.0)
    assert generator_gan_loss(critic, "wgan-gp").item() == pytest.approx(-2.0)


def test_gan_loss_rejects_unknown_kind_and_misused_logits():
    assert set(GAN_KINDS) == {"lsgan", "ls", "gan", "wgan-gp"}
    with pytest.raises(ValueError, match="wgan"):
        gan_loss(_scores(0.5), True, "wgan")
    with pytest.raises(ValueError, match="logits"):
        gan_loss(_scores(0.5), True, "lsgan", logits=True)


def _linear_critic(weight_scale: float, channels: int = 4) -> torch.nn.Conv2d:
    critic = torch.nn.Conv2d(channels, 1, kernel_size=1)
    with torch.no_grad():
        direction = torch.randn(1, channels, 1, 1, generator=torch.Generator().manual_seed(0))
        critic.weight.copy_(weight_scale * direction / direction.norm())
    return critic


def test_gradient_penalty_zero_for_unit_norm_linear_critic():
    real, fake, _ = _features(0, (2, 4, 3, 5))
    penalty = gradient_penalty(_linear_critic(1.0), real, fake)
    assert penalty.item() == pytest.approx(0.0, abs=1e-8)


def test_gradient_penalty_value_and_gradient_for_steeper_critic():
    real, fake, _ = _features(1, (2, 4, 3, 5))
    critic = _linear_critic(3.0)
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[0, 1] = True
    penalty = gradient_penalty(critic, real, fake, mask)
    assert penalty.item() == pytest.approx(10.0 * (3.0 - 1.0) ** 2, rel=1e-5)
    penalty.backward()
    assert critic.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# KL
# ------------------------------------------------------------------------------------------
def test_kl_divergence_zero_at_standard_normal_and_positive_elsewhere():
    mask = torch.ones(2, 3, 3, dtype=torch.bool)
    zeros = torch.zeros(2, 4, 3, 3)
    assert kl_divergence(zeros, zeros, mask).item() == 0.0
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(2, 4, 3, 3, generator=generator), torch.randn(2, 4, 3, 3,
                                                                        generator=generator)
    assert kl_divergence(mu, logvar, mask).item() > 0


def test_kl_divergence_matches_formula_over_labelled_pixels():
    generator = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(2, 4, 3, 3, generator=generator), torch.randn(2, 4, 3, 3,
                                                                        generator=generator)
    mask = torch.rand(2, 3, 3, generator=generator) < 0.5
    per_pixel = (1 + logvar - mu ** 2 - logvar.exp()).permute(0, 2, 3, 1)[mask]  # [P, C]
    expected = -0.5 * per_pixel.sum() / per_pixel.numel()
    torch.testing.assert_close(kl_divergence(mu, logvar, mask), expected)
    # unlabelled pixels do not matter
    mu_changed = mu.clone()
    mu_changed.permute(0, 2, 3, 1)[~mask] = 100.0
    torch.testing.assert_close(kl_divergence(mu_changed, logvar, mask), expected)


def test_kl_divergence_empty_mask_is_zero_with_grad():
    mu = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = kl_divergence(mu, torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.grad_fn is not None
