"""Does a pixel's feature depend on its context? CaGNet's premise, measured on the data.

CaGNet's contextual module rests on a premise about images: "a pixel-wise feature highly
depends on its contextual information" (the light, the scale, the surrounding stuff), so the
features of one class vary from scene to scene in a way the scene explains. This module
measures both halves of that sentence on a backbone's real features of a split, where each
pixel has known scene factor values (:func:`cagnet.data.synthetic.scene_factor_maps`: the
light's brightness and colour temperature, the shading, the scale):

(a) **factor share of class variance** (:func:`class_factor_share`): within each class, the R^2
    of a linear regression of the pixel features [D] on the factor values at the pixel [F].
    The R^2 pools the feature channels (1 - residual / total sum of squares over all of them,
    so each channel counts by its variance); the result is the mean over classes. With image
    ids as ``groups`` it is cross-validated over images (fitted on the other images' pixels of
    the class, scored on the held-out ones): a factor that explains nothing then scores about
    0 or below, whereas in-sample F regressors fitted on n images score about F / n by chance,
    because the pixels of one image share their scene.
(b) **context probe** (:func:`context_probe`): a ridge regression from the mean feature of a
    region's context (the image's *other* regions, never the region itself) to the region's
    mean factor values, fitted on some images and scored (R^2 per factor) on the others. A
    high R^2 says that the context reveals the factor, so that a contextual module could
    account for it.

Both take plain arrays, so they hold for any features. :func:`premise_measurement` computes
them for a configuration's benchmark with its pretrained backbone (the body that every
method starts from, :func:`backbone_grid_samples`): (a) in-sample on the pixels and on each
region's mean feature (the class's appearance in one scene, without the variance inside a
region: pattern phase, edges), each next to its chance level, the same share when every image
gets another image's factor values (a placebo), and next to :func:`between_image_share`, the
part of a class's pixel variance that lies between images at all (the ceiling of any factor
that is constant within an image). On a ``plain`` benchmark the factor values are the ones a ``scene``
benchmark would apply but a plain image ignores: a placebo that measures the chance level of
both numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from cagnet.errors import ConfigError

#: Ridge penalties tried by :func:`context_probe` (on standardised features), chosen by
#: cross-validation over the training images.
PROBE_ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def _as_2d(values, name: str, rows: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or (rows is not None and array.shape[0] != rows):
        expected = f"[{rows}, ...]" if rows is not None else "2-d"
        raise ConfigError(f"{name}: expected a {expected} array, got shape {np.shape(values)}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name}: contains NaN or infinite values")
    return array


def _folds_of(groups: np.ndarray, folds: int) -> np.ndarray:
    """Fold index [N] of every row: the distinct groups, in sorted order, dealt round-robin."""
    _, rank = np.unique(groups, return_inverse=True)
    return rank % folds


def _fit_linear(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least-squares coefficients [1 + F, D] of targets [N, D] on [1, design] (minimum norm when
    a factor column is constant)."""
    full = np.hstack([np.ones((design.shape[0], 1)), design])
    return np.linalg.lstsq(full, targets, rcond=None)[0]


def _predict_linear(coefficients: np.ndarray, design: np.ndarray) -> np.ndarray:
    return coefficients[0] + design @ coefficients[1:]


def class_factor_share(features, classes, factors, groups=None, folds: int = 5) -> dict[str, Any]:
    """Share of each class's feature variance that the scene factor explains linearly.

    Args:
        features: [N, D] one row per pixel (e.g. a backbone's feature at a grid cell).
        classes: [N] integer class of each pixel.
        factors: [N, F] the scene factor values at each pixel.
        groups: [N] image id of each pixel, or None. Given: the R^2 is cross-validated over
            the images of each class (``folds`` folds of whole images; a class in fewer than 2
            images is left out); None: in-sample R^2.

    Returns ``{"mean": float, "per_class": {class: R^2}, "pixels": {class: count}}``: per class
    ``1 - sum of squared residuals / sum of squared deviations from the class mean``, both
    summed over all D channels (a variance-weighted R^2); ``mean`` averages the classes
    (NaN when none could be measured).
    """
    features = _as_2d(features, "features")
    count = features.shape[0]
    factors = _as_2d(factors, "factors", count)
    classes = np.asarray(classes)
    if classes.shape != (count,):
        raise ConfigError(f"classes: expected shape ({count},), got {classes.shape}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (count,):
            raise ConfigError(f"groups: expected shape ({count},), got {groups.shape}")
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}")
    per_class: dict[int, float] = {}
    pixels: dict[int, int] = {}
    for label in np.unique(classes):
        rows = classes == label
        x, z = features[rows], factors[rows]
        total = float(((x - x.mean(0)) ** 2).sum())
        if total <= 0 or len(x) < 2:
            continue
        if groups is None:
            residual = float(((x - _predict_linear(_fit_linear(z, x), z)) ** 2).sum())
        else:
            class_groups = groups[rows]
            distinct = len(np.unique(class_groups))
            if distinct < 2:
                continue
            fold = _folds_of(class_groups, min(folds, distinct))
            residual = 0.0
            for k in np.unique(fold):
                held = fold == k
                coefficients = _fit_linear(z[~held], x[~held])
                residual += float(((x[held] - _predict_linear(coefficients, z[held])) ** 2).sum())
        per_class[int(label)] = 1.0 - residual / total
        pixels[int(label)] = int(rows.sum())
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"mean": mean, "per_class": per_class, "pixels": pixels}


def _ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge coefficients [D, F] for centred features [N, D] and centred targets [N, F]."""
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    return vt.T @ ((s / (s ** 2 + alpha))[:, None] * (u.T @ targets))


def context_probe(context_features, factors, groups, held_out_fraction: float = 0.5, folds: int = 5,
                  alphas: Sequence[float] = PROBE_ALPHAS, seed: int = 0) -> dict[str, Any]:
    """How well a linear probe recovers the scene factor from the context, on held-out images.

    Args:
        context_features: [N, D] one row per sample, e.g. the mean feature of a region's
            context (:func:`region_rows`).
        factors: [N, F] the factor values to recover.
        groups: [N] image id of each row: a share ``held_out_fraction`` of the images (drawn
            with ``seed``) is held out; the penalty is chosen among ``alphas`` by ``folds``-fold
            cross-validation over the other images.

    Features are standardised and targets scaled by the training images' statistics. Returns
    ``{"mean": float, "per_factor": [R^2 per column], "alpha": float, "train_rows": int,
    "held_out_rows": int}``: R^2 on the held-out rows (1 - SSE / squared deviations from their
    own mean; NaN for a column constant there or in training), ``mean`` over the other columns.
    """
    x = _as_2d(context_features, "context_features")
    y = _as_2d(factors, "factors", x.shape[0])
    groups = np.asarray(groups)
    if groups.shape != (x.shape[0],):
        raise ConfigError(f"groups: expected shape ({x.shape[0]},), got {groups.shape}")
    if not 0 < held_out_fraction < 1:
        raise ConfigError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    distinct = np.unique(groups)
    held_count = int(round(held_out_fraction * len(distinct)))
    if held_count < 1 or len(distinct) - held_count < 2:
        raise ConfigError(f"context_probe needs images to train on and to hold out, got {len(distinct)} image(s)")
    held_groups = np.random.default_rng(seed).permutation(distinct)[:held_count]
    held = np.isin(groups, held_groups)
    x_train, y_train = x[~held], y[~held]
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 1e-12 * max(float(std.max()), 1.0), std, 1.0)   # constant channels carry nothing
    y_mean, y_std = y_train.mean(0), y_train.std(0)
    varies = y_std > 1e-12
    y_scale = np.where(varies, y_std, 1.0)
    xs, ys = (x_train - mean) / std, (y_train - y_mean) / y_scale

    fold = _folds_of(groups[~held], min(folds, len(distinct) - held_count))
    errors = []
    for alpha in alphas:
        error = 0.0
        for k in np.unique(fold):
            inner = fold == k
            x_mean, y_fold_mean = xs[~inner].mean(0), ys[~inner].mean(0)
            coefficients = _ridge(xs[~inner] - x_mean, ys[~inner] - y_fold_mean, alpha)
            prediction = (xs[inner] - x_mean) @ coefficients + y_fold_mean
            error += float(((ys[inner] - prediction)[:, varies] ** 2).sum())
        errors.append(error)
    alpha = float(alphas[int(np.argmin(errors))])
    coefficients = _ridge(xs - xs.mean(0), ys - ys.mean(0), alpha)
    prediction = (((x[held] - mean) / std - xs.mean(0)) @ coefficients + ys.mean(0)) * y_scale + y_mean
    per_factor = []
    for column in range(y.shape[1]):
        target = y[held, column]
        total = float(((target - target.mean()) ** 2).sum())
        if not varies[column] or total <= 1e-12 * max(float((target ** 2).sum()), 1e-300):
            per_factor.append(float("nan"))
            continue
        per_factor.append(1.0 - float(((target - prediction[:, column]) ** 2).sum()) / total)
    measured = [r for r in per_factor if not np.isnan(r)]
    return {"mean": float(np.mean(measured)) if measured else float("nan"), "per_factor": per_factor,
            "alpha": alpha, "train_rows": int((~held).sum()), "held_out_rows": int(held.sum())}


def between_image_share(features, classes, groups) -> float:
    """Share of each class's feature variance that lies between images (the variance of the
    per-image class means, weighted by pixels, over the total; mean over classes): the most
    that any factor constant within an image could explain in-sample. Arrays as in
    :func:`class_factor_share`."""
    features = _as_2d(features, "features")
    classes, groups = np.asarray(classes), np.asarray(groups)
    if classes.shape != (features.shape[0],) or groups.shape != classes.shape:
        raise ConfigError(f"classes and groups: expected shape ({features.shape[0]},), got {classes.shape} "
                          f"and {groups.shape}")
    shares = []
    for label in np.unique(classes):
        rows = classes == label
        x = features[rows]
        total = float(((x - x.mean(0)) ** 2).sum())
        if total <= 0:
            continue
        _, image, pixels = np.unique(groups[rows], return_inverse=True, return_counts=True)
        means = np.zeros((len(pixels), x.shape[1]))
        np.add.at(means, image, x)
        means /= pixels[:, None]
        shares.append(float((pixels[:, None] * (means - x.mean(0)) ** 2).sum()) / total)
    return float(np.mean(shares)) if shares else float("nan")


def region_rows(features, labels, factors, ignore_index: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One row per region of an image: the region's own mean feature, the mean feature of the
    image's other regions (its context), the region's mean factor values and its label.

    Args:
        features: [h, w, D] the image's features on its grid.
        labels: [h, w] the region (class) of each cell; cells at ``ignore_index`` belong to no
            region and to no context.
        factors: [h, w, F] factor values at each cell.

    Returns ``(own [R, D], context [R, D], targets [R, F], region_labels [R])`` for the regions
    that have another region in the image (an image of one region has no context: no rows).
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    factors = np.asarray(factors, dtype=np.float64)
    if features.shape[:2] != labels.shape or factors.shape[:2] != labels.shape:
        raise ConfigError(f"region_rows: features {features.shape}, labels {labels.shape} and factors "
                          f"{factors.shape} must share the grid [h, w]")
    valid = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, dtype=bool)
    own, context, targets, names = [], [], [], []
    for label in np.unique(labels[valid]):
        inside = labels == label
        others = valid & ~inside
        if not others.any():
            continue
        own.append(features[inside].mean(0))
        context.append(features[others].mean(0))
        targets.append(factors[inside].mean(0))
        names.append(label)
    dim, width = features.shape[-1], factors.shape[-1]
    if not own:
        return np.zeros((0, dim)), np.zeros((0, dim)), np.zeros((0, width)), np.zeros(0, dtype=labels.dtype)
    return np.stack(own), np.stack(context), np.stack(targets), np.asarray(names)


@dataclass
class GridSamples:
    """A split's features on the backbone's grid with their classes and scene factor values.

    ``features`` [n, h, w, D], ``labels`` [n, h, w] (class of each cell), ``factors``
    [n, h, w, F] (scene factor values at each cell), ``images`` [n] (image index in the split).
    """

    features: np.ndarray
    labels: np.ndarray
    factors: np.ndarray
    images: np.ndarray

    def _factors(self, placebo: np.ndarray | None) -> np.ndarray:
        # a placebo gives image k the factor maps of image placebo[k]: same values and layout, another scene
        return self.factors if placebo is None else self.factors[placebo]

    def pixel_rows(self, placebo: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(features [N, D], classes [N], factors [N, F], images [N])``, one row per cell."""
        n, h, w, dim = self.features.shape
        factors = self._factors(placebo)
        return (self.features.reshape(-1, dim), self.labels.reshape(-1), factors.reshape(-1, factors.shape[-1]),
                np.repeat(self.images, h * w))

    def region_rows(self, placebo: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(own [R, D], context [R, D], factors [R, F], classes [R], images [R])``, one row per
        region (:func:`region_rows`)."""
        factors = self._factors(placebo)
        parts = [region_rows(self.features[k], self.labels[k], factors[k]) for k in range(len(self.images))]
        images = np.concatenate([np.full(len(part[3]), image) for part, image in zip(parts, self.images)])
        own, context, targets, classes = (np.concatenate([part[j] for part in parts]) for j in range(4))
        return own, context, targets, classes, images


def placebo_permutations(count: int, repeats: int, seed: int = 0) -> list[np.ndarray]:
    """``repeats`` permutations of ``count`` images in which no image keeps its own place
    (cyclic shifts of a random order, so each image gets another image's factor)."""
    if count < 2:
        raise ConfigError(f"a placebo needs at least 2 images, got {count}")
    rng = np.random.default_rng(seed)
    permutations = []
    for _ in range(repeats):
        order = rng.permutation(count)
        shifted = np.empty(count, dtype=np.int64)
        shifted[order] = np.roll(order, int(rng.integers(1, count)))
        permutations.append(shifted)
    return permutations


def _benchmark_of(config):
    from cagnet.data.synthetic import SyntheticConfig

    if config.data.synthetic is None:
        raise ConfigError(f"config {config.name!r}: the premise measurement needs the embedded benchmark "
                          f"(data.synthetic), whose images have known scene factor values")
    return SyntheticConfig.from_dict(dict(config.data.synthetic))


def backbone_grid_samples(config, split: str = "validation", count: int | None = None, weights=None,
                          device: torch.device | str | None = None, batch_size: int = 16,
                          progress: bool = False) -> GridSamples:
    """The pretrained backbone's features of the first ``count`` images (default all) of a split
    of ``config``'s embedded benchmark, with their classes and scene factor values.

    Args:
        config: a :class:`~cagnet.config.TrainConfig` with ``data.synthetic`` set; the images are
            drawn by the generator (identical to the benchmark's files).
        split: ``validation`` (default), ``test`` or ``train``.
        weights: the backbone's weights (default: the config's pretrained backbone,
            :func:`cagnet.pretrain.ensure_pretrained`, trained first when missing).

    Features: the ResNet body's output [D, h, w] (the ASPP's input, what pretraining trained) in
    eval mode; labels and factor values are sampled at the grid cells as the evaluation resizes
    labels (nearest).
    """
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from cagnet.data import synthetic
    from cagnet.data.transforms import normalize_image, resize_labels
    from cagnet.models import build_cagnet, load_checkpoint
    from cagnet.pretrain import ensure_pretrained
    from cagnet.train.distributed import resolve_device

    benchmark = _benchmark_of(config)
    available = {"train": benchmark.num_train, "validation": benchmark.num_validation, "test": benchmark.num_test}
    if split not in available:
        raise ConfigError(f"split must be one of {', '.join(available)}, got {split!r}")
    count = available[split] if count is None else min(count, available[split])
    if count < 4:
        raise ConfigError(f"the premise measurement needs at least 4 images of {split}, got {count}")
    device = resolve_device(config.runtime.device) if device is None else torch.device(device)
    weights = ensure_pretrained(config, progress=progress).path if weights is None else weights
    model = build_cagnet(config.model)
    load_checkpoint(model, weights)
    body = model.backbone.to(device).eval()

    features, labels, factors = [], [], []
    for start in tqdm(range(0, count, batch_size), desc="premise", unit="batch", disable=not progress):
        indices = range(start, min(start + batch_size, count))
        samples = [synthetic.generate_sample(benchmark, split, i) for i in indices]
        images = torch.stack([normalize_image(image, config.data.normalization) for image, _ in samples])
        with torch.no_grad():
            grid = body.body(images.to(device)).float().cpu()                     # [B, D, h, w]
        size = grid.shape[-2:]
        labels.append(resize_labels(torch.stack([torch.from_numpy(label) for _, label in samples]), size).numpy())
        maps = torch.stack([torch.from_numpy(synthetic.scene_factor_maps(benchmark, split, i)) for i in indices])
        factors.append(F.interpolate(maps.permute(0, 3, 1, 2), size=size, mode="nearest").permute(0, 2, 3, 1).numpy())
        features.append(grid.permute(0, 2, 3, 1).numpy())
    return GridSamples(features=np.concatenate(features), labels=np.concatenate(labels),
                       factors=np.concatenate(factors), images=np.arange(count))


def premise_measurement(config, split: str = "validation", count: int | None = None, weights=None,
                        device: torch.device | str | None = None, batch_size: int = 16, placebos: int = 3,
                        seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """(a) and (b) of the module docstring on the pretrained backbone's features of a split of
    a configuration's embedded benchmark (:func:`backbone_grid_samples`, whose arguments these are).

    (a) is the in-sample share, measured on the pixels and on each region's mean feature, next
    to its chance level: the same share with every image given another image's factor values
    (``placebos`` derangements, :func:`placebo_permutations`; on few images the chance level is
    far from 0, on a ``plain`` benchmark the share equals it). Returns a dict: ``appearance``,
    ``lighting``, ``split``, ``images``, ``factor_names``; ``class_factor_share``,
    ``class_factor_share_placebo``, ``class_factor_share_excess`` (share - placebo),
    ``per_class`` (class name -> share), ``region_factor_share`` / ``_placebo`` / ``_excess``,
    ``between_image_share`` (pixels); (b) ``context_probe_r2`` (mean over the factors),
    ``context_probe`` (factor name -> R^2 on held-out images) and ``probe_alpha``.
    """
    from cagnet.config_io import to_dict
    from cagnet.data.scenes import SCENE_FACTOR_NAMES
    from cagnet.data.synthetic import CLASS_NAMES

    benchmark = _benchmark_of(config)
    samples = backbone_grid_samples(config, split, count, weights, device, batch_size, progress)
    shuffles = placebo_permutations(len(samples.images), placebos, seed)

    features, classes, factors, images = samples.pixel_rows()
    pixel = class_factor_share(features, classes, factors)
    pixel_placebo = float(np.mean([class_factor_share(features, classes, samples.pixel_rows(order)[2])["mean"]
                                   for order in shuffles]))
    own, context, targets, region_classes, region_images = samples.region_rows()
    region = class_factor_share(own, region_classes, targets)
    region_placebo = float(np.mean([class_factor_share(own, region_classes, samples.region_rows(order)[2])["mean"]
                                    for order in shuffles]))
    probe = context_probe(context, targets, region_images, seed=seed)
    return {
        "appearance": benchmark.appearance,
        "lighting": to_dict(benchmark.lighting),
        "split": split,
        "images": len(samples.images),
        "factor_names": list(SCENE_FACTOR_NAMES),
        "class_factor_share": pixel["mean"],
        "class_factor_share_placebo": pixel_placebo,
        "class_factor_share_excess": pixel["mean"] - pixel_placebo,
        "per_class": {CLASS_NAMES[c]: r2 for c, r2 in pixel["per_class"].items()},
        "region_factor_share": region["mean"],
        "region_factor_share_placebo": region_placebo,
        "region_factor_share_excess": region["mean"] - region_placebo,
        "between_image_share": between_image_share(features, classes, images),
        "context_probe_r2": probe["mean"],
        "context_probe": dict(zip(SCENE_FACTOR_NAMES, probe["per_factor"])),
        "probe_alpha": probe["alpha"],
    }
