"""Label blocks of CaGNetv2's patch-wise step 2: cutting, hole filling, tiling, per-block noise.

A *label block* is a small square of class labels, ``[s, s]`` with ``s`` the patch size (3).
CaGNetv2 uses them in two places:

* the label-block PixelCNN (:mod:`cagnet.models.pixelcnn`) learns them from the training label
  maps, cut into non-overlapping blocks (:func:`cut_blocks`); its input needs a label at every
  position, so the ignored pixels of a block are filled from a neighbour first
  (:func:`fill_block_holes`, the original's ``fill_in_hole``);
* step 2 turns a draw of blocks into the label map of a fake feature map (:func:`tile_blocks`)
  and gives every block one latent noise vector, repeated over its pixels (:func:`tile_noise`,
  :func:`block_noise`).

Layout (the original's): block ``(r, c)`` of a grid of ``h // s`` x ``w // s`` blocks covers
rows ``s*r .. s*r + s - 1`` and columns ``s*c .. s*c + s - 1``; blocks are numbered row-major,
``k = r * (w // s) + c``. :func:`cut_blocks` and :func:`tile_blocks` are inverse to each other.

All functions are pure (no state, global RNG only in :func:`block_noise` when no generator is
given). Bad input is a one-line :class:`~cagnet.errors.DatasetError` (blocks) or
:class:`~cagnet.errors.ConfigError` (a grid that the patch size does not divide).
"""
from __future__ import annotations

from typing import Sequence

import torch

from cagnet.data.transforms import IGNORE_INDEX
from cagnet.errors import ConfigError, DatasetError


def check_label_blocks(blocks: torch.Tensor, num_classes: int | None = None, *, batch_dims: int = 1,
                       allow_ignore: bool = False, ignore_index: int = IGNORE_INDEX,
                       name: str = "label blocks") -> int:
    """Check a tensor of label blocks ``[*batch, s, s]`` and return the block side ``s``.

    Args:
        blocks: integer tensor with ``batch_dims`` leading dimensions, then two equal sides.
        num_classes: when given, every label must lie in ``0 .. num_classes - 1``
            (or be ``ignore_index`` with ``allow_ignore``).
        name: what the tensor is, for the message.

    Raises :class:`DatasetError` naming the shape, dtype or the offending label values.
    """
    expected = "[B, s, s]" if batch_dims == 1 else "[N, blocks, s, s]"
    shape = list(blocks.shape) if torch.is_tensor(blocks) else None
    if shape is None or len(shape) != batch_dims + 2 or shape[-1] != shape[-2] or shape[-1] < 1:
        got = f"shape {shape}" if shape is not None else f"a {type(blocks).__name__}"
        raise DatasetError(f"{name}: expected a tensor {expected} of square blocks, got {got}")
    if blocks.is_floating_point() or blocks.is_complex() or blocks.dtype == torch.bool:
        raise DatasetError(f"{name}: expected integer class labels, got dtype {blocks.dtype}")
    if num_classes is not None and blocks.numel():
        outside = (blocks < 0) | (blocks >= num_classes)
        if allow_ignore:
            outside &= blocks != ignore_index
        if bool(outside.any()):
            values = sorted({int(v) for v in blocks[outside].unique()[:5]})
            allowed = f"0..{num_classes - 1}" + (f" or {ignore_index}" if allow_ignore else "")
            raise DatasetError(f"{name}: labels {values} outside the class range {allowed}")
    return int(shape[-1])


def _check_grid(grid: Sequence[int], patch_size: int, what: str) -> tuple[int, int]:
    """(rows, columns) of blocks of a feature grid that the patch size must divide."""
    height, width = (int(v) for v in grid)
    if height % patch_size or width % patch_size or height < patch_size or width < patch_size:
        raise ConfigError(f"{what}: the feature grid {height}x{width} is not a multiple of the patch size "
                          f"{patch_size} (choose a crop whose feature grid divides by {patch_size}, "
                          f"e.g. crop 376 -> 48x48 at output stride 8)")
    return height // patch_size, width // patch_size


# --------------------------------------------------------------------------- PixelCNN data
def fill_block_holes(blocks: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the ignored pixels of label blocks from a neighbour, the original's ``fill_in_hole``.

    One pass of four cyclic rolls *within each block* (``torch.roll`` = ``np.roll``), in the
    original's order: shift -1 along rows, -1 along columns, +1 along rows, +1 along columns.
    Each roll fills the holes that are still open with the rolled value wherever that value is
    not a hole itself; a hole filled by one roll can fill another in the next. So a hole takes
    the label below it, else right of it, else above, else left (cyclically), or a label two
    steps away through an already filled neighbour.

    Args:
        blocks: integer labels ``[B, s, s]``, ``ignore_index`` = hole.

    Returns:
        ``(filled, still_missing)``: the blocks with holes filled ``[B, s, s]`` (same dtype;
        holes that stayed open keep ``ignore_index``) and a bool mask of those ``[B, s, s]``
        (all False unless a block has almost no labelled pixel: the original asserts it is).
    """
    check_label_blocks(blocks, name="label blocks to fill")
    filled = blocks.clone()
    hole = blocks == ignore_index
    for shift in (-1, 1):
        for dim in (-2, -1):
            # the rolled copy is taken once per roll, as the original's masked-array roll
            rolled, rolled_hole = torch.roll(filled, shift, dims=dim), torch.roll(hole, shift, dims=dim)
            take = hole & ~rolled_hole
            filled = torch.where(take, rolled, filled)
            hole = hole & ~take
    return filled, hole


def cut_blocks(labels: torch.Tensor, block_size: int = 3, *, drop_unlabelled: bool = True,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cut label maps into non-overlapping blocks, as the original prepares the PixelCNN's data.

    The maps are cropped to a multiple of ``block_size`` (bottom rows / right columns dropped),
    then cut row-major (the layout of the module docstring). The original cuts at image (crop)
    resolution while step 2 tiles blocks on the 1/8 feature grid; resize the labels first
    (:func:`cagnet.data.transforms.resize_labels`) to learn blocks at feature resolution.

    Args:
        labels: ``[N, H, W]`` integer label maps (``ignore_index`` = unlabelled), H, W >= block_size.
        drop_unlabelled: drop blocks without any labelled pixel (the original does).

    Returns:
        ``[M, s, s]`` blocks, image by image, row-major within an image.
    """
    if not torch.is_tensor(labels) or labels.dim() != 3:
        raise DatasetError(f"label maps: expected a tensor [N, H, W], got shape {list(getattr(labels, 'shape', []))}")
    n, height, width = labels.shape
    if height < block_size or width < block_size:
        raise ConfigError(f"label maps {height}x{width} are smaller than one block ({block_size}x{block_size})")
    rows, cols = height // block_size, width // block_size
    cropped = labels[:, :rows * block_size, :cols * block_size]
    blocks = (cropped.reshape(n, rows, block_size, cols, block_size).permute(0, 1, 3, 2, 4)
              .reshape(n * rows * cols, block_size, block_size))
    if drop_unlabelled:
        blocks = blocks[(blocks != ignore_index).flatten(1).any(1)]
    return blocks


# --------------------------------------------------------------------------- step 2
def tile_blocks(blocks: torch.Tensor, grid: Sequence[int], num_classes: int | None = None) -> torch.Tensor:
    """Tile one draw of label blocks per image into label maps on the feature grid.

    Args:
        blocks: ``[N, nb, s, s]`` integer labels, ``nb = (h // s) * (w // s)`` blocks per image
            in row-major order (256 on CaGNetv2's 48x48 grid).
        grid: the feature grid ``(h, w)``; ``s`` must divide both.
        num_classes: when given, labels must lie in ``0 .. num_classes - 1``.

    Returns:
        ``[N, h, w]`` label map; block ``k = r * (w // s) + c`` covers rows ``s*r ..`` and
        columns ``s*c ..`` (the original's view / permute).
    """
    patch_size = check_label_blocks(blocks, num_classes, batch_dims=2, name="label blocks for tiling")
    rows, cols = _check_grid(grid, patch_size, "tile_blocks")
    n, count = blocks.shape[:2]
    if count != rows * cols:
        raise DatasetError(f"label blocks for tiling: {count} blocks per image, but a {grid[0]}x{grid[1]} grid "
                           f"holds {rows}x{cols} = {rows * cols} blocks of {patch_size}x{patch_size}")
    return (blocks.reshape(n, rows, cols, patch_size, patch_size).permute(0, 1, 3, 2, 4)
            .reshape(n, rows * patch_size, cols * patch_size))


def tile_noise(noise: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Repeat one noise vector per block over the block's pixels.

    Args:
        noise: ``[N, C, h // s, w // s]``, entry ``[:, :, r, c]`` = the latent noise of block (r, c).
        patch_size: ``s``.

    Returns:
        ``[N, C, h, w]`` (equal over each ``s x s`` block).
    """
    if not torch.is_tensor(noise) or noise.dim() != 4:
        raise DatasetError(f"block noise: expected a tensor [N, C, rows, columns], "
                           f"got shape {list(getattr(noise, 'shape', []))}")
    return noise.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def block_noise(batch: int, channels: int, grid: Sequence[int], patch_size: int, *,
                generator: torch.Generator | None = None, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, 1) latent noise, one vector per block of the feature grid, ``[N, C, h, w]``.

    Draws ``[N, C, h // s, w // s]`` and tiles it (:func:`tile_noise`). The original draws
    ``[N, C, h // s, 1, w // s, 1]``: the same numbers in the same order, so one RNG state gives
    the same noise in both.
    """
    rows, cols = _check_grid(grid, patch_size, "block_noise")
    noise = torch.randn(batch, channels, rows, cols, generator=generator, device=device, dtype=dtype)
    return tile_noise(noise, patch_size)
