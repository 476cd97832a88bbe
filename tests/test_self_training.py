"""Tests of cagnet.train.self_training.self_training_labels."""
from __future__ import annotations

import pytest
import torch

from cagnet.train.self_training import self_training_labels


def _labels_loop(scores, labels, unseen, top_p, ignore_index=255):
    """Per-pixel reference: walk the ranking, take the first unseen class within top_p."""
    result = labels.clone()
    n, _, h, w = scores.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                if labels[i, y, x] != ignore_index:
                    continue
                ranking = torch.argsort(scores[i, :, y, x], descending=True)[:top_p].tolist()
                unseen_ranked = [c for c in ranking if c in set(unseen)]
                if unseen_ranked:
                    result[i, y, x] = unseen_ranked[0]
    return result


def _pixel_scores(*rankings):
    """Scores [1, K, 1, P] whose descending order at pixel p is rankings[p]."""
    num_classes = len(rankings[0])
    scores = torch.empty(1, num_classes, 1, len(rankings))
    for pixel, ranking in enumerate(rankings):
        for rank, cls in enumerate(ranking):
            scores[0, cls, 0, pixel] = float(num_classes - rank)
    return scores


def test_hand_made_pixels():
    # 6 classes, unseen 4 and 5; four ignored pixels and one labelled pixel
    scores = _pixel_scores(
        [0, 4, 5, 1, 2, 3],   # unseen 4 ranked 2nd -> 4
        [5, 0, 4, 1, 2, 3],   # unseen 5 ranked 1st -> 5
        [0, 1, 4, 5, 2, 3],   # first unseen ranked 3rd, outside top_p=2 -> stays ignored
        [1, 5, 0, 4, 2, 3],   # -> 5
        [4, 0, 1, 2, 3, 5],   # labelled pixel keeps its label
    )
    labels = torch.tensor([[[255, 255, 255, 255, 2]]])
    new = self_training_labels(scores, labels, unseen=[4, 5], top_p=2)
    assert new.tolist() == [[[4, 5, 255, 5, 2]]]
    # with every class inspected, an ignored pixel always gets the best-scored unseen class
    new = self_training_labels(scores, labels, unseen=torch.tensor([4, 5]), top_p=6)
    assert new.tolist() == [[[4, 5, 4, 5, 2]]]


def test_no_unseen_classes_changes_nothing():
    scores = torch.randn(1, 5, 2, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[[255, 1], [255, 255]]])
    assert torch.equal(self_training_labels(scores, labels, [], 3), labels)


@pytest.mark.parametrize("top_p", [1, 3, 8])
def test_matches_per_pixel_loop_on_random_input(top_p):
    generator = torch.Generator().manual_seed(top_p)
    scores = torch.randn(2, 8, 4, 5, generator=generator)
    labels = torch.randint(0, 5, (2, 4, 5), generator=generator)
    labels[torch.rand(2, 4, 5, generator=generator) < 0.6] = 255
    unseen = [5, 6]
    expected = _labels_loop(scores, labels, unseen, top_p)
    assert torch.equal(self_training_labels(scores, labels, unseen, top_p), expected)


def test_rejects_bad_arguments():
    scores, labels = torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="top_p"):
        self_training_labels(scores, labels, [3], top_p=5)
    with pytest.raises(ValueError, match="unseen"):
        self_training_labels(scores, labels, [4], top_p=2)
    with pytest.raises(ValueError, match="labels"):
        self_training_labels(scores, labels[:, :1], [3], top_p=2)
