"""Legends and layout shared by the figures: class labels marked unseen, legends that fit
inside their figure, and the class legend of the evaluation figures."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cagnet.viz.masks import IGNORE_COLOUR

def legend_label(name: str, unseen: bool) -> str:
    return f"{name} (unseen)" if unseen else name


def style_unseen_texts(texts, flags) -> None:
    for text, is_unseen in zip(texts, flags):
        if is_unseen:
            text.set_fontweight("bold")
            text.set_fontstyle("italic")


# Room kept free on each side of a figure legend (inches): constrained layout pads the figure edge.
_LEGEND_MARGIN = 0.12


def add_fitted_legend(figure: Figure, handles: Sequence, loc: str, ncols: int,
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
        style_unseen_texts(legend.get_texts(), unseen_flags or [])
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
                          with_ignored: bool = False) -> tuple[list[Patch], list[bool]]:
    """Legend patches for evaluation class ids (0..S-1 seen, S.. unseen) and their unseen flags.

    Unseen classes read "name (unseen)" (to be set in bold italics by :func:`style_unseen_texts`)
    and their patch is hatched with a black border, so they stand out even in greyscale.
    """
    handles, flags = [], []
    for i in sorted(ids):
        unseen = i >= num_seen
        handles.append(Patch(facecolor=palette[i] / 255.0, edgecolor="black" if unseen else "none",
                             hatch="///" if unseen else None, label=legend_label(class_names[i], unseen)))
        flags.append(unseen)
    if with_ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR / 255.0, label="ignored"))
        flags.append(False)
    return handles, flags


def add_class_legend(figure: Figure, ids: Iterable[int], class_names: Sequence[str], num_seen: int,
                      palette: np.ndarray, with_ignored: bool, loc: str = "outside lower center",
                      ncols: int = 4) -> None:
    handles, flags = class_legend_entries(ids, class_names, num_seen, palette, with_ignored)
    if not handles:
        return
    add_fitted_legend(figure, handles, loc, ncols, flags, fontsize=8, frameon=False)
