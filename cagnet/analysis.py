"""Numbers behind the figures: principal-component projections of features and moving averages
of curves (plain numpy; :mod:`cagnet.viz` draws them)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

class PCAProjection:
    """A fitted principal-component projection (plain numpy arrays, no state beyond them).

    Attributes:
        mean: [D] mean of the rows the projection was fitted on.
        components: [k, D] orthonormal principal directions, strongest first. The sign of
            each is fixed (its largest-magnitude entry is positive), so the same data always
            gives the same picture.
        explained_variance_ratio: [k] share of the total variance along each direction.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray, explained_variance_ratio: np.ndarray) -> None:
        self.mean = mean
        self.components = components
        self.explained_variance_ratio = explained_variance_ratio

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Rows [N, D] -> coordinates [N, k] along the components."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features must be [N, {self.mean.shape[0]}], got shape {features.shape}")
        return (features - self.mean) @ self.components.T

    def axis_labels(self) -> list[str]:
        """"PC1 (42 % of variance)", ... for plot axes."""
        return [f"PC{i + 1} ({100 * r:.0f} % of variance)" for i, r in enumerate(self.explained_variance_ratio)]


def fit_pca(features: np.ndarray, n_components: int = 2) -> PCAProjection:
    """Principal components of the rows of ``features`` [N, D] by an SVD of the centred rows.

    Returns a :class:`PCAProjection`; ``fit_pca(x).transform(y)`` projects other rows (e.g.
    generated features) into the same plane as ``x``.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {x.shape}")
    if not 1 <= n_components <= min(x.shape):
        raise ValueError(f"n_components must be in 1..{min(x.shape)}, got {n_components}")
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:n_components]
    signs = np.sign(components[np.arange(n_components), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular ** 2
    total = variance.sum()
    ratio = variance[:n_components] / total if total > 0 else np.zeros(n_components)
    return PCAProjection(mean, components, ratio)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first entries average what exists)."""
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[start]) / (index - start)


def subsample_per_class(labels, count: int, num_classes: int, rng=None):
    """Indices (LongTensor) of at most ``count`` random entries of each class 0..num_classes-1
    of ``labels`` [P], drawn from the torch generator ``rng``; class by class, in random order
    within a class. Used to draw as many points of every class in a projection."""
    import torch

    labels = torch.as_tensor(labels)
    rows = [torch.nonzero(labels == c).squeeze(1) for c in range(num_classes)]
    return torch.cat([r[torch.randperm(len(r), generator=rng)[:count]] for r in rows])
