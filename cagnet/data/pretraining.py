"""Pretraining scenes: textures the embedded benchmark never labels, playing ImageNet's role.

The original CaGNet (and every method of its comparison) starts from a DeepLabV2 backbone
pretrained on ImageNet: the network already knows edges, textures and colours before it sees a
segmentation label. The embedded benchmark has no such start, so this module draws the data of
a pretraining stage (:mod:`cagnet.pretrain`) with the benchmark's scene drawing
(:mod:`cagnet.data.scenes`: warped Voronoi regions, objects on top, per-region pattern
orientation / period / tint, pixel noise), but with its own classes:

* **colours** (:data:`PRETRAIN_COLOURS`): orange, lime, cyan, purple and magenta. None of them
  is a benchmark colour: their hues lie 24-46 degrees away from those of red, yellow, green and
  blue, and a region's hue is jittered by at most 8 degrees, so every pretraining region stays
  at least 15 degrees of hue away from every benchmark colour (:func:`benchmark_hue_margin`);
* **patterns** (:data:`PRETRAIN_PATTERNS`): the benchmark's four (striped, dotted, checkered,
  wavy) and four others (grid, rings, zigzag, speckled).

Every pixel carries two labels: its region's pattern and its region's colour. A pretraining
network classifies both per pixel. What it can learn is what ImageNet teaches a real backbone:
what stripes, dots, checks and waves look like in *other* colours, and how to tell colours
apart. No benchmark colour appears, so no benchmark class (a colour x pattern pair of red, green,
blue or yellow) appears either, seen or unseen, and no pixel carries a benchmark label: an
unseen class such as ``red_dotted`` is new to the pretrained backbone. (This is stricter than
ImageNet is for Pascal-VOC: ImageNet shows sheep, trains and sofas, three of VOC's unseen
classes.)

When the benchmark has a scene factor (``appearance: scene``, :mod:`cagnet.data.scenes`),
the pretraining scenes get the same one (``lighting``): each scene under its own light,
shading and scale, drawn with the benchmark's strengths from a stream of its own, so that the
backbone has seen lit scenes as an ImageNet backbone has seen photographs. The light changes
what a colour looks like, not which colour is painted: no benchmark colour is painted, and
under any one light every pretraining colour stays at least 10 degrees of hue from every
benchmark colour under that light at the benchmark's default strength
(:func:`illuminated_hue_margin`). Across two different lights raw hues do meet (a pretraining
colour under one light can have the hue of a benchmark colour under another); what no
pretraining scene shows is a benchmark colour next to the grey of its own light.

Images depend only on (seed, index), as the benchmark's do.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from cagnet.data import synthetic
from cagnet.data.scenes import (MIRED_RANGE, NEUTRAL_GREY, SceneLighting, count_range, draw_scene_factors,
                                 hue_distance, hue_of_rgb, illuminant_gains, object_mask, pattern_mask,
                                 stuff_regions)
from cagnet.errors import ConfigError

#: Pretraining colour words and their hues (degrees); saturation / value are drawn per region.
PRETRAIN_COLOURS: dict[str, float] = {
    "orange": 26.0,
    "lime": 92.0,
    "cyan": 181.0,
    "purple": 272.0,
    "magenta": 318.0,
}
#: Largest hue jitter of a region (degrees).
HUE_JITTER = 8.0
#: The benchmark's patterns first (same drawing code), then patterns the benchmark never shows.
PRETRAIN_PATTERNS: tuple[str, ...] = synthetic.PATTERNS + ("grid", "rings", "zigzag", "speckled")

_COLOUR_NAMES = tuple(PRETRAIN_COLOURS)


def benchmark_hue_margin() -> float:
    """Smallest hue distance between a pretraining colour (jitter included) and a benchmark colour."""
    bench = [hue_of_rgb(rgb) for rgb in synthetic.COLOURS.values()]
    return min(hue_distance(h, b) for h in PRETRAIN_COLOURS.values() for b in bench) - HUE_JITTER


def illuminated_hue_margin(lighting: SceneLighting) -> float:
    """Smallest hue distance, in degrees, between a pretraining colour and a benchmark colour
    seen under the same light, over the colour temperatures of ``lighting`` (the brightness
    changes no hue until a channel clips). Pretraining colours at both ends of their hue
    jitter, saturation and value ranges; benchmark colours at their base RGB."""
    worst = math.inf
    for shift in np.linspace(-1.0, 1.0, 9) * MIRED_RANGE * lighting.illuminant_strength:
        gains = illuminant_gains(0.0, float(shift))
        bench = [hue_of_rgb(np.clip(np.asarray(rgb) * gains, 0, 255)) for rgb in synthetic.COLOURS.values()]
        for hue in PRETRAIN_COLOURS.values():
            for jitter in (-HUE_JITTER, HUE_JITTER):
                for saturation in (0.6, 0.9):
                    for value in (0.7, 0.95):
                        painted = colorsys.hsv_to_rgb(((hue + jitter) % 360.0) / 360.0, saturation, value)
                        rgb = 255.0 * np.asarray(painted)
                        lit = hue_of_rgb(np.clip(rgb * gains, 0, 255))
                        worst = min(worst, min(hue_distance(lit, b) for b in bench))
    return float(worst)


@dataclass(frozen=True)
class PretrainingSceneConfig:
    """Size of the pretraining set.

    Attributes:
        seed: image ``i`` uses the random stream seeded by (seed, 7, i).
        num_images: number of scenes.
        image_size: side of the square scenes (patterns scale as in the benchmark's 128 px images).
        regions: (min, max) "stuff" regions per scene; objects: (min, max) objects on top.
        pixel_noise: standard deviation of the per-pixel Gaussian noise.
        lighting: the scene factor's strengths (None: plain scenes, no light or scale factor);
            scene ``i``'s factor comes from the stream (seed, 7, i, 1).
    """

    seed: int = 0
    num_images: int = 600
    image_size: int = 128
    regions: tuple[int, int] = (2, 3)
    objects: tuple[int, int] = (1, 3)
    pixel_noise: float = 6.0
    lighting: SceneLighting | None = None

    def __post_init__(self) -> None:
        for name in ("regions", "objects"):
            object.__setattr__(self, name, count_range(getattr(self, name), f"pretraining.{name}"))
        if self.num_images < 1 or self.image_size < 32 or self.seed < 0:
            raise ConfigError(f"pretraining needs num_images >= 1, image_size >= 32 and seed >= 0, got "
                              f"{self.num_images}, {self.image_size}, {self.seed}")
        if not 1 <= self.regions[0] <= self.regions[1] <= 4 or not 0 <= self.objects[0] <= self.objects[1] <= 5:
            raise ConfigError(f"pretraining.regions must be within 1..4 and objects within 0..5, got "
                              f"{self.regions}, {self.objects}")
        if self.lighting is not None and not isinstance(self.lighting, SceneLighting):
            raise ConfigError(f"pretraining.lighting must be a SceneLighting or None, got {self.lighting!r}")


def _extra_pattern(rng: np.random.Generator, pattern: str, yy: np.ndarray, xx: np.ndarray,
                   scale: float) -> np.ndarray:
    """Foreground coverage in [0, 1] of a pattern the benchmark does not have (about 1 px edges)."""
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if pattern == "grid":
        # thin lines in both directions (a lattice, unlike the filled cells of "checkered")
        period = rng.uniform(10, 16) * scale
        width = rng.uniform(0.18, 0.28) * period
        du = np.abs(((u / period + rng.uniform()) % 1.0) - 0.5) * period
        dv = np.abs(((v / period + rng.uniform()) % 1.0) - 0.5) * period
        distance = np.minimum(0.5 * period - du, 0.5 * period - dv)
        return np.clip(width / 2 - distance + 0.5, 0.0, 1.0)
    if pattern == "rings":
        # concentric circles around a centre that may lie outside the image
        period = rng.uniform(9, 15) * scale
        size = yy.shape[0]
        cy, cx = rng.uniform(-0.3, 1.3, 2) * size
        radius = np.hypot(yy - cy, xx - cx)
        wave = np.sin(2 * np.pi * radius / period + rng.uniform(0, 2 * np.pi))
        return np.clip(0.5 + wave * period / (2 * np.pi), 0.0, 1.0)
    if pattern == "zigzag":
        # stripes bent by a triangle wave (sharp corners, unlike "wavy")
        period = rng.uniform(9, 15) * scale
        wavelength = rng.uniform(1.5, 2.5) * period
        amplitude = rng.uniform(0.4, 0.6) * period
        triangle = 2.0 * np.abs(((v / wavelength + rng.uniform()) % 1.0) - 0.5)
        u = u + amplitude * (2.0 * triangle - 1.0)
        wave = np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
        return np.clip(0.5 + wave * period / (2 * np.pi), 0.0, 1.0)
    if pattern == "speckled":
        # irregular blobs: thresholded smooth noise of a period like the other patterns
        period = rng.uniform(8, 14) * scale
        size = yy.shape[0]
        field = np.zeros_like(yy)
        for _ in range(6):
            f = rng.uniform(0.7, 1.3) / period
            a = rng.uniform(0, 2 * np.pi)
            field += np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 2 * np.pi))
        field *= math.sqrt(2.0 / 6)
        return np.clip(0.5 + field * period / (2 * np.pi) * 0.6, 0.0, 1.0)
    raise ConfigError(f"unknown pretraining pattern {pattern!r}")  # pragma: no cover


def pattern_coverage(rng: np.random.Generator, pattern: str, yy: np.ndarray, xx: np.ndarray,
                     scale: float) -> np.ndarray:
    """Foreground coverage [H, W] in [0, 1] of any pretraining pattern (benchmark patterns are
    drawn by the benchmark's own code)."""
    if pattern in synthetic.PATTERNS:
        return pattern_mask(rng, pattern, yy, xx, scale)
    return _extra_pattern(rng, pattern, yy, xx, scale)


def _region_colour(rng: np.random.Generator, colour: str) -> np.ndarray:
    hue = (PRETRAIN_COLOURS[colour] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 360.0
    saturation = rng.uniform(0.6, 0.9)
    value = rng.uniform(0.7, 0.95)
    return 255.0 * np.asarray(colorsys.hsv_to_rgb(hue / 360.0, saturation, value))


def generate_pretraining_sample(config: PretrainingSceneConfig, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pretraining scene: RGB uint8 [S, S, 3], pattern ids uint8 [S, S] (index into
    :data:`PRETRAIN_PATTERNS`) and colour ids uint8 [S, S] (index into :data:`PRETRAIN_COLOURS`).

    Regions of a scene have distinct (colour, pattern) pairs. Depends only on (config, index).
    """
    rng = np.random.default_rng([config.seed, 7, index])
    size = config.image_size
    coords = np.arange(size, dtype=np.float64) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    n_stuff = int(rng.integers(config.regions[0], config.regions[1] + 1))
    n_objects = int(rng.integers(config.objects[0], config.objects[1] + 1))
    count = n_stuff + n_objects
    pairs = rng.choice(len(PRETRAIN_PATTERNS) * len(_COLOUR_NAMES), size=count, replace=False)
    region = stuff_regions(rng, yy / size, xx / size, n_stuff)
    for k in range(n_objects):
        region[object_mask(rng, yy, xx, size)] = n_stuff + k
    factors = None
    if config.lighting is not None:  # its own stream: the layout, colours and patterns stay those of the plain scene
        factors = draw_scene_factors(np.random.default_rng([config.seed, 7, index, synthetic.SCENE_STREAM]),
                                     config.lighting)
    scale = size / 128.0 * (factors.scale if factors is not None else 1.0)
    grey = rng.uniform(NEUTRAL_GREY - 15, NEUTRAL_GREY + 15)
    image = np.zeros((size, size, 3), dtype=np.float64)
    patterns = np.zeros(count, dtype=np.uint8)
    colours = np.zeros(count, dtype=np.uint8)
    for k, pair in enumerate(pairs):
        pattern_id, colour_id = divmod(int(pair), len(_COLOUR_NAMES))
        patterns[k], colours[k] = pattern_id, colour_id
        inside = region == k
        if not inside.any():
            continue
        colour = _region_colour(rng, _COLOUR_NAMES[colour_id])
        neutral = grey + rng.normal(0.0, 4.0, 3)
        coverage = pattern_coverage(rng, PRETRAIN_PATTERNS[pattern_id], yy, xx, scale)[..., None]
        image[inside] = (coverage * colour + (1.0 - coverage) * neutral)[inside]
    if factors is not None:
        image = factors.illuminate(image, yy / size, xx / size)
    image += rng.normal(0.0, config.pixel_noise, image.shape)
    return (np.clip(np.rint(image), 0, 255).astype(np.uint8), patterns[region], colours[region])


def generate_pretraining_set(config: PretrainingSceneConfig, progress: bool = False
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All scenes of ``config``: images uint8 [N, S, S, 3], pattern and colour ids uint8 [N, S, S]."""
    from tqdm.auto import tqdm

    n, s = config.num_images, config.image_size
    images = np.empty((n, s, s, 3), dtype=np.uint8)
    patterns = np.empty((n, s, s), dtype=np.uint8)
    colours = np.empty((n, s, s), dtype=np.uint8)
    for i in tqdm(range(n), desc="pretraining scenes", unit="img", disable=not progress):
        images[i], patterns[i], colours[i] = generate_pretraining_sample(config, i)
    return images, patterns, colours
