"""Figures of label blocks: a mosaic of small label blocks, such as the bank of CaGNetv2's
patch-wise step 2 (:mod:`cagnet.patches`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.viz.evaluation import _as_numpy
from cagnet.viz.legends import MAX_FIGURE_WIDTH, UNSEEN_NOTE, add_class_legend, fit_width
from cagnet.viz.masks import class_palette, colorize_mask, hatch

#: Colour of the gaps between blocks (white: no class colour is pure white).
GAP_COLOUR = np.array([255, 255, 255], dtype=np.uint8)


def label_block_mosaic(blocks, ncols: int = 16, cell: int = 12) -> np.ndarray:
    """Blocks ``[B, s, s]`` laid out row-major, ``ncols`` per row, as one label map: each
    position a ``cell`` x ``cell`` square, blocks apart by a gap of ``ignore`` pixels (255),
    ``[rows * (s * cell + gap) - gap, ...]`` int64."""
    blocks = _as_numpy(blocks).astype(np.int64)
    if blocks.ndim != 3 or blocks.shape[1] != blocks.shape[2] or not len(blocks):
        raise ValueError(f"label blocks: expected a non-empty array [B, s, s], got shape {list(blocks.shape)}")
    count, side = blocks.shape[0], blocks.shape[1] * cell
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    gap = max(1, cell // 3)
    mosaic = np.full((nrows * (side + gap) - gap, ncols * (side + gap) - gap), IGNORE_INDEX, dtype=np.int64)
    square = np.ones((cell, cell), dtype=np.int64)
    for k, block in enumerate(blocks):
        row, col = divmod(k, ncols)
        top, left = row * (side + gap), col * (side + gap)
        mosaic[top:top + side, left:left + side] = np.kron(block, square)
    return mosaic


def plot_label_blocks(blocks, class_names: Sequence[str], num_seen: int, ncols: int = 16,
                      title: str | None = None) -> Figure:
    """Label blocks ``[B, s, s]`` of evaluation class indices (0..S-1 seen, S.. unseen) as a
    mosaic (:func:`label_block_mosaic`) in the class palette, unseen classes hatched, with a
    legend of the classes present (unseen ones marked "name*"). At most
    :data:`~cagnet.viz.legends.MAX_FIGURE_WIDTH` wide. One axes."""
    cell = 12
    mosaic = label_block_mosaic(blocks, ncols, cell)
    values = np.unique(mosaic[mosaic != IGNORE_INDEX])
    palette = class_palette(list(class_names))
    flat = colorize_mask(mosaic, palette)   # a ValueError for labels outside the classes
    labelled = mosaic != IGNORE_INDEX
    rgb = hatch(flat, labelled & (mosaic >= num_seen), period=max(4, cell // 2), base=flat)
    rgb[~labelled] = GAP_COLOUR
    width = fit_width(max(4.0, min(MAX_FIGURE_WIDTH, mosaic.shape[1] / 55.0)))
    figure = Figure(figsize=(width, width * mosaic.shape[0] / mosaic.shape[1] + 1.0), layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    any_unseen = bool((values >= num_seen).any())
    ax.set_title((title or f"{len(_as_numpy(blocks))} label blocks") + (f" ({UNSEEN_NOTE})" if any_unseen else ""),
                 fontsize=9)
    add_class_legend(figure, values.tolist(), class_names, num_seen, palette, with_ignored=False)
    return figure
