"""Class colours and label maps drawn as colours: the palette every figure uses, a label map
as RGB, and a label map blended over its image.

Label maps are integer arrays of raw or mapped class ids; ``ignore_index``
(:data:`cagnet.data.IGNORE_INDEX`, 255) marks unlabelled / ignored pixels and is drawn in
:data:`IGNORE_COLOUR`.
"""
from __future__ import annotations

import colorsys
import re
from typing import Sequence

import numpy as np

from cagnet.data.transforms import IGNORE_INDEX

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


def colorize_mask(mask: np.ndarray, palette: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
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
                 ignore_index: int = IGNORE_INDEX) -> np.ndarray:
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
