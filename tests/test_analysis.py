"""Tests of cagnet.analysis: PCA projections and moving averages."""
from __future__ import annotations

import numpy as np
import pytest

from cagnet.analysis import fit_pca, moving_average


def test_fit_pca_recovers_the_dominant_direction_and_fixes_signs():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, -4.0, 0.0]) / 5.0
    data = rng.normal(size=(200, 1)) * 10.0 * direction + rng.normal(scale=0.1, size=(200, 3)) + 7.0
    pca = fit_pca(data, 2)
    assert pca.components.shape == (2, 3) and pca.mean.shape == (3,)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(2), atol=1e-12)
    # the largest-magnitude entry of each component is positive: -4/5 flips the direction
    np.testing.assert_allclose(pca.components[0], -direction, atol=0.01)
    assert pca.explained_variance_ratio[0] > 0.99 and pca.explained_variance_ratio.sum() <= 1.0
    projected = pca.transform(data)
    assert projected.shape == (200, 2)
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-9)  # centred on the fitted mean
    np.testing.assert_allclose(fit_pca(data[::-1], 2).components, pca.components, atol=1e-9)
    assert pca.axis_labels()[0].startswith("PC1 (")
    with pytest.raises(ValueError):
        pca.transform(data[:, :2])
    with pytest.raises(ValueError):
        fit_pca(data, 4)


def test_moving_average_is_trailing_and_starts_with_what_exists():
    np.testing.assert_allclose(moving_average([1, 2, 3, 4], 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(moving_average([5.0], 10), [5.0])
    with pytest.raises(ValueError):
        moving_average([1.0], 0)


def test_subsample_per_class_takes_at_most_count_of_each_class():
    import torch

    from cagnet.analysis import subsample_per_class

    labels = torch.tensor([0] * 10 + [1] * 3 + [3] * 7)
    rng = torch.Generator().manual_seed(0)
    rows = subsample_per_class(labels, 4, num_classes=4, rng=rng)
    assert torch.bincount(labels[rows], minlength=4).tolist() == [4, 3, 0, 4]
    assert len(set(rows.tolist())) == len(rows)
    again = subsample_per_class(labels, 4, num_classes=4, rng=torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)
