"""Predictions on any image: label maps, overlays with a legend, the share of each class.

``python -m cagnet predict --config C --checkpoint P IMAGE_OR_FOLDER... --out DIR`` runs a
trained model on images of any size and any format PIL reads, and writes for each image

``<name>_labels.png``    the label map at the image's own size: a palette PNG whose pixel
                         values are the dataset's label ids (``labels_refined.txt``, the
                         annotation format) and whose palette holds the class colours of
                         :func:`cagnet.viz.class_palette`
``<name>_overlay.png``   the map blended over the image, with a legend of the classes present
                         (unseen classes read "name (unseen)"), :func:`cagnet.viz.overlay_with_legend`

and ``predictions.jsonl``: one JSON object per image (file, size, output files, protocol,
seen penalty, and the pixel share of every class).

How a prediction is made (:meth:`Predictor.predict`), as :mod:`cagnet.evaluate` does it: the
image (EXIF orientation applied) is normalised and warped to the config's ``data.test_size``,
the model gives class logits on its output-stride-8 grid, ``seen_penalty`` is subtracted from
the seen-class logits, and

* ``full`` (default): the logits are upsampled bilinearly to the image's size and the argmax
  taken there (the ``full`` evaluation protocol; computed in bands of rows, so a large photo
  needs little memory);
* ``original``: the argmax is taken on the logit grid (what the ``original`` protocol scores)
  and the label grid is nearest-resized to the image's size.

Input files are only read. Outputs are written atomically, and none is replaced without
``force``. A file that cannot be read as an image is reported in one line and the other files
are still processed.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from cagnet.data.datasets import DatasetInfo, read_image
from cagnet.data.transforms import TestTransform, resize_labels
from cagnet.errors import CagnetError, ConfigError
from cagnet.evaluate import PROTOCOLS, calibrated_logits, predict_logits
from cagnet.files import atomic_write, atomic_write_text, refuse_existing

LABELS_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.png"
RECORDS_FILE = "predictions.jsonl"
#: upper bound of the float32 logits upsampled at once (bytes) by the ``full`` protocol
UPSAMPLE_BYTES = 64 * 2 ** 20


def class_colours(class_names: Sequence[str]) -> np.ndarray:
    """uint8 [len(class_names), 3]: the colour of each class (evaluation order), as the
    figures of :mod:`cagnet.viz` draw it."""
    from cagnet.viz import class_palette

    return class_palette(list(class_names))


@dataclass
class Prediction:
    """One image's prediction.

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
        total = max(int(self.labels.size), 1)
        return [{"id": int(self.class_ids[k]), "name": name, "unseen": k >= self.num_seen,
                 "share": round(float(counts[k]) / total, 6)}
                for k, name in enumerate(self.class_names)]

    def overlay(self, alpha: float = 0.5, title: str | None = None) -> Figure:
        """The label map over the image with a legend of the classes present (unseen ones marked)."""
        from cagnet.viz import overlay_with_legend

        return overlay_with_legend(self.image, self.labels, self.class_names, self.num_seen, alpha=alpha,
                                   title=title)


def upsampled_argmax(logits: torch.Tensor, size: Sequence[int], max_bytes: int = UPSAMPLE_BYTES) -> torch.Tensor:
    """Argmax over classes of logits [1, K, h, w] upsampled bilinearly (``align_corners=False``)
    to ``size`` = (H, W): LongTensor [H, W].

    The same as ``F.interpolate(logits, size, mode="bilinear").argmax(1)`` (to float rounding),
    without holding the [K, H, W] upsampled logits: bilinear interpolation is separable, so the
    columns are interpolated once ([K, h, W]) and the rows band by band, each band at most
    ``max_bytes`` of float32.
    """
    height, width = int(size[0]), int(size[1])
    num_classes, grid_h = logits.shape[1], logits.shape[2]
    wide = F.interpolate(logits, size=(grid_h, width), mode="bilinear", align_corners=False)[0]  # [K, h, W]
    # source row of each output row, as F.interpolate computes it (half-pixel centres, clamped at 0)
    rows = ((torch.arange(height, dtype=torch.float64, device=logits.device) + 0.5) * (grid_h / height) - 0.5)
    rows = rows.clamp(min=0)
    top = rows.floor().long().clamp(max=grid_h - 1)
    bottom = (top + 1).clamp(max=grid_h - 1)
    weight = (rows - top).to(logits.dtype)
    band = max(1, max_bytes // max(1, 4 * num_classes * width))
    labels = torch.empty(height, width, dtype=torch.long, device=logits.device)
    for start in range(0, height, band):
        end = min(start + band, height)
        w = weight[start:end].view(1, -1, 1)
        values = wide[:, top[start:end]] * (1 - w) + wide[:, bottom[start:end]] * w   # [K, band, W]
        labels[start:end] = values.argmax(dim=0)
    return labels


class Predictor:
    """A model and what it needs to label images: the classes, the input size and normalisation.

    Args:
        model: a :class:`cagnet.models.CaGNet` (or any module returning [N, S+U+1, h, w] logits).
        info: the dataset's classes (:class:`cagnet.data.DatasetInfo`).
        test_size: side of the square the images are warped to (None = each image's own size).
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

    def label_map(self, image: np.ndarray, protocol: str = "full", seen_penalty: float = 0.0) -> np.ndarray:
        """int64 [H, W] evaluation indices of an uint8 RGB image [H, W, 3] (module docstring)."""
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ConfigError(f"image must be uint8 RGB [H, W, 3], got shape {image.shape} dtype {image.dtype}")
        size = image.shape[:2]
        inputs = self.transform.transform_image(image)[None].to(self.device)
        logits = predict_logits(self.model, inputs, self.amp)
        logits = calibrated_logits(logits, self.num_classes, seen_penalty=float(seen_penalty),
                                   num_seen=self.info.num_seen)
        if protocol == "full":
            labels = upsampled_argmax(logits, size)
        else:
            labels = resize_labels(logits.argmax(dim=1)[0], size)
        return labels.cpu().numpy()

    def predict(self, image: np.ndarray, protocol: str = "full", seen_penalty: float = 0.0,
                source: str | None = None) -> Prediction:
        """The :class:`Prediction` of an uint8 RGB image [H, W, 3]."""
        return Prediction(image=np.asarray(image), labels=self.label_map(image, protocol, seen_penalty),
                          class_names=self.info.eval_class_names, class_ids=self.info.eval_ids.copy(),
                          num_seen=self.info.num_seen, source=source)

    def predict_file(self, path: str | os.PathLike, protocol: str = "full", seen_penalty: float = 0.0) -> Prediction:
        """:meth:`predict` of an image file (EXIF orientation applied); a file PIL cannot read
        fully raises :class:`cagnet.errors.DatasetError` naming it."""
        return self.predict(read_image(path, exif_orientation=True), protocol, seen_penalty, source=str(path))


# ------------------------------------------------------------------------------ files

def palette_png(prediction: Prediction) -> bytes:
    """The label map as a palette PNG: pixel = label id, palette entry of a label id = its class colour."""
    from PIL import Image

    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[prediction.class_ids] = class_colours(prediction.class_names)
    image = Image.fromarray(prediction.label_ids())   # mode L; putpalette makes it P, values kept
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(prediction: Prediction, title: str | None = None) -> bytes:
    """:meth:`Prediction.overlay` as PNG bytes, at a resolution that follows the image's width."""
    figure = prediction.overlay(title=title)
    width = prediction.image.shape[1]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=int(min(400, max(100, width / 4))))
    return buffer.getvalue()


@dataclass
class PredictInput:
    """An input file and the name its outputs get (``<name>_labels.png``, ``<name>_overlay.png``)."""

    path: Path
    name: str


def collect_inputs(sources: Sequence[str | os.PathLike], out_dir: str | os.PathLike
                   ) -> tuple[list[PredictInput], list[str]]:
    """(inputs, problems) of files and folders given on the command line.

    A file is taken as it is (named by its stem); a folder contributes every file below it whose
    name does not start with '.', named by its path relative to the folder without the suffix
    (subfolders are kept in the output folder), except the files of ``out_dir`` when it lies
    inside the folder. A file named twice is taken once. A missing path or an empty folder is a
    problem (one line naming it).
    """
    out_dir = Path(out_dir).resolve()
    inputs: list[PredictInput] = []
    problems: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            inputs.append(PredictInput(path, path.stem))
        elif path.is_dir():
            root = path.resolve()
            skip_out = out_dir != root and root in out_dir.parents
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts)
                           and not (skip_out and out_dir in p.resolve().parents))
            if not found:
                problems.append(f"{path}: no files in this folder")
            inputs.extend(PredictInput(p, p.relative_to(path).with_suffix("").as_posix()) for p in found)
        else:
            problems.append(f"{path}: no such file or folder")
    unique: dict[tuple[Path, str], PredictInput] = {}
    for item in inputs:
        unique.setdefault((item.path.resolve(), item.name), item)
    return list(unique.values()), problems


def output_paths(item: PredictInput, out_dir: Path) -> tuple[Path, Path]:
    return out_dir / f"{item.name}{LABELS_SUFFIX}", out_dir / f"{item.name}{OVERLAY_SUFFIX}"


def _check_outputs(inputs: list[PredictInput], out_dir: Path, force: bool) -> None:
    """Refuse two inputs with the same outputs, an output that is an input, and (without
    ``force``) any existing output, before anything is written."""
    owner: dict[str, Path] = {}
    for item in inputs:
        previous = owner.setdefault(item.name, item.path)
        if previous != item.path:
            raise CagnetError(f"{previous} and {item.path} would both write {out_dir / item.name}{LABELS_SUFFIX}; "
                              f"predict them into different --out folders")
    sources = {item.path.resolve() for item in inputs}
    targets = [p for item in inputs for p in output_paths(item, out_dir)] + [out_dir / RECORDS_FILE]
    for target in targets:
        if target.resolve() in sources:
            raise CagnetError(f"{target}: is an input image and would be overwritten; choose another --out folder")
    refuse_existing(targets, force)


@dataclass
class PredictRun:
    """What :func:`predict_files` did: ``records`` (one per labelled image, as written to
    ``predictions.jsonl``) and ``errors`` (one line per input that could not be labelled)."""

    out_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def predict_files(predictor: Predictor, sources: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                  protocol: str = "full", seen_penalty: float = 0.0, force: bool = False,
                  progress: bool = True, report=None) -> PredictRun:
    """Label every image of ``sources`` (files and folders, :func:`collect_inputs`) and write
    its label map, overlay and JSON record into ``out_dir`` (module docstring).

    Problems with the output folder (two inputs with the same outputs, existing outputs without
    ``force``) raise :class:`CagnetError` before anything is written. An input that cannot be
    read is recorded in ``errors`` (and passed to ``report``, e.g. ``print``, at once) and the
    others are processed. ``predictions.jsonl`` is written at the end, also when interrupted.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not math.isfinite(seen_penalty):
        raise ConfigError(f"seen penalty must be a finite number, got {seen_penalty!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CagnetError(f"{out_dir}: exists and is not a folder")
    inputs, problems = collect_inputs(sources, out_dir)
    _check_outputs(inputs, out_dir, force)
    run = PredictRun(out_dir=out_dir)
    for problem in problems:
        _report(run, problem, report)

    from tqdm.auto import tqdm

    try:
        for item in tqdm(inputs, desc="predict", unit="image", disable=not progress or len(inputs) < 2,
                         leave=False):
            try:
                image = read_image(item.path, exif_orientation=True)
            except CagnetError as err:   # not an image, truncated, unreadable: this file only
                _report(run, str(err), report)
                continue
            prediction = predictor.predict(image, protocol, seen_penalty, source=str(item.path))
            labels_path, overlay_path = output_paths(item, out_dir)
            atomic_write(labels_path, lambda stream: stream.write(palette_png(prediction)))
            atomic_write(overlay_path, lambda stream: stream.write(overlay_png(prediction, title=item.path.name)))
            height, width = prediction.labels.shape
            run.records.append({"image": str(item.path), "width": width, "height": height,
                                "labels": str(labels_path), "overlay": str(overlay_path), "protocol": protocol,
                                "seen_penalty": float(seen_penalty), "classes": prediction.class_shares()})
    finally:
        if run.records:
            atomic_write_text(out_dir / RECORDS_FILE, "".join(json.dumps(r) + "\n" for r in run.records))
    return run


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
