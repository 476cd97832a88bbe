"""The embedded zero-shot segmentation benchmark: synthetic scenes generated from a seed.

No real dataset can be downloaded by the tutorial, so the package draws its own one, in the
original CaGNet folder layout, in a few seconds.

Classes
-------
16 classes named ``"<colour>_<pattern>"``: 4 colours (red, green, blue, yellow) x 4 patterns
(striped, dotted, checkered, wavy); label id = 4 * colour index + pattern index.
A class's appearance is a function of exactly the two attributes its name states: the
pattern's foreground is painted in the class colour and the rest of the region in a neutral
grey shared by every class. The 4 unseen classes form a Latin-square diagonal
(pattern index = colour index + 1 mod 4: red_dotted, green_checkered, blue_wavy,
yellow_striped), so every colour and every pattern of an unseen class also appears in three
seen classes: an unseen class is a new combination of attributes that the seen classes show
separately, and the word embeddings of its name carry both.

Pixels are not separable by colour: a coloured pixel tells the colour but not the pattern, a
grey pixel tells nothing. Recognising the class needs spatial context (the pattern around the
pixel), which is what a segmentation network learns.

Scenes
------
Each image has 2-3 large irregular "stuff" regions (a Voronoi partition of the image computed
on smoothly warped coordinates) and 1-4 objects (ellipses, star-shaped polygons, blobs) on
top; all regions of an image have different classes. Patterns have a random orientation,
period and phase per region, region colours a random brightness and tint, and every pixel
Gaussian noise. Training scenes draw unseen classes less often (their pixels are ignored by
the training loader, as in the original); every test scene contains at least one seen and one
unseen class.

Appearance
----------
``appearance: plain`` (the default) paints each region as above and nothing else varies with
the scene, so a class looks the same in every image up to its region's own tint.
``appearance: scene`` puts the whole scene under one light and at one camera distance
(:mod:`cagnet.data.scenes`, "Scene factor"): an illuminant shared by every region (brightness
and colour temperature, visible in the neutral grey around every pattern), a shading ramp
across the image and a scale that changes every pattern's period together, with the strengths
``illuminant_strength``, ``shading_strength`` and ``scale_range``. A pixel's appearance then
depends on its context as in a photograph, which is the premise of CaGNet's contextual module,
while the class stays recognisable: under the strongest light every class colour's hue stays
nearer its own colour's than any other's by :data:`MIN_FAMILY_MARGIN` degrees
(:func:`colour_family_margin`). The factor of an image comes from its own random stream, so a
``scene`` image is the ``plain`` image of the same (seed, split, index) (same regions, classes,
tints and pattern draws) under a light and a scale; :func:`scene_factor_maps` gives its
per-pixel values, and a ``scene`` benchmark folder records them in ``scene_factors.json``.

Splits: ``train`` (400 images), ``validation`` (150) and ``test`` (150). Validation scenes are
drawn like test scenes but from their own random stream: recipes, calibrations and every other
choice are made on them, and the test split is only used for the reported tables.

Word embeddings
---------------
``word_vectors/glove.npy`` [16, 100] float32, one row per label id: the GloVe 6B 50-d vector
of the colour word concatenated with the vector of the pattern word, then each row scaled to
unit L2 norm (``glove_class_embeddings(names, compose="concat")``). Concatenation keeps the
two attributes in separate coordinates, so an unseen row shares its first half with the seen
classes of the same colour and its second half with those of the same pattern.

Determinism
-----------
Every image has its own random stream seeded from ``(seed, split, index)``, so an image
does not depend on the order or number of the others, and regenerating with the same
configuration writes byte-identical files (``benchmark.json`` records a hash of them).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cagnet.data.embeddings import GLOVE_DIM, glove_class_embeddings
from cagnet.errors import ConfigError, DatasetError
from cagnet.data.scenes import (BRIGHTNESS_LOG_RANGE, MIRED_RANGE, NEUTRAL_GREY, SCENE_FACTOR_NAMES, SceneFactors,
                                 SceneLighting, check_lighting_values, count_range, draw_scene_factors, float_range,
                                 hue_distance, hue_of_rgb, illuminant_gains, object_mask, pattern_mask, stuff_regions)
from cagnet.files import project_root

FORMAT_NAME = "cagnet-synthetic"
FORMAT_VERSION = 2
BENCHMARK_FILE = "benchmark.json"
#: Per-image scene factor values of a ``scene`` benchmark (:func:`read_scene_factors`).
SCENE_FACTORS_FILE = "scene_factors.json"
#: Appearance modes (:class:`SyntheticConfig`, module docstring "Appearance").
APPEARANCES: tuple[str, ...] = ("plain", "scene")
#: Smallest accepted hue margin (degrees) of the class colours under the strongest light
#: (:func:`colour_family_margin`).
MIN_FAMILY_MARGIN = 10.0

#: Colour words and their base RGB values (the class colour of the pattern's foreground).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 45, 40),
    "green": (40, 160, 70),
    "blue": (45, 85, 215),
    "yellow": (235, 200, 35),
}
#: Pattern words, in label-id order within a colour.
PATTERNS: tuple[str, ...] = ("striped", "dotted", "checkered", "wavy")

_COLOUR_NAMES = tuple(COLOURS)
#: (colour, pattern) of every label id; id = 4 * colour index + pattern index.
CLASS_ATTRIBUTES: tuple[tuple[str, str], ...] = tuple((c, p) for c in _COLOUR_NAMES for p in PATTERNS)
#: Class names, index = label id.
CLASS_NAMES: tuple[str, ...] = tuple(f"{c}_{p}" for c, p in CLASS_ATTRIBUTES)
#: Unseen label ids: the Latin-square diagonal pattern index = colour index + 1 (mod 4).
UNSEEN_IDS: tuple[int, ...] = tuple(
    ci * len(PATTERNS) + (ci + 1) % len(PATTERNS) for ci in range(len(_COLOUR_NAMES))
)
#: Seen label ids, ascending.
SEEN_IDS: tuple[int, ...] = tuple(i for i in range(len(CLASS_NAMES)) if i not in UNSEEN_IDS)

#: Folder of each split (the original keeps its test split in "val").
_SPLIT_DIRS = {"train": "train", "validation": "validation", "test": "val"}
#: Stream code of each split in the per-image seed (2 is taken by the class swatches).
_SPLIT_CODES = {"train": 0, "test": 1, "validation": 3}
#: Last entry of the seed of an image's scene factor stream ((seed, split code, index, 1)).
SCENE_STREAM = 1


def class_colour(label_id: int) -> str:
    """Colour word of a label id."""
    return CLASS_ATTRIBUTES[label_id][0]


def class_pattern(label_id: int) -> str:
    """Pattern word of a label id."""
    return CLASS_ATTRIBUTES[label_id][1]


def attribute_table() -> list[dict]:
    """One row per class: ``id``, ``name``, ``colour``, ``pattern``, ``split`` (seen/unseen)."""
    return [
        {"id": i, "name": CLASS_NAMES[i], "colour": c, "pattern": p,
         "split": "unseen" if i in UNSEEN_IDS else "seen"}
        for i, (c, p) in enumerate(CLASS_ATTRIBUTES)
    ]


def class_embeddings() -> np.ndarray:
    """Word embeddings of all classes, [16, 100] float32, row = label id.

    [GloVe(colour) ; GloVe(pattern)], each row L2-normalised.
    """
    return glove_class_embeddings(CLASS_NAMES, compose="concat", normalize=True)


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and appearance parameters of the synthetic benchmark.

    Attributes:
        seed: base seed; image ``i`` of a split uses the random stream seeded by (seed, split, i).
        num_train, num_test: number of training / test images.
        num_validation: number of validation images: scenes drawn like the test scenes (every one
            shows a seen and an unseen class) from their own random stream, for choosing recipes
            and calibrations without looking at the test split.
        image_size: side of the square images in pixels (patterns scale with it; >= 32).
        background_regions: (min, max) number of stuff regions per image.
        objects: (min, max) number of objects drawn on top of the stuff regions.
        train_unseen_weight: sampling weight of an unseen class relative to a seen one in
            training scenes (0 = training images never contain unseen classes).
        colour_jitter: standard deviation of the per-region RGB tint.
        pixel_noise: standard deviation of the per-pixel Gaussian noise.
        appearance: ``plain`` (regions look the same in every scene) or ``scene`` (a scene
            factor: illuminant, shading and scale shared by the image's regions; module
            docstring "Appearance"). The three strengths below are used by ``scene`` only.
        illuminant_strength: brightness and colour temperature range of the scene light
            (:class:`cagnet.data.scenes.SceneLighting`; 1: gains 0.67-1.49, +-60 mired).
        shading_strength: largest log gain of the shading ramp across the image.
        scale_range: (low, high) of the factor on every pattern's period of a scene.
    """

    seed: int = 0
    num_train: int = 400
    num_test: int = 150
    num_validation: int = 150
    image_size: int = 128
    background_regions: tuple[int, int] = (2, 3)
    objects: tuple[int, int] = (1, 4)
    train_unseen_weight: float = 0.5
    colour_jitter: float = 10.0
    pixel_noise: float = 6.0
    appearance: str = "plain"
    illuminant_strength: float = 1.0
    shading_strength: float = 0.3
    scale_range: tuple[float, float] = (0.75, 1.33)

    def __post_init__(self) -> None:
        for name in ("background_regions", "objects"):
            object.__setattr__(self, name, count_range(getattr(self, name), f"SyntheticConfig.{name}"))
        object.__setattr__(self, "scale_range", float_range(self.scale_range, "SyntheticConfig.scale_range"))
        for name in ("seed", "num_train", "num_test", "num_validation", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"SyntheticConfig.{name} must be an integer, got {value!r}")
        if self.seed < 0:
            raise ConfigError(f"SyntheticConfig.seed must be >= 0, got {self.seed}")
        if self.num_train < 0 or self.num_test < 1 or self.num_validation < 0:
            raise ConfigError(f"SyntheticConfig needs num_train >= 0, num_test >= 1 and num_validation >= 0, got "
                              f"{self.num_train}, {self.num_test}, {self.num_validation}")
        if self.image_size < 32:
            raise ConfigError(f"SyntheticConfig.image_size must be >= 32, got {self.image_size}")
        lo, hi = self.background_regions
        if not 1 <= lo <= hi <= 4:
            raise ConfigError(f"SyntheticConfig.background_regions must satisfy 1 <= min <= max <= 4, got {self.background_regions}")
        lo, hi = self.objects
        if not 0 <= lo <= hi <= 6:
            raise ConfigError(f"SyntheticConfig.objects must satisfy 0 <= min <= max <= 6, got {self.objects}")
        if self.background_regions[0] + self.objects[0] < 2:
            raise ConfigError("SyntheticConfig needs at least 2 regions per image (a seen and an unseen class in test)")
        if not 0 <= self.train_unseen_weight <= 1:
            raise ConfigError(f"SyntheticConfig.train_unseen_weight must be in [0, 1], got {self.train_unseen_weight}")
        if self.colour_jitter < 0 or self.pixel_noise < 0:
            raise ConfigError("SyntheticConfig.colour_jitter and pixel_noise must be >= 0")
        if self.appearance not in APPEARANCES:
            raise ConfigError(f"SyntheticConfig.appearance must be one of {', '.join(APPEARANCES)}, "
                              f"got {self.appearance!r}")
        check_lighting_values(self.illuminant_strength, self.shading_strength, self.scale_range, "SyntheticConfig.")
        if self.appearance == "scene":
            margin, colour = colour_family_margin(self.lighting)
            if margin < MIN_FAMILY_MARGIN:
                raise ConfigError(f"SyntheticConfig.illuminant_strength={self.illuminant_strength} with "
                                  f"shading_strength={self.shading_strength}: under the strongest light "
                                  f"{colour}'s hue is {margin:.1f} degrees nearer its own colour's than another's "
                                  f"(needs >= {MIN_FAMILY_MARGIN}; lower the strengths)")

    @property
    def lighting(self) -> SceneLighting:
        """The scene factor strengths (drawn for every image; applied when ``appearance`` is ``scene``)."""
        return SceneLighting(self.illuminant_strength, self.shading_strength, self.scale_range)

    def to_dict(self) -> dict:
        """JSON-compatible dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> "SyntheticConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown SyntheticConfig keys: {', '.join(unknown)}")
        return cls(**values)


def default_data_root() -> Path:
    """Where the embedded benchmark lives by default.

    ``$CAGNET_DATA`` when set; otherwise ``<repo root>/data/synthetic`` when the package runs
    from a source checkout (the repo root is the parent of the ``cagnet`` package folder and
    holds ``pyproject.toml``); otherwise ``./data/synthetic`` under the working directory.
    """
    env = os.environ.get("CAGNET_DATA")
    if env:
        return Path(env).expanduser()
    return project_root() / "data" / "synthetic"


# --------------------------------------------------------------------------- scenes


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Generator of one image: depends only on (seed, split, index)."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


@functools.lru_cache(maxsize=64)
def colour_family_margin(lighting: SceneLighting) -> tuple[float, str]:
    """How far the strongest light of ``lighting`` can move a class colour towards another.

    Every class colour (at both ends of its per-region brightness 0.85-1.1) is lit by the
    corners and edges of the illuminant range (brightness, colour temperature and the shading
    ramp's ends; channels clipped at 255 as in the images); its hue must stay nearer its own
    colour's hue than any other benchmark colour's. Returns ``(margin, colour)``: the smallest
    ``distance to the nearest other colour's hue - distance to its own``, in degrees, and the
    colour where it occurs (no light: 47.7 degrees, red and yellow). Cached per ``lighting``.
    """
    hues = {name: hue_of_rgb(rgb) for name, rgb in COLOURS.items()}
    steps = np.linspace(-1.0, 1.0, 5)
    worst, where = math.inf, ""
    for name, rgb in COLOURS.items():
        for tint in (0.85, 1.1):
            for brightness in steps:
                for temperature in steps:
                    for shading in (-lighting.shading_strength, 0.0, lighting.shading_strength):
                        gains = illuminant_gains(BRIGHTNESS_LOG_RANGE * lighting.illuminant_strength * brightness
                                                 + shading, MIRED_RANGE * lighting.illuminant_strength * temperature)
                        hue = hue_of_rgb(np.clip(np.asarray(rgb) * tint * gains, 0, 255))
                        margin = (min(hue_distance(hue, hues[other]) for other in hues if other != name)
                                  - hue_distance(hue, hues[name]))
                        if margin < worst:
                            worst, where = margin, name
    return float(worst), where


def scene_factors(config: SyntheticConfig, split: str, index: int) -> SceneFactors:
    """The scene factor of image ``index`` of ``split`` under ``config``'s strengths, from the
    image's own stream (seed, split, index, :data:`SCENE_STREAM`).

    A ``scene`` benchmark applies it; a ``plain`` one draws the same values and does not use
    them (its images do not depend on them: on plain images they are a placebo).
    """
    if split not in _SPLIT_CODES:
        raise ConfigError(f"split must be one of {', '.join(_SPLIT_CODES)}, got {split!r}")
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index, SCENE_STREAM])
    return draw_scene_factors(rng, config.lighting)


def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates (yy, xx) [size, size] in (0, 1)."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="ij")


def scene_factor_maps(config: SyntheticConfig, split: str, index: int) -> np.ndarray:
    """Per-pixel scene factor values of an image, float32 [S, S, F] (S = ``image_size``;
    columns :data:`cagnet.data.scenes.SCENE_FACTOR_NAMES`): the values :func:`generate_sample`
    applies under ``appearance: scene``, and the unused (placebo) values of a ``plain`` image."""
    return scene_factors(config, split, index).maps(*_unit_grid(config.image_size))


def _scene_classes(rng: np.random.Generator, split: str, count: int, config: SyntheticConfig) -> list[int]:
    """Distinct label ids for ``count`` regions.

    Training scenes weight unseen classes by ``train_unseen_weight``. Test and validation scenes
    contain one unseen and one seen class for sure; the other regions are drawn uniformly.
    """
    all_ids = np.arange(len(CLASS_NAMES))
    if split == "train":
        weights = np.where(np.isin(all_ids, UNSEEN_IDS), config.train_unseen_weight, 1.0)
        return [int(c) for c in rng.choice(all_ids, size=count, replace=False, p=weights / weights.sum())]
    forced = [int(rng.choice(UNSEEN_IDS)), int(rng.choice(SEEN_IDS))]
    rest = rng.choice(np.setdiff1d(all_ids, forced), size=count - 2, replace=False)
    classes = forced + [int(c) for c in rest]
    return [classes[i] for i in rng.permutation(count)]


def generate_sample(config: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene.

    Returns ``(image, label)``: RGB uint8 [S, S, 3] and raw label ids uint8 [S, S]
    (S = ``config.image_size``). Depends only on (config, split, index).
    """
    if split not in _SPLIT_CODES:
        raise ConfigError(f"split must be one of {', '.join(_SPLIT_CODES)}, got {split!r}")
    rng = _image_rng(config.seed, split, index)
    size = config.image_size
    coords = np.arange(size, dtype=np.float64) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # pixel units
    nyy, nxx = yy / size, xx / size  # normalised [0, 1]
    min_pixels = 0.03 * size * size

    for _ in range(100):
        n_stuff = int(rng.integers(config.background_regions[0], config.background_regions[1] + 1))
        n_objects = int(rng.integers(config.objects[0], config.objects[1] + 1))
        classes = _scene_classes(rng, split, n_stuff + n_objects, config)
        region = stuff_regions(rng, nyy, nxx, n_stuff)
        for k in range(n_objects):
            region[object_mask(rng, yy, xx, size)] = n_stuff + k
        areas = np.bincount(region.ravel(), minlength=len(classes))
        if split != "train":
            # a test or validation scene must show both an unseen and a seen class
            unseen_area = sum(a for c, a in zip(classes, areas) if c in UNSEEN_IDS)
            seen_area = sum(a for c, a in zip(classes, areas) if c not in UNSEEN_IDS)
            if unseen_area < min_pixels or seen_area < min_pixels:
                continue
        break
    else:  # pragma: no cover - a valid layout is found within a few tries
        raise DatasetError(f"could not draw a valid {split} scene {index} with {config}")

    factors = scene_factors(config, split, index) if config.appearance == "scene" else None
    scale = size / 128.0 * (factors.scale if factors is not None else 1.0)
    grey = rng.uniform(NEUTRAL_GREY - 15, NEUTRAL_GREY + 15)
    image = np.zeros((size, size, 3), dtype=np.float64)
    for k, label_id in enumerate(classes):
        inside = region == k
        if inside.any():
            image[inside] = _paint_class(rng, label_id, yy, xx, scale, grey, config.colour_jitter)[inside]
    if factors is not None:
        image = factors.illuminate(image, nyy, nxx)   # the light falls on the paint; the sensor noise comes after
    image += rng.normal(0.0, config.pixel_noise, image.shape)
    label = np.asarray(classes, dtype=np.uint8)[region]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _paint_class(rng: np.random.Generator, label_id: int, yy: np.ndarray, xx: np.ndarray, scale: float,
                 grey: float, colour_jitter: float) -> np.ndarray:
    """One region's appearance over the whole grid, float [H, W, 3]: the class pattern with its
    foreground in the (randomly tinted) class colour and its background in the neutral grey."""
    colour_name, pattern = CLASS_ATTRIBUTES[label_id]
    colour = np.asarray(COLOURS[colour_name], dtype=np.float64) * rng.uniform(0.85, 1.1)
    colour = colour + rng.normal(0.0, colour_jitter, 3)
    neutral = grey + rng.normal(0.0, 4.0, 3)
    coverage = pattern_mask(rng, pattern, yy, xx, scale)[..., None]
    return coverage * colour + (1.0 - coverage) * neutral


def render_class_swatch(label_id: int, size: int = 64, seed: int = 0, config: SyntheticConfig | None = None,
                        factors: SceneFactors | None = None) -> np.ndarray:
    """A square of one class's texture as it appears in the scenes (random orientation,
    period and tint drawn from ``seed``), uint8 [size, size, 3]; patterns are scaled as in
    images of ``config.image_size`` pixels. With ``factors`` the square is seen under that
    scene's light and scale (the same texture draws otherwise: one class under several scenes)."""
    if not 0 <= label_id < len(CLASS_NAMES):
        raise ConfigError(f"label id must be in 0..{len(CLASS_NAMES) - 1}, got {label_id}")
    config = SyntheticConfig() if config is None else config
    rng = np.random.default_rng([seed, 2, label_id])
    coords = np.arange(size, dtype=np.float64) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    scale = config.image_size / 128.0 * (factors.scale if factors is not None else 1.0)
    swatch = _paint_class(rng, label_id, yy, xx, scale, NEUTRAL_GREY, config.colour_jitter)
    if factors is not None:
        swatch = factors.illuminate(swatch, *_unit_grid(size))
    swatch += rng.normal(0.0, config.pixel_noise, swatch.shape)
    return np.clip(np.rint(swatch), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- writing


def _split_counts(config: SyntheticConfig) -> dict[str, int]:
    return {"train": config.num_train, "validation": config.num_validation, "test": config.num_test}


def _sample_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def benchmark_content_hash(root: str | os.PathLike) -> str:
    """SHA-256 over every file of a benchmark folder except ``benchmark.json``
    (relative POSIX path and content digest of each file, in sorted path order)."""
    root = Path(root)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != BENCHMARK_FILE)
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_file_digest(path).encode() + b"\n")
    return digest.hexdigest()


def _write_benchmark(root: Path, config: SyntheticConfig, progress: bool) -> None:
    """Write every file of the benchmark into the (empty) folder ``root``; benchmark.json last."""
    from tqdm.auto import tqdm

    num_labels = len(CLASS_NAMES)
    for split, folder in _SPLIT_DIRS.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
    (root / "split").mkdir()
    (root / "word_vectors").mkdir()

    counts = _split_counts(config)
    jobs = [(split, i) for split in _SPLIT_DIRS for i in range(counts[split])]
    pixel_counts = {split: np.zeros(num_labels, dtype=np.int64) for split in _SPLIT_DIRS}
    lists: dict[str, list[str]] = {split: [] for split in _SPLIT_DIRS}
    for split, index in tqdm(jobs, desc="synthetic benchmark", unit="img", disable=not progress):
        image, label = generate_sample(config, split, index)
        sample_id, folder = _sample_id(split, index), _SPLIT_DIRS[split]
        Image.fromarray(image, mode="RGB").save(root / "images" / folder / f"{sample_id}.png")
        Image.fromarray(label, mode="L").save(root / "annotations" / folder / f"{sample_id}.png")
        pixel_counts[split] += np.bincount(label.ravel(), minlength=num_labels)[:num_labels]
        lists[split].append(f"annotations/{folder}/{sample_id}.png")

    if config.appearance == "scene":
        factor_rows = {split: [list(dataclasses.astuple(scene_factors(config, split, i))) for i in range(counts[split])]
                       for split in _SPLIT_DIRS}
        with open(root / SCENE_FACTORS_FILE, "w", encoding="utf-8", newline="\n") as fh:
            json.dump({"fields": [f.name for f in dataclasses.fields(SceneFactors)], **factor_rows}, fh)
            fh.write("\n")
    with open(root / "labels_refined.txt", "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(f"{i}\t{name}\n" for i, name in enumerate(CLASS_NAMES))
    np.save(root / "split" / "seen_cls.npy", np.asarray(SEEN_IDS, dtype=np.int64), allow_pickle=False)
    np.save(root / "split" / "novel_cls.npy", np.asarray(UNSEEN_IDS, dtype=np.int64), allow_pickle=False)
    np.save(root / "split" / "train_list.npy", np.asarray(lists["train"], dtype=str), allow_pickle=False)
    np.save(root / "split" / "test_list.npy", np.asarray(lists["test"], dtype=str), allow_pickle=False)
    np.save(root / "split" / "validation_list.npy", np.asarray(lists["validation"], dtype=str), allow_pickle=False)
    np.save(root / "word_vectors" / "glove.npy", class_embeddings(), allow_pickle=False)

    test_total = int(pixel_counts["test"].sum())
    metadata = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "classes": attribute_table(),
        "seen": list(SEEN_IDS),
        "unseen": list(UNSEEN_IDS),
        "counts": counts,
        "pixel_counts": {split: counts.tolist() for split, counts in pixel_counts.items()},
        "test_unseen_pixel_share": float(pixel_counts["test"][list(UNSEEN_IDS)].sum() / max(test_total, 1)),
        "word_vectors": {
            "file": "word_vectors/glove.npy",
            "source": "GloVe 6B 50d",
            "composition": "[colour word ; pattern word], rows L2-normalised",
            "dim": 2 * GLOVE_DIM,
        },
        "appearance": {
            "mode": config.appearance,
            "factors": list(SCENE_FACTOR_NAMES) if config.appearance == "scene" else [],
            "file": SCENE_FACTORS_FILE if config.appearance == "scene" else None,
        },
        "content_sha256": benchmark_content_hash(root),
        "complete": True,
    }
    with open(root / BENCHMARK_FILE, "w", encoding="utf-8", newline="\n") as fh:
        json.dump(metadata, fh, indent=1)
        fh.write("\n")


def read_benchmark_metadata(root: str | os.PathLike) -> dict | None:
    """Contents of ``<root>/benchmark.json``, or None when it is missing or unreadable."""
    try:
        with open(Path(root) / BENCHMARK_FILE, encoding="utf-8") as fh:
            metadata = json.load(fh)
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def read_scene_factors(root: str | os.PathLike) -> dict[str, list[SceneFactors]]:
    """The scene factor of every image of a ``scene`` benchmark folder, per split, in image
    order (per-pixel values: ``factors.maps(yy, xx)`` on normalised coordinates). A missing
    or malformed file is a :class:`DatasetError` naming it."""
    path = Path(root) / SCENE_FACTORS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fields = [f.name for f in dataclasses.fields(SceneFactors)]
        if data["fields"] != fields:
            raise ValueError(f"fields {data['fields']} (expected {fields})")
        return {split: [SceneFactors(*(float(v) for v in row)) for row in data[split]] for split in _SPLIT_DIRS}
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (only an appearance: scene benchmark has scene factors)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: not a scene factor file ({err})") from None


def _is_reusable(root: Path, config: SyntheticConfig) -> bool:
    """True when ``root`` holds a complete benchmark of this format and configuration whose
    files all exist (contents are not re-hashed; see :func:`verify_synthetic_benchmark`)."""
    metadata = read_benchmark_metadata(root)
    if not metadata or metadata.get("format") != FORMAT_NAME or metadata.get("version") != FORMAT_VERSION:
        return False
    if metadata.get("complete") is not True or metadata.get("config") != config.to_dict():
        return False
    fixed = ["labels_refined.txt", "split/seen_cls.npy", "split/novel_cls.npy", "split/train_list.npy",
             "split/test_list.npy", "split/validation_list.npy", "word_vectors/glove.npy"]
    if config.appearance == "scene":
        fixed.append(SCENE_FACTORS_FILE)
    if not all((root / name).is_file() for name in fixed):
        return False
    for split, folder in _SPLIT_DIRS.items():
        for index in range(_split_counts(config)[split]):
            name = f"{_sample_id(split, index)}.png"
            if not (root / "images" / folder / name).is_file() or not (root / "annotations" / folder / name).is_file():
                return False
    return True


def verify_synthetic_benchmark(root: str | os.PathLike) -> dict:
    """Re-hash a benchmark folder and compare with its ``benchmark.json``.

    Returns the metadata; raises :class:`DatasetError` when the file is missing or a file
    changed.
    """
    root = Path(root)
    metadata = read_benchmark_metadata(root)
    if not metadata or metadata.get("format") != FORMAT_NAME:
        raise DatasetError(f"{root / BENCHMARK_FILE}: missing or not a synthetic benchmark description")
    actual = benchmark_content_hash(root)
    if actual != metadata.get("content_sha256"):
        raise DatasetError(f"{root}: files differ from benchmark.json (content hash {actual[:12]}... "
                           f"!= {str(metadata.get('content_sha256'))[:12]}...)")
    return metadata


def build_synthetic_benchmark(root: str | os.PathLike | None = None, config: SyntheticConfig | None = None,
                              force: bool = False, progress: bool = True) -> Path:
    """Generate the embedded benchmark in the original CaGNet folder layout, or reuse it.

    Args:
        root: target folder (default :func:`default_data_root`).
        config: generation parameters (default ``SyntheticConfig()``).
        force: regenerate even when a matching benchmark exists.
        progress: show a tqdm progress bar.

    A folder whose ``benchmark.json`` is complete and records the same configuration is
    reused as is. Otherwise the benchmark is written into a temporary sibling folder that then
    replaces ``root``, so ``root`` never holds a half-written dataset. A non-empty ``root``
    without a ``benchmark.json`` is not a synthetic benchmark and is never overwritten.

    Writes ``images/{train,validation,val}/<id>.png``, ``annotations/{train,validation,val}/<id>.png``
    (mode L, raw label ids; ``val`` holds the test split, as in the original), ``labels_refined.txt``,
    ``split/{seen_cls,novel_cls,train_list,validation_list,test_list}.npy``,
    ``word_vectors/glove.npy`` and, last, ``benchmark.json``. Returns the absolute root.
    """
    config = SyntheticConfig() if config is None else config
    if not isinstance(config, SyntheticConfig):
        raise ConfigError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    root = Path(default_data_root() if root is None else root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a directory")
    if not force and _is_reusable(root, config):
        return root
    if root.is_dir() and any(root.iterdir()) and not (root / BENCHMARK_FILE).exists():
        raise DatasetError(f"{root}: not empty and has no {BENCHMARK_FILE}; refusing to overwrite it "
                           "(choose another folder or empty it)")

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_benchmark(staging, config, progress)
        if not force and _is_reusable(root, config):
            return root  # another process finished the same benchmark meanwhile
        retired = None
        if root.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, retired / root.name)
        os.replace(staging, root)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root
