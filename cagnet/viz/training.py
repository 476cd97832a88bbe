"""Figures of training: curves of recorded quantities, the losses and scores of a run folder's
logs, predictions on a few images (with their error maps), step-2 class priors and label maps."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cagnet.analysis import moving_average
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.viz.evaluation import _add_error_legend, _as_numpy, _draw_panel, _error_panel, _masked_overlay
from cagnet.viz.legends import (MAX_FIGURE_WIDTH, UNSEEN_HATCH, UNSEEN_NOTE, add_class_legend, fit_width,
                                unseen_label)
from cagnet.viz.masks import class_palette

def plot_training_curves(curves: Mapping[str, Sequence[float]], window: int = 10, ncols: int = 4,
                         log_scale: Iterable[str] = (), title: str | None = None) -> Figure:
    """One small panel per recorded quantity: the raw values (faint) and their moving average.

    ``curves`` maps a name (e.g. "classification loss") to its value per iteration; names in
    ``log_scale`` get a logarithmic y axis (values must then be positive). One axes per curve.
    """
    if not curves:
        raise ValueError("no curves to plot")
    log_names = set(log_scale)
    names = list(curves)
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(fit_width(3.2 * ncols), 2.4 * nrows + (0.4 if title else 0.0)), layout="constrained")
    for k, name in enumerate(names):
        values = np.asarray(curves[name], dtype=np.float64)
        ax = fig.add_subplot(nrows, ncols, k + 1)
        steps = np.arange(len(values))
        ax.plot(steps, values, color="C0", alpha=0.3, linewidth=0.8)
        ax.plot(steps, moving_average(values, window), color="C0", linewidth=1.6)
        if name in log_names:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig


#: Panels of :func:`plot_loss_curves`: title -> record keys drawn together. One loss per panel,
#: except terms of one kind and scale (the two classification losses; the two accuracies):
#: the totals (``loss_G`` ~ 40 at the start) would flatten their terms (``gan_G`` ~ 1) on a
#: shared axis.
LOSS_PANELS: dict[str, tuple[str, ...]] = {
    "loss_D: discriminator total": ("loss_D",),
    "gan_D: real vs generated": ("gan_D",),
    "cls_real, cls_fake: classification": ("cls_real", "cls_fake"),
    "loss_B: backbone total": ("loss_B",),
    "kl: latent code vs N(0, I)": ("kl",),
    "loss_G: generator total": ("loss_G",),
    "gan_G: generator's GAN term": ("gan_G",),
    "mmd: generated vs real features": ("mmd",),
    "pixel accuracy": ("acc_real", "acc_fake"),
}

_KIND_LABELS = {"step1": "step 1", "step2": "step 2", "st": "self-training"}

#: Shown under the loss curves when the step-2 accuracy of the classifier on generated features is logged.
ACC_FAKE_STEP2_NOTE = (
    "acc_fake (step 2): the classifier's pixel accuracy on the features generated in step 2 (a label per pixel "
    "drawn from the prior, unseen classes over-weighted; latent code from N(0, I)), measured before each update: "
    "a training accuracy on generated features only, no score on real pixels (see the validation hIoU). It can fall "
    "while the generator keeps learning in the step-1 iterations (gan_G, mmd) and the classifier keeps training on "
    "real seen pixels: the generated features it learnt from move.")


def _phase_breaks(x: np.ndarray, iterations: np.ndarray) -> np.ndarray:
    """Where a series of iterations ``x`` [n] (sorted) must break: the indices i (for ``np.insert``)
    such that the run logged other iterations (``iterations``: every logged one, sorted)
    between ``x[i - 1]`` and ``x[i]``. A NaN inserted there keeps a line from bridging a phase
    the series did not run in (the step-2 blocks of a step-1 series of a mixed run, and vice versa)."""
    between = np.searchsorted(iterations, x[1:], side="left") - np.searchsorted(iterations, x[:-1], side="right")
    return np.flatnonzero(between > 0) + 1


def _spans_decades(values: np.ndarray) -> bool:
    """Positive values whose 1st and 99th percentiles lie a factor 10 or more apart: a log axis reads them."""
    finite = values[np.isfinite(values)]
    if not len(finite) or (finite <= 0).any():
        return False
    low, high = np.percentile(finite, [1, 99])
    return high >= 10.0 * low


def plot_loss_curves(records: Sequence[Mapping], panels: Mapping[str, Sequence[str]] | None = None,
                     window: int = 20, ncols: int = 4) -> Figure:
    """Losses of ``log.jsonl`` records against the iteration, one panel per loss (:data:`LOSS_PANELS`).

    ``records``: dicts with ``"iteration"``, ``"step"`` (the iteration's kind: ``step1``,
    ``step2``, ``st``) and one number per logged quantity. Raw values are drawn faintly, their
    trailing ``window``-point mean on top. Each kind of iteration gives its own curve (labelled
    ``(step 1)`` / ``(step 2)`` when a run has several kinds, e.g. ``mixed``), broken (NaN)
    wherever the run did iterations of another kind, so no line bridges the blocks a phase did
    not run in. A panel's y axis is logarithmic when its values are positive and span a
    decade or more, linear otherwise; accuracies (``acc_*``) are drawn on 0..1. When
    ``acc_fake`` of step 2 is logged, :data:`ACC_FAKE_STEP2_NOTE` explains it under the
    panels. Keys absent from every record are skipped (e.g. ``loss_B`` of a finetuning run).
    ``ncols`` panels per row (at most :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH` wide).
    """
    panels = dict(LOSS_PANELS if panels is None else panels)
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for record in records:
        kind = str(record.get("step", "step1"))
        for key, value in record.items():
            if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                series.setdefault((key, kind), []).append((float(record["iteration"]), float(value)))
    iterations = np.unique(np.array([float(r["iteration"]) for r in records], dtype=np.float64))
    kinds = sorted({kind for _, kind in series}, key=lambda k: (k != "step1", k))
    several_kinds = len(kinds) > 1
    panel_series = {title: [(key, kind) for key in keys for kind in kinds if (key, kind) in series]
                    for title, keys in panels.items()}
    panel_series = {title: names for title, names in panel_series.items() if names}
    if not panel_series:
        figure = Figure(figsize=(4.2, 3.0), layout="constrained")
        ax = figure.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no losses logged yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    ncols = max(1, min(ncols, len(panel_series)))
    nrows = -(-len(panel_series) // ncols)
    figure = Figure(figsize=(fit_width(4.0 * ncols), 2.9 * nrows + 0.3), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panel_series):]:
        ax.remove()
    for ax, (title, names) in zip(axes, panel_series.items()):
        everything = []
        for key, kind in names:
            x, raw = (np.array(v, dtype=np.float64) for v in zip(*sorted(series[(key, kind)])))
            breaks = _phase_breaks(x, iterations)
            smooth = moving_average(raw, window)  # over the series' own points, then broken at the gaps
            x_drawn, raw_drawn, smooth_drawn = (np.insert(v, breaks, np.nan) for v in (x, raw, smooth))
            label = f"{key} ({_KIND_LABELS.get(kind, kind)})" if several_kinds else key
            line, = ax.plot(x_drawn, smooth_drawn, label=label, linewidth=1.5)
            ax.plot(x_drawn, raw_drawn, color=line.get_color(), alpha=0.2, linewidth=0.8)
            everything.append(raw)
        values = np.concatenate(everything)
        if all(key.startswith("acc_") for key, _ in names):
            ax.set_ylim(0.0, 1.02)
        elif _spans_decades(values):
            ax.set_yscale("log")
        if ax.get_yscale() == "linear":
            ax.ticklabel_format(axis="y", useOffset=False)  # a flat curve reads 0.02, not 1e-14 + 2e-2
            low, high = float(values.min()), float(values.max())
            if high - low <= 1e-6 * max(1.0, abs(high)):  # constant (e.g. the KL of a frozen backbone)
                pad = max(0.05 * abs(high), 1e-3)
                ax.set_ylim(low - pad, high + pad)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        ax.legend(fontsize=7)
    if ("acc_fake", "step2") in series:
        import textwrap

        width_chars = int(figure.get_size_inches()[0] * 14)  # ~14 characters per inch at 8 pt
        figure.supxlabel("\n".join(textwrap.wrap(ACC_FAKE_STEP2_NOTE, max(60, width_chars))), fontsize=8,
                         ha="center")
    return figure


def plot_eval_curves(evaluations: Sequence[Mapping]) -> Figure:
    """mIoU of the seen and unseen classes and their harmonic mean (hIoU) against the iteration.

    ``evaluations``: the records of a run's ``eval.jsonl``; the title names the split they
    were scored on (their ``split`` key).
    """
    figure = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = figure.add_subplot(1, 1, 1)
    for key, label in (("seen_miou", "seen mIoU"), ("unseen_miou", "unseen mIoU"), ("hiou", "hIoU")):
        points = [(e["iteration"], 100.0 * e[key]) for e in evaluations
                  if e.get(key) is not None and math.isfinite(e[key])]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="o", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    splits = sorted({e["split"] for e in evaluations if e.get("split")})
    ax.set_title(f"{' / '.join(splits)} scores" if splits else "scores")
    ax.legend(fontsize="small")
    return figure


def plot_predictions(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                     class_names: Sequence[str], num_seen: int, ignore_index: int = IGNORE_INDEX, alpha: float = 1.0,
                     show_errors: bool = True) -> Figure:
    """Rows of (image, ground truth, prediction, error map) for a few test images.

    ``images``: uint8 RGB [H, W, 3]; ``labels`` / ``predictions``: evaluation indices [H, W]
    (0..S-1 seen, S.. unseen, ``ignore_index`` unlabelled, drawn black). Ground truth and
    prediction are drawn alike (class colours over the image with opacity ``alpha``; 1, the
    default: flat label maps), unseen classes hatched. The error map
    (:func:`cagnet.viz.error_maps.error_map`, left out without ``show_errors``) colours each
    pixel by its kind of mistake; its fixed legend lies beside the rows, the legend of the
    classes present (unseen ones marked) below. Axes: 4 (3 without errors) per image.
    """
    count = len(images)
    palette = class_palette(class_names)
    columns = 4 if show_errors else 3
    side = 2.6
    figure = Figure(figsize=(side * columns, (side + 0.35) * max(count, 1) + 0.3), layout="constrained")
    axes = figure.subplots(max(count, 1), columns, squeeze=False)
    shown: set[int] = set()
    has_ignored = False
    for row, (image, label, prediction) in enumerate(zip(images, labels, predictions)):
        image, label, prediction = np.asarray(image), _as_numpy(label), _as_numpy(prediction)
        truth, present, truth_ignored = _masked_overlay(image, label, palette, alpha, None, ignore_index, num_seen)
        predicted, predicted_present, predicted_ignored = _masked_overlay(image, prediction, palette, alpha, None,
                                                                          ignore_index, num_seen)
        panels = [("image", image), ("ground truth", truth), ("prediction", predicted)]
        if show_errors:
            error_rgb, error_title = _error_panel(label, prediction, num_seen, ignore_index, None)
            panels.append((error_title, error_rgb))
        for col, (title, panel) in enumerate(panels):
            # image / ground truth / prediction are named once, above the first row
            _draw_panel(axes[row, col], panel, title if row == 0 or col == 3 else None)
        shown |= {c for c in present | predicted_present if c < len(class_names)}
        has_ignored |= truth_ignored or predicted_ignored
    for ax in axes[count:].ravel():
        ax.set_axis_off()
    add_class_legend(figure, shown, class_names, num_seen, palette, has_ignored, ncols=6)
    if show_errors:
        _add_error_legend(figure)
    return figure


def plot_class_prior(priors: Mapping[str, Sequence[float]], class_names: Sequence[str], num_seen: int) -> Figure:
    """Bars of one or more step-2 class priors (a mapping label -> probabilities [K] over the
    classes in evaluation order), unseen classes hatched and ending in "*"; the legend gives
    each prior's unseen share. At most :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH` wide. One axes."""
    if not priors:
        raise ValueError("no prior to plot")
    figure = Figure(figsize=(fit_width(max(6.0, 0.45 * len(class_names) + 2.0)), 3.8), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / len(priors)
    positions = np.arange(len(class_names))
    for k, (label, prior) in enumerate(priors.items()):
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (len(class_names),):
            raise ValueError(f"prior {label!r} has {prior.shape} values, expected one per class ({len(class_names)})")
        bars = ax.bar(positions - 0.4 + (k + 0.5) * width, 100 * prior, width=width, color=f"C{k}",
                      label=f"{label}: unseen classes get {prior[num_seen:].sum():.0%} of the labels")
        for index, bar in enumerate(bars):
            if index >= num_seen:
                bar.set_hatch(UNSEEN_HATCH)
                bar.set_edgecolor("white")  # the hatch's colour
    ax.set_xticks(positions)
    ax.set_xticklabels([unseen_label(n, i >= num_seen) for i, n in enumerate(class_names)], rotation=60,
                       ha="right", fontsize=8)
    ax.set_ylabel("probability (%)")
    ax.set_title("Step-2 class prior" + (f" ({UNSEEN_NOTE})" if num_seen < len(class_names) else ""))
    ax.legend(fontsize=8, loc="upper left")
    return figure


def plot_label_maps(label_maps: Sequence[np.ndarray], class_names: Sequence[str], num_seen: int,
                    titles: Sequence[str] | None = None) -> Figure:
    """Label maps [h, w] of evaluation indices (e.g. step-2 labels drawn from the prior) in the
    class palette, unseen classes hatched, one panel each (panels shrink to keep the figure
    within :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH`), with a legend of the classes present
    (unseen ones marked)."""
    palette = class_palette(list(class_names))
    side = min(2.8, (MAX_FIGURE_WIDTH - 0.3) / max(1, len(label_maps)))
    figure = Figure(figsize=(side * len(label_maps), side + 1.1), layout="constrained")
    axes = figure.subplots(1, len(label_maps), squeeze=False)[0]
    present: set[int] = set()
    for k, (ax, label_map) in enumerate(zip(axes, label_maps)):
        label_map = _as_numpy(label_map)
        flat, classes, _ = _masked_overlay(np.zeros(label_map.shape + (3,), np.uint8), label_map, palette, 1.0, None,
                                           IGNORE_INDEX, num_seen)
        _draw_panel(ax, flat, titles[k] if titles is not None else None)
        present |= classes
    add_class_legend(figure, present, class_names, num_seen, palette, with_ignored=False)
    return figure
