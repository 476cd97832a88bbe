"""Discriminator / classifier on pixel features (real or generated).

One shared per-pixel layer feeds two heads::

    feature [N, C, h, w]
      shared:   1x1 conv C -> D (1024 in the original) -> ReLU -> Dropout(0.5)
      gan_head: 1x1 conv D -> 1, sigmoid      -> real/fake score [N, 1, h, w]
      cls_head: 1x1 conv D -> S + U + 1       -> class logits   [N, S+U+1, h, w]

The classifier has one output more than there are classes (S seen + U unseen); that last
output is never a target. At test time it is the segmentation classifier on real features.
Each head call runs the shared layer itself, so in training each call draws its own
dropout mask, as in the original.
"""
from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """Shared 1x1 layer + GAN head + classification head.

    Args:
        feature_dim: C.
        hidden_dim: D, width of the shared layer.
        num_outputs: classifier outputs, S + U + 1.
        dropout: dropout after the shared layer.
    """

    def __init__(self, feature_dim: int, hidden_dim: int = 1024, num_outputs: int = 21, dropout: float = 0.5) -> None:
        super().__init__()
        self.shared = nn.Conv2d(feature_dim, hidden_dim, 1)
        self.shared_activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.gan_head = nn.Conv2d(hidden_dim, 1, 1)
        self.cls_head = nn.Conv2d(hidden_dim, num_outputs, 1)

    def hidden(self, feature: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> shared representation [N, D, h, w]."""
        return self.dropout(self.shared_activation(self.shared(feature)))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        """Class logits [N, S+U+1, h, w]."""
        return self.cls_head(self.hidden(feature))

    def gan_score(self, feature: torch.Tensor) -> torch.Tensor:
        """Probability that each pixel feature is real, [N, 1, h, w]."""
        return torch.sigmoid(self.gan_head(self.hidden(feature)))

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gan score [N,1,h,w], class logits [N,S+U+1,h,w]) from one shared pass."""
        shared = self.hidden(feature)
        return torch.sigmoid(self.gan_head(shared)), self.cls_head(shared)
