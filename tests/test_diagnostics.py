"""Diagnostics of the contextual latent code and of the generated features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cagnet.data.datasets import DatasetInfo
from cagnet.diagnostics import LATENT_SOURCES, context_diagnostics, latent_source_accuracy
from cagnet.data.transforms import resize_labels
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


def _model(**overrides):
    torch.manual_seed(0)
    return build_cagnet("tiny", base_width=4, feature_dim=8, context_width=8, generator_widths=(16, 16),
                        generator_dropouts=(0.0, 0.0), discriminator_width=16, num_seen=2, num_unseen=1,
                        class_embeddings=torch.eye(3, 6), **overrides)


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
    # std(mu) / sigma: the spread of mu over the labelled pixels against the mean sigma there
    mask = resize_labels(labels, context.mu.shape[-2:]) != 255
    sigma = torch.exp(0.5 * context.logvar).permute(0, 2, 3, 1)[mask]
    assert result["latent_sigma_mean"] == pytest.approx(float(sigma.mean()), rel=1e-5)
    assert result["latent_sigma_mean"] >= 1.0
    assert result["latent_mean_std_over_sigma"] == pytest.approx(result["latent_mean_std"] / float(sigma.mean()),
                                                                 rel=1e-5)


def test_a_collapsed_latent_code_and_saturated_features_are_detected():
    model, data = _model(), _Items()
    with torch.no_grad():
        model.context.mu.weight.zero_()           # mu = 0 everywhere: the latent code carries nothing
        model.context.logvar.weight.zero_()
        for branch in model.backbone.aspp.branches:
            branch.weight.zero_()
            branch.bias.fill_(50.0)               # h = 200: sigmoid(h + h * sigmoid(z)) saturates
    result = context_diagnostics(model, data, _info(), generated_per_class=8)
    assert result["latent_mean_std"] == 0.0 and result["kl"] == 0.0 and result["latent_mean_std_over_sigma"] == 0.0
    assert result["saturated_fraction"] == 1.0


def test_a_classifier_that_only_knows_seen_classes_gets_no_unseen_pixel_right():
    model, data = _model(), _Items()
    with torch.no_grad():
        model.discriminator.cls_head.bias[2:] = -1e4     # the unseen output (and the extra one) never win
    result = context_diagnostics(model, data, _info(), generated_per_class=8)
    assert result["real_unseen_accuracy"] == 0.0 and result["generated_unseen_accuracy"] == 0.0
    assert all(result[f"generated_unseen_accuracy_{source}"] == 0.0 for source in LATENT_SOURCES)


def test_the_global_random_state_is_untouched():
    model, data = _model(), _Items()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    context_diagnostics(model, data, _info(), generated_per_class=8)
    assert torch.equal(torch.rand(3), expected)


def _batch(data):
    return torch.stack([item["image"] for item in data]), torch.stack([item["label"] for item in data])


def test_latent_source_accuracy_feeds_each_latent_input_and_leaves_the_model_as_it_was():
    model, data = _model(), _Items()
    image, labels = _batch(data)
    seen_latents = []
    generate = model.generate
    model.generate = lambda embeddings, latent: (seen_latents.append(latent), generate(embeddings, latent))[1]
    model.train()
    model.backbone.eval()
    torch.manual_seed(123)
    expected_random = torch.rand(3)
    torch.manual_seed(123)
    result = latent_source_accuracy(model, image, labels)
    assert torch.equal(torch.rand(3), expected_random)                  # the global stream is untouched
    assert model.training and not model.backbone.training and model.discriminator.training
    del model.generate
    with torch.no_grad():
        context = model.eval().extract(image, multi_scale=False)
    mask = resize_labels(labels, context.mu.shape[-2:]) != 255
    by_source = dict(zip(LATENT_SOURCES, seen_latents))
    assert list(by_source) == ["context", "sampled", "zero", "shuffled", "noise"]
    assert torch.equal(by_source["context"], context.mu) and not by_source["zero"].any()
    eps = (by_source["sampled"] - context.mu) / torch.exp(0.5 * context.logvar)
    noise = by_source["noise"]
    for draw in (eps, noise):
        assert abs(draw.mean().item()) < 0.1 and abs(draw.std().item() - 1) < 0.1
    moved, kept = by_source["shuffled"].permute(0, 2, 3, 1)[mask], context.mu.permute(0, 2, 3, 1)[mask]
    assert not torch.equal(moved, kept) and sorted(map(tuple, moved.tolist())) == sorted(map(tuple, kept.tolist()))
    assert result["num_seen_pixels"] + result["num_unseen_pixels"] == int(mask.sum())
    assert result["num_unseen_pixels"] == int((resize_labels(labels, mask.shape[-2:]) == 2).sum()) > 0
    for source in LATENT_SOURCES:
        for group in ("seen", "unseen"):
            assert 0.0 <= result[f"generated_{group}_accuracy_{source}"] <= 1.0
    assert latent_source_accuracy(model, image, labels) == result      # the same seed, the same draws


def test_a_generator_that_ignores_the_latent_scores_every_source_alike():
    model, data = _model(), _Items()
    with torch.no_grad():
        model.generator.hidden[0].weight[:, model.config.embedding_dim:] = 0   # its input's latent channels
    result = latent_source_accuracy(model, *_batch(data))
    for group in ("seen", "unseen"):   # (the untrained model's seen accuracies differ by source otherwise)
        assert len({result[f"generated_{group}_accuracy_{source}"] for source in LATENT_SOURCES}) == 1, group


def test_a_classifier_that_reads_the_latent_tells_the_sources_apart():
    """A generator that copies its latent input and a classifier that reads class 2 (unseen) from
    a positive first channel: the code of the unseen pixels -- made positive there -- gets them
    right, zero and noise do not, the shuffled codes of mostly seen pixels rarely."""
    model, data = _model(), _Items()
    image, labels = _batch(data)
    with torch.no_grad():
        context = model.eval().extract(image, multi_scale=False)
    grid_labels = resize_labels(labels, context.mu.shape[-2:])
    unseen = (grid_labels == 2)[:, None].float()
    model.generate = lambda embeddings, latent: latent
    # mu: +1 at the unseen pixels, -1 elsewhere, in channel 0
    model.extract = lambda image, multi_scale=False: type(context)(
        feature=context.feature, latent=context.mu, mu=torch.cat([2 * unseen - 1, context.mu[:, 1:]], 1),
        logvar=torch.full_like(context.logvar, -20.0), kl=context.kl, semantic=context.semantic)
    model.classify = lambda feature: torch.cat([torch.zeros_like(feature[:, :2]), 10 * feature[:, :1],
                                                torch.zeros_like(feature[:, :1])], 1)
    result = latent_source_accuracy(model, image, labels)
    assert result["generated_unseen_accuracy_context"] == 1.0 and result["generated_unseen_accuracy_sampled"] == 1.0
    assert result["generated_unseen_accuracy_zero"] == 0.0
    assert 0.3 < result["generated_unseen_accuracy_noise"] < 0.7
    assert result["generated_unseen_accuracy_shuffled"] < 0.6


def test_context_diagnostics_pool_the_latent_source_accuracies_of_the_split():
    model, data = _model(), _Items()
    whole = context_diagnostics(model, data, _info(), generated_per_class=8, batch_size=len(data))
    single = latent_source_accuracy(model, *_batch(data))
    for source in LATENT_SOURCES:
        for group in ("seen", "unseen"):
            key = f"generated_{group}_accuracy_{source}"
            assert whole[key] == single[key], key


def test_a_model_without_the_contextual_code_has_none_to_measure():
    model, data = _model(context_latent="none"), _Items()
    result = context_diagnostics(model, data, _info(), generated_per_class=8)
    assert result["kl"] == 0.0 and result["latent_mean_std"] == 0.0 and result["latent_mean_std_over_sigma"] == 0.0
    assert result["latent_sigma_mean"] == 1.0
    # its code is zero: the contextual source is the zero one
    assert result["generated_unseen_accuracy_context"] == result["generated_unseen_accuracy_zero"]
