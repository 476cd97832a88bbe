"""The comparison of the CaGNet paper on a config's data: SPNet, SPNet-c, ZS3Net, ZS3Net+ST,
CaGNet and CaGNet+ST (and, when selected, the patch-wise CaGNetv2 and CaGNetv2+ST), over
several seeds, as tables of mean and standard deviation.

:func:`run_benchmark` trains and scores every method once per seed and writes
``<out_dir>/table.json`` (:func:`load_table` reads it) and ``<out_dir>/table.md``
(:func:`format_table_markdown`)::

    python -m cagnet benchmark --config tutorial --seeds 3
    python -m cagnet benchmark --config tutorial --methods CaGNetv2 CaGNetv2+ST

Two tables: the **paper's format** (the requested methods, the paper's rows in the paper's
order, :data:`PAPER_ORDER`: only SPNet is calibrated there, as in the paper) and the
**calibrated** one: every requested method's model with a seen penalty chosen on the
validation split (held-out training images on a dataset without one), the rows
``<method>-c`` with their penalty. They come from the same trained models (no retraining;
each calibrated row costs one forward pass over the calibration images and one over the
test split). A third table says where the seen / unseen boundary costs every row's scores.

Every method is trained and scored by :class:`cagnet.methods.MethodRuns` (see its module
for the protocol: the same initial weights, the same data and iteration budgets, run folders
reused by recipe, the calibration, CaGNetv2's patch-wise config), here on the **test** split,
once per seed. The protocol is also stored under ``"protocol"`` in ``table.json``.

Standard deviations are over seeds (sample standard deviation, ``n - 1``); with one seed
the table shows means only.

The paper's tables are data too (:data:`PAPER_RESULTS`, :func:`paper_table`), and the scores
of one run of each method become a table of the same structure with :func:`table_from_scores`,
so that both print with :func:`format_table_markdown`; the authors' CaGNetv2 results
(:data:`PAPER_V2_RESULTS`, hIoU / mIoU / S-mIoU / U-mIoU only) are rows of the same tables.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from cagnet.config import TrainConfig
from cagnet.errors import ConfigError
from cagnet.methods import (CALIBRATED_SUFFIX, DEFAULT_METHODS, METHODS, PATCHWISE_METHODS, Task, calibrated_method,
                            check_methods, run_seeds, trained_method)
from cagnet.results import (BOUNDARY_COLUMNS, CALIBRATED_COLUMNS, TABLE_COLUMNS, json_safe, load_result_file, mean_std,
                            table_record, write_result_files)

__all__ = ["DEFAULT_METHODS", "METHODS", "PAPER_ORDER", "PAPER_RESULTS", "PAPER_V2_RESULTS", "TABLE_COLUMNS",
           "aggregate", "benchmark_rows", "check_methods", "format_table_markdown", "load_table", "paper_table",
           "run_benchmark", "table_from_scores", "write_table"]

#: Row order of the paper's table.
PAPER_ORDER: tuple[str, ...] = ("SPNet", "SPNet-c", "ZS3Net", "CaGNet", "ZS3Net+ST", "CaGNet+ST")
#: Row order of every table: the paper's, then CaGNetv2's rows; a calibrated row follows its
#: method's (:func:`_row_key`).
_ROW_ORDER: tuple[str, ...] = ("SPNet", "ZS3Net", "CaGNet", "ZS3Net+ST", "CaGNet+ST", *PATCHWISE_METHODS)
TABLE_NAME = "table.json"
MARKDOWN_NAME = "table.md"

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

#: The columns the CaGNetv2 authors report (hIoU, mIoU, S-mIoU, U-mIoU; no pixel accuracies).
_PAPER_V2_COLUMNS: tuple[str, ...] = ("hiou", "miou", "seen_miou", "unseen_miou")
_PAPER_V2_ROWS: dict[str, dict[str, tuple[float, ...]]] = {
    "voc12": {"CaGNetv2": (0.4326, 0.6623, 0.7814, 0.2990), "CaGNetv2+ST": (0.4528, 0.6657, 0.7813, 0.3188)},
    "context": {"CaGNetv2": (0.2135, 0.3243, 0.3718, 0.1498), "CaGNetv2+ST": (0.2478, 0.3364, 0.3482, 0.1923)},
    "cocostuff": {"CaGNetv2": (0.1984, 0.3327, 0.3468, 0.1389), "CaGNetv2+ST": (0.2269, 0.3456, 0.3617, 0.1654)},
}
#: The CaGNetv2 results its authors report (patch-wise, "From Pixel to Patch"), as recorded in the
#: original CaGNetv2 reference: dataset -> method -> score (fractions; only
#: :data:`_PAPER_V2_COLUMNS`, the other columns of :data:`TABLE_COLUMNS` are not reported).
PAPER_V2_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    dataset: {method: dict(zip(_PAPER_V2_COLUMNS, values)) for method, values in rows.items()}
    for dataset, rows in _PAPER_V2_ROWS.items()}


def aggregate(per_seed: Mapping[str, Mapping[str, Mapping[str, Any]]], methods: Sequence[str],
              columns: Mapping[str, str] = TABLE_COLUMNS) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{method: {score: {"mean", "std"}}}`` over the seeds of ``per_seed``, for the scores
    named by ``columns`` (default: the table's, :data:`TABLE_COLUMNS`)."""
    table = {}
    for method in methods:
        runs = [seed_scores[method] for seed_scores in per_seed.values() if method in seed_scores]
        if runs:
            table[method] = {key: mean_std([run.get(key) for run in runs]) for key in columns}
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
    per_seed = {"run" if seed is None else str(seed): {method: table_record(run) for method, run in scores.items()}}
    return {"methods": aggregate(per_seed, list(scores)), "seeds": [] if seed is None else [int(seed)],
            "per_seed": per_seed}


def paper_table(dataset: str) -> dict[str, Any]:
    """The paper's table for ``dataset`` (a key of :data:`PAPER_RESULTS`: ``voc12``,
    ``context``, ``cocostuff``) with the authors' CaGNetv2 rows (:data:`PAPER_V2_RESULTS`; the
    scores they do not report are None, "n/a" in Markdown), in the structure of
    :func:`table_from_scores`, plus ``config`` (the dataset)."""
    if dataset not in PAPER_RESULTS:
        raise ConfigError(f"no paper results for dataset {dataset!r} (known: {', '.join(PAPER_RESULTS)})")
    rows = {**PAPER_RESULTS[dataset], **PAPER_V2_RESULTS.get(dataset, {})}
    per_seed = {"run": {method: {key: scores.get(key) for key in TABLE_COLUMNS} for method, scores in rows.items()}}
    return {"methods": aggregate(per_seed, list(rows)), "seeds": [], "per_seed": per_seed, "config": dataset}


#: Columns shown as they are (logit units), not in %.
_PLAIN_COLUMNS = frozenset({"seen_penalty"})


def _cell(entry: Mapping[str, Any] | None, show_std: bool, percent: bool = True) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    if not percent:   # logit units, whose scale differs between methods: 3 significant digits
        text = f"{entry['mean']:#.3g}"
        return text + (f" ± {entry['std']:#.3g}" if show_std and entry.get("std") is not None else "")
    text = f"{100.0 * entry['mean']:.2f}"
    if show_std and entry.get("std") is not None:
        text += f" ± {100.0 * entry['std']:.2f}"
    return text


def _row_key(name: str) -> tuple[int, int]:
    """Sort key of a table row: the paper's order (:data:`PAPER_ORDER`), then CaGNetv2's rows,
    each method followed by its calibrated row; other names last, in their order."""
    method = trained_method(name)
    if method not in _ROW_ORDER:
        return len(_ROW_ORDER), 0
    return _ROW_ORDER.index(method), int(name.endswith(CALIBRATED_SUFFIX))


def format_table_markdown(table: Mapping[str, Any], part: str = "methods") -> str:
    """The table of a benchmark result (or ``table.json``) as Markdown, in the paper's format:
    rows in the paper's order, columns ``Method | pixel acc | mean acc | mIoU | S-mIoU |
    U-mIoU | hIoU``, values in % as ``mean ± std`` over seeds (mean only with one seed).
    ``part="calibrated"``: the calibrated rows (``<method>-c``) with the same columns and the
    seen penalty (logit units; :data:`~cagnet.results.CALIBRATED_COLUMNS`);
    ``part="boundary"``: every row with the columns of :data:`BOUNDARY_COLUMNS` (where the
    seen / unseen boundary costs the scores)."""
    if part not in ("methods", "calibrated", "boundary"):
        raise ConfigError(f"table part must be methods, calibrated or boundary, got {part!r}")
    columns = {"methods": TABLE_COLUMNS, "calibrated": CALIBRATED_COLUMNS, "boundary": BOUNDARY_COLUMNS}[part]
    methods = table.get(part, {})
    show_std = len(table.get("seeds", [])) > 1
    rows = ["| Method | " + " | ".join(columns.values()) + " |",
            "|---|" + "---|" * len(columns)]
    for method in sorted(methods, key=_row_key):
        cells = [_cell(methods[method].get(key), show_std, key not in _PLAIN_COLUMNS) for key in columns]
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
        lines += [f"Calibration (SPNet-c, and every row of the calibrated table): {protocol['calibration']}", ""]
    if table.get("calibrated"):
        lines += ["Every method calibrated: the same trained models, each with a seen penalty (logit units, "
                  "subtracted from the seen-class logits; negative = seen classes boosted) chosen as SPNet-c's.",
                  "",
                  format_table_markdown(table, "calibrated"),
                  ""]
        at_edge = sorted({f"{name} (seed {seed})" for seed, records in table.get("per_seed", {}).items()
                          for name, record in records.items() if record.get("best_at_edge")})
        if at_edge:
            lines += ["Penalty at an end of the grid that still changed predictions (a wider grid might choose "
                      "another): " + ", ".join(at_edge) + ".", ""]
    if table.get("boundary"):
        lines += ["Where the seen / unseen boundary costs the scores: the S-mIoU of the same predictions "
                  "with the unseen classes' pixels left out (no false positives from them in seen classes), "
                  "and the shares of each side's pixels predicted as a class of the other side.",
                  "",
                  format_table_markdown(table, "boundary"),
                  ""]
    return "\n".join(lines)


def load_table(path: str | Path) -> dict[str, Any]:
    """A benchmark result from ``table.json`` (or a benchmark folder holding it)."""
    return load_result_file(path, TABLE_NAME, "benchmark table")


def write_table(table: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``table.json`` and ``table.md`` to ``out_dir``; returns their paths."""
    return write_result_files(table, out_dir, TABLE_NAME, MARKDOWN_NAME, _markdown_document(table))


def _protocol(config: TrainConfig, facts: Mapping[str, Any], num_test_images: int | None) -> dict[str, Any]:
    from cagnet.train.baselines import baseline_budget

    held_out = facts["held_out"]
    grid = "from quantiles of the seen-unseen logit gap on both sides of 0"
    if facts["calibration"] == "validation":
        calibration = (f"penalty on the seen-class logits ({grid}) with the best hIoU on the validation split; "
                       "SPNet trains on every training image. Oracle (test-optimal) penalties are in per_seed for "
                       "reference.")
    else:
        calibration = (f"penalty on the seen-class logits ({grid}) chosen on the last {held_out} training images "
                       "(kept out of SPNet's training; the other methods' -c rows use the same images, which they "
                       "trained on): best harmonic mean of seen-pixel accuracy and the share of ignored (unseen) "
                       "pixels predicted as an unseen class; no unseen-class label used. Oracle (test-optimal) "
                       "penalties are in per_seed for reference.")
    return {
        "evaluation": "original", "split": "test", "test_size": config.data.test_size,
        "num_test_images": num_test_images,
        "initial_weights": config.schedule("step1").init_model,
        "cagnet": "engine schedules step1 -> mixed (CaGNet) -> st -> st_mixed (CaGNet+ST); CaGNetv2 the same on "
                  "the patch-wise config (cagnet.methods.patchwise_config)",
        "cagnet_iterations": {name: config.schedule(name).iterations for name in ("step1", "mixed", "st", "st_mixed")},
        "baseline_iterations": dataclasses.asdict(baseline_budget(config)),
        "held_out_images": held_out,
        "calibration": calibration,
        "std": "sample standard deviation over seeds",
    }


def benchmark_rows(methods: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(rows of the paper-format table, rows of the calibrated table) for the requested
    ``methods`` (:func:`cagnet.methods.check_methods`): the methods themselves, and the
    calibrated row of each (``CaGNet`` and ``CaGNet-c`` -> ``CaGNet-c``), both in training order."""
    paper = check_methods(methods)
    return paper, check_methods([calibrated_method(m) for m in paper])


def run_benchmark(config: TrainConfig, seeds: Sequence[int] = (0, 1, 2), out_dir: str | Path | None = None,
                  methods: Sequence[str] = DEFAULT_METHODS, progress: bool = True, *,
                  held_out: int | None = None, patch_bank: str | None = None, jobs: int = 1) -> dict[str, Any]:
    """Train and score every method for every seed on the test split; write ``table.json`` and
    ``table.md``.

    Args:
        config: a loaded :class:`~cagnet.config.TrainConfig` (its schedules set CaGNet's and,
            through :func:`cagnet.train.baselines.baseline_budget`, the baselines' iterations).
        seeds: one full run of every method per seed (``runtime.seed``).
        out_dir: result folder (default ``runs/<config name>/benchmark``): ``table.json``,
            ``table.md``, and per seed ``<seed>/`` with the run folders of
            :class:`cagnet.methods.MethodRuns` (reused when the benchmark runs again).
        methods: any of :data:`METHODS` (default :data:`DEFAULT_METHODS`, the paper's six; a
            method's prerequisites are trained even when not requested: ZS3Net for ZS3Net+ST,
            CaGNet's step1/mixed for CaGNet+ST). Each method's calibrated row is scored too
            (:func:`benchmark_rows`).
        progress: a progress bar over (method, seed) naming the running ones.
        held_out: the calibration's held-out training images on a dataset without a validation
            split (default 10 %, :func:`cagnet.methods.default_held_out`).
        patch_bank: the block source of the CaGNetv2 rows (None = their config's; ``pure``; or
            a bank file: :func:`cagnet.methods.patchwise_overrides`).
        jobs: seeds trained at the same time, each in its own process (CPU: with
            ``runtime.num_threads`` unset, each process gets ``cores // jobs`` threads). The
            results are those of ``jobs=1`` (every run depends on its seed only).

    Returns:
        the table: ``methods`` ({method: {score: {"mean", "std"}}} for ``pixel_acc``,
        ``mean_acc``, ``miou``, ``seen_miou``, ``unseen_miou``, ``hiou``; the requested
        methods), ``calibrated`` (the same for the calibrated rows, with ``seen_penalty``),
        ``boundary`` (every row, :data:`~cagnet.results.BOUNDARY_COLUMNS`), ``seeds``,
        ``per_seed`` ({seed: {row: scores, class_iou, seconds, ...}}), ``config`` (name),
        ``protocol`` (how it was trained and scored), ``class_names``, ``seconds`` (total).
    """
    paper_rows, calibrated_rows = benchmark_rows(methods)
    rows = check_methods([*paper_rows, *calibrated_rows])
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name / "benchmark"
    started = time.perf_counter()
    tasks = [Task(name=method, method=method) for method in rows]
    per_seed, facts = run_seeds(config, seeds, out_dir, tasks, split="test", held_out=held_out, patch_bank=patch_bank,
                                jobs=jobs, progress=progress, desc="benchmark")
    first = per_seed[str(int(seeds[0]))][rows[0]]
    table = {
        "methods": aggregate(per_seed, paper_rows),
        "calibrated": aggregate(per_seed, calibrated_rows, CALIBRATED_COLUMNS),
        "boundary": aggregate(per_seed, rows, BOUNDARY_COLUMNS),
        "seeds": [int(s) for s in seeds],
        "per_seed": per_seed,
        "config": config.name,
        "protocol": _protocol(facts["config"], facts, first["num_images"]),
        "class_names": facts["class_names"],
        "num_seen": facts["num_seen"],
        "num_unseen": facts["num_unseen"],
        "seconds": time.perf_counter() - started,
    }
    write_table(table, out_dir)
    return json_safe(table)
