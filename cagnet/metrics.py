"""Segmentation scores for generalized zero-shot (GZSL) evaluation.

Pipeline: label maps -> :func:`confusion_matrix` (or the streaming :class:`ConfusionMatrix`
over an evaluation loop) -> :func:`gzsl_scores` -> :func:`format_scores` for logs;
:func:`per_image_iou` scores one image.

Confusion matrix layout
-----------------------
For ``K`` evaluated classes the matrix ``C`` is a ``torch.int64`` tensor of shape ``[K, K + 1]``:

* ``C[i, j]`` (``j < K``) counts pixels whose ground truth is ``i`` and prediction is ``j``
  (rows = ground truth, columns = prediction);
* ``C[i, K]`` (the "other" column) counts pixels of ground truth ``i`` predicted as anything
  outside ``[0, K)``, e.g. the classifier's extra output ``S + U`` that is never a target.

Such a prediction is a miss for its row: it is part of the row total ``t_i`` but credits no
class, so it lowers class ``i``'s accuracy and IoU and changes no other class.

Difference from the original: its matrix had only ``K`` columns and was indexed by the flat
position ``K * target + prediction``, so a prediction ``K`` for ground truth ``i`` was counted
as ground truth ``i + 1`` predicted as class ``0`` (and for ``i = K - 1`` the histogram could
not even be reshaped). That silently removed the miss from row ``i`` (inflating class ``i``'s
accuracy and IoU), added a pixel to row ``i + 1`` and a false positive to class ``0``. When all
predictions lie in ``[0, K)`` the "other" column is zero and every score equals the original's.

Score definitions
-----------------
With ``n_ij = C[i, j]`` for ``j < K``, the row total ``t_i = sum_{j <= K} C[i, j]`` (all
labelled pixels of class ``i``), the column total ``p_j = sum_i n_ij`` (pixels predicted ``j``),
``N = sum_i t_i``, and a class subset ``A`` (all classes, the seen classes ``S`` or the unseen
classes ``U``):

* pixel accuracy   ``pixel_acc(A) = sum_{i in A} n_ii / sum_{i in A} t_i``
  (pixels whose ground truth is in ``A``; a prediction of any other class is a miss);
* class accuracy   ``acc_i = n_ii / t_i``, NaN when ``t_i = 0``;
  ``mean_acc(A) = mean of acc_i over i in A with t_i > 0``;
* class IoU        ``iou_i = n_ii / (t_i + p_i - n_ii)``, NaN when the class is absent from both
  ground truth and prediction; ``miou(A) = mean of iou_i over i in A where iou_i is defined``;
* frequency-weighted IoU ``fwiou(A) = sum_{i in A, t_i > 0} (t_i / N) * iou_i``. The weights
  use the total ``N`` of all classes, not of ``A`` (as in the original), so with ``S`` and
  ``U`` partitioning the classes ``fwiou(S) + fwiou(U) = fwiou(all)``;
* harmonic mean    ``H(a, b) = 2ab / (a + b)``, ``0`` when ``a + b = 0``, NaN when ``a`` or
  ``b`` is NaN. ``hiou = H(miou(S), miou(U))``.

A ratio with an empty denominator (no labelled pixel at all, no pixel of ``A``, no class of
``A`` present) is NaN.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.errors import MetricError

__all__ = [
    "MetricError",
    "ORIGINAL_SCORE_NAMES",
    "ConfusionMatrix",
    "confusion_matrix",
    "gzsl_scores",
    "harmonic_mean",
    "format_scores",
    "per_image_iou",
]


#: Score names printed by the original evaluation -> keys of :func:`gzsl_scores`.
ORIGINAL_SCORE_NAMES: dict[str, str] = {
    "Overall Acc": "pixel_acc",
    "Overall Acc Seen": "seen_pixel_acc",
    "Overall Acc Unseen": "unseen_pixel_acc",
    "Overall Acc Harmonic": "harmonic_pixel_acc",
    "Mean Acc": "mean_acc",
    "Mean Acc Seen": "seen_mean_acc",
    "Mean Acc Unseen": "unseen_mean_acc",
    "Mean Acc Harmonic": "harmonic_mean_acc",
    "FreqW Acc": "fwiou",
    "FreqW Acc Seen": "seen_fwiou",
    "FreqW Acc Unseen": "unseen_fwiou",
    "FreqW Acc Harmonic": "harmonic_fwiou",
    "Mean IoU": "miou",
    "Mean IoU Seen": "seen_miou",
    "Mean IoU Unseen": "unseen_miou",
    "Mean IoU Harmonic": "hiou",
}


def _check_label_maps(target: torch.Tensor, pred: torch.Tensor) -> None:
    for name, labels in (("target", target), ("pred", pred)):
        if not isinstance(labels, torch.Tensor):
            raise MetricError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise MetricError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if target.shape != pred.shape:
        raise MetricError(f"target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")
    if target.device != pred.device:
        raise MetricError(f"target is on {target.device} but pred is on {pred.device}")


def _check_num_classes(num_classes: int) -> int:
    try:
        num_classes = operator.index(num_classes)
    except TypeError:
        raise MetricError(f"num_classes must be an int, got {num_classes!r}") from None
    if num_classes < 1:
        raise MetricError(f"num_classes must be >= 1, got {num_classes}")
    return num_classes


def confusion_matrix(target: torch.Tensor, pred: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Confusion counts of one or more label maps.

    Args:
        target: integer ground truth of any shape, e.g. [N, H, W].
        pred: integer predictions, same shape and device as ``target``.
        num_classes: ``K``, the number of evaluated classes ``0..K-1``.
        ignore_index: ground-truth value of unlabelled pixels.

    Returns:
        ``torch.int64`` [K, K + 1] on the device of the inputs: ``C[i, j]`` = pixels with ground
        truth ``i`` and prediction ``j``; the last column ``C[i, K]`` counts predictions outside
        ``[0, K)`` (misses of class ``i`` that credit no class). Pixels whose ground truth is
        ``ignore_index`` or outside ``[0, K)`` are not counted.

    The counting is a fixed-length histogram of the flat bin ``(K + 1) * target + column``,
    made with ``scatter_add_`` rather than ``torch.bincount``: the output length is static, so
    there is no device-to-host synchronisation on CUDA, it is deterministic, and it also runs
    on the meta device. Skipped pixels go to one extra bin that is dropped.
    """
    _check_label_maps(target, pred)
    num_classes = _check_num_classes(num_classes)
    num_columns = num_classes + 1
    num_bins = num_classes * num_columns
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    counted = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        counted &= target != ignore_index
    # Out-of-range predictions land in the "other" column K of their ground-truth row.
    column = torch.where((pred >= 0) & (pred < num_classes), pred, torch.full_like(pred, num_classes))
    flat_bin = torch.where(counted, target * num_columns + column, torch.full_like(target, num_bins))
    histogram = torch.zeros(num_bins + 1, dtype=torch.int64, device=target.device)
    histogram.scatter_add_(0, flat_bin, torch.ones_like(flat_bin))
    return histogram[:num_bins].reshape(num_classes, num_columns)


class ConfusionMatrix:
    """Streaming confusion matrix for evaluation loops.

    ``update(target, pred)`` adds the counts of a batch (see :func:`confusion_matrix`);
    ``matrix`` is the running ``torch.int64`` [K, K + 1] total; ``all_reduce()`` sums it over
    the processes of ``torch.distributed``; ``scores(seen, unseen)`` returns
    :func:`gzsl_scores` of the total.

    With ``device=None`` the matrix moves to the device of the first batch so the counts stay
    where the predictions are (no per-batch copy to the host).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: torch.device | str | None = None) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = ignore_index
        self._follow_first_batch = device is None
        self.matrix = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64,
                                  device=device if device is not None else "cpu")

    def reset(self) -> None:
        """Zero the counts (the device is kept)."""
        self.matrix.zero_()

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        """Add the counts of one batch of label maps (any shape, same shape for both)."""
        counts = confusion_matrix(target, pred, self.num_classes, self.ignore_index)
        if self._follow_first_batch:
            self.matrix = self.matrix.to(counts.device)
            self._follow_first_batch = False
        self.matrix += counts.to(self.matrix.device)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the counts over all processes in place; a no-op without an initialised group."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def scores(self, seen: Sequence[int], unseen: Sequence[int]) -> dict[str, Any]:
        """:func:`gzsl_scores` of the accumulated counts."""
        return gzsl_scores(self.matrix, seen, unseen)


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)``; ``0`` when ``a + b = 0``; NaN when ``a`` or ``b`` is NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a + b == 0:
        return 0.0
    return 2.0 * a * b / (a + b)


def _class_indices(classes: Sequence[int], num_classes: int, name: str) -> list[int]:
    indices = []
    for value in classes:
        try:
            index = operator.index(value)
        except TypeError:
            raise MetricError(f"{name} classes must be integers, got {value!r}") from None
        if not 0 <= index < num_classes:
            raise MetricError(f"{name} class {index} is outside [0, {num_classes})")
        indices.append(index)
    if len(set(indices)) != len(indices):
        raise MetricError(f"{name} classes contain duplicates: {indices}")
    return indices


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    return float(numerator / denominator) if float(denominator) > 0 else math.nan


def _nanmean(values: torch.Tensor) -> float:
    defined = values[~values.isnan()]
    return float(defined.mean()) if defined.numel() else math.nan


def _checked_counts(confusion) -> torch.Tensor:
    """A [K, K + 1] or [K, K] confusion matrix as float64 counts on the CPU; MetricError otherwise."""
    if not isinstance(confusion, torch.Tensor):
        confusion = torch.as_tensor(confusion)
    if confusion.dim() != 2 or confusion.shape[0] < 1 or confusion.shape[1] not in (confusion.shape[0], confusion.shape[0] + 1):
        raise MetricError(f"confusion matrix must have shape [K, K + 1] or [K, K], got {list(confusion.shape)}")
    if confusion.is_complex() or confusion.dtype == torch.bool:
        raise MetricError(f"confusion matrix must hold counts, got dtype {confusion.dtype}")
    counts = confusion.detach().to(device="cpu", dtype=torch.float64)
    if bool((counts < 0).any()) or bool(counts.isnan().any()):
        raise MetricError("confusion matrix has negative or NaN counts")
    return counts


def gzsl_scores(confusion: torch.Tensor, seen: Sequence[int], unseen: Sequence[int]) -> dict[str, Any]:
    """Every GZSL score of a confusion matrix (definitions in the module docstring).

    Args:
        confusion: [K, K + 1] counts from :func:`confusion_matrix` / :class:`ConfusionMatrix`
            (last column = predictions outside the evaluated classes), or a plain [K, K]
            matrix (rows = ground truth). Any device; any real dtype.
        seen: indices of the seen classes in ``0..K-1``.
        unseen: indices of the unseen classes in ``0..K-1`` (disjoint from ``seen``).

    Returns:
        Fractions in [0, 1] as Python floats under the keys of :data:`ORIGINAL_SCORE_NAMES`
        (``pixel_acc``, ``seen_pixel_acc``, ``unseen_pixel_acc``, ``harmonic_pixel_acc``,
        ``mean_acc``, ``seen_mean_acc``, ... , ``miou``, ``seen_miou``, ``unseen_miou``,
        ``hiou``), plus ``class_iou`` and ``class_acc``: lists of K floats, NaN for classes
        where the ratio is undefined.
    """
    counts = _checked_counts(confusion)
    num_classes = counts.shape[0]
    seen = _class_indices(seen, num_classes, "seen")
    unseen = _class_indices(unseen, num_classes, "unseen")
    shared = sorted(set(seen) & set(unseen))
    if shared:
        raise MetricError(f"classes {shared} are both seen and unseen")

    true_positive = counts[:, :num_classes].diagonal()
    row_total = counts.sum(dim=1)
    column_total = counts[:, :num_classes].sum(dim=0)
    num_pixels = row_total.sum()
    nan = torch.full_like(true_positive, math.nan)
    class_acc = torch.where(row_total > 0, true_positive / torch.where(row_total > 0, row_total, 1.0), nan)
    union = row_total + column_total - true_positive
    class_iou = torch.where(union > 0, true_positive / torch.where(union > 0, union, 1.0), nan)
    frequency = row_total / num_pixels if float(num_pixels) > 0 else torch.zeros_like(row_total)
    # Classes without ground-truth pixels have weight 0 (and possibly an undefined IoU).
    weighted_iou = torch.where(row_total > 0, frequency * class_iou, torch.zeros_like(class_iou))

    def subset_scores(classes: list[int]) -> tuple[float, float, float, float]:
        index = torch.tensor(classes, dtype=torch.long)
        pixel_acc = _ratio(true_positive[index].sum(), row_total[index].sum())
        fwiou = float(weighted_iou[index].sum()) if float(num_pixels) > 0 else math.nan
        return pixel_acc, _nanmean(class_acc[index]), fwiou, _nanmean(class_iou[index])

    everything = subset_scores(list(range(num_classes)))
    seen_part = subset_scores(seen)
    unseen_part = subset_scores(unseen)
    scores: dict[str, Any] = {}
    for position, name in enumerate(("pixel_acc", "mean_acc", "fwiou", "miou")):
        harmonic_name = "hiou" if name == "miou" else f"harmonic_{name}"
        scores[name] = everything[position]
        scores[f"seen_{name}"] = seen_part[position]
        scores[f"unseen_{name}"] = unseen_part[position]
        scores[harmonic_name] = harmonic_mean(seen_part[position], unseen_part[position])
    scores["class_iou"] = class_iou.tolist()
    scores["class_acc"] = class_acc.tolist()
    return scores


def seen_unseen_confusion(confusion: torch.Tensor, seen: Sequence[int], unseen: Sequence[int]) -> dict[str, float]:
    """Where the seen / unseen boundary costs a GZSL score (fractions in [0, 1]).

    ``unseen_as_seen``: share of the unseen classes' pixels predicted as a seen class;
    ``seen_as_unseen``: share of the seen classes' pixels predicted as an unseen class;
    ``seen_miou_without_unseen_pixels``: the seen mIoU of the same predictions with the
    unseen classes' pixels left out, i.e. without the false positives they cause in seen
    classes (the seen mIoU a segmenter of the seen classes alone would get on these images).
    ``confusion``: [K, K + 1] or [K, K] counts as for :func:`gzsl_scores`.
    """
    counts = _checked_counts(confusion)
    num_classes = counts.shape[0]
    seen_index = torch.tensor(_class_indices(seen, num_classes, "seen"), dtype=torch.long)
    unseen_index = torch.tensor(_class_indices(unseen, num_classes, "unseen"), dtype=torch.long)
    seen_rows, unseen_rows = counts[seen_index], counts[unseen_index]
    without_unseen = counts.clone()
    without_unseen[unseen_index] = 0
    return {"unseen_as_seen": _ratio(unseen_rows[:, seen_index].sum(), unseen_rows.sum()),
            "seen_as_unseen": _ratio(seen_rows[:, unseen_index].sum(), seen_rows.sum()),
            "seen_miou_without_unseen_pixels": gzsl_scores(without_unseen, seen, unseen)["seen_miou"]}


_TABLE_ROWS = (("pixel acc", "pixel_acc"), ("mean acc", "mean_acc"), ("fw IoU", "fwiou"), ("mean IoU", "miou"))


def _int64_labels(values) -> torch.Tensor:
    """int64 CPU tensor of a label map: an array-like or a (CPU or device) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return torch.as_tensor(np.asarray(values).astype(np.int64))


def per_image_iou(label: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX,
                  num_seen: int | None = None) -> dict:
    """IoU of each class on one image, from :func:`gzsl_scores` of its confusion.

    ``label`` / ``prediction``: [H, W] evaluation indices (``ignore_index`` pixels of the label
    are not counted). Returns a dict with ``class_iou`` (float64 [num_classes], NaN for a class
    absent from both the labelled ground truth and the prediction), ``classes`` (the ids whose
    IoU is defined) and ``miou`` (their mean); with ``num_seen`` also ``seen_miou``,
    ``unseen_miou`` and ``hiou`` (classes ``num_seen..num_classes-1`` are unseen). Fractions.
    """
    target, predicted = _int64_labels(label), _int64_labels(prediction)
    confusion = confusion_matrix(target, predicted, num_classes, ignore_index)
    split = num_classes if num_seen is None else num_seen
    scores = gzsl_scores(confusion, list(range(split)), list(range(split, num_classes)))
    class_iou = np.asarray(scores["class_iou"], dtype=np.float64)
    result = {"class_iou": class_iou, "classes": [int(i) for i in np.flatnonzero(~np.isnan(class_iou))],
              "miou": scores["miou"]}
    if num_seen is not None:
        result.update({key: scores[key] for key in ("seen_miou", "unseen_miou", "hiou")})
    return result


def _percent(scores: Mapping[str, Any], key: str) -> str:
    value = scores.get(key)
    if value is None:
        return "n/a"
    value = float(value)
    return "nan" if math.isnan(value) else f"{100.0 * value:.2f}"


def format_scores(scores: Mapping[str, Any], style: str = "line") -> str:
    """Scores of :func:`gzsl_scores` as percentages with 2 decimals, for logs.

    ``style="line"``: one line with the headline numbers, e.g.
    ``mIoU 44.46 (seen 45.88, unseen 40.21) hIoU 42.86 | pixel acc 61.50 | mean acc 61.43``.
    ``style="table"``: rows pixel acc / mean acc / fw IoU / mean IoU, columns all / seen /
    unseen / harmonic. Missing keys print as ``n/a``.
    """
    if style == "line":
        return (f"mIoU {_percent(scores, 'miou')} (seen {_percent(scores, 'seen_miou')}, "
                f"unseen {_percent(scores, 'unseen_miou')}) hIoU {_percent(scores, 'hiou')} | "
                f"pixel acc {_percent(scores, 'pixel_acc')} | mean acc {_percent(scores, 'mean_acc')}")
    if style == "table":
        lines = [f"{'':<10}{'all':>9}{'seen':>9}{'unseen':>9}{'harmonic':>9}"]
        for label, key in _TABLE_ROWS:
            harmonic_key = "hiou" if key == "miou" else f"harmonic_{key}"
            cells = (key, f"seen_{key}", f"unseen_{key}", harmonic_key)
            lines.append(f"{label:<10}" + "".join(f"{_percent(scores, cell):>9}" for cell in cells))
        return "\n".join(lines)
    raise MetricError(f"format_scores style must be 'line' or 'table', got {style!r}")
