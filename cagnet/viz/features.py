"""Figures of features: maps on the feature grid (the contextual module's gates and latent code),
many-channel maps as colour, receptive fields, projections of real and generated features."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cagnet.analysis import fit_pca
from cagnet.viz.legends import MAX_FIGURE_WIDTH, add_fitted_legend, class_title, unseen_label
from cagnet.viz.masks import class_palette

def _unit_range(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant array becomes 0.5 everywhere."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.full(values.shape, 0.5)
    return (values - low) / (high - low)


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
    side = min(2.1, (MAX_FIGURE_WIDTH - 0.4) / ncols)  # at most MAX_FIGURE_WIDTH wide
    fig = Figure(figsize=(side * ncols + 0.4, side * rows + 0.9), layout="constrained")
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
    side = min(2.6, (MAX_FIGURE_WIDTH - 0.3) / len(maps))  # at most MAX_FIGURE_WIDTH wide
    fig = Figure(figsize=(side * len(maps), side + 0.3), layout="constrained")
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

    ``points`` [N, 2] (e.g. :meth:`cagnet.analysis.PCAProjection.transform`), ``class_ids`` [N] indices into
    ``class_names``, ``generated`` [N] bool (True = generated). Real features are dots,
    generated ones crosses; each class's real mean is a large circle and its generated mean a
    large star, both edged in black, so the distance between them is visible. With ``unseen``
    the seen classes and the unseen classes get a panel each (same axis limits); otherwise
    one panel. The legend lists the classes present (unseen ones end in "*") and the markers.
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
                      label=unseen_label(class_names[c], c in unseen_ids)) for c in present]
    handles += [Line2D([], [], marker=".", linestyle="", color="0.3", label="real pixel"),
                Line2D([], [], marker="x", linestyle="", color="0.3", label="generated"),
                Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black", markersize=9,
                       label="mean of real"),
                Line2D([], [], marker="*", linestyle="", color="white", markeredgecolor="black", markersize=12,
                       label="mean of generated")]
    fig.suptitle(title)
    add_fitted_legend(fig, handles, "outside right center", 1, fontsize=8, frameon=False, title_fontsize=8,
                      title=class_title("classes", any(c in unseen_ids for c in present), hatched=False))
    return fig
