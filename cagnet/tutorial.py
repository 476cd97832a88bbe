"""What the tutorial notebooks share: the chapter set-up, the run budget, the smoke recipe and
where runs go.

:func:`chapter` gives a notebook its set-up in one call (``ch = chapter(device=device)``): the
packaged ``tutorial`` configuration with the notebook's overrides, the budget, the torch threads,
the dataset's classes, the device, and :class:`cagnet.methods.MethodRuns` over the run folders,
so that notebooks 02 to 06, the command line and the benchmark train and reuse the same runs.

Every notebook runs with one of two budgets, read from ``$CAGNET_BUDGET``:

* ``full`` (default): the packaged ``tutorial`` configuration as it is (``make run``);
* ``smoke``: the same code path with a few iterations per schedule and a few pretraining
  iterations (``make test`` runs every notebook under nbval with it). Its runs go to
  ``runs/<config>_smoke/`` so that a test never replaces the checkpoints of a full run.

:func:`error_breakdown` puts into numbers what the error maps of a prediction figure show
(which kinds of mistake, the most frequent confusion), so that a chapter can read its figures
from its own output.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from cagnet.errors import ConfigError
from cagnet.files import project_root

BUDGET_VARIABLE = "CAGNET_BUDGET"
BUDGETS: tuple[str, ...] = ("full", "smoke")
#: Iterations of every schedule under the smoke budget (12 step-1 iterations: enough for the
#: classifier to stop predicting the unseen classes, as a trained step-1 model does).
SMOKE_ITERATIONS: dict[str, int] = {"step1": 12, "mixed": 16, "st": 4, "st_mixed": 16}
#: Block lengths of the finetuning schedules under the smoke budget: step-2 iterations are cheap
#: (no backbone), so a smoke run still alternates both kinds.
SMOKE_INTERVALS: dict[str, int] = {"interval_step1": 2, "interval_step2": 6}
#: Backbone pretraining under the smoke budget (its own cache file: another recipe).
SMOKE_PRETRAIN: dict[str, int] = {"iterations": 20, "num_images": 16, "batch_size": 4}


def run_budget() -> str:
    """``$CAGNET_BUDGET`` (default ``full``); anything else than ``full`` / ``smoke`` is a ConfigError."""
    budget = os.environ.get(BUDGET_VARIABLE, "full").strip() or "full"
    if budget not in BUDGETS:
        raise ConfigError(f"${BUDGET_VARIABLE}: unknown budget {budget!r} (expected one of {', '.join(BUDGETS)})")
    return budget


def smoke() -> bool:
    """True under the smoke budget (``CAGNET_BUDGET=smoke``, the test suite): a notebook's
    parameters cell then picks its small values, e.g. ``iterations = 8 if smoke() else 150``."""
    return run_budget() == "smoke"


def smoke_overrides() -> list[str]:
    """``key=value`` overrides that turn the tutorial schedules and pretraining into the smoke recipe."""
    overrides = [f"schedules.{name}.iterations={count}" for name, count in SMOKE_ITERATIONS.items()]
    overrides += [f"schedules.{name}.{key}={value}" for name in ("mixed", "st_mixed")
                  for key, value in SMOKE_INTERVALS.items()]
    overrides += [f"pretrain.{key}={value}" for key, value in SMOKE_PRETRAIN.items()]
    return overrides


def default_runs_root(config_name: str, budget: str) -> Path:
    """``<project root>/runs/<config_name>`` (``..._smoke`` under the smoke budget)."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r} (expected one of {', '.join(BUDGETS)})")
    return project_root() / "runs" / (config_name + ("_smoke" if budget == "smoke" else ""))


# ------------------------------------------------------------------------------ the chapter kit
@dataclass
class Chapter:
    """A notebook's set-up (see :func:`chapter`).

    Attributes:
        config: the resolved configuration (budget and overrides applied).
        budget: ``full`` or ``smoke``.
        info: the dataset's classes and split.
        device: where models run.
        runs: :class:`cagnet.methods.MethodRuns` over ``runs_root`` (scored split: test), the
            shared trainer and loader of every method's runs.
        settings: the ``key=value`` overrides :func:`chapter` applied to the packaged
            configuration (the budget's, then the device, amp, data root, threads, then the
            notebook's); :meth:`variant` loads another configuration with the same.
    """

    config: Any
    budget: str
    info: Any
    device: Any
    runs: Any
    settings: tuple[str, ...] = ()

    @property
    def runs_root(self) -> Path:
        return self.runs.runs_root

    @property
    def num_seen(self) -> int:
        return self.info.num_seen

    @property
    def num_unseen(self) -> int:
        return self.info.num_unseen

    @property
    def class_names(self) -> list[str]:
        """Class names in evaluation order: seen ``0..S-1``, then unseen ``S..S+U-1``."""
        return list(self.info.eval_class_names)

    def dataset(self, split: str = "validation", warp_label: bool = True):
        """A scored split (images warped to ``data.test_size``):
        :func:`cagnet.train.loading.evaluation_dataset`."""
        from cagnet.train.loading import evaluation_dataset

        return evaluation_dataset(self.config, self.info, split, warp_label=warp_label)

    def pretrained(self):
        """The pretrained backbone of the configuration (trained now when missing):
        :func:`cagnet.pretrain.ensure_pretrained`."""
        from cagnet.pretrain import ensure_pretrained

        return ensure_pretrained(self.config, progress=True)

    def cagnet_run(self, schedule: str, retrain: bool = False) -> Path:
        """The folder of the finished run of ``schedule`` (trained now, with a progress bar, when
        missing): :meth:`cagnet.methods.MethodRuns.cagnet_run`."""
        return self.runs.cagnet_run(schedule, retrain=retrain, progress=True, verbose=True)

    def cagnet_model(self, schedule: str):
        """The CaGNet model after ``schedule``, in eval mode on the device."""
        self.cagnet_run(schedule)
        return self.runs.cagnet_model(schedule)

    def variant(self, config: str, overrides: Sequence[str] = ()):
        """Another configuration (packaged name or YAML path) loaded as this chapter's was
        (:attr:`settings`), then ``overrides``; e.g. ``ch.variant("tutorial_pa3")``."""
        from cagnet.config import load_train_config

        return load_train_config(config, [*self.settings, *overrides])

    def run_from(self, config, schedule: str, start: str | Path, *, retrain: bool = False) -> Path:
        """A finished run of ``schedule`` of ``config`` that starts from the checkpoint of the run
        folder ``start`` instead of ``config``'s own chain (e.g. CaGNetv2's patch-wise ``mixed``
        from the pixel-wise step-1 run: the same start for both finetunings).

        The folder is ``<runs_root>/<config.name>/<schedule>-<digest>``, the digest that of the
        run's recipe with ``schedules.<schedule>.init_model`` set to the start's checkpoint, so
        another start gives another folder; a finished run of it is reused unless ``retrain``.
        """
        from cagnet.config_io import to_dict
        from cagnet.methods import recipe_digest, seed_config
        from cagnet.train.checkpoint import CHECKPOINT_NAME
        from cagnet.train.engine import train
        from cagnet.train.runs import finished_run, run_recipe

        checkpoint = (Path(start) / CHECKPOINT_NAME).resolve()
        if not checkpoint.is_file():
            raise ConfigError(f"run_from: {checkpoint} does not exist (train the start run first)")
        config = seed_config(config, config.runtime.seed, [f"schedules.{schedule}.init_model={checkpoint}"])
        folder = self.runs_root / config.name / f"{schedule}-{recipe_digest(run_recipe(to_dict(config), schedule))}"
        if retrain or not finished_run(folder, schedule, config):
            train(config, schedule, folder, progress=True, verbose=True, force=True)
        return folder

    def describe(self) -> str:
        """One line: budget, dataset, classes, device, run folders."""
        return (f"budget {self.budget}; dataset {self.info.root} ({self.num_seen} seen, {self.num_unseen} unseen "
                f"classes); device {self.device}; runs in {self.runs_root}")


def chapter(config: str = "tutorial", *, device: str | None = None, amp: str | None = None,
            num_threads: int = 0, data_root: str | None = None, runs_root: str | Path | None = None,
            overrides: Sequence[str] = ()) -> Chapter:
    """A notebook's set-up in one call.

    Loads ``config`` (packaged name or YAML path) with the smoke recipe under
    ``$CAGNET_BUDGET=smoke`` (:func:`smoke_overrides`) and the given values (``None`` keeps the
    config's: ``device``, ``amp``, ``data_root``; ``overrides`` are further ``key=value``
    strings), sets torch to ``num_threads`` CPU threads (0: the idle cores,
    :func:`cagnet.runtime.idle_threads`, e.g. 2 on an idle 2-core CPU and 1 when another process
    keeps one core busy), builds the embedded
    benchmark when the config asks for it and it is missing, and returns a :class:`Chapter` whose
    run folders are in ``runs_root`` (default :func:`default_runs_root`).
    """
    import torch

    from cagnet.config import load_train_config
    from cagnet.methods import MethodRuns
    from cagnet.train.loading import prepare_dataset

    budget = run_budget()
    values = [f"{key}={value}" for key, value in (("runtime.device", device), ("runtime.amp", amp),
                                                  ("data.root", data_root)) if value is not None]
    if num_threads <= 0:
        from cagnet.runtime import idle_threads

        num_threads = idle_threads()
    values.append(f"runtime.num_threads={num_threads}")
    torch.set_num_threads(num_threads)
    settings = (*(smoke_overrides() if budget == "smoke" else []), *values, *overrides)
    loaded = load_train_config(config, list(settings))
    info = prepare_dataset(loaded, progress=True)
    root = Path(runs_root) if runs_root is not None else default_runs_root(loaded.name, budget)
    runs = MethodRuns(loaded, loaded.runtime.seed, root, split="test")
    return Chapter(config=runs.config, budget=budget, info=info, device=runs.device, runs=runs, settings=settings)


# ------------------------------------------------------------------------------ reading error maps
def error_breakdown(labels: Sequence[Any], predictions: Any, class_names: Sequence[str], num_seen: int,
                    ignore_index: int = 255):
    """What the error maps of a prediction figure show, in numbers: a ``pandas.DataFrame`` with
    one row per method over the given images.

    ``labels``: ground-truth maps [H, W] of evaluation indices; ``predictions``: a mapping
    method -> one map per label (or one sequence of maps: one method, named "prediction").
    Columns: the share of the scored pixels that are wrong and of each kind of mistake
    (:data:`cagnet.viz.ERROR_CATEGORIES`, fractions; ignored pixels left out), the share of
    the wrong pixels whose true and predicted classes name the same colour
    (:func:`cagnet.viz.colour_word`; NaN when the class names hold no colour word), and the
    most frequent confusion, "true → predicted (its share of the scored pixels)".
    """
    import numpy as np
    import pandas as pd

    from cagnet.viz import ERROR_CATEGORIES, colour_word, error_categories, error_shares, unseen_label

    if not isinstance(predictions, Mapping):
        predictions = {"prediction": predictions}
    colours = [colour_word(name) for name in class_names]
    rows = {}
    for method, maps in predictions.items():
        truth = np.concatenate([np.asarray(label).reshape(-1) for label in labels]).astype(np.int64)
        predicted = np.concatenate([np.asarray(m).reshape(-1) for m in maps]).astype(np.int64)
        codes = error_categories(truth[None], predicted[None], num_seen, ignore_index)[0]
        scored = codes != ERROR_CATEGORIES.index("ignored (not scored)")
        wrong = scored & (truth != predicted)
        shares = error_shares(codes)
        row = {"wrong": wrong.sum() / max(scored.sum(), 1), **{name: shares[name] for name in ERROR_CATEGORIES[1:-1]}}
        if wrong.any() and any(colours):
            same = [colours[t] is not None and colours[t] == colours[p] for t, p in zip(truth[wrong], predicted[wrong])]
            row["wrong pixels within one colour"] = float(np.mean(same))
        else:
            row["wrong pixels within one colour"] = float("nan")
        if wrong.any():
            pairs, counts = np.unique(np.stack([truth[wrong], predicted[wrong]]), axis=1, return_counts=True)
            t, p = (int(v) for v in pairs[:, counts.argmax()])
            row["most frequent confusion"] = (f"{unseen_label(class_names[t], t >= num_seen)} → "
                                              f"{unseen_label(class_names[p], p >= num_seen)} "
                                              f"({counts.max() / scored.sum():.1%})")
        else:
            row["most frequent confusion"] = "-"
        rows[method] = row
    return pd.DataFrame.from_dict(rows, orient="index")
