"""The label-block PixelCNN of CaGNetv2: an autoregressive model of small label blocks.

CaGNetv2 fills step 2 with 3x3 label blocks that contain unseen classes. They come from this
network, trained on the seen-class blocks of the training label maps
(:func:`cagnet.data.blocks.cut_blocks`) and sampled position by position in raster order
(row by row, left to right). As the original builds it (K = label count, S + U; E = word
embedding dim, 600; W = width, 64)::

    labels [B, s, s]  --frozen word-embedding table [K, E] (seen classes first)-->  [B, E, s, s]
      layer 1:     masked 7x7 conv E -> W, mask A (earlier positions only), no bias; BN; ReLU; + h @ b_1
      layers 2..8: masked 7x7 conv W -> W, mask B (earlier positions and itself);    BN; ReLU; + h @ b_i
                   dropout 0.5 after layers 7 and 8 (after their condition term)
      output:      1x1 conv W -> K
    logits [B, K, s, s]: at each position, its label given the labels before it (and h)

``h`` is the condition: a word embedding per position ``[B, s, s, E]`` or per block
``[B, E]``; ``b_i`` [E, W] projects it onto layer i's channels. Padding 3 keeps the block size;
mask A on the first layer keeps each position's own label out of its logits, mask B after it
passes that causality on, so the logits at a position depend on the labels strictly before it.

Forms of the condition (``forward(labels, condition)``):

* ``condition=None``: unconditioned (no condition term and, as in the original, no dropout);
* a class per block ``[B]`` (long): that class's embedding on every position. This is how the
  original samples (the unseen class u of the block), and the project's default training form
  (:func:`block_condition_classes`: the block's most frequent labelled class), so training and
  sampling see the same kind of condition;
* a class per position ``[B, s, s]`` (long): the original trains with the block's own labels
  here. That condition tells each position its own label (the answer the masks hide) and
  differs from what sampling gives; it is kept for equivalence with the original only.

Departures from the original, as options: the ``b_i`` are initialised (``condition_init``;
the original creates them with ``torch.Tensor(600, 64)``, uninitialised memory); masking
multiplies the weight inside the forward instead of overwriting the stored weight in place
(same outputs; the masked-out taps simply never matter). :func:`cagnet.models.convert.load_original_pixelcnn`
reads the original's state dicts (``conv<i>.0.weight``, ``conv<i>.1.*``, ``conv9.*``, ``b<i>``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cagnet.data.blocks import check_label_blocks
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.errors import ConfigError, DatasetError

#: ``condition_init`` options: ``linear`` = nn.Linear's default (uniform in +-1/sqrt(E)), so
#: the condition term starts at the scale of a fresh linear layer; ``zeros`` = the network
#: starts as its unconditioned form and learns the condition from there.
CONDITION_INITS: tuple[str, ...] = ("linear", "zeros")


def causal_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """The [k, k] float mask of a masked convolution (1 = tap used).

    Rows below the centre are 0; in the centre row the taps right of the centre are 0, and with
    type ``A`` the centre too (the position's own input is hidden), with ``B`` the centre is kept.
    """
    if mask_type not in ("A", "B"):
        raise ConfigError(f"masked convolution: mask type must be 'A' or 'B' (got {mask_type!r})")
    mask = torch.ones(kernel_size, kernel_size)
    centre = kernel_size // 2
    mask[centre, centre + (mask_type == "B"):] = 0
    mask[centre + 1:] = 0
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution that only sees earlier raster positions (PixelCNN mask ``A`` or ``B``).

    The mask ``[k, k]`` is a non-persistent buffer (a function of the type, not saved);
    ``weight`` keeps its values and the forward uses ``weight * mask``.
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(kernel_size, mask_type), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class PixelCNNLayer(nn.Module):
    """Masked conv (no bias) -> BN -> ReLU, plus the projection of the condition ``h @ b``."""

    def __init__(self, mask_type: str, in_channels: int, width: int, kernel_size: int, condition_dim: int | None):
        super().__init__()
        self.conv = MaskedConv2d(mask_type, in_channels, width, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(width)
        self.activation = nn.ReLU()
        # b [E, W], the original's b_i (h @ b, not a Linear's h @ W^T: same orientation as the file)
        self.condition_weight = nn.Parameter(torch.empty(condition_dim, width)) if condition_dim else None

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C_in, s, s]; condition [B, E] (per block) or [B, s, s, E] (per position)."""
        out = self.activation(self.norm(self.conv(x)))
        if condition is not None:
            term = condition @ self.condition_weight                     # [B, W] or [B, s, s, W]
            out = out + (term[:, :, None, None] if term.dim() == 2 else term.permute(0, 3, 1, 2))
        return out


class LabelBlockPixelCNN(nn.Module):
    """The label-block PixelCNN (see the module docstring).

    Args:
        num_labels: K, the label count (S + U; 20 for VOC) = rows of the embedding table.
        embedding_dim: E (600 in the original).
        width: W, channels of the masked layers (64).
        num_layers: masked layers (8); the first has mask A, the others mask B.
        kernel_size: side of the masked convolutions (7).
        conditioned: with the condition projections ``b_i`` (the original's ``condition=True``).
        dropout: rate after the last two layers in the conditioned form (0.5).
        condition_init: how to initialise the ``b_i``, one of :data:`CONDITION_INITS`.

    Buffer ``class_embeddings`` [K, E] (saved, never trained): the frozen word-embedding table
    (:meth:`set_class_embeddings`). Everything else starts with PyTorch's default init, as in
    the original.
    """

    def __init__(self, num_labels: int, embedding_dim: int = 600, width: int = 64, num_layers: int = 8,
                 kernel_size: int = 7, conditioned: bool = True, dropout: float = 0.5,
                 condition_init: str = "linear") -> None:
        super().__init__()
        if condition_init not in CONDITION_INITS:
            raise ConfigError(f"pixelcnn: condition_init must be one of {', '.join(CONDITION_INITS)} "
                              f"(got {condition_init!r})")
        if num_layers < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"pixelcnn: needs at least one layer and an odd kernel size "
                              f"(got {num_layers} layers, kernel {kernel_size})")
        self.num_labels, self.embedding_dim, self.conditioned = num_labels, embedding_dim, conditioned
        self.register_buffer("class_embeddings", torch.zeros(num_labels, embedding_dim))
        condition_dim = embedding_dim if conditioned else None
        self.layers = nn.ModuleList(
            PixelCNNLayer("A" if i == 0 else "B", embedding_dim if i == 0 else width, width, kernel_size, condition_dim)
            for i in range(num_layers))
        self.output = nn.Conv2d(width, num_labels, 1)
        self.dropout = nn.Dropout(dropout)
        #: layers (0-based) followed by dropout in the conditioned form: the last two
        self.dropout_after = tuple(range(max(num_layers - 2, 0), num_layers))
        self.reset_condition_weights(condition_init)

    @torch.no_grad()
    def reset_condition_weights(self, how: str = "linear") -> None:
        """(Re)initialise the condition projections ``b_i`` (see :data:`CONDITION_INITS`)."""
        for layer in self.layers:
            if layer.condition_weight is None:
                continue
            if how == "zeros":
                layer.condition_weight.zero_()
            else:
                bound = 1.0 / math.sqrt(layer.condition_weight.shape[0])
                layer.condition_weight.uniform_(-bound, bound)

    def set_class_embeddings(self, table: torch.Tensor | np.ndarray) -> None:
        """Fill the frozen word-embedding table from [K, E] rows (seen classes first)."""
        table = torch.as_tensor(np.asarray(table) if not torch.is_tensor(table) else table, dtype=torch.float32)
        if tuple(table.shape) != tuple(self.class_embeddings.shape):
            raise ConfigError(f"pixelcnn class embeddings: shape {tuple(table.shape)} does not match the model's "
                              f"{tuple(self.class_embeddings.shape)} (labels x embedding dim)")
        with torch.no_grad():
            self.class_embeddings.copy_(table)

    # ------------------------------------------------------------------ forward
    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        """Word embeddings of labels: [B, s, s] -> [B, s, s, E] (or [B] -> [B, E])."""
        return F.embedding(labels, self.class_embeddings)

    def forward(self, labels: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, K, s, s] of label blocks [B, s, s] (long, 0..K-1).

        ``condition``: None (unconditioned), a class per block [B] or a class per position
        [B, s, s] (long, 0..K-1), see the module docstring. Wrong shapes or labels outside the
        range are a one-line :class:`DatasetError`.
        """
        check_label_blocks(labels, self.num_labels, name="pixelcnn input blocks")
        embedded = self.embed(labels).permute(0, 3, 1, 2)                  # [B, E, s, s]
        if condition is None:
            return self.forward_embedded(embedded)
        return self.forward_embedded(embedded, self.embed(self._checked_condition(condition, labels)))

    def forward_embedded(self, inputs: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, K, s, s] from embedded inputs [B, E, s, s] and condition embeddings
        ([B, E] per block, [B, s, s, E] per position, or None)."""
        if condition is not None and not self.conditioned:
            raise ConfigError("pixelcnn: this network has no condition projections (conditioned=False)")
        x = inputs
        for index, layer in enumerate(self.layers):
            x = layer(x, condition)
            if condition is not None and index in self.dropout_after:
                x = self.dropout(x)
        return self.output(x)

    def _checked_condition(self, condition: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch, side = labels.shape[0], labels.shape[-1]
        if not torch.is_tensor(condition) or tuple(condition.shape) not in ((batch,), (batch, side, side)):
            raise DatasetError(f"pixelcnn condition: expected classes [{batch}] (one per block) or "
                               f"[{batch}, {side}, {side}] (one per position), got shape "
                               f"{list(getattr(condition, 'shape', []))}")
        if condition.dim() == 1:
            check_label_blocks(condition[:, None, None], self.num_labels, name="pixelcnn condition classes")
        else:
            check_label_blocks(condition, self.num_labels, name="pixelcnn condition classes")
        return condition


def block_condition_classes(blocks: torch.Tensor, num_labels: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The class that conditions each training block in the project's form: the block's most
    frequent labelled class (ties: the smallest label), [B, s, s] -> [B] long.

    Sampling conditions a block on one unseen class u on every position and keeps it when it
    has >= 7 unseen pixels, 5 of them u by construction: u is then its most frequent class. So
    conditioning each training block on its most frequent class gives training the form of
    sampling, and no position learns its own label from the condition. A block without any
    labelled pixel is a DatasetError (:func:`cagnet.data.blocks.cut_blocks` drops them).
    """
    check_label_blocks(blocks, num_labels, allow_ignore=True, ignore_index=ignore_index,
                       name="pixelcnn training blocks")
    flat = blocks.flatten(1)
    labelled = flat != ignore_index
    if not bool(labelled.any(1).all()):
        raise DatasetError("pixelcnn training blocks: a block has no labelled pixel (drop it first, see cut_blocks)")
    counts = torch.zeros(flat.shape[0], num_labels, dtype=torch.long, device=flat.device)
    counts.scatter_add_(1, torch.where(labelled, flat, 0), labelled.long())
    return counts.argmax(1)   # the first maximum: the smallest label among ties
