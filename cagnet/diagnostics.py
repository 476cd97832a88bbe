"""Is the idea working? Measurements of a trained CaGNet beyond its segmentation scores.

CaGNet's claim rests on two mechanisms, and each can fail silently while the scores look
merely "low":

* **the contextual latent code** must carry information about each pixel's context. If the
  KL term wins, ``mu`` collapses to 0 everywhere and the latent code is pure noise
  (``latent_mean_std`` ~ 0, KL ~ 0); if the real feature ``sigmoid(h + h * sigmoid(z))``
  saturates, its values sit at 0 or 1 and the backbone stops learning through it
  (``saturated_fraction``);
* **the generated features** of a class must look like its real features to the classifier:
  the classifier should label generated *and* real pixels of the unseen classes right. A
  classifier that labels 90 % of generated unseen features but 5 % of real unseen pixels was
  finetuned on features that do not resemble the real ones (``generated_unseen_accuracy``
  vs ``real_unseen_accuracy``).

:func:`context_diagnostics` measures all of these on a scored split (the validation split when
choosing a recipe), in eval mode (latent = mu), on the feature grid.
"""
from __future__ import annotations

from typing import Any

import torch

from cagnet.data.datasets import DatasetInfo
from cagnet.data.transforms import IGNORE_INDEX, resize_labels

#: A real-feature value within this distance of 0 or 1 counts as saturated.
SATURATION_MARGIN = 0.01


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
        ``latent_class_share``: share of ``mu``'s variance explained by the pixel's class (between-
        class over total variance, averaged over channels; 0 = no class information);
        ``saturated_fraction``: share of real-feature values within 0.01 of 0 or 1;
        ``real_seen_accuracy`` / ``real_unseen_accuracy``: classifier accuracy (argmax over the S+U
        classes) on real pixels of seen / unseen classes;
        ``generated_seen_accuracy`` / ``generated_unseen_accuracy``: the same on generated features;
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
    correct = {"seen": 0, "unseen": 0}
    totals = {"seen": 0, "unseen": 0}
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
    results["saturated_fraction"] = saturated / max(feature_values, 1)
    results["real_seen_accuracy"] = _accuracy(correct["seen"], totals["seen"])
    results["real_unseen_accuracy"] = _accuracy(correct["unseen"], totals["unseen"])
    results.update(_generated_accuracy(model, num_seen, num_classes, generated_per_class, seed, device))
    return results


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
