"""Tests of cagnet.metrics: confusion counts, GZSL scores, streaming and formatting."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cagnet.errors import CagnetError
from cagnet.metrics import (
    ORIGINAL_SCORE_NAMES,
    ConfusionMatrix,
    MetricError,
    confusion_matrix,
    format_scores,
    gzsl_scores,
    harmonic_mean,
    per_image_iou,
    seen_unseen_confusion,
)

SCORE_KEYS = set(ORIGINAL_SCORE_NAMES.values())


def original_style_histogram(target: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[K, K] counts indexed by the flat position K * target + pred, as the original counted.

    Only the ground truth is range-checked, which is the defect under test.
    """
    labelled = (target >= 0) & (target < num_classes)
    flat = num_classes * target[labelled].astype(np.int64) + pred[labelled].astype(np.int64)
    return np.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)


# ---------------------------------------------------------------- the original's reference


@pytest.fixture(scope="module")
def gzsl_reference(original_reference_dir):
    path = original_reference_dir / "gzsl_scores_reference.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return json.loads(path.read_text())


def test_reference_scores_match_the_original(gzsl_reference):
    ref = gzsl_reference
    target = torch.tensor(ref["targets"])
    pred = torch.tensor(ref["outputs"])
    confusion = confusion_matrix(target, pred, ref["n_class"])
    scores = gzsl_scores(confusion, ref["seen"], ref["unseen"])

    assert set(ref["scores"]) == set(ORIGINAL_SCORE_NAMES), "every reported score has a key"
    for original_name, expected in ref["scores"].items():
        key = ORIGINAL_SCORE_NAMES[original_name]
        assert scores[key] == pytest.approx(expected, abs=1e-9, rel=0), original_name
    assert len(scores["class_iou"]) == ref["n_class"]
    for got, expected in zip(scores["class_iou"], ref["class_iou"]):
        if expected is None or (isinstance(expected, float) and math.isnan(expected)):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-9, rel=0)


def test_reference_counts_agree_with_the_original_histogram(gzsl_reference):
    """Predictions in the reference are all in range, so the "other" column is empty."""
    ref = gzsl_reference
    target, pred = np.array(ref["targets"]), np.array(ref["outputs"])
    confusion = confusion_matrix(torch.tensor(target), torch.tensor(pred), ref["n_class"])
    assert confusion[:, -1].sum() == 0
    np.testing.assert_array_equal(confusion[:, :-1].numpy(), original_style_histogram(target, pred, ref["n_class"]))


# ---------------------------------------------------------------- hand-computed example


def test_hand_computed_example():
    # K = 3, seen {0, 1}, unseen {2}; one ignored pixel.
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    confusion = confusion_matrix(target, pred, 3)
    assert confusion.dtype == torch.int64
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]]

    s = gzsl_scores(confusion, seen=[0, 1], unseen=[2])
    # row totals t = (2, 2, 1), column totals p = (1, 2, 2), diagonal (1, 1, 1), N = 5
    expected = {
        "pixel_acc": 3 / 5, "seen_pixel_acc": 2 / 4, "unseen_pixel_acc": 1.0, "harmonic_pixel_acc": 2 / 3,
        "mean_acc": 2 / 3, "seen_mean_acc": 1 / 2, "unseen_mean_acc": 1.0, "harmonic_mean_acc": 2 / 3,
        # iou = (1/2, 1/3, 1/2)
        "miou": 4 / 9, "seen_miou": 5 / 12, "unseen_miou": 1 / 2, "hiou": 5 / 11,
        # fwiou = 2/5 * 1/2 + 2/5 * 1/3 + 1/5 * 1/2
        "fwiou": 13 / 30, "seen_fwiou": 1 / 3, "unseen_fwiou": 1 / 10, "harmonic_fwiou": 2 / 13,
    }
    assert SCORE_KEYS <= set(s)
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, abs=1e-12, rel=0), key
    assert s["class_iou"] == pytest.approx([1 / 2, 1 / 3, 1 / 2], abs=1e-12)
    assert s["class_acc"] == pytest.approx([1 / 2, 1 / 2, 1.0], abs=1e-12)
    assert s["seen_fwiou"] + s["unseen_fwiou"] == pytest.approx(s["fwiou"], abs=1e-12)


def test_seen_unseen_confusion_by_hand():
    # K = 3, seen {0, 1}, unseen {2}; rows = ground truth, last column = "other".
    confusion = torch.tensor([[5, 1, 2, 0],    # seen 0: 2 of 8 predicted unseen
                              [0, 6, 0, 2],    # seen 1: none predicted unseen (2 "other")
                              [3, 1, 4, 0]])   # unseen 2: 4 of 8 predicted seen
    shares = seen_unseen_confusion(confusion, seen=[0, 1], unseen=[2])
    assert shares["seen_as_unseen"] == pytest.approx(2 / 16, abs=1e-12)
    assert shares["unseen_as_seen"] == pytest.approx(4 / 8, abs=1e-12)
    # without row 2: iou_0 = 5 / (8 + 5 - 5), iou_1 = 6 / (8 + 7 - 6)
    assert shares["seen_miou_without_unseen_pixels"] == pytest.approx((5 / 8 + 6 / 9) / 2, abs=1e-12)
    # with row 2 the unseen pixels predicted 0 and 1 are false positives of the seen classes
    assert gzsl_scores(confusion, [0, 1], [2])["seen_miou"] == pytest.approx((5 / 11 + 6 / 10) / 2, abs=1e-12)
    with pytest.raises(MetricError, match="shape"):
        seen_unseen_confusion(torch.zeros(3, 5), seen=[0, 1], unseen=[2])


def test_square_matrix_is_scored_like_an_empty_other_column():
    rng = np.random.default_rng(0)
    square = torch.from_numpy(rng.integers(0, 9, size=(5, 5)))
    padded = torch.cat([square, torch.zeros(5, 1, dtype=square.dtype)], dim=1)
    a, b = gzsl_scores(square, [0, 1, 2], [3, 4]), gzsl_scores(padded, [0, 1, 2], [3, 4])
    assert a == b


# ---------------------------------------------------------------- the defect fix


def test_out_of_range_prediction_is_a_miss_of_its_row():
    num_classes = 3  # the classifier's extra output has index 3
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 3, 1, 1]])
    confusion = confusion_matrix(target, pred, num_classes)
    assert confusion.tolist() == [[1, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 0]]

    s = gzsl_scores(confusion, seen=[0, 1], unseen=[2])
    assert s["class_acc"][:2] == [0.5, 1.0]
    assert s["class_iou"][:2] == [0.5, 1.0]
    assert s["pixel_acc"] == 0.75 and s["seen_pixel_acc"] == 0.75
    # The miss credits no class: same column totals as when the pixel is not counted at all.
    dropped = confusion_matrix(target[:, [0, 2, 3]], pred[:, [0, 2, 3]], num_classes)
    assert torch.equal(confusion[:, :num_classes].sum(0), dropped[:, :num_classes].sum(0))
    # ... and no class scores higher than if the pixel were predicted as some wrong class.
    wrong_class = gzsl_scores(confusion_matrix(target, torch.tensor([[0, 2, 1, 1]]), num_classes), [0, 1], [2])
    assert s["class_acc"][:2] == wrong_class["class_acc"][:2]
    assert s["class_iou"][:2] == wrong_class["class_iou"][:2]


def test_original_counting_differs_on_out_of_range_prediction():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 3, 1, 1]])
    original = original_style_histogram(target, pred, 3)
    # The original books "ground truth 0, predicted 3" as "ground truth 1, predicted 0".
    assert original.tolist() == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    theirs = gzsl_scores(torch.from_numpy(original), seen=[0], unseen=[1])
    ours = gzsl_scores(confusion_matrix(torch.from_numpy(target), torch.from_numpy(pred), 3), seen=[0], unseen=[1])
    assert theirs["class_acc"][0] == 1.0 and ours["class_acc"][0] == 0.5  # class 0 was inflated
    assert theirs["seen_pixel_acc"] == 1.0 and ours["seen_pixel_acc"] == 0.5
    assert theirs["class_acc"][1] == pytest.approx(2 / 3) and ours["class_acc"][1] == 1.0
    # For the last class the original's histogram is too long to reshape.
    with pytest.raises(ValueError):
        original_style_histogram(np.array([2]), np.array([3]), 3)
    assert confusion_matrix(torch.tensor([2]), torch.tensor([3]), 3).tolist()[2] == [0, 0, 0, 1]


@pytest.mark.parametrize("outside", [3, 4, 255, -1, -100])
def test_any_out_of_range_prediction_goes_to_the_other_column(outside):
    confusion = confusion_matrix(torch.tensor([1, 1]), torch.tensor([1, outside]), 3)
    assert confusion.tolist() == [[0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]


# ---------------------------------------------------------------- ignored pixels, NaN classes


def test_ignored_and_out_of_range_targets_are_skipped():
    target = torch.tensor([255, 255, 5, -3, 1], dtype=torch.int64)
    pred = torch.tensor([0, 9, 1, 1, 1])
    assert confusion_matrix(target, pred, 3).sum() == 1
    as_uint8 = confusion_matrix(torch.tensor([255, 0, 2], dtype=torch.uint8), torch.tensor([0, 0, 1], dtype=torch.uint8), 3)
    assert as_uint8.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]


def test_ignore_index_inside_the_class_range():
    target = torch.tensor([0, 0, 1, 2])
    pred = torch.tensor([1, 1, 1, 2])
    confusion = confusion_matrix(target, pred, 3, ignore_index=0)
    assert confusion.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]


def test_absent_classes_are_nan_and_excluded_from_means():
    # K = 4: class 2 is only predicted (IoU 0, accuracy undefined), class 3 appears nowhere.
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 2])
    s = gzsl_scores(confusion_matrix(target, pred, 4), seen=[0, 1], unseen=[2, 3])
    assert s["class_iou"][:3] == [1.0, 0.5, 0.0] and math.isnan(s["class_iou"][3])
    assert s["class_acc"][:2] == [1.0, 0.5] and math.isnan(s["class_acc"][2]) and math.isnan(s["class_acc"][3])
    assert s["miou"] == pytest.approx(0.5)        # mean of 1, 0.5, 0 (class 3 excluded)
    assert s["mean_acc"] == pytest.approx(0.75)   # mean of 1, 0.5
    assert s["unseen_miou"] == 0.0 and s["hiou"] == 0.0
    assert math.isnan(s["unseen_pixel_acc"]) and math.isnan(s["unseen_mean_acc"])
    assert math.isnan(s["harmonic_pixel_acc"]) and math.isnan(s["harmonic_mean_acc"])
    assert s["unseen_fwiou"] == 0.0 and s["harmonic_fwiou"] == 0.0


def test_no_labelled_pixel_gives_nan_scores():
    s = gzsl_scores(confusion_matrix(torch.full((2, 2), 255), torch.zeros(2, 2, dtype=torch.long), 3), [0, 1], [2])
    for key in SCORE_KEYS:
        assert math.isnan(s[key]), key
    assert all(math.isnan(v) for v in s["class_iou"])


def test_harmonic_is_zero_when_one_side_is_zero():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.0, 0.8) == 0.0
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert math.isnan(harmonic_mean(0.5, math.nan))
    # every unseen pixel predicted as a seen class
    target = torch.tensor([0, 1, 2, 2])
    pred = torch.tensor([0, 1, 0, 1])
    s = gzsl_scores(confusion_matrix(target, pred, 3), seen=[0, 1], unseen=[2])
    assert s["seen_miou"] == 0.5 and s["unseen_miou"] == 0.0
    for key in ("hiou", "harmonic_pixel_acc", "harmonic_mean_acc", "harmonic_fwiou"):
        assert s[key] == 0.0, key


# ---------------------------------------------------------------- devices and streaming


def random_maps(seed: int, shape=(4, 7, 9), num_classes: int = 6):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < 0.2] = 255
    pred = torch.randint(0, num_classes + 1, shape, generator=generator)  # includes the extra output
    return target, pred


def test_counts_stay_on_cpu_and_match_a_loop():
    target, pred = random_maps(1)
    confusion = confusion_matrix(target, pred, 6)
    assert confusion.device.type == "cpu" and confusion.shape == (6, 7)
    expected = torch.zeros(6, 7, dtype=torch.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if 0 <= t < 6:
            expected[t, p if 0 <= p < 6 else 6] += 1
    assert torch.equal(confusion, expected)


def test_meta_device():
    target = torch.empty(2, 5, 5, dtype=torch.long, device="meta")
    confusion = confusion_matrix(target, target.clone(), 4)
    assert confusion.device.type == "meta" and confusion.shape == (4, 5) and confusion.dtype == torch.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_device():
    target, pred = random_maps(2)
    confusion = confusion_matrix(target.cuda(), pred.cuda(), 6)
    assert confusion.is_cuda
    assert torch.equal(confusion.cpu(), confusion_matrix(target, pred, 6))
    accumulator = ConfusionMatrix(6)
    accumulator.update(target.cuda(), pred.cuda())
    assert accumulator.matrix.is_cuda


def test_streaming_equals_one_shot():
    target, pred = random_maps(3, shape=(6, 8, 8))
    accumulator = ConfusionMatrix(6)
    for start in range(0, 6, 2):
        accumulator.update(target[start:start + 2], pred[start:start + 2])
    one_shot = confusion_matrix(target, pred, 6)
    assert torch.equal(accumulator.matrix, one_shot)
    assert accumulator.scores([0, 1, 2, 3], [4, 5]) == gzsl_scores(one_shot, [0, 1, 2, 3], [4, 5])
    accumulator.reset()
    assert accumulator.matrix.sum() == 0


def test_all_reduce_is_a_no_op_without_process_group():
    import torch.distributed as dist

    assert not (dist.is_available() and dist.is_initialized())
    target, pred = random_maps(4)
    accumulator = ConfusionMatrix(6)
    accumulator.update(target, pred)
    before = accumulator.matrix.clone()
    assert accumulator.all_reduce() is accumulator
    assert torch.equal(accumulator.matrix, before)


def _all_reduce_worker(rank: int, world_size: int, init_file: str, result_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        target, pred = random_maps(10 + rank)
        accumulator = ConfusionMatrix(6)
        accumulator.update(target, pred)
        accumulator.all_reduce()
        if rank == 0:
            torch.save(accumulator.matrix, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_sums_over_processes(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo not available")
    result_file = tmp_path / "matrix.pt"
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "init"), str(result_file)), nprocs=2, join=True)
    expected = sum(confusion_matrix(*random_maps(10 + rank), 6) for rank in range(2))
    assert torch.equal(torch.load(result_file, weights_only=True), expected)


# ---------------------------------------------------------------- errors and formatting


@pytest.mark.parametrize("call, fragment", [
    (lambda: confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3), "shape"),
    (lambda: confusion_matrix(torch.zeros(2, dtype=torch.long), torch.zeros(2), 3), "float32"),
    (lambda: confusion_matrix(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 0), "num_classes"),
    (lambda: gzsl_scores(torch.zeros(3, 5), [0], [1]), "[3, 5]"),
    (lambda: gzsl_scores(torch.zeros(3, 4), [0, 1], [1, 2]), "both seen and unseen"),
    (lambda: gzsl_scores(torch.zeros(3, 4), [0, 3], [2]), "seen class 3"),
    (lambda: gzsl_scores(torch.zeros(3, 4), [0, 0], [2]), "duplicates"),
    (lambda: gzsl_scores(-torch.ones(3, 4), [0], [2]), "negative"),
    (lambda: format_scores({}, style="wide"), "wide"),
])
def test_bad_input_raises_one_line_error(call, fragment):
    with pytest.raises(MetricError) as info:
        call()
    assert isinstance(info.value, CagnetError)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_format_scores():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    s = gzsl_scores(confusion_matrix(target, pred, 3), [0, 1], [2])
    line = format_scores(s)
    assert "\n" not in line
    assert line == "mIoU 44.44 (seen 41.67, unseen 50.00) hIoU 45.45 | pixel acc 60.00 | mean acc 66.67"
    table = format_scores(s, style="table").splitlines()
    assert len(table) == 5
    assert table[0].split() == ["all", "seen", "unseen", "harmonic"]
    assert table[3].split() == ["fw", "IoU", "43.33", "33.33", "10.00", "15.38"]
    assert table[4].split() == ["mean", "IoU", "44.44", "41.67", "50.00", "45.45"]
    partial = format_scores({"miou": math.nan})
    assert partial.startswith("mIoU nan (seen n/a")


def test_per_image_iou_matches_a_hand_computed_case():
    label = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    prediction = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.uint8)  # the 0 under 255 is not counted
    scores = per_image_iou(label, prediction, num_classes=4, num_seen=2)
    # class 0: tp 1, union 2; class 1: tp 2, union 4 (4 predicted); class 2: tp 0, union 1; class 3 absent
    np.testing.assert_allclose(scores["class_iou"], [0.5, 0.5, 0.0, np.nan])
    assert scores["classes"] == [0, 1, 2]
    assert scores["miou"] == pytest.approx(1.0 / 3.0)
    assert scores["seen_miou"] == pytest.approx(0.5) and scores["unseen_miou"] == 0.0 and scores["hiou"] == 0.0
    plain = per_image_iou(label, prediction, num_classes=4)
    assert set(plain) == {"class_iou", "classes", "miou"} and plain["miou"] == pytest.approx(1.0 / 3.0)
