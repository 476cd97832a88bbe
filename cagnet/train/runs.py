"""Run folders of the training engine: their files, their recipes and finished runs.

A run folder (default ``runs/<config name>/<schedule>``, :func:`default_out_dir`) receives:

``config.yaml``       the resolved configuration
``log.jsonl``         one JSON object per iteration: every loss (mean over processes),
                      learning rates, step kind, seconds (wall time per iteration, averaged
                      over the iterations between two checks); written in blocks, at each check
``eval.jsonl``        GZSL scores of the periodic and final evaluations on ``data.eval_split``
                      (the validation split of the embedded benchmark, the test split of the
                      original datasets)
``checkpoint.pt``     the latest checkpoint (:mod:`cagnet.train.checkpoint`), replaced
                      atomically every ``checkpoint_interval`` iterations and at the end
``loss_curves.png``, ``eval_curves.png``, ``predictions.png``   figures

The JSON-lines files are written by :class:`JsonLines` and read by :func:`read_jsonl`.
:func:`finished_run` tells whether a run folder already holds the finished run of a config's
recipe (:func:`run_recipe`: what decides the weights), so that notebooks, the benchmark and the
ablation reuse it instead of training again; :func:`load_run_model` loads its model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from cagnet.config import SCHEDULE_NAMES, TrainConfig
from cagnet.config_io import to_dict
from cagnet.data.datasets import DatasetInfo
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.errors import CheckpointError, ConfigError
from cagnet.models import load_checkpoint
from cagnet.train import checkpoint as ckpt
from cagnet.train.distributed import resolve_device
from cagnet.train.loading import build_model, prepare_dataset


def default_out_dir(config: TrainConfig, schedule: str) -> Path:
    """``runs/<config name>/<schedule>`` (relative to the working directory)."""
    return Path("runs") / config.name / schedule


class JsonLines:
    """Append-only JSON-lines file (one flush per record, so a crash loses at most one)."""

    def __init__(self, path: Path, truncate: bool) -> None:
        self.path = path
        self.stream = open(path, "w" if truncate else "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.write_many([record])

    def write_many(self, records: list[dict]) -> None:
        if records:
            self.stream.write("".join(json.dumps(record, allow_nan=True) + "\n" for record in records))
            self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a ``log.jsonl`` / ``eval.jsonl`` file (empty list when missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_after(path: Path, iteration: int) -> None:
    """Drop records past ``iteration`` (written after the checkpoint a run resumes from)."""
    kept = [r for r in read_jsonl(path) if r.get("iteration", 0) <= iteration]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def write_run_figures(folder: str | Path, model: torch.nn.Module, samples, info: DatasetInfo,
                      normalization: str, device: torch.device, amp: str = "none", count: int = 4) -> None:
    """Write a run folder's figures: ``loss_curves.png`` (its ``log.jsonl``), ``eval_curves.png``
    (its ``eval.jsonl``, when it has records) and ``predictions.png`` (ground truth and
    prediction of ``model`` on the first ``count`` images of ``samples``, a scored split whose
    images were normalised with ``normalization``). The model keeps its train / eval mode."""
    from cagnet import viz
    from cagnet.data.transforms import denormalize_image
    from cagnet.evaluate import predict_labels, predict_logits

    folder = Path(folder)
    figures = {"loss_curves.png": viz.plot_loss_curves(read_jsonl(folder / "log.jsonl"))}
    evaluations = read_jsonl(folder / "eval.jsonl")
    if evaluations:
        figures["eval_curves.png"] = viz.plot_eval_curves(evaluations)
    count = min(count, len(samples))
    if count:
        images, labels, predictions = [], [], []
        num_classes = info.num_seen + info.num_unseen
        for index in range(count):
            sample = samples[index]
            logits = predict_logits(model, sample["image"][None].to(device), amp)
            predictions.append(predict_labels(logits, num_classes, sample["image"].shape[-2:])[0].cpu().numpy())
            images.append(denormalize_image(sample["image"], normalization))
            labels.append(sample["label"].numpy())
        figures["predictions.png"] = viz.plot_predictions(images, labels, predictions, info.eval_class_names,
                                                          info.num_seen, IGNORE_INDEX)
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=90)


def run_recipe(config_data: Mapping[str, Any], schedule: str) -> dict[str, Any]:
    """What decides the weights of a run of ``schedule``, as plain data.

    ``config_data`` is a configuration as plain data (:func:`cagnet.config_io.to_dict` of a
    :class:`~cagnet.config.TrainConfig`, or the ``config`` of a training checkpoint). The
    recipe is that configuration without its ``runtime`` settings (device, threads, logging
    intervals: they do not change what is learnt) and without ``data.preload`` (the same batches
    either way), but with ``runtime.seed`` (as ``seed``),
    and with the schedules of the chain up to ``schedule`` only (``step1`` -> ``mixed`` ->
    ``st`` -> ``st_mixed``; a run also depends on the runs it starts from, not on later ones).
    """
    if schedule not in SCHEDULE_NAMES:
        raise ConfigError(f"unknown schedule {schedule!r} (expected one of {', '.join(SCHEDULE_NAMES)})")
    chain = SCHEDULE_NAMES[:SCHEDULE_NAMES.index(schedule) + 1]
    recipe = {key: value for key, value in config_data.items() if key not in ("runtime", "schedules")}
    if isinstance(recipe.get("data"), Mapping):  # where the batches are prepared, not which ones
        recipe["data"] = {key: value for key, value in recipe["data"].items() if key != "preload"}
    recipe["seed"] = (config_data.get("runtime") or {}).get("seed")
    schedules = config_data.get("schedules") or {}
    recipe["schedules"] = {name: schedules.get(name) for name in chain}
    return recipe


def finished_run(folder: str | Path, schedule: str, config: TrainConfig) -> bool:
    """True when ``folder`` holds a finished run of ``schedule`` with the recipe of ``config``.

    Finished: ``checkpoint.pt`` is a training checkpoint of ``schedule`` at the schedule's
    last iteration, ``eval.jsonl`` ends with the final evaluation of that iteration, and the
    checkpoint's configuration has the same :func:`run_recipe` as ``config`` (runtime
    settings other than the seed may differ). A missing or unreadable checkpoint is not a
    finished run. Whether the run it started from (``init_from``) was replaced since is not
    checked.
    """
    folder = Path(folder)
    path = folder / ckpt.CHECKPOINT_NAME
    if not path.is_file():
        return False
    try:
        saved = ckpt.load_training_checkpoint(path)
    except CheckpointError:
        return False
    iterations = config.schedule(schedule).iterations
    evaluations = read_jsonl(folder / "eval.jsonl")
    return (saved.get("schedule") == schedule and saved.get("iteration") == iterations
            and bool(evaluations) and evaluations[-1].get("iteration") == iterations
            and run_recipe(saved.get("config") or {}, schedule) == run_recipe(to_dict(config), schedule))


def current_run(runs_root: str | Path, schedule: str, config: TrainConfig) -> bool:
    """True when ``runs_root/<schedule>`` holds a :func:`finished_run` of ``config``'s recipe
    that is not older than the run it started from (``runs_root/<init_from>``, when the
    schedule has one): a run whose starting point was trained again since is out of date."""
    runs_root = Path(runs_root)
    folder = runs_root / schedule
    if not finished_run(folder, schedule, config):
        return False
    upstream = config.schedule(schedule).init_from
    if upstream is None:
        return True
    upstream_checkpoint = runs_root / upstream / ckpt.CHECKPOINT_NAME
    return (upstream_checkpoint.is_file()
            and (folder / ckpt.CHECKPOINT_NAME).stat().st_mtime >= upstream_checkpoint.stat().st_mtime)


def load_run_model(folder: str | Path, config: TrainConfig, device: torch.device | str | None = None
                   ) -> torch.nn.Module:
    """The :class:`~cagnet.models.CaGNet` of a run folder's ``checkpoint.pt`` (built from
    ``config``'s model and class embeddings), in eval mode on ``device`` (a torch.device, or a
    ``runtime.device`` string such as ``auto``; default: the config's ``runtime.device``)."""
    model = build_model(config, prepare_dataset(config))
    load_checkpoint(model, Path(folder) / ckpt.CHECKPOINT_NAME)
    if device is None:
        device = config.runtime.device
    return model.to(device if isinstance(device, torch.device) else resolve_device(device)).eval()
