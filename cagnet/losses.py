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
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255

#: Kernel bandwidths of the original MMD content loss.
MMD_BANDWIDTHS: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0, 60.0)

#: Rows per block when a long run's kernel matrices are evaluated block by block.
_ROW_BLOCK = 128

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


def _squared_distances(left: torch.Tensor, left_sq: torch.Tensor,
                       right: torch.Tensor, right_sq: torch.Tensor) -> torch.Tensor:
    """|l_i - r_j|^2 [B, I, J] from rows [B, I, C], [B, J, C] and their squared norms."""
    return torch.baddbmm(left_sq.unsqueeze(2) + right_sq.unsqueeze(1),
                         left, right.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)


class _PaddedRunsMMD(torch.autograd.Function):
    """Per-run MMD statistic of a padded batch of runs, with a chunked analytic gradient.

    Input: ``predict``, ``target`` [B, L, C] runs padded to length L (padding rows hold any
    finite feature), ``weight`` [B, L] = 1/length on a run's rows and 0 on padding. Output [B]:

        S_b = 0.5 * sum_ij w_i w_j sum_s (k_s(p_i, p_j) + k_s(t_i, t_j) - 2 k_s(p_i, t_j)),
        k_s(a, b) = exp(c_s |a - b|^2),   c_s = -1 / (2 sigma_s)

    The kernel matrices are built block by block (``runs_per_chunk`` runs x ``rows_per_chunk``
    rows at a time) in the forward pass and again in the backward pass, so memory stays at one
    block whatever the run lengths, and autograd stores nothing per kernel entry.

    Numerics: each block sums ``k - 1`` (``expm1``) instead of ``k``: the weighted sum of ones
    is 1 in each of the three terms, so they cancel exactly (``0.5 * (1 + 1) - 1``), and kernel
    values near 1 keep their small differences. Runs are centred on their mean first
    (distances are translation invariant), which keeps the ``|a|^2 + |b|^2 - 2ab`` expansion
    from cancelling badly. The predict-predict and target-target matrices are symmetric: a row
    block only visits the columns from its own first row on and counts those after its last
    row twice.

    Gradient of one block ``B = sum_ij a_i b_j sum_s expm1(c_s d_ij^2)`` (``d_ij = |l_i - r_j|``):
    with ``G_ij = a_i b_j sum_s c_s exp(c_s d_ij^2)``,
    ``dB/dl_i = 2 (sum_j G_ij) l_i - 2 (G r)_i`` and
    ``dB/dr_j = 2 (sum_i G_ij) r_j - 2 (G^T l)_j``.
    """

    @staticmethod
    def _blocks(weight, runs_per_chunk, rows_per_chunk):
        """Yield (batch slice, row start, row stop) covering every run and row once."""
        num_runs, length = weight.shape
        for first in range(0, num_runs, runs_per_chunk):
            for start in range(0, length, rows_per_chunk):
                stop = min(start + rows_per_chunk, length)
                yield slice(first, first + runs_per_chunk), start, stop

    @staticmethod
    def _block_terms(predict, target, predict_sq, target_sq, weight, start, stop):
        """The predict-predict, target-target and predict-target terms of one row block, each as
        (left, left_sq, right, right_sq, column weight, sign, first column)."""
        symmetric_weight = torch.cat([weight[:, start:stop], 2.0 * weight[:, stop:]], dim=1)
        return (
            (predict, predict_sq, predict, predict_sq, symmetric_weight, 0.5, start),
            (target, target_sq, target, target_sq, symmetric_weight, 0.5, start),
            (predict, predict_sq, target, target_sq, weight, -1.0, 0),
        )

    @staticmethod
    def forward(ctx, predict, target, weight, coefficients, runs_per_chunk, rows_per_chunk):
        centre = 0.5 * (torch.bmm(weight.unsqueeze(1), predict)
                        + torch.bmm(weight.unsqueeze(1), target))                # [B, 1, C]
        predict = predict - centre
        target = target - centre
        predict_sq = torch.linalg.vector_norm(predict, dim=-1).square()         # [B, L]
        target_sq = torch.linalg.vector_norm(target, dim=-1).square()
        statistic = predict.new_zeros(weight.shape[0])
        for batch, start, stop in _PaddedRunsMMD._blocks(weight, runs_per_chunk,
                                                         rows_per_chunk):
            row_weight = weight[batch, start:stop]
            terms = _PaddedRunsMMD._block_terms(predict[batch], target[batch], predict_sq[batch],
                                                target_sq[batch], weight[batch], start, stop)
            for left, left_sq, right, right_sq, column_weight, sign, column_start in terms:
                squared_distance = _squared_distances(
                    left[:, start:stop], left_sq[:, start:stop],
                    right[:, column_start:], right_sq[:, column_start:])
                kernel = torch.expm1(squared_distance * coefficients[0])
                for coefficient in coefficients[1:]:
                    kernel += torch.expm1(squared_distance * coefficient)
                # sum_ij a_i K_ij b_j as a batched vector-matrix-vector product
                total = torch.bmm(row_weight.unsqueeze(1), kernel).squeeze(1)
                statistic[batch] += sign * (total * column_weight).sum(-1)
        ctx.save_for_backward(predict, target, predict_sq, target_sq, weight)
        ctx.coefficients = coefficients
        ctx.chunking = (runs_per_chunk, rows_per_chunk)
        return statistic

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_statistic):
        # a backward() called inside an autocast region must not downcast these products
        with _no_autocast(grad_statistic.device):
            return _PaddedRunsMMD._backward(ctx, grad_statistic)

    @staticmethod
    def _backward(ctx, grad_statistic):
        predict, target, predict_sq, target_sq, weight = ctx.saved_tensors
        grad_predict = torch.zeros_like(predict)
        grad_target = torch.zeros_like(target)
        for batch, start, stop in _PaddedRunsMMD._blocks(weight, *ctx.chunking):
            row_weight = weight[batch, start:stop]
            terms = _PaddedRunsMMD._block_terms(predict[batch], target[batch], predict_sq[batch],
                                                target_sq[batch], weight[batch], start, stop)
            grads = (grad_predict[batch], grad_target[batch])
            for index, (left, left_sq, right, right_sq, column_weight, sign, column_start) \
                    in enumerate(terms):
                left_rows, right_cols = left[:, start:stop], right[:, column_start:]
                squared_distance = _squared_distances(left_rows, left_sq[:, start:stop],
                                                      right_cols, right_sq[:, column_start:])
                first_coefficient, *other_coefficients = ctx.coefficients
                derivative = first_coefficient * torch.exp(squared_distance * first_coefficient)
                for coefficient in other_coefficients:
                    derivative += coefficient * torch.exp(squared_distance * coefficient)
                # derivative = G scaled by 2 dS/dB (the 2 comes from d(d^2)/dl = 2 (l - r))
                scale = 2.0 * sign * grad_statistic[batch]
                derivative *= (scale.unsqueeze(1) * row_weight).unsqueeze(2)
                derivative *= column_weight.unsqueeze(1)
                # terms: 0 predict-predict, 1 target-target, 2 predict-target
                left_grad = grads[1] if index == 1 else grads[0]
                right_grad = grads[0] if index == 0 else grads[1]
                # accumulate in place: 2 (sum_j G_ij) l_i - 2 (G r)_i, and the same for r
                left_block = left_grad[:, start:stop]
                left_block.baddbmm_(derivative, right_cols, alpha=-1.0)
                left_block.addcmul_(derivative.sum(2).unsqueeze(2), left_rows)
                right_block = right_grad[:, column_start:]
                right_block.baddbmm_(derivative.transpose(1, 2), left_rows, alpha=-1.0)
                right_block.addcmul_(derivative.sum(1).unsqueeze(2), right_cols)
        return grad_predict, grad_target, None, None, None, None


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
             chunk_elements: int = 1 << 21) -> torch.Tensor:
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

    Computed without a Python loop over pixels or runs: runs are grouped by length (powers of
    two), each group is gathered into a padded [B, L, C] batch, and the pairwise kernels are
    evaluated block by block, at most about ``chunk_elements`` entries per kernel matrix, in the
    forward and (analytically) in the backward pass; memory stays bounded by one block even
    for a run that covers the whole batch.

    Precision: in float32 the result is accurate to about 1e-5 relative for generic features.
    When generated and real features nearly coincide, the statistic is a tiny difference and
    float32 loses relative accuracy (as any implementation expanding |a - b|^2 does, the
    original's included); pass float64 tensors for an exact value.

    Args:
        predict: [N, C, H, W] generated features.
        target: [N, C, H, W] real features.
        labels: [N, H, W] integer label map (``ignore_index`` = not labelled).
        bandwidths: kernel bandwidths sigma.
        chunk_elements: kernel entries per block (memory/speed trade-off).

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
    if chunk_elements < 1:
        raise ValueError(f"mmd_loss: chunk_elements must be positive, got {chunk_elements}")
    flat_labels = labels.reshape(-1)
    labelled = (flat_labels != ignore_index).nonzero().squeeze(1)  # [P] flat (N, H, W) index
    if labelled.numel() == 0:
        return _zero_with_grad(predict, target)

    channels, grid_size = predict.shape[1], predict.shape[2] * predict.shape[3]
    compute_dtype = torch.promote_types(predict.dtype, torch.float32)
    coefficients = tuple(-0.5 / float(sigma) for sigma in bandwidths)
    _, run_start, lengths = _run_layout(flat_labels[labelled])

    # Runs grouped by ceil(log2(length)); per group: padded length, and the block sizes
    # (runs x rows) that keep one kernel matrix near chunk_elements entries.
    length_group = torch.ceil(torch.log2(lengths.to(torch.float64))).long()
    groups, slot_pixels = [], []
    for group in torch.unique(length_group).tolist():
        runs_in_group = (length_group == group).nonzero().squeeze(1)
        run_length = lengths[runs_in_group].unsqueeze(1)                           # [B, 1]
        padded_length = int(run_length.max())
        offset = torch.arange(padded_length, device=labelled.device).unsqueeze(0)
        # padding slots repeat the run's last pixel; their zero weight removes them
        slot_pixels.append(labelled[run_start[runs_in_group].unsqueeze(1)
                                    + torch.minimum(offset, run_length - 1)].reshape(-1))
        weight = (offset < run_length).to(compute_dtype) / run_length.to(compute_dtype)
        rows_per_chunk = min(padded_length, _ROW_BLOCK, max(1, chunk_elements // padded_length))
        runs_per_chunk = max(1, chunk_elements // (rows_per_chunk * padded_length))
        groups.append((runs_in_group, padded_length, weight, runs_per_chunk, rows_per_chunk))

    with _no_autocast(predict.device):
        # one gather per input for all groups (a single scatter in the backward pass)
        pixel = torch.cat(slot_pixels)
        image, cell = pixel // grid_size, pixel % grid_size
        slot_counts = [runs.numel() * length for runs, length, *_ in groups]
        all_predict = predict.flatten(2)[image, :, cell].to(compute_dtype)        # [slots, C]
        all_target = target.flatten(2)[image, :, cell].to(compute_dtype)
        statistic = torch.zeros(lengths.numel(), dtype=compute_dtype, device=predict.device)
        for (runs_in_group, padded_length, weight, runs_per_chunk, rows_per_chunk), \
                group_predict, group_target in zip(groups, all_predict.split(slot_counts),
                                                   all_target.split(slot_counts)):
            shape = (runs_in_group.numel(), padded_length, channels)
            group_statistic = _PaddedRunsMMD.apply(group_predict.view(shape),
                                                   group_target.view(shape), weight,
                                                   coefficients, runs_per_chunk, rows_per_chunk)
            statistic = statistic.index_add(0, runs_in_group, group_statistic)

        positive = statistic > 0
        # sqrt only where positive: a where() over sqrt(0) would back-propagate 0 * inf = NaN
        safe = torch.where(positive, statistic, torch.ones_like(statistic))
        per_run = torch.where(positive, safe.sqrt(), statistic * 0.0)
        return per_run.mean()
