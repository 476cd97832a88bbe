"""Diagnostics of the contextual latent code and of the generated features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cagnet.data.datasets import DatasetInfo
from cagnet.diagnostics import context_diagnostics
from cagnet.models import build_cagnet

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class _Items:
    """A tiny scored split: random images, labels with seen (0, 1) and unseen (2) pixels and 255."""

    def __init__(self, count=3, size=48):
        generator = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(count):
            label = torch.randint(0, 3, (size, size), generator=generator)
            label[:4] = 255
            self.items.append({"image": 50 * torch.randn(3, size, size, generator=generator), "label": label})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _model():
    torch.manual_seed(0)
    return build_cagnet("tiny", base_width=4, feature_dim=8, context_width=8, generator_widths=(16, 16),
                        generator_dropouts=(0.0, 0.0), discriminator_width=16, num_seen=2, num_unseen=1,
                        class_embeddings=torch.eye(3, 6))


def _info():
    return DatasetInfo(root=None, name="tiny", class_names=["a", "b", "c"], seen=np.array([0, 1]), unseen=np.array([2]))


def test_values_and_ranges():
    model, data = _model(), _Items()
    result = context_diagnostics(model, data, _info(), generated_per_class=8)
    assert not model.training
    assert result["num_pixels"] > 0
    for key in ("saturated_fraction", "real_seen_accuracy", "real_unseen_accuracy", "generated_seen_accuracy",
                "generated_unseen_accuracy", "latent_class_share"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["kl"] >= 0 and result["latent_mean_std"] > 0
    # the KL is the training loss's, on the labelled pixels of the feature grid
    with torch.no_grad():
        images = torch.stack([item["image"] for item in data])
        labels = torch.stack([item["label"] for item in data])
        context = model.extract(images, labels != 255, multi_scale=False)
    assert result["kl"] == pytest.approx(float(context.kl), rel=1e-4)


def test_a_collapsed_latent_code_and_saturated_features_are_detected():
    model, data = _model(), _Items()
    with torch.no_grad():
        model.context.mu.weight.zero_()           # mu = 0 everywhere: the latent code carries nothing
        model.context.logvar.weight.zero_()
        for branch in model.backbone.aspp.branches:
            branch.weight.zero_()
            branch.bias.fill_(50.0)               # h = 200: sigmoid(h + h * sigmoid(z)) saturates
    result = context_diagnostics(model, data, _info(), generated_per_class=8)
    assert result["latent_mean_std"] == 0.0 and result["kl"] == 0.0
    assert result["saturated_fraction"] == 1.0


def test_a_classifier_that_only_knows_seen_classes_gets_no_unseen_pixel_right():
    model, data = _model(), _Items()
    with torch.no_grad():
        model.discriminator.cls_head.bias[2:] = -1e4     # the unseen output (and the extra one) never win
    result = context_diagnostics(model, data, _info(), generated_per_class=8)
    assert result["real_unseen_accuracy"] == 0.0 and result["generated_unseen_accuracy"] == 0.0


def test_the_global_random_state_is_untouched():
    model, data = _model(), _Items()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    context_diagnostics(model, data, _info(), generated_per_class=8)
    assert torch.equal(torch.rand(3), expected)
