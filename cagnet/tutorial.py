"""What the tutorial notebooks share: the run budget, the smoke recipe and where runs go.

Every notebook runs with one of two budgets, read from ``$CAGNET_BUDGET``:

* ``full`` (default): the packaged ``tutorial`` configuration as it is (``make run``);
* ``smoke``: the same code path with a few iterations per schedule (``make test`` runs every
  notebook under nbval with it). Its runs go to ``runs/<config>_smoke/`` so that a test
  never replaces the checkpoints of a full run.
"""
from __future__ import annotations

import os
from pathlib import Path

from cagnet.errors import ConfigError

BUDGET_VARIABLE = "CAGNET_BUDGET"
BUDGETS: tuple[str, ...] = ("full", "smoke")
#: Iterations of every schedule under the smoke budget (12 step-1 iterations: enough for the
#: classifier to stop predicting the unseen classes, as a trained step-1 model does).
SMOKE_ITERATIONS: dict[str, int] = {"step1": 12, "mixed": 16, "st": 4, "st_mixed": 16}
#: Block lengths of the finetuning schedules under the smoke budget: step-2 iterations are cheap
#: (no backbone), so a smoke run still alternates both kinds.
SMOKE_INTERVALS: dict[str, int] = {"interval_step1": 2, "interval_step2": 6}


def run_budget() -> str:
    """``$CAGNET_BUDGET`` (default ``full``); anything else than ``full`` / ``smoke`` is a ConfigError."""
    budget = os.environ.get(BUDGET_VARIABLE, "full").strip() or "full"
    if budget not in BUDGETS:
        raise ConfigError(f"${BUDGET_VARIABLE}: unknown budget {budget!r} (expected one of {', '.join(BUDGETS)})")
    return budget


def smoke_overrides() -> list[str]:
    """``key=value`` overrides that turn the tutorial schedules into the smoke recipe."""
    overrides = [f"schedules.{name}.iterations={count}" for name, count in SMOKE_ITERATIONS.items()]
    overrides += [f"schedules.{name}.{key}={value}" for name in ("mixed", "st_mixed")
                  for key, value in SMOKE_INTERVALS.items()]
    return overrides


def project_root() -> Path:
    """The source checkout holding the package (the folder with ``pyproject.toml`` next to
    ``cagnet/``), else the working directory (an installed package)."""
    parent = Path(__file__).resolve().parents[1]
    if (parent / "pyproject.toml").is_file() and (parent / "cagnet").is_dir():
        return parent
    return Path.cwd()


def default_runs_root(config_name: str, budget: str) -> Path:
    """``<project root>/runs/<config_name>`` (``..._smoke`` under the smoke budget)."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r} (expected one of {', '.join(BUDGETS)})")
    return project_root() / "runs" / (config_name + ("_smoke" if budget == "smoke" else ""))
