"""Label blocks of CaGNetv2's patch-wise step 2: cutting, hole filling, tiling, per-block noise.

A *label block* is a small square of class labels, ``[s, s]`` with ``s`` the patch size (3).
CaGNetv2 uses them in two places:

* the label-block PixelCNN (:mod:`cagnet.models.pixelcnn`) learns them from the training label
  maps, cut into non-overlapping blocks (:func:`cut_blocks`); its input needs a label at every
  position, so the ignored pixels of a block are filled from a neighbour first
  (:func:`fill_block_holes`, the original's ``fill_in_hole``);
* step 2 turns a draw of blocks into the label map of a fake feature map (:func:`tile_blocks`)
  and gives every block one latent noise vector, repeated over its pixels (:func:`tile_noise`,
  :func:`block_noise`). The blocks come from a :class:`BlockSource`: uniform one-class
  ("pure") blocks of the step-2 class prior, or a *bank* of blocks (e.g. sampled from the
  PixelCNN) mixed with pure blocks.

Bank file (:func:`save_label_blocks` / :func:`load_label_blocks`): one integer tensor
``[B, s, s]`` of class indices ``0 .. S+U-1`` (seen classes first, the classifier's order; no
ignored pixels), in a ``.pt`` file (``torch.save`` of the bare tensor, read with
``weights_only=True``) or a ``.npy`` file (read without pickle). It is stored as ``uint8`` when
the labels fit (a bank holds millions of blocks).

Layout (the original's): block ``(r, c)`` of a grid of ``h // s`` x ``w // s`` blocks covers
rows ``s*r .. s*r + s - 1`` and columns ``s*c .. s*c + s - 1``; blocks are numbered row-major,
``k = r * (w // s) + c``. :func:`cut_blocks` and :func:`tile_blocks` are inverse to each other.

The functions are pure (no state; the global RNG only in :func:`block_noise`,
:func:`sample_distinct` and :meth:`BlockSource.draw` when no generator is given). Bad input is a one-line :class:`~cagnet.errors.DatasetError` (blocks) or
:class:`~cagnet.errors.ConfigError` (a grid that the patch size does not divide).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
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


# --------------------------------------------------------------------------- bank files
#: File suffixes of a block bank.
BANK_SUFFIXES: tuple[str, ...] = (".pt", ".npy")


def _bank_suffix(path: Path) -> str:
    if path.suffix not in BANK_SUFFIXES:
        raise DatasetError(f"{path}: a bank of label blocks is a {' or '.join(BANK_SUFFIXES)} file")
    return path.suffix


def save_label_blocks(path: str | Path, blocks: torch.Tensor, num_classes: int | None = None) -> Path:
    """Write a bank of label blocks ``[B, s, s]`` (the module docstring's format); returns the path.

    The blocks are checked first (:func:`check_label_blocks`, class range when ``num_classes``
    is given) and stored as ``uint8`` when every label is below 256, else ``int64``; written
    atomically (:func:`cagnet.files.atomic_write`: a kill leaves the previous file or none).
    """
    path = Path(path)
    suffix = _bank_suffix(path)
    check_label_blocks(blocks, num_classes, name=f"{path}: label blocks")
    blocks = blocks.detach().cpu()
    small = blocks.numel() == 0 or (int(blocks.min()) >= 0 and int(blocks.max()) < 256)
    blocks = blocks.to(torch.uint8 if small else torch.int64).contiguous()
    from cagnet.files import atomic_write

    if suffix == ".pt":
        return atomic_write(path, lambda stream: torch.save(blocks, stream))
    return atomic_write(path, lambda stream: np.save(stream, blocks.numpy(), allow_pickle=False))


def load_label_blocks(path: str | Path, num_classes: int | None = None, patch_size: int | None = None) -> torch.Tensor:
    """Read a bank of label blocks ``[B, s, s]`` (integer, its stored dtype) and check it.

    Args:
        num_classes: labels must lie in ``0 .. num_classes - 1`` (no ignored pixels: every
            position of a block is a generated pixel).
        patch_size: when given, ``s`` must equal it.

    Raises a one-line :class:`DatasetError` naming the file: missing, unreadable, not a tensor
    ``[B, s, s]`` of integers, empty, labels outside the class range, or blocks of another side.
    """
    path = Path(path)
    suffix = _bank_suffix(path)
    if not path.is_file():
        raise DatasetError(f"{path}: bank of label blocks not found")
    try:
        if suffix == ".pt":
            blocks = torch.load(path, map_location="cpu", weights_only=True)
        else:
            blocks = torch.from_numpy(np.load(path, allow_pickle=False))
    except Exception as err:   # a damaged, pickled or foreign file: one line naming it
        raise DatasetError(f"{path}: cannot read a bank of label blocks ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'no details'})") from None
    side = check_label_blocks(blocks, num_classes, name=f"{path}: label blocks")
    if blocks.shape[0] == 0:
        raise DatasetError(f"{path}: the bank holds no label blocks")
    if patch_size is not None and side != patch_size:
        raise DatasetError(f"{path}: blocks of {side}x{side}, but the patch size is {patch_size}")
    return blocks


# --------------------------------------------------------------------------- drawing blocks
#: Up to this population, :func:`sample_distinct` ranks one random key per candidate (one
#: kernel, ``batch x population`` float64 keys); above it, Floyd's algorithm (``count`` small
#: steps, memory independent of the population).
DIRECT_DRAW_LIMIT = 1 << 18


def sample_distinct(batch: int, count: int, population: int, *, device: torch.device | str | None = None,
                    generator: torch.Generator | None = None, direct_limit: int = DIRECT_DRAW_LIMIT) -> torch.Tensor:
    """``count`` distinct indices of ``range(population)`` per row, ``[batch, count]`` int64.

    Each row is a uniformly random subset in uniformly random order (sampling without
    replacement), drawn on ``device`` from ``generator`` (the global RNG of that device when
    None) without waiting for the device: the keys' top-k for populations up to
    ``direct_limit``, Floyd's algorithm otherwise (then shuffled).
    """
    if count > population:
        raise DatasetError(f"cannot draw {count} distinct items from {population}")
    if population <= direct_limit:
        keys = torch.rand(batch, population, device=device, dtype=torch.float64, generator=generator)
        return keys.topk(count, dim=1).indices
    # Floyd: for j = n-k .. n-1 draw t in [0, j]; take t unless already taken, else j.
    # Every k-subset is equally likely; the order is not, hence the shuffle.
    chosen = torch.empty(batch, count, dtype=torch.int64, device=device)
    for i, j in enumerate(range(population - count, population)):
        t = torch.randint(0, j + 1, (batch,), device=device, generator=generator)
        taken = (chosen[:, :i] == t[:, None]).any(1)
        chosen[:, i] = torch.where(taken, torch.full_like(t, j), t)
    order = torch.rand(batch, count, device=device, generator=generator).argsort(1)
    return chosen.gather(1, order)


class BlockSource:
    """Where patch-wise step 2 takes its label blocks from (``block_source`` of a schedule).

    ``pure``: every block is uniform, one class drawn from the step-2 prior (weight 1 per seen
    class, 1 + gen_unseen_rate per unseen one; :func:`cagnet.train.steps.unseen_prior`); no
    PixelCNN needed.

    ``bank``: the blocks of a bank (:func:`load_label_blocks`, ``B`` blocks) mixed with
    ``fuse_ratio`` pure blocks per bank block, as the original's fusing step does: each image
    draws its ``(h // s) * (w // s)`` blocks WITHOUT replacement from a pool of
    ``B * (1 + fuse_ratio)`` slots (the first ``B`` the bank's blocks, the others pure blocks)
    and tiles them row-major in the order drawn. The original draws its 256 blocks per image from
    one 4096-block file of its fused bank; here the pool is the whole bank file. Its pure blocks
    are a fixed set drawn once from the prior; here a drawn pure slot gets a fresh class from
    the prior: a random subset of i.i.d. draws is i.i.d., so each image's blocks have the same
    distribution, without storing ``fuse_ratio * B`` blocks.

    Every draw comes from the global RNG of the device (exact resume restores it), without
    waiting for the device.

    Args:
        patch_size: block side ``s``.
        bank: ``[B, s, s]`` integer labels (any integer dtype; kept on its device) or None (pure).
        fuse_ratio: pure blocks per bank block (``bank`` only; 0 = bank blocks only).
        name: what the bank is (its file), for messages.
    """

    def __init__(self, patch_size: int, bank: torch.Tensor | None = None, fuse_ratio: int = 8,
                 name: str = "bank") -> None:
        if patch_size < 2:
            raise ConfigError(f"block source: patch-wise step 2 needs a patch size > 1 (got {patch_size})")
        if fuse_ratio < 0:
            raise ConfigError(f"block source: fuse_ratio must be >= 0 (got {fuse_ratio})")
        if bank is not None:
            side = check_label_blocks(bank, name=name)
            if side != patch_size:
                raise DatasetError(f"{name}: blocks of {side}x{side}, but the patch size is {patch_size}")
            if bank.shape[0] == 0:
                raise DatasetError(f"{name}: the bank holds no label blocks")
        self.patch_size, self.bank, self.fuse_ratio, self.name = patch_size, bank, fuse_ratio, name

    @property
    def kind(self) -> Literal["pure", "bank"]:
        return "pure" if self.bank is None else "bank"

    @property
    def pool_size(self) -> int | None:
        """Slots each image draws from without replacement (``bank`` only)."""
        return None if self.bank is None else self.bank.shape[0] * (1 + self.fuse_ratio)

    def check_grid(self, grid: Sequence[int], what: str = "block source") -> int:
        """Blocks per image of ``grid`` (h, w); a ConfigError when ``s`` does not divide it, a
        DatasetError when the bank's pool holds fewer slots than that."""
        rows, cols = _check_grid(grid, self.patch_size, what)
        count = rows * cols
        if self.bank is not None and self.pool_size < count:
            raise DatasetError(f"{self.name}: {self.bank.shape[0]} bank blocks + {self.pool_size - self.bank.shape[0]} "
                               f"pure ones (fuse_ratio {self.fuse_ratio}) are fewer than the {count} blocks each "
                               f"image of a {grid[0]}x{grid[1]} grid draws without replacement")
        return count

    def to(self, device: torch.device | str) -> "BlockSource":
        """The same source with its bank on ``device`` (where the draws happen)."""
        if self.bank is not None:
            self.bank = self.bank.to(device)
        return self

    def draw(self, batch: int, grid: Sequence[int], prior: torch.Tensor) -> torch.Tensor:
        """One draw of blocks per image, ``[batch, (h // s) * (w // s), s, s]`` int64.

        Args:
            grid: the feature grid (h, w), multiples of ``s``.
            prior: ``[S+U]`` class probabilities of the pure blocks, on the device to draw on
                (the bank's device for ``bank``).
        """
        count = self.check_grid(grid)
        s = self.patch_size
        device = prior.device
        # one class per block from the prior (for ``bank`` also: the pure slots take theirs,
        # drawn for every slot so that the RNG use does not depend on the draw)
        pure = torch.multinomial(prior.float(), batch * count, replacement=True).view(batch, count, 1, 1)
        pure = pure.expand(batch, count, s, s)
        if self.bank is None:
            return pure.contiguous()
        slots = sample_distinct(batch, count, self.pool_size, device=device)     # [batch, count]
        in_bank = slots < self.bank.shape[0]
        from_bank = self.bank[slots.clamp(max=self.bank.shape[0] - 1)].long()  # [batch, count, s, s]
        return torch.where(in_bank[..., None, None], from_bank, pure)

    def __repr__(self) -> str:
        if self.bank is None:
            return f"BlockSource(pure, {self.patch_size}x{self.patch_size})"
        return (f"BlockSource(bank {self.name}: {self.bank.shape[0]} blocks of {self.patch_size}x{self.patch_size}, "
                f"fuse_ratio {self.fuse_ratio})")
