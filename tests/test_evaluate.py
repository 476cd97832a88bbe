"""Evaluation protocols: prediction over S+U classes only, label/prediction matching, scores."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cagnet.data import load_dataset_info, resize_labels
from cagnet.data.datasets import SegmentationDataset
from cagnet.errors import ConfigError
from cagnet.evaluate import PROTOCOLS, evaluate, predict_labels
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
