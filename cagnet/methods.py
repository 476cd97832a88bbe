"""The methods of the CaGNet paper's comparison, trained (or reused) and scored on a config's data.

:class:`MethodRuns` trains what one seed of one configuration needs for SPNet, SPNet-c,
ZS3Net, ZS3Net+ST, CaGNet and CaGNet+ST, and scores them on a split. The benchmark
(:mod:`cagnet.benchmark`, test split), the ablation harness (:mod:`cagnet.ablate`, validation
split) and notebook 06 use it, so every method is trained the same way everywhere.

Run folders live under ``runs_root`` and are named after what decides their weights: a short
digest of the run's recipe (CaGNet: :func:`cagnet.train.runs.run_recipe`, the configuration
without its runtime settings, with the seed and the schedules up to the run's own; a baseline:
:func:`cagnet.train.baselines.baseline_recipe`, the settings it reads). A folder that
already holds the finished run of the same recipe is reused instead of trained again, so
configurations that differ only in later schedules (e.g. two ``gen_unseen_rate`` values of
``mixed``) share their step-1 run, and an interrupted benchmark resumes at the next method::

    <runs_root>/cagnet/<schedule>-<digest>/     engine run folders (step1, mixed, st, st_mixed)
    <runs_root>/spnet-<digest>/                 model.pt, recipe.json, scores_<split>.json,
    <runs_root>/zs3net-<digest>/                calibration.json (SPNet-c)
    <runs_root>/zs3net_st-<digest>/

Protocol:

* every method trains on the training split with the seed as ``runtime.seed`` (initialisation,
  batch order, augmentation, dropout, noise), starting from ``schedules.step1.init_model``
  (the pretrained backbone of the tutorial); CaGNet through the engine (``step1`` then ``mixed``
  = CaGNet, then ``st`` and ``st_mixed`` = CaGNet+ST), SPNet / ZS3Net / ZS3Net+ST with
  :mod:`cagnet.train.baselines`, whose iteration budgets derive from the same schedules;
* scores: :func:`cagnet.evaluate.evaluate` with the ``original`` protocol on ``split``, without
  calibration except SPNet-c's;
* **SPNet-c** is the SPNet model with calibrated stacking (Chao et al. 2016): a penalty
  subtracted from the seen-class logits. With a validation split (the embedded benchmark) the
  penalty is the one with the best validation hIoU, as SPNet chose it on a validation set;
  SPNet then trains on all training images. Without one (the original datasets) the last
  ``held_out`` training images are kept out of SPNet's training and the penalty is chosen on
  them without any unseen-class label (:func:`cagnet.evaluate.held_out_calibration`). The
  penalty that would be best on the scored split itself (the *oracle*) is recorded for
  reference only.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from cagnet.config import TrainConfig, train_config_from_dict
from cagnet.config_io import apply_overrides, to_dict
from cagnet.errors import ConfigError
from cagnet.metrics import seen_unseen_confusion
from cagnet.results import json_safe, table_record
from cagnet.runtime import torch_threads

#: Every method of the comparison, in the order they are trained (dependencies first).
METHODS: tuple[str, ...] = ("SPNet", "SPNet-c", "ZS3Net", "ZS3Net+ST", "CaGNet", "CaGNet+ST")
#: The engine schedules behind CaGNet and CaGNet+ST.
CAGNET_SCHEDULES: dict[str, tuple[str, ...]] = {"CaGNet": ("step1", "mixed"),
                                                "CaGNet+ST": ("step1", "mixed", "st", "st_mixed")}
#: Share of the training images SPNet-c holds out for its calibration when there is no validation split.
HELD_OUT_FRACTION = 0.1


def check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """The requested methods in training order, duplicates removed; unknown names -> ConfigError."""
    requested = [m.strip() for m in methods if m.strip()]
    unknown = [m for m in requested if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if not requested:
        raise ConfigError(f"no method selected (known: {', '.join(METHODS)})")
    return tuple(m for m in METHODS if m in requested)


def seed_config(config: TrainConfig, seed: int, extra: Sequence[str] = ()) -> TrainConfig:
    """``config`` with ``runtime.seed=seed`` (and ``extra`` ``key=value`` overrides)."""
    data = apply_overrides(to_dict(config), [f"runtime.seed={int(seed)}", *extra])
    return train_config_from_dict(data)


def default_held_out(num_train: int) -> int:
    """SPNet-c's held-out image count: 10 % of the training images (at least 1)."""
    if num_train < 2:
        raise ConfigError(f"SPNet-c needs at least 2 training images (one held out), the split has {num_train}")
    return min(num_train - 1, max(1, round(HELD_OUT_FRACTION * num_train)))


def recipe_digest(recipe: Mapping[str, Any]) -> str:
    """12 hex digits of a SHA-256 over a recipe's canonical JSON."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


class MethodRuns:
    """Trains (or reuses) and scores the comparison methods for one seed of a configuration.

    Args:
        config: the configuration (its schedules set CaGNet's and the baselines' budgets).
        seed: ``runtime.seed`` of every run.
        runs_root: folder of the run folders (see the module docstring).
        split: the scored split, ``test`` or ``validation``.
        held_out: SPNet-c's held-out training images when the dataset has no validation split
            (default 10 %, :func:`default_held_out`); unused otherwise.
    """

    def __init__(self, config: TrainConfig, seed: int, runs_root: str | Path, *, split: str = "test",
                 held_out: int | None = None) -> None:
        from cagnet.data.datasets import has_split
        from cagnet.train.baselines import training_ids
        from cagnet.train.loading import evaluation_dataset, prepare_dataset
        from cagnet.train.distributed import resolve_device

        self.config = seed_config(config, seed)
        self.seed = int(seed)
        self.runs_root = Path(runs_root)
        self.split = split
        self.info = prepare_dataset(self.config)
        self.eval_set = evaluation_dataset(self.config, self.info, split)
        self.device = resolve_device(self.config.runtime.device)
        self.calibration = "validation" if has_split(self.info.root, "validation") else "held_out"
        self.held_out = 0
        if self.calibration == "held_out":
            self.held_out = held_out if held_out is not None else default_held_out(
                len(training_ids(self.config, self.info)))
        self.models: dict[str, torch.nn.Module] = {}
        self.records: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ scoring
    def evaluate(self, model: torch.nn.Module, seen_penalty: float = 0.0, dataset=None, *,
                 return_confusion: bool = False) -> dict[str, Any]:
        """Scores of ``model`` on the scored split (or ``dataset``), ``original`` protocol (with
        ``return_confusion``, also the pixel counts under ``confusion``)."""
        from cagnet.evaluate import evaluate

        cfg = self.config
        with torch_threads(cfg.runtime.num_threads):
            return evaluate(model, self.eval_set if dataset is None else dataset, self.info, "original",
                            test_size=cfg.data.test_size, batch_size=cfg.data.test_batch_size, device=self.device,
                            amp=cfg.runtime.amp, seen_penalty=seen_penalty, return_confusion=return_confusion)

    # ------------------------------------------------------------------ CaGNet
    def cagnet_folder(self, schedule: str) -> Path:
        """The engine run folder of ``schedule`` for this configuration and seed."""
        from cagnet.train.runs import run_recipe

        return self.runs_root / "cagnet" / f"{schedule}-{recipe_digest(run_recipe(to_dict(self.config), schedule))}"

    def cagnet_run(self, schedule: str, *, retrain: bool = False, progress: bool = False,
                   verbose: bool = False) -> Path:
        """The folder of a finished run of ``schedule``: reused when it holds the finished run of this
        recipe, else trained now, after the runs it starts from (step1 -> mixed -> st -> st_mixed,
        each from the previous one's checkpoint). ``retrain`` trains ``schedule`` itself again."""
        from cagnet.config import SCHEDULE_NAMES
        from cagnet.train.checkpoint import CHECKPOINT_NAME
        from cagnet.train.engine import train
        from cagnet.train.runs import finished_run

        previous = None
        for name in SCHEDULE_NAMES[:SCHEDULE_NAMES.index(schedule) + 1]:
            folder = self.cagnet_folder(name)
            if (retrain and name == schedule) or not finished_run(folder, name, self.config):
                init = None if previous is None else previous / CHECKPOINT_NAME
                # the folder is named after the recipe: what it holds is an unfinished or replaced run of it
                train(self.config, name, folder, init_model=init, progress=progress, verbose=verbose, force=True)
                self.models.pop(name, None)
            previous = folder
        return previous

    def cagnet_model(self, schedule: str) -> torch.nn.Module:
        """The CaGNet model after ``schedule`` (:meth:`cagnet_run`), in eval mode on the device."""
        from cagnet.train.runs import load_run_model

        if schedule not in self.models:
            self.models[schedule] = load_run_model(self.cagnet_run(schedule), self.config, self.device)
        return self.models[schedule]

    def cagnet(self, method: str = "CaGNet") -> torch.nn.Module:
        """The trained CaGNet: ``CaGNet`` after step1 -> mixed, ``CaGNet+ST`` after -> st -> st_mixed."""
        return self.cagnet_model(CAGNET_SCHEDULES[method][-1])

    # ------------------------------------------------------------------ baselines
    def _baseline_folder(self, name: str) -> tuple[Path, dict[str, Any]]:
        from cagnet.train.baselines import baseline_recipe

        recipe = baseline_recipe(to_dict(self.config), name, self.held_out)
        return self.runs_root / f"{name}-{recipe_digest(recipe)}", recipe

    def _baseline(self, key: str, name: str, build, train) -> torch.nn.Module:
        """A baseline model: loaded from its run folder when that holds the same recipe, else
        trained by ``train()`` and saved there."""
        if key in self.models:
            return self.models[key]
        folder, recipe = self._baseline_folder(name)
        model_path, recipe_path = folder / "model.pt", folder / "recipe.json"
        saved = None
        if model_path.is_file() and recipe_path.is_file():
            try:
                saved = json.loads(recipe_path.read_text())
            except ValueError:
                saved = None
        if saved == json.loads(json.dumps(recipe, default=str)):
            model = build(self.config, self.info, init=False)
            model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
            model.to(self.device).eval()
        else:
            from cagnet.files import atomic_write, atomic_write_text

            model = train()
            atomic_write(model_path, lambda stream: torch.save(model.state_dict(), stream))
            atomic_write_text(recipe_path, json.dumps(recipe, indent=1, default=str))
        self.models[key] = model
        return model

    def spnet(self) -> torch.nn.Module:
        from cagnet.train.baselines import build_spnet, train_spnet

        return self._baseline("SPNet", "spnet", build_spnet,
                              lambda: train_spnet(self.config, seed=self.seed, held_out=self.held_out,
                                                  device=self.device))

    def zs3net(self) -> torch.nn.Module:
        from cagnet.train.baselines import build_zs3net, train_zs3net

        return self._baseline("ZS3Net", "zs3net", build_zs3net,
                              lambda: train_zs3net(self.config, seed=self.seed, device=self.device))

    def zs3net_st(self) -> torch.nn.Module:
        from cagnet.train.baselines import build_zs3net, self_train_zs3net

        return self._baseline("ZS3Net+ST", "zs3net_st", build_zs3net,
                              lambda: self_train_zs3net(self.config, self.zs3net(), seed=self.seed,
                                                        device=self.device))

    def model(self, method: str) -> torch.nn.Module:
        """The trained model of ``method`` (SPNet-c: the SPNet model; its penalty is
        :meth:`spnet_penalty`)."""
        check_methods([method])
        if method in ("SPNet", "SPNet-c"):
            return self.spnet()
        if method == "ZS3Net":
            return self.zs3net()
        if method == "ZS3Net+ST":
            return self.zs3net_st()
        return self.cagnet(method)

    def spnet_penalty(self) -> dict[str, Any]:
        """SPNet-c's seen-class penalty and how it was chosen (see the module docstring):
        ``seen_penalty``, ``calibration`` (``validation`` / ``held_out``), the sweep's values,
        and the oracle penalty / hIoU on the scored split."""
        from cagnet.evaluate import calibration_sweep, held_out_calibration
        from cagnet.train.baselines import held_out_dataset
        from cagnet.train.loading import evaluation_dataset

        model = self.spnet()
        cfg = self.config
        options = dict(test_size=cfg.data.test_size, batch_size=cfg.data.test_batch_size, device=self.device,
                       amp=cfg.runtime.amp)
        with torch_threads(cfg.runtime.num_threads):
            oracle = calibration_sweep(model, self.eval_set, self.info, **options)
            if self.calibration == "validation":
                chosen = (oracle if self.split == "validation" else
                          calibration_sweep(model, evaluation_dataset(cfg, self.info, "validation"), self.info,
                                            **options))
                details = {"hiou": chosen["hiou"], "seen_miou": chosen["seen_miou"],
                           "unseen_miou": chosen["unseen_miou"]}
            else:
                chosen = held_out_calibration(model, held_out_dataset(cfg, self.info, self.held_out), self.info,
                                              **options)
                details = {"seen_acc": chosen["seen_acc"], "unseen_rate": chosen["unseen_rate"],
                           "balance": chosen["balance"], "held_out_images": self.held_out}
        return {"seen_penalty": chosen["best_penalty"], "calibration": self.calibration,
                "penalties": chosen["penalties"], **details,
                "oracle_penalty": oracle["best_penalty"],
                "oracle_hiou": oracle["best"]["hiou"] if oracle["best"] is not None else None}

    # ------------------------------------------------------------------ one table row
    def run(self, method: str) -> dict[str, Any]:
        """Train (or reuse) ``method`` and score it on the split: the table's scores, where the
        seen / unseen boundary costs them (:func:`cagnet.metrics.seen_unseen_confusion`),
        ``class_iou``, ``num_images``, ``seconds`` (and SPNet-c's penalty and calibration)."""
        from cagnet.files import atomic_write_text
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        model = self.model(method)
        penalty = 0.0
        if method == "SPNet-c":
            calibration = self.spnet_penalty()
            penalty = calibration["seen_penalty"]
            extra = {"seen_penalty": penalty, "calibration": calibration["calibration"],
                     "held_out_images": self.held_out, "oracle_penalty": calibration["oracle_penalty"],
                     "oracle_hiou": calibration["oracle_hiou"]}
            folder, _ = self._baseline_folder("spnet")
            atomic_write_text(folder / "calibration.json", json.dumps(json_safe(calibration), indent=1))
        scores = self.evaluate(model, penalty, return_confusion=True)
        num_seen, num_classes = self.info.num_seen, scores["confusion"].shape[0]
        boundary = seen_unseen_confusion(scores["confusion"], range(num_seen), range(num_seen, num_classes))
        record = {**table_record(scores), **boundary, **extra, "class_iou": list(scores["class_iou"]),
                  "num_images": scores["num_images"], "seconds": time.perf_counter() - started}
        self.records[method] = record
        return record


# ------------------------------------------------------------------------------ many seeds
@dataclass(frozen=True)
class Task:
    """One row to compute per seed: ``method`` trained with ``config`` plus ``overrides``
    (``key=value`` strings), reported under ``name``; ``diagnostics`` adds the measurements of
    :func:`cagnet.diagnostics.context_diagnostics` (CaGNet methods only)."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    diagnostics: bool = False


def run_task(runs: MethodRuns, task: Task) -> dict[str, Any]:
    """The record of ``task`` on an already configured :class:`MethodRuns`."""
    record = runs.run(task.method)
    if task.diagnostics and task.method in CAGNET_SCHEDULES:
        from cagnet.diagnostics import context_diagnostics

        with torch_threads(runs.config.runtime.num_threads):
            record["diagnostics"] = context_diagnostics(runs.model(task.method), runs.eval_set, runs.info,
                                                        seed=runs.seed, device=runs.device)
    return record


class _SeedTasks:
    """The tasks of one seed in order; one :class:`MethodRuns` per distinct override list."""

    def __init__(self, config: TrainConfig, seed: int, runs_root: Path, split: str, held_out: int | None) -> None:
        self.config, self.seed, self.runs_root, self.split, self.held_out = config, seed, runs_root, split, held_out
        self.runs: dict[tuple[str, ...], MethodRuns] = {}

    def runs_for(self, overrides: tuple[str, ...]) -> MethodRuns:
        if overrides not in self.runs:
            # no periodic evaluation: the rows are scored once, at the end
            config = seed_config(self.config, self.seed, (*overrides, "runtime.eval_interval=0"))
            self.runs[overrides] = MethodRuns(config, self.seed, self.runs_root, split=self.split,
                                              held_out=self.held_out)
        return self.runs[overrides]

    def run(self, task: Task) -> dict[str, Any]:
        return run_task(self.runs_for(task.overrides), task)

    def facts(self) -> dict[str, Any]:
        """What a table records of the seed's runs besides the scores (from the first runs)."""
        runs = next(iter(self.runs.values()))
        return {"config": runs.config, "held_out": runs.held_out, "calibration": runs.calibration,
                "class_names": list(runs.info.eval_class_names), "num_seen": runs.info.num_seen,
                "num_unseen": runs.info.num_unseen}


def _seed_worker(config_data: dict[str, Any], seed: int, runs_root: str, tasks: Sequence[Task], split: str,
                 held_out: int | None, threads: int | None, events: Any = None) -> dict[str, Any]:
    """One seed's records, in a worker process of :func:`run_seeds` (``jobs > 1``); puts
    ``(seed, name, None)`` when a task starts and ``(seed, name, hiou)`` when it is done on the
    ``events`` queue."""
    config = train_config_from_dict(config_data)
    if threads:
        config = seed_config(config, config.runtime.seed, [f"runtime.num_threads={threads}"])
    seed_tasks = _SeedTasks(config, seed, Path(runs_root) / str(seed), split, held_out)
    records = {}
    for task in tasks:
        if events is not None:
            events.put((seed, task.name, None))
        records[task.name] = seed_tasks.run(task)
        if events is not None:
            events.put((seed, task.name, records[task.name]["hiou"]))
    return {"records": records, **seed_tasks.facts()}


def worker_threads(config: TrainConfig, jobs: int) -> int | None:
    """Threads per worker process: the config's, else the cores shared out (at least 1), so that
    parallel seeds do not oversubscribe the CPU (which slows convolutions down many times)."""
    if config.runtime.num_threads:
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def run_seeds(config: TrainConfig, seeds: Sequence[int], runs_root: str | Path, tasks: Sequence[Task], *,
              split: str = "test", held_out: int | None = None, jobs: int = 1, progress: bool = True,
              desc: str = "runs") -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every task for every seed: ``({str(seed): {task name: record}}, facts of the first seed)``.

    The run folders of seed ``s`` are in ``runs_root/<s>``. ``jobs`` seeds run at the same time,
    each in its own process (CPU: with ``runtime.num_threads`` unset, each gets ``cores // jobs``
    threads); every record depends on its seed only, so the results are those of ``jobs=1``.
    A progress bar over (task, seed) names the running ones.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError(f"{desc}: no seed given")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{desc}: duplicate seeds {seeds}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"{desc}: jobs must be a positive integer, got {jobs!r}")
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{desc}: duplicate row names {names}")
    runs_root = Path(runs_root)
    if jobs == 1:
        return _run_sequential(config, seeds, runs_root, tasks, split, held_out, progress, desc)
    return _run_parallel(config, seeds, runs_root, tasks, split, held_out, jobs, progress, desc)


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True)


def _run_sequential(config, seeds, runs_root, tasks, split, held_out, progress, desc):
    bar = _bar(len(seeds) * len(tasks), desc, progress)
    per_seed: dict[str, dict[str, Any]] = {}
    facts = None
    try:
        for seed in seeds:
            seed_tasks = _SeedTasks(config, seed, runs_root / str(seed), split, held_out)
            for task in tasks:
                if bar is not None:
                    bar.set_description(f"{task.name} (seed {seed})")
                record = per_seed.setdefault(str(seed), {})[task.name] = seed_tasks.run(task)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(hIoU=f"{100 * record['hiou']:.1f}")
            facts = facts or seed_tasks.facts()
    finally:
        if bar is not None:
            bar.close()
    return per_seed, facts


def _run_parallel(config, seeds, runs_root, tasks, split, held_out, jobs, progress, desc):
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = worker_threads(config, jobs)
    # spawn: a fresh interpreter per worker (fork would copy torch's thread pools and locks)
    context = multiprocessing.get_context("spawn")
    bar = _bar(len(seeds) * len(tasks), desc, progress)
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=min(jobs, len(seeds)),
                                                           mp_context=context) as pool:
        events = manager.Queue() if bar is not None else None
        futures = {pool.submit(_seed_worker, to_dict(config), seed, str(runs_root), tuple(tasks), split, held_out,
                               threads, events): seed for seed in seeds}
        running: dict[int, str] = {}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # a worker's error stops everything here
                while events is not None:
                    try:
                        seed, name, hiou = events.get_nowait()
                    except queue_module.Empty:
                        break
                    if hiou is None:
                        running[seed] = name
                    else:
                        running.pop(seed, None)
                        bar.update(1)
                        bar.set_postfix_str(f"last: {name} (seed {seed}) hIoU {100 * hiou:.1f}")
                    bar.set_description(", ".join(f"{n} (seed {s})" for s, n in sorted(running.items())) or desc)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
        results = {futures[future]: future.result() for future in futures}
    per_seed = {str(seed): results[seed]["records"] for seed in seeds}
    facts = {k: v for k, v in results[seeds[0]].items() if k != "records"}
    return per_seed, facts
