"""What every loss shares: float32 computation under autocast, masks of labelled pixels, and a
zero that keeps the graph when nothing is labelled (see :mod:`cagnet.losses`)."""
from __future__ import annotations

import torch


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 unless it already has at least float32 precision."""
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor
    return tensor.float()


def zero_with_grad(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero (float32 or wider) depending on ``tensors``: has a grad_fn if one requires grad."""
    total = sum(full_precision(t).sum() for t in tensors)
    return total * 0.0


def check_mask(mask: torch.Tensor, values: torch.Tensor, name: str) -> None:
    expected = (values.shape[0], *values.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"{name}: mask shape {tuple(mask.shape)} does not match "
                         f"[N, H, W] = {list(expected)} of values {tuple(values.shape)}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` [N, C, H, W] over the pixels where ``mask`` [N, H, W] is True and all C.

    An empty mask gives a zero with a grad_fn instead of NaN.
    """
    if mask is None:
        return values.mean()
    check_mask(mask, values, "masked mean")
    weight = mask.to(values.dtype).unsqueeze(1)
    count = weight.sum() * values.shape[1]
    # clamp: an empty mask gives 0 / 1 = 0 (not 0 / 0), without a host-device sync
    return (values * weight).sum() / count.clamp_min(1.0)
