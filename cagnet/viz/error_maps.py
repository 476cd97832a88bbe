"""Error maps: what kind of mistake a prediction makes at each pixel, drawn in fixed colours.

In generalised zero-shot segmentation the kinds of mistake matter more than their number: a
model biased towards the seen classes labels unseen pixels with seen classes, a calibrated
one may instead spill unseen classes over seen pixels, and confusions inside one group (two
classes of one colour, say) are a different failure again. Every pixel falls in one of
:data:`ERROR_CATEGORIES` (:func:`error_categories`), drawn in :data:`ERROR_COLOURS`
(:func:`error_map`) and listed by :func:`error_legend_handles` in that fixed order.

Label maps hold evaluation indices: 0..S-1 seen classes, S..K-1 unseen ones, ``ignore_index``
unlabelled.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from matplotlib.patches import Patch

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.viz.masks import IGNORE_COLOUR

#: The categories of :func:`error_categories`, in the order of their codes 0..5.
ERROR_CATEGORIES: tuple[str, ...] = (
    "correct",
    "seen → other seen class",
    "unseen → seen class",
    "seen → unseen class",
    "unseen → other unseen class",
    "ignored (not scored)",
)
CORRECT, WRONG_SEEN, UNSEEN_AS_SEEN, SEEN_AS_UNSEEN, WRONG_UNSEEN, IGNORED = range(len(ERROR_CATEGORIES))

#: Colour of each category (uint8 [6, 3], row = code): "correct" a pale grey that the mistakes
#: stand out against; the four mistakes in hues of the Okabe-Ito set that stay apart for the
#: common colour-vision deficiencies (amber, crimson, blue, purple); "ignored" in the
#: :data:`~cagnet.viz.masks.IGNORE_COLOUR` of the class maps.
ERROR_COLOURS = np.array([
    (224, 224, 224),   # correct
    (240, 168, 0),     # seen -> other seen: amber
    (204, 20, 50),     # unseen -> seen: crimson (the typical zero-shot failure)
    (0, 114, 178),     # seen -> unseen: blue
    (160, 80, 200),    # unseen -> other unseen: purple
    tuple(IGNORE_COLOUR),
], dtype=np.uint8)


def error_categories(label: np.ndarray, prediction: np.ndarray, num_seen: int, ignore_index: int = IGNORE_INDEX,
                     num_classes: int | None = None) -> np.ndarray:
    """The category code (0..5, :data:`ERROR_CATEGORIES`) of every pixel, uint8 [H, W].

    ``label`` (ground truth) and ``prediction``: [H, W] evaluation indices (numpy or torch).
    A pixel is ``IGNORED`` when its label or its prediction is ``ignore_index`` (not scored,
    or not predicted: e.g. a training label map, whose unseen pixels are ignored); otherwise
    ``CORRECT`` when both agree, else a mistake named by the groups of the true and of the
    predicted class (seen: index < ``num_seen``; unseen: index >= ``num_seen``). With
    ``num_classes`` a label or prediction outside 0..num_classes-1 (and not ignored) raises
    ``ValueError``; without it any index >= ``num_seen`` counts as unseen.
    """
    label = _as_array(label)
    prediction = _as_array(prediction)
    if label.ndim != 2 or label.shape != prediction.shape:
        raise ValueError(f"label and prediction must be equal [H, W] maps, got {label.shape} and {prediction.shape}")
    ignored = (label == ignore_index) | (prediction == ignore_index)
    if num_classes is not None:
        for name, values in (("label", label), ("prediction", prediction)):
            bad = ~ignored & ((values < 0) | (values >= num_classes))
            if bad.any():
                raise ValueError(f"{name} holds {sorted(set(np.unique(values[bad]).tolist()))}, "
                                 f"outside the {num_classes} classes")
    true_unseen = label >= num_seen
    predicted_unseen = prediction >= num_seen
    codes = np.where(true_unseen,
                     np.where(predicted_unseen, WRONG_UNSEEN, UNSEEN_AS_SEEN),
                     np.where(predicted_unseen, SEEN_AS_UNSEEN, WRONG_SEEN)).astype(np.uint8)
    codes[label == prediction] = CORRECT
    codes[ignored] = IGNORED
    return codes


def error_map(label: np.ndarray, prediction: np.ndarray, num_seen: int, ignore_index: int = IGNORE_INDEX,
              focus: np.ndarray | None = None) -> np.ndarray:
    """:func:`error_categories` as colours (:data:`ERROR_COLOURS`), uint8 [H, W, 3].

    ``focus`` (bool [H, W], optional): pixels outside it are faded three quarters of the way to
    white (the mask explorer fades the pixels of the classes it does not show).
    """
    rgb = ERROR_COLOURS[error_categories(label, prediction, num_seen, ignore_index)]
    if focus is not None:
        focus = np.asarray(focus, dtype=bool)
        faded = np.rint(0.25 * rgb.astype(np.float64) + 0.75 * 255.0).astype(np.uint8)
        rgb = np.where(focus[..., None], rgb, faded)
    return rgb


def error_shares(codes: np.ndarray) -> dict[str, float]:
    """Share of each mistake (and of "correct") among the scored pixels of a code map (ignored
    pixels left out), in :data:`ERROR_CATEGORIES` order; NaN everywhere when nothing is scored."""
    codes = np.asarray(codes)
    counts = np.bincount(codes.ravel().astype(np.int64), minlength=len(ERROR_CATEGORIES))[:IGNORED]
    total = counts.sum()
    return {name: (float(count / total) if total else float("nan"))
            for name, count in zip(ERROR_CATEGORIES[:IGNORED], counts)}


def error_legend_handles(categories: Iterable[int] | None = None) -> list[Patch]:
    """Legend swatches of the categories (default: all six, always in code order: a fixed legend)."""
    chosen = range(len(ERROR_CATEGORIES)) if categories is None else sorted(set(int(c) for c in categories))
    return [Patch(facecolor=ERROR_COLOURS[c] / 255.0, edgecolor="0.5", linewidth=0.5, label=ERROR_CATEGORIES[c])
            for c in chosen]


def _as_array(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(np.int64)
