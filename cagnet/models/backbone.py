"""DeepLabV2 backbone: Caffe-style dilated ResNet + ASPP, and multi-scale input helpers.

Data flow (N images, input H x W, base width b = 64 for ResNet-101, C = feature dim)::

    image [N, 3, H, W]            (BGR minus the mean, as the original feeds it)
      stem   7x7/2 conv + BN + ReLU, 3x3/2 max-pool (ceil mode)   -> [N, b,    ~H/4, ~W/4]
      res2   bottlenecks, stride 1                                 -> [N, 4b,   ~H/4, ~W/4]
      res3   bottlenecks, stride 2 (on the 1x1 reduce conv)        -> [N, 8b,   ~H/8, ~W/8]
      res4   bottlenecks, dilation 2                               -> [N, 16b,  ~H/8, ~W/8]
      res5   bottlenecks, dilation 4                               -> [N, 32b,  ~H/8, ~W/8]
      aspp   four 3x3 convs (dilation 6, 12, 18, 24, with bias), summed -> [N, C, ~H/8, ~W/8]

The ASPP output is the "semantic feature" ``h`` on which the contextual module works
(see :mod:`cagnet.models.contextual`). Output stride 8: an 88 x 104 input gives 12 x 14.

Batch norm is frozen as in the original: every BN layer stays in eval mode (running
statistics are used and never updated) and its affine parameters do not train, even
after ``model.train()``. ``freeze_bn=False`` gives ordinary trainable BN instead, which
can help when a small backbone is trained from scratch.

Sizes of the preset backbones (bottleneck counts per stage, base width):

=======================  ==============  ==========
name                     blocks          base width
=======================  ==============  ==========
``deeplabv2_resnet101``  3, 4, 23, 3     64         (the original)
``deeplabv2_small``      1, 2, 1, 1      64         (the small numerical reference)
``deeplabv2_tiny``       1, 1, 1, 1      16         (CPU tutorials)
=======================  ==============  ==========
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: name -> (bottleneck counts of res2..res5, base width)
BACKBONE_PRESETS: dict[str, tuple[tuple[int, int, int, int], int]] = {
    "deeplabv2_resnet101": ((3, 4, 23, 3), 64),
    "deeplabv2_small": ((1, 2, 1, 1), 64),
    "deeplabv2_tiny": ((1, 1, 1, 1), 16),
}

#: ASPP dilation rates of DeepLabV2
ASPP_DILATIONS: tuple[int, ...] = (6, 12, 18, 24)

#: input scales of the multi-scale pass; the first one is the full-resolution pass
DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.5, 0.75)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics.

    ``train()`` leaves it in eval mode, and weight/bias do not require gradients, so
    neither the statistics nor the affine parameters change during training. The state
    dict is that of ``nn.BatchNorm2d`` (weight, bias, running_mean, running_var,
    num_batches_tracked).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(False)


class ConvBN(nn.Module):
    """Conv (no bias) -> BN -> optional ReLU. Keys: ``conv.weight``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, relu: bool = True, freeze_bn: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, bias=False)
        self.bn = FrozenBatchNorm2d(out_channels, eps) if freeze_bn else nn.BatchNorm2d(out_channels, eps=eps)
        self.relu = nn.ReLU(inplace=False) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Caffe-style bottleneck: the stride sits on the 1x1 ``reduce`` conv.

    ``x -> reduce (1x1, stride) -> conv3x3 (dilated, padding = dilation) -> increase (1x1)``,
    plus the identity or a ``shortcut`` projection (1x1 conv + BN, same stride), then ReLU.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int,
                 dilation: int, project: bool, freeze_bn: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.reduce = ConvBN(in_channels, mid_channels, 1, stride, 1, True, freeze_bn, eps)
        self.conv3x3 = ConvBN(mid_channels, mid_channels, 3, 1, dilation, True, freeze_bn, eps)
        self.increase = ConvBN(mid_channels, out_channels, 1, 1, 1, False, freeze_bn, eps)
        self.shortcut = ConvBN(in_channels, out_channels, 1, stride, 1, False, freeze_bn, eps) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.increase(self.conv3x3(self.reduce(x))) + residual)


class ResidualStage(nn.Sequential):
    """``num_blocks`` bottlenecks; the first one changes width/stride and projects the shortcut."""

    def __init__(self, num_blocks: int, in_channels: int, mid_channels: int, out_channels: int,
                 stride: int, dilation: int, freeze_bn: bool = True, eps: float = 1e-5) -> None:
        blocks = [Bottleneck(in_channels if i == 0 else out_channels, mid_channels, out_channels,
                             stride if i == 0 else 1, dilation, i == 0, freeze_bn, eps)
                  for i in range(num_blocks)]
        super().__init__(*blocks)


class Stem(nn.Module):
    """7x7/2 conv + BN + ReLU, then 3x3/2 max-pool with padding 1 and ceil mode."""

    def __init__(self, width: int, freeze_bn: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = ConvBN(3, width, 7, 2, 1, True, freeze_bn, eps)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLabV2: parallel 3x3 convs with bias, summed.

    ``[N, in, h, w] -> sum_i conv_i(x) -> [N, out, h, w]`` with dilation = padding = rate_i.
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int] = ASPP_DILATIONS) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d, bias=True) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class DeepLabV2(nn.Module):
    """Dilated ResNet (output stride 8) + ASPP: image [N,3,H,W] -> semantic feature [N,C,h,w].

    Args:
        blocks: bottleneck counts of res2..res5 ((3, 4, 23, 3) for ResNet-101).
        base_width: stem width; res2..res5 have bottleneck widths 1, 2, 4, 8 x base and
            output widths 4, 8, 16, 32 x base.
        feature_dim: ASPP output channels C (600 in the original).
        aspp_dilations: ASPP rates.
        freeze_bn: frozen (original) or trainable batch norm.
    """

    def __init__(self, blocks: Sequence[int] = (3, 4, 23, 3), base_width: int = 64, feature_dim: int = 600,
                 aspp_dilations: Sequence[int] = ASPP_DILATIONS, freeze_bn: bool = True,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts (res2..res5), got {tuple(blocks)}")
        b = base_width
        self.stem = Stem(b, freeze_bn, bn_eps)
        #                        (blocks,   in,     mid,   out,    stride, dilation)
        self.res2 = ResidualStage(blocks[0], b,      b,     4 * b,  1, 1, freeze_bn, bn_eps)
        self.res3 = ResidualStage(blocks[1], 4 * b,  2 * b, 8 * b,  2, 1, freeze_bn, bn_eps)
        self.res4 = ResidualStage(blocks[2], 8 * b,  4 * b, 16 * b, 1, 2, freeze_bn, bn_eps)
        self.res5 = ResidualStage(blocks[3], 16 * b, 8 * b, 32 * b, 1, 4, freeze_bn, bn_eps)
        self.aspp = ASPP(32 * b, feature_dim, aspp_dilations)
        self.output_stride = 8

    def body(self, image: torch.Tensor) -> torch.Tensor:
        """The ResNet body's output (res5) [N, 32b, ~H/8, ~W/8], before the ASPP."""
        x = self.stem(image)
        return self.res5(self.res4(self.res3(self.res2(x))))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.body(image))


#: Nominal standard deviation of a natural image's pixels under each input normalisation
#: (``cagnet.data.transforms``): "caffe" keeps the 0..255 scale (ImageNet's per-channel std
#: is 57-58 there), "imagenet" divides by the std.
NOMINAL_INPUT_STD: dict[str, float] = {"caffe": 57.6, "imagenet": 1.0}


def stable_random_init(backbone: DeepLabV2, input_std: float) -> None:
    """Make a randomly initialised frozen-BN backbone trainable at the DeepLabV2 learning rates.

    DeepLabV2 expects pretrained weights whose frozen batch-norm statistics normalise every
    conv output. From random (Kaiming) weights with frozen BN at its initial statistics
    (mean 0, variance 1: the identity), nothing normalises: the stem passes on the input's
    pixel scale (std ~58 for Caffe-normalised images) and each residual block roughly doubles
    the variance (``x + branch(x)``, both of the same scale), so ResNet-101's activations grow
    ~1.4x per block, to ~1e7 after the 23 blocks of res4; the first SGD step then diverges.
    This initialisation (a departure from the original, which never trains from random
    weights) keeps every activation near unit scale:

    * the last conv of each residual branch (``increase``) starts at zero, so every block
      starts as the identity and the branch grows from there as that conv trains (the
      frozen BN after it cannot learn a scale, so zeroing a BN weight instead would switch
      the branch off for good);
    * the stem's frozen BN divides by the stem conv's expected output std
      (``sqrt(2) * input_std`` for Kaiming weights), so the stem's output has unit scale.

    Everything else keeps its Kaiming values. Pretrained weights loaded afterwards replace
    all of it. ``input_std``: the input's pixel std (:data:`NOMINAL_INPUT_STD`).
    """
    for module in backbone.modules():
        if isinstance(module, Bottleneck):
            nn.init.zeros_(module.increase.conv.weight)
    stem_bn = backbone.stem.conv.bn
    with torch.no_grad():
        stem_bn.running_mean.zero_()
        # Kaiming (fan in, gain sqrt 2): output variance = 2 * E[input^2]
        stem_bn.running_var.fill_(2.0 * float(input_std) ** 2 - stem_bn.eps)


def resize_to_scale(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resize of ``image`` [N,C,H,W] to ``(int(H*scale), int(W*scale))``.

    Truncation to int and ``align_corners=False`` as in the original multi-scale pass.
    """
    if scale == 1.0:
        return image
    size = [int(s * scale) for s in image.shape[-2:]]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def max_fuse(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pixel-wise max over per-scale features, each resized (bilinear) to the first one's grid.

    ``features[0]`` [N,C,h,w] is the full-scale feature; the others may have any grid.
    """
    size = features[0].shape[-2:]
    resized = [features[0]] + [
        f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        for f in features[1:]]
    return torch.stack(resized).amax(dim=0)
