"""Figures of evaluation: overlays with class legends, the confusion heatmap, per-class IoU bars,
the calibration sweep and side-by-side predictions of several methods."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.metrics import harmonic_mean, per_image_iou
from cagnet.viz.legends import add_class_legend, settle_layout, style_unseen_texts
from cagnet.viz.masks import class_palette, overlay_mask

def _masked_overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float,
                    visible_classes: Iterable[int] | None, ignore_index: int) -> tuple[np.ndarray, set[int], bool]:
    """:func:`overlay_mask` where pixels of classes outside ``visible_classes`` keep the plain image.

    Returns the uint8 [H, W, 3] overlay, the visible class ids present in ``mask`` and whether
    it has ignored pixels (always drawn as ignored).
    """
    mask = np.asarray(mask)
    image = np.asarray(image)
    overlay = overlay_mask(image, mask, palette, alpha, ignore_index)
    present = {int(v) for v in np.unique(mask) if v != ignore_index}
    has_ignored = bool((mask == ignore_index).any())
    if visible_classes is not None:
        visible = {int(c) for c in visible_classes}
        hidden = (mask != ignore_index) & ~np.isin(mask, sorted(visible))
        overlay = np.where(hidden[..., None], image, overlay)
        present &= visible
    return overlay, present, has_ignored


def overlay_with_legend(image: np.ndarray, mask: np.ndarray, class_names: Sequence[str], num_seen: int,
                        alpha: float = 0.5, visible_classes: Iterable[int] | None = None, ignore_index: int = IGNORE_INDEX,
                        title: str | None = None) -> Figure:
    """A label map overlaid on its image with the fixed palette, and a legend of the classes shown.

    ``image`` uint8 [H, W, 3]; ``mask`` [H, W] evaluation indices (0..S-1 seen, S..K-1 unseen,
    ``ignore_index`` unlabelled, darkened). Unseen classes read "name (unseen)" in bold
    italics with a hatched legend patch. With ``visible_classes`` (class ids) the pixels of
    every other class show the plain image and leave the legend. One axes.
    """
    palette = class_palette(class_names)
    overlay, present, has_ignored = _masked_overlay(image, mask, palette, alpha, visible_classes, ignore_index)
    figure = Figure(figsize=(4.6, 4.6), layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(overlay)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    add_class_legend(figure, present, class_names, num_seen, palette, has_ignored, ncols=3)
    return figure


def _as_numpy(values) -> np.ndarray:
    """numpy copy of an array-like or a (CPU or device) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def plot_confusion_matrix(confusion, class_names: Sequence[str], num_seen: int, normalize: str | None = "true",
                          show_other: bool | None = None, annotate: bool | None = None) -> Figure:
    """Heatmap of a confusion matrix (rows = ground truth, columns = prediction).

    ``confusion``: the [K, K + 1] counts of :mod:`cagnet.metrics` (last column = predictions
    outside the K classes) or a plain [K, K], numpy or torch. ``normalize``: ``"true"`` divides
    each row by its total (every column, "other" included, so a labelled row sums to 1),
    ``"pred"`` each column by its total, ``None`` keeps the counts. Rows or columns without
    pixels are left blank. The "other" column is drawn when ``show_other`` (default: when it
    holds any count). Lines separate the seen block (0..S-1) from the unseen one; unseen tick
    labels end in "*" and are bold italic. Cell values are written when ``annotate``
    (default: K <= 15). Axes: the heatmap and its colour bar.
    """
    counts = _as_numpy(confusion).astype(np.float64)
    num_classes = len(class_names)
    if counts.ndim != 2 or counts.shape[0] != num_classes or counts.shape[1] not in (num_classes, num_classes + 1):
        raise ValueError(f"confusion must be [{num_classes}, {num_classes}] or [{num_classes}, {num_classes + 1}], "
                         f"got shape {counts.shape}")
    if normalize == "true":
        totals = counts.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        totals = counts.sum(axis=0, keepdims=True)
    elif normalize is None:
        totals = None
    else:
        raise ValueError(f"normalize must be 'true', 'pred' or None, got {normalize!r}")
    if totals is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)
    else:
        values = counts
    has_other = counts.shape[1] == num_classes + 1
    if show_other is None:
        show_other = has_other and bool(counts[:, num_classes].any())
    if has_other and not show_other:
        values = values[:, :num_classes]  # normalised with the "other" column, drawn without it
    annotate = num_classes <= 15 if annotate is None else annotate

    row_labels = [f"{n}*" if i >= num_seen else n for i, n in enumerate(class_names)]
    column_labels = row_labels + (["other"] if values.shape[1] > num_classes else [])
    side = max(4.5, 0.42 * num_classes + 2.5)
    figure = Figure(figsize=(side + 1.3, side), layout="constrained")
    ax = figure.add_subplot()
    vmax = 1.0 if normalize else max(float(np.nanmax(values)) if np.isfinite(values).any() else 1.0, 1.0)
    artist = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    bar = figure.colorbar(artist, ax=ax, shrink=0.8)
    bar.set_label({"true": "share of the row (ground-truth pixels)", "pred": "share of the column (predictions)",
                   None: "pixels"}[normalize])
    if annotate:
        for (r, c), value in np.ndenumerate(values):
            if np.isfinite(value) and value > 0:
                text = f"{100 * value:.0f}" if normalize else f"{value:.0f}"
                ax.text(c, r, text, ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 * vmax else "black")
    ax.set_xticks(range(len(column_labels)))
    ax.set_xticklabels(column_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(num_classes))
    ax.set_yticklabels(row_labels, fontsize=8)
    style_unseen_texts(ax.get_xticklabels(), [num_seen <= i < num_classes for i in range(len(column_labels))])
    style_unseen_texts(ax.get_yticklabels(), [i >= num_seen for i in range(num_classes)])
    if 0 < num_seen < num_classes:  # seen | unseen blocks
        ax.axhline(num_seen - 0.5, color="black", linewidth=1.5)
        ax.axvline(num_seen - 0.5, color="black", linewidth=1.5)
    if values.shape[1] > num_classes:
        ax.axvline(num_classes - 0.5, color="0.4", linewidth=1.0, linestyle="--")
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix" + (" (%)" if annotate and normalize else "") + " (* = unseen)")
    return figure


def _method_class_iou(values, class_names: Sequence[str], method: str) -> np.ndarray:
    """Per-class IoU of one method as float64 [K]: a sequence indexed like ``class_names`` or a
    mapping class name -> IoU (missing classes are NaN)."""
    if isinstance(values, Mapping):
        unknown = sorted(set(values) - set(class_names))
        if unknown:
            raise ValueError(f"class_iou[{method!r}] names unknown classes {unknown}")
        return np.array([values.get(name, np.nan) for name in class_names], dtype=np.float64)
    array = _as_numpy(values).astype(np.float64)
    if array.shape != (len(class_names),):
        raise ValueError(f"class_iou[{method!r}] has shape {array.shape}, expected ({len(class_names)},)")
    return array


def _percent_text(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100.0 * value:.1f}"


def plot_class_iou(class_iou, class_names: Sequence[str], num_seen: int) -> Figure:
    """Per-class IoU bars (%), one bar per method side by side, seen and unseen classes apart.

    ``class_iou``: a mapping method name -> per-class IoU (a sequence of K fractions indexed like
    ``class_names``, e.g. ``evaluate(...)["class_iou"]``, or a mapping class name -> IoU), or
    one such sequence (a single method). The unseen classes (S..K-1) come after a gap on a
    shaded background, their bars hatched and their tick labels bold italic ending in "*".
    The legend gives each method's seen / unseen mIoU and hIoU (NaN classes skipped). One axes.
    """
    methods = dict(class_iou) if isinstance(class_iou, Mapping) else {"IoU": class_iou}
    if not methods:
        raise ValueError("class_iou holds no method")
    table = {name: _method_class_iou(values, class_names, name) for name, values in methods.items()}
    num_classes = len(class_names)
    positions = np.arange(num_classes) + (np.arange(num_classes) >= num_seen)  # one slot gap before unseen
    width = 0.8 / len(table)
    figure = Figure(figsize=(max(6.0, (0.3 + 0.18 * len(table)) * num_classes + 2.5), 4.2), layout="constrained")
    ax = figure.add_subplot()
    if num_seen < num_classes:
        ax.axvspan(positions[num_seen] - 0.5, positions[-1] + 0.5, color="0.92", zorder=0)
    for k, (name, values) in enumerate(table.items()):
        seen, unseen = values[:num_seen], values[num_seen:]
        seen_mean = float(np.nanmean(seen)) if np.isfinite(seen).any() else math.nan
        unseen_mean = float(np.nanmean(unseen)) if np.isfinite(unseen).any() else math.nan
        label = (f"{name}: seen {_percent_text(seen_mean)}, unseen {_percent_text(unseen_mean)}, "
                 f"hIoU {_percent_text(harmonic_mean(seen_mean, unseen_mean))}")
        offsets = positions - 0.4 + (k + 0.5) * width
        bars = ax.bar(offsets, 100.0 * np.nan_to_num(values, nan=0.0), width=width, color=f"C{k}", label=label,
                      zorder=2)
        for index, bar in enumerate(bars):
            if index >= num_seen:
                bar.set_hatch("//")
                bar.set_edgecolor("white")
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{n}*" if i >= num_seen else n for i, n in enumerate(class_names)],
                       rotation=60, ha="right", fontsize=8)
    style_unseen_texts(ax.get_xticklabels(), [i >= num_seen for i in range(num_classes)])
    ax.set_ylim(0, 105)
    ax.set_ylabel("IoU (%)")
    ax.set_xlim(positions[0] - 0.6, positions[-1] + 0.6)
    ax.set_title("IoU per class (* = unseen, shaded)" if num_seen < num_classes else "IoU per class")
    figure.legend(loc="outside lower left", fontsize=8, ncols=1, frameon=False)
    return figure


def plot_calibration_sweep(penalties: Sequence[float], seen_miou: Sequence[float], unseen_miou: Sequence[float],
                           hiou: Sequence[float], best: float | None = None) -> Figure:
    """Seen mIoU, unseen mIoU and hIoU (fractions, drawn in %) against the seen-class penalty.

    A larger penalty subtracted from the seen classes' logits trades seen for unseen mIoU.
    ``best``: the penalty to mark (default: the one with the largest hIoU); it is drawn as a
    star on the hIoU curve (the line labelled "best hIoU ...") with a dotted vertical line.
    One axes.
    """
    curves = [np.asarray(v, dtype=np.float64) for v in (penalties, seen_miou, unseen_miou, hiou)]
    if any(c.ndim != 1 or len(c) != len(curves[0]) for c in curves) or not len(curves[0]):
        raise ValueError(f"penalties and scores must be equally long non-empty 1-D sequences, got shapes "
                         f"{[c.shape for c in curves]}")
    order = np.argsort(curves[0], kind="stable")
    penalty, seen, unseen, harmonic = (c[order] for c in curves)
    if best is None:
        if not np.isfinite(harmonic).any():
            raise ValueError("hiou has no finite value to pick the best penalty from")
        index = int(np.nanargmax(harmonic))
    else:
        index = int(np.argmin(np.abs(penalty - float(best))))
    figure = Figure(figsize=(5.6, 3.8), layout="constrained")
    ax = figure.add_subplot()
    ax.plot(penalty, 100 * seen, marker="o", markersize=3, label="seen mIoU")
    ax.plot(penalty, 100 * unseen, marker="o", markersize=3, label="unseen mIoU")
    ax.plot(penalty, 100 * harmonic, marker="o", markersize=3, linewidth=2.0, color="black", label="hIoU")
    ax.axvline(penalty[index], color="0.4", linestyle=":", linewidth=1.0)
    ax.plot([penalty[index]], [100 * harmonic[index]], marker="*", markersize=16, linestyle="", color="gold",
            markeredgecolor="black", zorder=5,
            label=f"best hIoU {_percent_text(harmonic[index])} at penalty {penalty[index]:g}")
    ax.set_xlabel("seen-class penalty (subtracted from the seen logits)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title("Calibration sweep")
    ax.legend(fontsize=8)
    return figure


def plot_method_panels(image: np.ndarray, label: np.ndarray, predictions: Mapping[str, np.ndarray],
                       class_names: Sequence[str], num_seen: int, alpha: float = 0.6,
                       visible_classes: Iterable[int] | None = None, ignore_index: int = IGNORE_INDEX,
                       show_iou: bool = True) -> Figure:
    """One row: the image, the ground truth, then each method's prediction, overlaid with ``alpha``.

    ``image`` uint8 [H, W, 3]; ``label`` and ``predictions[method]`` [H, W] evaluation indices
    (0..S-1 seen, S..K-1 unseen; ``ignore_index`` pixels of the label are darkened and not
    scored). With ``show_iou`` each prediction's title gives the image's mIoU and hIoU
    (:func:`per_image_iou`). ``visible_classes`` shows only those classes' colours. The legend
    lists the classes shown, unseen ones marked. ``2 + len(predictions)`` axes.
    """
    visible = None if visible_classes is None else list(visible_classes)
    palette = class_palette(class_names)
    image = np.asarray(image)
    label = _as_numpy(label)
    panels = [("image", image)]
    overlay, shown, has_ignored = _masked_overlay(image, label, palette, alpha, visible, ignore_index)
    panels.append(("ground truth", overlay))
    for method, prediction in predictions.items():
        prediction = _as_numpy(prediction)
        overlay, present, _ = _masked_overlay(image, prediction, palette, alpha, visible, ignore_index)
        shown |= present
        title = method
        if show_iou:
            scores = per_image_iou(label, prediction, len(class_names), ignore_index, num_seen)
            title += f"\nmIoU {_percent_text(scores['miou'])} | hIoU {_percent_text(scores['hiou'])}"
        panels.append((title, overlay))
    figure = Figure(figsize=(2.6 * len(panels), 3.1), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, panel) in zip(axes, panels):
        ax.imshow(panel)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    add_class_legend(figure, shown, class_names, num_seen, palette, has_ignored, ncols=6)
    return settle_layout(figure)
