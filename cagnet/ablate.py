"""Ablations on the validation split: which parts of a recipe matter, and is CaGNet's idea working?

:func:`run_ablation` trains variants of a configuration over seeds with
:class:`cagnet.methods.MethodRuns`, scores them on the **validation** split (the test split is
for the reported tables only) and writes ``ablation.json`` and ``ablation.md``::

    python -m cagnet ablate --config tutorial --seeds 3 --jobs 2

A variant (:class:`Variant`) is a method and a list of ``key=value`` overrides of the base
configuration. CaGNet variants also report what tells whether the idea is working
(:func:`cagnet.diagnostics.context_diagnostics`): the KL term, the spread of the latent mean
against the noise sigma of the sampled code, that spread and how much of it the pixel's class
explains, the share of saturated real-feature values, and the classifier's accuracy on generated
vs real features of the unseen classes.

:data:`VARIANTS` is the standard set: the packaged ``tutorial`` recipe, and rows that each change
one thing of a reference recipe (the tutorial's with a narrower generator): the pretrained start
against random weights, SGD at the original rates against Adam, the
normalisation of h before the contextual sigmoid, the KL weight, the step-1/step-2 blocks of the
finetuning, the original's finetuning rates and step-2 weight, the unseen share of the step-2
labels, generator width and dropout, the recipe before the ablation, the contextual module (no
latent code, a zeroed or shuffled code for the generator, no gates; one change of the tutorial
recipe each), self-training's top_p, and
the baselines' own knobs with the same care (learning rates; ZS3Net's unseen share; top_p). Run
folders are shared between variants whose runs have the same recipe (:mod:`cagnet.methods`), so
a variant that only changes ``mixed`` reuses the base's step-1 run.

Choosing from the table: the validation scores of the calibrated rows (SPNet-c, ZS3Net-c,
ZS3Net+ST-c, CaGNet-c, CaGNet+ST-c: the tutorial recipe's models with a seen penalty) are those of
the penalty chosen on the same validation split (optimistic by construction); every other row is
trained without looking at validation labels and only *selected* with them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cagnet.config import TrainConfig
from cagnet.errors import ConfigError
from cagnet.methods import Task, check_methods, run_seeds
from cagnet.results import TABLE_COLUMNS, json_safe, load_result_file, mean_std, write_result_files

ABLATION_NAME = "ablation.json"
MARKDOWN_NAME = "ablation.md"
#: Scores and diagnostics of the table, in column order: key -> (title, shown as a percentage).
SCORE_COLUMNS: dict[str, str] = {"seen_miou": "S-mIoU", "unseen_miou": "U-mIoU", "hiou": "hIoU"}
DIAGNOSTIC_COLUMNS: dict[str, tuple[str, bool]] = {
    "kl": ("KL", False),
    "latent_mean_std_over_sigma": ("std(mu)/sigma", False),
    "latent_mean_std": ("std(mu)", False),
    "latent_class_share": ("class share of mu", True),
    "saturated_fraction": ("saturated", True),
    "generated_unseen_accuracy": ("acc gen. unseen", True),
    "real_unseen_accuracy": ("acc real unseen", True),
}


@dataclass(frozen=True)
class Variant:
    """One row of an ablation: ``method`` trained with the base config plus ``overrides``."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    note: str = ""

    def task(self) -> Task:
        return Task(name=self.name, method=self.method, overrides=tuple(self.overrides), diagnostics=True)


def _all_schedules(key: str, value: Any) -> tuple[str, ...]:
    return tuple(f"schedules.{s}.{key}={value}" for s in ("step1", "mixed", "st", "st_mixed"))


def _finetuning(key: str, value: Any) -> tuple[str, ...]:
    return tuple(f"schedules.{s}.{key}={value}" for s in ("mixed", "st_mixed"))


_ORIGINAL_MULTIPLIERS = ("optim.lr_multipliers.backbone=1", "optim.lr_multipliers.context=5",
                         "optim.lr_multipliers.context_gates=5", "optim.lr_multipliers.aspp_weight=10",
                         "optim.lr_multipliers.aspp_bias=20")
_ZS3NET_OWN = ("schedules.step1.backbone_lr=0.00033", "schedules.mixed.gen_unseen_rate=30")

#: The reference of the one-change CaGNet rows: the tutorial recipe with the generator of the
#: original's shape scaled to the 64-channel features (the tutorial's is twice as wide, the best row).
_REFERENCE = ("model.generator_widths=[128,120,108,98,90]",)

#: The standard variants. ``CaGNet`` / ``CaGNet+ST`` are the packaged ``tutorial`` recipe; every
#: other CaGNet row is one change of the reference (``CaGNet reference``) but the ``CaGNet tutorial
#: ...`` rows and the contextual module's rows (``CaGNet no context`` .. ``CaGNet no gates``), which
#: change the tutorial recipe itself; the baselines' rows are
#: one change of the tutorial recipe (the generator does not concern them). The tutorial's values
#: were chosen from this table on the validation split; ``tutorial.yaml`` names the rows.
VARIANTS: tuple[Variant, ...] = (
    Variant("CaGNet", "CaGNet", (), "the tutorial recipe: the reference with a generator twice as wide"),
    Variant("CaGNet reference", "CaGNet", _REFERENCE,
            "generator 128-120-108-98-90 (the original's shape at 64 channels): the reference of the rows below"),
    Variant("CaGNet scratch", "CaGNet", (*_REFERENCE, "schedules.step1.init_model=null"),
            "random initial weights instead of the pretrained backbone"),
    Variant("CaGNet SGD", "CaGNet", (*_REFERENCE, "optim.backbone_optimizer=sgd", *_ORIGINAL_MULTIPLIERS,
                                     "schedules.step1.backbone_lr=0.00025", "schedules.step1.generator_lr=0.0002",
                                     "schedules.step1.discriminator_lr=0.00025"),
            "SGD with the original's step-1 rates and multipliers (1/5/10/20) instead of Adam"),
    Variant("CaGNet h raw", "CaGNet", (*_REFERENCE, "model.semantic_norm=none"),
            "h not normalised before the contextual sigmoid (the original)"),
    Variant("CaGNet KL 100", "CaGNet", (*_REFERENCE, *_all_schedules("losses.lambda_B_KLD", 100)),
            "KL weight 100 (the original)"),
    Variant("CaGNet KL 10", "CaGNet", (*_REFERENCE, *_all_schedules("losses.lambda_B_KLD", 10)), "KL weight 10"),
    Variant("CaGNet KL 1", "CaGNet", (*_REFERENCE, *_all_schedules("losses.lambda_B_KLD", 1)), "KL weight 1"),
    Variant("CaGNet KL 0.01", "CaGNet", (*_REFERENCE, *_all_schedules("losses.lambda_B_KLD", 0.01)), "KL weight 0.01"),
    Variant("CaGNet interval 10", "CaGNet", (*_REFERENCE, *_finetuning("interval_step1", 10),
                                             *_finetuning("interval_step2", 10)),
            "10/10 step-1/step-2 blocks in the finetuning instead of the original's 100/100"),
    Variant("CaGNet interval 200", "CaGNet", (*_REFERENCE, *_finetuning("interval_step1", 200),
                                              *_finetuning("interval_step2", 200)),
            "one 200 + 200 block"),
    Variant("CaGNet step-2 rates", "CaGNet", (*_REFERENCE, *_finetuning("generator_lr", 0.00005),
                                              *_finetuning("discriminator_lr", 0.00005),
                                              *_finetuning("losses.lambda_D_cls_fake_transfer", 0.125)),
            "the original's finetuning rates (5e-5) and step-2 classifier weight (0.125)"),
    Variant("CaGNet step-2 weight 0.125", "CaGNet",
            (*_REFERENCE, *_finetuning("losses.lambda_D_cls_fake_transfer", 0.125)),
            "the original's step-2 classifier weight only"),
    Variant("CaGNet unseen 3", "CaGNet", (*_REFERENCE, *_finetuning("gen_unseen_rate", 3)),
            "unseen share of the step-2 labels 50 % (base 9: 77 %, the original's)"),
    Variant("CaGNet unseen 30", "CaGNet", (*_REFERENCE, *_finetuning("gen_unseen_rate", 30)), "unseen share 91 %"),
    Variant("CaGNet tutorial unseen 5", "CaGNet", _finetuning("gen_unseen_rate", 5),
            "the tutorial recipe with gen_unseen_rate 5 instead of 9"),
    Variant("CaGNet tutorial unseen 6", "CaGNet", _finetuning("gen_unseen_rate", 6),
            "the tutorial recipe with gen_unseen_rate 6 instead of 9"),
    Variant("CaGNet no dropout", "CaGNet", (*_REFERENCE, "model.generator_dropouts=[0,0,0,0,0]"),
            "no dropout in the generator (base: the original's 0.1-0.5)"),
    Variant("CaGNet previous recipe", "CaGNet",
            (*_REFERENCE, "model.semantic_norm=none", *_all_schedules("losses.lambda_B_KLD", 100),
             *_finetuning("interval_step1", 10), *_finetuning("interval_step2", 10)),
            "h raw, KL 100, 10/10 blocks: the recipe before this ablation"),
    Variant("CaGNet no context", "CaGNet", ("model.context_latent=none",),
            "no contextual latent code (the paper's ablation): the generator gets N(0, I) noise in step 1 as in "
            "step 2, no KL term, real feature sigmoid(h + h * sigmoid(0))"),
    Variant("CaGNet latent zeroed", "CaGNet", ("model.context_latent=zeroed",),
            "the generator gets a zero code in step 1 (real features, KL and step 2 unchanged)"),
    Variant("CaGNet latent shuffled", "CaGNet", ("model.context_latent=shuffled",),
            "the generator gets the contextual codes permuted across the batch's labelled pixels in step 1: "
            "same distribution, no link to the pixel's context"),
    Variant("CaGNet no gates", "CaGNet", ("model.context_gates=false",),
            "no context selector: the dilated branches fused without gates (every gate 1)"),
    Variant("CaGNet-c", "CaGNet-c", (), "penalty chosen on this validation split (optimistic here)"),
    Variant("CaGNet+ST", "CaGNet+ST", (), "the tutorial recipe with self-training (top_p 8)"),
    Variant("CaGNet+ST reference", "CaGNet+ST", _REFERENCE, "the reference with self-training"),
    Variant("CaGNet+ST top_p 2", "CaGNet+ST", (*_REFERENCE, "schedules.st.top_p=2"), "top_p 2 instead of 8"),
    Variant("CaGNet+ST-c", "CaGNet+ST-c", (), "penalty chosen on this validation split (optimistic here)"),
    Variant("SPNet", "SPNet", (), "the tutorial recipe"),
    Variant("SPNet lr x3", "SPNet", ("schedules.step1.backbone_lr=0.003",), "backbone learning rate 3e-3"),
    Variant("SPNet lr /3", "SPNet", ("schedules.step1.backbone_lr=0.00033",), "backbone learning rate 3.3e-4"),
    Variant("SPNet-c", "SPNet-c", (), "penalty chosen on this validation split (optimistic here)"),
    Variant("ZS3Net", "ZS3Net", (), "the tutorial recipe"),
    Variant("ZS3Net lr x3", "ZS3Net", ("schedules.step1.backbone_lr=0.003",), "backbone learning rate 3e-3"),
    Variant("ZS3Net lr /3", "ZS3Net", ("schedules.step1.backbone_lr=0.00033",), "backbone learning rate 3.3e-4"),
    Variant("ZS3Net unseen 3", "ZS3Net", ("schedules.mixed.gen_unseen_rate=3",),
            "generated unseen features per class in the classifier phase: rate 3 (base 9)"),
    Variant("ZS3Net unseen 30", "ZS3Net", ("schedules.mixed.gen_unseen_rate=30",), "rate 30"),
    Variant("ZS3Net own", "ZS3Net", _ZS3NET_OWN, "lr 3.3e-4 and rate 30: its best knobs together"),
    Variant("ZS3Net-c", "ZS3Net-c", (), "penalty chosen on this validation split (optimistic here)"),
    Variant("ZS3Net+ST", "ZS3Net+ST", (), "the tutorial recipe (top_p 8)"),
    Variant("ZS3Net+ST top_p 2", "ZS3Net+ST", ("schedules.st.top_p=2",), "top_p 2"),
    Variant("ZS3Net+ST own", "ZS3Net+ST", _ZS3NET_OWN, "from ZS3Net own"),
    Variant("ZS3Net+ST-c", "ZS3Net+ST-c", (), "penalty chosen on this validation split (optimistic here)"),
)


def select_variants(names: Iterable[str] | None, variants: Sequence[Variant] = VARIANTS) -> tuple[Variant, ...]:
    """The variants named (all when None), in table order; an unknown name is a ConfigError."""
    if names is None:
        return tuple(variants)
    by_name = {v.name: v for v in variants}
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown ablation variant {unknown[0]!r} (known: {', '.join(by_name)})")
    return tuple(v for v in variants if v.name in wanted)


def summarise(per_seed: Mapping[str, Mapping[str, Mapping[str, Any]]], variants: Sequence[Variant]
              ) -> dict[str, dict[str, Any]]:
    """``{variant: {"method", "note", "overrides", score/diagnostic: {"mean", "std"}}}`` over seeds."""
    rows = {}
    for variant in variants:
        runs = [records[variant.name] for records in per_seed.values() if variant.name in records]
        row: dict[str, Any] = {"method": variant.method, "note": variant.note, "overrides": list(variant.overrides)}
        for key in TABLE_COLUMNS:
            row[key] = mean_std([run.get(key) for run in runs])
        for key in DIAGNOSTIC_COLUMNS:
            row[key] = mean_std([run.get("diagnostics", {}).get(key) for run in runs])
        rows[variant.name] = row
    return rows


def _cell(entry: Mapping[str, Any] | None, percent: bool, show_std: bool) -> str:
    if not entry or entry.get("mean") is None:
        return ""
    scale = 100.0 if percent else 1.0
    if percent:
        text = f"{scale * entry['mean']:.1f}"
        if show_std:
            text += f" ± {scale * entry['std']:.1f}"
        return text
    return f"{entry['mean']:.2g}"


def format_ablation_markdown(table: Mapping[str, Any], rows: Iterable[str] | None = None) -> str:
    """The ablation table as Markdown: one row per variant (``rows``: only these, in the table's
    order), scores in % (mean ± std over seeds), diagnostics as means (CaGNet rows only). A
    diagnostic that no row of the table holds (a table written before that column existed) is
    left out."""
    show_std = len(table.get("seeds", [])) > 1
    variants = table.get("variants", {})
    diagnostics = {key: column for key, column in DIAGNOSTIC_COLUMNS.items()
                   if any(key in row for row in variants.values())}
    titles = ["Variant", "What changes", *SCORE_COLUMNS.values(), *(t for t, _ in diagnostics.values())]
    lines = ["| " + " | ".join(titles) + " |", "|---|---|" + "---|" * (len(titles) - 2)]
    wanted = None if rows is None else set(rows)
    for name, row in variants.items():
        if wanted is not None and name not in wanted:
            continue
        cells = [name, row.get("note", "")]
        cells += [_cell(row.get(key), True, show_std) for key in SCORE_COLUMNS]
        cells += [_cell(row.get(key), percent, False) for key, (_, percent) in diagnostics.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(table: Mapping[str, Any], variant: str, base: str = "CaGNet", key: str = "hiou"
                       ) -> dict[str, Any]:
    """``variant`` minus ``base`` in score ``key``, seed by seed (both rows trained from the same
    seed: the same start, batches and noise), of an ablation result (:func:`run_ablation` or
    ``ablation.json``): ``per_seed`` ({seed: difference}), ``mean``, ``std`` (sample std, 0 with
    one seed) and ``wins`` (seeds where the variant is higher). Seeds missing either row are left
    out; a ConfigError when none has both."""
    differences = {}
    for seed, records in table.get("per_seed", {}).items():
        if variant in records and base in records:
            a, b = records[variant].get(key), records[base].get(key)
            if a is not None and b is not None:
                differences[str(seed)] = float(a) - float(b)
    if not differences:
        raise ConfigError(f"ablation: no seed has both rows {variant!r} and {base!r} with {key!r}")
    values = list(differences.values())
    return {"per_seed": differences, **mean_std(values), "wins": sum(v > 0 for v in values)}


def _markdown_document(table: Mapping[str, Any]) -> str:
    seeds = table.get("seeds", [])
    return "\n".join([
        f"# Ablation: config {table.get('config')}",
        "",
        f"Validation split ({table.get('num_images')} images, `original` protocol); {len(seeds)} seed(s): "
        f"{', '.join(map(str, seeds))}. Scores in %"
        + (", mean ± sample std over seeds" if len(seeds) > 1 else "")
        + "; diagnostics (CaGNet rows) are means over seeds: KL term, std of the latent mean over the pixels "
          "divided by the mean sigma of the sampled code, std of the latent mean, share of its "
          "variance explained by the class, share of saturated real-feature values, classifier accuracy on "
          "generated and on real unseen-class features.",
        "",
        format_ablation_markdown(table),
        ""])


def write_ablation(table: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``ablation.json`` and ``ablation.md`` to ``out_dir`` (atomically); returns their paths."""
    return write_result_files(table, out_dir, ABLATION_NAME, MARKDOWN_NAME, _markdown_document(table))


def load_ablation(path: str | Path) -> dict[str, Any]:
    """An ablation result from ``ablation.json`` (or a folder holding it)."""
    return load_result_file(path, ABLATION_NAME, "ablation table")


def run_ablation(config: TrainConfig, variants: Sequence[Variant] = VARIANTS, seeds: Sequence[int] = (0, 1, 2),
                 out_dir: str | Path | None = None, *, jobs: int = 1, progress: bool = True) -> dict[str, Any]:
    """Train every variant for every seed, score it on the validation split, write the table.

    Args:
        config: the base configuration (it must have a validation split: the embedded benchmark).
        variants: rows of the table (default :data:`VARIANTS`).
        seeds: ``runtime.seed`` values.
        out_dir: result folder (default ``runs/<config name>/ablation``): ``ablation.json``,
            ``ablation.md`` and the run folders under ``runs/<seed>/``.
        jobs: seeds trained at the same time, each in its own process.
        progress: a progress bar over (variant, seed).

    Returns:
        ``variants`` (:func:`summarise`), ``seeds``, ``per_seed`` ({seed: {variant: record}}),
        ``config``, ``num_images``, ``seconds``.
    """
    if not variants:
        raise ConfigError("ablation: no variant selected")
    check_methods({v.method for v in variants})
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name / "ablation"
    started = time.perf_counter()
    per_seed, facts = run_seeds(config, seeds, out_dir / "runs", [v.task() for v in variants], split="validation",
                                jobs=jobs, progress=progress, desc="ablation")
    first = next(iter(next(iter(per_seed.values())).values()))
    table = {"variants": summarise(per_seed, variants), "seeds": [int(s) for s in seeds], "per_seed": per_seed,
             "config": config.name, "split": "validation", "num_images": first["num_images"],
             "class_names": facts["class_names"], "num_seen": facts["num_seen"],
             "seconds": time.perf_counter() - started}
    write_ablation(table, out_dir)
    return json_safe(table)
