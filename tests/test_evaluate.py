"""Evaluation protocols: prediction over S+U classes only, label/prediction matching, scores;
seen-class calibration (penalty, sweep, held-out selection)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cagnet.data import load_dataset_info, resize_labels
from cagnet.data.datasets import SegmentationDataset
from cagnet.errors import ConfigError
from cagnet.evaluate import (PROTOCOLS, calibration_sweep, evaluate, held_out_calibration, penalty_grid,
                             predict_labels, seen_unseen_gap)
from cagnet.metrics import confusion_matrix, gzsl_scores
from cagnet.models import build_cagnet

pytestmark = pytest.mark.usefixtures("single_torch_thread")

S, U = 3, 2


class Info:
    """The part of DatasetInfo that evaluate reads."""

    num_seen, num_unseen = S, U
    eval_class_names = ["a", "b", "c", "x", "y"]


class OracleModel(nn.Module):
    """Logits on a stride-8 grid from a label map hidden in the image's first channel.

    ``extra`` adds a large value to the classifier's extra output S+U everywhere.
    """

    def __init__(self, extra: float = 0.0, wrong_unseen: bool = False):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.extra = extra
        self.wrong_unseen = wrong_unseen

    def forward(self, image):
        labels = image[:, 0].round().long().clamp(0, S + U - 1)
        if self.wrong_unseen:   # unseen pixels predicted as the other unseen class
            labels = torch.where(labels >= S, (S + U - 1) - (labels - S), labels)
        grid = resize_labels(labels, (image.shape[-2] // 8 + 1, image.shape[-1] // 8 + 1))
        logits = F.one_hot(grid, S + U + 1).permute(0, 3, 1, 2).float() * 10.0
        logits[:, S + U] += self.extra
        return logits + self.anchor


def _loader(labels_list):
    samples = []
    for labels in labels_list:
        image = torch.stack([labels.float().clamp(max=S + U - 1), torch.zeros_like(labels, dtype=torch.float),
                             torch.zeros_like(labels, dtype=torch.float)])
        samples.append({"image": image, "label": labels})
    return torch.utils.data.DataLoader(samples, batch_size=1)


def _labels(seed=0, size=(40, 48)):
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, S + U, (size[0] // 8, size[1] // 8), generator=generator)
    labels = blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)
    labels[:3, :5] = 255
    return labels


def test_original_protocol_scores_the_prediction_grid():
    labels = [_labels(0), _labels(1)]
    scores = evaluate(OracleModel(), _loader(labels), Info(), "original")
    assert scores["protocol"] == "original" and scores["num_images"] == 2
    expected = []
    for label in labels:
        grid = (label.shape[0] // 8 + 1, label.shape[1] // 8 + 1)
        target = resize_labels(label, grid)
        prediction = resize_labels(label.clamp(max=S + U - 1), grid)
        expected.append(confusion_matrix(target, prediction, S + U))
    reference = gzsl_scores(sum(expected), range(S), range(S, S + U))
    for key in ("miou", "seen_miou", "unseen_miou", "hiou", "pixel_acc", "mean_acc", "fwiou"):
        assert scores[key] == pytest.approx(reference[key]), key
    assert scores["class_names"] == Info.eval_class_names
    assert scores["num_seen"] == S and scores["num_unseen"] == U
    assert "confusion" not in scores
    with_counts = evaluate(OracleModel(), _loader(labels), Info(), "original", return_confusion=True)
    assert torch.equal(with_counts["confusion"], sum(expected).cpu())
    assert with_counts["confusion"].shape == (S + U, S + U + 1) and with_counts["hiou"] == scores["hiou"]


def test_full_protocol_scores_at_image_resolution():
    labels = [_labels(2)]
    scores = evaluate(OracleModel(wrong_unseen=True), _loader(labels), Info(), "full")
    assert scores["protocol"] == "full"
    logits = OracleModel(wrong_unseen=True)(_loader(labels).dataset[0]["image"][None])
    up = F.interpolate(logits[:, :S + U], size=labels[0].shape, mode="bilinear", align_corners=False).argmax(1)[0]
    reference = gzsl_scores(confusion_matrix(labels[0], up, S + U), range(S), range(S, S + U))
    assert scores["miou"] == pytest.approx(reference["miou"])
    assert scores["unseen_miou"] < scores["seen_miou"]


def test_the_extra_output_is_never_predicted():
    labels = [_labels(3)]
    scores = evaluate(OracleModel(extra=100.0), _loader(labels), Info(), "original")
    clean = evaluate(OracleModel(), _loader(labels), Info(), "original")
    assert scores["miou"] == pytest.approx(clean["miou"])
    logits = torch.zeros(1, S + U + 1, 2, 2)
    logits[:, S + U] = 5.0
    logits[:, 1] = 1.0
    assert predict_labels(logits, S + U).eq(1).all()


def test_bad_protocol_and_mismatched_model():
    with pytest.raises(ConfigError, match="protocol must be one of"):
        evaluate(OracleModel(), _loader([_labels()]), Info(), "fancy")
    model = build_cagnet("tiny", num_seen=5, num_unseen=5, embedding_dim=8)
    with pytest.raises(ConfigError, match="classifier outputs"):
        evaluate(model, _loader([_labels()]), Info(), "original")
    assert PROTOCOLS == ("original", "full")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_evaluate_a_model_on_a_dataset(tiny_train_benchmark, protocol):
    info = load_dataset_info(tiny_train_benchmark)
    dataset = SegmentationDataset(tiny_train_benchmark, "test", info=info)
    model = build_cagnet("tiny", class_embeddings=info.class_embeddings("glove"), num_seen=info.num_seen)
    model.train()
    scores = evaluate(model, dataset, info, protocol, test_size=48, limit=3, batch_size=2)
    assert model.training                      # mode restored
    assert scores["num_images"] == 3
    assert len(scores["class_iou"]) == info.num_seen + info.num_unseen
    assert 0.0 <= scores["pixel_acc"] <= 1.0 and not math.isnan(scores["pixel_acc"])
    own_size = evaluate(model, dataset, info, protocol, test_size=None, limit=2, batch_size=2)
    assert own_size["num_images"] == 2


# ---------------------------------------------------------------------------------- calibration


def test_seen_penalty_zero_changes_nothing_and_a_large_one_predicts_unseen_everywhere():
    labels = [_labels(4), _labels(5)]
    plain = evaluate(OracleModel(), _loader(labels), Info(), "original")
    zero = evaluate(OracleModel(), _loader(labels), Info(), "original", seen_penalty=0.0)
    for key in ("miou", "seen_miou", "unseen_miou", "hiou", "pixel_acc", "class_iou"):
        assert zero[key] == plain[key], key
    assert plain["seen_penalty"] == 0.0

    logits = OracleModel()(_loader(labels).dataset[0]["image"][None])
    assert torch.equal(predict_labels(logits, S + U, seen_penalty=0.0, num_seen=S), predict_labels(logits, S + U))
    assert (predict_labels(logits, S + U, seen_penalty=1000.0, num_seen=S) >= S).all()
    assert (predict_labels(logits, S + U, (40, 48), seen_penalty=1000.0, num_seen=S) >= S).all()
    # the extra output stays out even when the seen classes are pushed down
    assert (predict_labels(logits, S + U, seen_penalty=1000.0, num_seen=S) < S + U).all()

    calibrated = evaluate(OracleModel(), _loader(labels), Info(), "original", seen_penalty=1000.0)
    assert calibrated["seen_penalty"] == 1000.0
    assert all(calibrated["class_iou"][k] == 0.0 for k in range(S))     # no pixel predicted seen
    assert calibrated["seen_pixel_acc"] == 0.0 and calibrated["unseen_pixel_acc"] == 1.0
    with pytest.raises(ConfigError, match="num_seen"):
        predict_labels(logits, S + U, seen_penalty=1.0)
    with pytest.raises(ConfigError, match="finite"):
        predict_labels(logits, S + U, seen_penalty=float("inf"), num_seen=S)


def test_penalty_grid_spans_the_gaps():
    logits = torch.zeros(1, S + U + 1, 2, 3)
    logits[0, 0] = torch.tensor([[3.0, 1.0, -2.0], [5.0, 0.5, 2.0]])
    gaps = seen_unseen_gap(logits, S, S + U)
    assert gaps.shape == (1, 2, 3)
    grid = penalty_grid(gaps, count=5)
    assert grid[0] == 0.0 and grid == sorted(set(grid)) and grid[-1] > 5.0
    assert (predict_labels(logits, S + U, seen_penalty=grid[-1], num_seen=S) >= S).all()
    assert penalty_grid(torch.full((4,), -1.0)) == [-1.0, 0.0]      # every pixel unseen: only boosts help
    assert penalty_grid(torch.zeros(0)) == [0.0]
    with pytest.raises(ConfigError):
        penalty_grid(gaps, count=1)


def _gap_logits(gaps: torch.Tensor) -> torch.Tensor:
    """Logits [1, S+U+1, 1, n] whose seen-unseen gap is ``gaps`` (seen class 0 = gap, the other seen
    classes far below, the unseen ones 0)."""
    logits = torch.zeros(1, S + U + 1, 1, gaps.numel())
    logits[0, 1:S] = -100.0
    logits[0, 0, 0] = gaps
    assert torch.equal(seen_unseen_gap(logits, S, S + U)[0, 0], gaps)
    return logits


def test_penalty_grid_covers_both_sides_symmetrically_in_pixel_shares():
    gaps = torch.tensor([-8.0, -4.0, -2.0, -1.0, -0.5, 0.25, 0.5, 1.0, 3.0, 6.0, 9.0])
    count = 5
    grid = penalty_grid(gaps, count)
    assert grid == sorted(set(grid)) and grid.count(0.0) == 1
    # the positive side is the one-sided grid of before: quantiles of the positive gaps and a step above the largest
    levels = torch.linspace(0, 1, count, dtype=torch.float64)
    positive = gaps[gaps > 0].double()
    expected_positive = sorted({0.0, *map(float, torch.quantile(positive, levels)), 9.0 + 9.0 * 1e-3})
    assert [p for p in grid if p >= 0] == pytest.approx(expected_positive)
    # the negative side: quantiles of the negative gaps, down to the smallest gap
    assert [p for p in grid if p < 0] == pytest.approx(sorted(map(float, torch.quantile(gaps[gaps < 0].double(), levels))))
    logits = _gap_logits(gaps)
    predicted_unseen = [int((predict_labels(logits, S + U, seen_penalty=p, num_seen=S) >= S).sum()) for p in grid]
    assert predicted_unseen[0] == 0 and predicted_unseen[-1] == gaps.numel()      # the ends: all seen, all unseen
    assert predicted_unseen == sorted(predicted_unseen)
    assert predicted_unseen[grid.index(0.0)] == 5                                  # the plain argmax
    # symmetric in pixel shares: the k-th penalty from 0 on either side (quantile level (k-1)/4 of that
    # side's gaps) moves (k-1)/4 of that side's pixels across
    gaps = torch.cat([-torch.rand(300, generator=torch.Generator().manual_seed(0)) * 2,
                      torch.rand(100, generator=torch.Generator().manual_seed(1)) * 50])
    grid = penalty_grid(gaps, count)
    zero = grid.index(0.0)
    assert len(grid) == 2 * count + 2          # 0, 5 levels a side, one step above the largest gap
    logits = _gap_logits(gaps)
    for k in range(1, count + 1):
        unseen_below = int((predict_labels(logits, S + U, seen_penalty=grid[zero - k], num_seen=S) >= S).sum())
        unseen_above = int((predict_labels(logits, S + U, seen_penalty=grid[zero + k], num_seen=S) >= S).sum())
        # within one pixel (the pixel at the quantile itself)
        assert abs((300 - unseen_below) - 300 * (k - 1) / (count - 1)) <= 1          # unseen -> seen
        assert abs((unseen_above - 300) - 100 * (k - 1) / (count - 1)) <= 1          # seen -> unseen
    assert (predict_labels(logits, S + U, seen_penalty=grid[-1], num_seen=S) >= S).all()


class GapModel(nn.Module):
    """Logits at the image's resolution from a label map in its first channel: a seen pixel scores
    its class 5 and unseen class S 6 (gap -1: wrongly unseen); an unseen pixel scores its class 10
    and seen class 0 3 (gap -7). Any penalty in (-7, -1] predicts every pixel right; the plain
    argmax predicts every pixel unseen."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, image):
        labels = image[:, 0].round().long()
        logits = torch.zeros(labels.shape[0], S + U + 1, *labels.shape[1:])
        seen = labels < S
        unseen = (labels >= S) & (labels < S + U)
        logits.scatter_(1, labels.clamp(max=S + U - 1)[:, None], 1.0)
        logits = logits * torch.where(seen, 5.0, 10.0)[:, None]
        logits[:, S][seen] = 6.0
        logits[:, 0][unseen] = 3.0
        return logits + self.anchor


def _plain_loader(labels_list):
    samples = [{"image": torch.stack([labels.float(), torch.zeros_like(labels, dtype=torch.float),
                                      torch.zeros_like(labels, dtype=torch.float)]), "label": labels}
               for labels in labels_list]
    return torch.utils.data.DataLoader(samples, batch_size=1)


def test_a_negative_penalty_fixes_a_model_biased_towards_unseen_classes():
    labels = [torch.randint(0, S + U, (6, 8), generator=torch.Generator().manual_seed(seed)) for seed in range(2)]
    sweep = calibration_sweep(GapModel(), _plain_loader(labels), Info(), grid_size=5)
    zero = sweep["penalties"].index(0.0)
    assert sweep["hiou"][zero] == 0.0 and sweep["unseen_share"][zero] == 1.0     # plain argmax: all unseen
    assert -7.0 < sweep["best_penalty"] <= -1.0 and sweep["best"]["hiou"] == 1.0
    assert sweep["best_at_edge"] is False            # the grid reaches "every pixel seen" below the best
    assert sweep["unseen_share"][0] == 0.0 and sweep["unseen_share"] == sorted(sweep["unseen_share"])
    # the penalties of before (>= 0 only): the best is 0, an end of the grid that still predicts unseen pixels
    one_sided = calibration_sweep(GapModel(), _plain_loader(labels), Info(), [0.0, 1.0, 20.0])
    assert one_sided["best_penalty"] == 0.0 and one_sided["best_at_edge"] is True
    # include: a penalty scored besides the grid, with evaluate's scores and confusion matrix
    extra = calibration_sweep(GapModel(), _plain_loader(labels), Info(), grid_size=5, include=[-1.5, 0.0],
                              return_confusion=True)
    assert -1.5 in extra["penalties"] and set(sweep["penalties"]) <= set(extra["penalties"])
    scores = extra["scores"][extra["penalties"].index(-1.5)]
    direct = evaluate(GapModel(), _plain_loader(labels), Info(), seen_penalty=-1.5, return_confusion=True)
    assert scores["hiou"] == direct["hiou"] == 1.0 and torch.equal(scores["confusion"], direct["confusion"])
    with pytest.raises(ConfigError, match="include"):
        calibration_sweep(GapModel(), _plain_loader(labels), Info(), include=[float("nan")])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sweep_equals_evaluate_at_every_penalty(tiny_train_benchmark, protocol):
    info = load_dataset_info(tiny_train_benchmark)
    dataset = SegmentationDataset(tiny_train_benchmark, "test", info=info)
    torch.manual_seed(0)
    model = build_cagnet("tiny", class_embeddings=info.class_embeddings("glove"), num_seen=info.num_seen)
    sweep = calibration_sweep(model, dataset, info, None, protocol, test_size=48, limit=4, batch_size=2, grid_size=6)
    assert sweep["num_images"] == 4 and len(sweep["penalties"]) == len(sweep["hiou"]) == len(sweep["scores"])
    assert 0.0 in sweep["penalties"] and len(sweep["penalties"]) >= 3 and len(sweep["unseen_share"]) == len(sweep["hiou"])
    assert sweep["best_at_edge"] is False            # the derived grid's ends predict everything seen / unseen
    assert sweep["best_penalty"] == sweep["penalties"][sweep["best_index"]]
    assert sweep["best"]["hiou"] == max(h for h in sweep["hiou"] if not math.isnan(h))
    for penalty, scores in zip(sweep["penalties"], sweep["scores"]):
        direct = evaluate(model, dataset, info, protocol, test_size=48, limit=4, batch_size=2, seen_penalty=penalty)
        for key in ("miou", "seen_miou", "unseen_miou", "hiou", "pixel_acc", "mean_acc", "class_iou"):
            assert scores[key] == pytest.approx(direct[key], nan_ok=True), (penalty, key)
    explicit = calibration_sweep(model, dataset, info, [0.0, 1e6], protocol, test_size=48, limit=4, batch_size=2)
    assert explicit["penalties"] == [0.0, 1e6] and explicit["seen_miou"][1] == 0.0
    with pytest.raises(ConfigError, match="penalties"):
        calibration_sweep(model, dataset, info, [], protocol, test_size=48, limit=2)


class IgnoredPixelModel(nn.Module):
    """Labelled pixels score their class by 10; ignored pixels (255, unseen in training labels)
    score seen class 0 by 5 and unseen class S by 4: a gap of 1 that a penalty in (1, 10) fixes."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, image):
        labels = image[:, 0].round().long()
        logits = torch.zeros(labels.shape[0], S + U + 1, *labels.shape[1:])
        ignored = labels == 255
        logits.scatter_(1, labels.clamp(max=S - 1)[:, None], 10.0)
        logits[:, 0][ignored] = 5.0
        logits[:, S][ignored] = 4.0
        return logits + self.anchor


def test_held_out_calibration_balances_seen_accuracy_and_ignored_pixels():
    samples = []
    for seed in range(2):
        labels = torch.randint(0, S, (6, 8), generator=torch.Generator().manual_seed(seed))
        labels[:2] = 255
        image = torch.stack([labels.float(), torch.zeros(6, 8), torch.zeros(6, 8)])
        samples.append({"image": image, "label": labels})
    loader = torch.utils.data.DataLoader(samples, batch_size=1)
    result = held_out_calibration(IgnoredPixelModel(), loader, Info(), grid_size=9)
    assert result["num_images"] == 2 and result["num_ignored"] == 2 * 16 and result["num_labelled"] == 2 * 32
    best = result["best_index"]
    # a pixel flips to unseen when its gap is below the penalty (a tie keeps the seen class)
    assert 1.0 < result["best_penalty"] <= 10.0
    assert result["seen_acc"][best] == 1.0 and result["unseen_rate"][best] == 1.0 and result["balance"][best] == 1.0
    assert result["unseen_rate"][0] == 0.0 and result["seen_acc"][0] == 1.0     # penalty 0: nothing unseen
    assert result["penalties"][0] == 0.0                                         # no gap below 0: no boost tried
    assert result["seen_acc"][-1] == 0.0 and result["unseen_share"][-1] == 1.0   # beyond every gap: nothing seen
    assert result["unseen_share"][best] == pytest.approx(32 / 96) and result["best_at_edge"] is False


def test_held_out_calibration_selects_a_negative_penalty_without_unseen_labels():
    samples = []
    for seed in range(2):
        labels = torch.randint(0, S + U, (6, 8), generator=torch.Generator().manual_seed(seed))
        training_form = torch.where(labels >= S, torch.tensor(255), labels)   # unseen pixels ignored
        image = torch.stack([labels.float(), torch.zeros(6, 8), torch.zeros(6, 8)])
        samples.append({"image": image, "label": training_form})
    loader = torch.utils.data.DataLoader(samples, batch_size=1)
    result = held_out_calibration(GapModel(), loader, Info(), grid_size=5)
    zero = result["penalties"].index(0.0)
    assert result["seen_acc"][zero] == 0.0 and result["balance"][zero] == 0.0    # every seen pixel given to unseen
    # boosting the seen classes wins back the seen pixels and keeps the ignored ones unseen
    assert -7.0 < result["best_penalty"] <= -1.0 and result["balance"][result["best_index"]] == 1.0
    assert result["best_at_edge"] is False
    narrow = held_out_calibration(GapModel(), loader, Info(), [0.0, 2.0])
    assert narrow["best_penalty"] == 0.0 and narrow["best_at_edge"] is True


def test_images_with_unseen_lists_the_images_showing_an_unseen_class():
    from cagnet.evaluate import images_with_unseen

    labels = [torch.tensor([[0, 1], [255, 1]]), torch.tensor([[2, 0], [0, 0]]), torch.tensor([[255, 255], [1, 3]])]
    dataset = [{"label": label} for label in labels]
    assert images_with_unseen(dataset, num_seen=2) == [1, 2]
    assert images_with_unseen(dataset, num_seen=4) == []
