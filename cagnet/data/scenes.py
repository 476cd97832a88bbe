"""Drawing of the synthetic scenes: a few large "stuff" regions (a Voronoi partition on smoothly
warped coordinates), objects on top (ellipses, star-shaped polygons, blobs), and the patterns
that fill a region (striped, dotted, checkered, wavy) with a random orientation, period and
phase. The embedded benchmark (:mod:`cagnet.data.synthetic`) and the pretraining scenes
(:mod:`cagnet.data.pretraining`) are drawn with these functions, each from its own random
stream (``rng``, a ``numpy.random.Generator``).

Coordinates ``yy``, ``xx`` are [H, W] grids of pixel centres, in pixel units or normalised to
[0, 1] as each function says.

Scene factor
------------
A real photograph's pixels depend on the scene as much as on the object: the light (its
brightness and colour temperature), its fall-off across the scene, and the distance of the
camera (the scale of every texture). :class:`SceneLighting` gives the strengths of such a
factor, :func:`draw_scene_factors` draws one scene's values (:class:`SceneFactors`) and
:meth:`SceneFactors.illuminate` applies them to a painted scene, before the sensor noise:

* **illuminant**: every pixel's RGB is multiplied by the same per-channel gains, a brightness
  gain ``exp(log_brightness)`` and a colour-temperature shift along the Planckian locus. Under
  Wien's approximation of Planck's law the radiance at wavelength ``lambda`` of a black body
  at temperature T is proportional to ``exp(-c2 / (lambda T))``, so a shift of ``d`` mired
  (``1e6 / T``) changes ``log(channel / green)`` by ``-c2 * d * 1e-6 * (1 / lambda_c - 1 /
  lambda_green)`` at the channels' effective wavelengths (:data:`CHANNEL_WAVELENGTHS_NM`):
  a warmer light (``mired_shift`` > 0) raises red and lowers blue about 1.7 times as much.
  The neutral grey that surrounds every pattern takes the illuminant's colour and brightness,
  so the scene shows the light to anyone who looks at more than one pixel;
* **shading**: a linear ramp of ``log`` gain across the image in a random direction, up to
  ``shading_strength`` at the brightest edge (light falling off across the scene);
* **scale**: one factor ``exp(log_scale)`` that multiplies the period of every pattern of the
  scene (the camera nearer or farther), drawn log-uniformly from ``scale_range``.

The values are drawn from unit random numbers times the strengths, in a fixed order, so one
scene drawn at two strengths has the same light, only stronger, and a scene at strength 0 is
the plain scene.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from cagnet.errors import ConfigError

#: Mean grey level of a pattern's background, shared by every class.
NEUTRAL_GREY = 145
_SHAPES = ("ellipse", "polygon", "blob")

#: Names of the per-pixel scene factor values, the columns of :meth:`SceneFactors.maps`.
SCENE_FACTOR_NAMES: tuple[str, ...] = ("log_brightness", "mired_shift", "log_shading", "log_scale")
#: Effective wavelengths (nm) of the red, green and blue channels, for the colour temperature.
CHANNEL_WAVELENGTHS_NM: tuple[float, float, float] = (610.0, 540.0, 450.0)
#: Second radiation constant c2 = h c / k_B, in nm K (Wien's approximation of Planck's law).
SECOND_RADIATION_CONSTANT_NM_K = 1.4388e7
#: Largest |log brightness gain| at ``illuminant_strength`` 1 (a gain from 0.67 to 1.49).
BRIGHTNESS_LOG_RANGE = 0.4
#: Largest |colour temperature shift| in mired at ``illuminant_strength`` 1: around daylight
#: (6500 K = 154 mired), 94 to 214 mired, i.e. about 10600 K (shade, overcast) to 4700 K.
MIRED_RANGE = 60.0
#: Largest accepted strengths and scale factors (see :class:`SceneLighting`).
MAX_ILLUMINANT_STRENGTH = 1.5
MAX_SHADING_STRENGTH = 1.0
SCALE_LIMITS = (0.5, 2.0)


def count_range(value, name: str) -> tuple[int, int]:
    """A scene parameter given as a ``(min, max)`` pair of counts (a tuple, or a list as JSON
    gives it) as a tuple of ints, so that configurations compare structurally; anything else
    is a ConfigError naming ``name``."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ConfigError(f"{name} must be a (min, max) pair, got {value!r}")
    return int(value[0]), int(value[1])


def hue_of_rgb(rgb) -> float:
    """Hue in degrees [0, 360) of an RGB triple (0-255)."""
    r, g, b = (float(c) / 255.0 for c in rgb)
    return 360.0 * colorsys.rgb_to_hsv(r, g, b)[0]


def hue_distance(a: float, b: float) -> float:
    """Distance of two hues on the colour circle, degrees in [0, 180]."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def float_range(value, name: str) -> tuple[float, float]:
    """A ``(low, high)`` pair of numbers (a tuple, or a list as JSON gives it) as a tuple of
    floats; anything else is a ConfigError naming ``name``."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{name} must be a (low, high) pair of numbers, got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class SceneLighting:
    """Strengths of the scene factor (module docstring, "Scene factor").

    Attributes:
        illuminant_strength: 0 (no illuminant) .. :data:`MAX_ILLUMINANT_STRENGTH`; at 1 the
            brightness gain lies in exp(+-:data:`BRIGHTNESS_LOG_RANGE`) and the colour
            temperature within +-:data:`MIRED_RANGE` mired of daylight (the benchmark also
            refuses strengths whose strongest light moves a class colour's hue towards
            another colour's: :func:`cagnet.data.synthetic.colour_family_margin`).
        shading_strength: largest log gain of the shading ramp at the brightest edge
            (0 .. :data:`MAX_SHADING_STRENGTH`; 0.3: the two edges differ by a factor 1.8).
        scale_range: (low, high) of the scene's pattern scale, within :data:`SCALE_LIMITS`;
            (1, 1) keeps every pattern's period.
    """

    illuminant_strength: float = 0.0
    shading_strength: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_range", float_range(self.scale_range, "scale_range"))
        check_lighting_values(self.illuminant_strength, self.shading_strength, self.scale_range)


def check_lighting_values(illuminant_strength: float, shading_strength: float, scale_range: tuple[float, float],
                          prefix: str = "") -> None:
    """ConfigError naming the value (``prefix`` + name) when a scene factor strength is out of range."""
    for name, value, high in (("illuminant_strength", illuminant_strength, MAX_ILLUMINANT_STRENGTH),
                              ("shading_strength", shading_strength, MAX_SHADING_STRENGTH)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not 0 <= value <= high:
            raise ConfigError(f"{prefix}{name} must be a number in [0, {high}], got {value!r}")
    low, high = scale_range
    if not SCALE_LIMITS[0] <= low <= high <= SCALE_LIMITS[1]:
        raise ConfigError(f"{prefix}scale_range must satisfy {SCALE_LIMITS[0]} <= low <= high <= "
                          f"{SCALE_LIMITS[1]}, got {list(scale_range)}")


@dataclass(frozen=True)
class SceneFactors:
    """One scene's factor values (module docstring, "Scene factor").

    Attributes:
        log_brightness: natural log of the illuminant's brightness gain.
        mired_shift: colour temperature shift from daylight in mired (> 0: warmer, redder).
        shading_log_gain: log gain of the shading ramp at its brightest edge (the darkest edge
            has minus this).
        shading_angle: direction of increasing light, radians (0 = towards +x).
        log_scale: natural log of the factor applied to every pattern's period.
    """

    log_brightness: float = 0.0
    mired_shift: float = 0.0
    shading_log_gain: float = 0.0
    shading_angle: float = 0.0
    log_scale: float = 0.0

    @property
    def scale(self) -> float:
        """The factor applied to every pattern's period."""
        return math.exp(self.log_scale)

    def channel_gains(self) -> np.ndarray:
        """RGB gains of the illuminant [3] (green = the brightness gain)."""
        return illuminant_gains(self.log_brightness, self.mired_shift)

    def log_shading(self, nyy: np.ndarray, nxx: np.ndarray) -> np.ndarray:
        """Log gain of the shading at normalised coordinates, [H, W], in
        [-shading_log_gain, +shading_log_gain] over the unit square."""
        cos, sin = math.cos(self.shading_angle), math.sin(self.shading_angle)
        reach = 0.5 * (abs(cos) + abs(sin))       # largest projection of a corner of the square
        return self.shading_log_gain * ((nxx - 0.5) * cos + (nyy - 0.5) * sin) / reach

    def illuminate(self, image: np.ndarray, nyy: np.ndarray, nxx: np.ndarray) -> np.ndarray:
        """A painted scene (float RGB [H, W, 3], 0-255) as seen under this light (not clipped)."""
        return image * self.channel_gains() * np.exp(self.log_shading(nyy, nxx))[..., None]

    def maps(self, nyy: np.ndarray, nxx: np.ndarray) -> np.ndarray:
        """Per-pixel factor values float32 [H, W, F], columns :data:`SCENE_FACTOR_NAMES`."""
        values = np.empty(nyy.shape + (len(SCENE_FACTOR_NAMES),), dtype=np.float32)
        values[..., 0] = self.log_brightness
        values[..., 1] = self.mired_shift
        values[..., 2] = self.log_shading(nyy, nxx)
        values[..., 3] = self.log_scale
        return values


def illuminant_gains(log_brightness: float, mired_shift: float) -> np.ndarray:
    """RGB gains [3] of a light ``exp(log_brightness)`` times as bright as daylight and
    ``mired_shift`` mired warmer (Wien's approximation, relative to green)."""
    inverse = np.asarray([1.0 / w for w in CHANNEL_WAVELENGTHS_NM])
    log_gains = -SECOND_RADIATION_CONSTANT_NM_K * mired_shift * 1e-6 * (inverse - inverse[1])
    return np.exp(log_brightness + log_gains)


def draw_scene_factors(rng: np.random.Generator, lighting: SceneLighting) -> SceneFactors:
    """One scene's factor values: unit random numbers (always the same five draws) times the
    strengths of ``lighting``."""
    brightness, temperature, ramp, angle, scale = (float(u) for u in rng.uniform(size=5))
    low, high = (math.log(v) for v in lighting.scale_range)
    return SceneFactors(log_brightness=BRIGHTNESS_LOG_RANGE * lighting.illuminant_strength * (2 * brightness - 1),
                        mired_shift=MIRED_RANGE * lighting.illuminant_strength * (2 * temperature - 1),
                        shading_log_gain=lighting.shading_strength * ramp,
                        shading_angle=2 * math.pi * angle,
                        log_scale=low + (high - low) * scale)


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
