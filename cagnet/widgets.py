"""Interactive views for the notebooks: thin ipywidgets layers on the figures of :mod:`cagnet.viz`.

Each view is drawn by a pure function (:func:`explorer_view`: a matplotlib ``Figure`` and an
HTML summary) that runs without a notebook frontend; the widget only keeps the controls'
state and shows the figure as a PNG. ``ipywidgets`` (the ``notebooks`` extra) is imported
inside the functions that build widgets, so importing this module does not need it.
"""
from __future__ import annotations

import html
import io
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cagnet import viz
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.metrics import per_image_iou
from cagnet.viz.error_maps import ERROR_CATEGORIES, ERROR_COLOURS, error_categories, error_shares
from cagnet.viz.legends import UNSEEN_NOTE, unseen_label

__all__ = ["default_method", "explorer_view", "iou_summary_html", "mask_explorer"]


def _percent(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100.0 * value:.1f}"


def default_method(methods: Iterable[str]) -> str:
    """The method the explorer opens on: ``CaGNet`` when present, else the first whose name starts
    with "cagnet" (any case: ``CaGNet+ST``, ``cagnet_mixed``), else the first. The method of the
    paper is what a reader of the tutorial looks at first; baselines are for comparison."""
    names = list(methods)
    if not names:
        raise ValueError("no method")
    for name in names:
        if name == "CaGNet":
            return name
    return next((name for name in names if str(name).lower().startswith("cagnet")), names[0])


def _errors_html(shares: Mapping[str, float]) -> str:
    """One line of the error map's categories with their share of the scored pixels, each with its colour."""
    parts = []
    for name, colour in zip(ERROR_CATEGORIES, ERROR_COLOURS):
        if name in shares and math.isfinite(shares[name]):
            swatch = (f'<span style="display: inline-block; width: 0.8em; height: 0.8em; border: 1px solid #808080; '
                      f'background: rgb({colour[0]}, {colour[1]}, {colour[2]})"></span>')
            parts.append(f"{swatch} {html.escape(name)}: {_percent(shares[name])}")
    return "error map (% of scored pixels):<br>" + "<br>".join(parts) if parts else ""


def iou_summary_html(scores: Mapping, class_names: Sequence[str], num_seen: int,
                     visible_classes: Iterable[int] | None = None, title: str | None = None,
                     errors: Mapping[str, float] | None = None) -> str:
    """The per-image scores of :func:`cagnet.metrics.per_image_iou` (called with ``num_seen``) as HTML.

    One line with the image's mIoU, seen / unseen mIoU and hIoU (%), then (with ``errors``,
    :func:`cagnet.viz.error_maps.error_shares`) the share of each kind of mistake, then a table
    of the IoU of each class present in the ground truth or the prediction; unseen classes
    read "name*" (explained under the table), classes outside ``visible_classes`` are greyed.
    """
    visible = None if visible_classes is None else {int(c) for c in visible_classes}
    lines = []
    if title:
        lines.append(f"<b>{html.escape(title)}</b><br>")
    lines.append(f"mIoU <b>{_percent(scores['miou'])}</b> &middot; seen {_percent(scores.get('seen_miou'))} "
                 f"&middot; unseen {_percent(scores.get('unseen_miou'))} &middot; hIoU "
                 f"<b>{_percent(scores.get('hiou'))}</b>")
    if errors:
        lines.append("<br>" + _errors_html(errors))
    rows = []
    for c in scores["classes"]:
        name = html.escape(unseen_label(class_names[c], c >= num_seen))
        style = ' style="color: #999999"' if visible is not None and c not in visible else ""
        rows.append(f"<tr{style}><td>{name}</td><td style=\"text-align: right\">"
                    f"{_percent(float(scores['class_iou'][c]))}</td></tr>")
    lines.append("<table><tr><th>class</th><th>IoU (%)</th></tr>" + "".join(rows) + "</table>")
    if any(c >= num_seen for c in scores["classes"]):
        lines.append(f"<small>{html.escape(UNSEEN_NOTE)}</small>")
    return "\n".join(lines)


def _check_explorer_inputs(images: Sequence, labels: Sequence, predictions: Mapping[str, Sequence]) -> None:
    if not len(images) or len(labels) != len(images):
        raise ValueError(f"need the same positive number of images and labels, got {len(images)} and {len(labels)}")
    if not predictions:
        raise ValueError("predictions holds no method")
    for method, maps in predictions.items():
        if len(maps) != len(images):
            raise ValueError(f"predictions[{method!r}] has {len(maps)} maps, expected one per image ({len(images)})")


def explorer_view(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                  predictions: Mapping[str, Sequence[np.ndarray]], class_names: Sequence[str], num_seen: int,
                  index: int = 0, method: str | None = None, visible_classes: Iterable[int] | None = None,
                  alpha: float = 1.0, ignore_index: int = IGNORE_INDEX) -> tuple[Figure, str]:
    """What :func:`mask_explorer` shows for one state of its controls.

    Image ``index`` with ``method``'s prediction (default: :func:`default_method`, CaGNet when
    present): :func:`cagnet.viz.plot_method_panels` (image | ground truth | prediction | error
    map; ground truth and prediction both drawn as class colours over the image with opacity
    ``alpha``, 1 = flat maps; only ``visible_classes`` coloured, the other pixels faded in the
    error map) and :func:`iou_summary_html` of :func:`cagnet.metrics.per_image_iou` with the
    share of each kind of mistake. Returns ``(figure, html)``.
    """
    _check_explorer_inputs(images, labels, predictions)
    method = default_method(predictions) if method is None else method
    if method not in predictions:
        raise ValueError(f"method {method!r} is not one of {', '.join(map(repr, predictions))}")
    if not 0 <= index < len(images):
        raise ValueError(f"image index {index} is outside 0..{len(images) - 1}")
    visible = None if visible_classes is None else [int(c) for c in visible_classes]
    label, prediction = labels[index], predictions[method][index]
    figure = viz.plot_method_panels(images[index], label, {method: prediction}, class_names, num_seen,
                                    alpha=alpha, visible_classes=visible, ignore_index=ignore_index)
    scores = per_image_iou(label, prediction, len(class_names), ignore_index, num_seen)
    shares = error_shares(error_categories(label, prediction, num_seen, ignore_index))
    summary = iou_summary_html(scores, class_names, num_seen, visible, title=f"image {index}: {method}",
                               errors=shares)
    return figure, summary


def _png_bytes(figure: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def mask_explorer(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                  predictions: Mapping[str, Sequence[np.ndarray]], class_names: Sequence[str], num_seen: int,
                  alpha: float = 1.0, dpi: int = 90, ignore_index: int = IGNORE_INDEX, method: str | None = None):
    """Browse test images, each method's predicted masks and their error maps.

    ``images`` uint8 [H, W, 3]; ``labels`` and ``predictions[method][k]`` [H, W] evaluation
    indices (0..S-1 seen, S..K-1 unseen, ``ignore_index`` unlabelled). Controls: an image
    slider, a method dropdown (opening on ``method``, default :func:`default_method`: CaGNet
    when present), an opacity slider (of the class colours over the image, in the ground truth
    and the prediction alike; 1 = flat maps) and a class selection (unseen classes end in
    "*"); the view is :func:`explorer_view` (figure shown as a PNG at ``dpi``, and the
    per-image IoU and error shares as HTML), redrawn whenever a control changes.

    Returns an ``ipywidgets.VBox``: ``children[0]`` = HBox(image ``IntSlider``, method
    ``Dropdown``, opacity ``FloatSlider``); ``children[1]`` = HBox(classes ``SelectMultiple``,
    the figure ``Image``, the scores ``HTML``). Setting a control's ``value`` redraws.
    """
    import ipywidgets as widgets

    _check_explorer_inputs(images, labels, predictions)
    image_slider = widgets.IntSlider(value=0, min=0, max=len(images) - 1, step=1, description="image",
                                     continuous_update=False)
    method = default_method(predictions) if method is None else method
    if method not in predictions:
        raise ValueError(f"method {method!r} is not one of {', '.join(map(repr, predictions))}")
    method_dropdown = widgets.Dropdown(options=list(predictions), value=method, description="method")
    opacity_slider = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="opacity",
                                         continuous_update=False, readout_format=".2f")
    class_options = [(unseen_label(name, i >= num_seen), i) for i, name in enumerate(class_names)]
    class_select = widgets.SelectMultiple(options=class_options, value=tuple(range(len(class_names))),
                                          rows=min(len(class_names), 12), description="classes")
    # the figure keeps its aspect ratio (a stretched flex item would distort it) and shrinks to
    # the output's width; the rows wrap (scores below the figure) instead of scrolling sideways
    view = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start", max_width="100%",
                                                             height="auto", flex="0 1 auto"))
    scores = widgets.HTML(layout=widgets.Layout(flex="1 1 16em", min_width="16em"))

    def redraw(_change=None) -> None:
        figure, summary = explorer_view(images, labels, predictions, class_names, num_seen,
                                        index=image_slider.value, method=method_dropdown.value,
                                        visible_classes=class_select.value, alpha=opacity_slider.value,
                                        ignore_index=ignore_index)
        view.value = _png_bytes(figure, dpi)
        scores.value = summary

    for control in (image_slider, method_dropdown, opacity_slider, class_select):
        control.observe(redraw, names="value")
    redraw()
    wrapping_row = dict(flex_flow="row wrap", align_items="flex-start")
    return widgets.VBox([widgets.HBox([image_slider, method_dropdown, opacity_slider],
                                      layout=widgets.Layout(**wrapping_row)),
                         widgets.HBox([class_select, view, scores], layout=widgets.Layout(**wrapping_row))])
