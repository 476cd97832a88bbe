"""Legends and layout shared by the figures: the one marking of unseen classes, legends that fit
inside their figure, the class legend of the evaluation figures, and the figure width limit.

Unseen classes are marked one way in every figure: their name ends in :data:`UNSEEN_MARK`
("red_dotted*") wherever it is written (legends, tick labels, titles, the explorer), and
whatever is drawn in their colour is hatched (legend swatches, bars, and their pixels in label
maps: :func:`cagnet.viz.masks.hatch`). Legends explain it once, in their title
(:data:`UNSEEN_NOTE`).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cagnet.viz.masks import IGNORE_COLOUR

#: Appended to the name of an unseen class wherever it is written.
UNSEEN_MARK = "*"
#: Matplotlib hatch of everything drawn in an unseen class's colour (legend swatches, bars).
UNSEEN_HATCH = "///"
#: The explanation of the marking, given once per figure (a legend title or an axes title).
UNSEEN_NOTE = "* = unseen class, hatched"

#: Widest figure (inches) at the notebooks' resolution: ``Figure`` objects shown by IPython's
#: inline backend are drawn at ``rcParams["figure.dpi"]`` (100, nothing in cagnet or the
#: notebooks changes it) with ``bbox_inches="tight"``; 17.5 in = 1,750 px leaves room under the
#: 1,800 px that notebook hygiene allows.
MAX_FIGURE_WIDTH = 17.5


def unseen_label(name: str, unseen: bool) -> str:
    """``name`` with :data:`UNSEEN_MARK` appended when ``unseen``: ``unseen_label("cat", True) == "cat*"``."""
    return f"{name}{UNSEEN_MARK}" if unseen else str(name)


def class_title(title: str, any_unseen: bool, hatched: bool = True) -> str:
    """A legend title, followed by :data:`UNSEEN_NOTE` on its own line when unseen classes are
    listed (without its "hatched" when the legend's entries are markers, which carry no hatch)."""
    note = UNSEEN_NOTE if hatched else UNSEEN_NOTE.split(",")[0]
    return f"{title}\n{note}" if any_unseen and title else (note if any_unseen else title)


def fit_width(width: float) -> float:
    """``width`` (inches), at most :data:`MAX_FIGURE_WIDTH`."""
    return min(float(width), MAX_FIGURE_WIDTH)


# Room kept free on each side of a figure legend (inches): constrained layout pads the figure edge.
_LEGEND_MARGIN = 0.12


def add_fitted_legend(figure: Figure, handles: Sequence, loc: str, ncols: int, **kwargs):
    """A figure legend that lies inside the figure, whatever the number and length of its labels.

    ``loc`` is an ``"outside ..."`` location of a constrained-layout figure. Below or above the
    axes (``"outside lower center"``) the legend gets at most ``ncols`` columns, fewer when
    they would be wider than the figure (the figure widens when even one column is); beside
    them (``"outside right center"``) it gets as many columns as it needs to be no taller than
    the figure. The figure then grows by the legend's height (below / above) or width (beside),
    so the axes keep their size. ``kwargs`` go to ``Figure.legend`` (``title``, ``fontsize``...).
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


def settle_layout(figure: Figure) -> Figure:
    """Run the constrained layout once before the figure is shown and return the figure.

    With fixed-aspect axes (images) the layout needs a second pass to converge: a figure drawn
    once (saved, or sent to a widget as a PNG) would otherwise place multi-line titles a few
    pixels above its top edge.
    """
    figure.draw_without_rendering()
    return figure


def class_legend_entries(ids: Iterable[int], class_names: Sequence[str], num_seen: int, palette: np.ndarray,
                          with_ignored: bool = False) -> list[Patch]:
    """Legend patches for evaluation class ids (0..S-1 seen, S.. unseen), in id order.

    Unseen classes read "name*" and their swatch is hatched (:data:`UNSEEN_HATCH`) with a black
    border, as their pixels are in the panels; "ignored" (in :data:`IGNORE_COLOUR`) comes last.
    """
    handles = []
    for i in sorted(ids):
        unseen = i >= num_seen
        handles.append(Patch(facecolor=palette[i] / 255.0, edgecolor="black" if unseen else "none",
                             hatch=UNSEEN_HATCH if unseen else None, label=unseen_label(class_names[i], unseen)))
    if with_ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR / 255.0, label="ignored"))
    return handles


def add_class_legend(figure: Figure, ids: Iterable[int], class_names: Sequence[str], num_seen: int,
                      palette: np.ndarray, with_ignored: bool, loc: str = "outside lower center",
                      ncols: int = 4, title: str = "classes"):
    """The legend of :func:`class_legend_entries` below the axes (by default), titled ``title`` and,
    when an unseen class is listed, :data:`UNSEEN_NOTE`. Returns the legend (None without entries)."""
    ids = sorted(ids)
    handles = class_legend_entries(ids, class_names, num_seen, palette, with_ignored)
    if not handles:
        return None
    return add_fitted_legend(figure, handles, loc, ncols, fontsize=8, frameon=False, title_fontsize=8,
                             title=class_title(title, any(i >= num_seen for i in ids)))
