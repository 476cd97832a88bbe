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
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cagnet.data.datasets import DatasetInfo, SegmentationDataset
from cagnet.data.transforms import TestTransform, resize_labels
from cagnet.errors import ConfigError
from cagnet.metrics import ConfusionMatrix

PROTOCOLS: tuple[str, ...] = ("original", "full")


def _autocast(device: torch.device, amp: str):
    from cagnet.train.steps import autocast_context

    return autocast_context(device, amp)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, amp: str = "none") -> torch.Tensor:
    """Class logits [N, S+U+1, h, w] (float32) of a batch of normalised images, eval mode."""
    was_training = model.training
    model.eval()
    try:
        with _autocast(images.device, amp):
            logits = model(images)
    finally:
        model.train(was_training)
    return logits.float()


def predict_labels(logits: torch.Tensor, num_classes: int, size: Sequence[int] | None = None) -> torch.Tensor:
    """Argmax over the first ``num_classes`` (= S + U) outputs, after a bilinear upsampling of
    the logits to ``size`` when given. LongTensor [N, h, w]."""
    logits = logits[:, :num_classes]
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


def evaluate(model: nn.Module, data: SegmentationDataset | torch.utils.data.DataLoader,
             info: DatasetInfo | None = None, protocol: str = "original", *, test_size: int | None = None,
             limit: int | None = None, batch_size: int = 1, num_workers: int = 0,
             device: torch.device | str | None = None, amp: str = "none", progress: bool = False
             ) -> dict[str, Any]:
    """GZSL scores of ``model`` on a test split.

    Args:
        model: a :class:`cagnet.models.CaGNet` (its mode is restored afterwards).
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

    Returns:
        the scores of :func:`cagnet.metrics.gzsl_scores` (``miou``, ``seen_miou``,
        ``unseen_miou``, ``hiou``, ``pixel_acc``, ..., ``class_iou``, ``class_acc``) plus
        ``protocol``, ``num_images`` (scored by all processes), ``class_names`` (evaluation
        order) and ``num_seen`` / ``num_unseen``.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if info is None:
        info = getattr(data, "info", None) or getattr(getattr(data, "dataset", None), "info", None)
        if info is None:
            raise ConfigError("evaluate: pass info= (the dataset's DatasetInfo) with this data source")
    num_classes = info.num_seen + info.num_unseen
    outputs = getattr(getattr(model, "config", None), "num_outputs", None)
    if outputs is not None and outputs != num_classes + 1:
        raise ConfigError(f"evaluate: the model has {outputs} classifier outputs but the dataset has "
                          f"{info.num_seen} seen + {info.num_unseen} unseen classes (expected {num_classes + 1})")
    device = torch.device(device) if device is not None else next(model.parameters()).device

    if isinstance(data, SegmentationDataset):
        dataset = protocol_dataset(data, protocol, test_size, limit=limit)
        loader = torch.utils.data.DataLoader(_shard(dataset), batch_size=batch_size, shuffle=False,
                                             num_workers=num_workers, collate_fn=_collate,
                                             generator=torch.Generator())
        total = math.ceil(len(loader.dataset) / batch_size)
    else:
        loader, total = data, None

    # counts stay on the model's device (NCCL reduces device tensors only)
    confusion = ConfusionMatrix(num_classes, device=device)
    count = 0
    iterator = _batches(loader)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=total, desc=f"evaluate ({protocol})", leave=False)
    for images, labels in iterator:
        groups = [images] if torch.is_tensor(images) else [img[None] for img in images]
        logits = torch.cat([predict_logits(model, g.to(device), amp) for g in groups]) if len(groups) > 1 \
            else predict_logits(model, groups[0].to(device), amp)
        for k, label in enumerate(labels):
            label = label.to(torch.long)
            if protocol == "original":
                prediction = predict_labels(logits[k:k + 1], num_classes)[0]
                target = resize_labels(label, prediction.shape)
            else:
                target = label
                prediction = predict_labels(logits[k:k + 1], num_classes, label.shape[-2:])[0]
            confusion.update(target.to(prediction.device), prediction)
            count += 1
    confusion.all_reduce()
    counted = torch.tensor([count], dtype=torch.int64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counted)
    scores = confusion.scores(list(range(info.num_seen)), list(range(info.num_seen, num_classes)))
    scores.update({"protocol": protocol, "num_images": int(counted.item()), "class_names": info.eval_class_names,
                   "num_seen": info.num_seen, "num_unseen": info.num_unseen})
    return scores


def evaluate_checkpoint(config, checkpoint: str, protocol: str = "original", progress: bool = False
                        ) -> dict[str, Any]:
    """Build the config's model, load ``checkpoint`` (any layout :func:`cagnet.models.load_checkpoint`
    reads) and evaluate it on the config's test split. Returns the scores plus ``checkpoint``
    and ``load_report``."""
    from cagnet.models import build_cagnet, load_checkpoint
    from cagnet.train.data import class_embedding_table, prepare_dataset, test_dataset
    from cagnet.train.distributed import resolve_device

    info = prepare_dataset(config, progress=progress)
    table = class_embedding_table(config, info)
    model = build_cagnet(config.model, class_embeddings=table, num_seen=info.num_seen, num_unseen=info.num_unseen)
    report = load_checkpoint(model, checkpoint)
    device = resolve_device(config.runtime.device)
    if config.runtime.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"runtime.amp: fp16 needs a CUDA device (running on {device.type}); use bf16 or none")
    model.to(device)
    dataset = test_dataset(config, info, warp_label=(protocol == "original"))
    scores = evaluate(model, dataset, info, protocol, test_size=config.data.test_size,
                      batch_size=config.data.test_batch_size, num_workers=config.data.num_workers,
                      device=device, amp=config.runtime.amp, progress=progress)
    scores["checkpoint"] = str(checkpoint)
    scores["load_report"] = str(report)
    return scores
