"""Figures of training: curves of recorded quantities, the losses and scores of a run folder's
logs, and predictions on a few images."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cagnet.analysis import moving_average
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.viz.legends import add_fitted_legend
from cagnet.viz.masks import class_palette, colorize_mask, overlay_mask

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
    fig = Figure(figsize=(3.2 * ncols, 2.4 * nrows + (0.4 if title else 0.0)), layout="constrained")
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


#: Panels of :func:`plot_loss_curves`: title -> record keys.
LOSS_PANELS: dict[str, tuple[str, ...]] = {
    "discriminator": ("loss_D", "gan_D", "cls_real", "cls_fake"),
    "backbone": ("loss_B", "kl"),
    "generator": ("loss_G", "gan_G", "mmd"),
    "pixel accuracy": ("acc_real", "acc_fake"),
}


def plot_loss_curves(records: Sequence[Mapping], panels: Mapping[str, Sequence[str]] | None = None,
                     window: int = 20) -> Figure:
    """Losses of ``log.jsonl`` records against the iteration, one panel per trained part.

    Raw values are drawn faintly, their trailing ``window``-iteration mean on top. Values of
    step-2 iterations (``"step": "step2"``, finetuning runs) form their own curves, labelled
    ``(step 2)``. Keys absent from every record are skipped (e.g. the backbone panel of a
    finetuning run).
    """
    panels = dict(LOSS_PANELS if panels is None else panels)
    series: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        suffix = " (step 2)" if record.get("step") == "step2" else ""
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                series.setdefault(key + suffix, []).append((record["iteration"], float(value)))
    panel_series = {title: [name for key in keys for name in (key, f"{key} (step 2)") if name in series]
                    for title, keys in panels.items()}
    panel_series = {title: names for title, names in panel_series.items() if names}
    figure = Figure(figsize=(4.2 * max(len(panel_series), 1), 3.4), layout="constrained")
    if not panel_series:
        ax = figure.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no losses logged yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    axes = figure.subplots(1, len(panel_series), squeeze=False)[0]
    for ax, (title, names) in zip(axes, panel_series.items()):
        positive = True
        for name in names:
            x, y = map(np.asarray, zip(*series[name]))
            line, = ax.plot(x, moving_average(y, window), label=name, linewidth=1.5)
            ax.plot(x, y, color=line.get_color(), alpha=0.2, linewidth=0.8)
            positive = positive and bool((y > 0).all())
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend(fontsize="small")
        if title != "pixel accuracy" and positive:
            ax.set_yscale("log")
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
                     class_names: Sequence[str], num_seen: int, ignore_index: int = IGNORE_INDEX) -> Figure:
    """Rows of (image, ground truth, prediction overlaid on the image) for a few test images.

    ``images``: uint8 RGB [H, W, 3]; ``labels`` / ``predictions``: evaluation indices [H, W]
    (0..S-1 seen, S.. unseen, ``ignore_index`` unlabelled, drawn black). The legend lists
    the classes present, unseen ones marked with ``*``.
    """
    count = len(images)
    palette = class_palette(class_names)
    figure = Figure(figsize=(9.0, 3.0 * max(count, 1) + 0.3), layout="constrained")
    axes = figure.subplots(max(count, 1), 3, squeeze=False)
    shown: set[int] = set()
    for row, (image, label, prediction) in enumerate(zip(images, labels, predictions)):
        label = np.asarray(label)
        prediction = np.asarray(prediction)
        panels = (image, colorize_mask(label, palette, ignore_index), overlay_mask(image, prediction, palette, 0.6))
        for col, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
            axes[row, col].imshow(panel)
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(title)
        shown.update(int(v) for v in np.unique(label) if v != ignore_index)
        shown.update(int(v) for v in np.unique(prediction) if v != ignore_index)
    handles = [Patch(color=palette[c] / 255.0, label=("*" if c >= num_seen else "") + class_names[c])
               for c in sorted(shown) if c < len(class_names)]
    if handles:
        add_fitted_legend(figure, handles, "outside lower center", 6, fontsize="small",
                           title="classes (* = unseen)")
    return figure


def plot_class_prior(priors: Mapping[str, Sequence[float]], class_names: Sequence[str], num_seen: int) -> Figure:
    """Bars of one or more step-2 class priors (a mapping label -> probabilities [K] over the
    classes in evaluation order), unseen classes hatched and shaded; the legend gives each prior's
    unseen share. One axes."""
    if not priors:
        raise ValueError("no prior to plot")
    figure = Figure(figsize=(max(6.0, 0.45 * len(class_names) + 2.0), 3.8), layout="constrained")
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
                bar.set_hatch("//")
                bar.set_edgecolor("white")
    ax.axvspan(num_seen - 0.5, len(class_names) - 0.5, color="0.92", zorder=0)
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{n}*" if i >= num_seen else n for i, n in enumerate(class_names)], rotation=60,
                       ha="right", fontsize=8)
    ax.set_ylabel("probability (%)")
    ax.set_title("Step-2 class prior (* = unseen, shaded)")
    ax.legend(fontsize=8, loc="upper left")
    return figure


def plot_label_maps(label_maps: Sequence[np.ndarray], class_names: Sequence[str], num_seen: int,
                    titles: Sequence[str] | None = None) -> Figure:
    """Label maps [h, w] of evaluation indices (e.g. step-2 labels drawn from the prior) in the
    class palette, one panel each, with a legend of the classes present (unseen ones marked)."""
    from cagnet.viz.legends import add_class_legend

    palette = class_palette(list(class_names))
    figure = Figure(figsize=(2.8 * len(label_maps), 3.9), layout="constrained")
    axes = figure.subplots(1, len(label_maps), squeeze=False)[0]
    present: set[int] = set()
    for k, (ax, label_map) in enumerate(zip(axes, label_maps)):
        ax.imshow(colorize_mask(np.asarray(label_map), palette), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[k], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        present.update(int(v) for v in np.unique(label_map) if v != IGNORE_INDEX)
    add_class_legend(figure, present, class_names, num_seen, palette, with_ignored=False)
    return figure
