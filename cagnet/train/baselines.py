"""Training of the comparison methods SPNet and ZS3Net (and ZS3Net+ST) on a config's data.

The models are in :mod:`cagnet.models.baselines`. Every routine reads the architecture from
``config.model`` (with the dataset's class counts and embedding size), the data from
``config.data`` (the same augmented, seeded batch order as CaGNet's training,
:mod:`cagnet.train.batches`), runs on ``config.runtime.device`` with ``config.runtime.num_threads``
torch threads when set, and is deterministic for a given ``seed`` (default
``config.runtime.seed``) on the same hardware and thread count. Labels are nearest-resized to
the feature grid, as in CaGNet's step 1; batches without a labelled pixel there are skipped.

Recipes (S/U = seen/unseen classes; "pixels" = labelled pixels of the feature grid):

``SPNet``       backbone trained with the cross-entropy of the seen-class projections on
                seen pixels (:func:`train_spnet`).
``ZS3Net``      (a) backbone + 1x1 classifier trained on seen pixels (cross-entropy over the
                S seen outputs); (b) backbone frozen, the GMMN learns to generate the real
                features of each seen class from its word embedding: per-class MMD between
                generated and real pixel features; (c) the classifier is retrained on real
                seen features plus generated features of the unseen classes, as many per
                unseen class as CaGNet's step-2 prior gives it (``gen_unseen_rate`` of the
                section) (:func:`train_zs3net`).
``ZS3Net+ST``   self-training from a trained ZS3Net: ignored pixels get pseudo-labels by
                CaGNet's rule (:func:`cagnet.train.steps.pseudo_labels`: the best-ranked
                unseen class among the ``top_p`` highest logits), then (a) backbone +
                classifier finetuned on seen + pseudo-labelled pixels (pseudo-labels of the
                current model, as CaGNet's ``st``), (b) GMMN finetuned on the real features of
                seen and pseudo-labelled pixels, (c) classifier retrained on them plus
                generated unseen features (:func:`self_train_zs3net`).

Iteration budgets (:func:`baseline_budget`) follow the config's CaGNet schedules, so every
method gets the same number of updates of the same kind:

=====================  =============================  ==========================================
phase                  iterations                     learning rates (section of ``schedules``)
=====================  =============================  ==========================================
SPNet                  ``step1.iterations``           ``step1.backbone_lr``
ZS3Net (a)             ``step1.iterations``           ``step1.backbone_lr`` / ``discriminator_lr``
ZS3Net (b), (c)        ``mixed.iterations`` / 2 each  ``mixed.generator_lr`` / ``discriminator_lr``
ZS3Net+ST (a)          ``st.iterations``              ``st.backbone_lr`` / ``discriminator_lr``
ZS3Net+ST (b), (c)     ``st_mixed.iterations`` / 2    ``st_mixed.generator_lr`` / ``discriminator_lr``
=====================  =============================  ==========================================

(CaGNet's ``mixed`` alternates step-1 and step-2 iterations, half each.) A ``scale`` factor
shrinks or stretches all of them. The backbone optimiser is the config's
(``optim.backbone_optimizer``, DeepLabV2 learning-rate multipliers for the body and ASPP,
poly decay); the classifier and the GMMN use Adam with the section's step decay, its
thresholds scaled to the phase's length. Everything runs single-scale (CaGNet's step 1 adds
the 0.5 / 0.75 scales; SPNet and ZS3Net train on one scale).

The MMD of (b) is :func:`cagnet.losses.mmd_loss` on pixels sorted by class, i.e. one kernel
statistic per class with the config's bandwidths (``losses.mmd_bandwidths``), as ZS3Net's
per-class MMD with several bandwidths. The bandwidths are relative to the features' scale:
each is multiplied by the median squared distance between real pixel features of the batch
(divided by the median bandwidth), because the rectified ASPP features are not confined to
(0, 1) like CaGNet's and fixed bandwidths would make every kernel vanish or saturate.
"""
from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from cagnet.config import ScheduleConfig, TrainConfig
from cagnet.data.datasets import DatasetInfo, SegmentationDataset
from cagnet.data.transforms import IGNORE_INDEX, TestTransform, resize_labels
from cagnet.errors import ConfigError, DatasetError
from cagnet.losses import classification_loss, mmd_loss
from cagnet.models.baselines import SPNet, ZS3Net
from cagnet.models.cagnet import ModelConfig, model_config
from cagnet.runtime import autocast_context, seed_everything, torch_threads
from cagnet.train.batches import BatchStream, mix_seed, training_loader
from cagnet.train.loading import class_embedding_table, prepare_dataset, training_dataset
from cagnet.train.distributed import resolve_device
from cagnet.train.engine import NonFiniteLossError
from cagnet.train.optim import poly_factor, step_decay_factor
from cagnet.train.self_training import self_training_labels
from cagnet.train.steps import feature_grid, has_labelled_pixels, pseudo_labels

#: Consecutive batches without a labelled pixel on the feature grid after which training stops.
MAX_CONSECUTIVE_SKIPS = 50


@dataclass(frozen=True)
class BaselineBudget:
    """Iterations of every training phase of the comparison methods (see the module docstring)."""

    spnet: int
    segmentation: int
    generator: int
    classifier: int
    st_segmentation: int
    st_generator: int
    st_classifier: int


#: Schedules whose settings a baseline reads (the CaGNet schedules its phases follow).
BASELINE_SCHEDULES: dict[str, tuple[str, ...]] = {"spnet": ("step1",), "zs3net": ("step1", "mixed"),
                                                   "zs3net_st": ("step1", "mixed", "st", "st_mixed")}
#: The fields of each schedule that the baselines read: the segmentation phases follow step1 and
#: st, the generator and classifier phases mixed and st_mixed. Loss weights, step intervals and
#: the self-training embedding rule are CaGNet's own.
_SEGMENTATION_FIELDS = ("iterations", "backbone_lr", "discriminator_lr", "discriminator_decay", "backbone_poly_every",
                        "batch_size", "crop_size")
_SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {
    "step1": (*_SEGMENTATION_FIELDS, "init_model"),
    "st": (*_SEGMENTATION_FIELDS, "top_p"),
    "mixed": ("iterations", "generator_lr", "generator_decay", "discriminator_lr", "discriminator_decay",
              "gen_unseen_rate", "batch_size", "crop_size"),
}
_SCHEDULE_FIELDS["st_mixed"] = _SCHEDULE_FIELDS["mixed"]
#: The model fields the baselines read: the backbone's (the contextual module, the generator and
#: the discriminator are CaGNet's own).
_MODEL_FIELDS = ("backbone", "backbone_blocks", "base_width", "freeze_bn", "feature_dim", "aspp_dilations")


def baseline_recipe(config_data: Mapping[str, Any], name: str, held_out: int = 0) -> dict[str, Any]:
    """What decides the weights of baseline ``name`` (``spnet``, ``zs3net``, ``zs3net_st``), as
    plain data: the seed, the data, optimiser and pretraining settings, the backbone's fields of
    the model, the MMD bandwidths, the fields of :data:`BASELINE_SCHEDULES` it reads, and the
    held-out image count. ``config_data`` is :func:`cagnet.config.to_dict` of a configuration.
    CaGNet's own settings (its loss weights, contextual module, generator) do not enter, so a
    change of them does not retrain the baselines."""
    if name not in BASELINE_SCHEDULES:
        raise ConfigError(f"unknown baseline {name!r} (known: {', '.join(BASELINE_SCHEDULES)})")
    schedules = config_data.get("schedules") or {}
    pretrain = config_data.get("pretrain")
    return {
        "method": name, "held_out": int(held_out), "seed": (config_data.get("runtime") or {}).get("seed"),
        "data": {k: v for k, v in config_data["data"].items() if k != "preload"},
        "model": {k: config_data["model"][k] for k in _MODEL_FIELDS},
        "optim": config_data["optim"],
        "mmd_bandwidths": config_data["losses"]["mmd_bandwidths"],
        "pretrain": None if pretrain is None else {k: v for k, v in pretrain.items() if k != "cache_dir"},
        "schedules": {s: {k: (schedules.get(s) or {}).get(k) for k in _SCHEDULE_FIELDS[s]}
                      for s in BASELINE_SCHEDULES[name]},
    }


def baseline_budget(config: TrainConfig, scale: float = 1.0) -> BaselineBudget:
    """Budgets from the config's CaGNet schedules (``step1``, ``mixed``, ``st``, ``st_mixed``),
    times ``scale`` (each phase at least 1 iteration when scale > 0)."""
    if not scale >= 0:
        raise ConfigError(f"iteration scale must be >= 0, got {scale!r}")

    def scaled(iterations: float) -> int:
        return max(1, round(iterations * scale)) if scale > 0 else 0

    step1 = config.schedule("step1").iterations
    mixed = config.schedule("mixed").iterations
    st = config.schedule("st").iterations
    st_mixed = config.schedule("st_mixed").iterations
    return BaselineBudget(spnet=scaled(step1), segmentation=scaled(step1), generator=scaled(mixed / 2),
                          classifier=scaled(mixed / 2), st_segmentation=scaled(st),
                          st_generator=scaled(st_mixed / 2), st_classifier=scaled(st_mixed / 2))


# ------------------------------------------------------------------------------ data split
def training_ids(config: TrainConfig, info: DatasetInfo) -> list[str]:
    """Image ids of the config's training split (after ``data.train_limit``)."""
    return training_dataset(config, info, config.data.crop_size).ids


def held_out_dataset(config: TrainConfig, info: DatasetInfo, count: int) -> SegmentationDataset:
    """The last ``count`` training images, warped to ``data.test_size`` like test images,
    with *training* labels (seen classes 0..S-1, unseen and unlabelled pixels 255).

    :func:`train_spnet` with ``held_out=count`` does not train on them; they select SPNet-c's
    penalty (:func:`cagnet.evaluate.held_out_calibration`).
    """
    ids = training_ids(config, info)
    if not 0 < count < len(ids):
        raise ConfigError(f"held-out images: need 0 < count < {len(ids)} training images, got {count}")
    transform = TestTransform(size=config.data.test_size, normalization=config.data.normalization, warp_label=True)
    return SegmentationDataset(info.root, "train", transform=transform, info=info, ids=ids[-count:])


# ------------------------------------------------------------------------------ model building
def baseline_model_config(config: TrainConfig, info: DatasetInfo, embedding_dim: int) -> ModelConfig:
    """``config.model`` with the dataset's class counts and the embedding table's width."""
    return model_config(config.model, num_seen=info.num_seen, num_unseen=info.num_unseen,
                        embedding_dim=embedding_dim)


def load_initial_weights(model: nn.Module, config: TrainConfig, progress: bool = False) -> str | None:
    """Load ``schedules.step1.init_model`` into a baseline, as the engine does for CaGNet's
    step 1 (the same file, e.g. the pretrained backbone, through the same loader); returns the
    load report, or None when the step-1 schedule starts from random weights."""
    from cagnet.models import load_checkpoint
    from cagnet.pretrain import resolve_init_model

    source = resolve_init_model(config.schedule("step1").init_model, config, progress=progress)
    return None if source is None else str(load_checkpoint(model, source))


def build_spnet(config: TrainConfig, info: DatasetInfo, init: bool = True) -> SPNet:
    """An SPNet for the config's model settings and the dataset's classes, initialised like
    CaGNet's step 1 (:func:`load_initial_weights`; ``init=False``: random weights only)."""
    table = class_embedding_table(config, info)
    model = SPNet(baseline_model_config(config, info, table.shape[1]), table)
    if init:
        load_initial_weights(model, config)
    return model


def build_zs3net(config: TrainConfig, info: DatasetInfo, init: bool = True) -> ZS3Net:
    """A ZS3Net for the config's model settings and the dataset's classes, initialised like
    CaGNet's step 1 (:func:`load_initial_weights`; ``init=False``: random weights only)."""
    table = class_embedding_table(config, info)
    model = ZS3Net(baseline_model_config(config, info, table.shape[1]), table)
    if init:
        load_initial_weights(model, config)
    return model


# ------------------------------------------------------------------------------ shared machinery
def _scaled_decay(decay, iteration: int, phase_iterations: int, section_iterations: int) -> float:
    """The section's step decay, its thresholds stretched from the section's to the phase's length."""
    position = iteration * section_iterations / max(1, phase_iterations)
    return step_decay_factor(int(position), decay.start_decay_iter, decay.step_size, decay.gamma)


def _backbone_optimizer(backbone: nn.Module, config: TrainConfig, lr: float, *extra: nn.Module
                        ) -> torch.optim.Optimizer:
    """The config's backbone optimiser over a DeepLabV2: body (and the ``extra`` modules) 1x,
    ASPP weights / biases with their multipliers (ASPP biases without weight decay), each
    group with ``initial_lr``."""
    optim = config.optim
    multipliers = optim.lr_multipliers
    aspp_weights = [b.weight for b in backbone.aspp.branches]
    aspp_biases = [b.bias for b in backbone.aspp.branches]
    aspp = {id(p) for p in aspp_weights + aspp_biases}
    body = [p for m in (backbone, *extra) for p in m.parameters() if p.requires_grad and id(p) not in aspp]
    groups = []
    for params, multiplier, decay in ((body, multipliers.backbone, optim.backbone_weight_decay),
                                      (aspp_weights, multipliers.aspp_weight, optim.backbone_weight_decay),
                                      (aspp_biases, multipliers.aspp_bias, optim.aspp_bias_weight_decay)):
        if params:
            groups.append({"params": params, "initial_lr": multiplier * lr, "lr": multiplier * lr,
                           "weight_decay": decay})
    if optim.backbone_optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(optim.adam_betas))
    return torch.optim.SGD(groups, lr=lr, momentum=optim.backbone_momentum)


def _adam(params, lr: float, weight_decay: float, config: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam([{"params": list(params), "initial_lr": lr}], lr=lr,
                            betas=tuple(config.optim.adam_betas), weight_decay=weight_decay)


def _set_rate(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


class _Session:
    """Data, device and progress shared by the phases of one training routine."""

    def __init__(self, config: TrainConfig, seed: int, device: torch.device | str | None, progress: bool,
                 history: dict[str, list[float]] | None, info: DatasetInfo | None = None) -> None:
        self.config = config
        self.seed = seed
        self.device = torch.device(device) if device is not None else resolve_device(config.runtime.device)
        self.amp = config.runtime.amp
        if self.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"runtime.amp: fp16 needs a CUDA device (running on {self.device.type}); "
                              "use bf16 or none")
        self.progress = progress
        self.history = history
        self.info = info if info is not None else prepare_dataset(config)

    def stream(self, section: ScheduleConfig, phase: int, held_out: int = 0) -> tuple[BatchStream, int, int]:
        """(endless batches, crop size, batch size) of the training split for one phase."""
        crop = section.crop_size or self.config.data.crop_size
        batch_size = section.batch_size or self.config.data.batch_size
        dataset = training_dataset(self.config, self.info, crop)
        if held_out:
            if not 0 < held_out < len(dataset):
                raise ConfigError(f"held-out images: need 0 < count < {len(dataset)} training images, "
                                  f"got {held_out}")
            dataset = SegmentationDataset(dataset.root, "train", transform=dataset.transform, info=self.info,
                                          ids=dataset.ids[:-held_out])
        loader, sampler = training_loader(dataset, batch_size, self.config.data.num_workers,
                                          mix_seed(self.seed, phase), pin_memory=self.device.type == "cuda")
        return BatchStream(loader, sampler), crop, batch_size

    def next_batch(self, stream: BatchStream, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [N,3,H,W], labels [N,H,W]) of the next batch with a labelled pixel on ``grid``."""
        for _ in range(MAX_CONSECUTIVE_SKIPS):
            batch = stream.next()
            if has_labelled_pixels(batch["label"], [grid]):
                return batch["image"].to(self.device), batch["label"].to(self.device)
        raise DatasetError(f"{self.info.root}: {MAX_CONSECUTIVE_SKIPS} consecutive training batches without a "
                           "labelled (seen-class) pixel")

    def iterations(self, count: int, desc: str) -> Iterator[int]:
        if self.progress and count:
            from tqdm.auto import tqdm

            return iter(tqdm(range(count), desc=desc, leave=False, dynamic_ncols=True))
        return iter(range(count))

    def log(self, phase: str, value: torch.Tensor) -> None:
        if self.history is not None:
            self.history.setdefault(phase, []).append(float(value.detach()))

    def autocast(self):
        return autocast_context(self.device, self.amp)

    def update(self, loss: torch.Tensor, optimizers: tuple[torch.optim.Optimizer, ...], phase: str,
               iteration: int, log_as: str) -> None:
        """One optimisation step of ``optimizers`` on ``loss`` (refused if it is not finite), logged."""
        _check_finite(loss, phase, iteration)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        self.log(log_as, loss)


def _check_finite(loss: torch.Tensor, phase: str, iteration: int) -> None:
    """A NaN / infinite loss stops training (before the update) with a one-line error."""
    if not torch.isfinite(loss.detach()).all():
        raise NonFiniteLossError(f"non-finite loss {float(loss.detach()):.4g} in {phase} at iteration {iteration + 1}; "
                                 "training stopped before the update")


def _to_pixel_map(values: torch.Tensor) -> torch.Tensor:
    """[P, C] pixel vectors -> a [1, C, 1, P] map (for 1x1-conv networks and map losses)."""
    return values.t()[None, :, None, :]


def _labelled_pixels(feature: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [P, C], labels [P]) of the labelled pixels of a feature map [N, C, h, w]
    and labels [N, h, w]."""
    mask = labels != IGNORE_INDEX
    return feature.permute(0, 2, 3, 1)[mask], labels[mask]


# ------------------------------------------------------------------------------ SPNet
def train_spnet(config: TrainConfig, *, iterations: int | None = None, seed: int | None = None,
                held_out: int = 0, model: SPNet | None = None, device: torch.device | str | None = None,
                progress: bool = False, history: dict[str, list[float]] | None = None) -> SPNet:
    """Train SPNet: cross-entropy of the seen-class projections on seen pixels (ignore 255).

    Args:
        config: training configuration (data, model settings, ``schedules.step1`` rates).
        iterations: backbone updates (default ``baseline_budget(config).spnet`` =
            ``schedules.step1.iterations``).
        seed: initialisation, batch order and augmentation (default ``runtime.seed``).
        held_out: leave the last ``held_out`` training images out (SPNet-c calibrates on them,
            :func:`held_out_dataset`).
        model: continue training this model (a copy) instead of a fresh one.
        device: default ``runtime.device``.
        progress: a tqdm bar.
        history: if given, receives the loss of every iteration under ``"spnet"``.

    Returns:
        the trained :class:`SPNet`, in eval mode, on ``device``.
    """
    seed = config.runtime.seed if seed is None else seed
    iterations = baseline_budget(config).spnet if iterations is None else iterations
    section = config.schedule("step1")
    with torch_threads(config.runtime.num_threads):
        session = _Session(config, seed, device, progress, history)
        seed_everything(seed)
        model = build_spnet(config, session.info) if model is None else copy.deepcopy(model)
        model.to(session.device).train()
        stream, crop, _ = session.stream(section, phase=0, held_out=held_out)
        grid = feature_grid(model, (crop, crop))
        optimizer = _backbone_optimizer(model.backbone, config, section.backbone_lr)
        for iteration in session.iterations(iterations, "SPNet"):
            _set_rate(optimizer, poly_factor(iteration, iterations, config.optim.poly_power,
                                             section.backbone_poly_every))
            image, labels = session.next_batch(stream, grid)
            with session.autocast():
                logits = model(image)    # training mode: seen projections, unseen outputs constant
                loss = classification_loss(logits, resize_labels(labels, logits.shape[-2:]))
            session.update(loss, (optimizer,), "SPNet", iteration, "spnet")
        return model.eval()


# ------------------------------------------------------------------------------ ZS3Net phases
def _segmentation_phase(session: _Session, model: ZS3Net, iterations: int, section: ScheduleConfig, phase: int,
                        name: str, top_p: int | None) -> None:
    """Backbone + classifier: seen pixels (``top_p`` None: cross-entropy over the S seen
    outputs) or seen + pseudo-labelled pixels (self-training: over all outputs)."""
    if not iterations:
        return
    config = session.config
    num_seen = model.config.num_seen
    model.train()
    stream, crop, _ = session.stream(section, phase)
    grid = feature_grid(model, (crop, crop))
    backbone_opt = _backbone_optimizer(model.backbone, config, section.backbone_lr, model.feature_norm)
    classifier_opt = _adam(model.classifier.parameters(), section.discriminator_lr,
                           config.optim.discriminator_weight_decay, config)
    for iteration in session.iterations(iterations, f"ZS3Net {name}"):
        _set_rate(backbone_opt, poly_factor(iteration, iterations, config.optim.poly_power,
                                            section.backbone_poly_every))
        _set_rate(classifier_opt, _scaled_decay(section.discriminator_decay, iteration, iterations,
                                                section.iterations))
        image, grid_labels = _segmentation_batch(session, model, stream, grid, top_p)
        with session.autocast():
            logits = model(image)
            if top_p is None:
                logits = logits[:, :num_seen]    # ZS3Net's segmentation network knows the seen classes only
            loss = classification_loss(logits, grid_labels)
        session.update(loss, (backbone_opt, classifier_opt), f"ZS3Net {name}", iteration, name)


def _segmentation_batch(session: _Session, model: ZS3Net, stream: BatchStream, grid: tuple[int, int],
                        top_p: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels on the feature grid): seen labels, or with ``top_p`` the self-training
    labels of the current model (eval-mode prediction), skipping batches left unlabelled."""
    for _ in range(MAX_CONSECUTIVE_SKIPS):
        image, labels = session.next_batch(stream, grid)
        if top_p is None:
            return image, resize_labels(labels, grid)
        grid_labels = pseudo_labels(model, image, labels, top_p, session.amp)
        if has_labelled_pixels(grid_labels, [grid]):
            return image, grid_labels
    raise DatasetError(f"{session.info.root}: {MAX_CONSECUTIVE_SKIPS} consecutive batches without a labelled pixel")


@torch.no_grad()
def _real_pixels(session: _Session, model: ZS3Net, image: torch.Tensor, labels: torch.Tensor,
                 teacher: nn.Module | None, top_p: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real features [P, C] (float32) and labels [P] of the labelled pixels of a batch, frozen
    backbone; with a ``teacher`` classifier, ignored pixels first get self-training labels."""
    with session.autocast():
        feature = model.features(image)
    feature = feature.float()
    grid_labels = resize_labels(labels, feature.shape[-2:])
    if teacher is not None:
        s, u = model.config.num_seen, model.config.num_unseen
        grid_labels = self_training_labels(teacher(feature), grid_labels, list(range(s, s + u)), top_p)
    return _labelled_pixels(feature, grid_labels)


def _relative_bandwidths(real: torch.Tensor, bandwidths: tuple[float, ...], max_pixels: int = 512) -> tuple[float, ...]:
    """``bandwidths`` rescaled so that their median equals the median squared distance between
    (up to ``max_pixels``) real pixel features [P, C]."""
    sample = real[:: max(1, real.shape[0] // max_pixels)][:max_pixels]
    squared = torch.cdist(sample, sample).pow(2)
    off_diagonal = squared[~torch.eye(sample.shape[0], dtype=torch.bool, device=sample.device)]
    scale = float(off_diagonal.median()) if off_diagonal.numel() else 1.0
    scale = scale if scale > 0 else 1.0
    reference = statistics.median(bandwidths)
    return tuple(b * scale / reference for b in bandwidths)


def _generator_phase(session: _Session, model: ZS3Net, iterations: int, section: ScheduleConfig, phase: int,
                     name: str, teacher: nn.Module | None = None, top_p: int | None = None) -> None:
    """GMMN on real pixel features of the frozen backbone: per-class MMD (module docstring)."""
    if not iterations:
        return
    config = session.config
    model.eval()                       # frozen backbone (BN statistics too)
    model.generator.train()            # dropout on, as ZS3Net trains its GMMN
    stream, crop, _ = session.stream(section, phase)
    grid = feature_grid(model, (crop, crop))
    optimizer = _adam(model.generator.parameters(), section.generator_lr, config.optim.generator_weight_decay, config)
    for iteration in session.iterations(iterations, f"ZS3Net {name}"):
        _set_rate(optimizer, _scaled_decay(section.generator_decay, iteration, iterations, section.iterations))
        image, labels = session.next_batch(stream, grid)
        real, pixel_labels = _real_pixels(session, model, image, labels, teacher, top_p)
        order = torch.argsort(pixel_labels, stable=True)     # one run per class: a per-class MMD
        real, pixel_labels = real[order], pixel_labels[order]
        fake = model.generate(pixel_labels[None, None, :])   # [1, C, 1, P]
        bandwidths = _relative_bandwidths(real, tuple(config.losses.mmd_bandwidths))
        loss = mmd_loss(fake.float(), _to_pixel_map(real), pixel_labels[None, None, :], bandwidths=bandwidths)
        session.update(loss, (optimizer,), f"ZS3Net {name}", iteration, name)
    model.eval()


def _classifier_phase(session: _Session, model: ZS3Net, iterations: int, section: ScheduleConfig, phase: int,
                      name: str, teacher: nn.Module | None = None, top_p: int | None = None) -> None:
    """Classifier retrained on real pixel features plus generated unseen features.

    Each batch adds, per unseen class, ``1 + section.gen_unseen_rate`` times as many
    generated features as the batch has real pixels per labelled class on average: the
    unseen emphasis of CaGNet's step-2 label prior (:func:`cagnet.train.steps.unseen_prior`),
    so that both methods' classifiers see generated unseen features in the same proportion.
    They are drawn with the GMMN in eval mode (no dropout; the noise varies them).
    """
    if not iterations:
        return
    config = session.config
    s, u = model.config.num_seen, model.config.num_unseen
    model.eval()
    model.classifier.train()
    stream, crop, _ = session.stream(section, phase)
    grid = feature_grid(model, (crop, crop))
    optimizer = _adam(model.classifier.parameters(), section.discriminator_lr,
                      config.optim.discriminator_weight_decay, config)
    unseen = torch.arange(s, s + u, device=session.device)
    for iteration in session.iterations(iterations, f"ZS3Net {name}"):
        _set_rate(optimizer, _scaled_decay(section.discriminator_decay, iteration, iterations, section.iterations))
        image, labels = session.next_batch(stream, grid)
        real, real_labels = _real_pixels(session, model, image, labels, teacher, top_p)
        per_class = math.ceil((1.0 + section.gen_unseen_rate) * real_labels.numel()
                              / max(1, real_labels.unique().numel()))
        fake_labels = unseen.repeat_interleave(per_class)
        with torch.no_grad():
            fake = model.generate(fake_labels[None, None, :]).float()[0, :, 0].t()   # [Q, C]
        features = torch.cat([real, fake])
        targets = torch.cat([real_labels, fake_labels])
        logits = model.classify(_to_pixel_map(features))                              # [1, S+U+1, 1, P+Q]
        loss = classification_loss(logits, targets[None, None, :])
        session.update(loss, (optimizer,), f"ZS3Net {name}", iteration, name)
    model.eval()


def train_zs3net(config: TrainConfig, *, segmentation_iterations: int | None = None,
                 generator_iterations: int | None = None, classifier_iterations: int | None = None,
                 seed: int | None = None, model: ZS3Net | None = None, device: torch.device | str | None = None,
                 progress: bool = False, history: dict[str, list[float]] | None = None) -> ZS3Net:
    """Train ZS3Net: (a) segmentation on seen classes, (b) GMMN, (c) classifier retraining.

    Args:
        config: training configuration (data, model settings, schedule rates).
        segmentation_iterations, generator_iterations, classifier_iterations: iterations of
            (a), (b), (c) (defaults: :func:`baseline_budget`; 0 skips a phase).
        seed: initialisation, batch order, augmentation, dropout and noise (default
            ``runtime.seed``).
        model: continue from this model (a copy) instead of a fresh one.
        device, progress: as :func:`train_spnet`.
        history: if given, receives per-iteration losses under ``"segmentation"``,
            ``"generator"``, ``"classifier"``.

    Returns:
        the trained :class:`ZS3Net`, in eval mode, on ``device``.
    """
    seed = config.runtime.seed if seed is None else seed
    budget = baseline_budget(config)
    iterations = (budget.segmentation if segmentation_iterations is None else segmentation_iterations,
                  budget.generator if generator_iterations is None else generator_iterations,
                  budget.classifier if classifier_iterations is None else classifier_iterations)
    with torch_threads(config.runtime.num_threads):
        session = _Session(config, seed, device, progress, history)
        seed_everything(seed)
        model = build_zs3net(config, session.info) if model is None else copy.deepcopy(model)
        model.to(session.device)
        _segmentation_phase(session, model, iterations[0], config.schedule("step1"), 0, "segmentation", None)
        _generator_phase(session, model, iterations[1], config.schedule("mixed"), 1, "generator")
        _classifier_phase(session, model, iterations[2], config.schedule("mixed"), 2, "classifier")
        return model.eval()


def self_train_zs3net(config: TrainConfig, model: ZS3Net, *, segmentation_iterations: int | None = None,
                      generator_iterations: int | None = None, classifier_iterations: int | None = None,
                      top_p: int | None = None, seed: int | None = None, device: torch.device | str | None = None,
                      progress: bool = False, history: dict[str, list[float]] | None = None) -> ZS3Net:
    """ZS3Net+ST: self-training of a trained ZS3Net (a copy; ``model`` is left as it is).

    (a) backbone + classifier on seen + pseudo-labelled pixels (``schedules.st``), (b) GMMN
    and (c) classifier on the real features of seen + pseudo-labelled pixels
    (``schedules.st_mixed``); in (b) and (c) the pseudo-labels come from the classifier as
    (a) left it. ``top_p``: the self-training rule's (default ``schedules.st.top_p``, as
    CaGNet+ST). Iterations default to :func:`baseline_budget`; the other arguments are those
    of :func:`train_zs3net` (history keys ``"st_segmentation"``, ``"st_generator"``,
    ``"st_classifier"``).
    """
    seed = config.runtime.seed if seed is None else seed
    budget = baseline_budget(config)
    iterations = (budget.st_segmentation if segmentation_iterations is None else segmentation_iterations,
                  budget.st_generator if generator_iterations is None else generator_iterations,
                  budget.st_classifier if classifier_iterations is None else classifier_iterations)
    st_section = config.schedule("st")
    top_p = st_section.top_p if top_p is None else top_p
    if not 1 <= top_p <= model.config.num_outputs:
        raise ConfigError(f"schedules.st.top_p: {top_p} is outside 1..{model.config.num_outputs}")
    with torch_threads(config.runtime.num_threads):
        session = _Session(config, seed, device, progress, history)
        seed_everything(mix_seed(seed, 1))
        model = copy.deepcopy(model).to(session.device)
        _segmentation_phase(session, model, iterations[0], st_section, 3, "st_segmentation", top_p)
        teacher = copy.deepcopy(model.classifier).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        _generator_phase(session, model, iterations[1], config.schedule("st_mixed"), 4, "st_generator",
                         teacher, top_p)
        _classifier_phase(session, model, iterations[2], config.schedule("st_mixed"), 5, "st_classifier",
                          teacher, top_p)
        return model.eval()

