"""Losses of the segmentation network: the pixel classification loss and the KL term of the
contextual latent code, averaged over labelled pixels (see :mod:`cagnet.losses`); the
patch-centre classification loss and accuracy of CaGNetv2's patch-wise step 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.errors import ConfigError
from cagnet.losses.common import check_mask, full_precision
from cagnet.runtime import autocast_off


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over labelled pixels.

    Args:
        logits: [N, K, H, W] raw classifier outputs.
        labels: [N, H, W] integer targets in 0..K-1, or ``ignore_index``.

    Returns:
        Scalar. Zero (with a grad_fn) when no pixel is labelled, where
        ``F.cross_entropy(reduction="mean")`` would return NaN.
    """
    if logits.dim() != labels.dim() + 1 or logits.shape[0] != labels.shape[0] \
            or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f"classification_loss: logits {tuple(logits.shape)} and labels "
                         f"{tuple(labels.shape)} are not [N, K, H, W] and [N, H, W]")
    with autocast_off(logits.device):
        summed = F.cross_entropy(full_precision(logits), labels.long(),
                                 ignore_index=ignore_index, reduction="sum")
    count = (labels != ignore_index).sum()
    return summed / count.clamp_min(1).to(summed.dtype)


def classification_accuracy(logits: torch.Tensor, labels: torch.Tensor,
                            ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Fraction of labelled pixels whose argmax over all K outputs is the label; 0 when none
    is labelled (where the original divides 0 by 0).

    Args:
        logits: [N, K, H, W]; labels: [N, H, W] (``ignore_index`` never counts).
    """
    _check_pair(logits, labels, "classification_accuracy")
    labelled = labels != ignore_index
    correct = (logits.argmax(1) == labels) & labelled
    return correct.sum().float() / labelled.sum().clamp_min(1).float()


def patch_centres(tensor: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The entries at the patch centres of the last two dimensions: rows and columns
    ``(s - 1) // 2 :: s`` (1, 4, 7, ... for s = 3), [..., H, W] -> [..., H // s, W // s].

    H and W must be multiples of the odd patch size ``s`` (a ConfigError naming the sizes
    otherwise), as the original asserts: each centre then has its whole block around it.
    """
    if patch_size < 1 or patch_size % 2 == 0:
        raise ConfigError(f"patch size must be a positive odd number (got {patch_size})")
    height, width = tensor.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ConfigError(f"patch centres: the grid {height}x{width} is not a multiple of the patch size {patch_size}")
    centre = (patch_size - 1) // 2
    return tensor[..., centre::patch_size, centre::patch_size]


def patch_centre_loss(logits: torch.Tensor, labels: torch.Tensor, patch_size: int,
                      ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy at the patch centres only (CaGNetv2's step 2 on tiled label blocks).

    With a feature map tiled by ``s x s`` label blocks, each centre's ``s x s`` receptive field
    of the patch classifier sees exactly its own generated block. ``patch_size`` 1 = the
    pixel-wise :func:`classification_loss`.

    Args:
        logits: [N, K, H, W]; labels: [N, H, W], H and W multiples of ``patch_size``.

    Returns: scalar, the mean over labelled centres (0 when none is labelled).
    """
    _check_pair(logits, labels, "patch_centre_loss")
    return classification_loss(patch_centres(logits, patch_size), patch_centres(labels, patch_size), ignore_index)


def patch_centre_accuracy(logits: torch.Tensor, labels: torch.Tensor, patch_size: int,
                          ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """:func:`classification_accuracy` at the patch centres (see :func:`patch_centre_loss`)."""
    _check_pair(logits, labels, "patch_centre_accuracy")
    return classification_accuracy(patch_centres(logits, patch_size), patch_centres(labels, patch_size),
                                   ignore_index)


def _check_pair(logits: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    if logits.dim() != labels.dim() + 1 or logits.shape[0] != labels.shape[0] \
            or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f"{where}: logits {tuple(logits.shape)} and labels "
                         f"{tuple(labels.shape)} are not [N, K, H, W] and [N, H, W]")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor,
                  labelled_mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL divergence of N(mu, exp(logvar)) from N(0, I), averaged over labelled pixels x channels.

    ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar)) / (labelled pixels * C)``; 0 when no pixel
    is labelled.

    Args:
        mu, logvar: [N, C, H, W] contextual latent mean and log-variance.
        labelled_mask: [N, H, W] bool on the same grid, True where the pixel is labelled;
            None = every pixel.

    Returns a float32 scalar (computed in full precision also under autocast).
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"kl_divergence: mu {tuple(mu.shape)} and logvar "
                         f"{tuple(logvar.shape)} differ in shape")
    with autocast_off(mu.device):
        mu, logvar = full_precision(mu), full_precision(logvar)
        if labelled_mask is None:
            return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).mean()
        check_mask(labelled_mask, mu, "kl_divergence")
        selected = labelled_mask.bool()[:, None].expand_as(mu)
        # select the inputs, not the terms: an overflow of exp() at an unlabelled pixel then
        # gives neither a NaN value nor a NaN gradient; unselected entries add 1 + 0 - 0 - 1 = 0
        zero = torch.zeros_like(mu)
        mu = torch.where(selected, mu, zero)
        logvar = torch.where(selected, logvar, zero)
        total = (1.0 + logvar - mu.pow(2) - logvar.exp()).sum()
        count = selected.sum().to(total.dtype)
        # clamp instead of an if on count: no host-device sync, same graph either way
        return -0.5 * total / count.clamp_min(1.0)
