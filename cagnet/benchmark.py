"""The comparison of the CaGNet paper on a config's data: SPNet, SPNet-c, ZS3Net, ZS3Net+ST,
CaGNet and CaGNet+ST, over several seeds, as a table of mean and standard deviation.

:func:`run_benchmark` trains and scores every method once per seed and writes
``<out_dir>/table.json`` (:func:`load_table` reads it) and ``<out_dir>/table.md``
(:func:`format_table_markdown`)::

    python -m cagnet benchmark --config tutorial --seeds 3

Protocol (also stored under ``"protocol"`` in ``table.json``):

* every method trains on the config's training split (SPNet without its held-out images,
  below) with the seed as ``runtime.seed`` (initialisation, batch order, augmentation,
  dropout, noise) and is scored on the test split with the ``original`` protocol (images
  warped to ``data.test_size``, ground truth nearest-resized to the prediction grid), the
  paper's, without any calibration except SPNet-c's;
* CaGNet runs the engine (:func:`cagnet.train.engine.train`) with the schedules ``step1`` then
  ``mixed`` (= CaGNet), then ``st`` and ``st_mixed`` (= CaGNet+ST), in
  ``<out_dir>/<seed>/cagnet/<schedule>``, with periodic evaluation off
  (``runtime.eval_interval=0``; the final evaluation is the table's);
* SPNet / ZS3Net / ZS3Net+ST train with :mod:`cagnet.train.baselines`, whose iteration budgets
  derive from the same schedules (``--set schedules.step1.iterations=...`` changes CaGNet and
  the baselines alike);
* **SPNet-c** is the SPNet model with calibrated stacking (Chao et al. 2016): a penalty
  subtracted from the seen-class logits. SPNet chose it on a validation set; a validation
  set with unseen-class labels would break the zero-shot setting, so here the last
  ``held_out`` training images (10 % by default) are kept out of SPNet's training, and the
  penalty is the one that best balances, on them, the accuracy of the seen pixels against
  the share of *ignored* pixels (unseen classes are ignored in training labels) predicted
  as some unseen class (:func:`cagnet.evaluate.held_out_calibration`; no unseen-class
  label is read). The candidates are quantiles of the model's own seen-unseen logit gaps
  (:func:`cagnet.evaluate.penalty_grid`), so the grid fits its logit scale. Both SPNet rows
  therefore come from a model trained on 90 % of the training images. For reference only,
  ``per_seed`` also records the oracle penalty, the one with the best test hIoU
  (:func:`cagnet.evaluate.calibration_sweep`), and that hIoU.

Standard deviations are over seeds (sample standard deviation, ``n - 1``); with one seed
the table shows means only.

The paper's tables are data too (:data:`PAPER_RESULTS`, :func:`paper_table`), and the scores
of one run of each method become a table of the same structure with :func:`table_from_scores`,
so that both print with :func:`format_table_markdown`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from cagnet.config import TrainConfig, apply_overrides, to_dict, train_config_from_dict
from cagnet.errors import ConfigError
from cagnet.runtime import torch_threads

#: Every method of the comparison, in the order they are trained (dependencies first).
METHODS: tuple[str, ...] = ("SPNet", "SPNet-c", "ZS3Net", "ZS3Net+ST", "CaGNet", "CaGNet+ST")
#: Row order of the paper's table.
PAPER_ORDER: tuple[str, ...] = ("SPNet", "SPNet-c", "ZS3Net", "CaGNet", "ZS3Net+ST", "CaGNet+ST")
#: Scores of the table: key of :func:`cagnet.metrics.gzsl_scores` -> column title.
TABLE_COLUMNS: dict[str, str] = {"pixel_acc": "pixel acc", "mean_acc": "mean acc", "miou": "mIoU",
                                 "seen_miou": "S-mIoU", "unseen_miou": "U-mIoU", "hiou": "hIoU"}
TABLE_NAME = "table.json"
MARKDOWN_NAME = "table.md"
#: Share of the training images SPNet-c holds out for its calibration by default.
HELD_OUT_FRACTION = 0.1

#: Column order of the paper's tables in the original README (hIoU, mIoU, pixel acc., mean acc.,
#: S-mIoU, U-mIoU).
_PAPER_COLUMNS: tuple[str, ...] = ("hiou", "miou", "pixel_acc", "mean_acc", "seen_miou", "unseen_miou")
_PAPER_ROWS: dict[str, dict[str, tuple[float, ...]]] = {
    "voc12": {  # Pascal-VOC
        "SPNet":     (0.0002, 0.5687, 0.7685, 0.7093, 0.7583, 0.0001),
        "SPNet-c":   (0.2610, 0.6315, 0.7755, 0.7188, 0.7800, 0.1563),
        "ZS3Net":    (0.2874, 0.6164, 0.7941, 0.7349, 0.7730, 0.1765),
        "CaGNet":    (0.3972, 0.6545, 0.8068, 0.7636, 0.7840, 0.2659),
        "ZS3Net+ST": (0.3328, 0.6302, 0.8095, 0.7382, 0.7802, 0.2115),
        "CaGNet+ST": (0.4366, 0.6577, 0.8164, 0.7560, 0.7859, 0.3031),
    },
    "context": {  # Pascal-Context
        "SPNet":     (0.0000, 0.2938, 0.5793, 0.4486, 0.3357, 0.0000),
        "SPNet-c":   (0.0718, 0.3079, 0.5790, 0.4488, 0.3514, 0.0400),
        "ZS3Net":    (0.1246, 0.3010, 0.5710, 0.4442, 0.3304, 0.0768),
        "CaGNet":    (0.2061, 0.3347, 0.5924, 0.4900, 0.3610, 0.1442),
        "ZS3Net+ST": (0.1488, 0.3102, 0.5725, 0.4532, 0.3398, 0.0953),
        "CaGNet+ST": (0.2252, 0.3352, 0.5961, 0.4962, 0.3644, 0.1630),
    },
    "cocostuff": {  # COCO-Stuff
        "SPNet":     (0.0140, 0.3164, 0.5132, 0.4593, 0.3461, 0.0070),
        "SPNet-c":   (0.1398, 0.3278, 0.5341, 0.4363, 0.3518, 0.0873),
        "ZS3Net":    (0.1495, 0.3328, 0.5467, 0.4837, 0.3466, 0.0953),
        "CaGNet":    (0.1819, 0.3345, 0.5658, 0.4845, 0.3549, 0.1223),
        "ZS3Net+ST": (0.1620, 0.3367, 0.5631, 0.4862, 0.3489, 0.1055),
        "CaGNet+ST": (0.1946, 0.3372, 0.5676, 0.4854, 0.3555, 0.1340),
    },
}
#: The comparison tables of the CaGNet paper (its README: Pascal-VOC, Pascal-Context, COCO-Stuff):
#: dataset (``voc12``, ``context``, ``cocostuff``) -> method -> score, as fractions under the keys
#: of :data:`TABLE_COLUMNS`.
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    dataset: {method: dict(zip(_PAPER_COLUMNS, values)) for method, values in rows.items()}
    for dataset, rows in _PAPER_ROWS.items()}


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


def _summary(scores: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(scores[key]) for key in TABLE_COLUMNS}


def _mean_std(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if len(finite) != len(values) or not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0}


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None, recursively (table.json stays strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def aggregate(per_seed: Mapping[str, Mapping[str, Mapping[str, Any]]], methods: Sequence[str]
              ) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{method: {score: {"mean", "std"}}}`` over the seeds of ``per_seed``."""
    table = {}
    for method in methods:
        runs = [seed_scores[method] for seed_scores in per_seed.values() if method in seed_scores]
        if runs:
            table[method] = {key: _mean_std([run.get(key) for run in runs]) for key in TABLE_COLUMNS}
    return table


def table_from_scores(scores: Mapping[str, Mapping[str, Any]], seed: int | None = None) -> dict[str, Any]:
    """A table of one run of each method, in the structure of :func:`run_benchmark`'s.

    ``scores``: ``{method: scores}`` with the keys of :data:`TABLE_COLUMNS` (e.g. the dicts
    of :func:`cagnet.evaluate.evaluate`; other keys are ignored, NaN shows as "n/a").
    Returns ``methods`` (:func:`aggregate` of the single run: mean = the score, std 0),
    ``seeds`` (``[seed]``, or empty when None) and ``per_seed`` (``{str(seed) or "run":
    {method: {score: value}}}``), which :func:`format_table_markdown` prints.
    """
    missing = [(m, k) for m, run in scores.items() for k in TABLE_COLUMNS if k not in run]
    if missing:
        raise ConfigError(f"scores of {missing[0][0]!r} lack {missing[0][1]!r} (need {', '.join(TABLE_COLUMNS)})")
    per_seed = {"run" if seed is None else str(seed): {method: _summary(run) for method, run in scores.items()}}
    return {"methods": aggregate(per_seed, list(scores)), "seeds": [] if seed is None else [int(seed)],
            "per_seed": per_seed}


def paper_table(dataset: str) -> dict[str, Any]:
    """The paper's table for ``dataset`` (a key of :data:`PAPER_RESULTS`: ``voc12``,
    ``context``, ``cocostuff``) in the structure of :func:`table_from_scores`, plus
    ``config`` (the dataset)."""
    if dataset not in PAPER_RESULTS:
        raise ConfigError(f"no paper results for dataset {dataset!r} (known: {', '.join(PAPER_RESULTS)})")
    return {**table_from_scores(PAPER_RESULTS[dataset]), "config": dataset}


def _cell(entry: Mapping[str, Any] | None, show_std: bool) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    text = f"{100.0 * entry['mean']:.2f}"
    if show_std and entry.get("std") is not None:
        text += f" ± {100.0 * entry['std']:.2f}"
    return text


def format_table_markdown(table: Mapping[str, Any]) -> str:
    """The table of a benchmark result (or ``table.json``) as Markdown, in the paper's format:
    rows in the paper's order, columns ``Method | pixel acc | mean acc | mIoU | S-mIoU |
    U-mIoU | hIoU``, values in % as ``mean ± std`` over seeds (mean only with one seed)."""
    methods = table.get("methods", {})
    show_std = len(table.get("seeds", [])) > 1
    rows = ["| Method | " + " | ".join(TABLE_COLUMNS.values()) + " |",
            "|---|" + "---|" * len(TABLE_COLUMNS)]
    order = [m for m in PAPER_ORDER if m in methods] + [m for m in methods if m not in PAPER_ORDER]
    for method in order:
        cells = [_cell(methods[method].get(key), show_std) for key in TABLE_COLUMNS]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _markdown_document(table: Mapping[str, Any]) -> str:
    seeds = table.get("seeds", [])
    protocol = table.get("protocol", {})
    lines = [f"# Benchmark: config {table.get('config')}",
             "",
             f"Test split, `{protocol.get('evaluation', 'original')}` protocol at test size "
             f"{protocol.get('test_size')}, {protocol.get('num_test_images')} images; "
             f"{len(seeds)} seed(s): {', '.join(map(str, seeds))}. Values in %"
             + (", mean ± sample std over seeds." if len(seeds) > 1 else "."),
             "",
             format_table_markdown(table),
             ""]
    if protocol.get("calibration"):
        lines += [f"SPNet-c: {protocol['calibration']}", ""]
    return "\n".join(lines)


def load_table(path: str | Path) -> dict[str, Any]:
    """A benchmark result from ``table.json`` (or a benchmark folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / TABLE_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"benchmark table not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not a benchmark table (invalid JSON at line {err.lineno})") from None


def write_table(table: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``table.json`` and ``table.md`` to ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / TABLE_NAME, out_dir / MARKDOWN_NAME
    json_path.write_text(json.dumps(_json_safe(dict(table)), indent=2, allow_nan=False), encoding="utf-8")
    md_path.write_text(_markdown_document(table), encoding="utf-8")
    return json_path, md_path


# ------------------------------------------------------------------------------ one seed
class _SeedRun:
    """Trains and scores the requested methods for one seed, sharing models between rows."""

    def __init__(self, config: TrainConfig, seed: int, out_dir: Path, held_out: int | None) -> None:
        from cagnet.train.data import evaluation_dataset, prepare_dataset
        from cagnet.train.baselines import training_ids
        from cagnet.train.distributed import resolve_device

        self.config = seed_config(config, seed, ["runtime.eval_interval=0"])
        self.seed = seed
        self.out_dir = out_dir / str(seed)
        self.info = prepare_dataset(self.config)
        self.test_set = evaluation_dataset(self.config, self.info, "test")
        self.device = resolve_device(self.config.runtime.device)
        self.held_out = held_out if held_out is not None else default_held_out(len(training_ids(self.config, self.info)))
        self.models: dict[str, torch.nn.Module] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.cagnet_results: dict[str, Any] = {}

    def evaluate(self, model: torch.nn.Module, seen_penalty: float = 0.0) -> dict[str, Any]:
        from cagnet.evaluate import evaluate

        with torch_threads(self.config.runtime.num_threads):
            return evaluate(model, self.test_set, self.info, "original", test_size=self.config.data.test_size,
                            batch_size=self.config.data.test_batch_size, device=self.device,
                            amp=self.config.runtime.amp, seen_penalty=seen_penalty)

    def _save(self, folder: str, model: torch.nn.Module, scores: Mapping[str, Any], name: str = "scores.json") -> None:
        path = self.out_dir / folder
        path.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path / "model.pt")
        record = {k: v for k, v in scores.items() if k != "class_names"}
        (path / name).write_text(json.dumps(_json_safe(record), indent=2))

    # each method: train what it needs (once), then score
    def spnet(self) -> torch.nn.Module:
        if "SPNet" not in self.models:
            from cagnet.train.baselines import train_spnet

            self.models["SPNet"] = train_spnet(self.config, seed=self.seed, held_out=self.held_out,
                                               device=self.device)
        return self.models["SPNet"]

    def zs3net(self) -> torch.nn.Module:
        if "ZS3Net" not in self.models:
            from cagnet.train.baselines import train_zs3net

            self.models["ZS3Net"] = train_zs3net(self.config, seed=self.seed, device=self.device)
        return self.models["ZS3Net"]

    def cagnet(self, schedules: Sequence[str]) -> torch.nn.Module:
        from cagnet.train.engine import train

        for schedule in schedules:
            if schedule not in self.cagnet_results:
                self.cagnet_results[schedule] = train(self.config, schedule, self.out_dir / "cagnet" / schedule,
                                                      progress=False, verbose=False)
        return self.cagnet_results[schedules[-1]]

    def run(self, method: str) -> dict[str, Any]:
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        if method == "SPNet":
            model = self.spnet()
            scores = self.evaluate(model)
            self._save("spnet", model, scores)
        elif method == "SPNet-c":
            scores, extra = self._spnet_c()
        elif method == "ZS3Net":
            model = self.zs3net()
            scores = self.evaluate(model)
            self._save("zs3net", model, scores)
        elif method == "ZS3Net+ST":
            from cagnet.train.baselines import self_train_zs3net

            model = self_train_zs3net(self.config, self.zs3net(), seed=self.seed, device=self.device)
            scores = self.evaluate(model)
            self._save("zs3net_st", model, scores)
        elif method in ("CaGNet", "CaGNet+ST"):
            schedules = ("step1", "mixed") if method == "CaGNet" else ("step1", "mixed", "st", "st_mixed")
            result = self.cagnet(schedules)
            scores = result.scores
            if scores is None:
                raise ConfigError(f"CaGNet training of seed {self.seed} stopped before its final evaluation")
        else:  # check_methods guards this
            raise ConfigError(f"unknown method {method!r}")
        record = {**_summary(scores), **extra, "class_iou": list(scores["class_iou"]),
                  "num_images": scores["num_images"], "seconds": time.perf_counter() - started}
        self.records[method] = record
        return record

    def _spnet_c(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from cagnet.evaluate import calibration_sweep, held_out_calibration
        from cagnet.train.baselines import held_out_dataset

        model = self.spnet()
        cfg = self.config
        with torch_threads(cfg.runtime.num_threads):
            chosen = held_out_calibration(model, held_out_dataset(cfg, self.info, self.held_out), self.info,
                                          test_size=cfg.data.test_size, batch_size=cfg.data.test_batch_size,
                                          device=self.device, amp=cfg.runtime.amp)
            oracle = calibration_sweep(model, self.test_set, self.info, test_size=cfg.data.test_size,
                                       batch_size=cfg.data.test_batch_size, device=self.device, amp=cfg.runtime.amp)
        scores = self.evaluate(model, chosen["best_penalty"])
        self._save("spnet", model, scores, "scores_calibrated.json")
        extra = {"seen_penalty": chosen["best_penalty"], "held_out_images": self.held_out,
                 "held_out_seen_acc": chosen["seen_acc"][chosen["best_index"]] if chosen["best_index"] is not None
                 else None,
                 "held_out_unseen_rate": chosen["unseen_rate"][chosen["best_index"]]
                 if chosen["best_index"] is not None else None,
                 "oracle_penalty": oracle["best_penalty"],
                 "oracle_hiou": oracle["best"]["hiou"] if oracle["best"] is not None else None}
        (self.out_dir / "spnet" / "calibration.json").write_text(json.dumps(_json_safe({
            "held_out": {k: chosen[k] for k in ("penalties", "seen_acc", "unseen_rate", "balance", "best_penalty",
                                                "num_images", "num_labelled", "num_ignored")},
            "oracle": {k: oracle[k] for k in ("penalties", "seen_miou", "unseen_miou", "hiou", "best_penalty",
                                              "num_images")}}), indent=2))
        return scores, extra


def _protocol(config: TrainConfig, held_out: int, num_test_images: int | None) -> dict[str, Any]:
    from cagnet.train.baselines import baseline_budget

    return {
        "evaluation": "original", "split": "test", "test_size": config.data.test_size,
        "num_test_images": num_test_images,
        "cagnet": "engine schedules step1 -> mixed (CaGNet) -> st -> st_mixed (CaGNet+ST)",
        "cagnet_iterations": {name: config.schedule(name).iterations for name in ("step1", "mixed", "st", "st_mixed")},
        "baseline_iterations": dataclasses.asdict(baseline_budget(config)),
        "held_out_images": held_out,
        "calibration": (f"penalty on the seen-class logits chosen on the last {held_out} training images "
                        "(kept out of SPNet's training): best harmonic mean of seen-pixel accuracy and the "
                        "share of ignored (unseen) pixels predicted as an unseen class; no unseen-class "
                        "label used. Oracle (test-optimal) penalties are in per_seed for reference."),
        "std": "sample standard deviation over seeds",
    }


def _seed_worker(config_data: dict[str, Any], seed: int, out_dir: str, methods: Sequence[str], held_out: int | None,
                 threads: int | None, events: Any = None) -> dict[str, Any]:
    """One seed's records, in a worker process of :func:`run_benchmark` (``jobs > 1``); puts
    ``(seed, method, None)`` when a method starts and ``(seed, method, hiou)`` when it is done
    on the ``events`` queue."""
    config = train_config_from_dict(config_data)
    if threads:
        config = seed_config(config, config.runtime.seed, [f"runtime.num_threads={threads}"])
    run = _SeedRun(config, seed, Path(out_dir), held_out)
    records = {}
    for method in methods:
        if events is not None:
            events.put((seed, method, None))
        records[method] = run.run(method)
        if events is not None:
            events.put((seed, method, records[method]["hiou"]))
    return {"records": records, **_run_facts(run)}


def _run_facts(run: _SeedRun) -> dict[str, Any]:
    """What the table records of a seed's run besides the scores."""
    return {"config": run.config, "held_out": run.held_out, "class_names": list(run.info.eval_class_names),
            "num_seen": run.info.num_seen, "num_unseen": run.info.num_unseen}


def _worker_threads(config: TrainConfig, jobs: int) -> int | None:
    """Threads per worker process: the config's, else the cores shared out (at least 1), so that
    parallel seeds do not oversubscribe the CPU (which slows convolutions down many times)."""
    if config.runtime.num_threads:
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def run_benchmark(config: TrainConfig, seeds: Sequence[int] = (0, 1, 2), out_dir: str | Path | None = None,
                  methods: Sequence[str] = METHODS, progress: bool = True, *,
                  held_out: int | None = None, jobs: int = 1) -> dict[str, Any]:
    """Train and score every method for every seed; write ``table.json`` and ``table.md``.

    Args:
        config: a loaded :class:`~cagnet.config.TrainConfig` (its schedules set CaGNet's and,
            through :func:`cagnet.train.baselines.baseline_budget`, the baselines' iterations).
        seeds: one full run of every method per seed (``runtime.seed``).
        out_dir: result folder (default ``runs/<config name>/benchmark``): ``table.json``,
            ``table.md``, and per seed ``<seed>/cagnet/<schedule>/`` (engine run folders),
            ``<seed>/spnet|zs3net|zs3net_st/`` (``model.pt``, ``scores.json``; SPNet-c's
            ``calibration.json``).
        methods: any of :data:`METHODS` (a method's prerequisites are trained even when not
            requested: ZS3Net for ZS3Net+ST, CaGNet's step1/mixed for CaGNet+ST).
        progress: a progress bar over (method, seed) naming the running one (with ``jobs > 1``:
            over seeds, advancing as each one finishes).
        held_out: SPNet-c's held-out training images (default 10 %, :func:`default_held_out`).
        jobs: seeds trained at the same time, each in its own process (CPU: with
            ``runtime.num_threads`` unset, each process gets ``cores // jobs`` threads). The
            results are those of ``jobs=1`` (every run depends on its seed only).

    Returns:
        the table: ``methods`` ({method: {score: {"mean", "std"}}} for ``pixel_acc``,
        ``mean_acc``, ``miou``, ``seen_miou``, ``unseen_miou``, ``hiou``), ``seeds``,
        ``per_seed`` ({seed: {method: scores, class_iou, seconds, ...}}), ``config`` (name),
        ``protocol`` (how it was trained and scored), ``class_names``, ``seconds`` (total).
    """
    methods = check_methods(methods)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("benchmark: no seed given")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"benchmark: duplicate seeds {seeds}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"benchmark: jobs must be a positive integer, got {jobs!r}")
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name / "benchmark"
    started = time.perf_counter()
    if jobs == 1:
        per_seed, facts = _run_sequential(config, seeds, out_dir, methods, progress, held_out)
    else:
        per_seed, facts = _run_parallel(config, seeds, out_dir, methods, progress, held_out, jobs)
    table = {
        "methods": aggregate(per_seed, methods),
        "seeds": seeds,
        "per_seed": per_seed,
        "config": config.name,
        "protocol": _protocol(facts["config"], facts["held_out"], per_seed[str(seeds[0])][methods[0]]["num_images"]),
        "class_names": facts["class_names"],
        "num_seen": facts["num_seen"],
        "num_unseen": facts["num_unseen"],
        "seconds": time.perf_counter() - started,
    }
    write_table(table, out_dir)
    return _json_safe(table)


def _run_sequential(config: TrainConfig, seeds: list[int], out_dir: Path, methods: Sequence[str], progress: bool,
                    held_out: int | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    tasks = [(seed, method) for seed in seeds for method in methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc="benchmark", unit="run", dynamic_ncols=True)
    per_seed: dict[str, dict[str, Any]] = {}
    run = None
    try:
        for seed, method in tasks:
            if run is None or run.seed != seed:
                run = _SeedRun(config, seed, out_dir, held_out)
            if bar is not None:
                bar.set_description(f"{method} (seed {seed})")
            per_seed.setdefault(str(seed), {})[method] = run.run(method)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(hIoU=f"{100 * per_seed[str(seed)][method]['hiou']:.1f}")
    finally:
        if bar is not None:
            bar.close()
    return per_seed, _run_facts(run)


def _run_parallel(config: TrainConfig, seeds: list[int], out_dir: Path, methods: Sequence[str], progress: bool,
                  held_out: int | None, jobs: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = _worker_threads(config, jobs)
    # spawn: a fresh interpreter per worker (fork would copy torch's thread pools and locks)
    context = multiprocessing.get_context("spawn")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds) * len(methods), desc="benchmark", unit="run", dynamic_ncols=True)
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=min(jobs, len(seeds)),
                                                           mp_context=context) as pool:
        events = manager.Queue() if bar is not None else None
        futures = {pool.submit(_seed_worker, to_dict(config), seed, str(out_dir), tuple(methods), held_out,
                               threads, events): seed for seed in seeds}
        running: dict[int, str] = {}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # a worker's error stops the benchmark here
                while events is not None:
                    try:
                        seed, method, hiou = events.get_nowait()
                    except queue_module.Empty:
                        break
                    if hiou is None:
                        running[seed] = method
                    else:
                        running.pop(seed, None)
                        bar.update(1)
                        bar.set_postfix_str(f"last: {method} (seed {seed}) hIoU {100 * hiou:.1f}")
                    bar.set_description(", ".join(f"{m} (seed {s})" for s, m in sorted(running.items()))
                                        or "benchmark")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
        results = {futures[future]: future.result() for future in futures}
    per_seed = {str(seed): results[seed]["records"] for seed in seeds}
    return per_seed, results[seeds[0]]
