"""Feature generator: word embedding + contextual latent code -> fake pixel feature.

A per-pixel MLP written as 1x1 convs, so it maps a whole grid at once::

    input  [N, E + C, h, w]   word embedding of the pixel's class (E) ; latent code (C)
      hidden_i: 1x1 conv -> LeakyReLU(0.2) -> Dropout(p_i)
                widths 1024, 960, 864, 784, 720, dropout 0.1, 0.1, 0.3, 0.5, 0.5 (original)
      output: 1x1 conv -> C, sigmoid
    fake feature [N, C, h, w] in (0, 1), comparable with the real feature of the backbone

In step 1 the latent code comes from the contextual module (real images, seen classes); in
step 2 it is drawn from N(0, I) and the labels include unseen classes. Whether the input is
detached from the backbone is the training loop's choice.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

GENERATOR_WIDTHS: tuple[int, ...] = (1024, 960, 864, 784, 720)
GENERATOR_DROPOUTS: tuple[float, ...] = (0.1, 0.1, 0.3, 0.5, 0.5)


class FeatureGenerator(nn.Module):
    """Per-pixel MLP generator.

    Args:
        input_dim: E + C (1200 in the original: 600-d embedding + 600-d latent).
        output_dim: C, the feature dim.
        widths, dropouts: hidden widths and their dropout rates (same length).
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, input_dim: int, output_dim: int, widths: Sequence[int] = GENERATOR_WIDTHS,
                 dropouts: Sequence[float] = GENERATOR_DROPOUTS, negative_slope: float = 0.2) -> None:
        super().__init__()
        if len(widths) != len(dropouts):
            raise ValueError(f"generator widths {tuple(widths)} and dropouts {tuple(dropouts)} differ in length")
        dims = [input_dim, *widths]
        self.hidden = nn.ModuleList(nn.Conv2d(i, o, 1) for i, o in zip(dims[:-1], dims[1:]))
        self.activation = nn.LeakyReLU(negative_slope)
        self.dropouts = nn.ModuleList(nn.Dropout(p) for p in dropouts)
        self.output = nn.Conv2d(dims[-1], output_dim, 1)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        """``condition`` [N, E + C, h, w] -> fake feature [N, C, h, w]."""
        x = condition
        for conv, dropout in zip(self.hidden, self.dropouts):
            x = dropout(self.activation(conv(x)))
        return torch.sigmoid(self.output(x))
