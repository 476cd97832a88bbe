"""Self-training labels: pseudo-label ignored pixels with confidently predicted unseen classes.

For every pixel that the training label map ignores, the classifier's ``top_p`` highest-scoring
classes are inspected; the highest-ranked unseen class among them becomes the pixel's label.
If none of the ``top_p`` classes is unseen, the pixel stays ignored. Labelled pixels keep their
label. (Equivalently: the unseen class with the highest score, provided fewer than ``top_p``
classes score higher.)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from cagnet.data.transforms import IGNORE_INDEX


def self_training_labels(scores: torch.Tensor, labels: torch.Tensor,
                         unseen: Sequence[int] | torch.Tensor, top_p: int,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Training labels with ignored pixels filled by top-``top_p`` unseen predictions.

    Args:
        scores: [N, K, H, W] classifier logits (any monotone score works: only ranks matter).
        labels: [N, H, W] training labels; ``ignore_index`` marks ignored pixels.
        unseen: indices of the unseen classes in the classifier's output space (for VOC with
            21 outputs: 15..19; the extra output 20 is not a class and is never assigned).
        top_p: how many of the highest-scoring classes to inspect, 1 <= top_p <= K.
        ignore_index: label value of ignored pixels.

    Returns:
        LongTensor [N, H, W] on the device of ``labels``. Ties between equal scores follow
        ``torch.topk``'s order.
    """
    if scores.dim() != 4 or labels.shape != (scores.shape[0], *scores.shape[2:]):
        raise ValueError(f"self_training_labels: scores {tuple(scores.shape)} and labels "
                         f"{tuple(labels.shape)} are not [N, K, H, W] and [N, H, W]")
    num_classes = scores.shape[1]
    if not 1 <= top_p <= num_classes:
        raise ValueError(f"self_training_labels: top_p={top_p} is outside 1..{num_classes}")
    unseen = torch.as_tensor(unseen, dtype=torch.long, device=scores.device).reshape(-1)
    if unseen.numel() and (unseen.min() < 0 or unseen.max() >= num_classes):
        raise ValueError(f"self_training_labels: unseen indices {unseen.tolist()} are outside "
                         f"0..{num_classes - 1}")

    ranked = scores.topk(top_p, dim=1).indices                        # [N, top_p, H, W]
    is_unseen = torch.isin(ranked, unseen)
    # argmax returns the first maximum, i.e. the highest-ranked unseen class
    first_unseen = is_unseen.to(torch.uint8).argmax(dim=1, keepdim=True)
    candidate = ranked.gather(1, first_unseen).squeeze(1)            # [N, H, W]
    fill = (labels == ignore_index) & is_unseen.any(dim=1).to(labels.device)
    return torch.where(fill, candidate.to(labels.device), labels.long())
