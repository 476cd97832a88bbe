"""Is the idea working? Measurements of a trained CaGNet beyond its segmentation scores.

CaGNet's claim rests on two mechanisms, and each can fail silently while the scores look
merely "low":

* **the contextual latent code** must carry information about each pixel's context. If the
  KL term wins, ``mu`` collapses to 0 everywhere and the latent code is pure noise
  (``latent_mean_std`` ~ 0, KL ~ 0); if ``mu`` varies far less over the pixels than the noise
  ``sigma * eps`` drawn around it (``latent_mean_std_over_sigma`` << 1), the code the
  generator sees in step 1 is mostly noise, close to step 2's N(0, I); if the real feature
  ``sigmoid(h + h * sigmoid(z))`` saturates, its values sit at 0 or 1 and the backbone stops learning through it
  (``saturated_fraction``);
* **the generated features** of a class must look like its real features to the classifier:
  the classifier should label generated *and* real pixels of the unseen classes right. A
  classifier that labels 90 % of generated unseen features but 5 % of real unseen pixels was
  finetuned on features that do not resemble the real ones (``generated_unseen_accuracy``
  vs ``real_unseen_accuracy``).

:func:`context_diagnostics` measures all of these on a scored split (the validation split when
choosing a recipe), in eval mode (latent = mu), on the feature grid.

Does the generator use the code? :func:`latent_source_accuracy` generates the features of the
labelled pixels of a real batch from their class embeddings and one of several latent inputs
(:data:`LATENT_SOURCES`: the pixel's own contextual code, zero, the codes permuted across the
pixels, N(0, I) noise as in step 2) and scores each with the classifier: if the accuracies do
not differ, the features do not depend on the code (``context_diagnostics`` reports the same
accuracies over a whole split).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from cagnet.data.datasets import DatasetInfo
from cagnet.data.transforms import IGNORE_INDEX, resize_labels
from cagnet.models.contextual import generator_latent

#: A real-feature value within this distance of 0 or 1 counts as saturated.
SATURATION_MARGIN = 0.01

#: Latent inputs of the generator in :func:`latent_source_accuracy` (result-key suffix -> what
#: it is): the eval-mode code mu of each pixel; mu plus the step-1 noise ``sigma * eps``; zero;
#: mu permuted across the labelled pixels of the batch; N(0, I) per pixel (step 2's input).
LATENT_SOURCES: dict[str, str] = {
    "context": "the pixel's contextual code mu (eval mode)",
    "sampled": "mu + exp(logvar / 2) * eps, the code step 1 feeds",
    "zero": "a zero code",
    "shuffled": "mu permuted across the labelled pixels of the batch",
    "noise": "N(0, I) noise per pixel, as step 2",
}


def _accuracy(correct: int, total: int) -> float:
    return correct / total if total else float("nan")


@torch.no_grad()
def context_diagnostics(model: torch.nn.Module, dataset, info: DatasetInfo, *, limit: int | None = None,
                        batch_size: int = 16, generated_per_class: int = 256, seed: int = 0,
                        device: torch.device | str | None = None) -> dict[str, Any]:
    """Contextual-latent and feature-generation diagnostics of a :class:`~cagnet.models.CaGNet`.

    Args:
        model: the model (its device is used unless ``device`` is given); put in eval mode and
            left there.
        dataset: a scored split (items ``{"image": [3,H,W], "label": [H,W]}`` with evaluation
            labels: seen 0..S-1, unseen S..S+U-1, 255 ignored), e.g.
            :func:`cagnet.train.loading.evaluation_dataset`.
        info: the dataset's classes.
        limit: first N images only.
        generated_per_class: generated pixel features per class (latent ~ N(0, I)).
        seed: the latent noise of the generated features (a private random stream: the global one is
            not touched).

    Returns a dict of floats:
        ``kl``: the KL term (mean over labelled pixels x channels, as the training loss);
        ``latent_mean_std``: standard deviation of ``mu`` over the labelled pixels, averaged over
        channels (~0: the latent code ignores the image);
        ``latent_sigma_mean``: ``sigma = exp(logvar / 2)`` averaged over labelled pixels x channels
        (>= 1: the module's logvar is non-negative);
        ``latent_mean_std_over_sigma``: ``latent_mean_std / latent_sigma_mean``, i.e.
        ``mean_c std_p(mu[p, c]) / mean_{p, c} sigma[p, c]`` over the labelled pixels p and the
        channels c (std over pixels without Bessel's correction): the spread of the step-1 code
        ``z = mu + sigma * eps`` that follows the pixel's context, relative to the noise drawn
        around it (<< 1: z is mostly noise; 0 without a contextual code);
        ``latent_class_share``: share of ``mu``'s variance explained by the pixel's class (between-
        class over total variance, averaged over channels; 0 = no class information);
        ``saturated_fraction``: share of real-feature values within 0.01 of 0 or 1;
        ``real_seen_accuracy`` / ``real_unseen_accuracy``: classifier accuracy (argmax over the S+U
        classes) on real pixels of seen / unseen classes;
        ``generated_seen_accuracy`` / ``generated_unseen_accuracy``: the same on generated features;
        ``generated_seen_accuracy_<source>`` / ``generated_unseen_accuracy_<source>`` for each
        source of :data:`LATENT_SOURCES`: the same on features generated at the labelled pixels
        of the split from their class and that latent input (:func:`latent_source_accuracy`,
        pooled over the batches of ``batch_size`` images; the noise, the ``sampled`` code's eps
        and the permutations come from the private stream of ``seed``);
        ``num_pixels``: labelled pixels measured.
    """
    from cagnet.evaluate import _model_device

    device = _model_device(model, device)
    model.to(device).eval()
    num_seen, num_classes = info.num_seen, info.num_seen + info.num_unseen
    count = len(dataset) if limit is None else min(limit, len(dataset))
    kl_sum = 0.0
    mus, classes = [], []
    saturated = feature_values = 0
    sigma_sum = 0.0
    correct = {"seen": 0, "unseen": 0}
    totals = {"seen": 0, "unseen": 0}
    source_counts: dict[str, int] = {}
    rng = torch.Generator(device="cpu").manual_seed(seed)
    for start in range(0, count, batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, count))]
        image = torch.stack([s["image"] for s in samples]).to(device)
        labels = torch.stack([s["label"] for s in samples]).to(device)
        context = model.extract(image, multi_scale=False)
        grid_labels = resize_labels(labels, context.mu.shape[-2:])
        labelled = grid_labels != IGNORE_INDEX
        mu = context.mu.float().permute(0, 2, 3, 1)[labelled]              # [P, C]
        logvar = context.logvar.float().permute(0, 2, 3, 1)[labelled]
        kl_sum += float((-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum())
        sigma_sum += float((0.5 * logvar).exp().sum())
        mus.append(mu.cpu())
        classes.append(grid_labels[labelled].cpu())
        feature = context.feature.float()
        saturated += int(((feature < SATURATION_MARGIN) | (feature > 1 - SATURATION_MARGIN)).sum())
        feature_values += feature.numel()
        predicted = model.classify(context.feature)[:, :num_classes].argmax(1)[labelled]
        target = grid_labels[labelled]
        for name, members in (("seen", target < num_seen), ("unseen", target >= num_seen)):
            correct[name] += int((predicted[members] == target[members]).sum())
            totals[name] += int(members.sum())
        for key, value in _latent_source_hits(model, context, grid_labels, num_seen, num_classes, rng).items():
            source_counts[key] = source_counts.get(key, 0) + value

    mu_all = torch.cat(mus) if mus else torch.zeros(0, 1)
    class_all = torch.cat(classes) if classes else torch.zeros(0, dtype=torch.long)
    pixels = mu_all.shape[0]
    results: dict[str, Any] = {"num_pixels": pixels}
    results["kl"] = kl_sum / max(pixels * mu_all.shape[1], 1)
    if pixels > 1:
        total_variance = mu_all.var(dim=0, unbiased=False)                          # [C]
        means = torch.zeros(num_classes, mu_all.shape[1]).index_add_(0, class_all, mu_all)
        counts = torch.bincount(class_all, minlength=num_classes).clamp_min(1).float()[:, None]
        between = ((means / counts - mu_all.mean(0)) ** 2 * torch.bincount(class_all, minlength=num_classes)[:, None]
                   ).sum(0) / pixels
        results["latent_mean_std"] = float(total_variance.sqrt().mean())
        results["latent_class_share"] = float((between / total_variance.clamp_min(1e-12)).mean())
    else:
        results["latent_mean_std"] = results["latent_class_share"] = float("nan")
    results["latent_sigma_mean"] = sigma_sum / max(pixels * mu_all.shape[1], 1) if pixels else float("nan")
    results["latent_mean_std_over_sigma"] = results["latent_mean_std"] / results["latent_sigma_mean"]
    results["saturated_fraction"] = saturated / max(feature_values, 1)
    results["real_seen_accuracy"] = _accuracy(correct["seen"], totals["seen"])
    results["real_unseen_accuracy"] = _accuracy(correct["unseen"], totals["unseen"])
    results.update(_generated_accuracy(model, num_seen, num_classes, generated_per_class, seed, device))
    results.update(_source_accuracies(source_counts))
    return results


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block; every submodule's own mode restored after it."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _source_latent(source: str, context, labelled: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """The generator's latent input [N, C, h, w] of one :data:`LATENT_SOURCES` entry."""
    mu = context.mu
    if source == "context":
        return mu
    if source == "sampled":
        eps = torch.randn(mu.shape, generator=rng, dtype=mu.dtype).to(mu.device)
        return mu + eps * torch.exp(0.5 * context.logvar)
    mode = {"zero": "zeroed", "shuffled": "shuffled", "noise": "none"}[source]
    return generator_latent(mode, mu, labelled, rng)


def _latent_source_hits(model: torch.nn.Module, context, grid_labels: torch.Tensor, num_seen: int,
                        num_classes: int, rng: torch.Generator) -> dict[str, int]:
    """Correct classifications of features generated at the labelled pixels of ``grid_labels``
    [N, h, w] (evaluation labels on the grid of ``context``) for each latent source:
    ``{"<group>_<source>": correct, "<group>_total": pixels}``, group = seen / unseen."""
    from cagnet.train.steps import generator_embeddings

    labelled = grid_labels != IGNORE_INDEX
    # every labelled pixel gets its class's word embedding, an ignored one a zero row
    embeddings = generator_embeddings(model, grid_labels, "word")
    target = grid_labels[labelled]
    groups = {"seen": target < num_seen, "unseen": target >= num_seen}
    counts = {f"{group}_total": int(members.sum()) for group, members in groups.items()}
    for source in LATENT_SOURCES:
        fake = model.generate(embeddings, _source_latent(source, context, labelled, rng))
        predicted = model.classify(fake)[:, :num_classes].argmax(1)[labelled]
        for group, members in groups.items():
            counts[f"{group}_{source}"] = int((predicted[members] == target[members]).sum())
    return counts


def _source_accuracies(counts: dict[str, int]) -> dict[str, float]:
    """``generated_<group>_accuracy_<source>`` from the counts of :func:`_latent_source_hits`."""
    return {f"generated_{group}_accuracy_{source}": _accuracy(counts.get(f"{group}_{source}", 0),
                                                              counts.get(f"{group}_total", 0))
            for group in ("seen", "unseen") for source in LATENT_SOURCES}


@torch.no_grad()
def latent_source_accuracy(model: torch.nn.Module, image: torch.Tensor, labels: torch.Tensor, *,
                           seed: int = 0) -> dict[str, float]:
    """Does the generator use the contextual code? Classifier accuracy on features generated
    from real label layouts with each latent input of :data:`LATENT_SOURCES`.

    The batch runs through the model in eval mode (full scale only; latent = mu), the labels
    are nearest-resized to the feature grid, and at every labelled pixel the generator gets
    ``[word embedding of the pixel's class ; latent]`` (an ignored pixel: a zero embedding, so
    that a patch classifier's neighbourhood holds generated features too); the classifier's
    argmax over the S + U classes is scored at the labelled pixels, per group (seen, unseen).
    ``shuffled`` permutes the codes across all labelled pixels of the batch (seen and unseen),
    so an unseen pixel gets the code of a random labelled pixel.

    Args:
        model: a :class:`~cagnet.models.CaGNet`; its modes are restored afterwards, its weights
            untouched.
        image: [N, 3, H, W] normalised images.
        labels: [N, H, W] (or on the feature grid) evaluation labels: seen 0..S-1, unseen
            S..S+U-1, 255 ignored.
        seed: the private random stream of the noise, the ``sampled`` eps and the permutation
            (the global one is not touched).

    Returns:
        ``generated_unseen_accuracy_<source>`` and ``generated_seen_accuracy_<source>`` for each
        source (NaN when the batch has no pixel of the group), ``num_unseen_pixels``,
        ``num_seen_pixels``.
    """
    device = next(model.parameters()).device
    num_seen = model.config.num_seen
    with _eval_mode(model):
        context = model.extract(image.to(device), multi_scale=False)
        grid_labels = resize_labels(labels.to(device), context.mu.shape[-2:])
        rng = torch.Generator(device="cpu").manual_seed(seed)
        counts = _latent_source_hits(model, context, grid_labels, num_seen, model.config.num_classes, rng)
    return {**_source_accuracies(counts), "num_unseen_pixels": counts["unseen_total"],
            "num_seen_pixels": counts["seen_total"]}


def _generated_accuracy(model: torch.nn.Module, num_seen: int, num_classes: int, per_class: int, seed: int,
                        device: torch.device) -> dict[str, float]:
    """Classifier accuracy on generated features of every class (latent ~ N(0, I), eval mode).

    Pixel-wise classifier: ``per_class`` generated pixels per class, side by side in one
    ``[1, C, 1, K * n]`` row. Patch classifier (``patch_size`` s > 1, whose 3x3 conv would mix
    neighbours of that row): ``per_class`` uniform s x s blocks per class, one noise vector per
    block as in patch-wise step 2, each block its own map ``[K * n, C, s, s]``, scored at its
    centre (whose receptive field is exactly the block).
    """
    rng = torch.Generator(device="cpu").manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)                 # [K * n]
    patch_size = getattr(model.config, "patch_size", 1)
    if patch_size == 1:
        latent = torch.randn(1, model.config.feature_dim, 1, labels.numel(), generator=rng).to(device)
        embeddings = model.embed_labels(labels.view(1, 1, -1).to(device), "all")    # [1, E, 1, K * n]
        fake = model.generate(embeddings, latent)
        predicted = model.classify(fake)[0, :num_classes, 0].argmax(0).cpu()
    else:
        count, centre = labels.numel(), (patch_size - 1) // 2
        latent = torch.randn(count, model.config.feature_dim, 1, 1, generator=rng).to(device)
        latent = latent.expand(-1, -1, patch_size, patch_size)                      # one vector per block
        blocks = labels.view(-1, 1, 1).expand(-1, patch_size, patch_size).to(device)
        fake = model.generate(model.embed_labels(blocks, "all"), latent)            # [K * n, C, s, s]
        predicted = model.classify(fake)[:, :num_classes, centre, centre].argmax(1).cpu()
    hits = predicted == labels
    return {"generated_seen_accuracy": float(hits[labels < num_seen].float().mean()),
            "generated_unseen_accuracy": float(hits[labels >= num_seen].float().mean())
            if num_classes > num_seen else float("nan")}
