"""Class colours and label maps drawn as colours: the palette every figure uses, a label map
as RGB, and a label map blended over its image.

Label maps are integer arrays of raw or mapped class ids; ``ignore_index``
(:data:`cagnet.data.IGNORE_INDEX`, 255) marks unlabelled / ignored pixels and is drawn in
:data:`IGNORE_COLOUR`.
"""
from __future__ import annotations

import colorsys
import re
from functools import lru_cache
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


#: Colour words a class name may contain -> (hue angle in CIELAB, in degrees; largest chroma;
#: (lowest, highest) CIELAB lightness L*). The shades of a word keep its hue and differ in
#: lightness and chroma (:func:`class_palette`); the lightness ranges keep neighbouring hues
#: (red / orange / brown, grey / black / white) apart.
COLOUR_WORDS: dict[str, tuple[float, float, tuple[float, float]]] = {
    "red": (35.0, 110.0, (25.0, 85.0)),
    "orange": (62.0, 90.0, (55.0, 85.0)),
    "brown": (55.0, 45.0, (25.0, 50.0)),
    "yellow": (95.0, 100.0, (50.0, 95.0)),
    "green": (138.0, 120.0, (30.0, 88.0)),
    "cyan": (205.0, 60.0, (50.0, 90.0)),
    "blue": (285.0, 110.0, (22.0, 85.0)),
    "purple": (310.0, 90.0, (25.0, 75.0)),
    "violet": (310.0, 90.0, (25.0, 75.0)),
    "magenta": (330.0, 110.0, (40.0, 75.0)),
    "pink": (355.0, 50.0, (70.0, 92.0)),
    "grey": (0.0, 0.0, (35.0, 75.0)),
    "gray": (0.0, 0.0, (35.0, 75.0)),
    "black": (0.0, 0.0, (8.0, 25.0)),
    "white": (0.0, 0.0, (88.0, 100.0)),
}


_SYNONYMS = {"gray": "grey", "violet": "purple"}


# Categorical colours for classes without a colour word stay this far (RGB distance) from the
# colour-word shades of the same palette.
_MIN_CATEGORICAL_DISTANCE = 60.0

# Shades of a coloured word keep at least this CIELAB chroma: below it a hue is hard to name
# (a pale red and a pale yellow both read as "off-white"), and two words whose hues are 50
# degrees or more apart then stay >= 2 * 35 * sin(25 deg) ~ 30 apart in (a*, b*) alone.
_MIN_CHROMA = 35.0

# Candidate shades of a word: lightness and chroma steps (CIELAB units) of the search grid.
_LIGHTNESS_STEP, _CHROMA_STEP = 2.5, 4.0


# ---------------------------------------------------------------- CIELAB (D65, sRGB primaries)
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (or 0..255 floats) [..., 3] -> CIELAB float64 [..., 3] (L* 0..100, a*, b*; D65).

    Euclidean distance in CIELAB (CIE76 delta E) approximates how different two colours look:
    about 2.3 is just noticeable side by side, 20 or more reads as another colour at a glance.
    """
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _DELTA ** 3, np.cbrt(xyz), xyz / (3 * _DELTA ** 2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                    axis=-1)


def _lch_to_linear_rgb(lightness, chroma, hue) -> np.ndarray:
    """CIE LCh (hue in degrees) -> linear sRGB float64 [..., 3], unclipped (out of gamut outside 0..1)."""
    lightness, chroma, hue = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (lightness, chroma, hue)))
    fy = (lightness + 16.0) / 116.0
    f = np.stack([fy + chroma * np.cos(np.radians(hue)) / 500.0, fy, fy - chroma * np.sin(np.radians(hue)) / 200.0],
                 axis=-1)
    xyz = np.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4.0 / 29.0)) * _WHITE
    return xyz @ _XYZ_TO_RGB.T


def _linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    c = np.clip(linear, 0.0, 1.0)
    c = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1.0 / 2.4) - 0.055)
    return np.rint(255.0 * c).astype(np.uint8)


def _max_chroma(lightness: np.ndarray, hue: float) -> np.ndarray:
    """Largest chroma [n] at each lightness [n] whose colour of ``hue`` is inside the sRGB gamut (bisection)."""
    low, high = np.zeros(len(lightness)), np.full(len(lightness), 150.0)
    for _ in range(30):
        middle = (low + high) / 2.0
        linear = _lch_to_linear_rgb(lightness, middle, hue)
        inside = ((linear >= -1e-9) & (linear <= 1.0 + 1e-9)).all(axis=-1)
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    return low


def _word_candidates(word: str) -> tuple[np.ndarray, np.ndarray]:
    """The shades a class of colour ``word`` may get: (L*, C*) float64 [n, 2] and sRGB uint8 [n, 3].

    A grid over the word's lightness range and over chroma from :data:`_MIN_CHROMA` (0 for
    grey, black, white) up to the word's largest chroma and the gamut, at the word's hue.
    """
    hue, top, (low, high) = COLOUR_WORDS[word]
    lightness = np.arange(low, high + 1e-9, _LIGHTNESS_STEP)
    reachable = np.minimum(_max_chroma(lightness, hue), top)
    rows = []
    for value, most in zip(lightness, reachable):
        least = min(_MIN_CHROMA, top)
        rows.extend((value, chroma) for chroma in (np.arange(least, most + 1e-9, _CHROMA_STEP) if most >= least else ()))
    points = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    return points, _linear_to_srgb8(_lch_to_linear_rgb(points[:, 0], points[:, 1], hue))


def _farthest_shades(candidates: np.ndarray, count: int, fixed: np.ndarray) -> list[int]:
    """Indices of ``count`` rows of ``candidates`` (CIELAB [n, 3]) that lie far apart from each
    other and from ``fixed`` (CIELAB [m, 3], shades already given to other colour words).

    Greedy farthest-point selection from every start; the set whose smallest distance (within
    the set and to ``fixed``, rounded to whole units) is largest wins, then the one whose
    members lie farthest apart from each other (another colour word can be the bottleneck),
    then the first start (deterministic).
    """
    between = np.sqrt(((candidates[:, None] - candidates[None]) ** 2).sum(-1))
    to_fixed = (np.sqrt(((candidates[:, None] - fixed[None]) ** 2).sum(-1)).min(axis=1) if len(fixed)
                else np.full(len(candidates), np.inf))
    best, best_score = [], (-1.0, -1.0)
    for start in range(len(candidates)):
        chosen, nearest = [start], np.minimum(between[start], to_fixed)
        for _ in range(count - 1):
            chosen.append(int(np.argmax(nearest)))
            nearest = np.minimum(nearest, between[chosen[-1]])
        inside = float(between[np.ix_(chosen, chosen)][~np.eye(count, dtype=bool)].min())
        score = (float(np.floor(min(inside, float(to_fixed[chosen].min())))), inside)
        if score > best_score:
            best, best_score = chosen, score
    return best


@lru_cache(maxsize=64)
def _colour_word_shades(groups: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, tuple[int, int, int]]:
    """sRGB shade of every class of ``groups`` ((word, sorted member names) in :data:`COLOUR_WORDS` order)."""
    shades: dict[str, tuple[int, int, int]] = {}
    for word, members in groups:
        points, rgb = _word_candidates(word)
        lab = rgb_to_lab(rgb)
        if len(members) == 1:
            # a lone class of its colour gets the colour itself: its most saturated shade
            # (mid-range lightness for grey, black, white)
            if points[:, 1].max() > 0:
                picked = [int(np.argmax(points[:, 1] - 1e-3 * np.abs(points[:, 0] - 55.0)))]
            else:
                picked = [int(np.argmin(np.abs(points[:, 0] - points[:, 0].mean())))]
        else:
            fixed = rgb_to_lab(np.array(list(shades.values()), dtype=np.float64).reshape(-1, 3))
            picked = _farthest_shades(lab, len(members), fixed)
            picked.sort(key=lambda i: (points[i, 0], points[i, 1]))  # darkest first
        for name, index in zip(members, picked):
            shades[name] = tuple(int(v) for v in rgb[index])
    return shades


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

    ``classes``: the class names (preferred), or their number K. Every figure of
    :mod:`cagnet.viz` colours classes with this function.

    A class whose name contains a colour word (:func:`colour_word`: ``red_dotted``, ``dark
    blue``) is drawn in a shade of that colour, so that the figure never contradicts the name
    (a benchmark whose classes are named after colours would mislead a reader otherwise).
    The classes naming one colour must still be told apart at a glance (on the embedded
    benchmark the typical error is red_dotted -> red_checkered), so they get shades of the
    colour's hue (fixed CIELAB hue angle, :data:`COLOUR_WORDS`) that differ strongly in
    lightness and chroma: among the shades of that hue inside the sRGB gamut, with a chroma of
    at least 35 (the hue stays nameable), the set that lies farthest apart in CIELAB, also
    from the shades already given to the other colour words. They are handed out darkest
    first in alphabetical order of the names, so that on the embedded benchmark
    (``<colour>_<pattern>``) the pattern sets the lightness rank the same way in every colour
    (checkered darkest, then dotted, striped, wavy). A lone class of a colour gets the
    colour's most saturated shade.
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
    groups: dict[str, set[str]] = {}
    words = [colour_word(name) for name in names]
    for name, word in zip(names, words):
        if word is not None:
            groups.setdefault(word, set()).add(name)
    order = [word for word in COLOUR_WORDS if word in groups]  # fixed order: independent of the names' order
    shade = {name: np.array(rgb, dtype=np.uint8) for name, rgb in
             _colour_word_shades(tuple((word, tuple(sorted(groups[word]))) for word in order)).items()}
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


def hatch(rgb: np.ndarray, where: np.ndarray, period: int | None = None, base: np.ndarray | None = None) -> np.ndarray:
    """Diagonal stripes ("///", the hatch of unseen classes in every legend) over the pixels of ``where``.

    ``rgb`` uint8 [H, W, 3] (a label map as colours or an overlay), ``where`` bool [H, W] (e.g.
    the pixels of unseen classes). Stripe pixels (``(row + col) % period < period // 3``) are
    blended half-way towards black on light colours and towards white on dark ones, so the
    stripes show on every class colour while the colour stays recognisable between them.
    ``base`` (uint8 [H, W, 3], e.g. the flat class colours under an overlay) decides light or
    dark per pixel instead of ``rgb``: over a textured image the stripes then keep one shade
    per class.
    ``period`` (pixels) defaults to about 1/16 of the image's larger side (at least 4): the
    stripes look alike whatever the image's resolution once it is scaled to a panel.
    Returns a new uint8 [H, W, 3].
    """
    rgb = np.asarray(rgb)
    where = np.asarray(where, dtype=bool)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != where.shape:
        raise ValueError(f"rgb [H, W, 3] and where [H, W] must match, got {rgb.shape} and {where.shape}")
    if period is None:
        period = max(4, int(round(max(where.shape) / 16.0)))
    rows, cols = np.indices(where.shape)
    stripe = where & ((rows + cols) % period < max(1, period // 3))
    out = rgb.astype(np.uint8, copy=True)
    colours = out[stripe].astype(np.float64)
    reference = colours if base is None else np.asarray(base)[stripe].astype(np.float64)
    luminance = reference @ np.array([0.299, 0.587, 0.114])
    target = np.where(luminance[:, None] > 140.0, 0.0, 255.0)
    out[stripe] = np.rint(0.5 * colours + 0.5 * target).astype(np.uint8)
    return out
