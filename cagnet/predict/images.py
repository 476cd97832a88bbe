"""Reading images for :mod:`cagnet.predict` in bounded memory: the pixel limit checked from the
file header, printable names of any bytes, row bands, and the warp to the model's input size."""
from __future__ import annotations

import os
import warnings
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from cagnet.data.transforms import TestTransform, normalize_image
from cagnet.errors import ConfigError, DatasetError

#: pixels per band when blending and encoding the outputs
BAND_PIXELS = 2 ** 18
#: images with at most this many pixels are warped whole (exactly the evaluation's
#: :class:`TestTransform`, about 50 bytes per pixel for a moment); larger ones row by row
WHOLE_WARP_PIXELS = 2 ** 22
#: largest image accepted by default (width x height): 10000 x 10000 works, with room
DEFAULT_MAX_PIXELS = 250_000_000


def display_path(path: str | bytes | os.PathLike) -> str:
    """The path as printable, JSON-safe text: the path itself when it is valid UTF-8, else its
    bytes decoded with each undecodable byte written as ``\\xNN`` (``backslashreplace``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")



def open_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """The image of ``path`` decoded as a PIL image of mode RGB, EXIF orientation applied.

    As :func:`cagnet.data.read_image`: grayscale, palette, CMYK and RGBA images are converted
    (alpha dropped), 16-bit grayscale is scaled to 8 bits, an animation gives its first frame.
    A file above ``max_pixels`` (width x height; None = no limit) is refused from its header,
    before decoding, in place of PIL's ``DecompressionBombWarning``; it, and a file PIL cannot
    read fully, raise :class:`DatasetError` naming the file. The image is not copied after
    decoding (a mode conversion makes the one new image it needs).
    """
    from PIL import Image, ImageOps

    shown = display_path(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{shown}: image not found")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        # our limit (below) replaces PIL's: its warning is no message for a user, and its error
        # (at twice its limit) would refuse images that max_pixels allows
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:   # the with block closes the file, the decoded data stays
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise DatasetError(f"{shown}: {width} x {height} = {width * height} pixels, above the limit "
                                       f"of {max_pixels} (--max-pixels)")
                image.load()   # decodes everything: a truncated file fails here
                ImageOps.exif_transpose(image, in_place=True)
                rgb = _as_rgb(image)
    except DatasetError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... on corrupt files
        raise DatasetError(f"{shown}: unreadable image ({type(err).__name__}: {err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return rgb


def _as_rgb(image):
    """A loaded PIL image as mode RGB (the image itself when it is RGB)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if not image.mode.startswith("I;16"):
        return image.convert("RGB")
    # 16-bit grayscale: PIL's own conversion would clip at 255; scaled here band by band
    width, height = image.size
    rgb = Image.new("RGB", (width, height))
    for top, bottom in _bands(height, width):
        gray = (np.asarray(image.crop((0, top, width, bottom)), dtype=np.uint32) + 128) // 257
        rgb.paste(Image.fromarray(np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)), (0, top))
    return rgb


def _bands(height: int, width: int, pixels: int | None = None) -> Iterator[tuple[int, int]]:
    """(top, bottom) row ranges of about ``pixels`` (default :data:`BAND_PIXELS`) pixels
    covering ``height`` rows."""
    rows = max(1, (BAND_PIXELS if pixels is None else pixels) // max(1, width))
    for top in range(0, height, rows):
        yield top, min(top + rows, height)


def _image_size(image) -> tuple[int, int]:
    """(H, W) of an uint8 RGB array [H, W, 3] or a PIL image."""
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.size[1]), int(image.size[0])


def _image_rows(image, top: int, bottom: int) -> np.ndarray:
    """uint8 [bottom - top, W, 3]: rows of an array or a PIL RGB image."""
    if isinstance(image, np.ndarray):
        return image[top:bottom]
    return np.asarray(image.crop((0, top, image.size[0], bottom)))


def _check_image(image) -> None:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ConfigError(f"image must be uint8 RGB [H, W, 3], got shape {image.shape} dtype {image.dtype}")
    elif getattr(image, "mode", None) != "RGB":
        raise ConfigError(f"image must be uint8 RGB [H, W, 3] or a PIL image of mode RGB, got {type(image).__name__}")


def _linear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear resampling from ``size_in`` to ``size_out`` samples as torch computes it
    (``align_corners=False``: half-pixel centres, source positions clamped at 0, in float32,
    which matters for large sizes): (first, second, weight of the first, weight of the
    second), int64 / int64 / float64 / float64 [size_out]."""
    scale = np.float32(size_in) / np.float32(size_out)
    source = scale * (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    source = np.maximum(source, np.float32(0.0))
    first = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    second = np.minimum(first + 1, size_in - 1)
    weight = np.clip(source - first.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return first, second, (np.float32(1.0) - weight).astype(np.float64), weight.astype(np.float64)


def warp_image(image, transform: TestTransform, whole_pixels: int | None = None) -> torch.Tensor:
    """The network input of an uint8 RGB image (array [H, W, 3] or PIL RGB image): normalised
    FloatTensor [3, h, w] warped to ``transform.size`` (bilinear, ``align_corners=False``).

    Up to ``whole_pixels`` pixels (default :data:`WHOLE_WARP_PIXELS`), or without a size to
    warp to, exactly :meth:`TestTransform.transform_image`. Above, in bounded memory: only
    the <= 2h rows the
    interpolation reads are normalised (the same per-pixel operation), a few at a time, and
    interpolated with torch's float32 weights (:func:`_linear_taps`) in float64; the result
    equals the whole-image warp up to the rounding of its float32 sums (~1e-7 relative).
    """
    height, width = _image_size(image)
    whole_pixels = WHOLE_WARP_PIXELS if whole_pixels is None else whole_pixels
    if transform.size is None or height * width <= whole_pixels:
        array = image if isinstance(image, np.ndarray) else np.asarray(image)
        return transform.transform_image(array)
    out_h, out_w = transform.size
    row0, row1, row_w0, row_w1 = _linear_taps(height, out_h)
    col0, col1, col_w0, col_w1 = (torch.from_numpy(a) for a in _linear_taps(width, out_w))
    rows = np.unique(np.concatenate([row0, row1]))
    narrow = torch.empty(3, len(rows), out_w, dtype=torch.float64)   # the read rows, columns interpolated
    step = max(1, BAND_PIXELS // width)
    for start in range(0, len(rows), step):
        chunk = rows[start:start + step]
        pixels = np.stack([_image_rows(image, int(r), int(r) + 1)[0] for r in chunk])   # [n, W, 3]
        values = normalize_image(pixels, transform.normalization).double()               # [3, n, W]
        narrow[:, start:start + len(chunk)] = values[:, :, col0] * col_w0 + values[:, :, col1] * col_w1
    first = torch.from_numpy(np.searchsorted(rows, row0))
    second = torch.from_numpy(np.searchsorted(rows, row1))
    weight0, weight1 = (torch.from_numpy(w).view(1, -1, 1) for w in (row_w0, row_w1))
    return (narrow[:, first] * weight0 + narrow[:, second] * weight1).float().contiguous()


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """int64 [size_out]: the source index of each output sample of torch's ``nearest`` resize
    (:func:`cagnet.data.resize_labels`), taken from torch itself so that they are the same."""
    positions = torch.arange(size_in, dtype=torch.float32).view(1, 1, size_in, 1)
    return F.interpolate(positions, size=(size_out, 1), mode="nearest").view(-1).long().numpy()
