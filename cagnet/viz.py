"""Figures for the notebooks.

Pure functions: they return a matplotlib ``Figure`` or a numpy array and never call
``plt.show()``; the caller displays or saves the result.

Label maps are integer arrays of raw or mapped class ids; ``ignore_index`` (255) marks
unlabelled / ignored pixels and is drawn in :data:`IGNORE_COLOUR`.
"""
from __future__ import annotations

import colorsys
import math
import re
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

#: Colour words a class name may contain -> (hue in degrees, saturation, lightness range) in HLS.
#: Classes naming the same colour share its hue and are told apart by lightness within the range;
#: the ranges keep neighbouring hues (red / orange / brown, grey / black / white) apart.
COLOUR_WORDS: dict[str, tuple[float, float, tuple[float, float]]] = {
    "red": (0.0, 0.75, (0.28, 0.68)),
    "orange": (28.0, 0.95, (0.50, 0.72)),
    "brown": (25.0, 0.50, (0.20, 0.40)),
    "yellow": (52.0, 0.90, (0.32, 0.70)),
    "green": (125.0, 0.65, (0.22, 0.62)),
    "cyan": (185.0, 0.80, (0.32, 0.68)),
    "blue": (220.0, 0.75, (0.28, 0.70)),
    "purple": (275.0, 0.55, (0.28, 0.68)),
    "violet": (275.0, 0.55, (0.28, 0.68)),
    "magenta": (305.0, 0.80, (0.32, 0.62)),
    "pink": (335.0, 0.85, (0.70, 0.86)),
    "grey": (0.0, 0.0, (0.36, 0.70)),
    "gray": (0.0, 0.0, (0.36, 0.70)),
    "black": (0.0, 0.0, (0.10, 0.26)),
    "white": (0.0, 0.0, (0.86, 0.97)),
}
_SYNONYMS = {"gray": "grey", "violet": "purple"}
# Categorical colours for classes without a colour word stay this far (RGB distance) from the
# colour-word shades of the same palette.
_MIN_CATEGORICAL_DISTANCE = 60.0


def _categorical_palette(num_classes: int) -> np.ndarray:
    """uint8 [num_classes, 3]: tab20, then golden-angle hues (a prefix of any longer call)."""
    if num_classes <= len(_BASE_PALETTE):
        return _BASE_PALETTE[:num_classes].copy()
    extra = []
    for k in range(num_classes - len(_BASE_PALETTE)):
        hue = (0.61803398875 * (k + 1)) % 1.0
        value = (0.95, 0.75, 0.55)[k % 3]  # alternate brightness so close hues still differ
        saturation = (0.65, 0.9)[(k // 3) % 2]
        extra.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)])
    return np.concatenate([_BASE_PALETTE, np.asarray(extra, dtype=np.uint8)])


def colour_word(name: str) -> str | None:
    """The first colour word of :data:`COLOUR_WORDS` among the words of a class name (split at
    ``_``, ``-``, ``/`` and spaces, case ignored; synonyms folded: gray -> grey, violet ->
    purple), or None: ``colour_word("green_striped") == "green"``, ``colour_word("sky") is None``."""
    for word in re.split(r"[\s_\-/]+", str(name).lower()):
        if word in COLOUR_WORDS:
            return _SYNONYMS.get(word, word)
    return None


def class_palette(classes: int | Sequence[str]) -> np.ndarray:
    """Fixed, distinct RGB colours, uint8 [K, 3], row k for class k; the same for every call.

    ``classes``: the class names (preferred), or their number K.

    A class whose name contains a colour word (:func:`colour_word`: ``red_dotted``, ``dark
    blue``) is drawn in a shade of that colour, so that the figure never contradicts the name
    (a benchmark whose classes are named after colours would mislead a reader otherwise).
    Classes naming the same colour are told apart by lightness: they get evenly spaced
    lightness levels in the colour's range, darkest first in alphabetical order of their
    names, so that on the embedded benchmark (``<colour>_<pattern>``) the pattern sets the
    lightness the same way in every colour (checkered darkest, then dotted, striped, wavy).
    The legends name each class, which tells the shades of one colour apart.
    Every other class gets a colour of a categorical palette (tab20, then golden-angle hues)
    in alphabetical order of the names, skipping colours close to the colour-word shades of
    the same palette. Given only a number K, class k gets the k-th categorical colour.

    With names, a colour depends on the class's name and on the set of names, not on their
    order: raw-label order (notebook 01) and evaluation order (seen classes first, notebooks
    04-06) colour the same class alike. Duplicate names share a colour.
    """
    if isinstance(classes, (int, np.integer)):
        if classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {classes}")
        return _categorical_palette(int(classes))
    names = [str(name) for name in classes]
    palette = np.zeros((len(names), 3), dtype=np.uint8)
    groups: dict[str, list[str]] = {}
    words = [colour_word(name) for name in names]
    for name, word in zip(names, words):
        if word is not None and name not in groups.setdefault(word, []):
            groups[word].append(name)
    shade: dict[str, np.ndarray] = {}
    for word, members in groups.items():
        hue, saturation, (low, high) = COLOUR_WORDS[word]
        levels = np.linspace(low, high, len(members)) if len(members) > 1 else [(low + high) / 2.0]
        for name, lightness in zip(sorted(members), levels):
            rgb = colorsys.hls_to_rgb(hue / 360.0, float(lightness), saturation)
            shade[name] = np.array([round(255 * c) for c in rgb], dtype=np.uint8)
    taken = np.array(list(shade.values()), dtype=np.float64).reshape(-1, 3)
    candidates = _categorical_palette(len(names) + len(_BASE_PALETTE))
    k = 0
    for name in sorted({name for name, word in zip(names, words) if word is None}):
        while True:
            if k == len(candidates):
                candidates = _categorical_palette(2 * len(candidates))
            colour = candidates[k]
            k += 1
            if not len(taken) or np.sqrt(((taken - colour) ** 2).sum(axis=1)).min() >= _MIN_CATEGORICAL_DISTANCE:
                break
        shade[name] = colour
    for i, name in enumerate(names):
        palette[i] = shade[name]
    return palette


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


# Room kept free on each side of a figure legend (inches): constrained layout pads the figure edge.
_LEGEND_MARGIN = 0.12


def _add_fitted_legend(figure: Figure, handles: Sequence, loc: str, ncols: int,
                       unseen_flags: Sequence[bool] | None = None, **kwargs):
    """A figure legend that lies inside the figure, whatever the number and length of its labels.

    ``loc`` is an ``"outside ..."`` location of a constrained-layout figure. Below or above the
    axes (``"outside lower center"``) the legend gets at most ``ncols`` columns, fewer when
    they would be wider than the figure (the figure widens when even one column is); beside
    them (``"outside right center"``) it gets as many columns as it needs to be no taller than
    the figure. The figure then grows by the legend's height (below / above) or width (beside),
    so the axes keep their size. Labels flagged in ``unseen_flags`` are set in bold italics.
    Returns the legend.
    """
    from matplotlib.backends.backend_agg import RendererAgg

    dpi = figure.dpi
    width_in, height_in = figure.get_size_inches()
    renderer = RendererAgg(max(1, int(width_in * dpi)), max(1, int(height_in * dpi)), dpi)
    beside = "right" in loc or "left" in loc
    room = (height_in if beside else width_in) - 2 * _LEGEND_MARGIN

    def place(columns: int):
        legend = figure.legend(handles=handles, loc=loc, ncols=columns, **kwargs)
        _style_unseen_texts(legend.get_texts(), unseen_flags or [])
        box = legend.get_window_extent(renderer)
        return legend, box.width / dpi, box.height / dpi

    count = max(1, len(handles))
    columns = max(1, min(ncols, count))
    legend, width, height = place(columns)
    while (height if beside else width) > room and (columns < count if beside else columns > 1):
        legend.remove()
        columns = columns + 1 if beside else columns - 1
        legend, width, height = place(columns)
    if beside:
        figure.set_size_inches(width_in + width + _LEGEND_MARGIN, max(height_in, height + 2 * _LEGEND_MARGIN))
    else:
        figure.set_size_inches(max(width_in, width + 2 * _LEGEND_MARGIN), height_in + height + _LEGEND_MARGIN)
    return legend


def _settle_layout(figure: Figure) -> Figure:
    """Run the constrained layout once before the figure is shown and return the figure.

    With fixed-aspect axes (images) the layout needs a second pass to converge: a figure drawn
    once (saved, or sent to a widget as a PNG) would otherwise place multi-line titles a few
    pixels above its top edge.
    """
    figure.draw_without_rendering()
    return figure


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
    handles = [Patch(facecolor=palette[i] / 255.0, label=_legend_label(class_names[i], i in unseen_ids)) for i in ids]
    flags = [i in unseen_ids for i in ids]
    if has_ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR / 255.0, label="ignored"))
        flags.append(False)
    if handles:
        _add_fitted_legend(fig, handles, "outside lower center", 4, flags, fontsize=8, frameon=False)
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


# --------------------------------------------------------------------------------------------
# maps on the feature grid (contextual module), feature projections, training curves
# --------------------------------------------------------------------------------------------
def _unit_range(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant array becomes 0.5 everywhere."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.full(values.shape, 0.5)
    return (values - low) / (high - low)


class PCAProjection:
    """A fitted principal-component projection (plain numpy arrays, no state beyond them).

    Attributes:
        mean: [D] mean of the rows the projection was fitted on.
        components: [k, D] orthonormal principal directions, strongest first. The sign of
            each is fixed (its largest-magnitude entry is positive), so the same data always
            gives the same picture.
        explained_variance_ratio: [k] share of the total variance along each direction.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray, explained_variance_ratio: np.ndarray) -> None:
        self.mean = mean
        self.components = components
        self.explained_variance_ratio = explained_variance_ratio

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Rows [N, D] -> coordinates [N, k] along the components."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features must be [N, {self.mean.shape[0]}], got shape {features.shape}")
        return (features - self.mean) @ self.components.T

    def axis_labels(self) -> list[str]:
        """"PC1 (42 % of variance)", ... for plot axes."""
        return [f"PC{i + 1} ({100 * r:.0f} % of variance)" for i, r in enumerate(self.explained_variance_ratio)]


def fit_pca(features: np.ndarray, n_components: int = 2) -> PCAProjection:
    """Principal components of the rows of ``features`` [N, D] by an SVD of the centred rows.

    Returns a :class:`PCAProjection`; ``fit_pca(x).transform(y)`` projects other rows (e.g.
    generated features) into the same plane as ``x``.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {x.shape}")
    if not 1 <= n_components <= min(x.shape):
        raise ValueError(f"n_components must be in 1..{min(x.shape)}, got {n_components}")
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:n_components]
    signs = np.sign(components[np.arange(n_components), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular ** 2
    total = variance.sum()
    ratio = variance[:n_components] / total if total > 0 else np.zeros(n_components)
    return PCAProjection(mean, components, ratio)


def channels_to_rgb(maps: np.ndarray) -> np.ndarray:
    """Show a many-channel map as colour: each pixel's channel vector projected on the first
    three principal components (fitted over all pixels given), each scaled to [0, 1].

    ``maps`` [C, H, W] or [N, C, H, W] (e.g. the latent code mu) -> float [H, W, 3] or
    [N, H, W, 3]. Pixels with similar channel vectors get similar colours; with one or two
    channels the missing colour components are 0.5. A constant map is uniform grey.
    """
    maps = np.asarray(maps, dtype=np.float64)
    single = maps.ndim == 3
    if single:
        maps = maps[None]
    if maps.ndim != 4:
        raise ValueError(f"maps must be [C, H, W] or [N, C, H, W], got shape {maps.shape}")
    n, c, h, w = maps.shape
    pixels = maps.transpose(0, 2, 3, 1).reshape(-1, c)
    rgb = np.full((pixels.shape[0], 3), 0.5)
    k = min(3, c, pixels.shape[0])
    if k >= 1 and np.ptp(pixels, axis=0).max() > 0:
        coords = fit_pca(pixels, k).transform(pixels)
        for i in range(k):
            rgb[:, i] = _unit_range(coords[:, i])
    rgb = rgb.reshape(n, h, w, 3)
    return rgb[0] if single else rgb


def plot_spatial_maps(images: Sequence[np.ndarray], maps: Mapping[str, Sequence[np.ndarray]],
                      cmap: str = "viridis", row_titles: Sequence[str] | None = None,
                      image_title: str = "image", shared_scale: bool = True,
                      value_ranges: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """Grid of per-pixel maps next to the images they come from.

    One row per sample: the image (uint8 [H, W, 3]) first, then one column per entry of
    ``maps``; ``maps[name][row]`` is either a scalar map [h, w] (drawn with ``cmap``, any grid,
    e.g. the feature grid, stretched over the image's extent) or an RGB map [h, w, 3] in [0, 1]
    (drawn as is, e.g. :func:`channels_to_rgb`). With ``shared_scale`` a scalar column uses one
    colour range for all rows (so rows compare) and gets one colour bar; ``value_ranges``
    fixes the range of a column by name. The figure has ``rows * (1 + len(maps))`` image axes
    plus one colour-bar axes per scalar column.
    """
    rows = len(images)
    if not rows:
        raise ValueError("need at least one image")
    for name, column in maps.items():
        if len(column) != rows:
            raise ValueError(f"maps[{name!r}] has {len(column)} entries, expected one per image ({rows})")
    value_ranges = dict(value_ranges or {})
    names = list(maps)
    ncols = 1 + len(names)
    fig = Figure(figsize=(2.1 * ncols + 0.4, 2.1 * rows + 0.9), layout="constrained")
    axes = np.asarray(fig.subplots(rows, ncols, squeeze=False))
    for r, image in enumerate(images):
        image = np.asarray(image)
        height, width = image.shape[:2]
        extent = (0, width, height, 0)
        axes[r, 0].imshow(image, extent=extent)
        axes[r, 0].set_ylabel(row_titles[r] if row_titles is not None else f"sample {r}", fontsize=9)
        for c, name in enumerate(names, start=1):
            value = np.asarray(maps[name][r], dtype=np.float64)
            ax = axes[r, c]
            if value.ndim == 3 and value.shape[2] == 3:
                ax.imshow(np.clip(value, 0.0, 1.0), extent=extent, interpolation="nearest")
            elif value.ndim == 2:
                if name in value_ranges:
                    vmin, vmax = value_ranges[name]
                elif shared_scale:
                    column = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps[name]])
                    vmin, vmax = float(column.min()), float(column.max())
                else:
                    vmin, vmax = float(value.min()), float(value.max())
                artist = ax.imshow(value, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
                if r == rows - 1 and (shared_scale or name in value_ranges):
                    bar = fig.colorbar(artist, ax=axes[:, c].tolist(), location="bottom", shrink=0.9, pad=0.02)
                    bar.ax.locator_params(nbins=3)  # few ticks: long labels (1.0005) must not overlap
                    bar.ax.tick_params(labelsize=8)
            else:
                raise ValueError(f"maps[{name!r}][{r}] must be [h, w] or [h, w, 3], got shape {value.shape}")
    for c, title in enumerate([image_title, *names]):
        axes[0, c].set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_receptive_fields(maps: Sequence[np.ndarray], titles: Sequence[str], centre: tuple[int, int],
                          extents: Sequence[int | None] | None = None, background: np.ndarray | None = None,
                          cmap: str = "magma") -> Figure:
    """Effective receptive fields: one panel per map of gradient magnitudes.

    ``maps[k]`` [H, W] >= 0 (e.g. ``|d output[centre] / d input|`` summed over channels) is
    scaled to [0, 1] on its own (the shape matters, not the size of the gradients). With
    ``background`` (uint8 RGB [H, W, 3], the input image) the map is drawn over it, more
    opaque where the gradient is larger. ``centre`` (row, col) is marked with a cross;
    ``extents[k]`` (a side length in map cells, or None) draws the theoretical receptive
    field as a square around it. One axes per map.
    """
    import matplotlib
    from matplotlib.patches import Rectangle

    if len(maps) != len(titles) or not len(maps):
        raise ValueError(f"need one title per map, got {len(maps)} maps and {len(titles)} titles")
    if extents is not None and len(extents) != len(maps):
        raise ValueError(f"need one extent per map, got {len(extents)} for {len(maps)} maps")
    fig = Figure(figsize=(2.6 * len(maps), 2.9), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for k, (ax, field, title) in enumerate(zip(axes, maps, titles)):
        field = np.asarray(field, dtype=np.float64)
        if field.ndim != 2 or (field < 0).any():
            raise ValueError(f"maps[{k}] must be a non-negative [H, W] array, got shape {field.shape}")
        scaled = field / field.max() if field.max() > 0 else field
        if background is not None:
            if np.shape(background)[:2] != field.shape:
                raise ValueError(f"background {np.shape(background)} and map {field.shape} differ in size")
            ax.imshow(background)
            colours = matplotlib.colormaps[cmap](scaled)
            colours[..., 3] = np.sqrt(scaled)  # faint where the gradient is small
            ax.imshow(colours)
        else:
            ax.imshow(scaled, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.plot([centre[1]], [centre[0]], marker="+", color="cyan", markersize=10, mew=1.5)
        side = None if extents is None else extents[k]
        if side is not None:
            half = side / 2.0
            ax.add_patch(Rectangle((centre[1] - half, centre[0] - half), side, side, fill=False,
                                   edgecolor="cyan", linestyle="--", linewidth=1.2))
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_feature_projection(points: np.ndarray, class_ids: np.ndarray, generated: np.ndarray,
                            class_names: Sequence[str], unseen: Iterable[int] | None = None,
                            palette: np.ndarray | None = None, axis_labels: Sequence[str] | None = None,
                            title: str = "Real and generated pixel features") -> Figure:
    """2-D scatter of real and generated features, one colour per class.

    ``points`` [N, 2] (e.g. :meth:`PCAProjection.transform`), ``class_ids`` [N] indices into
    ``class_names``, ``generated`` [N] bool (True = generated). Real features are dots,
    generated ones crosses; each class's real mean is a large circle and its generated mean a
    large star, both edged in black, so the distance between them is visible. With ``unseen``
    the seen classes and the unseen classes get a panel each (same axis limits); otherwise
    one panel. The legend lists the classes present (unseen ones marked) and the markers.
    """
    from matplotlib.lines import Line2D

    points = np.asarray(points, dtype=np.float64)
    class_ids = np.asarray(class_ids).astype(np.int64)
    generated = np.asarray(generated).astype(bool)
    if points.ndim != 2 or points.shape[1] != 2 or class_ids.shape != (len(points),) or generated.shape != (len(points),):
        raise ValueError(f"need points [N, 2], class_ids [N] and generated [N], got {points.shape}, "
                         f"{class_ids.shape}, {generated.shape}")
    if len(points) and (class_ids.min() < 0 or class_ids.max() >= len(class_names)):
        raise ValueError(f"class ids must index class_names (0..{len(class_names) - 1})")
    palette = class_palette(class_names) if palette is None else np.asarray(palette, dtype=np.uint8)
    unseen_ids = {int(u) for u in (unseen if unseen is not None else [])}
    present = sorted(set(class_ids.tolist()))
    if unseen_ids:
        panels = [("seen classes", [c for c in present if c not in unseen_ids]),
                  ("unseen classes", [c for c in present if c in unseen_ids])]
    else:
        panels = [("all classes", present)]
    fig = Figure(figsize=(5.2 * len(panels), 5.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True)[0]
    for ax, (panel_title, classes) in zip(axes, panels):
        for c in classes:
            colour = palette[c] / 255.0
            for is_generated, marker in ((False, "."), (True, "x")):
                chosen = (class_ids == c) & (generated == is_generated)
                if chosen.any():
                    ax.scatter(points[chosen, 0], points[chosen, 1], s=10 if marker == "." else 12, marker=marker,
                               color=colour, alpha=0.35, linewidths=0.8, rasterized=True)
        for c in classes:  # means on top of every cloud
            colour = palette[c] / 255.0
            for is_generated, marker in ((False, "o"), (True, "*")):
                chosen = (class_ids == c) & (generated == is_generated)
                if chosen.any():
                    centre = points[chosen].mean(axis=0)
                    ax.scatter([centre[0]], [centre[1]], s=220 if marker == "*" else 110, marker=marker,
                               color=colour, edgecolors="black", linewidths=1.2, zorder=5)
        ax.set_title(panel_title, fontsize=10)
        if axis_labels is not None:
            ax.set_xlabel(axis_labels[0])
            ax.set_ylabel(axis_labels[1])
    handles = [Line2D([], [], marker="o", linestyle="", color=palette[c] / 255.0,
                      label=_legend_label(class_names[c], c in unseen_ids)) for c in present]
    flags = [c in unseen_ids for c in present]
    handles += [Line2D([], [], marker=".", linestyle="", color="0.3", label="real pixel"),
                Line2D([], [], marker="x", linestyle="", color="0.3", label="generated"),
                Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black", markersize=9,
                       label="mean of real"),
                Line2D([], [], marker="*", linestyle="", color="white", markeredgecolor="black", markersize=12,
                       label="mean of generated")]
    flags += [False] * 4
    fig.suptitle(title)
    _add_fitted_legend(fig, handles, "outside right center", 1, flags, fontsize=8, frameon=False)
    return fig


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first entries average what exists)."""
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[start]) / (index - start)


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


# ------------------------------------------------------------------ training run figures
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
    """mIoU of the seen and unseen classes and their harmonic mean (hIoU) against the iteration."""
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
    ax.set_title("test scores")
    ax.legend(fontsize="small")
    return figure


def plot_predictions(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                     class_names: Sequence[str], num_seen: int, ignore_index: int = 255) -> Figure:
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
        _add_fitted_legend(figure, handles, "outside lower center", 6, fontsize="small",
                           title="classes (* = unseen)")
    return figure


# --------------------------------------------------------------------------------------------
# evaluation figures: overlays with legends, per-image IoU, confusion, per-class IoU, calibration
# --------------------------------------------------------------------------------------------
def _class_legend_entries(ids: Iterable[int], class_names: Sequence[str], num_seen: int, palette: np.ndarray,
                          with_ignored: bool = False) -> tuple[list[Patch], list[bool]]:
    """Legend patches for evaluation class ids (0..S-1 seen, S.. unseen) and their unseen flags.

    Unseen classes read "name (unseen)" (to be set in bold italics by :func:`_style_unseen_texts`)
    and their patch is hatched with a black border, so they stand out even in greyscale.
    """
    handles, flags = [], []
    for i in sorted(ids):
        unseen = i >= num_seen
        handles.append(Patch(facecolor=palette[i] / 255.0, edgecolor="black" if unseen else "none",
                             hatch="///" if unseen else None, label=_legend_label(class_names[i], unseen)))
        flags.append(unseen)
    if with_ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR / 255.0, label="ignored"))
        flags.append(False)
    return handles, flags


def _add_class_legend(figure: Figure, ids: Iterable[int], class_names: Sequence[str], num_seen: int,
                      palette: np.ndarray, with_ignored: bool, loc: str = "outside lower center",
                      ncols: int = 4) -> None:
    handles, flags = _class_legend_entries(ids, class_names, num_seen, palette, with_ignored)
    if not handles:
        return
    _add_fitted_legend(figure, handles, loc, ncols, flags, fontsize=8, frameon=False)


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
                        alpha: float = 0.5, visible_classes: Iterable[int] | None = None, ignore_index: int = 255,
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
    _add_class_legend(figure, present, class_names, num_seen, palette, has_ignored, ncols=3)
    return figure


def _as_numpy(values) -> np.ndarray:
    """numpy copy of an array-like or a (CPU or device) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def per_image_iou(label: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = 255,
                  num_seen: int | None = None) -> dict:
    """IoU of each class on one image, from :func:`cagnet.metrics.gzsl_scores` of its confusion.

    ``label`` / ``prediction``: [H, W] evaluation indices (``ignore_index`` pixels of the label
    are not counted). Returns a dict with ``class_iou`` (float64 [num_classes], NaN for a class
    absent from both the labelled ground truth and the prediction), ``classes`` (the ids whose
    IoU is defined) and ``miou`` (their mean); with ``num_seen`` also ``seen_miou``,
    ``unseen_miou`` and ``hiou`` (classes ``num_seen..num_classes-1`` are unseen). Fractions.
    """
    import torch

    from cagnet.metrics import confusion_matrix, gzsl_scores

    target = torch.as_tensor(_as_numpy(label).astype(np.int64))
    predicted = torch.as_tensor(_as_numpy(prediction).astype(np.int64))
    confusion = confusion_matrix(target, predicted, num_classes, ignore_index)
    split = num_classes if num_seen is None else num_seen
    scores = gzsl_scores(confusion, list(range(split)), list(range(split, num_classes)))
    class_iou = np.asarray(scores["class_iou"], dtype=np.float64)
    result = {"class_iou": class_iou, "classes": [int(i) for i in np.flatnonzero(~np.isnan(class_iou))],
              "miou": scores["miou"]}
    if num_seen is not None:
        result.update({key: scores[key] for key in ("seen_miou", "unseen_miou", "hiou")})
    return result


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
    _style_unseen_texts(ax.get_xticklabels(), [num_seen <= i < num_classes for i in range(len(column_labels))])
    _style_unseen_texts(ax.get_yticklabels(), [i >= num_seen for i in range(num_classes)])
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
    from cagnet.metrics import harmonic_mean

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
    _style_unseen_texts(ax.get_xticklabels(), [i >= num_seen for i in range(num_classes)])
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
                       visible_classes: Iterable[int] | None = None, ignore_index: int = 255,
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
    _add_class_legend(figure, shown, class_names, num_seen, palette, has_ignored, ncols=6)
    return _settle_layout(figure)


# --------------------------------------------------------------------------------------------
# the CaGNet pipeline diagram (README)
# --------------------------------------------------------------------------------------------
_PIPELINE_COLOURS = {
    "real": ("#dbe9f6", "#1f77b4"),      # (fill, edge): image -> backbone -> real feature
    "context": ("#e7e1f1", "#6a51a3"),   # contextual module and latent code
    "fake": ("#fde5cc", "#d9630b"),      # word embeddings, generator, generated features
    "judge": ("#e3f1e0", "#2c8a2c"),     # classifier / discriminator
    "step2": ("#f5f5f5", "#555555"),
}


def plot_pipeline() -> Figure:
    """The CaGNet pipeline as a box-and-arrow diagram (one axes, axis off).

    Step 1 (top): image -> DeepLabV2 backbone with ASPP -> semantic feature h -> contextual
    module (dilated convolutions and gates) -> latent code z (mu, logvar; KL loss) -> real
    feature x = sigmoid(h + h * sigmoid(z)) -> classifier / discriminator; the word
    embedding w of each pixel's class with the same z -> generator -> fake feature, judged by
    the same classifier / discriminator (GAN and classification losses), MMD between real
    and fake features. Step 2 (bottom): seen and unseen embeddings with z ~ N(0, I) -> the
    generator -> fake features (unseen ones included) that finetune the classifier.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    figure = Figure(figsize=(11.8, 6.5))
    ax = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 130)
    ax.set_ylim(0, 72)
    ax.set_axis_off()
    boxes: dict[str, tuple[float, float, float, float]] = {}

    def box(key: str, x: float, y: float, width: float, height: float, text: str, kind: str,
            fontsize: float = 11.5, weight: str = "normal") -> None:
        fill, edge = _PIPELINE_COLOURS[kind]
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                    boxstyle="round,pad=0.3,rounding_size=1.2", facecolor=fill, edgecolor=edge,
                                    linewidth=1.8, zorder=2))
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight=weight, zorder=3,
                linespacing=1.3)
        boxes[key] = (x, y, width, height)

    def side(key: str, where: str, shift: float = 0.0) -> tuple[float, float]:
        x, y, width, height = boxes[key]
        pad = 0.5  # the rounded border sits 0.3 outside the box
        return {"left": (x - width / 2 - pad, y + shift), "right": (x + width / 2 + pad, y + shift),
                "top": (x + shift, y + height / 2 + pad), "bottom": (x + shift, y - height / 2 - pad)}[where]

    def arrow(start: tuple[float, float], end: tuple[float, float], colour: str = "0.25", style: str = "-|>",
              connection: str = "arc3", linestyle: str = "-", width: float = 1.8) -> None:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=16, color=colour,
                                     linewidth=width, linestyle=linestyle, connectionstyle=connection,
                                     shrinkA=0, shrinkB=0, zorder=1))

    loss_style = {"fontsize": 10.5, "color": "#b2182b", "fontstyle": "italic"}

    # ---- step 1, real path (top row)
    top = 56.0
    ax.text(1.5, 70.0, "Step 1: train the segmentation network and the feature generator on the seen classes",
            fontsize=13, fontweight="bold", va="top")
    box("image", 7, top, 10, 9, "image", "real")
    box("backbone", 24, top, 15, 11, "DeepLabV2\nResNet-101\n+ ASPP", "real")
    box("h", 40, top, 10, 9, "semantic\nfeature $h$", "real")
    box("context", 57.5, top, 19, 11, "contextual module\ndilated 3x3 convs\n(1, 2, 5) + gates", "context")
    box("z", 77, top, 13, 9, "latent code $z$\n$(\\mu, \\log\\sigma^2)$", "context")
    box("x", 98, top, 19, 9, "real feature\n$x = \\sigma(h + h\\,\\sigma(z))$", "real")
    box("judge", 120.5, 47, 16, 23, "classifier\n(S+U+1 logits)\n\n+\n\ndiscriminator\n(real / fake)", "judge")
    arrow(side("image", "right"), side("backbone", "left"))
    arrow(side("backbone", "right"), side("h", "left"))
    arrow(side("h", "right"), side("context", "left"))
    arrow(side("context", "right"), side("z", "left"))
    arrow(side("z", "right"), side("x", "left"))
    arrow(side("h", "top"), side("x", "top", -5.0), connection="arc3,rad=-0.12")  # h also enters x directly
    arrow(side("x", "right"), side("judge", "left", 6.0))
    ax.text(75.5, 46.0, "KL$(q(z\\,|\\,h)\\,\\|\\,\\mathcal{N}(0, I))$", ha="right", **loss_style)

    # ---- step 1, generated path (middle row)
    middle = 36.0
    box("w", 48, middle, 21, 9, "word embedding $w$\nof each pixel's class", "fake")
    box("generator", 77, middle, 15, 9, "generator\n(1x1-conv MLP)", "fake")
    box("fake", 98, middle, 19, 9, "fake feature\n$\\tilde{x} = G(w, z)$", "fake")
    arrow(side("w", "right"), side("generator", "left"), colour="#d9630b")
    arrow(side("z", "bottom"), side("generator", "top"), colour="#6a51a3")
    arrow(side("generator", "right"), side("fake", "left"), colour="#d9630b")
    arrow(side("fake", "right"), side("judge", "left", -6.0), colour="#d9630b")
    arrow(side("x", "bottom"), side("fake", "top"), colour="#b2182b", style="<|-|>", linestyle="--", width=1.5)
    ax.text(99.5, (top + middle) / 2, "MMD", va="center", **loss_style)
    ax.text(119.5, 33.0, "GAN loss (real vs. fake)\n+ classification loss\non real and fake pixels", va="top",
            ha="center", **loss_style)

    # ---- step 2 (bottom row)
    ax.plot([1.5, 128.5], [24.5, 24.5], color="0.6", linestyle="--", linewidth=1.0)
    ax.text(1.5, 22.5, "Step 2: finetune the classifier on generated features, unseen classes included",
            fontsize=13, fontweight="bold", va="top")
    bottom = 9.0
    box("w2", 20, bottom, 33, 9, "word embeddings of seen + unseen\nclasses (unseen drawn more often)", "fake")
    box("noise", 52, bottom, 12, 9, "$z \\sim \\mathcal{N}(0, I)$", "context")
    box("generator2", 77, bottom, 15, 9, "generator", "fake")
    box("fake2", 98, bottom, 19, 9, "fake features,\nunseen included", "fake")
    box("classifier2", 120.5, bottom, 16, 9, "classifier\n(finetuned)", "judge", weight="bold")
    arrow(side("w2", "top", 8.0), side("generator2", "top", -3.0), colour="#d9630b", connection="arc3,rad=-0.25")
    arrow(side("noise", "right"), side("generator2", "left"), colour="#6a51a3")
    arrow(side("generator2", "right"), side("fake2", "left"), colour="#d9630b")
    arrow(side("fake2", "right"), side("classifier2", "left"), colour="#d9630b")
    ax.text(120.5, bottom + 6.5, "classification loss", ha="center", **loss_style)
    return figure
