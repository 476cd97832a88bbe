"""Figures of a dataset: sample grids with label overlays, class pixel shares, similarities of
the class embeddings, one swatch per class, one class under several scenes."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cagnet.data.embeddings import cosine_similarity
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.viz.legends import (MAX_FIGURE_WIDTH, UNSEEN_HATCH, UNSEEN_NOTE, add_fitted_legend, class_title,
                                fit_width, unseen_label)
from cagnet.viz.masks import IGNORE_COLOUR, class_palette, colorize_mask, hatch, overlay_mask

def plot_samples(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], class_names: Sequence[str],
                 palette: np.ndarray | None = None, unseen: Iterable[int] | None = None, ncols: int = 4,
                 alpha: float = 0.5, ignore_index: int = IGNORE_INDEX, titles: Sequence[str] | None = None) -> Figure:
    """Grid of samples: each image (upper panel) above its label overlay (lower panel).

    ``images`` uint8 [H, W, 3] each, ``masks`` [H, W] ids indexing ``class_names``. The legend
    lists the classes present in the masks; classes in ``unseen`` are hatched, in the overlays
    and in the legend, where they read "name*". Panels shrink to keep the figure within
    :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH`. The figure has exactly ``2 * len(images)`` axes.
    """
    if len(images) != len(masks) or not len(images):
        raise ValueError(f"need the same positive number of images and masks, got {len(images)} and {len(masks)}")
    palette = class_palette(class_names) if palette is None else np.asarray(palette, dtype=np.uint8)
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    side = min(2.6, (MAX_FIGURE_WIDTH - 0.3) / ncols)
    fig = Figure(figsize=(side * ncols, 2 * side * nrows + 0.1), layout="constrained")
    grid = fig.add_gridspec(2 * nrows, ncols)
    present: set[int] = set()
    for k, (image, mask) in enumerate(zip(images, masks)):
        row, col = divmod(k, ncols)
        ax_image = fig.add_subplot(grid[2 * row, col])
        ax_overlay = fig.add_subplot(grid[2 * row + 1, col])
        ax_image.imshow(image)
        mask = np.asarray(mask)
        overlay = overlay_mask(image, mask, palette, alpha, ignore_index)
        ax_overlay.imshow(hatch(overlay, (mask != ignore_index) & np.isin(mask, sorted(unseen_ids)),
                                base=colorize_mask(mask, palette, ignore_index)))
        ax_image.set_title(titles[k] if titles is not None else f"sample {k}", fontsize=9)
        for ax in (ax_image, ax_overlay):
            ax.set_xticks([])
            ax.set_yticks([])
        present.update(int(v) for v in np.unique(mask))
    has_ignored = ignore_index in present
    ids = sorted(v for v in present if v != ignore_index)
    handles = [Patch(facecolor=palette[i] / 255.0, edgecolor="black" if i in unseen_ids else "none",
                     hatch=UNSEEN_HATCH if i in unseen_ids else None, label=unseen_label(class_names[i], i in unseen_ids))
               for i in ids]
    if has_ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR / 255.0, label="ignored"))
    if handles:
        add_fitted_legend(fig, handles, "outside lower center", 4, fontsize=8, frameon=False, title_fontsize=8,
                          title=class_title("classes", any(i in unseen_ids for i in ids)))
    return fig


def plot_class_pixel_stats(pixel_counts: Mapping[str, Sequence[int]], class_names: Sequence[str],
                           unseen: Iterable[int] | None = None) -> Figure:
    """Bar plot of each class's share of the labelled pixels, one bar colour per split.

    ``pixel_counts`` maps a split name ("train", "test") to counts [K] indexed like
    ``class_names``. Unseen classes get hatched bars and tick labels ending in "*". Returns a
    figure with one axes.
    """
    import pandas as pd
    import seaborn as sns

    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    rows = []
    for split, counts in pixel_counts.items():
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (len(class_names),):
            raise ValueError(f"pixel counts of {split!r} have shape {counts.shape}, expected ({len(class_names)},)")
        share = counts / counts.sum() if counts.sum() > 0 else counts
        for i, name in enumerate(class_names):
            rows.append({"class": name, "split": split, "pixel share (%)": 100.0 * share[i]})
    frame = pd.DataFrame(rows)
    fig = Figure(figsize=(fit_width(max(6.0, 0.5 * len(class_names) + 2)), 4.0), layout="constrained")
    ax = fig.add_subplot()
    sns.barplot(data=frame, x="class", y="pixel share (%)", hue="split", ax=ax, palette="deep", zorder=2)
    for container in ax.containers:  # one per split, its bars in class order
        for i, bar in enumerate(container):
            if i in unseen_ids:
                bar.set_hatch(UNSEEN_HATCH)
                bar.set_edgecolor("white")  # the hatch's colour
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels([unseen_label(n, i in unseen_ids) for i, n in enumerate(class_names)],
                       rotation=60, ha="right", fontsize=8)
    ax.set_xlabel(f"class ({UNSEEN_NOTE})" if unseen_ids else "class")
    ax.set_title("Share of labelled pixels per class")
    return fig


def plot_embedding_similarity(embeddings: np.ndarray, class_names: Sequence[str],
                              unseen: Iterable[int] | None = None, annotate: bool | None = None) -> Figure:
    """Heatmap of the cosine similarity between class embeddings [K, D] (rows = class_names).

    The colour scale spans the off-diagonal values (a sequential map from their minimum to
    their maximum): embeddings of related names are all alike (0.6 .. 1.0 on the embedded
    benchmark), and a -1 .. 1 scale would draw them in nearly one colour. The diagonal (1 by
    definition) is left blank. Unseen classes (indices into the rows) get tick labels ending
    in "*". Values are written in the cells when ``annotate`` (default: K <= 20). Returns a
    figure whose axes are the heatmap and its colour bar.
    """
    import seaborn as sns

    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(class_names):
        raise ValueError(f"embeddings must be [{len(class_names)}, D], got shape {emb.shape}")
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    similarity = np.asarray(cosine_similarity(emb), dtype=np.float64)
    diagonal = np.eye(len(class_names), dtype=bool)
    off = similarity[~diagonal]
    low, high = (float(off.min()), float(off.max())) if off.size else (0.0, 1.0)
    if high - low < 1e-6:
        low, high = low - 0.005, high + 0.005  # all alike: a visible, centred scale
    annotate = len(class_names) <= 20 if annotate is None else annotate
    labels = [unseen_label(n, i in unseen_ids) for i, n in enumerate(class_names)]
    side = min(max(5.0, 0.45 * len(class_names) + 2.5), MAX_FIGURE_WIDTH - 1.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    sns.heatmap(similarity, mask=diagonal, ax=ax, vmin=low, vmax=high, cmap="viridis", square=True,
                annot=annotate, fmt=".2f", annot_kws={"fontsize": 7}, xticklabels=labels, yticklabels=labels,
                cbar_kws={"label": "cosine similarity (range of the off-diagonal values; diagonal = 1, blank)", "shrink": 0.8})
    ax.tick_params(labelsize=8)
    ax.set_title("Cosine similarity of the class word embeddings" + (" (* = unseen class)" if unseen_ids else ""))
    return fig


def plot_class_swatches(swatches: Sequence[np.ndarray], class_names: Sequence[str], ncols: int = 4,
                        unseen: Iterable[int] | None = None) -> Figure:
    """One small image per class (e.g. a texture sample), titled with the class name.

    ``swatches[i]`` uint8 [H, W, 3] shows class ``class_names[i]``; titles of classes in
    ``unseen`` read "name*", explained in the figure's title. The figure has ``len(swatches)`` axes.
    """
    if len(swatches) != len(class_names) or not len(swatches):
        raise ValueError(f"need one swatch per class name, got {len(swatches)} and {len(class_names)}")
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    ncols = max(1, min(ncols, len(swatches)))
    nrows = -(-len(swatches) // ncols)
    side = min(2.2, (MAX_FIGURE_WIDTH - 0.3) / ncols)
    fig = Figure(figsize=(side * ncols, (side + 0.1) * nrows + (0.3 if unseen_ids else 0.0)), layout="constrained")
    for i, (swatch, name) in enumerate(zip(swatches, class_names)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(swatch)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(unseen_label(name, i in unseen_ids), fontsize=9)
    if unseen_ids:
        fig.suptitle("* = unseen class", fontsize=9)
    return fig


def plot_class_under_scenes(swatches: Sequence[np.ndarray], factors: Sequence, class_name: str,
                            unseen: bool = False, ncols: int = 6) -> Figure:
    """One class seen under several scenes: ``swatches[i]`` uint8 [H, W, 3] is the class's
    texture under the scene factor ``factors[i]`` (a :class:`cagnet.data.scenes.SceneFactors`,
    or None for the plain texture), e.g. from
    :func:`cagnet.data.synthetic.render_class_swatch` with ``factors``. Each panel is titled
    with its light (brightness gain, colour temperature shift in mired), shading and pattern
    scale; the neutral grey around the pattern shows the light. The figure has
    ``len(swatches)`` axes.
    """
    if len(swatches) != len(factors) or not len(swatches):
        raise ValueError(f"need one scene factor (or None) per swatch, got {len(swatches)} and {len(factors)}")
    ncols = max(1, min(ncols, len(swatches)))
    nrows = -(-len(swatches) // ncols)
    side = min(2.2, (MAX_FIGURE_WIDTH - 0.3) / ncols)
    fig = Figure(figsize=(side * ncols, (side + 0.45) * nrows + 0.3), layout="constrained")
    for i, (swatch, factor) in enumerate(zip(swatches, factors)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(swatch)
        ax.set_xticks([])
        ax.set_yticks([])
        if factor is None:
            title = "plain\n(no scene factor)"
        else:
            title = (f"light x{np.exp(factor.log_brightness):.2f}, {factor.mired_shift:+.0f} mired\n"
                     f"shading +-{factor.shading_log_gain:.2f}, scale x{factor.scale:.2f}")
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"{unseen_label(class_name, unseen)} under different scenes"
                 + (" (* = unseen class)" if unseen else ""), fontsize=10)
    return fig
