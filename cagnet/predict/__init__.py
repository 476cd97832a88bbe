"""Predictions on any image: label maps, overlays with a legend, the share of each class.

``python -m cagnet predict --config C --checkpoint P IMAGE_OR_FOLDER... --out DIR`` runs a
trained model on images of any size and any format PIL reads, and writes for each image

``<name>_labels.png``    the label map at the image's own size: a palette PNG whose pixel
                         values are the dataset's label ids (``labels_refined.txt``, the
                         annotation format) and whose palette holds the class colours of
                         :func:`cagnet.viz.class_palette`
``<name>_overlay.png``   the map blended over the image at the image's own size, as
                         :func:`cagnet.viz.overlay_with_legend` draws it (``(1 - alpha) *
                         image + alpha * colour``, unseen classes hatched), the file name
                         above it and the legend of the classes present below it (unseen
                         classes marked as in every figure of :mod:`cagnet.viz`)

and ``predictions.jsonl``: one JSON object per image (file, size, output files, protocol,
seen penalty, and the pixel share of every class), written as soon as the image is done.

How a prediction is made (:meth:`Predictor.label_bands`), as :mod:`cagnet.evaluate` does it:
the image (EXIF orientation applied) is normalised and warped to the config's
``data.test_size``, the model gives class logits on its output-stride-8 grid,
``seen_penalty`` is subtracted from the seen-class logits, and

* ``full`` (default): the logits are upsampled bilinearly (``align_corners=False``) to the
  image's size and the argmax taken there (the ``full`` evaluation protocol);
* ``original``: the argmax is taken on the logit grid (what the ``original`` protocol scores)
  and the label grid is nearest-resized to the image's size.

Memory. Beyond the decoded image (PIL keeps 4 bytes per pixel) and one uint8 label map
(1 byte per pixel), every full-size step works in bands whose size does not depend on the
image: the warp reads only the rows it interpolates (:func:`warp_image`), the ``full``
upsampling is done in bands of columns (:func:`iter_upsampled_argmax`), the class shares are
counted per band, and both PNGs are encoded row band by row band (:class:`PngStream`), so no
full-size float array, figure or second image is ever made. Images above ``max_pixels``
(:data:`DEFAULT_MAX_PIXELS`, ``--max-pixels``) are refused in one line naming the file,
before they are decoded.

File names. Inputs are found below folders by following symbolic links (a folder reached
twice, e.g. through a link to one of its ancestors, is read once). A name that is not valid
UTF-8 is processed like any other: messages, output names and the ``image`` field of the
record show it with each undecodable byte written as ``\\xNN`` (:func:`display_path`), and
the record then also holds ``image_hex``, the exact bytes of the path in hex
(``bytes.fromhex(record["image_hex"])``); without ``image_hex``, ``image`` is the exact path.

Failures. Input files are only read. A file that cannot be read as an image, or that is
above the pixel limit, is reported in one line and the other files are still processed.
Each output is written atomically (:func:`cagnet.files.atomic_write`), and none is replaced
without ``force``. An image's outputs are written as a unit: when a later step for the same
image fails (its overlay, its record), what was already written for it is removed. An
operating-system error while writing (a full disk, no permission, an ``--out`` below a file)
stops the run with a one-line :class:`cagnet.errors.CagnetError` naming the path;
``predictions.jsonl`` then holds the records of the images done before it (and their outputs
are in place).
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from cagnet.data.datasets import DatasetInfo
from cagnet.data.transforms import TestTransform
from cagnet.errors import CagnetError, ConfigError
from cagnet.evaluate import PROTOCOLS, calibrated_logits, predict_logits
from cagnet.files import atomic_write, refuse_existing
from cagnet.predict.images import (
    BAND_PIXELS,
    DEFAULT_MAX_PIXELS,
    WHOLE_WARP_PIXELS,
    _bands,
    _check_image,
    _image_size,
    _nearest_indices,
    display_path,
    open_image,
    warp_image,
)
from cagnet.predict.inputs import PredictInput, collect_inputs
from cagnet.predict.png import (
    PngStream,
    class_colours,
    label_palette,
    overlay_strips,
    write_label_png,
    write_overlay_png,
)
from cagnet.predict.upsample import (
    UPSAMPLE_BYTES,
    class_argmax,
    iter_upsampled_argmax,
    iter_upsampled_logits,
    upsampled_argmax,
)

__all__ = ["BAND_PIXELS", "DEFAULT_MAX_PIXELS", "LABELS_SUFFIX", "OVERLAY_SUFFIX", "PngStream", "PredictInput",
           "PredictRun", "Prediction", "Predictor", "RECORDS_FILE", "UPSAMPLE_BYTES", "WHOLE_WARP_PIXELS", "class_argmax",
           "class_colours", "collect_inputs", "display_path", "iter_upsampled_argmax", "iter_upsampled_logits",
           "label_palette", "open_image", "overlay_png", "overlay_strips", "palette_png", "predict_files",
           "present_classes", "print_error", "upsampled_argmax", "warp_image", "write_label_png", "write_overlay_png"]

LABELS_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.png"
RECORDS_FILE = "predictions.jsonl"


def _shares(counts: np.ndarray, class_names: Sequence[str], class_ids: np.ndarray,
            num_seen: int) -> list[dict[str, Any]]:
    """Every class in evaluation order: ``{"id", "name", "unseen", "share"}`` from pixel
    counts [K] (the shares sum to 1)."""
    total = max(int(counts.sum()), 1)
    return [{"id": int(class_ids[k]), "name": name, "unseen": k >= num_seen,
             "share": round(float(counts[k]) / total, 6)}
            for k, name in enumerate(class_names)]


@dataclass
class Prediction:
    """One image's prediction (in memory; :func:`predict_files` writes files without it).

    Attributes:
        image: the image, uint8 RGB [H, W, 3].
        labels: int64 [H, W], evaluation indices (0..S-1 seen, S..S+U-1 unseen classes).
        class_names: names in evaluation order.
        class_ids: the dataset's label id of each evaluation index, int64 [S+U].
        num_seen: S.
        source: where the image came from (a path), if known.
    """

    image: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    class_ids: np.ndarray
    num_seen: int
    source: str | None = None

    def label_ids(self) -> np.ndarray:
        """uint8 [H, W]: the dataset's label ids (as in its annotations) of the predicted classes."""
        return self.class_ids.astype(np.uint8)[self.labels]

    def class_shares(self) -> list[dict[str, Any]]:
        """Every class in evaluation order: ``{"id", "name", "unseen", "share"}``, ``share`` =
        fraction of the image's pixels predicted as it (the shares sum to 1)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        return _shares(counts, self.class_names, self.class_ids, self.num_seen)

    def overlay(self, alpha: float = 0.5, title: str | None = None) -> Figure:
        """The label map over the image with a legend of the classes present (unseen ones
        marked), as a matplotlib figure (for notebooks; :func:`overlay_png` for a file)."""
        from cagnet.viz import overlay_with_legend

        return overlay_with_legend(self.image, self.labels, self.class_names, self.num_seen, alpha=alpha,
                                   title=title)


# ------------------------------------------------------------------------------ predictor

class Predictor:
    """A model and what it needs to label images: the classes, the input size and normalisation.

    Args:
        model: a :class:`cagnet.models.CaGNet` (or any module returning [N, S+U+1, h, w] logits).
        info: the dataset's classes (:class:`cagnet.data.DatasetInfo`).
        test_size: side of the square the images are warped to (None = each image's own size;
            the model then runs on the full image, in memory that grows with it).
        normalization: ``caffe`` or ``imagenet`` (:mod:`cagnet.data.transforms`).
        device: where the model runs (default: where its parameters are).
        amp: ``none``, ``bf16`` or ``fp16`` autocast for the forward pass.
    """

    def __init__(self, model: nn.Module, info: DatasetInfo, *, test_size: int | None, normalization: str = "caffe",
                 device: torch.device | str | None = None, amp: str = "none") -> None:
        self.model = model
        self.info = info
        self.transform = TestTransform(size=test_size, normalization=normalization)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.amp = amp
        self.load_report = None

    @classmethod
    def from_config(cls, config, model: nn.Module, info: DatasetInfo) -> "Predictor":
        """A predictor with the config's ``data.test_size``, ``data.normalization`` and ``runtime.amp``."""
        return cls(model, info, test_size=config.data.test_size, normalization=config.data.normalization,
                   amp=config.runtime.amp)

    @classmethod
    def from_checkpoint(cls, config, checkpoint: str | os.PathLike, progress: bool = False) -> "Predictor":
        """The config's model with ``checkpoint`` loaded (:func:`cagnet.evaluate.load_model`, the
        loading path of ``evaluate``); ``load_report`` says what was loaded."""
        from cagnet.evaluate import load_model

        model, info, report, device = load_model(config, str(checkpoint), progress=progress)
        predictor = cls(model, info, test_size=config.data.test_size, normalization=config.data.normalization,
                        device=device, amp=config.runtime.amp)
        predictor.load_report = report
        return predictor

    @property
    def num_classes(self) -> int:
        return self.info.num_seen + self.info.num_unseen

    def class_logits(self, image, seen_penalty: float = 0.0) -> torch.Tensor:
        """Calibrated class logits [1, S+U, h, w] (float32, on the model's device) of an uint8
        RGB image (array [H, W, 3] or PIL RGB image) warped to the input size (:func:`warp_image`)."""
        _check_image(image)
        inputs = warp_image(image, self.transform)[None].to(self.device)
        logits = predict_logits(self.model, inputs, self.amp)
        return calibrated_logits(logits, self.num_classes, seen_penalty=float(seen_penalty),
                                 num_seen=self.info.num_seen)

    def label_bands(self, image, protocol: str = "full", seen_penalty: float = 0.0,
                    max_bytes: int = UPSAMPLE_BYTES) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """The label map of an image (array [H, W, 3] or PIL RGB image) block by block: yields
        (rows, columns, uint8 evaluation indices [len(rows), len(columns)]) covering the image
        once, each block about ``max_bytes`` / 4 pixels or less (module docstring)."""
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if self.num_classes > 256:
            raise ConfigError(f"{self.num_classes} classes: label maps hold at most 256 (uint8)")
        height, width = _image_size(image)
        logits = self.class_logits(image, seen_penalty)
        if protocol == "full":
            for columns, labels in iter_upsampled_argmax(logits, (height, width), max_bytes):
                yield slice(0, height), columns, labels.cpu().numpy()
            return
        grid = class_argmax(logits[0]).cpu().numpy()    # [h, w]
        rows = _nearest_indices(grid.shape[0], height)
        columns = _nearest_indices(grid.shape[1], width)
        for top, bottom in _bands(height, width, max(1, max_bytes // 4)):
            yield slice(top, bottom), slice(0, width), grid[rows[top:bottom]][:, columns]

    def label_map(self, image: np.ndarray, protocol: str = "full", seen_penalty: float = 0.0) -> np.ndarray:
        """int64 [H, W] evaluation indices of an uint8 RGB image [H, W, 3] (module docstring)."""
        labels = np.empty(_image_size(image), dtype=np.int64)
        for rows, columns, block in self.label_bands(image, protocol, seen_penalty):
            labels[rows, columns] = block
        return labels

    def predict(self, image: np.ndarray, protocol: str = "full", seen_penalty: float = 0.0,
                source: str | None = None) -> Prediction:
        """The :class:`Prediction` of an uint8 RGB image [H, W, 3]."""
        return Prediction(image=np.asarray(image), labels=self.label_map(image, protocol, seen_penalty),
                          class_names=self.info.eval_class_names, class_ids=self.info.eval_ids.copy(),
                          num_seen=self.info.num_seen, source=source)

    def predict_file(self, path: str | os.PathLike, protocol: str = "full", seen_penalty: float = 0.0,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Prediction:
        """:meth:`predict` of an image file (:func:`open_image`: EXIF orientation applied); a
        file PIL cannot read fully, or above ``max_pixels``, raises :class:`DatasetError` naming it."""
        image = np.asarray(open_image(path, max_pixels))
        return self.predict(image, protocol, seen_penalty, source=str(path))


def palette_png(prediction: Prediction) -> bytes:
    """The label map as a palette PNG: pixel = label id, palette entry of a label id = its class colour."""
    buffer = io.BytesIO()
    write_label_png(buffer, prediction.label_ids(), label_palette(prediction.class_ids, prediction.class_names))
    return buffer.getvalue()


def overlay_png(prediction: Prediction, title: str | None = None) -> bytes:
    """The overlay PNG of a prediction (:func:`write_overlay_png`), as bytes."""
    buffer = io.BytesIO()
    present = np.flatnonzero(np.bincount(prediction.labels.ravel(), minlength=len(prediction.class_names)))
    write_overlay_png(buffer, prediction.image, prediction.label_ids(), prediction.class_ids, prediction.class_names,
                      prediction.num_seen, present.tolist(), title)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ inputs and outputs

def output_paths(item: PredictInput, out_dir: Path) -> tuple[Path, Path]:
    return out_dir / f"{item.name}{LABELS_SUFFIX}", out_dir / f"{item.name}{OVERLAY_SUFFIX}"


def _check_outputs(inputs: list[PredictInput], out_dir: Path, force: bool) -> None:
    """Refuse two inputs with the same outputs, an output that is an input, and (without
    ``force``) any existing output, before anything is written."""
    owner: dict[str, Path] = {}
    for item in inputs:
        previous = owner.setdefault(item.name, item.path)
        if previous != item.path:
            raise CagnetError(f"{display_path(previous)} and {display_path(item.path)} would both write "
                              f"{display_path(out_dir / item.name)}{LABELS_SUFFIX}; predict them into different "
                              f"--out folders")
    sources = {item.path.resolve() for item in inputs}
    targets = [p for item in inputs for p in output_paths(item, out_dir)] + [out_dir / RECORDS_FILE]
    for target in targets:
        if target.resolve() in sources:
            raise CagnetError(f"{display_path(target)}: is an input image and would be overwritten; choose "
                              f"another --out folder")
    refuse_existing(targets, force)


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that is a file or lies below one, before anything is read."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CagnetError(f"{display_path(out_dir)}: exists and is not a folder")
    for parent in out_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CagnetError(f"{display_path(out_dir)}: cannot be made, {display_path(parent)} is a file")
            return


def _os_error(err: OSError, path: str | os.PathLike) -> CagnetError:
    """A one-line :class:`CagnetError` naming ``path`` for an error of the system."""
    return CagnetError(f"{display_path(path)}: {err.strerror or err}")


class _RecordsFile:
    """``predictions.jsonl``, one complete line added per labelled image as soon as it is done.

    The first line replaces any previous file atomically (:func:`atomic_write`); later lines
    are appended and flushed to disk. A line that cannot be written is cut off again, so that
    the file always holds the complete records of the images done.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.size = 0

    def add(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode("utf-8")
        try:
            if self.fd is None:
                atomic_write(self.path, lambda stream: stream.write(line))
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            else:
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(self.fd, view):]
                    os.fsync(self.fd)
                except OSError:
                    os.ftruncate(self.fd, self.size)   # no half line left behind
                    raise
        except OSError as err:
            raise _os_error(err, self.path) from None
        self.size += len(line)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class PredictRun:
    """What :func:`predict_files` did: ``records`` (one per labelled image, as written to
    ``predictions.jsonl``) and ``errors`` (one line per input that could not be labelled)."""

    out_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def predict_files(predictor: Predictor, sources: Sequence[str | bytes | os.PathLike], out_dir: str | os.PathLike, *,
                  protocol: str = "full", seen_penalty: float = 0.0, force: bool = False,
                  progress: bool = True, report=None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> PredictRun:
    """Label every image of ``sources`` (files and folders, :func:`collect_inputs`) and write
    its label map, overlay and JSON record into ``out_dir`` (module docstring).

    Problems with the output folder (a file, or below one; two inputs with the same outputs;
    existing outputs without ``force``) raise :class:`CagnetError` before anything is written.
    An input that cannot be read, or has more than ``max_pixels`` pixels (None = no limit), is
    recorded in ``errors`` (and passed to ``report``, e.g. ``print``, at once) and the others
    are processed. Each image's record is added to ``predictions.jsonl`` once its outputs are
    written; an error of the system while writing raises :class:`CagnetError` naming the path,
    after removing what was written for that image (the images before it stay complete).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not math.isfinite(seen_penalty):
        raise ConfigError(f"seen penalty must be a finite number, got {seen_penalty!r}")
    if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) != max_pixels
                                   or max_pixels < 1):
        raise ConfigError(f"max pixels must be a positive whole number, got {max_pixels!r}")
    out_dir = Path(os.fsdecode(out_dir))
    _check_out_dir(out_dir)
    inputs, problems = collect_inputs(sources, out_dir)
    _check_outputs(inputs, out_dir, force)
    run = PredictRun(out_dir=out_dir)
    for problem in problems:
        _report(run, problem, report)
    if not inputs:
        return run
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error(err, out_dir) from None

    from tqdm.auto import tqdm

    records = _RecordsFile(out_dir / RECORDS_FILE)
    try:
        for item in tqdm(inputs, desc="predict", unit="image", disable=not progress or len(inputs) < 2,
                         leave=False):
            try:
                image = open_image(item.path, None if max_pixels is None else int(max_pixels))
            except CagnetError as err:   # not an image, truncated, unreadable, too large: this file only
                _report(run, str(err), report)
                continue
            record = _predict_one(predictor, image, item, out_dir, protocol, seen_penalty, records)
            del image   # the next image is decoded without this one in memory
            run.records.append(record)
    finally:
        records.close()
    return run


def _predict_one(predictor: Predictor, image, item: PredictInput, out_dir: Path, protocol: str,
                 seen_penalty: float, records: _RecordsFile) -> dict[str, Any]:
    """Write one image's label map, overlay and record; on any failure, remove its outputs
    written so far and raise (an error of the system as a :class:`CagnetError` naming the path)."""
    info = predictor.info
    class_names, class_ids = info.eval_class_names, info.eval_ids
    height, width = _image_size(image)
    lookup = np.asarray(class_ids).astype(np.uint8)          # evaluation index -> label id
    label_ids = np.empty((height, width), dtype=np.uint8)    # the one full-size label map
    counts = np.zeros(len(class_names), dtype=np.int64)
    for rows, columns, block in predictor.label_bands(image, protocol, seen_penalty):
        counts += np.bincount(block.ravel(), minlength=len(class_names))[:len(class_names)]
        label_ids[rows, columns] = lookup[block]
    palette = label_palette(class_ids, class_names)
    labels_path, overlay_path = output_paths(item, out_dir)
    written: list[Path] = []
    target = labels_path
    try:
        atomic_write(labels_path, lambda stream: write_label_png(stream, label_ids, palette))
        written.append(labels_path)
        target = overlay_path
        atomic_write(overlay_path, lambda stream: write_overlay_png(
            stream, image, label_ids, class_ids, class_names, info.num_seen, np.flatnonzero(counts).tolist(),
            title=display_path(item.path.name)))
        written.append(overlay_path)
        record = {"image": display_path(item.path), "width": width, "height": height,
                  "labels": display_path(labels_path), "overlay": display_path(overlay_path),
                  "protocol": protocol, "seen_penalty": float(seen_penalty),
                  "classes": _shares(counts, class_names, class_ids, info.num_seen)}
        raw = os.fsencode(item.path)
        if display_path(item.path).encode("utf-8") != raw:   # not valid UTF-8: keep the exact bytes
            record["image_hex"] = raw.hex()
        target = records.path
        records.add(record)
    except BaseException as err:
        for path in written:   # no outputs of an image without its record
            try:
                path.unlink()
            except OSError:
                pass
        if isinstance(err, OSError):
            raise _os_error(err, target) from None
        raise
    return record


def _report(run: PredictRun, problem: str, report) -> None:
    line = " ".join(problem.split())   # one line, whatever the reader's message held
    run.errors.append(line)
    if report is not None:
        report(line)


def print_error(line: str) -> None:
    """Print ``error: <line>`` on stderr without breaking a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(f"error: {line}", file=sys.stderr)


def present_classes(record: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The classes of a ``predictions.jsonl`` record with a non-zero share, largest first."""
    return sorted((c for c in record["classes"] if c["share"] > 0), key=lambda c: -c["share"])
