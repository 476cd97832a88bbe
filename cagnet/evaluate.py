"""Evaluation of a CaGNet model on a test split: generalised zero-shot segmentation scores.

Prediction: the classifier's logits on the full-scale real feature (latent = mu, eval
mode), argmax over the S + U class outputs only. The classifier's extra output (index
S + U, never a training target) is never predicted; the original's argmax included it, and
its confusion matrix then counted such a pixel in the wrong row (see :mod:`cagnet.metrics`).

Two protocols decide how predictions meet the ground truth:

``original``
    as the original evaluation: the test image is warped to the config's test size
    (513 x 513 for the original datasets) and the ground truth is nearest-resized
    (:func:`cagnet.data.resize_labels`) to the prediction grid (65 x 65 at 513); scores on
    that grid.
``full``
    the logits are upsampled bilinearly to each image's own size and scored against the
    full-resolution ground truth (the network input is the same as in ``original``).

Scores: :func:`cagnet.metrics.gzsl_scores` over the S + U classes (seen = 0..S-1,
unseen = S..S+U-1). With a process group initialised, each process scores a shard of the
images and the confusion matrices are summed.

Calibration (``seen_penalty``): a model trained on seen classes only scores them higher than
the unseen ones, so its GZSL predictions collapse onto seen classes. *Calibrated stacking*
(Chao et al., "An empirical study and analysis of generalized zero-shot learning for object
recognition in the wild", ECCV 2016), which SPNet-c uses (Xian et al., CVPR 2019), subtracts a
constant ``gamma`` from every seen-class logit before the argmax::

    prediction = argmax_k ( logit_k - gamma * [k is seen] ),   k in 0..S+U-1

A pixel turns from its best seen class to its best unseen class exactly when the gap
``max seen logit - max unseen logit`` is below ``gamma``. A negative ``gamma`` works the other
way: it boosts the seen classes and turns unseen predictions with a gap of at least ``gamma``
back to seen, for a model that gives too many pixels to unseen classes (CaGNet's finetuned
classifier does). The penalty is in logit units, so its useful range depends on the model;
:func:`penalty_grid` derives a grid on both sides of 0 from quantiles of that gap.
:func:`calibration_sweep` scores many penalties from one forward pass over a split with ground
truth for every class (an oracle curve on the test split, or the choice on a validation
split); :func:`held_out_calibration` selects a penalty from images whose unseen pixels are
*ignored* (a slice of the training split), which is how a method is calibrated without
unseen-class labels on a dataset without a validation split (see :mod:`cagnet.methods`). Both
report ``best_at_edge``: the best penalty is the smallest or largest one tried while a penalty
beyond it would still change predictions, i.e. the grid was too narrow to know the best.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cagnet.data.datasets import DatasetInfo, SegmentationDataset
from cagnet.data.transforms import IGNORE_INDEX, TestTransform, resize_labels
from cagnet.errors import ConfigError
from cagnet.metrics import ConfusionMatrix, harmonic_mean
from cagnet.runtime import autocast_context, flush_denormals

PROTOCOLS: tuple[str, ...] = ("original", "full")


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, amp: str = "none") -> torch.Tensor:
    """Class logits [N, S+U+1, h, w] (float32) of a batch of normalised images, eval mode."""
    was_training = model.training
    model.eval()
    try:
        with autocast_context(images.device, amp):
            logits = model(images)
    finally:
        model.train(was_training)
    return logits.float()


def calibrated_logits(logits: torch.Tensor, num_classes: int, *, seen_penalty: float = 0.0,
                      num_seen: int | None = None) -> torch.Tensor:
    """The first ``num_classes`` (= S + U) outputs of logits [N, >= S+U, ...], with
    ``seen_penalty`` subtracted from the first ``num_seen`` (= S) of them (calibrated stacking,
    see the module docstring; 0 leaves them as they are)."""
    logits = logits[:, :num_classes]
    if seen_penalty:
        if num_seen is None:
            raise ConfigError("predict_labels: seen_penalty needs num_seen (the number of seen classes)")
        if not math.isfinite(seen_penalty):
            raise ConfigError(f"seen_penalty must be a finite number, got {seen_penalty!r}")
        shift = torch.zeros(num_classes, dtype=logits.dtype, device=logits.device)
        shift[:num_seen] = seen_penalty
        logits = logits - shift.view(1, -1, *([1] * (logits.dim() - 2)))
    return logits


def images_with_unseen(dataset, num_seen: int, ignore_index: int = IGNORE_INDEX) -> list[int]:
    """Indices of the images of a scored split (evaluation labels) that show an unseen class
    (a label in ``num_seen`` .. ``ignore_index - 1``), in order: the images worth looking at
    for zero-shot predictions."""
    indices = []
    for index in range(len(dataset)):
        label = dataset[index]["label"]
        if ((label >= num_seen) & (label != ignore_index)).any():
            indices.append(index)
    return indices


def predict_labels(logits: torch.Tensor, num_classes: int, size: Sequence[int] | None = None, *,
                   seen_penalty: float = 0.0, num_seen: int | None = None) -> torch.Tensor:
    """Argmax over the first ``num_classes`` (= S + U) outputs, after a bilinear upsampling of
    the logits to ``size`` when given. LongTensor [N, h, w].

    ``seen_penalty`` (calibrated stacking, see the module docstring) is subtracted from the
    first ``num_seen`` (= S) outputs before the argmax; 0 leaves the logits as they are.
    """
    logits = calibrated_logits(logits, num_classes, seen_penalty=seen_penalty, num_seen=num_seen)
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


def _collate(samples: list[dict]) -> dict:
    """Images stacked when they share a size (else a list); labels always a list."""
    images = [s["image"] for s in samples]
    same = all(img.shape == images[0].shape for img in images)
    return {"image": torch.stack(images) if same else images, "label": [s["label"] for s in samples],
            "id": [s.get("id") for s in samples]}


def protocol_dataset(dataset: SegmentationDataset, protocol: str, test_size: int | None = None,
                     normalization: str | None = None, limit: int | None = None) -> SegmentationDataset:
    """The same test images with the transform a protocol needs (image warped to ``test_size``;
    the label warped too for ``original``, kept at full size for ``full``)."""
    if normalization is None:
        normalization = getattr(dataset.transform, "normalization", "caffe")
    transform = TestTransform(size=test_size, normalization=normalization, warp_label=(protocol == "original"))
    ids = dataset.ids if limit is None else dataset.ids[:limit]
    return SegmentationDataset(dataset.root, dataset.split, transform=transform, info=dataset.info, ids=ids)


def _shard(dataset: torch.utils.data.Dataset) -> torch.utils.data.Dataset:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return torch.utils.data.Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    return dataset


def _batches(loader: Iterable) -> Iterable[tuple[list[torch.Tensor] | torch.Tensor, list[torch.Tensor]]]:
    for batch in loader:
        if isinstance(batch, dict):
            images, labels = batch["image"], batch["label"]
        else:
            images, labels = batch[0], batch[1]
        if torch.is_tensor(labels):
            labels = list(labels)
        yield images, labels


def _resolve_info(data, info: DatasetInfo | None) -> DatasetInfo:
    if info is None:
        info = getattr(data, "info", None) or getattr(getattr(data, "dataset", None), "info", None)
        if info is None:
            raise ConfigError("evaluate: pass info= (the dataset's DatasetInfo) with this data source")
    return info


def _check_model(model: nn.Module, info: DatasetInfo) -> None:
    num_classes = info.num_seen + info.num_unseen
    outputs = getattr(getattr(model, "config", None), "num_outputs", None)
    if outputs is not None and outputs != num_classes + 1:
        raise ConfigError(f"evaluate: the model has {outputs} classifier outputs but the dataset has "
                          f"{info.num_seen} seen + {info.num_unseen} unseen classes (expected {num_classes + 1})")


def _scored_logits(model: nn.Module, data: SegmentationDataset | torch.utils.data.DataLoader,
                   info: DatasetInfo, protocol: str, *, test_size: int | None, limit: int | None,
                   batch_size: int, num_workers: int, device: torch.device, amp: str, progress: bool,
                   desc: str) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(logits [1, S+U+1, h, w], target) per image of this process's shard.

    ``original``: the target is the label nearest-resized to the logits' grid [h, w];
    ``full``: the full-size label [H, W] (predictions are upsampled to it).
    """
    flush_denormals()
    if isinstance(data, SegmentationDataset):
        dataset = protocol_dataset(data, protocol, test_size, limit=limit)
        loader = torch.utils.data.DataLoader(_shard(dataset), batch_size=batch_size, shuffle=False,
                                             num_workers=num_workers, collate_fn=_collate,
                                             generator=torch.Generator())
        total = math.ceil(len(loader.dataset) / batch_size)
    else:
        loader, total = data, None
    iterator = _batches(loader)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=total, desc=desc, leave=False)
    for images, labels in iterator:
        groups = [images] if torch.is_tensor(images) else [img[None] for img in images]
        logits = torch.cat([predict_logits(model, g.to(device), amp) for g in groups]) if len(groups) > 1 \
            else predict_logits(model, groups[0].to(device), amp)
        for k, label in enumerate(labels):
            label = label.to(torch.long)
            if protocol == "original":
                label = resize_labels(label, logits.shape[-2:])
            yield logits[k:k + 1], label.to(logits.device)


def _num_images(count: int, device: torch.device) -> int:
    counted = torch.tensor([count], dtype=torch.int64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counted)
    return int(counted.item())


def _model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def evaluate(model: nn.Module, data: SegmentationDataset | torch.utils.data.DataLoader,
             info: DatasetInfo | None = None, protocol: str = "original", *, test_size: int | None = None,
             limit: int | None = None, batch_size: int = 1, num_workers: int = 0,
             device: torch.device | str | None = None, amp: str = "none", progress: bool = False,
             seen_penalty: float = 0.0, return_confusion: bool = False) -> dict[str, Any]:
    """GZSL scores of ``model`` on a test split.

    Args:
        model: a :class:`cagnet.models.CaGNet` (or any module returning [N, S+U+1, h, w]
            logits; its mode is restored afterwards).
        data: a test :class:`SegmentationDataset` (re-wrapped with the protocol's transform,
            images warped to ``test_size``), or a DataLoader yielding ``{"image", "label"}``
            batches (used as is: its transform decides the input; labels are matched to the
            predictions as the protocol says).
        info: the dataset's classes (default: ``data.info``).
        protocol: ``original`` or ``full`` (module docstring).
        test_size: warp size of the test images (None = each image's own size).
        limit: score only the first ``limit`` images (a dataset only).
        device: where the model runs (default: where its parameters are).
        amp: ``none``, ``bf16`` or ``fp16`` autocast for the forward pass.
        seen_penalty: subtracted from the S seen-class logits before the argmax (calibrated
            stacking of Chao et al. 2016, as SPNet-c; module docstring). 0 = plain argmax.
        return_confusion: also return the pixel counts under ``confusion``: int64 [K, K+1]
            (rows: ground truth in evaluation order; the last column counts predictions outside
            the K classes), on the CPU.

    Returns:
        the scores of :func:`cagnet.metrics.gzsl_scores` (``miou``, ``seen_miou``,
        ``unseen_miou``, ``hiou``, ``pixel_acc``, ..., ``class_iou``, ``class_acc``) plus
        ``protocol``, ``num_images`` (scored by all processes), ``class_names`` (evaluation
        order), ``num_seen`` / ``num_unseen`` and ``seen_penalty``.
    """
    _check_protocol(protocol)
    info = _resolve_info(data, info)
    _check_model(model, info)
    num_classes = info.num_seen + info.num_unseen
    device = _model_device(model, device)
    seen_penalty = float(seen_penalty)

    # counts stay on the model's device (NCCL reduces device tensors only)
    confusion = ConfusionMatrix(num_classes, device=device)
    count = 0
    for logits, target in _scored_logits(model, data, info, protocol, test_size=test_size, limit=limit,
                                         batch_size=batch_size, num_workers=num_workers, device=device, amp=amp,
                                         progress=progress, desc=f"evaluate ({protocol})"):
        size = None if protocol == "original" else target.shape[-2:]
        prediction = predict_labels(logits, num_classes, size, seen_penalty=seen_penalty,
                                    num_seen=info.num_seen)[0]
        confusion.update(target, prediction)
        count += 1
    confusion.all_reduce()
    scores = confusion.scores(list(range(info.num_seen)), list(range(info.num_seen, num_classes)))
    scores.update({"protocol": protocol, "num_images": _num_images(count, device),
                   "class_names": info.eval_class_names, "num_seen": info.num_seen,
                   "num_unseen": info.num_unseen, "seen_penalty": seen_penalty})
    if return_confusion:
        scores["confusion"] = confusion.matrix.cpu()
    return scores


# ------------------------------------------------------------------------------ calibration
def seen_unseen_gap(logits: torch.Tensor, num_seen: int, num_classes: int) -> torch.Tensor:
    """``max seen logit - max unseen logit`` per pixel: [N, h, w] of logits [N, >= S+U, h, w].

    A seen penalty ``gamma`` turns a pixel's prediction unseen exactly when its gap is below
    ``gamma``.
    """
    return logits[:, :num_seen].amax(dim=1) - logits[:, num_seen:num_classes].amax(dim=1)


def penalty_grid(gaps: torch.Tensor, count: int = 41) -> list[float]:
    """Seen penalties spanning the model's logit scale on both sides of 0, from the ``gaps``
    (:func:`seen_unseen_gap` of the calibration pixels). Sorted, unique floats:

    * 0 (the plain argmax), once;
    * positive side: the quantiles at ``count`` evenly spaced levels of the positive gaps (the
      pixels predicted seen) and a value above the largest gap (every pixel unseen);
    * negative side: the quantiles at the same levels of the negative gaps (the pixels
      predicted unseen), down to the smallest gap (every pixel seen).

    Quantiles make the grid independent of the scale of a method's logits (SPNet's dot
    products and a trained classifier's logits differ by orders of magnitude) and symmetric in
    pixel shares: the penalty at level k / (count - 1) on either side moves about that share of
    the side's pixels to the other side, for every method. Both ends of the grid leave nothing
    to move.
    """
    if count < 2:
        raise ConfigError(f"penalty grid: count must be at least 2, got {count}")
    gaps = gaps.detach().reshape(-1).to(torch.float64).cpu()
    levels = torch.linspace(0.0, 1.0, count, dtype=torch.float64)
    values = {0.0}
    positive = gaps[gaps > 0]
    if positive.numel():
        values.update(float(v) for v in torch.quantile(positive, levels))
        top = float(positive.max())
        # a pixel turns unseen when its gap is *below* the penalty: one step above the largest gap
        values.add(top + max(abs(top) * 1e-3, 1e-6))
    negative = gaps[gaps < 0]
    if negative.numel():
        # at the smallest gap itself every pixel is seen already (gap >= penalty keeps it seen)
        values.update(float(v) for v in torch.quantile(negative, levels))
    return sorted(values)


def _best_at_edge(penalties: Sequence[float], best: int | None, unseen_share: Sequence[float]) -> bool:
    """Whether the best penalty is the smallest (or largest) one tried while some scored pixel is
    still predicted unseen (or seen) there, so that a penalty beyond it would change the
    predictions: the grid did not reach far enough to know the best. ``unseen_share``: share of
    the scored pixels predicted unseen at each penalty."""
    if best is None:
        return False
    value = penalties[best]
    return bool((value == min(penalties) and unseen_share[best] > 0)
                or (value == max(penalties) and unseen_share[best] < 1))


def _collect_logits(model, data, info, protocol, **options) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """All (logits, target) pairs of :func:`_scored_logits`, kept on the model's device."""
    logits_list, targets = [], []
    for logits, target in _scored_logits(model, data, info, protocol, **options):
        logits_list.append(logits)
        targets.append(target)
    return logits_list, targets


def _stacked(logits_list: list[torch.Tensor], targets: list[torch.Tensor]
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One (logits [N, ...], targets [N, ...]) batch when all shapes agree, else one per image."""
    if logits_list and all(lg.shape == logits_list[0].shape for lg in logits_list) \
            and all(t.shape == targets[0].shape for t in targets):
        return [(torch.cat(logits_list), torch.stack(targets))]
    return [(lg, t[None]) for lg, t in zip(logits_list, targets)]


def _finite_penalties(penalties: Iterable[float], what: str, allow_empty: bool = False) -> list[float]:
    values = [float(p) for p in penalties]
    if (not values and not allow_empty) or not all(math.isfinite(p) for p in values):
        raise ConfigError(f"{what} must be a {'' if allow_empty else 'non-empty '}list of finite numbers, "
                          f"got {values!r}")
    return values


def _grid_from(logits_list: list[torch.Tensor], info: DatasetInfo, penalties, count: int,
               include: Sequence[float] = ()) -> list[float]:
    """The penalties to score: ``penalties`` as given, or :func:`penalty_grid` of the logits'
    gaps with the ``include`` values merged in (sorted, unique)."""
    extra = _finite_penalties(include, "include", allow_empty=True)
    if penalties is not None:
        values = _finite_penalties(penalties, "penalties")
        return values + [p for p in dict.fromkeys(extra) if p not in values]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ConfigError("calibration with several processes needs explicit penalties (the grid of one "
                          "process's images would differ between processes)")
    num_classes = info.num_seen + info.num_unseen
    gaps = [seen_unseen_gap(lg, info.num_seen, num_classes) for lg in logits_list]
    grid = penalty_grid(torch.cat([g.reshape(-1) for g in gaps]) if gaps else torch.zeros(0), count)
    return sorted(set(grid).union(extra))


def _best_index(values: list[float]) -> int | None:
    """Index of the largest non-NaN value (the first, i.e. smallest penalty, on ties)."""
    best = None
    for index, value in enumerate(values):
        if not math.isnan(value) and (best is None or value > values[best]):
            best = index
    return best


def calibration_sweep(model: nn.Module, data: SegmentationDataset | torch.utils.data.DataLoader,
                      info: DatasetInfo | None = None, penalties: Sequence[float] | None = None,
                      protocol: str = "original", *, test_size: int | None = None, limit: int | None = None,
                      batch_size: int = 1, num_workers: int = 0, device: torch.device | str | None = None,
                      amp: str = "none", grid_size: int = 41, include: Sequence[float] = (),
                      return_confusion: bool = False, progress: bool = False) -> dict[str, Any]:
    """GZSL scores of many seen penalties from ONE forward pass over ``data``.

    The logits of every image are computed once (as :func:`evaluate` does, same arguments)
    and each penalty's predictions are scored from them, so for every penalty the scores are
    those of ``evaluate(..., seen_penalty=penalty)``. ``data`` needs ground truth of every
    class: on a validation split the best penalty is a legitimate choice; on the test split
    this is the *oracle* calibration curve, which uses unseen-class labels and therefore cannot
    select a zero-shot model's penalty.

    Args:
        penalties: the penalties to score (logit units, any sign); None = :func:`penalty_grid`
            (both signs) with ``grid_size`` levels of the gaps of all scored pixels.
        include: penalties scored as well (e.g. one chosen on another split, so that its test
            scores come from the same forward pass); merged into the grid, or appended to
            ``penalties``.
        return_confusion: each score dict also holds ``confusion`` (as :func:`evaluate`'s).
        the others: as :func:`evaluate`.

    Returns:
        ``penalties`` (list), per penalty ``seen_miou``, ``unseen_miou``, ``hiou``, ``miou``,
        ``unseen_share`` (share of the scored pixels predicted as an unseen class; lists
        aligned with ``penalties``) and ``scores`` (the full score dicts);
        ``best_index`` / ``best_penalty`` / ``best`` (the penalty with the highest hIoU, the
        smallest on ties; penalty 0 and ``best`` None when no hIoU is defined),
        ``best_at_edge`` (module docstring), ``protocol``, ``num_images``.
    """
    _check_protocol(protocol)
    info = _resolve_info(data, info)
    _check_model(model, info)
    num_classes = info.num_seen + info.num_unseen
    device = _model_device(model, device)
    logits_list, targets = _collect_logits(model, data, info, protocol, test_size=test_size, limit=limit,
                                           batch_size=batch_size, num_workers=num_workers, device=device,
                                           amp=amp, progress=progress, desc=f"calibration ({protocol})")
    grid = _grid_from(logits_list, info, penalties, grid_size, include)
    num_images = _num_images(len(logits_list), device)
    batches = _stacked(logits_list, targets)
    seen, unseen = list(range(info.num_seen)), list(range(info.num_seen, num_classes))
    all_scores, unseen_share = [], []
    for penalty in grid:
        confusion = ConfusionMatrix(num_classes, device=device)
        for logits, target in batches:
            size = None if protocol == "original" else target.shape[-2:]
            confusion.update(target, predict_labels(logits, num_classes, size, seen_penalty=penalty,
                                                    num_seen=info.num_seen))
        confusion.all_reduce()
        scores = confusion.scores(seen, unseen)
        scores.update({"protocol": protocol, "num_images": num_images, "class_names": info.eval_class_names,
                       "num_seen": info.num_seen, "num_unseen": info.num_unseen, "seen_penalty": penalty})
        counts = confusion.matrix.sum(dim=0)   # predictions per class over the scored pixels
        scored = int(counts.sum())
        unseen_share.append(int(counts[info.num_seen:num_classes].sum()) / scored if scored else math.nan)
        if return_confusion:
            scores["confusion"] = confusion.matrix.cpu()
        all_scores.append(scores)
    result: dict[str, Any] = {"penalties": grid, "protocol": protocol, "num_images": num_images, "scores": all_scores,
                              "unseen_share": unseen_share}
    for key in ("seen_miou", "unseen_miou", "hiou", "miou"):
        result[key] = [s[key] for s in all_scores]
    best = _best_index(result["hiou"])
    result["best_index"] = best
    result["best_penalty"] = grid[best] if best is not None else 0.0
    result["best"] = all_scores[best] if best is not None else None
    result["best_at_edge"] = _best_at_edge(grid, best, unseen_share)
    return result


def held_out_calibration(model: nn.Module, data: SegmentationDataset | torch.utils.data.DataLoader,
                         info: DatasetInfo | None = None, penalties: Sequence[float] | None = None, *,
                         test_size: int | None = None, limit: int | None = None, batch_size: int = 1,
                         num_workers: int = 0, device: torch.device | str | None = None, amp: str = "none",
                         grid_size: int = 41, ignore_index: int = IGNORE_INDEX, progress: bool = False) -> dict[str, Any]:
    """Select a seen penalty on images whose unseen pixels are ignored (no unseen-class labels).

    ``data`` holds labels in training form: seen classes 0..S-1, everything else
    ``ignore_index`` (a :class:`SegmentationDataset` of the ``train`` split maps unseen
    pixels so). On the prediction grid (``original`` protocol) and for each penalty of the
    two-sided grid (:func:`penalty_grid` of these images' gaps, or ``penalties``):

    * ``seen_acc``: share of the labelled (seen) pixels predicted as their class;
    * ``unseen_rate``: share of the ignored pixels predicted as *some* unseen class;
    * ``balance``: their harmonic mean; the selected penalty maximises it (the smallest
      on ties; 0 when no penalty has a defined balance, e.g. images without ignored pixels).

    The two rates play the roles of the seen and unseen terms of hIoU, and both are measured
    on either side of 0: a positive penalty trades seen accuracy for unseen rate, a negative
    one the other way. So a negative penalty is selected when the model gives so many labelled
    seen pixels to unseen classes that boosting the seen classes gains more seen accuracy than
    it loses unseen rate. Only the knowledge that an ignored pixel is not of a seen class is
    used - the assumption self-training makes too - never which unseen class it is. That makes
    ``unseen_rate`` an upper bound of the unseen pixels' accuracy, and where ignored pixels also
    include unlabelled stuff (e.g. Pascal-VOC's borders) it over-rewards unseen predictions
    further: the selected penalty leans larger (less negative) than the hIoU-optimal one.

    Returns:
        ``penalties``, ``seen_acc``, ``unseen_rate``, ``balance``, ``unseen_share`` (share of
        all the images' labelled and ignored pixels predicted unseen; lists aligned with
        ``penalties``), ``best_index``, ``best_penalty``, ``best_at_edge`` (module docstring),
        ``num_images``, ``num_labelled``, ``num_ignored`` (pixels on the prediction grids).
    """
    info = _resolve_info(data, info)
    _check_model(model, info)
    num_classes = info.num_seen + info.num_unseen
    device = _model_device(model, device)
    logits_list, targets = _collect_logits(model, data, info, "original", test_size=test_size, limit=limit,
                                           batch_size=batch_size, num_workers=num_workers, device=device,
                                           amp=amp, progress=progress, desc="calibration (held out)")
    grid = _grid_from(logits_list, info, penalties, grid_size)
    batches = _stacked(logits_list, targets)
    # per penalty: correct, labelled, ignored predicted unseen, ignored, labelled predicted unseen
    counts = torch.zeros(len(grid), 5, dtype=torch.int64, device=device)
    for index, penalty in enumerate(grid):
        for logits, target in batches:
            prediction = predict_labels(logits, num_classes, seen_penalty=penalty, num_seen=info.num_seen)
            labelled = (target >= 0) & (target < info.num_seen)
            ignored = target == ignore_index
            predicted_unseen = prediction >= info.num_seen
            counts[index, 0] += ((prediction == target) & labelled).sum()
            counts[index, 1] += labelled.sum()
            counts[index, 2] += (predicted_unseen & ignored).sum()
            counts[index, 3] += ignored.sum()
            counts[index, 4] += (predicted_unseen & labelled).sum()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts)
    counts = counts.cpu().tolist()
    seen_acc = [c[0] / c[1] if c[1] else math.nan for c in counts]
    unseen_rate = [c[2] / c[3] if c[3] else math.nan for c in counts]
    unseen_share = [(c[2] + c[4]) / (c[1] + c[3]) if c[1] + c[3] else math.nan for c in counts]
    balance = [harmonic_mean(a, b) for a, b in zip(seen_acc, unseen_rate)]
    best = _best_index(balance)
    return {"penalties": grid, "seen_acc": seen_acc, "unseen_rate": unseen_rate, "balance": balance,
            "unseen_share": unseen_share, "best_index": best, "best_penalty": grid[best] if best is not None else 0.0,
            "best_at_edge": _best_at_edge(grid, best, unseen_share),
            "num_images": _num_images(len(logits_list), device),
            "num_labelled": counts[0][1] if counts else 0, "num_ignored": counts[0][3] if counts else 0}


def load_model(config, checkpoint: str, progress: bool = False):
    """The config's model with ``checkpoint`` loaded, ready for inference: ``(model, info,
    report, device)``.

    Builds the model for the config's dataset (classes and embeddings from
    :func:`cagnet.train.loading.prepare_dataset`), loads ``checkpoint`` with
    :func:`cagnet.models.load_checkpoint` (any layout it reads: a run's ``checkpoint.pt``, an
    original-layout ``.pth``, ...), checks that the weights were trained on the config's input
    normalisation (:func:`cagnet.models.check_input_normalization`) and moves the model to
    ``runtime.device``. ``evaluate`` and ``predict`` load their models through here.
    """
    from cagnet.models import check_input_normalization, load_checkpoint
    from cagnet.train.distributed import resolve_device
    from cagnet.train.loading import build_model, prepare_dataset

    info = prepare_dataset(config, progress=progress)
    model = build_model(config, info)
    report = load_checkpoint(model, checkpoint)
    check_input_normalization(report, config.data.normalization)
    device = resolve_device(config.runtime.device)
    if config.runtime.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"runtime.amp: fp16 needs a CUDA device (running on {device.type}); use bf16 or none")
    model.to(device)
    model.eval()
    return model, info, report, device


def evaluate_checkpoint(config, checkpoint: str, protocol: str = "original", progress: bool = False,
                        split: str = "test") -> dict[str, Any]:
    """Build the config's model, load ``checkpoint`` (:func:`load_model`) and evaluate it on the
    config's ``split`` (``test`` or ``validation``). Returns the scores plus ``checkpoint``,
    ``split`` and ``load_report``."""
    from cagnet.train.loading import evaluation_dataset

    _check_protocol(protocol)
    model, info, report, device = load_model(config, checkpoint, progress=progress)
    dataset = evaluation_dataset(config, info, split, warp_label=(protocol == "original"))
    scores = evaluate(model, dataset, info, protocol, test_size=config.data.test_size,
                      batch_size=config.data.test_batch_size, num_workers=config.data.num_workers,
                      device=device, amp=config.runtime.amp, progress=progress)
    scores["checkpoint"] = str(checkpoint)
    scores["split"] = split
    scores["load_report"] = str(report)
    return scores
