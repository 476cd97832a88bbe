"""Image/label transforms of the original CaGNet pipeline.

Every transform is called as ``transform(image, label, rng=None)`` with

* ``image``: uint8 RGB [H, W, 3] (numpy array or tensor), as read from disk;
* ``label``: integer [H, W] (numpy array or tensor), already mapped to training/evaluation
  indices (255 = ignored);

and returns ``(FloatTensor [3, h, w], LongTensor [h, w])``. Masks are only ever resized with
nearest neighbour (:func:`resize_labels`), so a transform never invents label values.

Normalisation (``normalization=``):

* ``"caffe"``: the original DeepLabV2 weights' input: BGR channel order, 0..255 scale, minus
  the mean (R 122.675, G 116.669, B 104.008);
* ``"imagenet"``: torchvision-style input for other backbones: RGB / 255, minus the ImageNet
  mean, divided by the ImageNet std.

Random draws come from ``rng`` (a ``torch.Generator`` or ``numpy.random.Generator``)
passed to the call or to the constructor, else from torch's global RNG (which a DataLoader
seeds per worker), so results are reproducible with a seeded ``rng``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from cagnet.errors import ConfigError

IGNORE_INDEX = 255

#: Per-channel mean of the original DeepLabV2 (Caffe) weights, in RGB order.
CAFFE_MEAN_RGB = (122.675, 116.669, 104.008)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("caffe", "imagenet")

RandomStream = Union[torch.Generator, np.random.Generator, None]


# ------------------------------------------------------------------------------------ helpers

def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of label maps, as the original evaluation does it.

    ``labels``: integer tensor [N, H, W] or [H, W]; ``size``: (height, width).
    Returns a LongTensor [N, h, w] or [h, w]. Output pixel (i, j) takes the input pixel
    (floor(i * H / h), floor(j * W / w)): torch's ``mode="nearest"`` (also OpenCV's
    INTER_NEAREST), which reproduces the original's label downsampling exactly
    (``nearest-exact`` and PIL's NEAREST sample pixel centres and differ).
    """
    labels = torch.as_tensor(labels)
    if labels.dim() not in (2, 3):
        raise ValueError(f"labels must be [H, W] or [N, H, W], got shape {tuple(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    size = (int(size[0]), int(size[1]))
    batched = labels if labels.dim() == 3 else labels[None]
    if tuple(batched.shape[-2:]) == size:
        out = batched.long()
    else:
        # Label ids (<= 255 in practice, < 2**24 in general) are exact in float32.
        out = F.interpolate(batched[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return out if labels.dim() == 3 else out[0]


def random_crops(images: torch.Tensor, labels: torch.Tensor, size: int, count: int,
                 rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random square crops of images held in memory: an image index and a top-left
    corner drawn from ``rng`` per crop. ``images`` [N, C, H, W], ``labels`` [N, H, W] ->
    (images [count, C, size, size], labels [count, size, size])."""
    if size > min(images.shape[-2:]):
        raise ValueError(f"crop size {size} exceeds the images' {tuple(images.shape[-2:])}")
    index = torch.randint(len(images), (count,), generator=rng)
    top = torch.randint(images.shape[-2] - size + 1, (count,), generator=rng)
    left = torch.randint(images.shape[-1] - size + 1, (count,), generator=rng)
    crops = [(images[i, :, t:t + size, l:l + size], labels[i, t:t + size, l:l + size])
             for i, t, l in zip(index.tolist(), top.tolist(), left.tolist())]
    return torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops])


def _as_tensor(array) -> torch.Tensor:
    """Tensor view of a tensor/array (read-only arrays, e.g. from PIL, are copied first)."""
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


class ImageNormalizer:
    """uint8 RGB images [..., H, W, 3] -> normalised float images [..., 3, H, W] on one device.

    The per-channel constants are made once, on ``device``: creating them per call would
    copy them host-to-device every time (on a GPU, a wait for all queued work).
    """

    def __init__(self, normalization: str = "caffe", device: torch.device | str = "cpu") -> None:
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        self.normalization = normalization
        mean = CAFFE_MEAN_RGB if normalization == "caffe" else IMAGENET_MEAN_RGB
        self.mean = torch.tensor(mean, device=device).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD_RGB, device=device).view(3, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        chw = image.movedim(-1, -3).float()
        if self.normalization == "caffe":
            return (chw - self.mean).flip(-3).contiguous()  # RGB -> BGR
        return ((chw / 255.0 - self.mean) / self.std).contiguous()


def normalize_image(image, normalization: str = "caffe") -> torch.Tensor:
    """uint8 RGB image [H, W, 3] -> normalised FloatTensor [3, H, W] (see module docstring)."""
    normalizer = ImageNormalizer(normalization)
    tensor = _as_tensor(image)
    if tensor.dim() != 3 or tensor.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {tuple(tensor.shape)}")
    return normalizer(tensor)


def denormalize_image(image: torch.Tensor, normalization: str = "caffe") -> np.ndarray:
    """Inverse of :func:`normalize_image`: FloatTensor [3, H, W] -> uint8 RGB [H, W, 3] (for plots)."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    image = image.detach().float().cpu()
    if normalization == "caffe":
        rgb = image.flip(0) + torch.tensor(CAFFE_MEAN_RGB).view(3, 1, 1)
    else:
        rgb = (image * torch.tensor(IMAGENET_STD_RGB).view(3, 1, 1)
               + torch.tensor(IMAGENET_MEAN_RGB).view(3, 1, 1)) * 255.0
    return rgb.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _as_label_tensor(label) -> torch.Tensor:
    tensor = _as_tensor(label)
    if tensor.dim() != 2 or tensor.is_floating_point():
        raise ValueError(f"label must be an integer [H, W] map, got shape {tuple(tensor.shape)} dtype {tensor.dtype}")
    return tensor.to(torch.long, copy=True)  # never alias the caller's array


def _resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a [3, H, W] float image (half-pixel centres, no antialiasing)."""
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


class _Draws:
    """Uniform draws from a torch or numpy random generator (or torch's global RNG when None)."""

    def __init__(self, rng: RandomStream):
        if rng is not None and not isinstance(rng, (torch.Generator, np.random.Generator)):
            raise TypeError(f"rng must be a torch.Generator or numpy.random.Generator, got {type(rng).__name__}")
        self.rng = rng

    def uniform(self, low: float, high: float) -> float:
        if isinstance(self.rng, np.random.Generator):
            return float(self.rng.uniform(low, high))
        return low + (high - low) * float(torch.rand((), generator=self.rng, dtype=torch.float64))

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high] (both inclusive)."""
        if isinstance(self.rng, np.random.Generator):
            return int(self.rng.integers(low, high + 1))
        return int(torch.randint(low, high + 1, (), generator=self.rng))


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


# ------------------------------------------------------------------------------- transforms

@dataclass(frozen=True)
class CropAugmentation:
    """One draw of :class:`TrainTransform`'s random parameters: the size after the random
    scale, the crop's top-left corner in the (padded) scaled image, and the flip."""

    scaled: tuple[int, int]
    top: int
    left: int
    flip: bool

    def keeps_size(self, height: int, width: int) -> bool:
        """True when the image of ``height`` x ``width`` is not rescaled (only cropped/flipped)."""
        return self.scaled == (height, width)


class TrainTransform:
    """Training augmentation of the original.

    In order: random scale s ~ U[scale_range] (image bilinear, label nearest; new size
    round(s * H) x round(s * W)); pad bottom/right up to the crop size (image with its mean,
    i.e. 0 after normalisation; label with 255); random crop of ``crop_size``; horizontal flip
    with probability ``flip_prob``; normalisation.

    Normalising before scaling is equivalent to the original's order (bilinear weights sum
    to one) and makes the mean-padding a zero-padding.

    An ``rng`` given to the constructor is copied into every DataLoader worker, which would
    then draw identical augmentations; with ``num_workers > 0`` leave it None (torch's global
    RNG, seeded per worker) or pass an ``rng`` per call.

    Returns (FloatTensor [3, crop_h, crop_w], LongTensor [crop_h, crop_w]). The call is
    :meth:`draw` (the random parameters) followed by :meth:`apply_image` and
    :meth:`apply_label`, which also run separately, e.g. on images held on a GPU.
    """

    def __init__(self, crop_size: int | Sequence[int] = 368, scale_range: Sequence[float] = (0.5, 1.5),
                 flip_prob: float = 0.5, normalization: str = "caffe", ignore_index: int = IGNORE_INDEX,
                 rng: RandomStream = None):
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        low, high = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < low <= high:
            raise ConfigError(f"scale_range must satisfy 0 < low <= high, got {tuple(scale_range)}")
        self.crop_size = _pair(crop_size)
        self.scale_range = (low, high)
        self.flip_prob = float(flip_prob)
        self.normalization = normalization
        self.ignore_index = int(ignore_index)
        self.rng = rng

    def __call__(self, image, label, rng: RandomStream = None) -> tuple[torch.Tensor, torch.Tensor]:
        image_t = normalize_image(image, self.normalization)  # [3, H, W]
        label_t = _as_label_tensor(label)  # [H, W]
        if tuple(image_t.shape[-2:]) != tuple(label_t.shape):
            raise ValueError(f"image {tuple(image_t.shape[-2:])} and label {tuple(label_t.shape)} sizes differ")
        augmentation = self.draw(*label_t.shape, rng=rng)
        return self.apply_image(image_t, augmentation), self.apply_label(label_t, augmentation)

    def draw(self, height: int, width: int, rng: RandomStream = None) -> "CropAugmentation":
        """The random parameters of one call for an image of ``height`` x ``width``, drawn
        in the order ``__call__`` draws them (scale, top, left, flip)."""
        draws = _Draws(rng if rng is not None else self.rng)
        scale = draws.uniform(*self.scale_range)
        scaled = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        crop_h, crop_w = self.crop_size
        top = draws.integer(0, max(scaled[0], crop_h) - crop_h)
        left = draws.integer(0, max(scaled[1], crop_w) - crop_w)
        flip = draws.uniform(0.0, 1.0) < self.flip_prob
        return CropAugmentation(scaled=scaled, top=top, left=left, flip=flip)

    def apply_image(self, image: torch.Tensor, augmentation: "CropAugmentation") -> torch.Tensor:
        """Scale (bilinear), zero-pad, crop and flip a normalised image [3, H, W] (any device)."""
        image = _resize_image(image, augmentation.scaled)
        pad_h, pad_w = self._padding(augmentation)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        image = image[:, augmentation.top:augmentation.top + self.crop_size[0],
                      augmentation.left:augmentation.left + self.crop_size[1]]
        return (image.flip(-1) if augmentation.flip else image).contiguous()

    def apply_label(self, label: torch.Tensor, augmentation: "CropAugmentation") -> torch.Tensor:
        """Scale (nearest), pad with ``ignore_index``, crop and flip a label map [H, W]."""
        label = resize_labels(label, augmentation.scaled)
        pad_h, pad_w = self._padding(augmentation)
        if pad_h or pad_w:
            label = F.pad(label, (0, pad_w, 0, pad_h), value=self.ignore_index)
        label = label[augmentation.top:augmentation.top + self.crop_size[0],
                      augmentation.left:augmentation.left + self.crop_size[1]]
        return (label.flip(-1) if augmentation.flip else label).contiguous()

    def _padding(self, augmentation: "CropAugmentation") -> tuple[int, int]:
        return (max(self.crop_size[0] - augmentation.scaled[0], 0),
                max(self.crop_size[1] - augmentation.scaled[1], 0))

    def __repr__(self) -> str:
        return (f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, "
                f"flip_prob={self.flip_prob}, normalization={self.normalization!r})")


class TestTransform:
    """Evaluation transform: normalisation, and optionally a warp to a fixed size.

    ``size=None`` keeps the image's own size. ``size=513`` (or (h, w)) warps the image
    (bilinear) as the original evaluation does (513 x 513, ``WARP_IMAGE: True``); the label is
    then warped too, with nearest neighbour, unless ``warp_label=False`` (keep the full-size
    ground truth, e.g. to score predictions upsampled to the image's own size).

    Returns (FloatTensor [3, h, w], LongTensor [h', w']).
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, size: int | Sequence[int] | None = None, normalization: str = "caffe",
                 warp_label: bool = True):
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        self.size = None if size is None else _pair(size)
        self.normalization = normalization
        self.warp_label = bool(warp_label)

    def __call__(self, image, label, rng: RandomStream = None) -> tuple[torch.Tensor, torch.Tensor]:
        label_t = _as_label_tensor(label)
        if tuple(np.shape(image)[:2]) != tuple(label_t.shape):
            raise ValueError(f"image {tuple(np.shape(image)[:2])} and label {tuple(label_t.shape)} sizes differ")
        if self.size is not None and self.warp_label:
            label_t = resize_labels(label_t, self.size)
        return self.transform_image(image), label_t.contiguous()

    def transform_image(self, image) -> torch.Tensor:
        """The network input of an image without a label: uint8 RGB [H, W, 3] -> normalised
        FloatTensor [3, h, w], warped to ``size`` when set (what :meth:`__call__` does to it)."""
        image_t = normalize_image(image, self.normalization)
        if self.size is not None:
            image_t = _resize_image(image_t, self.size)
        return image_t.contiguous()

    def __repr__(self) -> str:
        return f"TestTransform(size={self.size}, normalization={self.normalization!r}, warp_label={self.warp_label})"



#: Alias of :class:`TestTransform` (a name pytest will not mistake for a test class).
EvalTransform = TestTransform
