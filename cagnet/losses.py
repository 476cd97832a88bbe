"""Losses of CaGNet: pixel classification, adversarial (several kinds), KL and MMD content loss.

Shapes follow the segmentation convention: features and scores are ``[N, C, H, W]``, label maps
and masks ``[N, H, W]`` on the same grid. A *labelled* pixel is one whose label is not
``ignore_index`` (255). Every loss averages over labelled pixels only, and when no pixel is
labelled it returns a zero that still carries a ``grad_fn`` (when an input requires grad), so a
training step never sees NaN.

All losses compute in float32 (or float64 when given float64), also under autocast, because
distances, exponentials and logarithms lose too much precision in half precision.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from cagnet.runtime import copy_to_device

IGNORE_INDEX = 255

#: Kernel bandwidths of the original MMD content loss.
MMD_BANDWIDTHS: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0, 60.0)

@dataclass(frozen=True)
class MMDTiling:
    """How :func:`mmd_loss` cuts its work: ``chunk_elements`` kernel-matrix entries per block
    and run-length buckets per octave (finer: less padding, more blocks)."""

    chunk_elements: int
    buckets_per_octave: int


#: Tiling by device type: a CPU pays for arithmetic (fine buckets, blocks that stay in the
#: cache), a GPU for kernel launches (coarse buckets, a bucket at once).
MMD_TILING: dict[str, MMDTiling] = {"cpu": MMDTiling(1 << 16, 4), "cuda": MMDTiling(1 << 24, 1)}

#: Gradient-penalty weight of WGAN-GP (config key ``lambda_D_gp``).
GRADIENT_PENALTY_WEIGHT = 10.0

#: The adversarial losses this module knows, and the discriminator output each one expects.
GAN_KINDS: dict[str, str] = {
    "lsgan": "sigmoid score in [0, 1] (L1 distance to the 0/1 target, as in the original)",
    "ls": "sigmoid score in [0, 1] (squared distance to the 0/1 target)",
    "gan": "sigmoid score in [0, 1], or the raw logit with logits=True (binary cross-entropy)",
    "wgan-gp": "raw, unbounded critic output (no sigmoid)",
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _no_autocast(device: torch.device):
    """Context that switches autocast off on ``device`` (a no-op where autocast is unsupported)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        return contextlib.nullcontext()


def _full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 unless it already has at least float32 precision."""
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor
    return tensor.float()


def _zero_with_grad(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero (float32 or wider) depending on ``tensors``: has a grad_fn if one requires grad."""
    total = sum(_full_precision(t).sum() for t in tensors)
    return total * 0.0


def _check_mask(mask: torch.Tensor, values: torch.Tensor, name: str) -> None:
    expected = (values.shape[0], *values.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"{name}: mask shape {tuple(mask.shape)} does not match "
                         f"[N, H, W] = {list(expected)} of values {tuple(values.shape)}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` [N, C, H, W] over the pixels where ``mask`` [N, H, W] is True and all C.

    An empty mask gives a zero with a grad_fn instead of NaN.
    """
    if mask is None:
        return values.mean()
    _check_mask(mask, values, "masked mean")
    weight = mask.to(values.dtype).unsqueeze(1)
    count = weight.sum() * values.shape[1]
    # clamp: an empty mask gives 0 / 1 = 0 (not 0 / 0), without a host-device sync
    return (values * weight).sum() / count.clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# classification and KL
# --------------------------------------------------------------------------------------------
def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over labelled pixels.

    Args:
        logits: [N, K, H, W] raw classifier outputs.
        labels: [N, H, W] integer targets in 0..K-1, or ``ignore_index``.

    Returns:
        Scalar. Zero (with a grad_fn) when no pixel is labelled, where
        ``F.cross_entropy(reduction="mean")`` would return NaN.
    """
    if logits.dim() != labels.dim() + 1 or logits.shape[0] != labels.shape[0] \
            or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f"classification_loss: logits {tuple(logits.shape)} and labels "
                         f"{tuple(labels.shape)} are not [N, K, H, W] and [N, H, W]")
    with _no_autocast(logits.device):
        summed = F.cross_entropy(_full_precision(logits), labels.long(),
                                 ignore_index=ignore_index, reduction="sum")
    count = (labels != ignore_index).sum()
    return summed / count.clamp_min(1).to(summed.dtype)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor,
                  labelled_mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL divergence of N(mu, exp(logvar)) from N(0, I), averaged over labelled pixels x channels.

    ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar)) / (labelled pixels * C)``; 0 when no pixel
    is labelled.

    Args:
        mu, logvar: [N, C, H, W] contextual latent mean and log-variance.
        labelled_mask: [N, H, W] bool on the same grid, True where the pixel is labelled;
            None = every pixel.

    Returns a float32 scalar (computed in full precision also under autocast).
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"kl_divergence: mu {tuple(mu.shape)} and logvar "
                         f"{tuple(logvar.shape)} differ in shape")
    with _no_autocast(mu.device):
        mu, logvar = _full_precision(mu), _full_precision(logvar)
        if labelled_mask is None:
            return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).mean()
        _check_mask(labelled_mask, mu, "kl_divergence")
        selected = labelled_mask.bool()[:, None].expand_as(mu)
        # select the inputs, not the terms: an overflow of exp() at an unlabelled pixel then
        # gives neither a NaN value nor a NaN gradient; unselected entries add 1 + 0 - 0 - 1 = 0
        zero = torch.zeros_like(mu)
        mu = torch.where(selected, mu, zero)
        logvar = torch.where(selected, logvar, zero)
        total = (1.0 + logvar - mu.pow(2) - logvar.exp()).sum()
        count = selected.sum().to(total.dtype)
        # clamp instead of an if on count: no host-device sync, same graph either way
        return -0.5 * total / count.clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# adversarial losses
# --------------------------------------------------------------------------------------------
def gan_loss(prediction: torch.Tensor, target_is_real: bool, kind: str = "lsgan",
             mask: torch.Tensor | None = None, logits: bool = False) -> torch.Tensor:
    """Adversarial loss of discriminator outputs against an all-real or all-fake target.

    Args:
        prediction: [N, 1, H, W] discriminator output per pixel; what it must be depends on
            ``kind`` (see ``GAN_KINDS``).
        target_is_real: True for target 1 ("real"), False for target 0 ("fake").
        kind:
            - ``"lsgan"``: ``|score - target|`` (an L1 loss). This is what the original's config
              value ``lsgan`` computes, despite its name; kept under that name for fidelity.
            - ``"ls"``: ``(score - target)^2``, the least-squares GAN loss the name suggests.
            - ``"gan"``: binary cross-entropy. Pass the raw logit with ``logits=True`` (stable);
              a sigmoid score is accepted too, its log is then bounded as in
              ``F.binary_cross_entropy``.
            - ``"wgan-gp"``: Wasserstein critic loss, ``-critic`` for real and ``+critic`` for
              fake; add ``gradient_penalty`` to the critic's loss.
        mask: [N, H, W] bool, True where a pixel counts (labelled); None = every pixel.
        logits: only for ``"gan"``: ``prediction`` holds logits instead of sigmoid scores.

    Returns:
        Scalar averaged over the masked pixels (zero with a grad_fn when the mask is empty).
    """
    if kind not in GAN_KINDS:
        raise ValueError(f"gan_loss: unknown kind {kind!r} (expected one of {sorted(GAN_KINDS)})")
    if logits and kind != "gan":
        raise ValueError(f"gan_loss: logits=True only applies to kind 'gan', not {kind!r}")
    with _no_autocast(prediction.device):
        prediction = _full_precision(prediction)
        target_value = 1.0 if target_is_real else 0.0
        if kind == "wgan-gp":
            per_pixel = -prediction if target_is_real else prediction
        elif kind == "lsgan":
            per_pixel = (prediction - target_value).abs()
        elif kind == "ls":
            per_pixel = (prediction - target_value).pow(2)
        else:
            target = torch.full_like(prediction, target_value)
            if logits:
                per_pixel = F.binary_cross_entropy_with_logits(prediction, target,
                                                               reduction="none")
            else:
                per_pixel = F.binary_cross_entropy(prediction, target, reduction="none")
        return _masked_mean(per_pixel, mask)


def discriminator_gan_loss(real_prediction: torch.Tensor, fake_prediction: torch.Tensor,
                           kind: str = "lsgan", mask: torch.Tensor | None = None,
                           logits: bool = False) -> torch.Tensor:
    """Discriminator's adversarial loss: real features -> "real", generated ones -> "fake".

    ``real_prediction`` and ``fake_prediction`` are [N, 1, H, W] outputs on real and generated
    features. For ``"wgan-gp"`` add ``gradient_penalty(critic, real, fake, mask)``.
    """
    return (gan_loss(real_prediction, True, kind, mask, logits)
            + gan_loss(fake_prediction, False, kind, mask, logits))


def generator_gan_loss(fake_prediction: torch.Tensor, kind: str = "lsgan",
                       mask: torch.Tensor | None = None, logits: bool = False) -> torch.Tensor:
    """Generator's adversarial loss: its features should be judged "real"."""
    return gan_loss(fake_prediction, True, kind, mask, logits)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor,
                     mask: torch.Tensor | None = None,
                     weight: float = GRADIENT_PENALTY_WEIGHT,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP gradient penalty ``weight * mean((||grad critic(x_hat)||_2 - 1)^2)``.

    The critic acts on each pixel's feature vector (1x1 convolutions), so each pixel is one
    sample: ``x_hat = a * real + (1 - a) * fake`` with one uniform ``a`` per pixel, the gradient
    norm is taken over the C channels of each pixel, and the penalty is averaged over the masked
    pixels. (The original took one norm over a whole image's gradient, which for a per-pixel
    critic grows with the image size; the per-pixel norm is the Lipschitz constraint intended.)

    Args:
        critic: callable mapping [N, C, H, W] features to [N, 1, H, W] raw critic values.
        real, fake: [N, C, H, W] features; ``fake`` is normally detached by the caller.
        mask: [N, H, W] bool, pixels that count; None = all.
        weight: the penalty coefficient lambda (10 in the original configs).
        generator: optional random generator for the interpolation weights (on real's device).
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake "
                         f"{tuple(fake.shape)} differ in shape")
    alpha_shape = (real.shape[0], 1, *real.shape[2:])
    alpha = torch.rand(alpha_shape, device=real.device, dtype=real.dtype, generator=generator)
    interpolated = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        scores = critic(interpolated)
        (gradients,) = torch.autograd.grad(scores.sum(), interpolated, create_graph=True)
    with _no_autocast(real.device):
        gradients = _full_precision(gradients)
        # epsilon inside the sqrt keeps the penalty's own gradient finite at a zero gradient
        norms = (gradients.pow(2).sum(dim=1, keepdim=True) + 1e-12).sqrt()
        return weight * _masked_mean((norms - 1.0).pow(2), mask)


# --------------------------------------------------------------------------------------------
# MMD content loss
# --------------------------------------------------------------------------------------------
def _run_layout(run_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs of consecutive equal values in a 1-D tensor.

    Returns ``run_id`` [P] (which run each element is in), ``run_start`` [R] (index of each
    run's first element) and ``lengths`` [R].
    """
    starts_run = torch.ones_like(run_labels, dtype=torch.bool)
    starts_run[1:] = run_labels[1:] != run_labels[:-1]
    run_id = torch.cumsum(starts_run.long(), dim=0) - 1
    lengths = torch.bincount(run_id)
    run_start = torch.cumsum(lengths, dim=0) - lengths
    return run_id, run_start, lengths


def _integer_multipliers(bandwidths: Sequence[float]) -> tuple[float, dict[int, int]] | None:
    """``c_s = -1 / (2 sigma_s)`` as integer multiples ``n_s * c0`` of one coefficient ``c0``.

    Returns ``(c0, {n: how many bandwidths have multiplier n})`` when every sigma is a
    rational number with a small denominator and the largest multiplier is at most 128,
    else None. The original's bandwidths (2, 5, 10, 20, 40, 60) give ``c0 = -1/240`` and
    multipliers 60, 24, 12, 6, 3, 2: one ``expm1`` then serves all six kernels.
    """
    fractions = []
    for sigma in bandwidths:
        fraction = Fraction(float(sigma)).limit_denominator(1000)
        if float(fraction) != float(sigma) or fraction <= 0:
            return None
        fractions.append(fraction)
    common = 1
    for fraction in fractions:   # lcm of the numerators of sigma = p / q
        common = common * fraction.numerator // math.gcd(common, fraction.numerator)
    multipliers = [fraction.denominator * (common // fraction.numerator) for fraction in fractions]
    if max(multipliers) > 128:
        return None
    counts: dict[int, int] = {}
    for n in multipliers:
        counts[n] = counts.get(n, 0) + 1
    return -0.5 / common, counts


def _power_chain(targets: Sequence[int]) -> list[tuple[int, int, int]]:
    """Steps ``(n, a, b)`` with ``a + b = n`` that reach every target from 1, each step using
    results already reached (``a == b``: a squaring)."""
    known, steps = {1}, []

    def reach(n: int) -> None:
        if n in known:
            return
        for a in sorted(known, reverse=True):
            if n - a in known:
                steps.append((n, a, n - a))
                known.add(n)
                return
        half = n // 2
        reach(half)
        reach(n - half)
        steps.append((n, half, n - half))
        known.add(n)

    for target in sorted(targets):
        reach(target)
    return steps


class _KernelSum:
    """The summed Gaussian kernels of the MMD loss and their derivative, on matrices of
    ``arg = scale * d^2`` (``d`` = distance between two features).

    ``values(arg) = sum_s expm1(c_s d^2)`` (kernel minus one: see :class:`_BucketedMMD`)
    and ``derivative(arg) = sum_s c_s exp(c_s d^2)`` (with respect to d^2), for
    ``c_s = -1 / (2 sigma_s)``.

    When every ``c_s`` is an integer multiple ``n_s c0`` (:func:`_integer_multipliers`), one
    ``expm1`` gives ``m_1 = exp(c0 d^2) - 1`` and the others follow by multiplication,
    still as "minus one" values so that kernels near 1 keep their relative precision:
    ``m_{a+b} = m_a + m_b + m_a m_b`` (:func:`_power_chain`). Otherwise each bandwidth
    takes its own ``expm1``. Both functions overwrite ``arg``.
    """

    def __init__(self, bandwidths: Sequence[float]) -> None:
        self.coefficients = tuple(-0.5 / float(sigma) for sigma in bandwidths)
        plan = _integer_multipliers(bandwidths)
        if plan is None:
            self.scale, self.counts, self.steps = 1.0, None, []
        else:
            self.scale, self.counts = plan
            self.steps = _power_chain(list(self.counts))

    def _powers(self, arg: torch.Tensor, weight_of):
        """``sum_n weight_of(n) * m_n`` over the multipliers, computing ``arg`` -> m_1 in place."""
        minus_one = {1: arg.expm1_()}
        last_use = {}
        for index, (_, a, b) in enumerate(self.steps):
            last_use[a] = last_use[b] = index
        total = None

        def add(n: int) -> None:
            nonlocal total
            weight = weight_of(n)
            if total is None:
                total = minus_one[n] * weight
            else:
                total.add_(minus_one[n], alpha=weight)

        if 1 in self.counts:
            add(1)
        for index, (n, a, b) in enumerate(self.steps):
            first, second = minus_one[a], minus_one[b]
            if a == b:
                value = first + 2.0
                value.mul_(first)
            else:
                value = first + second
                value.addcmul_(first, second)
            minus_one[n] = value
            if n in self.counts:
                add(n)
            for used in {a, b}:   # free the intermediate results no later step needs
                if last_use.get(used, -1) == index and used not in self.counts and used != 1:
                    del minus_one[used]
        return total

    def values(self, arg: torch.Tensor) -> torch.Tensor:
        if self.counts is None:
            total = torch.expm1(arg * self.coefficients[0])
            for coefficient in self.coefficients[1:]:
                total += torch.expm1(arg * coefficient)
            return total
        return self._powers(arg, lambda n: float(self.counts[n]))

    def derivative(self, arg: torch.Tensor) -> torch.Tensor:
        if self.counts is None:
            total = torch.exp(arg * self.coefficients[0]).mul_(self.coefficients[0])
            for coefficient in self.coefficients[1:]:
                total.add_(torch.exp(arg * coefficient), alpha=coefficient)
            return total
        # sum_s c_s (1 + m_s) = sum_s c_s + c0 * sum_s n_s m_s
        total = self._powers(arg, lambda n: self.scale * n * self.counts[n])
        return total.add_(sum(self.coefficients))


@dataclass
class _RunBuckets:
    """Where the labelled pixels of each label run go in the padded batches of :class:`_BucketedMMD`.

    Runs are grouped in buckets of similar length; a bucket of ``B`` runs padded to length
    ``L`` occupies ``B * L`` consecutive slots (run after run). ``gather`` [slots]: the flat
    (N, H, W) pixel of each slot (a padding slot repeats its run's last pixel); ``scatter``:
    the same with padding slots sent to the extra row N*H*W; ``weight`` [slots]: 1 / run
    length, 0 on padding. ``shapes``: (B, L) per bucket.
    """

    gather: torch.Tensor
    scatter: torch.Tensor
    weight: torch.Tensor
    shapes: list[tuple[int, int]]
    num_runs: int


#: Runs up to this length share one bucket.
_SHORT_RUN = 8


def _bucket_of(lengths: torch.Tensor, per_octave: int) -> torch.Tensor:
    """Bucket id of each run length (int64): 0 up to ``_SHORT_RUN``, then ``per_octave``
    (a power of two <= 8) equal steps per octave; with 4: (8, 10], (10, 12], (12, 14],
    (14, 16], (16, 20], ..."""
    octave = torch.log2((lengths - 1).clamp_min(1).double()).floor().long()      # L - 1 in [2^o, 2^(o+1))
    step = (2 ** octave.clamp_min(3)) // per_octave
    part = (lengths - 2 ** octave + step - 1) // step
    return torch.where(lengths <= _SHORT_RUN, torch.zeros_like(lengths), per_octave * octave + part)


def _run_buckets(labels: torch.Tensor, ignore_index: int, dtype: torch.dtype,
                 per_octave: int = 4) -> _RunBuckets | None:
    """The bucketed run layout of a label map [N, H, W] (None when no pixel is labelled),
    computed on the labels' device: CPU labels (with features on a GPU) need no
    host-device synchronisation."""
    flat = labels.reshape(-1)
    labelled = (flat != ignore_index).nonzero().squeeze(1)            # [P] flat (N, H, W) index
    if labelled.numel() == 0:
        return None
    _, run_start, lengths = _run_layout(flat[labelled])
    bucket = _bucket_of(lengths, per_octave)
    order = torch.argsort(bucket, stable=True)
    _, counts = torch.unique_consecutive(bucket[order], return_counts=True)
    gathers, scatters, weights, shapes = [], [], [], []
    for runs in order.split(counts.tolist()):
        run_length = lengths[runs].unsqueeze(1)                           # [B, 1]
        padded = int(run_length.max())
        offset = torch.arange(padded, device=labels.device).unsqueeze(0)
        real = offset < run_length
        pixel = labelled[run_start[runs].unsqueeze(1) + torch.minimum(offset, run_length - 1)]
        gathers.append(pixel.reshape(-1))
        scatters.append(torch.where(real, pixel, flat.numel()).reshape(-1))
        weights.append((real.to(dtype) / run_length.to(dtype)).reshape(-1))
        shapes.append((runs.numel(), padded))
    return _RunBuckets(torch.cat(gathers), torch.cat(scatters), torch.cat(weights), shapes, lengths.numel())


class _PixelGather:
    """Rows [k, C] of chosen pixels (flat N*H*W indices) of a feature map [N, C, H, W].

    Channels-last features are a [N*H*W, C] matrix already (a row gather); others are read
    in place through their [N, C, H*W] view, which avoids transposing the whole map (a
    large copy, slow on a CPU).
    """

    def __init__(self, features: torch.Tensor) -> None:
        n, channels, height, width = features.shape
        self.grid = height * width
        rows = features.permute(0, 2, 3, 1)
        self.rows = rows.reshape(-1, channels) if rows.is_contiguous() else None
        self.planes = features.reshape(n, channels, self.grid) if self.rows is None else None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            return self.rows.index_select(0, pixels)
        return self.planes[pixels // self.grid, :, pixels % self.grid]


class _BucketedMMD(torch.autograd.Function):
    """Per-run MMD statistics of all label runs, bucket by bucket, with an analytic gradient.

    For a run with generated features ``p_1..p_L`` and real ones ``t_1..t_L``, stack
    ``z = [p ; t]`` (2L rows) with weights ``v = [1/L, ..., 1/L, -1/L, ..., -1/L]``; then

        S = 0.5 * sum_ij v_i v_j K(|z_i - z_j|^2),   K(d^2) = sum_s exp(c_s d^2)

    is half the biased squared MMD summed over the bandwidths (the pp and tt blocks of the
    kernel matrix enter with +, the two pt blocks with -). A bucket's runs are padded to one
    length (zero weights) and stacked into a [B, 2L, C] batch, and the kernel matrix is built
    block by block (``chunk_elements`` entries at a time: several runs x some rows) in the
    forward pass and again in the backward pass, so memory stays at one block whatever the
    run lengths, and autograd stores nothing per kernel entry.

    Numerics: each block sums ``K`` minus one per bandwidth (``expm1``, :class:`_KernelSum`):
    since ``sum v = 0`` the constant cancels exactly, and kernel values near 1 keep their small
    differences. Each run is centred on the mean of its 2L rows (distances are translation
    invariant), which keeps the ``|a|^2 + |b|^2 - 2ab`` expansion from cancelling badly. The
    kernel matrix is symmetric: a row block only visits the columns from its own first row
    on and counts those after its last row twice.

    Gradient of one block ``B = sum_ij a_i b_j K(d_ij^2)`` (``d_ij = |l_i - r_j|``): with
    ``G_ij = a_i b_j K'(d_ij^2)``, ``dB/dl_i = 2 (sum_j G_ij) l_i - 2 (G r)_i`` and
    ``dB/dr_j = 2 (sum_i G_ij) r_j - 2 (G^T l)_j``.
    """

    @staticmethod
    def _blocks(num_runs: int, width: int, tiling: MMDTiling):
        """(run slice, first row, end row) blocks covering a [num_runs, width, width] matrix."""
        rows = min(width, max(1, tiling.chunk_elements // width))
        runs = max(1, tiling.chunk_elements // (rows * width))
        for first in range(0, num_runs, runs):
            for start in range(0, width, rows):
                yield slice(first, first + runs), start, min(start + rows, width)

    @staticmethod
    def _block_arg(z, squared, start, stop, scale):
        """``scale * d^2`` [b, rows, columns] of rows start:stop against columns start: ."""
        arg = torch.baddbmm(squared[:, start:stop, None] + squared[:, None, start:], z[:, start:stop],
                            z[:, start:].transpose(1, 2), beta=scale, alpha=-2.0 * scale)
        # d^2 >= 0 (rounding can make it slightly negative); scale < 0 in the integer plan
        return arg.clamp_max_(0.0) if scale < 0 else arg.clamp_min_(0.0)

    @staticmethod
    def _column_weight(v, start, stop):
        return torch.cat([v[:, start:stop], 2.0 * v[:, stop:]], dim=1)

    @staticmethod
    def forward(ctx, predict, target, buckets, kernel, tiling):
        compute_dtype = torch.promote_types(predict.dtype, torch.float32)
        channels = predict.shape[1]
        gather_p, gather_t = _PixelGather(predict), _PixelGather(target)
        statistics, saved = [], []
        for (num_runs, length), gather, weight in zip(
                buckets.shapes, buckets.gather.split([b * l for b, l in buckets.shapes]),
                buckets.weight.split([b * l for b, l in buckets.shapes])):
            w = weight.view(num_runs, 1, length)
            p = gather_p(gather).view(num_runs, length, channels).to(compute_dtype)
            t = gather_t(gather).view(num_runs, length, channels).to(compute_dtype)
            centre = 0.5 * (torch.bmm(w, p) + torch.bmm(w, t))                    # [B, 1, C]
            z = torch.empty(num_runs, 2 * length, channels, dtype=compute_dtype, device=p.device)
            torch.sub(p, centre, out=z[:, :length])
            torch.sub(t, centre, out=z[:, length:])
            del p, t
            squared = torch.linalg.vector_norm(z, dim=-1).square_()                 # [B, 2L]
            v = torch.cat([weight, -weight]).view(2, num_runs, length).permute(1, 0, 2).reshape(num_runs, -1)
            statistic = z.new_zeros(num_runs)
            for runs, start, stop in _BucketedMMD._blocks(num_runs, 2 * length, tiling):
                kernel_values = kernel.values(_BucketedMMD._block_arg(z[runs], squared[runs], start, stop,
                                                                      kernel.scale))
                row_sums = torch.bmm(v[runs, None, start:stop], kernel_values).squeeze(1)   # [b, columns]
                statistic[runs] += (row_sums * _BucketedMMD._column_weight(v[runs], start, stop)).sum(-1)
            statistics.append(0.5 * statistic)
            saved.append((z, squared, v))
        ctx.saved = saved
        ctx.buckets, ctx.kernel, ctx.tiling = buckets, kernel, tiling
        ctx.feature_shape, ctx.dtypes = predict.shape, (predict.dtype, target.dtype)
        return torch.cat(statistics)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_statistic):
        # a backward() called inside an autocast region must not downcast these products
        with _no_autocast(grad_statistic.device):
            return _BucketedMMD._backward(ctx, grad_statistic)

    @staticmethod
    def _backward(ctx, grad_statistic):
        buckets, kernel = ctx.buckets, ctx.kernel
        n, channels, h, w_ = ctx.feature_shape
        pixels = n * h * w_
        # pixel-major gradients with one extra row that absorbs the padding slots (only for the
        # inputs that need one: the real features usually come detached)
        grads = [grad_statistic.new_zeros(pixels + 1, channels) if needed else None
                 for needed in ctx.needs_input_grad[:2]]
        sizes = [b * l for b, l in buckets.shapes]
        first_run = 0
        for (num_runs, length), scatter, (z, squared, v) in zip(buckets.shapes, buckets.scatter.split(sizes),
                                                                 ctx.saved):
            # the 0.5 of S and the 2 of d(d^2)/dz cancel: G = grad * a_i b_j K'
            scale = grad_statistic[first_run:first_run + num_runs].to(z.dtype)
            first_run += num_runs
            grad_z = torch.zeros_like(z)
            for runs, start, stop in _BucketedMMD._blocks(num_runs, 2 * length, ctx.tiling):
                zr = z[runs]
                left, right = zr[:, start:stop], zr[:, start:]
                g = kernel.derivative(_BucketedMMD._block_arg(zr, squared[runs], start, stop, kernel.scale))
                g *= (scale[runs, None] * v[runs, start:stop]).unsqueeze(2)
                g *= _BucketedMMD._column_weight(v[runs], start, stop).unsqueeze(1)
                left_grad, right_grad = grad_z[runs, start:stop], grad_z[runs, start:]
                left_grad.baddbmm_(g, right, alpha=-1.0)
                left_grad.addcmul_(g.sum(2, keepdim=True), left)
                right_grad.baddbmm_(g.transpose(1, 2), left, alpha=-1.0)
                right_grad.addcmul_(g.sum(1).unsqueeze(2), right)
            index = scatter.view(num_runs, length)
            for grad, part in zip(grads, (grad_z[:, :length], grad_z[:, length:])):
                if grad is not None:
                    grad.index_copy_(0, index.reshape(-1), part.reshape(-1, channels).to(grad.dtype))
        outputs = [None if grad is None else grad[:pixels].view(n, h, w_, channels).permute(0, 3, 1, 2).to(dtype)
                   for grad, dtype in zip(grads, ctx.dtypes)]
        return outputs[0], outputs[1], None, None, None


def mmd_loss_loop(predict: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
                  ignore_index: int = IGNORE_INDEX, bandwidths=MMD_BANDWIDTHS) -> torch.Tensor:
    """The MMD content loss of :func:`mmd_loss` written plainly, with Python loops over pixels and runs.

    Slow; it is the readable statement of the definition that tests and
    ``benchmarks/bench_mmd.py`` compare the vectorised :func:`mmd_loss` against.
    """
    channels = predict.shape[1]
    predict_px = predict.permute(0, 2, 3, 1).reshape(-1, channels)
    target_px = target.permute(0, 2, 3, 1).reshape(-1, channels)
    flat_labels = labels.reshape(-1).tolist()
    labelled = [i for i, label in enumerate(flat_labels) if label != ignore_index]
    if not labelled:
        return (predict.sum() + target.sum()) * 0.0
    runs, start = [], 0
    for k in range(1, len(labelled) + 1):
        if k == len(labelled) or flat_labels[labelled[k]] != flat_labels[labelled[start]]:
            runs.append(labelled[start:k])
            start = k
    total = 0.0
    for run in runs:
        p, t = predict_px[run], target_px[run]
        squared_distances = [torch.cdist(a, b).pow(2) for a, b in ((p, p), (t, t), (p, t))]
        statistic = 0.0
        for sigma in bandwidths:
            pp, tt, pt = (torch.exp(-d2 / (2.0 * sigma)).mean() for d2 in squared_distances)
            statistic = statistic + 0.5 * (pp + tt - 2.0 * pt)
        total = total + (statistic.sqrt() if statistic > 0 else statistic * 0.0)
    return total / len(runs)


def mmd_loss(predict: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
             ignore_index: int = IGNORE_INDEX,
             bandwidths: Sequence[float] = MMD_BANDWIDTHS,
             chunk_elements: int | None = None) -> torch.Tensor:
    """The original's MMD content loss between generated and real features, per label run.

    The labelled pixels (label != ``ignore_index``) are taken in flattened (N, H, W) order and
    split into *runs* of consecutive equal labels (a class region crossing a row end, an ignored
    gap or an image boundary stays one run when the label does not change). For a run with
    generated features ``p_1..p_L`` and real features ``t_1..t_L`` (channel vectors):

        S = sum over sigma in (2, 5, 10, 20, 40, 60) of
            0.5 * [ mean_ij k(p_i, p_j) + mean_ij k(t_i, t_j) - 2 mean_ij k(p_i, t_j) ]
        with k(a, b) = exp(-|a - b|^2 / (2 * sigma))   (sigma acts as a variance, not a std)

    i.e. half the biased (self-pairs included) squared MMD summed over the bandwidths. The
    run's loss is ``sqrt(S)`` when ``S > 0`` and 0 (with zero gradient) otherwise; the result is
    the mean over runs. No pixel labelled -> zero with a grad_fn (the original asserts instead).

    Computed without a Python loop over pixels or runs (:class:`_BucketedMMD`): runs are
    grouped in buckets of similar length (four per octave), each bucket is gathered into one
    padded batch, and the kernel matrices are evaluated block by block, at most about
    ``chunk_elements`` entries at a time, in the forward and (analytically) in the backward
    pass; memory stays bounded by one block even for a run that covers the whole batch.

    The run layout is computed where ``labels`` live: pass labels on the CPU with features on
    a GPU and the loss queues its work without waiting for the GPU (no host-device
    synchronisation); labels on the GPU make it wait once.

    Precision: in float32 the result is accurate to about 1e-5 relative for generic features.
    When generated and real features nearly coincide, the statistic is a tiny difference and
    float32 loses relative accuracy (as any implementation expanding |a - b|^2 does, the
    original's included); pass float64 tensors for an exact value.

    Args:
        predict: [N, C, H, W] generated features.
        target: [N, C, H, W] real features.
        labels: [N, H, W] integer label map (``ignore_index`` = not labelled), on any device.
        bandwidths: kernel bandwidths sigma.
        chunk_elements: kernel entries per block (memory/speed trade-off; default by device
            type, :data:`MMD_TILING`).

    Returns:
        Scalar float32 (float64 for float64 inputs) loss, differentiable w.r.t. both features
        (first derivatives only).
    """
    if predict.shape != target.shape or predict.dim() != 4:
        raise ValueError(f"mmd_loss: predict {tuple(predict.shape)} and target "
                         f"{tuple(target.shape)} must both be [N, C, H, W]")
    if tuple(labels.shape) != (predict.shape[0], *predict.shape[2:]):
        raise ValueError(f"mmd_loss: labels {tuple(labels.shape)} do not match [N, H, W] of "
                         f"features {tuple(predict.shape)}")
    tiling = MMD_TILING.get(predict.device.type, MMD_TILING["cuda"])
    if chunk_elements is not None:
        if chunk_elements < 1:
            raise ValueError(f"mmd_loss: chunk_elements must be positive, got {chunk_elements}")
        tiling = dataclasses.replace(tiling, chunk_elements=chunk_elements)
    compute_dtype = torch.promote_types(predict.dtype, torch.float32)
    layout = _run_buckets(labels, ignore_index, compute_dtype, tiling.buckets_per_octave)
    if layout is None:
        return _zero_with_grad(predict, target)
    device = predict.device
    layout = _RunBuckets(copy_to_device(layout.gather, device), copy_to_device(layout.scatter, device),
                         copy_to_device(layout.weight, device), layout.shapes, layout.num_runs)
    with _no_autocast(device):
        statistic = _BucketedMMD.apply(predict, target, layout, _KernelSum(bandwidths), tiling)
        positive = statistic > 0
        # sqrt only where positive: a where() over sqrt(0) would back-propagate 0 * inf = NaN
        safe = torch.where(positive, statistic, torch.ones_like(statistic))
        per_run = torch.where(positive, safe.sqrt(), statistic * 0.0)
        return per_run.mean()
