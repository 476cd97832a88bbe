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

Patch classifier (CaGNetv2, ``patch_size=3``): the classification branch gets a 3x3 conv
between the shared layer and ``cls_head``::

      patch_conv: 3x3 conv D -> D, padding 1, bias, no activation   (the original's ``cls_3``)
      cls_head:   1x1 conv D -> S + U + 1

so each position's logits see the shared representation of its 3x3 neighbourhood. The
padding keeps the spatial size: the head runs on a feature map of any size, exactly as the
pixel-wise one (real features at every position in step 1, self-training and test time). The
GAN head stays 1x1 on the shared output. With ``patch_size=1`` there is no ``patch_conv`` and
the module (and its state dict) is the pixel-wise discriminator.

A 3x3 head mixes neighbouring positions, so callers must not pack the pixels of several
feature maps into one map for a single call (which is fine for the pixel-wise head, see
:attr:`Discriminator.pixelwise`): each map, or a batch of maps of one size, gets its own pass.
``forward`` also takes a list of such batches and runs one pass per entry, so that a training
step still makes ONE call of a DistributedDataParallel-wrapped discriminator per backward
(:func:`cagnet.train.steps.discriminate`).
"""
from __future__ import annotations

import torch
from torch import nn

from cagnet.errors import ConfigError

#: Patch sizes of the classifier: 1 = CaGNet's pixel-wise head, 3 = CaGNetv2's 3x3 patch head
#: (the only patch size the original implements in its model).
PATCH_SIZES: tuple[int, ...] = (1, 3)


class Discriminator(nn.Module):
    """Shared 1x1 layer + GAN head + classification head (1x1, or 3x3 + 1x1 for patches).

    Args:
        feature_dim: C.
        hidden_dim: D, width of the shared layer.
        num_outputs: classifier outputs, S + U + 1.
        dropout: dropout after the shared layer.
        patch_size: 1 (pixel-wise classifier) or 3 (patch classifier with ``patch_conv``).
    """

    def __init__(self, feature_dim: int, hidden_dim: int = 1024, num_outputs: int = 21, dropout: float = 0.5,
                 patch_size: int = 1) -> None:
        super().__init__()
        if patch_size not in PATCH_SIZES:
            raise ConfigError(f"discriminator: patch size must be one of {', '.join(map(str, PATCH_SIZES))} "
                              f"(got {patch_size!r})")
        self.patch_size = patch_size
        self.shared = nn.Conv2d(feature_dim, hidden_dim, 1)
        self.shared_activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.gan_head = nn.Conv2d(hidden_dim, 1, 1)
        if patch_size > 1:
            # registered before cls_head: the state dict then follows the data flow
            self.patch_conv = nn.Conv2d(hidden_dim, hidden_dim, patch_size, padding=(patch_size - 1) // 2)
        self.cls_head = nn.Conv2d(hidden_dim, num_outputs, 1)

    @property
    def pixelwise(self) -> bool:
        """True when every output depends on its own position only (``patch_size == 1``): the
        pixels of several maps may then share one call in any arrangement."""
        return self.patch_size == 1

    def hidden(self, feature: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> shared representation [N, D, h, w]."""
        return self.dropout(self.shared_activation(self.shared(feature)))

    def _class_logits(self, shared: torch.Tensor) -> torch.Tensor:
        """Classification branch on the shared representation [N, D, h, w] -> [N, S+U+1, h, w]."""
        if self.patch_size > 1:
            shared = self.patch_conv(shared)
        return self.cls_head(shared)

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        """Class logits [N, S+U+1, h, w] (same h x w as the input, also with the patch head)."""
        return self._class_logits(self.hidden(feature))

    def gan_score(self, feature: torch.Tensor) -> torch.Tensor:
        """Probability that each pixel feature is real, [N, 1, h, w]."""
        return torch.sigmoid(self.gan_head(self.hidden(feature)))

    def forward(self, feature: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
        """(gan score [N,1,h,w], class logits [N,S+U+1,h,w]) from one shared pass.

        A list (or tuple) of feature maps ``[N_k, C, h_k, w_k]`` gives the list of their
        (score, logits) pairs, one pass per map (in order, so dropout masks are drawn map by
        map): a single call for several maps of different sizes, which a patch head cannot
        see packed into one map.
        """
        if isinstance(feature, (list, tuple)):
            return [self.forward(f) for f in feature]
        shared = self.hidden(feature)
        return torch.sigmoid(self.gan_head(shared)), self._class_logits(shared)

    @torch.no_grad()
    def init_patch_conv_as_identity(self) -> None:
        """Set ``patch_conv`` to the identity: centre tap = identity matrix, other taps and bias 0.

        The patch classifier then computes exactly what the pixel-wise classifier with the same
        ``shared`` / ``cls_head`` weights computes (at every position, any map size), so a
        pixel-wise checkpoint starts a patch-wise finetuning from its own predictions and the
        off-centre taps learn from there. No-op for a pixel-wise discriminator.
        """
        if self.patch_size == 1:
            return
        weight = self.patch_conv.weight                      # [D, D, k, k]
        centre = (self.patch_size - 1) // 2
        weight.zero_()
        weight[:, :, centre, centre].copy_(torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device))
        self.patch_conv.bias.zero_()
