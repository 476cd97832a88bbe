"""The MMD content loss of the generator: generated vs real pixel features, per run of equal
labels, vectorised over runs bucketed by length, with an analytic backward pass
(see :func:`mmd_loss`, and :func:`mmd_loss_loop` for the plain definition)."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.losses.common import zero_with_grad
from cagnet.runtime import autocast_off, copy_to_device

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
        with autocast_off(grad_statistic.device):
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
        return zero_with_grad(predict, target)
    device = predict.device
    layout = _RunBuckets(copy_to_device(layout.gather, device), copy_to_device(layout.scatter, device),
                         copy_to_device(layout.weight, device), layout.shapes, layout.num_runs)
    with autocast_off(device):
        statistic = _BucketedMMD.apply(predict, target, layout, _KernelSum(bandwidths), tiling)
        positive = statistic > 0
        # sqrt only where positive: a where() over sqrt(0) would back-propagate 0 * inf = NaN
        safe = torch.where(positive, statistic, torch.ones_like(statistic))
        per_run = torch.where(positive, safe.sqrt(), statistic * 0.0)
        return per_run.mean()
