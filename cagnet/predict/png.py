"""PNG files written band by band for :mod:`cagnet.predict`: the label map (palette PNG of label
ids) and the overlay (the map blended over the image, title above and legend below)."""
from __future__ import annotations

import gc
import struct
import zlib
from typing import BinaryIO, Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure

from cagnet.predict.images import _bands, _image_rows

#: the overlay's legend and title are drawn as for a 4.6 inch wide figure spanning the image,
#: at no more than this resolution (a wider image gets them centred)
LEGEND_MAX_DPI = 1000
_LEGEND_WIDTH_IN = 4.6


def class_colours(class_names: Sequence[str]) -> np.ndarray:
    """uint8 [len(class_names), 3]: the colour of each class (evaluation order), as the
    figures of :mod:`cagnet.viz` draw it."""
    from cagnet.viz import class_palette

    return class_palette(list(class_names))



class PngStream:
    """A PNG file written row band by row band (8-bit RGB, or 8-bit palette), so that an image
    of any size is encoded without holding it: ``add_rows`` as many times as needed, then
    ``close``.

    RGB rows get the adaptive filter of libpng and PIL (per row, the one of None, Sub, Up,
    Average, Paeth with the smallest sum of absolute byte values); palette rows no filter (as
    the PNG specification advises).

    Args:
        stream: binary file to write to.
        width, height: the image's size in pixels.
        palette: uint8 [<=256, 3] for a palette image (rows of indices [n, W]); None for RGB
            (rows [n, W, 3]).
        level: zlib compression level (6: PIL's default).
    """

    _SIGNATURE = b"\x89PNG\r\n\x1a\n"
    _CHUNK_BYTES = 2 ** 20   # compressed data collected before an IDAT chunk is written

    def __init__(self, stream: BinaryIO, width: int, height: int, palette: np.ndarray | None = None,
                 level: int = 6) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"a PNG needs at least one pixel, got {width} x {height}")
        self.stream, self.width, self.height = stream, int(width), int(height)
        self.channels = 1 if palette is not None else 3
        self.rows_written = 0
        self._prior = np.zeros(self.width * self.channels, dtype=np.uint8)
        self._compressor = zlib.compressobj(level)
        self._pending = bytearray()
        stream.write(self._SIGNATURE)
        colour_type = 3 if palette is not None else 2
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, colour_type, 0, 0, 0))
        if palette is not None:
            palette = np.asarray(palette, dtype=np.uint8)
            if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= len(palette) <= 256:
                raise ValueError(f"palette must be uint8 [<=256, 3], got shape {palette.shape}")
            self._chunk(b"PLTE", palette.tobytes())

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.stream.write(struct.pack(">I", len(data)) + kind + data
                          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    def add_rows(self, rows: np.ndarray) -> None:
        """Append uint8 rows [n, W, 3] (RGB) or [n, W] (palette indices)."""
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        expected = (self.width, 3) if self.channels == 3 else (self.width,)
        if rows.shape[1:] != expected:
            raise ValueError(f"rows must be [n, {', '.join(map(str, expected))}], got {rows.shape}")
        if self.rows_written + len(rows) > self.height:
            raise ValueError(f"more than the {self.height} rows of the image")
        for top, bottom in _bands(len(rows), self.width):   # the filters' temporaries stay small
            flat = rows[top:bottom].reshape(bottom - top, -1)
            filtered = self._filter(flat) if self.channels == 3 else np.concatenate(
                [np.zeros((len(flat), 1), dtype=np.uint8), flat], axis=1)
            self._prior = flat[-1].copy()
            self.rows_written += len(flat)
            self._pending += self._compressor.compress(filtered.tobytes())
            if len(self._pending) >= self._CHUNK_BYTES:
                self._chunk(b"IDAT", bytes(self._pending))
                self._pending.clear()

    def _filter(self, flat: np.ndarray) -> np.ndarray:
        """uint8 [n, 1 + 3W]: each row with its filter type byte and filtered bytes."""
        x = flat.astype(np.int16)
        up = np.concatenate([self._prior[None].astype(np.int16), x[:-1]])
        left = np.zeros_like(x)
        left[:, 3:] = x[:, :-3]
        up_left = np.zeros_like(x)
        up_left[:, 3:] = up[:, :-3]
        estimate = left + up - up_left
        dist_left, dist_up, dist_up_left = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - up_left)
        paeth = np.where((dist_left <= dist_up) & (dist_left <= dist_up_left), left,
                         np.where(dist_up <= dist_up_left, up, up_left))
        candidates = np.empty((5,) + flat.shape, dtype=np.uint8)
        cost = np.empty((5, len(flat)), dtype=np.int64)
        for k, prediction in enumerate((0, left, up, (left + up) >> 1, paeth)):
            residual = (x - prediction) & 0xFF                                  # the filtered bytes, mod 256
            cost[k] = np.minimum(residual, 256 - residual).sum(axis=1)         # sum of |byte as signed|
            candidates[k] = residual
        choice = cost.argmin(axis=0)
        out = np.empty((len(flat), flat.shape[1] + 1), dtype=np.uint8)
        out[:, 0] = choice
        out[:, 1:] = candidates[choice, np.arange(len(flat))]
        return out

    def close(self) -> None:
        """Write the last compressed data and the end of the file (all rows must be added)."""
        if self.rows_written != self.height:
            raise ValueError(f"{self.rows_written} of the {self.height} rows were added")
        self._pending += self._compressor.flush()
        self._chunk(b"IDAT", bytes(self._pending))
        self._pending.clear()
        self._chunk(b"IEND", b"")


def label_palette(class_ids: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """uint8 [256, 3]: the palette of the label PNG, entry of a label id = its class colour."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[np.asarray(class_ids)] = class_colours(class_names)
    return palette


def write_label_png(stream: BinaryIO, label_ids: np.ndarray, palette: np.ndarray) -> None:
    """uint8 label ids [H, W] as a palette PNG (pixel = label id), row band by row band."""
    height, width = label_ids.shape
    png = PngStream(stream, width, height, palette=palette)
    for top, bottom in _bands(height, width):
        png.add_rows(label_ids[top:bottom])
    png.close()


def _render_rgb(figure: Figure) -> np.ndarray:
    """uint8 [h, w, 3]: a figure drawn at its dpi over white."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    rgb = rgba[..., :3].copy()
    clear = rgba[..., 3] < 255   # none with the default white face colour; integer blend, no float copy
    if clear.any():
        alpha = rgba[..., 3][clear].astype(np.uint32)[:, None]
        rgb[clear] = ((rgb[clear] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return rgb


def overlay_strips(width: int, present: Iterable[int], class_names: Sequence[str], num_seen: int,
                   title: str | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(title strip, legend strip), uint8 RGB [h, w, 3] or None, for an overlay ``width``
    pixels wide: the title (the file name) and the class legend of
    :func:`cagnet.viz.overlay_with_legend` for the classes ``present`` (evaluation indices;
    unseen ones marked as in every figure of :mod:`cagnet.viz`), drawn as on a 4.6 inch figure
    as wide as the image (at least 100, at most :data:`LEGEND_MAX_DPI` dpi; a strip may be
    wider than a small image)."""
    from cagnet.viz.legends import add_class_legend

    dpi = min(LEGEND_MAX_DPI, max(100.0, width / _LEGEND_WIDTH_IN))
    width_in = min(_LEGEND_WIDTH_IN, width / dpi)
    title_strip = legend_strip = None
    if title:
        figure = Figure(figsize=(width_in, 0.3), dpi=dpi)
        figure.text(0.5, 0.45, title, ha="center", va="center", fontsize=10)
        title_strip = _render_rgb(figure)
    present = sorted(present)
    if present:
        figure = Figure(figsize=(width_in, 0.05), dpi=dpi, layout="constrained")   # grows to the legend
        add_class_legend(figure, present, class_names, num_seen, class_colours(class_names), False, ncols=3)
        legend_strip = _render_rgb(figure)
    gc.collect()   # a figure and its canvas refer to each other: free their pixel buffers before the image bands
    return title_strip, legend_strip


def _hatch_period(height: int, width: int) -> int:
    """The stripe period (pixels) :func:`cagnet.viz.masks.hatch` picks for a whole image of
    this size, so that an image hatched band by band looks as if hatched at once."""
    return max(4, int(round(max(height, width) / 16.0)))


def write_overlay_png(stream: BinaryIO, image, label_ids: np.ndarray, class_ids: np.ndarray,
                      class_names: Sequence[str], num_seen: int, present: Iterable[int],
                      title: str | None = None, alpha: float = 0.5) -> None:
    """The overlay PNG, row band by row band: the title strip, the image (array [H, W, 3] or
    PIL RGB image) with the class colours of ``label_ids`` [H, W] (label ids; ``class_ids``
    gives the label id of each evaluation index) blended over it and the pixels of unseen
    classes hatched, as :func:`cagnet.viz.overlay_with_legend` draws it, then the legend strip
    of the classes ``present`` (evaluation indices; :func:`overlay_strips`), each centred on a
    white canvas as wide as the widest."""
    from cagnet.viz.masks import hatch

    height, width = label_ids.shape
    palette = label_palette(class_ids, class_names)        # colour by label id
    unseen = np.zeros(256, dtype=bool)
    unseen[np.asarray(class_ids)[num_seen:]] = True
    title_strip, legend_strip = overlay_strips(width, present, class_names, num_seen, title)
    strips = [s for s in (title_strip, legend_strip) if s is not None]
    canvas_width = max([width] + [s.shape[1] for s in strips])
    # zlib level 3: on photographs 3.5 times faster than PIL's 6 for files about 5% larger
    png = PngStream(stream, canvas_width, height + sum(s.shape[0] for s in strips), level=3)

    def add_centred(rows: np.ndarray) -> None:
        left = (canvas_width - rows.shape[1]) // 2
        if rows.shape[1] == canvas_width:
            png.add_rows(rows)
            return
        padded = np.full((rows.shape[0], canvas_width, 3), 255, dtype=np.uint8)
        padded[:, left:left + rows.shape[1]] = rows
        png.add_rows(padded)

    if title_strip is not None:
        add_centred(title_strip)
    period = _hatch_period(height, width)
    for top, bottom in _bands(height, width):
        ids = label_ids[top:bottom]
        flat = palette[ids]
        blended = (1.0 - alpha) * _image_rows(image, top, bottom).astype(np.float64) + alpha * flat
        overlay = np.clip(np.rint(blended), 0, 255).astype(np.uint8)   # as cagnet.viz.overlay_mask
        # hatch's stripes follow (row + column) of the array it is given: shifting the band by
        # `top` columns continues the stripes of the bands above it
        shift = top % period
        if shift:
            overlay, flat, where = (np.pad(a, [(0, 0), (shift, 0)] + [(0, 0)] * (a.ndim - 2))
                                    for a in (overlay, flat, unseen[ids]))
        else:
            where = unseen[ids]
        overlay = hatch(overlay, where, period=period, base=flat)[:, shift:]
        add_centred(overlay)
    if legend_strip is not None:
        add_centred(legend_strip)
    png.close()
