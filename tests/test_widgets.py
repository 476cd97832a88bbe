"""Tests of the mask explorer: the pure view function and the ipywidgets layer (no frontend)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from cagnet import viz, widgets

NAMES = ["sky", "grass", "cat", "dog"]  # 2 seen, 2 unseen


def tiny_test_set():
    """3 images 6x6 with labels; method "good" is right everywhere, "poor" predicts sky everywhere."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(3)]
    labels = [rng.integers(0, 4, (6, 6)).astype(np.uint8) for _ in range(3)]
    labels[1][0] = 255
    predictions = {"good": [label.copy() for label in labels],
                   "poor": [np.zeros((6, 6), dtype=np.int64) for _ in labels]}
    predictions["good"][2][:3] = 2  # image 2 is not perfect
    return images, labels, predictions


def test_explorer_view_is_a_figure_and_an_iou_summary():
    images, labels, predictions = tiny_test_set()
    figure, summary = widgets.explorer_view(images, labels, predictions, NAMES, num_seen=2, index=0)
    assert isinstance(figure, Figure) and len(figure.axes) == 4  # image | ground truth | "good" | its errors
    assert figure.axes[2].get_title().startswith("good\nmIoU 100.0")
    assert figure.axes[3].get_title() == "errors: 0.0 % wrong"
    np.testing.assert_array_equal(np.asarray(figure.axes[3].images[0].get_array()),
                                  viz.error_map(labels[0], predictions["good"][0], 2))
    assert "image 0: good" in summary and "mIoU <b>100.0</b>" in summary
    assert "<td>cat*</td>" in summary and "(unseen)" not in summary and viz.UNSEEN_NOTE in summary
    assert "correct: 100.0" in summary  # the error shares
    _, imperfect = widgets.explorer_view(images, labels, predictions, NAMES, 2, index=2, method="good")
    wrong = float((labels[2][:3] != 2).sum() / (labels[2] != 255).sum())
    assert f"correct: {100 * (1 - wrong):.1f}" in imperfect
    _, poor = widgets.explorer_view(images, labels, predictions, NAMES, 2, index=0, method="poor",
                                    visible_classes=[0])
    assert "mIoU <b>100.0</b>" not in poor and 'style="color: #999999"' in poor  # hidden classes greyed
    with pytest.raises(ValueError):
        widgets.explorer_view(images, labels, predictions, NAMES, 2, method="missing")
    with pytest.raises(ValueError):
        widgets.explorer_view(images, labels, predictions, NAMES, 2, index=3)
    with pytest.raises(ValueError):
        widgets.explorer_view(images, labels, {"short": predictions["good"][:2]}, NAMES, 2)


def test_mask_explorer_redraws_on_every_control():
    ipywidgets = pytest.importorskip("ipywidgets")
    images, labels, predictions = tiny_test_set()
    explorer = widgets.mask_explorer(images, labels, predictions, NAMES, num_seen=2, dpi=40)
    assert isinstance(explorer, ipywidgets.Widget)
    image_slider, method_dropdown, opacity_slider = explorer.children[0].children
    class_select, view, scores = explorer.children[1].children
    assert (image_slider.min, image_slider.max) == (0, 2)
    assert list(method_dropdown.options) == ["good", "poor"]
    assert [label for label, _ in class_select.options] == ["sky", "grass", "cat*", "dog*"]
    assert class_select.value == (0, 1, 2, 3)

    def state():
        return bytes(view.value), scores.value

    png, text = state()
    assert png.startswith(b"\x89PNG") and "image 0: good" in text
    seen = {png}
    image_slider.value = 2
    png, text = state()
    assert png not in seen and "image 2: good" in text and "mIoU <b>100.0</b>" not in text
    seen.add(png)
    method_dropdown.value = "poor"
    png, text = state()
    assert png not in seen and "image 2: poor" in text
    seen.add(png)
    opacity_slider.value = 0.0
    png, same_text = state()
    assert png not in seen and same_text == text  # opacity changes the picture only
    seen.add(png)
    opacity_slider.value = 1.0
    opaque, _ = state()
    class_select.value = (0,)
    png, text = state()
    assert png != opaque and 'style="color: #999999"' in text  # only sky coloured, other rows greyed


@pytest.mark.parametrize("num_classes", [4, 16, 40])
@pytest.mark.parametrize("num_methods", [1, 2, 6])
def test_explorer_view_legend_and_titles_fit_in_the_figure(num_methods, num_classes, assert_fits_in_figure):
    from cagnet.data.synthetic import CLASS_NAMES

    names = {4: NAMES, 16: list(CLASS_NAMES)}.get(num_classes, [f"a rather long class name {i}"
                                                                 for i in range(num_classes)])
    rng = np.random.default_rng(num_methods)
    images = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(2)]
    labels = [rng.integers(0, num_classes, (24, 24)) for _ in range(2)]
    predictions = {f"a method with a long name {k}": [rng.integers(0, num_classes, (24, 24)) for _ in range(2)]
                   for k in range(num_methods)}
    last = list(predictions)[-1]
    figure, _ = widgets.explorer_view(images, labels, predictions, names, num_classes // 2, index=1, method=last)
    assert figure.axes[2].get_title().startswith(last)
    assert_fits_in_figure(figure)


def test_explorer_draws_colour_named_classes_in_their_colour():
    from PIL import Image

    from cagnet.data.synthetic import CLASS_NAMES

    pytest.importorskip("ipywidgets")
    names = list(CLASS_NAMES)
    green = names.index("green_striped")
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    label = np.full((8, 8), green)
    explorer = widgets.mask_explorer([image], [label], {"m": [label]}, names, num_seen=12, alpha=1.0, dpi=40)
    png = Image.open(io.BytesIO(bytes(explorer.children[1].children[1].value))).convert("RGB")
    colours, counts = np.unique(np.asarray(png).reshape(-1, 3), axis=0, return_counts=True)
    expected = viz.class_palette(names)[green]
    assert expected[1] > expected[[0, 2]].max() + 40  # green_striped is drawn green
    drawn = colours[np.argsort(counts)[::-1][:3]]  # white background, the grey image, the class colour
    assert any((np.abs(c.astype(int) - expected) <= 2).all() for c in drawn)


def test_explorer_opens_on_cagnet():
    images, labels, predictions = tiny_test_set()
    methods = {"SPNet": predictions["poor"], "ZS3Net": predictions["poor"], "CaGNet": predictions["good"],
               "CaGNet+ST": predictions["good"]}
    assert widgets.default_method(methods) == "CaGNet"
    assert widgets.default_method(["SPNet", "cagnet_mixed", "CaGNet+ST"]) == "cagnet_mixed"
    assert widgets.default_method(["good", "poor"]) == "good"  # no CaGNet: the first
    with pytest.raises(ValueError):
        widgets.default_method([])
    figure, summary = widgets.explorer_view(images, labels, methods, NAMES, 2)
    assert "image 0: CaGNet" in summary and figure.axes[2].get_title().startswith("CaGNet\n")
    ipywidgets = pytest.importorskip("ipywidgets")
    explorer = widgets.mask_explorer(images, labels, methods, NAMES, num_seen=2, dpi=40)
    assert isinstance(explorer, ipywidgets.Widget)
    method_dropdown = explorer.children[0].children[1]
    assert method_dropdown.value == "CaGNet" and list(method_dropdown.options) == list(methods)
    assert "image 0: CaGNet" in explorer.children[1].children[2].value
    chosen = widgets.mask_explorer(images, labels, methods, NAMES, num_seen=2, dpi=40, method="ZS3Net")
    assert chosen.children[0].children[1].value == "ZS3Net"
    with pytest.raises(ValueError):
        widgets.mask_explorer(images, labels, methods, NAMES, num_seen=2, method="missing")
