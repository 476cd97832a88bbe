"""Drawing of the synthetic scenes: a few large "stuff" regions (a Voronoi partition on smoothly
warped coordinates), objects on top (ellipses, star-shaped polygons, blobs), and the patterns
that fill a region (striped, dotted, checkered, wavy) with a random orientation, period and
phase. The embedded benchmark (:mod:`cagnet.data.synthetic`) and the pretraining scenes
(:mod:`cagnet.data.pretraining`) are drawn with these functions, each from its own random
stream (``rng``, a ``numpy.random.Generator``).

Coordinates ``yy``, ``xx`` are [H, W] grids of pixel centres, in pixel units or normalised to
[0, 1] as each function says.
"""
from __future__ import annotations

import math

import numpy as np

from cagnet.errors import ConfigError

#: Mean grey level of a pattern's background, shared by every class.
NEUTRAL_GREY = 145
_SHAPES = ("ellipse", "polygon", "blob")


def count_range(value, name: str) -> tuple[int, int]:
    """A scene parameter given as a ``(min, max)`` pair of counts (a tuple, or a list as JSON
    gives it) as a tuple of ints, so that configurations compare structurally; anything else
    is a ConfigError naming ``name``."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ConfigError(f"{name} must be a (min, max) pair, got {value!r}")
    return int(value[0]), int(value[1])


def smooth_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, waves: int = 4,
                  max_frequency: float = 2.0) -> np.ndarray:
    """Smooth random field on normalised coordinates: a sum of random low-frequency sinusoids
    scaled to unit standard deviation (over random phases). Shape of ``yy``."""
    freq = rng.uniform(0.5, max_frequency, waves)
    angle = rng.uniform(0, 2 * np.pi, waves)
    phase = rng.uniform(0, 2 * np.pi, waves)
    field = np.zeros_like(yy)
    for f, a, p in zip(freq, angle, phase):
        field += np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + p)
    return field * math.sqrt(2.0 / waves)


def stuff_regions(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, count: int) -> np.ndarray:
    """Region index [H, W] of a Voronoi partition on warped coordinates, each region >= 12 %."""
    warp_x = 0.12 * smooth_field(rng, yy, xx)
    warp_y = 0.12 * smooth_field(rng, yy, xx)
    wx, wy = xx + warp_x, yy + warp_y
    for _ in range(50):
        centres = rng.uniform(0.1, 0.9, size=(count, 2))
        dist = (wx[None] - centres[:, 0, None, None]) ** 2 + (wy[None] - centres[:, 1, None, None]) ** 2
        regions = dist.argmin(axis=0)
        if np.bincount(regions.ravel(), minlength=count).min() >= 0.12 * regions.size:
            return regions
    return regions  # pragma: no cover - 50 failures in a row do not happen for count <= 4


def _polygon_mask(yy: np.ndarray, xx: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for every pixel; vertices (vx, vy) in pixel units."""
    inside = np.zeros(yy.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        crosses = (y0 > yy) != (y1 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_at)
    return inside


def object_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """Boolean [H, W] mask of one random object (ellipse, star-shaped polygon or blob)."""
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    cx, cy = rng.uniform(0.15, 0.85, 2) * size
    radius = rng.uniform(0.13, 0.27) * size
    dx, dy = xx - cx, yy - cy
    if shape == "ellipse":
        angle = rng.uniform(0, np.pi)
        aspect = rng.uniform(0.5, 1.0)
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        return (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1.0
    if shape == "polygon":
        vertices = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = radius * rng.uniform(0.7, 1.2, vertices)
        return _polygon_mask(yy, xx, cx + radii * np.cos(angles), cy + radii * np.sin(angles))
    # blob: radius modulated by a few low harmonics of the polar angle
    theta = np.arctan2(dy, dx)
    boundary = np.ones_like(theta)
    for k in (2, 3, 4):
        boundary += rng.uniform(0.0, 0.25) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(dx, dy) <= radius * boundary


def pattern_mask(rng: np.random.Generator, pattern: str, yy: np.ndarray, xx: np.ndarray,
                  scale: float) -> np.ndarray:
    """Foreground coverage in [0, 1] (anti-aliased, about 1 px transitions) of a pattern with
    random orientation, period and phase; ``scale`` = image_size / 128. Shape of ``yy``."""
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if pattern in ("striped", "wavy"):
        period = rng.uniform(9, 15) * scale
        if pattern == "wavy":
            amplitude = rng.uniform(0.45, 0.7) * period
            wavelength = rng.uniform(2.5, 4.0) * period
            u = u + amplitude * np.sin(2 * np.pi * v / wavelength + rng.uniform(0, 2 * np.pi))
        wave = np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
        # slope of the wave at its zero crossings is 2*pi/period per pixel: rescale to 1
        return np.clip(0.5 + wave * period / (2 * np.pi), 0.0, 1.0)
    if pattern == "checkered":
        period = rng.uniform(16, 24) * scale  # two cells per period
        su = np.sin(2 * np.pi * (u / period + rng.uniform()))
        sv = np.sin(2 * np.pi * (v / period + rng.uniform()))
        edge = np.minimum(np.abs(su), np.abs(sv)) * period / (2 * np.pi)  # ~ distance to a cell edge
        return np.clip(0.5 + np.sign(su * sv) * edge, 0.0, 1.0)
    if pattern == "dotted":
        period = rng.uniform(10, 15) * scale
        du = ((u / period + rng.uniform()) % 1.0 - 0.5) * period
        dv = ((v / period + rng.uniform()) % 1.0 - 0.5) * period
        dot_radius = 0.38 * period  # covers pi * 0.38^2 = 45 % of the area
        return np.clip(dot_radius - np.hypot(du, dv) + 0.5, 0.0, 1.0)
    raise ConfigError(f"unknown pattern {pattern!r}")  # pragma: no cover
