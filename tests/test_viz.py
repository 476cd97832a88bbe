"""Tests of the figure helpers (Agg backend, no display)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from cagnet import viz
from cagnet.data import class_pixel_counts
from cagnet.data.synthetic import CLASS_NAMES, SEEN_IDS, UNSEEN_IDS


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


# the embedded benchmark's classes in evaluation order (seen first, then unseen), as notebooks 04-06
BENCHMARK_NAMES = [n for i, n in enumerate(CLASS_NAMES) if i in SEEN_IDS] + [CLASS_NAMES[i] for i in UNSEEN_IDS]
DOMINANT = {"red": (0,), "green": (1,), "blue": (2,), "yellow": (0, 1)}  # channels that must lead


def _pairwise_distance(palette):
    diff = palette[:, None].astype(int) - palette[None].astype(int)
    return np.sqrt((diff ** 2).sum(-1)) + np.eye(len(palette)) * 1e9


def test_palette_draws_colour_named_classes_in_their_colour():
    palette = viz.class_palette(BENCHMARK_NAMES)
    assert palette.shape == (16, 3) and palette.dtype == np.uint8
    for name, colour in zip(BENCHMARK_NAMES, palette.astype(int)):
        word = name.split("_")[0]
        lead, rest = DOMINANT[word], [c for c in range(3) if c not in DOMINANT[word]]
        assert colour[list(lead)].min() >= colour[rest].max() + 40, f"{name} drawn as {colour}"
    green_striped = palette[BENCHMARK_NAMES.index("green_striped")].astype(int)
    assert green_striped[1] > green_striped[0] + 40 and green_striped[1] > green_striped[2] + 40
    assert _pairwise_distance(palette).min() > 25  # every class its own, clearly different colour
    assert not (palette == viz.IGNORE_COLOUR).all(axis=1).any()
    # same class, same colour, in raw-label order (notebook 01) and in evaluation order (04-06)
    raw = viz.class_palette(list(CLASS_NAMES))
    for name, colour in zip(BENCHMARK_NAMES, palette):
        np.testing.assert_array_equal(raw[CLASS_NAMES.index(name)], colour)
    # one pattern, one lightness, in every colour: darker to lighter in alphabetical pattern order
    lightness = {name: int(c.max()) + int(c.min()) for name, c in zip(BENCHMARK_NAMES, palette.astype(int))}
    for colour in DOMINANT:
        ordered = [lightness[f"{colour}_{pattern}"] for pattern in ("checkered", "dotted", "striped", "wavy")]
        assert ordered == sorted(ordered) and len(set(ordered)) == 4


def test_palette_of_other_names_is_distinct_and_categorical():
    voc = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    palette = viz.class_palette(voc)
    np.testing.assert_array_equal(viz.class_palette(sorted(voc)), viz.class_palette(len(voc)))  # categorical
    assert _pairwise_distance(palette).min() > 25
    shuffled = [voc[i] for i in np.random.default_rng(0).permutation(len(voc))]
    for name, colour in zip(shuffled, viz.class_palette(shuffled)):  # a class's colour follows its name
        np.testing.assert_array_equal(colour, palette[voc.index(name)])
    mixed = ["sky", "Red Car", "grass", "dark-blue boat", "cat", "gray wall", "dog"] + [f"thing {i}" for i in range(30)]
    palette = viz.class_palette(mixed)
    assert len({tuple(c) for c in palette}) == len(mixed)
    assert palette[1, 0] > palette[1, 1:].max() + 40 and palette[3, 2] > palette[3, :2].max() + 40
    assert abs(int(palette[5].max()) - int(palette[5].min())) <= 2  # gray: a grey
    named = palette[[1, 3, 5]].astype(int)
    for i in [0, 2, 4] + list(range(7, len(mixed))):  # categorical colours keep away from the named ones
        assert np.sqrt(((named - palette[i].astype(int)) ** 2).sum(axis=1)).min() >= 60
    assert [viz.colour_word(n) for n in ("green_striped", "sky", "Gray Wall", "violet-flower")] == \
        ["green", None, "grey", "purple"]
    with pytest.raises(ValueError):
        viz.class_palette(-1)


def _drawn_colour(figure, axes_index, row, col):
    return np.asarray(figure.axes[axes_index].images[0].get_array())[row, col]


def test_every_class_figure_draws_a_class_in_the_same_colour():
    """overlays, samples, predictions, method panels and projections share class_palette(names)."""
    names = BENCHMARK_NAMES
    green = names.index("green_striped")
    expected = viz.class_palette(names)[green]
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.full((4, 4), green, dtype=np.uint8)
    drawn = [
        _drawn_colour(viz.overlay_with_legend(image, mask, names, 12, alpha=1.0), 0, 0, 0),
        _drawn_colour(viz.plot_samples([image], [mask], names, alpha=1.0), 1, 0, 0),
        _drawn_colour(viz.plot_predictions([image], [mask], [mask], names, 12), 1, 0, 0),
        _drawn_colour(viz.plot_method_panels(image, mask, {"m": mask}, names, 12, alpha=1.0), 2, 0, 0),
    ]
    for colour in drawn:
        np.testing.assert_array_equal(colour[:3], expected)
    legend = viz.plot_method_panels(image, mask, {"m": mask}, names, 12).legends[0]
    np.testing.assert_allclose(legend.get_patches()[0].get_facecolor()[:3], expected / 255.0)
    projection = viz.plot_feature_projection(np.zeros((2, 2)), np.array([green, green]), np.array([False, True]),
                                             names)
    np.testing.assert_allclose(projection.axes[0].collections[0].get_facecolor()[0, :3], expected / 255.0)


def _names(count):
    """4: plain words; 16: the benchmark's colour names; 40: long names (wide legends)."""
    if count == 16:
        return BENCHMARK_NAMES
    if count == 4:
        return NAMES
    return [f"a rather long class name {i}" for i in range(count)]


@pytest.mark.parametrize("num_classes", [4, 16, 40])
@pytest.mark.parametrize("num_methods", [1, 2, 6])
def test_method_panels_legend_and_titles_fit_in_the_figure(num_methods, num_classes, assert_fits_in_figure):
    rng = np.random.default_rng(num_classes)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    label = rng.integers(0, num_classes, (32, 32))
    label[0, 0] = 255
    predictions = {f"method {k}": rng.integers(0, num_classes, (32, 32)) for k in range(num_methods)}
    figure = viz.plot_method_panels(image, label, predictions, _names(num_classes), num_classes * 3 // 4)
    assert len(figure.legends[0].get_texts()) == num_classes + 1  # every class and "ignored"
    assert_fits_in_figure(figure)


@pytest.mark.parametrize("num_classes", [4, 16, 40])
def test_class_legends_fit_in_their_figures(num_classes, assert_fits_in_figure):
    rng = np.random.default_rng(num_classes)
    names, seen = _names(num_classes), num_classes * 3 // 4
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    masks = [rng.integers(0, num_classes, (32, 32)) for _ in range(3)]
    assert_fits_in_figure(viz.overlay_with_legend(images[0], masks[0], names, seen, title="one image"))
    assert_fits_in_figure(viz.plot_samples(images, masks, names, unseen=range(seen, num_classes)))
    assert_fits_in_figure(viz.plot_samples(images[:1], masks[:1], names))
    assert_fits_in_figure(viz.plot_predictions(images, masks, masks[::-1], names, seen))
    points = rng.normal(size=(200, 2))
    classes = np.arange(200) % num_classes
    assert_fits_in_figure(viz.plot_feature_projection(points, classes, np.arange(200) % 2 == 0, names,
                                                      unseen=range(seen, num_classes)))


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
    counts = class_pixel_counts(masks, 5)
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


# ------------------------------------------------------------------ feature-grid maps and projections
def test_channels_to_rgb_colours_similar_pixels_alike():
    maps = np.zeros((5, 4, 6))
    maps[:, :, 3:] = np.arange(5)[:, None, None]  # right half differs from the left half
    rgb = viz.channels_to_rgb(maps)
    assert rgb.shape == (4, 6, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    np.testing.assert_allclose(rgb[:, :3], np.broadcast_to(rgb[0, 0], (4, 3, 3)))  # same vector, same colour
    assert np.abs(rgb[0, 0] - rgb[0, 5]).max() == pytest.approx(1.0)  # the two halves at both ends of PC1
    batch = viz.channels_to_rgb(np.stack([maps, maps]))
    assert batch.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(viz.channels_to_rgb(np.ones((3, 2, 2))), 0.5)  # constant -> grey
    with pytest.raises(ValueError):
        viz.channels_to_rgb(np.zeros((4, 4)))


def test_plot_spatial_maps_layout_and_shared_colour_range():
    images, _ = small_batch(count=2, size=16)
    gates = [np.full((4, 4), 0.5), np.linspace(0.5, 0.9, 16).reshape(4, 4)]
    latent = [viz.channels_to_rgb(np.random.default_rng(i).normal(size=(3, 4, 4))) for i in range(2)]
    fig = viz.plot_spatial_maps(images, {"gate": gates, "latent": latent}, row_titles=["a", "b"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 3 + 1  # 2 rows x (image + 2 maps) + one colour bar (scalar column)
    assert [fig.axes[i].get_title() for i in range(3)] == ["image", "gate", "latent"]
    gate_images = [fig.axes[1].images[0], fig.axes[4].images[0]]
    assert all(im.get_clim() == pytest.approx((0.5, 0.9)) for im in gate_images)  # one range per column
    fixed = viz.plot_spatial_maps(images, {"gate": gates}, value_ranges={"gate": (0.0, 1.0)})
    assert fixed.axes[1].images[0].get_clim() == (0.0, 1.0)
    fig.canvas.draw()
    with pytest.raises(ValueError):
        viz.plot_spatial_maps(images, {"gate": gates[:1]})


def test_plot_receptive_fields_marks_centre_and_theoretical_extent():
    field = np.zeros((9, 9))
    field[3:6, 3:6] = 1.0
    fig = viz.plot_receptive_fields([field, 2 * field], ["a", "b"], centre=(4, 4), extents=[3, None])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].patches) == 1 and len(fig.axes[1].patches) == 0
    square = fig.axes[0].patches[0]
    assert square.get_width() == 3 and square.get_xy() == (2.5, 2.5)
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), field)  # scaled to max 1
    images, _ = small_batch(count=1, size=9)
    overlay = viz.plot_receptive_fields([field], ["on image"], centre=(4, 4), background=images[0])
    assert len(overlay.axes[0].images) == 2
    with pytest.raises(ValueError):
        viz.plot_receptive_fields([-field], ["negative"], centre=(4, 4))


def test_plot_feature_projection_panels_and_legend():
    rng = np.random.default_rng(0)
    class_ids = np.repeat([0, 1, 2], 20)
    generated = np.tile([False, True], 30)
    points = rng.normal(size=(60, 2)) + class_ids[:, None] * 3.0
    fig = viz.plot_feature_projection(points, class_ids, generated, ["a", "b", "c"], unseen=[2],
                                      axis_labels=["PC1", "PC2"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["seen classes", "unseen classes"]
    assert fig.axes[0].get_xlim() == fig.axes[1].get_xlim()  # shared limits
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:3] == ["a", "b", "c (unseen)"] and "generated" in texts
    # seen panel: per class a real and a generated cloud plus their two means
    assert len(fig.axes[0].collections) == 2 * 2 + 2 * 2
    mean_marker = fig.axes[1].collections[-2]  # real mean of class "c"
    np.testing.assert_allclose(mean_marker.get_offsets()[0], points[(class_ids == 2) & ~generated].mean(axis=0))
    single = viz.plot_feature_projection(points, class_ids, generated, ["a", "b", "c"])
    assert len(single.axes) == 1
    with pytest.raises(ValueError):
        viz.plot_feature_projection(points, class_ids, generated, ["a", "b"])


def test_training_curves_draw_values_and_their_moving_average():
    fig = viz.plot_training_curves({"loss": [3.0, 2.0, 1.0], "KL": [1.0, 0.1, 0.01]}, window=2, log_scale=["KL"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[1].get_yscale() == "log" and fig.axes[0].get_yscale() == "linear"
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), [3.0, 2.5, 1.5])
    with pytest.raises(ValueError):
        viz.plot_training_curves({})


# ------------------------------------------------------------------ evaluation figures
NAMES = ["sky", "grass", "cat", "dog"]  # evaluation order: 2 seen, then 2 unseen


def test_eval_curves_title_names_the_split():
    records = [{"iteration": i, "seen_miou": 0.4, "unseen_miou": 0.1, "hiou": 0.16, "split": "validation"}
               for i in (10, 20)]
    ax, = viz.plot_eval_curves(records).axes
    assert ax.get_title() == "validation scores"
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [2, 2, 2]
    ax, = viz.plot_eval_curves([{k: v for k, v in r.items() if k != "split"} for r in records]).axes
    assert ax.get_title() == "scores"


def test_overlay_with_legend_marks_unseen_and_hides_classes():
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]], dtype=np.uint8)
    fig = viz.overlay_with_legend(image, mask, NAMES, num_seen=2, alpha=1.0)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    texts = fig.legends[0].get_texts()
    assert [t.get_text() for t in texts] == ["sky", "grass", "cat (unseen)", "ignored"]
    assert {t.get_text() for t in texts if t.get_fontweight() == "bold"} == {"cat (unseen)"}
    patches = fig.legends[0].get_patches()
    assert patches[2].get_hatch() and not patches[0].get_hatch()  # unseen patch hatched
    palette = viz.class_palette(NAMES)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array()[0, 0], palette[0])

    only_sky = viz.overlay_with_legend(image, mask, NAMES, num_seen=2, alpha=1.0, visible_classes=[0])
    assert [t.get_text() for t in only_sky.legends[0].get_texts()] == ["sky", "ignored"]
    shown = np.asarray(only_sky.axes[0].images[0].get_array())
    np.testing.assert_array_equal(shown[0, 0], palette[0])
    np.testing.assert_array_equal(shown[0, 3], image[0, 3])  # hidden class: the plain image
    np.testing.assert_array_equal(shown[3, 3], viz.IGNORE_COLOUR)  # ignored pixels stay marked
    only_sky.canvas.draw()


def test_confusion_matrix_rows_normalised_blocks_and_unseen_ticks():
    import torch

    counts = torch.tensor([[8, 1, 0, 0, 1],
                           [0, 5, 5, 0, 0],
                           [2, 0, 6, 0, 2],
                           [0, 0, 0, 0, 0]])  # [K, K + 1]: last column = predictions outside the classes
    fig = viz.plot_confusion_matrix(counts, NAMES, num_seen=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colour bar
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array(), dtype=float)
    assert shown.shape == (4, 5)  # the "other" column holds counts, so it is drawn
    np.testing.assert_allclose(np.nansum(shown[:3], axis=1), 1.0)
    assert np.isnan(shown[3]).all()  # a class without pixels stays blank
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sky", "grass", "cat*", "dog*", "other"]
    assert [t.get_fontweight() == "bold" for t in ax.get_yticklabels()] == [False, False, True, True]
    assert [t.get_fontweight() == "bold" for t in ax.get_xticklabels()] == [False, False, True, True, False]
    separators = {(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.lines}
    assert ((0, 1), (1.5, 1.5)) in separators and ((1.5, 1.5), (0, 1)) in separators  # seen | unseen lines

    square = viz.plot_confusion_matrix(counts[:, :4].numpy(), NAMES, num_seen=2)
    assert np.asarray(square.axes[0].images[0].get_array()).shape == (4, 4)
    no_other = counts.clone()
    no_other[:, 4] = 0
    hidden = np.asarray(viz.plot_confusion_matrix(no_other, NAMES, 2).axes[0].images[0].get_array(), dtype=float)
    assert hidden.shape == (4, 4)
    np.testing.assert_allclose(np.nansum(hidden[:3], axis=1), 1.0)
    raw = viz.plot_confusion_matrix(counts, NAMES, 2, normalize=None)
    assert np.asarray(raw.axes[0].images[0].get_array())[0, 0] == 8
    fig.canvas.draw()
    with pytest.raises(ValueError):
        viz.plot_confusion_matrix(counts[:3], NAMES, 2)
    with pytest.raises(ValueError):
        viz.plot_confusion_matrix(counts, NAMES, 2, normalize="rows")


def test_plot_class_iou_groups_methods_and_marks_unseen():
    ours = [0.8, 0.6, 0.4, float("nan")]
    fig = viz.plot_class_iou({"CaGNet": ours, "baseline": {"sky": 0.5, "cat": 0.1}}, NAMES, num_seen=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    first, second = ax.containers
    np.testing.assert_allclose([b.get_height() for b in first], [80.0, 60.0, 40.0, 0.0])
    np.testing.assert_allclose([b.get_height() for b in second], [50.0, 0.0, 10.0, 0.0])
    assert first[2].get_hatch() and not first[0].get_hatch()  # unseen bars hatched
    assert first[2].get_x() - first[1].get_x() == pytest.approx(2.0)  # a gap between seen and unseen
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sky", "grass", "cat*", "dog*"]
    assert [t.get_fontweight() == "bold" for t in ax.get_xticklabels()] == [False, False, True, True]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "CaGNet: seen 70.0, unseen 40.0, hIoU 50.9"
    single = viz.plot_class_iou(np.array(ours), NAMES, num_seen=2)
    assert len(single.axes[0].containers) == 1
    with pytest.raises(ValueError):
        viz.plot_class_iou({"CaGNet": ours[:3]}, NAMES, 2)
    with pytest.raises(ValueError):
        viz.plot_class_iou({"CaGNet": {"horse": 0.3}}, NAMES, 2)


def test_calibration_sweep_marks_the_best_hiou():
    penalties = [0.0, 0.5, 1.0, 1.5]
    seen = [0.8, 0.7, 0.6, 0.3]
    unseen = [0.1, 0.3, 0.5, 0.6]
    hiou = [2 * s * u / (s + u) for s, u in zip(seen, unseen)]
    fig = viz.plot_calibration_sweep(penalties[::-1], seen[::-1], unseen[::-1], hiou[::-1])  # any order
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    best = [line for line in ax.lines if line.get_label().startswith("best hIoU")]
    assert len(best) == 1
    assert best[0].get_xdata()[0] == 1.0 and best[0].get_ydata()[0] == pytest.approx(100 * hiou[2])
    assert best[0].get_label() == f"best hIoU {100 * hiou[2]:.1f} at penalty 1"
    hiou_line = next(line for line in ax.lines if line.get_label() == "hIoU")
    np.testing.assert_allclose(hiou_line.get_xdata(), penalties)
    chosen = viz.plot_calibration_sweep(penalties, seen, unseen, hiou, best=0.5)
    marker = next(line for line in chosen.axes[0].lines if line.get_label().startswith("best hIoU"))
    assert marker.get_xdata()[0] == 0.5
    with pytest.raises(ValueError):
        viz.plot_calibration_sweep(penalties, seen[:2], unseen, hiou)


def test_plot_method_panels_one_row_with_per_image_scores():
    image = np.full((2, 3, 3), 50, dtype=np.uint8)
    label = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    predictions = {"CaGNet": np.array([[0, 1, 1], [1, 1, 0]]), "perfect": label.copy()}
    fig = viz.plot_method_panels(image, label, predictions, NAMES, num_seen=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["image", "ground truth"]
    assert titles[2] == "CaGNet\nmIoU 33.3 | hIoU 0.0"  # see the hand-computed per-image IoU test
    assert titles[3] == "perfect\nmIoU 100.0 | hIoU 100.0"
    texts = fig.legends[0].get_texts()
    assert {t.get_text() for t in texts if t.get_fontweight() == "bold"} == {"cat (unseen)"}
    hidden = viz.plot_method_panels(image, label, predictions, NAMES, num_seen=2, visible_classes=[2],
                                    show_iou=False, alpha=1.0)
    assert hidden.axes[2].get_title() == "CaGNet"
    assert [t.get_text() for t in hidden.legends[0].get_texts()] == ["cat (unseen)", "ignored"]
    np.testing.assert_array_equal(np.asarray(hidden.axes[1].images[0].get_array())[0, 0], image[0, 0])
    fig.canvas.draw()


def test_plot_pipeline_draws_the_named_stages():
    fig = viz.plot_pipeline()
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    for stage in ("DeepLabV2", "ASPP", "contextual module", "latent code", "real feature", "generator",
                  "discriminator", "word embedding", "MMD", "KL", "Step 2", "finetuned"):
        assert stage in text
    assert len(fig.axes[0].patches) >= 20  # boxes and arrows
    fig.canvas.draw()


def test_viz_holds_figures_only():
    # the numbers behind figures live with what they measure, not in cagnet.viz
    for name in ("fit_pca", "cosine_similarity", "class_pixel_counts", "per_image_iou", "moving_average"):
        assert not hasattr(viz, name), name


def test_step2_prior_and_label_map_figures(assert_fits_in_figure):
    names = list(CLASS_NAMES)
    prior = np.full(16, 1.0)
    prior[12:] += 9
    prior /= prior.sum()
    figure = viz.plot_class_prior({"uniform": np.full(16, 1 / 16), "rate 9": prior}, names, 12)
    assert "unseen classes get 77% of the labels" in figure.axes[0].get_legend().get_texts()[1].get_text()
    assert_fits_in_figure(figure)
    with pytest.raises(ValueError, match="one per class"):
        viz.plot_class_prior({"short": [0.5, 0.5]}, names, 12)
    maps = [np.random.default_rng(0).integers(0, 16, (8, 8)) for _ in range(3)]
    figure = viz.plot_label_maps(maps, names, 12, titles=["a", "b", "c"])
    assert len(figure.axes) == 3 and figure.legends
    assert_fits_in_figure(figure)
