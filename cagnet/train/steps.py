"""One training iteration of CaGNet: the step-1 and step-2 losses, and self-training labels.

**Step 1** (a batch of real images with training labels; ``h x w`` = full-scale feature grid)::

    extract          real features at scales 1, 0.5, 0.75 + their max fusion, latent z, KL
    labels           the label map nearest-resized to each feature grid
    generator        fake = G([Em_vis(labels on h x w) ; z.detach()])       (detached: the
                     generator's losses never reach the backbone)
    discriminator    loss_D = GAN(D(real.detach()) -> 1, D(fake.detach()) -> 0)
                            + lambda_D_cls_real * mean over the 4 features of cls(D(real_k.detach()))
                            + lambda_D_cls_fake * cls(D(fake.detach()))
    backbone         loss_B = lambda_B_KLD * KL + lambda_B_cls * mean_k cls(D'(real_k))
    generator        loss_G = lambda_G_GAN * GAN(D'(fake) -> 1)
                            + lambda_G_Content * MMD(fake, real.detach()) + lambda_G_cls * cls(D'(fake))

The generator's latent input ``z`` is the contextual code itself in CaGNet
(``model.context_latent: contextual``); the ablations ``zeroed``, ``shuffled`` (permuted across
the labelled pixels of the batch) and ``none`` (N(0, I) noise; the model then has no
contextual code and no KL term) replace it here
(:func:`cagnet.models.contextual.generator_latent`).

GAN, MMD and the fake-feature terms use the full-scale (1.0) pass and average over its
labelled pixels. ``D'`` is the discriminator with detached weights
(``torch.func.functional_call``): the backbone's and generator's terms send gradients to
their own inputs only, so one backward of ``loss_D + loss_B + loss_G`` gives each part
exactly the gradient of its own loss, as the original's three separate backward passes
did (there, the discriminator had already been updated in place when the backbone's
gradient went through it; here all three gradients come from the same weights, a
simultaneous update). The discriminator's own terms see detached features. One dropout
mask per call: the original drew separate masks for its discriminator and backbone terms
too, but shared one between the terms of the same classifier pass.

**Step 2** (``mixed``/``st_mixed``): a label per feature-grid pixel from the prior
(:func:`unseen_prior`), latent ~ N(0, I), fake = G([Em_all(labels) ; latent]);
``loss_D = lambda_D_cls_fake_transfer * cls(D(fake.detach()))`` (the classifier learns the
unseen classes from generated features) and, when ``lambda_G_cls_transfer > 0``,
``loss_G = lambda_G_cls_transfer * cls(D'(fake))``; otherwise the generator does not train
(the original still called Adam with zero gradients, which moves weights by stale
momentum). The backbone does not run.

**Patch-wise step 2** (CaGNetv2, ``model.patch_size`` s > 1): the label map is a row-major
tiling of s x s label blocks from a :class:`~cagnet.data.blocks.BlockSource` (pure one-class
blocks of the prior, or a bank mixed with them), the latent noise one N(0, I) vector per block
repeated over its pixels, and ``cls`` is the cross-entropy at the block centres only
(:func:`~cagnet.losses.patch_centre_loss`): each centre's s x s receptive field of the patch
classifier then sees exactly its own generated block. The feature grid must be a multiple of s
(:func:`check_patch_grid`).

**The patch classifier elsewhere**: it classifies real features, step 1's fake features (they
follow the real label map, so, like the real ones, at every labelled position: the original
uses its patch classifier wherever the pixel-wise one was; ``lambda_D_cls_fake`` is 0 in its
patch step 1, so there only the 1x1 GAN head learns from fakes), self-training's and the test
predictions, each on whole feature maps. Its 3x3 conv mixes neighbours, so the several maps of
one step (three scales, fused, fake) are not packed pixel-wise into one map as for the
pixel-wise head: :func:`discriminate` passes them as a list of same-size batches, still ONE
call of the (possibly DDP-wrapped) discriminator.

**Self-training** (``st``): the current model (eval mode) scores the batch; ignored pixels
get the highest-ranked unseen class among the ``top_p`` predictions
(:func:`cagnet.train.self_training.self_training_labels`) on the feature grid; then step 1
on those labels.

Skipped terms: a loss term whose weight is zero is not computed (its gradient would be
zero), except that every discriminator output enters ``loss_D`` (times zero if unused) so
that all its parameters get a gradient, as DistributedDataParallel requires.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cagnet.config import LossWeights
from cagnet.data.blocks import BlockSource, block_noise, tile_blocks
from cagnet.data.transforms import IGNORE_INDEX, resize_labels
from cagnet.errors import ConfigError
from cagnet.evaluate import predict_logits
from cagnet.losses import classification_loss, discriminator_gan_loss, generator_gan_loss, mmd_loss
from cagnet.losses.segmentation import patch_centre_accuracy, patch_centre_loss, patch_centres
from cagnet.models.contextual import generator_latent
from cagnet.runtime import autocast_context
from cagnet.train.distributed import TrainedParts
from cagnet.train.self_training import self_training_labels


@dataclass
class StepOutput:
    """Total loss to back-propagate and the values to log (detached scalars, float32)."""

    total: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    trains_backbone: bool = False
    trains_generator: bool = False


# ------------------------------------------------------------------------------ helpers
def unseen_prior(num_seen: int, num_unseen: int, gen_unseen_rate: float) -> torch.Tensor:
    """Step-2 label distribution over the S+U classes: 1 per class, 1 + rate per unseen class,
    normalised. float64 [S+U]."""
    prior = torch.ones(num_seen + num_unseen, dtype=torch.float64)
    prior[num_seen:] += gen_unseen_rate
    return prior / prior.sum()


def sample_step2_labels(prior: torch.Tensor, shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """Labels [N, h, w] (int64) drawn independently per pixel from ``prior`` (global RNG)."""
    count = shape[0] * shape[1] * shape[2]
    draws = torch.multinomial(prior.to(device=device, dtype=torch.float32), count, replacement=True)
    return draws.view(shape)


def grid_labels(labels: torch.Tensor, grids: list[torch.Size]) -> list[torch.Tensor]:
    """The label map nearest-resized (as the original) to each grid."""
    return [resize_labels(labels, grid) for grid in grids]


def has_labelled_pixels(labels: torch.Tensor, grids: list[tuple[int, int]]) -> bool:
    """True when every grid keeps at least one labelled pixel (the original skips the batch
    otherwise)."""
    return all(bool((resize_labels(labels, grid) != IGNORE_INDEX).any()) for grid in grids)


def pixel_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of labelled pixels whose argmax is the label (0 when none)."""
    labelled = labels != IGNORE_INDEX
    correct = (logits.argmax(1) == labels) & labelled
    return correct.sum().float() / labelled.sum().clamp_min(1).float()


def _to_pixels(features: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """[N_k, C, h_k, w_k] maps -> one [1, C, 1, P] map of all their pixels (per-pixel networks)."""
    shapes = [tuple(f.shape) for f in features]
    flat = torch.cat([f.permute(1, 0, 2, 3).reshape(f.shape[1], -1) for f in features], dim=1)
    return flat[None, :, None, :], shapes


def _from_pixels(output: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Inverse of :func:`_to_pixels` for an output [1, K, 1, P]."""
    channels = output.shape[1]
    sizes = [n * h * w for n, _, h, w in shapes]
    pieces = output[0, :, 0].split(sizes, dim=1)
    return [p.reshape(channels, n, h, w).permute(1, 0, 2, 3) for p, (n, _, h, w) in zip(pieces, shapes)]


def _unwrapped(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def is_pixelwise(discriminator: nn.Module) -> bool:
    """Whether every output of ``discriminator`` depends on its own pixel only (the pixel-wise
    head, :attr:`cagnet.models.Discriminator.pixelwise`; a module without that property is
    taken as one)."""
    return bool(getattr(_unwrapped(discriminator), "pixelwise", True))


def _size_groups(features: list[torch.Tensor]) -> list[list[int]]:
    """Indices of the maps grouped by per-sample shape [C, h, w], in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, f in enumerate(features):
        groups.setdefault(tuple(f.shape[1:]), []).append(index)
    return list(groups.values())


def _call(discriminator: nn.Module, features: list[torch.Tensor], weights: dict | None
          ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(score, logits) per map from one call of ``discriminator`` (``weights``: detached
    parameters for :func:`torch.func.functional_call`, None = its own)."""
    def run(argument):
        if weights is None:
            return discriminator(argument)
        return torch.func.functional_call(discriminator, weights, (argument,))

    if is_pixelwise(discriminator):
        # 1x1 layers only: the pixels of all maps in one [1, C, 1, P] map
        pixels, shapes = _to_pixels(features)
        scores, logits = run(pixels)
        return list(zip(_from_pixels(scores, shapes), _from_pixels(logits, shapes)))
    # a patch head sees neighbours: each map keeps its layout; maps of one size share a batch
    groups = _size_groups(features)
    outputs = run([torch.cat([features[i] for i in group]) if len(group) > 1 else features[group[0]]
                   for group in groups])
    results: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(features)
    for group, (scores, logits) in zip(groups, outputs):
        sizes = [features[i].shape[0] for i in group]
        for i, score, logit in zip(group, scores.split(sizes), logits.split(sizes)):
            results[i] = (score, logit)
    return results


def discriminate(discriminator: nn.Module, features: list[torch.Tensor]
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(score, logits) of each feature map ``[N_k, C, h_k, w_k]`` from ONE discriminator call
    (one call per backward is what DistributedDataParallel expects).

    Pixel-wise head (1x1 convs): the pixels of all maps share one ``[1, C, 1, P]`` map. Patch
    head: the maps go as a list of same-size batches (``Discriminator.forward`` runs one pass
    per entry), so that each position's 3x3 neighbourhood is its own map's.
    """
    return _call(discriminator, features, None)


def discriminate_frozen(discriminator: nn.Module, features: list[torch.Tensor]
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Like :func:`discriminate` with the weights detached: gradients reach the features only."""
    weights = {name: p.detach() for name, p in discriminator.named_parameters()}
    return _call(discriminator, features, weights)


def _touch(*tensors: torch.Tensor) -> torch.Tensor:
    """0 * sum of the tensors: puts unused outputs into the loss so their parameters get a
    (zero) gradient."""
    return sum(t.float().sum() for t in tensors) * 0.0


def generator_embeddings(model: nn.Module, labels: torch.Tensor, unseen_embedding: str) -> torch.Tensor:
    """Per-pixel word embeddings [N, E, h, w] for the generator in step 1.

    Seen labels 0..S-1 and 255 (zero row) index the seen table, as the original. Labels of
    unseen classes (S..S+U-1, only from self-training) get a zero row there too
    (``unseen_embedding="zero"``, the original) or their word embedding (``"word"``).
    """
    if unseen_embedding == "zero":
        return model.embed_labels(labels, "seen")
    known = labels != IGNORE_INDEX
    embedded = model.embed_labels(torch.where(known, labels, torch.zeros_like(labels)), "all")
    return embedded * known[:, None].to(embedded.dtype)


# ------------------------------------------------------------------------------ step 1
def step1(parts: TrainedParts, image: torch.Tensor, labels: torch.Tensor, weights: LossWeights, *,
          gan_type: str = "lsgan", mmd_bandwidths: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0, 60.0),
          train_backbone: bool = True, amp: str = "none", unseen_embedding: str = "zero",
          host_labels: torch.Tensor | None = None) -> StepOutput:
    """Step-1 losses (see the module docstring).

    Args:
        parts: the networks (DDP-wrapped or plain).
        image: [N, 3, H, W] normalised images.
        labels: [N, H', W'] training labels (255 = ignored) on the image grid or, for
            self-training, on the feature grid; resized (nearest) to every feature grid.
        weights: the schedule's loss coefficients.
        train_backbone: False = the backbone is frozen (finetuning): features are computed
            without gradient and there is no backbone loss.
        host_labels: the same labels on the CPU, when ``labels`` are on a GPU: the MMD loss
            reads its run layout from them without waiting for the GPU.
    """
    model = parts.model
    labelled = labels != IGNORE_INDEX
    with autocast_context(image.device, amp):
        grad = torch.enable_grad() if train_backbone else torch.no_grad()
        with grad:
            context = parts.features(image, labelled, True)
        real_features = context.classification_features           # 1.0, 0.5, 0.75, fused
        per_grid = grid_labels(labels, [f.shape[-2:] for f in real_features])
        full_labels = per_grid[0]
        full_mask = full_labels != IGNORE_INDEX

        latent = generator_latent(model.config.context_latent, context.latent.detach(), full_mask)
        condition = model.generator_input(generator_embeddings(model, full_labels, unseen_embedding), latent)
        fake = parts.generator(condition)

        # discriminator terms: detached inputs, gradients to the discriminator only
        judged = discriminate(parts.discriminator, [f.detach() for f in real_features] + [fake.detach()])
        real_score, fake_score = judged[0][0], judged[-1][0]
        real_logits = [logits for _, logits in judged[:-1]]
        fake_logits_d = judged[-1][1]
        gan_d_real_fake = discriminator_gan_loss(real_score, fake_score, gan_type, full_mask)
        cls_real = sum(classification_loss(lg, lb) for lg, lb in zip(real_logits, per_grid)) / len(per_grid)
        cls_fake = classification_loss(fake_logits_d, full_labels)
        loss_d = gan_d_real_fake + weights.lambda_D_cls_real * cls_real + weights.lambda_D_cls_fake * cls_fake
        loss_d = loss_d + _touch(*[s for s, _ in judged], *[lg for _, lg in judged])

        # backbone and generator terms: the discriminator's weights are detached
        frozen_inputs = ([*real_features] if train_backbone else []) + [fake]
        frozen = discriminate_frozen(model.discriminator, frozen_inputs)
        fake_score_g, fake_logits_g = frozen[-1]
        loss_b = torch.zeros((), device=image.device)
        logs: dict[str, torch.Tensor] = {}
        if train_backbone:
            cls_real_b = sum(classification_loss(lg, lb) for (_, lg), lb in zip(frozen[:-1], per_grid)) / len(per_grid)
            loss_b = weights.lambda_B_KLD * context.kl.float() + weights.lambda_B_cls * cls_real_b
        gan_g = generator_gan_loss(fake_score_g, gan_type, full_mask)
        mmd_labels = full_labels if host_labels is None else resize_labels(host_labels, full_labels.shape[-2:])
        mmd = mmd_loss(fake.float(), real_features[0].detach().float(), mmd_labels, bandwidths=mmd_bandwidths)
        loss_g = weights.lambda_G_GAN * gan_g + weights.lambda_G_Content * mmd
        if weights.lambda_G_cls > 0:
            loss_g = loss_g + weights.lambda_G_cls * classification_loss(fake_logits_g, full_labels)

    if train_backbone:
        logs["loss_B"] = loss_b
    logs.update({
        "loss_D": loss_d, "loss_G": loss_g,
        "gan_D": gan_d_real_fake, "gan_G": gan_g, "cls_real": cls_real, "cls_fake": cls_fake,
        "kl": context.kl.float(), "mmd": mmd,
        "acc_real": pixel_accuracy(real_logits[0], full_labels),
        "acc_fake": pixel_accuracy(fake_logits_d, full_labels),
    })
    return StepOutput(total=loss_d + loss_b + loss_g, logs={k: v.detach().float() for k, v in logs.items()},
                      trains_backbone=train_backbone, trains_generator=True)


# ------------------------------------------------------------------------------ step 2
def step2(parts: TrainedParts, batch_size: int, grid: tuple[int, int], prior: torch.Tensor,
          weights: LossWeights, *, device: torch.device, amp: str = "none",
          blocks: BlockSource | None = None) -> StepOutput:
    """Step-2 losses on generated features of sampled labels (see the module docstring).

    Args:
        grid: the feature grid (h, w) of the generated maps ``[batch_size, C, h, w]``.
        prior: ``[S+U]`` class probabilities (:func:`unseen_prior`) on ``device``.
        blocks: the label-block source of patch-wise step 2; needed exactly when the model's
            ``patch_size`` is > 1 (then h and w must be multiples of it).
    """
    model = parts.model
    patch_size = model.config.patch_size
    if (patch_size > 1) != (blocks is not None):
        raise ConfigError(f"step 2: model.patch_size {patch_size} "
                          + ("needs a block source (patch-wise step 2)" if blocks is None
                             else "is pixel-wise: a block source would be ignored"))
    if blocks is None:
        labels = sample_step2_labels(prior, (batch_size, *grid), device)
        latent = torch.randn(batch_size, model.config.feature_dim, *grid, device=device)
    else:
        # blocks first, then one noise vector per block: the original's order of draws
        labels = tile_blocks(blocks.draw(batch_size, grid, prior), grid)                # [N, h, w]
        latent = block_noise(batch_size, model.config.feature_dim, grid, patch_size, device=device)
    train_generator = weights.lambda_G_cls_transfer > 0
    with autocast_context(device, amp):
        condition = model.generator_input(model.embed_labels(labels, "all"), latent)
        with (torch.enable_grad() if train_generator else torch.no_grad()):
            fake = parts.generator(condition)
        ((score, logits),) = discriminate(parts.discriminator, [fake.detach()])
        cls_fake = _step2_loss(logits, labels, patch_size)
        loss_d = weights.lambda_D_cls_fake_transfer * cls_fake + _touch(score, logits)
        loss_g = torch.zeros((), device=device)
        if train_generator:
            ((_, logits_g),) = discriminate_frozen(model.discriminator, [fake])
            loss_g = weights.lambda_G_cls_transfer * _step2_loss(logits_g, labels, patch_size)
    if patch_size == 1:
        accuracy, targets = pixel_accuracy(logits, labels), labels
    else:   # what the classifier is trained on: the block centres
        accuracy = patch_centre_accuracy(logits, labels, patch_size)
        targets = patch_centres(labels, patch_size)
    logs = {"loss_D": loss_d, "loss_G": loss_g, "cls_fake": cls_fake, "acc_fake": accuracy,
            "unseen_fraction": (targets >= model.config.num_seen).float().mean()}
    return StepOutput(total=loss_d + loss_g, logs={k: v.detach().float() for k, v in logs.items()},
                      trains_backbone=False, trains_generator=train_generator)


def step2_block_source(config, schedule: str, model: nn.Module, num_classes: int,
                       device: torch.device | str = "cpu", bank_path: str | None = None) -> BlockSource | None:
    """The label-block source of a schedule's patch-wise step 2, on ``device``; None when the
    model is pixel-wise or the schedule runs no step 2.

    Checks first that the schedule's crop gives a feature grid of whole blocks
    (:func:`check_patch_grid`), then reads the bank of ``block_source: bank``
    (:func:`cagnet.data.blocks.load_label_blocks`: labels ``0 .. num_classes - 1``, blocks of
    the patch size, enough of them for one image's draw without replacement), so that a bad
    crop or bank is a one-line error before anything runs.

    Args:
        config: the :class:`~cagnet.config.TrainConfig`.
        num_classes: S + U.
        bank_path: the bank to read when the schedule's ``bank_path`` is null (the config's own
            cached bank, :func:`cagnet.patches.ensure_bank`; the engine builds it).
    """
    from cagnet.config import SCHEDULE_KEYS_READ_BY
    from cagnet.data.blocks import load_label_blocks
    from cagnet.errors import DatasetError

    patch_size = model.config.patch_size
    if patch_size == 1 or schedule not in SCHEDULE_KEYS_READ_BY["block_source"]:
        return None
    section = config.schedule(schedule)
    prefix = f"schedules.{schedule}"
    crop_key = f"{prefix}.crop_size" if section.crop_size else "data.crop_size"
    grid = check_patch_grid(model, section.crop_size or config.data.crop_size, crop_key)
    if section.block_source == "pure":
        source = BlockSource(patch_size)
    else:
        path = section.bank_path or bank_path
        if path is None:
            raise ConfigError(f"{prefix}.bank_path: needed with block_source: bank")
        try:
            bank = load_label_blocks(path, num_classes, patch_size)
            source = BlockSource(patch_size, bank, section.fuse_ratio, name=str(path))
            source.check_grid(grid)
        except DatasetError as err:
            raise DatasetError(f"{prefix}.bank_path: {err}") from None
    return source.to(device)


def _step2_loss(logits: torch.Tensor, labels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Step-2 cross-entropy: every pixel (pixel-wise) or the block centres (patch-wise)."""
    if patch_size == 1:
        return classification_loss(logits, labels)
    return patch_centre_loss(logits, labels, patch_size)


def check_patch_grid(model: nn.Module, crop_size: int, crop_key: str) -> tuple[int, int]:
    """The feature grid of ``crop_size`` crops, checked to be a multiple of the model's patch
    size (patch-wise step 2 tiles whole blocks); a one-line ConfigError naming ``crop_key``,
    the crop size, its grid, the patch size and the next crop size that fits otherwise."""
    patch_size = model.config.patch_size
    grid = feature_grid(model, (crop_size, crop_size))
    if grid[0] % patch_size == 0 and grid[1] % patch_size == 0:
        return grid
    # the grid grows by one cell per output-stride pixels of crop: suggest the next crop that
    # fits, checked (one more meta pass), else no suggestion
    hint, stride = "", getattr(model.backbone, "output_stride", None)
    if isinstance(stride, int) and grid[0] == grid[1]:
        larger = crop_size + stride * ((-grid[0]) % patch_size)
        other = feature_grid(model, (larger, larger))
        if other[0] % patch_size == 0:
            hint = f"; e.g. crop {larger} gives {other[0]}x{other[1]}"
    raise ConfigError(f"{crop_key}: crop size {crop_size} gives a {grid[0]}x{grid[1]} feature grid, not a multiple "
                      f"of model.patch_size {patch_size} (patch-wise step 2 tiles {patch_size}x{patch_size} label "
                      f"blocks){hint}")


# ------------------------------------------------------------------------------ self-training
@torch.no_grad()
def pseudo_labels(model: nn.Module, image: torch.Tensor, labels: torch.Tensor, top_p: int,
                  amp: str = "none") -> torch.Tensor:
    """Self-training labels on the feature grid [N, h, w] (eval-mode prediction of ``model``).

    Labelled pixels keep their (nearest-resized) label; an ignored pixel takes the
    highest-ranked unseen class among the ``top_p`` best classifier outputs, if any.
    """
    logits = predict_logits(model, image, amp)
    resized = resize_labels(labels, logits.shape[-2:])
    s, u = model.config.num_seen, model.config.num_unseen
    return self_training_labels(logits, resized, list(range(s, s + u)), top_p)


# ------------------------------------------------------------------------------ grids
def feature_grid(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """Feature-grid size of the backbone for an input of ``size`` (H, W), computed on the meta
    device (no memory, no arithmetic)."""
    weights = {name: t.to("meta") for name, t in model.backbone.state_dict(keep_vars=True).items()}
    with torch.no_grad():
        out = torch.func.functional_call(model.backbone, weights,
                                         (torch.empty(1, 3, *size, device="meta"),))
    return tuple(out.shape[-2:])


def scale_sizes(size: tuple[int, int], scales: tuple[float, ...]) -> list[tuple[int, int]]:
    """Input sizes of the multi-scale pass (``int(H * s)``, as ``resize_to_scale``)."""
    return [tuple(int(s * d) for d in size) if s != 1.0 else tuple(size) for s in scales]


def step1_grids(model: nn.Module, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Grids of the step-1 classification features: each scale's, then the fused one (= full)."""
    grids = [feature_grid(model, s) for s in scale_sizes(size, model.config.scales)]
    return grids + [grids[0]] if len(grids) > 1 else grids

