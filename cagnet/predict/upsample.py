"""The ``full`` protocol's bilinear upsampling of class logits and its argmax, in bands of
columns (bit-identical to one ``F.interpolate`` of the whole map on the CPU) for :mod:`cagnet.predict`."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from cagnet.errors import ConfigError
from cagnet.predict.images import _linear_taps

#: upper bound (bytes) of the float32 logits the ``full`` protocol upsamples at once
UPSAMPLE_BYTES = 16 * 2 ** 20



def _interpolate_last(values: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (``align_corners=False``) resampling of the last dimension of [N, C, R, n]
    to ``size``, each row on its own: ``F.interpolate`` with the size of dimension R kept.

    A kept size is copied exactly (weights 1 and 0), so this gives bit for bit the values
    that a 2-d ``F.interpolate`` computes along that dimension with its general CPU kernel.
    """
    return F.interpolate(values.contiguous(), size=(values.shape[2], size), mode="bilinear", align_corners=False)


def iter_upsampled_logits(logits: torch.Tensor, size: Sequence[int], max_bytes: int = UPSAMPLE_BYTES,
                          band: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Logits [1, K, h, w] upsampled bilinearly (``align_corners=False``) to ``size`` = (H, W)
    in bands of columns: yields (columns, float [K, H, len(columns)]) covering the W columns
    once, left to right.

    ``F.interpolate(logits, size, mode="bilinear")[0]`` computed without holding all of it.
    Bilinear interpolation is separable: the columns are interpolated once ([K, h, W]), then
    each band of ``band`` columns (default: as many as fit in ``max_bytes`` of float32) is
    interpolated along the rows. Both steps are ``F.interpolate`` calls that keep the other
    dimension (:func:`_interpolate_last`), so the values are bit for bit those of the
    whole-image call on CPU with its general kernel (torch takes another kernel, which rounds
    differently, for outputs with H + W <= 128, done whole here anyway, and for 3 classes on
    one thread, where the bands give the general kernel's values).
    Bands are columns, not rows, because only the row pass can be cut into independent
    ``F.interpolate`` calls this way; the memory bound is the same.

    When even the [K, h, W] column pass exceeds ``max_bytes`` (many classes and a very wide
    image, e.g. 182 classes on a 65-row grid need 47 kB per column), each band computes its
    own columns from torch's float32 weights (:func:`_linear_taps`): equal to the whole-image
    values up to the float32 rounding of the column pass.
    """
    height, width = int(size[0]), int(size[1])
    num_classes, grid_h, grid_w = logits.shape[1:]
    if band is None and 4 * num_classes * height * width <= max_bytes:
        yield slice(0, width), F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0]
        return
    if band is None:
        band = max(1, max_bytes // max(1, 4 * num_classes * max(height, grid_h)))
    if band < 1:
        raise ConfigError(f"band must be a positive number of columns, got {band}")
    once = 4 * num_classes * grid_h * width <= max_bytes
    if once:
        wide = _interpolate_last(logits, width)[0]             # [K, h, W]: columns interpolated
    else:
        taps = [torch.from_numpy(t).to(logits.device) for t in _linear_taps(grid_w, width)]
        first, second, weight0, weight1 = taps[0], taps[1], taps[2].to(logits.dtype), taps[3].to(logits.dtype)
    for start in range(0, width, band):
        end = min(start + band, width)
        if once:
            columns = wide[:, :, start:end]
        else:
            columns = (logits[0][:, :, first[start:end]] * weight0[start:end]
                       + logits[0][:, :, second[start:end]] * weight1[start:end])
        values = _interpolate_last(columns.transpose(1, 2)[None], height)[0]   # [K, band, H]
        yield slice(start, end), values.transpose(1, 2)                           # [K, H, band]


def class_argmax(values: torch.Tensor) -> torch.Tensor:
    """uint8 [...]: the index of the largest of values [K, ...] (K <= 256), the first one on
    ties: ``values.argmax(0)`` for finite values, several times faster for a few classes
    (torch reduces over a short leading dimension slowly; this is K elementwise passes)."""
    if values.shape[0] > 256:
        raise ConfigError(f"{values.shape[0]} classes: uint8 labels hold at most 256")
    best = values[0].clone()
    index = torch.zeros(values.shape[1:], dtype=torch.uint8, device=values.device)
    for k in range(1, values.shape[0]):
        index.masked_fill_(values[k] > best, k)   # strictly larger: an earlier class keeps a tie
        torch.maximum(best, values[k], out=best)
    return index


def iter_upsampled_argmax(logits: torch.Tensor, size: Sequence[int], max_bytes: int = UPSAMPLE_BYTES,
                          band: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """The argmax over classes of :func:`iter_upsampled_logits`: yields (columns, labels
    [H, len(columns)]), those of ``F.interpolate(logits, size, mode="bilinear").argmax(1)``:
    uint8 (:func:`class_argmax`), or int64 for more than 256 classes."""
    for columns, values in iter_upsampled_logits(logits, size, max_bytes, band):
        yield columns, class_argmax(values) if values.shape[0] <= 256 else values.argmax(dim=0)


def upsampled_argmax(logits: torch.Tensor, size: Sequence[int], max_bytes: int = UPSAMPLE_BYTES,
                     band: int | None = None) -> torch.Tensor:
    """LongTensor [H, W]: :func:`iter_upsampled_argmax` assembled (``size`` = (H, W))."""
    labels = torch.empty(int(size[0]), int(size[1]), dtype=torch.long, device=logits.device)   # as argmax gives
    for columns, values in iter_upsampled_argmax(logits, size, max_bytes, band):
        labels[:, columns] = values
    return labels
