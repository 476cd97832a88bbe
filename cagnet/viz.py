"""Figures for the notebooks.

Pure functions: they return a matplotlib ``Figure`` or a numpy array and never call
``plt.show()``; the caller displays or saves the result.

Label maps are integer arrays of raw or mapped class ids; ``ignore_index`` (255) marks
unlabelled / ignored pixels and is drawn in :data:`IGNORE_COLOUR`.
"""
from __future__ import annotations

import colorsys
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

IGNORE_COLOUR = np.array([0, 0, 0], dtype=np.uint8)

# 20 distinct colours (the "tab20" qualitative set, strong shades first); beyond 20 classes more
# are spread around the hue circle by the golden angle.
_BASE_PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
], dtype=np.uint8)


def class_palette(num_classes: int) -> np.ndarray:
    """Fixed, distinct RGB colours, uint8 [num_classes, 3]; the same for every call."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if num_classes <= len(_BASE_PALETTE):
        return _BASE_PALETTE[:num_classes].copy()
    extra = []
    for k in range(num_classes - len(_BASE_PALETTE)):
        hue = (0.61803398875 * (k + 1)) % 1.0
        value = (0.95, 0.75, 0.55)[k % 3]  # alternate brightness so close hues still differ
        saturation = (0.65, 0.9)[(k // 3) % 2]
        extra.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)])
    return np.concatenate([_BASE_PALETTE, np.asarray(extra, dtype=np.uint8)])


def colorize_mask(mask: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Label map [H, W] (int) -> RGB uint8 [H, W, 3]; ``ignore_index`` in :data:`IGNORE_COLOUR`.

    Raises ``ValueError`` when a label is neither ``ignore_index`` nor a palette row.
    """
    mask = np.asarray(mask)
    palette = np.asarray(palette, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    ignored = mask == ignore_index
    labels = np.where(ignored, 0, mask).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        bad = sorted(set(np.unique(labels[(labels < 0) | (labels >= len(palette))]).tolist()))
        raise ValueError(f"labels {bad} have no palette colour (palette has {len(palette)} rows)")
    rgb = palette[labels] if len(palette) else np.zeros(mask.shape + (3,), dtype=np.uint8)
    rgb[ignored] = IGNORE_COLOUR
    return rgb


def overlay_mask(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
                 ignore_index: int = 255) -> np.ndarray:
    """Blend class colours over an RGB image: ``(1 - alpha) * image + alpha * colour``.

    ``image`` uint8 [H, W, 3], ``mask`` [H, W]; ignored pixels are blended with
    :data:`IGNORE_COLOUR` (darkened), so they stay visible as "ignored". Returns uint8 [H, W, 3].
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != np.shape(mask):
        raise ValueError(f"image [H, W, 3] and mask [H, W] must match, got {image.shape} and {np.shape(mask)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = colorize_mask(mask, palette, ignore_index).astype(np.float64)
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _legend_label(name: str, unseen: bool) -> str:
    return f"{name} (unseen)" if unseen else name


def _style_unseen_texts(texts, flags) -> None:
    for text, is_unseen in zip(texts, flags):
        if is_unseen:
            text.set_fontweight("bold")
            text.set_fontstyle("italic")


def plot_samples(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], class_names: Sequence[str],
                 palette: np.ndarray | None = None, unseen: Iterable[int] | None = None, ncols: int = 4,
                 alpha: float = 0.5, ignore_index: int = 255, titles: Sequence[str] | None = None) -> Figure:
    """Grid of samples: each image (upper panel) above its label overlay (lower panel).

    ``images`` uint8 [H, W, 3] each, ``masks`` [H, W] ids indexing ``class_names``. The legend
    lists the classes present in the masks; classes in ``unseen`` are marked "(unseen)" in
    bold italics. The figure has exactly ``2 * len(images)`` axes.
    """
    if len(images) != len(masks) or not len(images):
        raise ValueError(f"need the same positive number of images and masks, got {len(images)} and {len(masks)}")
    palette = class_palette(len(class_names)) if palette is None else np.asarray(palette, dtype=np.uint8)
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    fig = Figure(figsize=(2.6 * ncols, 5.2 * nrows + 0.6), layout="constrained")
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
    handles = [Patch(facecolor=palette[i] / 255.0, label=_legend_label(class_names[i], i in unseen_ids)) for i in ids]
    flags = [i in unseen_ids for i in ids]
    if has_ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR / 255.0, label="ignored"))
        flags.append(False)
    legend = fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8,
                        frameon=False)
    _style_unseen_texts(legend.get_texts(), flags)
    return fig


def class_pixel_counts(masks: Iterable[np.ndarray], num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Pixels per class over label maps, int64 [num_classes] (``ignore_index`` and ids >=
    num_classes are not counted)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        values = np.asarray(mask).ravel().astype(np.int64)
        values = values[(values != ignore_index) & (values >= 0) & (values < num_classes)]
        counts += np.bincount(values, minlength=num_classes)
    return counts


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
    _style_unseen_texts(ax.get_xticklabels(), [i in unseen_ids for i in range(len(class_names))])
    ax.set_xlabel("class (* = unseen, shaded)" if unseen_ids else "class")
    ax.set_title("Share of labelled pixels per class")
    return fig


def cosine_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows, [K, K] float64."""
    emb = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norms == 0, 1.0, norms)
    return unit @ unit.T


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
    _style_unseen_texts(ax.get_xticklabels(), flags)
    _style_unseen_texts(ax.get_yticklabels(), flags)
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
        title = ax.set_title(_legend_label(name, i in unseen_ids), fontsize=9)
        _style_unseen_texts([title], [i in unseen_ids])
    return fig
