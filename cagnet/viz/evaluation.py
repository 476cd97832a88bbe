"""Figures of evaluation: overlays with class legends, the confusion heatmap, per-class IoU bars,
the calibration sweep, and prediction panels (image | ground truth | prediction | error map) of
one or several methods."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.metrics import harmonic_mean, per_image_iou
from cagnet.viz.error_maps import error_categories, error_legend_handles, error_map, error_shares
from cagnet.viz.legends import (MAX_FIGURE_WIDTH, UNSEEN_HATCH, UNSEEN_NOTE, add_class_legend, add_fitted_legend,
                                fit_width, settle_layout, unseen_label)
from cagnet.viz.masks import class_palette, colorize_mask, hatch, overlay_mask

def _masked_overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float,
                    visible_classes: Iterable[int] | None, ignore_index: int,
                    num_seen: int | None = None) -> tuple[np.ndarray, set[int], bool]:
    """:func:`overlay_mask` where pixels of classes outside ``visible_classes`` keep the plain image.

    With ``alpha=1`` the result is the flat label map. With ``num_seen`` the (visible) pixels
    of unseen classes (ids >= ``num_seen``) are hatched, as their legend swatches are.
    Returns the uint8 [H, W, 3] overlay, the visible class ids present in ``mask`` and whether
    it has ignored pixels (always drawn as ignored).
    """
    mask = _as_numpy(mask)
    image = np.asarray(image)
    overlay = overlay_mask(image, mask, palette, alpha, ignore_index)
    present = {int(v) for v in np.unique(mask) if v != ignore_index}
    has_ignored = bool((mask == ignore_index).any())
    shown = mask != ignore_index
    if visible_classes is not None:
        visible = {int(c) for c in visible_classes}
        hidden = shown & ~np.isin(mask, sorted(visible))
        overlay = np.where(hidden[..., None], image, overlay)
        present &= visible
        shown &= ~hidden
    if num_seen is not None:
        overlay = hatch(overlay, shown & (mask >= num_seen), base=colorize_mask(mask, palette, ignore_index))
    return overlay, present, has_ignored


def overlay_with_legend(image: np.ndarray, mask: np.ndarray, class_names: Sequence[str], num_seen: int,
                        alpha: float = 0.5, visible_classes: Iterable[int] | None = None, ignore_index: int = IGNORE_INDEX,
                        title: str | None = None) -> Figure:
    """A label map overlaid on its image with the fixed palette, and a legend of the classes shown.

    ``image`` uint8 [H, W, 3]; ``mask`` [H, W] evaluation indices (0..S-1 seen, S..K-1 unseen,
    ``ignore_index`` unlabelled, darkened). Unseen classes are hatched, in the image and in the
    legend, where they read "name*". With ``visible_classes`` (class ids) the pixels of
    every other class show the plain image and leave the legend. One axes.
    """
    palette = class_palette(class_names)
    overlay, present, has_ignored = _masked_overlay(image, mask, palette, alpha, visible_classes, ignore_index,
                                                    num_seen)
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
    labels end in "*". Cell values are written when ``annotate`` (default: K <= 15). At most
    :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH` wide. Axes: the heatmap and its colour bar.
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

    row_labels = [unseen_label(n, i >= num_seen) for i, n in enumerate(class_names)]
    column_labels = row_labels + (["other"] if values.shape[1] > num_classes else [])
    side = min(max(4.5, 0.42 * num_classes + 2.5), MAX_FIGURE_WIDTH - 1.3)
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
    if 0 < num_seen < num_classes:  # seen | unseen blocks
        ax.axhline(num_seen - 0.5, color="black", linewidth=1.5)
        ax.axvline(num_seen - 0.5, color="black", linewidth=1.5)
    if values.shape[1] > num_classes:
        ax.axvline(num_classes - 0.5, color="0.4", linewidth=1.0, linestyle="--")
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix" + (" (%)" if annotate and normalize else "")
                 + (" (* = unseen class)" if num_seen < num_classes else ""))
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


def _class_rows(num_classes: int, num_seen: int, per_row: int) -> list[list[tuple[int, int]]]:
    """Classes laid out in rows of at most ``per_row`` bar slots: [(class id, slot)] per row.

    All in one row when they fit, the unseen classes after an empty slot. Otherwise the seen
    and the unseen classes each fill rows of their own, as evenly as possible (12 seen classes
    in one row and 4 unseen ones in the next, rather than 11 + 1 and 4).
    """
    if num_classes + (0 < num_seen < num_classes) <= per_row:
        return [[(c, c + (c >= num_seen > 0)) for c in range(num_classes)]]
    rows = []
    for first, last in ((0, num_seen), (num_seen, num_classes)):
        count = last - first
        if count <= 0:
            continue
        chunks = -(-count // per_row)
        bounds = np.linspace(first, last, chunks + 1).round().astype(int)
        rows += [[(c, c - low) for c in range(low, high)] for low, high in zip(bounds[:-1], bounds[1:])]
    return rows


def plot_class_iou(class_iou, class_names: Sequence[str], num_seen: int) -> Figure:
    """Per-class IoU bars (%), one bar per method side by side, seen and unseen classes apart.

    ``class_iou``: a mapping method name -> per-class IoU (a sequence of K fractions indexed like
    ``class_names``, e.g. ``evaluate(...)["class_iou"]``, or a mapping class name -> IoU), or
    one such sequence (a single method). The unseen classes (S..K-1) come after a gap, their
    bars hatched and their tick labels ending in "*". The legend gives each method's seen /
    unseen mIoU and hIoU (NaN classes skipped).

    The figure stays within :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH`: when the groups of
    bars (one per class, wider with more methods) do not fit in one row, the classes wrap into
    several rows of axes (small multiples) that share the bar width and the IoU axis, e.g. the
    12 seen classes above the 4 unseen ones for 6 methods on the embedded benchmark. One axes
    per row.
    """
    methods = dict(class_iou) if isinstance(class_iou, Mapping) else {"IoU": class_iou}
    if not methods:
        raise ValueError("class_iou holds no method")
    table = {name: _method_class_iou(values, class_names, name) for name, values in methods.items()}
    num_classes = len(class_names)
    group = 0.25 + 0.17 * len(table)  # inches per class: room for each method's bar
    margin = 1.0  # y label and ticks
    per_row = max(4, int((MAX_FIGURE_WIDTH - margin) // group))
    rows = _class_rows(num_classes, num_seen, per_row)
    slots = max(row[-1][1] + 1 for row in rows)
    width = fit_width(max(6.0, group * slots + margin))
    figure = Figure(figsize=(width, 3.4 * len(rows) + 0.4), layout="constrained")
    grid = figure.add_gridspec(len(rows), slots)
    bar_width = 0.8 / len(table)
    labels = []
    for name, values in table.items():
        seen, unseen = values[:num_seen], values[num_seen:]
        seen_mean = float(np.nanmean(seen)) if np.isfinite(seen).any() else math.nan
        unseen_mean = float(np.nanmean(unseen)) if np.isfinite(unseen).any() else math.nan
        labels.append(f"{name}: seen {_percent_text(seen_mean)}, unseen {_percent_text(unseen_mean)}, "
                      f"hIoU {_percent_text(harmonic_mean(seen_mean, unseen_mean))}")
    handles = []
    for r, row in enumerate(rows):
        ids = np.array([c for c, _ in row])
        positions = np.array([slot for _, slot in row], dtype=np.float64)
        ax = figure.add_subplot(grid[r, :row[-1][1] + 1])
        for k, (label, values) in enumerate(zip(labels, table.values())):
            bars = ax.bar(positions - 0.4 + (k + 0.5) * bar_width, 100.0 * np.nan_to_num(values[ids], nan=0.0),
                          width=bar_width, color=f"C{k}", label=label, zorder=2)
            for index, bar in zip(ids, bars):
                if index >= num_seen:
                    bar.set_hatch(UNSEEN_HATCH)
                    bar.set_edgecolor("white")  # the hatch's colour
            if r == 0:
                handles.append(bars)
        ax.set_xticks(positions)
        ax.set_xticklabels([unseen_label(class_names[c], c >= num_seen) for c in ids], rotation=60, ha="right",
                           fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("IoU (%)")
        ax.set_xlim(-0.6, row[-1][1] + 0.6)
        ax.grid(axis="y", color="0.9", zorder=0)
    title = "IoU per class" + (f" ({UNSEEN_NOTE})" if num_seen < num_classes else "")
    if len(rows) == 1:
        figure.axes[0].set_title(title)
    else:  # small multiples: each row says which classes it holds
        figure.suptitle(title)
        for ax, row in zip(figure.axes, rows):
            ax.set_title("unseen classes" if row[0][0] >= num_seen else "seen classes", fontsize=9)
    add_fitted_legend(figure, handles, "outside lower center", 3 if len(table) > 1 else 1, fontsize=8,
                      frameon=False)
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


def _error_title(codes: np.ndarray) -> str:
    """Title of an error-map panel: the share of scored pixels that are wrong."""
    shares = error_shares(codes)
    wrong = 1.0 - shares["correct"] if math.isfinite(shares["correct"]) else math.nan
    return f"errors: {_percent_text(wrong)} % wrong"


def _error_panel(label: np.ndarray, prediction: np.ndarray, num_seen: int, ignore_index: int,
                 visible: Sequence[int] | None) -> tuple[np.ndarray, str]:
    """(RGB error map [H, W, 3], its title); with ``visible`` the pixels whose true and predicted
    classes are both hidden are faded."""
    codes = error_categories(label, prediction, num_seen, ignore_index)
    focus = None if visible is None else np.isin(label, visible) | np.isin(prediction, visible)
    return error_map(label, prediction, num_seen, ignore_index, focus=focus), _error_title(codes)


def _draw_panel(ax, panel: np.ndarray, title: str | None, fontsize: float = 9) -> None:
    ax.imshow(panel, interpolation="nearest")  # nearest: label maps stay crisp
    if title:
        ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def _add_error_legend(figure: Figure, ax=None) -> None:
    """The fixed legend of the error categories: in ``ax`` (an empty cell of the grid, turned
    off) or, without one, beside the figure."""
    handles = error_legend_handles()
    if ax is not None:
        ax.set_axis_off()
        ax.legend(handles=handles, loc="center", fontsize=8, title="error map", title_fontsize=8, frameon=False)
    else:
        add_fitted_legend(figure, handles, "outside right center", 1, fontsize=8, frameon=False,
                          title="error map", title_fontsize=8)


def plot_method_panels(image: np.ndarray, label: np.ndarray, predictions: Mapping[str, np.ndarray],
                       class_names: Sequence[str], num_seen: int, alpha: float = 1.0,
                       visible_classes: Iterable[int] | None = None, ignore_index: int = IGNORE_INDEX,
                       show_iou: bool = True, show_errors: bool = True) -> Figure:
    """The image, its ground truth, and each method's prediction with its error map.

    ``image`` uint8 [H, W, 3]; ``label`` and ``predictions[method]`` [H, W] evaluation indices
    (0..S-1 seen, S..K-1 unseen; ``ignore_index`` pixels are drawn black and not scored).
    Ground truth and predictions are drawn alike: the class colours over the image with
    opacity ``alpha`` (1, the default: flat label maps), unseen classes hatched.
    ``visible_classes`` colours only those classes (the others show the plain image, and fade
    in the error maps). With ``show_iou`` each prediction's title gives the image's mIoU and
    hIoU (:func:`per_image_iou`). With ``show_errors`` each prediction gets its error map
    (:func:`cagnet.viz.error_maps.error_map`: correct, seen / unseen confused with which group,
    ignored) with a fixed legend.

    Layout (at most :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH` wide: panels shrink with more
    methods): one method -> one row image | ground truth | prediction | error map, the error
    legend beside it; several -> row 1 image | ground truth | predictions, row 2 the error
    legend (under image and ground truth) | each prediction's error map under it; without
    errors one row image | ground truth | predictions. The class legend (classes shown, unseen
    ones marked) lies below. Axes in reading order: image, ground truth, then per method its
    prediction (and, in one row, its error map), then the error maps of the second row and
    the legend cell.
    """
    visible = None if visible_classes is None else [int(c) for c in visible_classes]
    palette = class_palette(class_names)
    image = np.asarray(image)
    label = _as_numpy(label)
    truth, shown, has_ignored = _masked_overlay(image, label, palette, alpha, visible, ignore_index, num_seen)
    top = [("image", image), ("ground truth", truth)]
    errors = []
    for method, prediction in predictions.items():
        prediction = _as_numpy(prediction)
        overlay, present, predicted_ignored = _masked_overlay(image, prediction, palette, alpha, visible,
                                                              ignore_index, num_seen)
        shown |= present
        has_ignored |= predicted_ignored
        title = method
        if show_iou:
            scores = per_image_iou(label, prediction, len(class_names), ignore_index, num_seen)
            title += f"\nmIoU {_percent_text(scores['miou'])} | hIoU {_percent_text(scores['hiou'])}"
        top.append((title, overlay))
        if show_errors:
            panel, error_title = _error_panel(label, prediction, num_seen, ignore_index, visible)
            errors.append((error_title, panel))
    one_row = not errors or len(errors) == 1
    columns = len(top) + (len(errors) if one_row else 0)
    beside = 2.3 if errors and one_row else 0.0  # the error legend beside a single row
    side = min(2.6, (MAX_FIGURE_WIDTH - 0.3 - beside) / columns)
    rows = 1 if one_row else 2
    figure = Figure(figsize=(side * columns, (side + 0.55) * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    if one_row:
        panels = top[:3] + errors[:1] + top[3:] if errors else top
        for ax, (title, panel) in zip(axes[0], panels):
            _draw_panel(ax, panel, title)
    else:
        for ax, (title, panel) in zip(axes[0], top):
            _draw_panel(ax, panel, title)
        for ax, (title, panel) in zip(axes[1, 2:], errors):
            _draw_panel(ax, panel, title)
        grid = axes[0, 0].get_gridspec()
        for ax in axes[1, :2]:
            ax.remove()
        legend_cell = figure.add_subplot(grid[1, :2])  # under image and ground truth
    add_class_legend(figure, shown, class_names, num_seen, palette, has_ignored, ncols=6)
    if errors:
        _add_error_legend(figure, None if one_row else legend_cell)
    return settle_layout(figure)
