"""Contextual module: the pixel-wise contextual latent code of CaGNet.

Data flow (C = feature dim, W = branch width, 256 in the original; grid h x w)::

    h  [N, C, h, w]    ASPP output of the backbone (the semantic feature, before any sigmoid)
    sigmoid(h) -> branch1 (3x3, dilation 1) -> ReLU -> c1 [N, W, h, w]
               -> branch2 (3x3, dilation 2) -> ReLU -> c2 [N, W, h, w]   (chained: c1 -> c2 -> c3,
               -> branch3 (3x3, dilation 5) -> ReLU -> c3 [N, W, h, w]    growing receptive field)
    gates  = sigmoid(ReLU(conv3x3([c1; c2; c3])))          [N, 3, h, w]   one gate per branch
    fused  = ReLU(conv1x1([g1*c1; g2*c2; g3*c3]))          [N, C, h, w]
    mu     = conv3x3(fused)                                [N, C, h, w]
    logvar = ReLU(conv3x3(fused))                          [N, C, h, w]
    latent = mu + eps * exp(logvar / 2)  (training)   or   mu  (eval)
    real_feature = sigmoid(h + h * sigmoid(latent))        [N, C, h, w]

All convs are bias-free, padding = dilation. The KL term of the latent against N(0, I) is
averaged over the labelled pixels x channels (:func:`cagnet.losses.kl_divergence`).

The original resizes mu, logvar and the latent (bilinear) to the grid of ``h``; they
already have that grid, so that resize is the identity and is left out here.

Ablations of the module (:attr:`cagnet.models.ModelConfig.context_latent` and
``context_gates``): ``gated=False`` fixes every gate at 1 (the branches are fused as they
are: the context selector removed); :func:`generator_latent` gives the code the generator
sees in step 1 under each ``context_latent`` mode (the code itself, zero, the code permuted
across the labelled pixels, or N(0, I) noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from cagnet.data.transforms import resize_labels

CONTEXT_DILATIONS: tuple[int, ...] = (1, 2, 5)
#: What the generator sees as its latent input in step 1 (:func:`generator_latent`), by
#: :attr:`cagnet.models.ModelConfig.context_latent`; ``contextual`` is CaGNet.
CONTEXT_LATENTS: tuple[str, ...] = ("contextual", "none", "zeroed", "shuffled")


@dataclass
class ContextualLatent:
    """Output of :class:`ContextualModule` on one grid: each [N, C, h, w]."""

    latent: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def _conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Conv2d:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)


class ContextualModule(nn.Module):
    """Gated dilated branches on sigmoid(h) -> mu, logvar -> contextual latent code.

    Args:
        feature_dim: C, channels of the ASPP output and of the latent code.
        width: channels of each dilated branch (256 in the original).
        dilations: dilation of each chained branch ((1, 2, 5) in the original).
        gated: False = every gate is 1 (no context selector). The gate conv is kept, so that
            the state dict has the same keys, but is frozen (``requires_grad=False``): it is
            unused, and DistributedDataParallel needs every trainable parameter to get a gradient.
    """

    def __init__(self, feature_dim: int, width: int = 256, dilations: Sequence[int] = CONTEXT_DILATIONS,
                 gated: bool = True) -> None:
        super().__init__()
        n = len(dilations)
        self.gated = gated
        self.branches = nn.ModuleList(
            _conv(feature_dim if i == 0 else width, width, 3, d) for i, d in enumerate(dilations))
        self.branch_activation = nn.ReLU()
        self.gates = _conv(n * width, n, 3)
        # ReLU then sigmoid, in this order: gates lie in [0.5, 1)
        self.gate_activation = nn.Sequential(nn.ReLU(), nn.Sigmoid())
        self.fuse = _conv(n * width, feature_dim, 1)
        self.fuse_activation = nn.ReLU()
        self.mu = _conv(feature_dim, feature_dim, 3)
        self.logvar = _conv(feature_dim, feature_dim, 3)
        # the original keeps logvar >= 0
        self.logvar_activation = nn.ReLU()
        if not gated:
            self.gates.requires_grad_(False)

    def forward(self, semantic: torch.Tensor) -> ContextualLatent:
        """``semantic`` [N,C,h,w] (ASPP output h) -> latent, mu, logvar, each [N,C,h,w]."""
        x = torch.sigmoid(semantic)
        branch_outputs = []
        for branch in self.branches:
            x = self.branch_activation(branch(x))
            branch_outputs.append(x)
        if self.gated:
            gates = self.gate_activation(self.gates(torch.cat(branch_outputs, dim=1)))  # [N, n, h, w]
            branch_outputs = [c * gates[:, i:i + 1] for i, c in enumerate(branch_outputs)]
        fused = self.fuse_activation(self.fuse(torch.cat(branch_outputs, dim=1)))
        mu = self.mu(fused)
        logvar = self.logvar_activation(self.logvar(fused))
        return ContextualLatent(latent=reparameterize(mu, logvar, self.training), mu=mu, logvar=logvar)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, sample: bool) -> torch.Tensor:
    """``mu + eps * exp(logvar / 2)`` with eps ~ N(0, I) when ``sample``, else ``mu``."""
    if not sample:
        return mu
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def shuffle_pixels(latent: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """``latent`` [N, C, h, w] with its C-vectors at the pixels of ``mask`` [N, h, w] (bool)
    permuted among those pixels, across the whole batch; the other pixels keep theirs.

    A uniformly random permutation (``torch.randperm``: from ``generator``, a CPU generator,
    when given, else from the global stream on ``latent``'s device). The permuted code keeps
    its distribution over the masked pixels but loses its link to each pixel's context.
    """
    pixels = latent.permute(0, 2, 3, 1)                                     # [N, h, w, C] view
    count = int(mask.sum())
    if generator is None:
        order = torch.randperm(count, device=latent.device)
    else:
        order = torch.randperm(count, generator=generator).to(latent.device)
    shuffled = pixels.clone()
    shuffled[mask] = pixels[mask][order]
    return shuffled.permute(0, 3, 1, 2)


def generator_latent(mode: str, latent: torch.Tensor, mask: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The latent code [N, C, h, w] the feature generator gets with the real labels (step 1).

    Args:
        mode: one of :data:`CONTEXT_LATENTS`: ``contextual`` = ``latent`` itself (CaGNet; the
            same tensor, nothing drawn); ``zeroed`` = 0; ``shuffled`` = ``latent`` permuted across
            the pixels of ``mask`` (:func:`shuffle_pixels`); ``none`` = N(0, I) per pixel, the
            input step 2 gives the generator.
        latent: the contextual latent code [N, C, h, w] (detach it first in training).
        mask: bool [N, h, w], the labelled pixels (``shuffled`` only).
        generator: a CPU random generator for ``shuffled`` / ``none`` (None = the global stream
            on ``latent``'s device).
    """
    if mode == "contextual":
        return latent
    if mode == "zeroed":
        return torch.zeros_like(latent)
    if mode == "shuffled":
        return shuffle_pixels(latent, mask, generator)
    if mode == "none":
        if generator is None:
            return torch.randn_like(latent)
        return torch.randn(latent.shape, generator=generator, dtype=latent.dtype).to(latent.device)
    raise ValueError(f"context latent mode must be one of {', '.join(CONTEXT_LATENTS)}, got {mode!r}")


def real_feature(semantic: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """``sigmoid(h + h * sigmoid(latent))``: the latent code modulates the semantic feature h."""
    return torch.sigmoid(semantic + semantic * torch.sigmoid(latent))


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest resize of a boolean mask [N,H,W] -> [N,h,w].

    PyTorch's legacy ``mode="nearest"`` (source index ``floor(i * H / h)``), as the original
    resizes the labelled-pixel mask for the KL term.
    """
    return resize_labels(mask, size).bool()


