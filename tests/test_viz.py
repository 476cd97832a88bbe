"""Tests of the figure helpers (Agg backend, no display)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from cagnet import viz


def small_batch(count=3, size=12, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]
    masks = [rng.integers(0, classes, (size, size)).astype(np.uint8) for _ in range(count)]
    masks[0][:2] = 255
    return images, masks


@pytest.mark.parametrize("num_classes", [1, 16, 20, 21, 60, 182])
def test_palette_is_fixed_and_distinct(num_classes):
    palette = viz.class_palette(num_classes)
    assert palette.shape == (num_classes, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette, viz.class_palette(num_classes))
    prefix = min(10, num_classes)
    np.testing.assert_array_equal(palette[:prefix], viz.class_palette(prefix))  # prefix-stable
    assert len({tuple(c) for c in palette}) == num_classes
    if num_classes <= 21:
        diff = palette[:, None].astype(int) - palette[None].astype(int)
        distance = np.sqrt((diff ** 2).sum(-1)) + np.eye(num_classes) * 1e9
        assert distance.min() > 25  # clearly different colours
    assert not (palette == viz.IGNORE_COLOUR).all(axis=1).any()  # no class is drawn like "ignored"


def test_colorize_mask_maps_ids_and_ignore():
    palette = viz.class_palette(4)
    mask = np.array([[0, 1], [3, 255]])
    rgb = viz.colorize_mask(mask, palette)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], palette[0])
    np.testing.assert_array_equal(rgb[1, 0], palette[3])
    np.testing.assert_array_equal(rgb[1, 1], viz.IGNORE_COLOUR)
    with pytest.raises(ValueError, match=r"\[7\]"):
        viz.colorize_mask(np.array([[7]]), palette)


def test_overlay_alpha_extremes():
    images, masks = small_batch(count=1)
    image, mask = images[0], masks[0]
    palette = viz.class_palette(5)
    np.testing.assert_array_equal(viz.overlay_mask(image, mask, palette, alpha=0.0), image)
    full = viz.overlay_mask(image, mask, palette, alpha=1.0)
    labelled = mask != 255
    np.testing.assert_array_equal(full[labelled], palette[mask[labelled]])
    np.testing.assert_array_equal(full[~labelled], np.broadcast_to(viz.IGNORE_COLOUR, full[~labelled].shape))
    half = viz.overlay_mask(image, mask, palette, alpha=0.5)
    assert half.dtype == np.uint8 and half.shape == image.shape
    expected = np.rint(0.5 * image[labelled].astype(float) + 0.5 * palette[mask[labelled]])
    np.testing.assert_array_equal(half[labelled], expected)
    np.testing.assert_array_equal(half[~labelled], np.rint(0.5 * image[~labelled].astype(float)))  # darkened
    with pytest.raises(ValueError):
        viz.overlay_mask(image, mask[:-1], palette)


def test_plot_samples_has_two_axes_per_sample_and_marks_unseen():
    images, masks = small_batch(count=3)
    names = [f"class{i}" for i in range(5)]
    fig = viz.plot_samples(images, masks, names, unseen=[4], ncols=2)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "class4 (unseen)" in texts and "class0" in texts and "ignored" in texts
    bold = {t.get_text() for t in fig.legends[0].get_texts() if t.get_fontweight() == "bold"}
    assert bold == {"class4 (unseen)"}
    fig.canvas.draw()  # renders without error


def test_class_pixel_counts_and_stats_figure():
    _, masks = small_batch(count=2)
    counts = viz.class_pixel_counts(masks, 5)
    assert counts.sum() == sum(int((m != 255).sum()) for m in masks)
    names = [f"class{i}" for i in range(5)]
    fig = viz.plot_class_pixel_stats({"train": counts, "test": counts[::-1]}, names, unseen=[3, 4])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["class0", "class1", "class2", "class3*", "class4*"]
    bars = [[bar.get_height() for bar in container] for container in fig.axes[0].containers]
    assert len(bars) == 2  # one bar group per split
    np.testing.assert_allclose(bars[0], 100.0 * counts / counts.sum())
    np.testing.assert_allclose(bars[1], 100.0 * counts[::-1] / counts.sum())
    with pytest.raises(ValueError):
        viz.plot_class_pixel_stats({"train": counts[:3]}, names)


def test_embedding_similarity_heatmap():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 6))
    similarity = viz.cosine_similarity(emb)
    np.testing.assert_allclose(np.diag(similarity), 1.0)
    np.testing.assert_allclose(similarity, similarity.T)
    fig = viz.plot_embedding_similarity(emb, ["a", "b", "c", "d"], unseen=[2])
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colour bar
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c*", "d"]
    with pytest.raises(ValueError):
        viz.plot_embedding_similarity(emb, ["a", "b"])


def test_class_swatches_one_axes_per_class():
    images, _ = small_batch(count=3)
    fig = viz.plot_class_swatches(images, ["a", "b", "c"], ncols=2, unseen=[1])
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["a", "b (unseen)", "c"]
    assert fig.axes[1].title.get_fontweight() == "bold"
    with pytest.raises(ValueError):
        viz.plot_class_swatches(images, ["a"])
