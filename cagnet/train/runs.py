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
``run.lock``          held (``flock``) by the one process writing the folder, with its pid
                      (:class:`RunLock`); empty when no run is writing

The JSON-lines files are written by :class:`JsonLines` and read by :func:`read_jsonl`, which
drops a torn last line (a write cut by a kill or a full disk) and says so.
:func:`finished_run` tells whether a run folder already holds the finished run of a config's
recipe (:func:`run_recipe`: what decides the weights), so that notebooks, the benchmark and the
ablation reuse it instead of training again; :func:`load_run_model` loads its model.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from cagnet.config import SCHEDULE_NAMES, TrainConfig
from cagnet.config_io import to_dict
from cagnet.data.datasets import DatasetInfo
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.errors import CheckpointError, ConfigError, RunFolderError
from cagnet.files import atomic_write, atomic_write_text, named_os_error
from cagnet.models import load_checkpoint
from cagnet.train import checkpoint as ckpt
from cagnet.train.distributed import resolve_device
from cagnet.train.loading import build_model, prepare_dataset


def default_out_dir(config: TrainConfig, schedule: str) -> Path:
    """``runs/<config name>/<schedule>`` (relative to the working directory)."""
    return Path("runs") / config.name / schedule


LOCK_NAME = "run.lock"


def note(message: str) -> None:
    """A one-line note for the reader (what a reader of the run should know, not an error;
    :func:`cagnet.runtime.notes_stream`)."""
    from cagnet.runtime import notes_stream

    print(f"note: {message}", file=notes_stream())


class RunLock:
    """The one writer of a run folder, held for the run's lifetime.

    The lock is an exclusive ``flock`` on ``<folder>/run.lock``: the kernel releases it when
    its process ends, however it ends (a kill included), so a lock left by a dead run is never
    in the way. The file holds the holder's pid, host, start time and command, for the
    message that refuses a second writer. Where ``flock`` is not available (no ``fcntl``, or
    a file system without locks) a lock whose pid is alive on this host refuses, one whose
    pid is gone is stale and taken over. The file is emptied, not removed, on release:
    removing it would let a process that opened the old file and one that creates a new one
    both hold "the" lock.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: Mapping[str, Any]) -> None:
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on {holder['host']}"
        since = f", since {holder['started']}" if holder.get("started") else ""
        command = f": {holder['command']}" if holder.get("command") else ""
        raise RunFolderError(f"{self.folder}: another process is writing this run folder ({who}{since}{command}); "
                             f"wait for it to end, or choose another --out")

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not self._flock(fd):
                holder = self._holder()
                pid = holder.get("pid")
                if (isinstance(pid, int) and pid != os.getpid() and holder.get("host") == socket.gethostname()
                        and _pid_alive(pid)):
                    self._refuse(holder)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _flock(self, fd: int) -> bool:
        """True when the flock is held; False when flock is unavailable (pid check instead)."""
        try:
            import fcntl
        except ImportError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(self._holder())
        except OSError:     # no locks on this file system
            return False
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)      # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> int:
    """Remove the temporary files that an interrupted atomic write (:func:`cagnet.files.atomic_write`:
    ``.<name>.<random>.tmp``) left in ``folder``; call it while holding the folder's
    :class:`RunLock`, so that no write of this folder is in progress. Returns the bytes freed."""
    freed = 0
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                continue
            freed += size
    return freed


class JsonLines:
    """Append-only JSON-lines file (one flush per record, so a crash loses at most one, and a
    torn last line is dropped by :func:`read_jsonl`)."""

    def __init__(self, path: Path, truncate: bool) -> None:
        self.path = path
        self.stream = open(path, "w" if truncate else "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.write_many([record])

    def write_many(self, records: list[dict]) -> None:
        if records:
            try:
                self.stream.write("".join(json.dumps(record, allow_nan=True) + "\n" for record in records))
                self.stream.flush()
            except OSError as err:   # a full disk: say which file
                raise named_os_error(err, self.path) from None

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:   # the flush of a full disk: the error that caused it is already on its way
            pass


def read_jsonl(path: str | Path, report: Callable[[str], None] | None = note) -> list[dict]:
    """Records of a ``log.jsonl`` / ``eval.jsonl`` file (empty list when missing).

    Every record ends with a newline, so a last line without one was cut by a kill or a full
    disk: it is dropped and ``report`` (default: a note on stderr; None: silent) is told. Any
    other line that is not a JSON object (two writers' lines spliced together) raises
    :class:`~cagnet.errors.RunFolderError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as err:
        raise RunFolderError(f"{path}: cannot be read ({err.strerror})") from None
    lines = text.split("\n")
    torn = lines.pop()    # "" when the file ends with a newline
    if torn.strip() and report is not None:
        report(f"{path}: the last line is incomplete (an interrupted write); it is ignored")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise RunFolderError(f"{path}: line {number} is not a JSON record (were two runs writing this folder?)")
        records.append(record)
    return records


def truncate_after(path: Path, iteration: int) -> None:
    """Drop records past ``iteration`` (written after the checkpoint a run resumes from), and a
    torn last line; the file is replaced atomically."""
    kept = [r for r in read_jsonl(path) if r.get("iteration", 0) <= iteration]
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))


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
    for name, figure in figures.items():   # atomic: a full disk leaves the previous figure, not half a PNG
        atomic_write(folder / name, lambda stream, figure=figure: figure.savefig(stream, dpi=90, format="png"))


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
    try:
        evaluations = read_jsonl(folder / "eval.jsonl", report=None)
    except RunFolderError:
        return False
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
