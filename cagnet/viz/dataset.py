"""Figures of a dataset: sample grids with label overlays, class pixel shares, similarities of
the class embeddings, one swatch per class."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cagnet.data.embeddings import cosine_similarity
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.viz.legends import add_fitted_legend, legend_label, style_unseen_texts
from cagnet.viz.masks import IGNORE_COLOUR, class_palette, overlay_mask

def plot_samples(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], class_names: Sequence[str],
                 palette: np.ndarray | None = None, unseen: Iterable[int] | None = None, ncols: int = 4,
                 alpha: float = 0.5, ignore_index: int = IGNORE_INDEX, titles: Sequence[str] | None = None) -> Figure:
    """Grid of samples: each image (upper panel) above its label overlay (lower panel).

    ``images`` uint8 [H, W, 3] each, ``masks`` [H, W] ids indexing ``class_names``. The legend
    lists the classes present in the masks; classes in ``unseen`` are marked "(unseen)" in
    bold italics. The figure has exactly ``2 * len(images)`` axes.
    """
    if len(images) != len(masks) or not len(images):
        raise ValueError(f"need the same positive number of images and masks, got {len(images)} and {len(masks)}")
    palette = class_palette(class_names) if palette is None else np.asarray(palette, dtype=np.uint8)
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    fig = Figure(figsize=(2.6 * ncols, 5.2 * nrows + 0.1), layout="constrained")
    grid = fig.add_gridspec(2 * nrows, ncols)
    present: set[int] = set()
    for k, (image, mask) in enumerate(zip(images, masks)):
        row, col = divmod(k, ncols)
        ax_image = fig.add_subplot(grid[2 * row, col])
        ax_overlay = fig.add_subplot(grid[2 * row + 1, col])
        ax_image.imshow(image)
        ax_overlay.imshow(overlay_mask(image, mask, palette, alpha, ignore_index))
        ax_image.set_title(titles[k] if titles is not None else f"sample {k}", fontsize=9)
        for ax in (ax_image, ax_overlay):
            ax.set_xticks([])
            ax.set_yticks([])
        present.update(int(v) for v in np.unique(mask))
    has_ignored = ignore_index in present
    ids = sorted(v for v in present if v != ignore_index)
    handles = [Patch(facecolor=palette[i] / 255.0, label=legend_label(class_names[i], i in unseen_ids)) for i in ids]
    flags = [i in unseen_ids for i in ids]
    if has_ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR / 255.0, label="ignored"))
        flags.append(False)
    if handles:
        add_fitted_legend(fig, handles, "outside lower center", 4, flags, fontsize=8, frameon=False)
    return fig


def plot_class_pixel_stats(pixel_counts: Mapping[str, Sequence[int]], class_names: Sequence[str],
                           unseen: Iterable[int] | None = None) -> Figure:
    """Bar plot of each class's share of the labelled pixels, one bar colour per split.

    ``pixel_counts`` maps a split name ("train", "test") to counts [K] indexed like
    ``class_names``. Unseen classes get a shaded column and bold italic tick labels ending in
    "*". Returns a figure with one axes.
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
    fig = Figure(figsize=(max(6.0, 0.5 * len(class_names) + 2), 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i in unseen_ids:
        ax.axvspan(i - 0.5, i + 0.5, color="0.9", zorder=0)
    sns.barplot(data=frame, x="class", y="pixel share (%)", hue="split", ax=ax, palette="deep", zorder=2)
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels([f"{n}*" if i in unseen_ids else n for i, n in enumerate(class_names)],
                       rotation=60, ha="right", fontsize=8)
    style_unseen_texts(ax.get_xticklabels(), [i in unseen_ids for i in range(len(class_names))])
    ax.set_xlabel("class (* = unseen, shaded)" if unseen_ids else "class")
    ax.set_title("Share of labelled pixels per class")
    return fig


def plot_embedding_similarity(embeddings: np.ndarray, class_names: Sequence[str],
                              unseen: Iterable[int] | None = None, annotate: bool | None = None) -> Figure:
    """Heatmap of the cosine similarity between class embeddings [K, D] (rows = class_names).

    Unseen classes (indices into the rows) get bold italic tick labels ending in "*". Values
    are written in the cells when ``annotate`` (default: K <= 20). Returns a figure whose
    axes are the heatmap and its colour bar.
    """
    import seaborn as sns

    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(class_names):
        raise ValueError(f"embeddings must be [{len(class_names)}, D], got shape {emb.shape}")
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    similarity = cosine_similarity(emb)
    annotate = len(class_names) <= 20 if annotate is None else annotate
    labels = [f"{n}*" if i in unseen_ids else n for i, n in enumerate(class_names)]
    side = max(5.0, 0.45 * len(class_names) + 2.5)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    sns.heatmap(similarity, ax=ax, vmin=-1.0, vmax=1.0, cmap="vlag", square=True, annot=annotate,
                fmt=".2f", annot_kws={"fontsize": 6}, xticklabels=labels, yticklabels=labels,
                cbar_kws={"label": "cosine similarity", "shrink": 0.8})
    flags = [i in unseen_ids for i in range(len(class_names))]
    style_unseen_texts(ax.get_xticklabels(), flags)
    style_unseen_texts(ax.get_yticklabels(), flags)
    ax.tick_params(labelsize=8)
    ax.set_title("Cosine similarity of the class word embeddings" + (" (* = unseen)" if unseen_ids else ""))
    return fig


def plot_class_swatches(swatches: Sequence[np.ndarray], class_names: Sequence[str], ncols: int = 4,
                        unseen: Iterable[int] | None = None) -> Figure:
    """One small image per class (e.g. a texture sample), titled with the class name.

    ``swatches[i]`` uint8 [H, W, 3] shows class ``class_names[i]``; titles of classes in
    ``unseen`` read "name (unseen)" in bold italics. The figure has ``len(swatches)`` axes.
    """
    if len(swatches) != len(class_names) or not len(swatches):
        raise ValueError(f"need one swatch per class name, got {len(swatches)} and {len(class_names)}")
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    ncols = max(1, min(ncols, len(swatches)))
    nrows = -(-len(swatches) // ncols)
    fig = Figure(figsize=(2.2 * ncols, 2.3 * nrows), layout="constrained")
    for i, (swatch, name) in enumerate(zip(swatches, class_names)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(swatch)
        ax.set_xticks([])
        ax.set_yticks([])
        title = ax.set_title(legend_label(name, i in unseen_ids), fontsize=9)
        style_unseen_texts([title], [i in unseen_ids])
    return fig
