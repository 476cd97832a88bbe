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
from cagnet.viz.masks import rgb_to_lab


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
    # one pattern, one lightness rank, in every colour: darker to lighter in alphabetical pattern order
    lab = {name: lab for name, lab in zip(BENCHMARK_NAMES, rgb_to_lab(palette))}
    for colour in DOMINANT:
        ordered = [round(lab[f"{colour}_{pattern}"][0], 1) for pattern in ("checkered", "dotted", "striped", "wavy")]
        assert ordered == sorted(ordered), (colour, ordered)


def _lab_distances(palette):
    lab = rgb_to_lab(palette)
    return np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1)) + np.eye(len(palette)) * 1e9


# CIE76 delta E: about 2.3 is just noticeable side by side; matplotlib's tab10, the categorical
# palette made to be told apart at a glance, has its closest pair at 27.7. Every two benchmark
# classes must be about that far apart, also (above all) two classes of one colour: the typical
# errors of the benchmark (red_dotted -> red_checkered) must show in the class maps.
MIN_CLASS_DELTA_E = 25.0
# the previous palette (HLS lightness steps only, one saturation per colour) drew the classes of one
# colour as close as 10.5 (e.g. yellow_striped / yellow_wavy)
PREVIOUS_WITHIN_COLOUR_DELTA_E = 10.5


def test_rgb_to_lab_reference_values():
    lab = rgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8))
    np.testing.assert_allclose(lab, [[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20],
                                     [32.30, 79.19, -107.86]], atol=0.02)
    tab10 = _lab_distances(viz.class_palette(10))
    assert tab10.min() == pytest.approx(27.7, abs=0.1)  # the reference of MIN_CLASS_DELTA_E


def test_palette_tells_classes_of_one_colour_apart():
    palette = viz.class_palette(BENCHMARK_NAMES)
    distance = _lab_distances(palette)
    family = np.array([name.split("_")[0] for name in BENCHMARK_NAMES])
    same_colour = (family[:, None] == family[None]) & ~np.eye(len(family), dtype=bool)
    assert distance.min() >= MIN_CLASS_DELTA_E
    assert distance[same_colour].min() >= MIN_CLASS_DELTA_E
    assert distance[same_colour].min() >= 2.5 * PREVIOUS_WITHIN_COLOUR_DELTA_E
    for a, b in (("red_dotted", "red_checkered"), ("green_checkered", "green_dotted")):  # the reviewer's errors
        assert distance[BENCHMARK_NAMES.index(a), BENCHMARK_NAMES.index(b)] >= 30.0
    # each class keeps its colour word's hue (CIELAB hue angle within 15 degrees) and a nameable chroma
    lab = rgb_to_lab(palette)
    for name, (_, a, b) in zip(BENCHMARK_NAMES, lab):
        hue = np.degrees(np.arctan2(b, a)) % 360
        expected = viz.COLOUR_WORDS[name.split("_")[0]][0]
        assert abs((hue - expected + 180) % 360 - 180) <= 15, (name, hue)
        assert np.hypot(a, b) >= 30, name
    # other colour words with a wide sRGB gamut, three classes each: as far apart within each colour;
    # the narrow ones (black, white, pink, cyan, brown: few shades of them exist) only stay distinct
    words = ["orange", "purple", "magenta", "brown", "cyan", "pink", "grey", "black", "white"]
    names = [f"{word}_{k}" for word in words for k in range(3)]
    many = _lab_distances(viz.class_palette(names))
    wide = np.array([[a.split("_")[0] == b.split("_")[0] and a.split("_")[0] in words[:3] for b in names]
                     for a in names]) & ~np.eye(len(names), dtype=bool)
    assert many[wide].min() >= MIN_CLASS_DELTA_E
    assert many.min() >= 4.0


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
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert "class4*" in texts and "class0" in texts and "ignored" in texts
    assert legend.get_title().get_text() == "classes\n" + viz.UNSEEN_NOTE
    hatched = {t.get_text() for t, patch in zip(legend.get_texts(), legend.get_patches()) if patch.get_hatch()}
    assert hatched == {"class4*"}
    # in the overlay, the pixels of the unseen class are hatched (some differ from the plain overlay)
    plain = viz.overlay_mask(images[0], masks[0], viz.class_palette(names), 0.5)
    drawn = np.asarray(fig.axes[1].images[0].get_array())
    differs = (drawn != plain).any(axis=-1)
    assert differs.any() and (masks[0][differs] == 4).all()
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
    assert [ax.get_title() for ax in fig.axes] == ["a", "b*", "c"]
    assert fig.get_suptitle() == "* = unseen class"
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
    assert texts[:3] == ["a", "b", "c*"] and "generated" in texts
    assert fig.legends[0].get_title().get_text() == "classes\n* = unseen class"  # markers: no hatch
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
    assert [t.get_text() for t in texts] == ["sky", "grass", "cat*", "ignored"]
    patches = fig.legends[0].get_patches()
    assert patches[2].get_hatch() and not patches[0].get_hatch()  # unseen patch hatched
    palette = viz.class_palette(NAMES)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array()[0, 0], palette[0])
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array()[2:, :2],  # cat: hatched as the helper does
                                  viz.hatch(np.broadcast_to(palette[2], (4, 4, 3)), mask == 2)[2:, :2])

    only_sky = viz.overlay_with_legend(image, mask, NAMES, num_seen=2, alpha=1.0, visible_classes=[0])
    assert [t.get_text() for t in only_sky.legends[0].get_texts()] == ["sky", "ignored"]
    assert only_sky.legends[0].get_title().get_text() == "classes"  # no unseen class listed, no note
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
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sky", "grass", "cat*", "dog*"]
    assert "* = unseen class" in ax.get_title()
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
    assert viz.UNSEEN_NOTE in ax.get_title()
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


def _panel(figure, k):
    return np.asarray(figure.axes[k].images[0].get_array())


def test_plot_method_panels_rows_of_predictions_and_error_maps():
    image = np.full((2, 3, 3), 50, dtype=np.uint8)
    label = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    predictions = {"CaGNet": np.array([[0, 1, 1], [1, 1, 0]]), "perfect": label.copy()}
    fig = viz.plot_method_panels(image, label, predictions, NAMES, num_seen=2)
    # row 1: image | ground truth | CaGNet | perfect; row 2: error legend | errors of CaGNet | of perfect
    assert isinstance(fig, Figure) and len(fig.axes) == 7
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["image", "ground truth"]
    assert titles[2] == "CaGNet\nmIoU 33.3 | hIoU 0.0"  # see the hand-computed per-image IoU test
    assert titles[3] == "perfect\nmIoU 100.0 | hIoU 100.0"
    assert titles[4:6] == ["errors: 40.0 % wrong", "errors: 0.0 % wrong"]  # 2 of the 5 scored pixels
    np.testing.assert_array_equal(_panel(fig, 4), viz.error_map(label, predictions["CaGNet"], 2))
    assert fig.axes[4].get_subplotspec().rowspan.start == 1 and fig.axes[4].get_subplotspec().colspan.start == 2
    legend_cell = fig.axes[6]
    assert [t.get_text() for t in legend_cell.get_legend().get_texts()] == list(viz.ERROR_CATEGORIES)
    # ground truth and predictions in one encoding: a perfect prediction is drawn exactly as the ground truth
    np.testing.assert_array_equal(_panel(fig, 3), _panel(fig, 1))
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["sky", "grass", "cat*", "ignored"]
    assert fig.legends[0].get_title().get_text() == "classes\n" + viz.UNSEEN_NOTE

    hidden = viz.plot_method_panels(image, label, predictions, NAMES, num_seen=2, visible_classes=[2],
                                    show_iou=False, alpha=1.0)
    assert hidden.axes[2].get_title() == "CaGNet"
    assert [t.get_text() for t in hidden.legends[0].get_texts()] == ["cat*", "ignored"]
    np.testing.assert_array_equal(_panel(hidden, 1)[0, 0], image[0, 0])
    errors = _panel(hidden, 4)
    np.testing.assert_array_equal(errors[1, 1], viz.ERROR_COLOURS[2])  # cat -> grass: in focus
    faded = np.rint(0.25 * viz.ERROR_COLOURS[1] + 0.75 * 255)
    np.testing.assert_array_equal(errors[0, 1], faded)  # sky -> grass: neither class shown, faded

    plain = viz.plot_method_panels(image, label, predictions, NAMES, num_seen=2, show_errors=False)
    assert len(plain.axes) == 4 and [ax.get_title() for ax in plain.axes][:2] == ["image", "ground truth"]
    fig.canvas.draw()


def test_plot_method_panels_one_method_is_one_row_with_its_error_map(assert_fits_in_figure):
    image = np.full((4, 4, 3), 90, dtype=np.uint8)
    label = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 3, 3], [1, 1, 3, 255]])
    prediction = np.array([[0, 1, 2, 3], [0, 2, 1, 2], [1, 1, 3, 3], [1, 1, 3, 3]])
    fig = viz.plot_method_panels(image, label, {"CaGNet": prediction}, NAMES, num_seen=2)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["image", "ground truth", "CaGNet",
                                                                    "errors: 26.7 % wrong"]  # 4 of 15
    assert {ax.get_subplotspec().rowspan.start for ax in fig.axes} == {0}  # one row
    np.testing.assert_array_equal(_panel(fig, 3), viz.error_map(label, prediction, 2))
    assert [t.get_text() for t in fig.legends[1].get_texts()] == list(viz.ERROR_CATEGORIES)  # the fixed legend
    # both maps flat (alpha 1) and hatched alike on unseen classes
    palette = viz.class_palette(NAMES)
    expected_truth = viz.hatch(viz.colorize_mask(label, palette), (label >= 2) & (label != 255),
                               base=viz.colorize_mask(label, palette))
    np.testing.assert_array_equal(_panel(fig, 1), expected_truth)
    expected_prediction = viz.hatch(viz.colorize_mask(prediction, palette), prediction >= 2,
                                    base=viz.colorize_mask(prediction, palette))
    np.testing.assert_array_equal(_panel(fig, 2), expected_prediction)
    assert_fits_in_figure(fig)


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


# ------------------------------------------------------------------ error maps
def test_error_categories_of_a_hand_built_prediction():
    # S = 2 seen classes (0, 1), unseen 2 and 3; one pixel per case
    label = np.array([[0, 0, 2, 0, 2, 255, 3]])
    prediction = np.array([[0, 1, 1, 3, 3, 1, 255]])
    expected = [viz.error_maps.CORRECT, viz.error_maps.WRONG_SEEN, viz.error_maps.UNSEEN_AS_SEEN,
                viz.error_maps.SEEN_AS_UNSEEN, viz.error_maps.WRONG_UNSEEN, viz.error_maps.IGNORED,
                viz.error_maps.IGNORED]  # not labelled; not predicted (e.g. a training label map)
    codes = viz.error_categories(label, prediction, num_seen=2)
    assert codes.dtype == np.uint8 and codes.shape == label.shape
    assert codes[0].tolist() == expected == [0, 1, 2, 3, 4, 5, 5]
    assert viz.error_categories(np.array([[3]]), np.array([[3]]), 2)[0, 0] == viz.error_maps.CORRECT  # unseen right
    rgb = viz.error_map(label, prediction, 2)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 7, 3)
    np.testing.assert_array_equal(rgb[0], viz.ERROR_COLOURS[expected])
    np.testing.assert_array_equal(viz.ERROR_COLOURS[viz.error_maps.IGNORED], viz.IGNORE_COLOUR)
    import torch

    np.testing.assert_array_equal(viz.error_categories(torch.tensor(label), torch.tensor(prediction), 2), codes)
    shares = viz.error_shares(codes)
    assert list(shares) == list(viz.ERROR_CATEGORIES[:5]) and all(v == pytest.approx(0.2) for v in shares.values())
    with pytest.raises(ValueError, match="outside the 4 classes"):
        viz.error_categories(label, prediction + 4 * (prediction != 255), 2, num_classes=4)
    with pytest.raises(ValueError):
        viz.error_categories(label, prediction[:, :3], 2)


def test_error_colours_and_legend_are_fixed_and_distinct():
    distance = _lab_distances(viz.ERROR_COLOURS)
    assert distance.min() >= MIN_CLASS_DELTA_E
    handles = viz.error_legend_handles()
    assert [h.get_label() for h in handles] == list(viz.ERROR_CATEGORIES)
    np.testing.assert_allclose([h.get_facecolor()[:3] for h in handles], viz.ERROR_COLOURS / 255.0)


def test_hatch_stripes_only_the_given_pixels():
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:, :8] = (250, 250, 250)   # light left half, black right half
    where = np.zeros((16, 16), dtype=bool)
    where[:, 4:12] = True
    out = viz.hatch(rgb, where, period=4)
    changed = (out != rgb).any(axis=-1)
    assert not changed[~where].any()
    rows, cols = np.indices(where.shape)
    np.testing.assert_array_equal(changed, where & ((rows + cols) % 4 == 0))  # "///" stripes, a quarter
    assert (out[changed & (cols < 8)] == 125).all() and (out[changed & (cols >= 8)] == 128).all()  # dark / light
    # base decides dark or light stripes: all stripes dark here, over a light base
    based = viz.hatch(rgb, where, period=4, base=np.full_like(rgb, 250))
    assert (based[changed & (cols >= 8)] == 0).all()
    with pytest.raises(ValueError):
        viz.hatch(rgb, where[:-1])


def test_plot_predictions_rows_of_image_truth_prediction_errors():
    image = np.full((4, 4, 3), 80, dtype=np.uint8)
    label = np.array([[0, 0, 2, 2]] * 4)
    prediction = np.array([[0, 1, 1, 2]] * 4)
    fig = viz.plot_predictions([image, image], [label, label], [prediction, label], NAMES, 2)
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "ground truth", "prediction", "errors: 50.0 % wrong"]
    assert fig.axes[7].get_title() == "errors: 0.0 % wrong"
    np.testing.assert_array_equal(_panel(fig, 3), viz.error_map(label, prediction, 2))
    np.testing.assert_array_equal(_panel(fig, 6), _panel(fig, 5))  # ground truth and prediction alike
    assert [t.get_text() for t in fig.legends[1].get_texts()] == list(viz.ERROR_CATEGORIES)
    assert len(viz.plot_predictions([image], [label], [prediction], NAMES, 2, show_errors=False).axes) == 3


def _all_texts(figure):
    texts = list(figure.texts)
    for legend in figure.legends:
        texts += list(legend.get_texts()) + [legend.get_title()]
    for ax in figure.axes:
        texts += [ax.title, ax.xaxis.label] + list(ax.get_xticklabels()) + list(ax.get_yticklabels()) + list(ax.texts)
        if ax.get_legend() is not None:
            texts += list(ax.get_legend().get_texts())
    return texts


def test_unseen_classes_are_marked_one_way_in_every_figure():
    """Every figure writes an unseen class as "name*" (never "(unseen)", no bold or italics) and says
    what "*" means once (a legend title or an axes / figure title)."""
    rng = np.random.default_rng(0)
    names, seen = NAMES, 2
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    label = np.array([[0, 1, 2, 3] * 2] * 8)
    prior = np.full(4, 0.25)
    figures = {
        "overlay": viz.overlay_with_legend(image, label, names, seen),
        "samples": viz.plot_samples([image], [label], names, unseen=[2, 3]),
        "pixel stats": viz.plot_class_pixel_stats({"train": [1, 2, 3, 4]}, names, unseen=[2, 3]),
        "similarity": viz.plot_embedding_similarity(rng.normal(size=(4, 5)), names, unseen=[2, 3]),
        "swatches": viz.plot_class_swatches([image] * 4, names, unseen=[2, 3]),
        "projection": viz.plot_feature_projection(rng.normal(size=(8, 2)), np.arange(8) % 4, np.arange(8) % 2 == 0,
                                                  names, unseen=[2, 3]),
        "confusion": viz.plot_confusion_matrix(np.eye(4), names, seen),
        "class iou": viz.plot_class_iou({"a": [0.1, 0.2, 0.3, 0.4]}, names, seen),
        "method panels": viz.plot_method_panels(image, label, {"m": label}, names, seen),
        "predictions": viz.plot_predictions([image], [label], [label], names, seen),
        "prior": viz.plot_class_prior({"p": prior}, names, seen),
        "label maps": viz.plot_label_maps([label], names, seen),
    }
    for name, figure in figures.items():
        texts = _all_texts(figure)
        words = [t.get_text() for t in texts]
        assert not any("(unseen)" in w for w in words), name
        assert all(t.get_fontweight() in ("normal", 400) and t.get_fontstyle() == "normal" for t in texts), name
        assert any(w.strip() in ("cat*", "dog*") for w in words), (name, words)
        assert any("* = unseen class" in w for w in words), (name, words)
        assert not any(w.strip() in ("cat", "dog") for w in words), name  # unmarked unseen name
        for legend in figure.legends:  # hatched swatches exactly for the unseen classes
            for text, patch in zip(legend.get_texts(), legend.get_patches()):
                if hasattr(patch, "get_hatch") and text.get_text() in names + ["cat*", "dog*"]:
                    assert bool(patch.get_hatch()) == text.get_text().endswith("*"), (name, text.get_text())


# the notebooks show Figure objects through IPython's inline backend: at rcParams["figure.dpi"] (100;
# nothing in cagnet or the notebooks changes it), cropped with bbox_inches="tight"
NOTEBOOK_DPI = 100
MAX_WIDTH_PX = 1800


def _default_size_figures():
    """Every figure function at its default size, with the largest inputs the notebooks give it."""
    from cagnet.benchmark import PAPER_ORDER

    rng = np.random.default_rng(1)
    names, seen = BENCHMARK_NAMES, 12
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    label = rng.integers(0, 16, (64, 64))
    maps = [rng.integers(0, 16, (64, 64)) for _ in range(4)]
    methods = {m: rng.uniform(0, 1, 16) for m in PAPER_ORDER}  # 96 bars
    records = [{"iteration": i, "step": "step1" if i % 125 < 100 else "step2", "loss_D": 1.0 + rng.random(),
                "loss_G": 38.0 / (1 + i), "gan_G": 1.0, "mmd": 0.3, "kl": 0.02, "cls_fake": 0.5, "acc_fake": 0.8,
                "acc_real": 0.9, "gan_D": 0.5, "cls_real": 0.5, "loss_B": 1.0} for i in range(300)]
    return {
        "plot_samples": viz.plot_samples([image] * 8, maps * 2, names, unseen=range(seen, 16), ncols=8),
        "plot_class_pixel_stats": viz.plot_class_pixel_stats({"train": rng.integers(1, 9, 16)}, names),
        "plot_embedding_similarity": viz.plot_embedding_similarity(rng.normal(size=(16, 8)), names),
        "plot_class_swatches": viz.plot_class_swatches([image] * 16, names, ncols=8),
        "plot_spatial_maps": viz.plot_spatial_maps([image] * 2, {f"m{k}": [np.ones((8, 8))] * 2 for k in range(8)}),
        "plot_receptive_fields": viz.plot_receptive_fields([np.ones((8, 8))] * 8, list("abcdefgh"), (4, 4)),
        "plot_feature_projection": viz.plot_feature_projection(rng.normal(size=(64, 2)), np.arange(64) % 16,
                                                               np.arange(64) % 2 == 0, names, unseen=range(12, 16)),
        "plot_training_curves": viz.plot_training_curves({f"c{k}": rng.random(20) for k in range(8)}),
        "plot_loss_curves": viz.plot_loss_curves(records),
        "plot_eval_curves": viz.plot_eval_curves([{"iteration": 1, "seen_miou": 0.5, "unseen_miou": 0.2,
                                                   "hiou": 0.3}]),
        "plot_predictions": viz.plot_predictions([image] * 4, maps, maps[::-1], names, seen),
        "plot_class_prior": viz.plot_class_prior({"a": np.full(16, 1 / 16), "b": np.full(16, 1 / 16)}, names, seen),
        "plot_label_maps": viz.plot_label_maps(maps * 2, names, seen),
        "overlay_with_legend": viz.overlay_with_legend(image, label, names, seen),
        "plot_confusion_matrix": viz.plot_confusion_matrix(rng.integers(0, 9, (16, 17)), names, seen),
        "plot_class_iou": viz.plot_class_iou(methods, names, seen),
        "plot_calibration_sweep": viz.plot_calibration_sweep([0, 1], [0.5, 0.4], [0.1, 0.3], [0.2, 0.3]),
        "plot_method_panels": viz.plot_method_panels(image, label, {m: maps[0] for m in PAPER_ORDER}, names, seen),
        "plot_method_panels (no errors)": viz.plot_method_panels(image, label, {m: maps[0] for m in PAPER_ORDER},
                                                                 names, seen, show_errors=False),
        "plot_pipeline": viz.plot_pipeline(),
    }


def test_every_figure_fits_the_notebook_width():
    import io

    from PIL import Image

    assert matplotlib.rcParams["figure.dpi"] == NOTEBOOK_DPI
    for name, figure in _default_size_figures().items():
        width_in = figure.get_size_inches()[0]
        assert width_in <= viz.MAX_FIGURE_WIDTH + 1e-9, (name, width_in)
        assert width_in * figure.dpi <= MAX_WIDTH_PX, name
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=NOTEBOOK_DPI, bbox_inches="tight")  # as the notebooks show it
        assert Image.open(buffer).width <= MAX_WIDTH_PX, (name, Image.open(buffer).width)


def test_plot_class_iou_wraps_many_bars_into_rows_of_small_multiples():
    from cagnet.benchmark import PAPER_ORDER

    values = {m: np.linspace(0.1, 0.9, 16) + 0.001 * k for k, m in enumerate(PAPER_ORDER)}
    fig = viz.plot_class_iou(values, BENCHMARK_NAMES, 12)
    assert len(fig.axes) == 2  # the 12 seen classes above the 4 unseen ones
    seen_ax, unseen_ax = fig.axes
    assert [t.get_text() for t in seen_ax.get_xticklabels()] == BENCHMARK_NAMES[:12]
    assert [t.get_text() for t in unseen_ax.get_xticklabels()] == [n + "*" for n in BENCHMARK_NAMES[12:]]
    assert [ax.get_title() for ax in fig.axes] == ["seen classes", "unseen classes"]
    assert sum(len(c) for ax in fig.axes for c in ax.containers) == 96  # every bar drawn
    assert all(bar.get_hatch() for c in unseen_ax.containers for bar in c)
    assert not any(bar.get_hatch() for c in seen_ax.containers for bar in c)
    # same bar width in both rows: the unseen axes is a third as wide as the seen one
    ratio = unseen_ax.get_position().width / seen_ax.get_position().width
    assert ratio == pytest.approx(4 / 12, rel=0.05)
    np.testing.assert_allclose([b.get_height() for b in unseen_ax.containers[3]], 100 * values["CaGNet"][12:])


# ------------------------------------------------------------------ loss curves
def _mixed_records(blocks=3, step1=10, step2=5):
    records, iteration = [], 0
    for _ in range(blocks):
        for kind, count in (("step1", step1), ("step2", step2)):
            for _ in range(count):
                if kind == "step1":
                    values = {"loss_D": 2.0, "loss_G": 38.0, "gan_G": 1.0, "mmd": 0.01 * (1 + iteration),
                              "acc_fake": 0.9, "acc_real": 0.95}
                else:
                    values = {"loss_D": 1.0, "loss_G": 0.0, "cls_fake": 0.7, "acc_fake": 0.8}
                records.append({"iteration": iteration, "step": kind, **values, "seconds": 0.1})
                iteration += 1
    return records


def _axes_titled(figure, start):
    return next(ax for ax in figure.axes if ax.get_title().startswith(start))


def test_loss_curves_one_panel_per_loss_with_gaps_between_phases():
    records = _mixed_records()
    fig = viz.plot_loss_curves(records, window=1)
    titles = [ax.get_title() for ax in fig.axes]
    # loss_G, gan_G and mmd each on their own axis (loss_G ~ 38 does not squash its terms)
    assert {"loss_G: generator total", "gan_G: generator's GAN term", "mmd: generated vs real features"} <= set(titles)
    assert not any(t.startswith("loss_B") for t in titles)  # never logged
    ax = _axes_titled(fig, "loss_D")
    step1, step2 = [line for line in ax.get_lines() if line.get_label().startswith("loss_D")]
    assert step1.get_label() == "loss_D (step 1)" and step2.get_label() == "loss_D (step 2)"
    x1 = np.asarray(step1.get_xdata(), dtype=float)
    # step-1 iterations 0-9, 15-24, 30-39: broken by a NaN before 15 and before 30, nothing bridges a gap
    assert np.isnan(x1).sum() == 2
    segments = np.split(x1, np.flatnonzero(np.isnan(x1)))
    assert [seg[~np.isnan(seg)].tolist() for seg in segments] == [list(range(0, 10)), list(range(15, 25)),
                                                                   list(range(30, 40))]
    x2 = np.asarray(step2.get_xdata(), dtype=float)
    assert np.isnan(x2).sum() == 2 and np.nanmin(x2) == 10
    assert fig.axes[titles.index("mmd: generated vs real features")].get_yscale() == "log"  # 0.01 .. 0.4: decades
    assert fig.axes[titles.index("gan_G: generator's GAN term")].get_yscale() == "linear"
    assert _axes_titled(fig, "pixel accuracy").get_ylim() == (0.0, 1.02)
    # acc_fake of step 2 is explained under the panels
    assert "acc_fake (step 2)" in fig.get_supxlabel()
    assert fig.get_size_inches()[0] <= viz.MAX_FIGURE_WIDTH


def test_loss_curves_of_one_kind_need_no_step_labels_or_note(assert_fits_in_figure):
    records = [r for r in _mixed_records() if r["step"] == "step1"]
    fig = viz.plot_loss_curves(records, window=2)
    ax = _axes_titled(fig, "loss_D")
    assert [line.get_label() for line in ax.get_lines()][0] == "loss_D"
    assert not np.isnan(np.asarray(ax.get_lines()[0].get_xdata(), dtype=float)).any()  # consecutive iterations
    assert fig.get_supxlabel() == ""  # no step-2 accuracy, no note
    custom = viz.plot_loss_curves(records, panels={"learning rates": ("lr_x",), "D": ("loss_D",)})
    assert [a.get_title() for a in custom.axes] == ["D"]
    empty = viz.plot_loss_curves([])
    assert empty.axes[0].texts[0].get_text() == "no losses logged yet"
    assert_fits_in_figure(viz.plot_loss_curves(_mixed_records()))


def test_embedding_similarity_scale_fits_the_off_diagonal_values():
    emb = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.8], [1.0, 0.3, 0.3]])
    fig = viz.plot_embedding_similarity(emb, ["a", "b", "c", "d"])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    similarity = unit @ unit.T
    off = similarity[~np.eye(4, dtype=bool)]
    mesh = fig.axes[0].collections[0]
    assert mesh.get_clim() == pytest.approx((off.min(), off.max()))  # not -1 .. 1
    assert off.min() > 0.5
    annotations = [t.get_text() for t in fig.axes[0].texts]
    assert len(annotations) == 12 and f"{off.min():.2f}" in annotations  # diagonal left blank
