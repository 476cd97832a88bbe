"""Result tables of the comparison and the ablation: their columns, statistics over seeds, and
strict-JSON / Markdown files written atomically (:mod:`cagnet.benchmark`, :mod:`cagnet.ablate`)."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from cagnet.errors import ConfigError

#: Scores of a table row: key of :func:`cagnet.metrics.gzsl_scores` -> column title.
TABLE_COLUMNS: dict[str, str] = {"pixel_acc": "pixel acc", "mean_acc": "mean acc", "miou": "mIoU",
                                 "seen_miou": "S-mIoU", "unseen_miou": "U-mIoU", "hiou": "hIoU"}
#: Columns of a calibrated row: the table's scores and the seen penalty (logit units).
CALIBRATED_COLUMNS: dict[str, str] = {**TABLE_COLUMNS, "seen_penalty": "penalty"}
#: Where the seen / unseen boundary costs the scores (:func:`cagnet.metrics.seen_unseen_confusion`)
#: -> column title.
BOUNDARY_COLUMNS: dict[str, str] = {"seen_miou_without_unseen_pixels": "S-mIoU without unseen pixels",
                                    "unseen_as_seen": "unseen pixels predicted seen",
                                    "seen_as_unseen": "seen pixels predicted unseen"}


def json_safe(value: Any) -> Any:
    """NaN / inf -> None, recursively (files stay strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """``{"mean", "std"}`` (sample standard deviation, 0 for one value) of values over seeds;
    both None when a value is missing or NaN (or there is none)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if len(finite) != len(values) or not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0}


def write_result_files(table: Mapping[str, Any], out_dir: str | Path, json_name: str, markdown_name: str,
                       markdown: str) -> tuple[Path, Path]:
    """Write a result table as strict JSON and its Markdown document, atomically; returns the paths."""
    from cagnet.files import atomic_write_text

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / json_name, out_dir / markdown_name
    atomic_write_text(json_path, json.dumps(json_safe(dict(table)), indent=1, allow_nan=False))
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def load_result_file(path: str | Path, json_name: str, what: str) -> dict[str, Any]:
    """A result table from its JSON file (or a folder holding ``json_name``); a missing or
    invalid file is a one-line ConfigError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / json_name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not a {what} (invalid JSON at line {err.lineno})") from None


def table_record(scores: Mapping[str, Any]) -> dict[str, float]:
    """The table's scores of one evaluation (:data:`TABLE_COLUMNS`)."""
    return {key: float(scores[key]) for key in TABLE_COLUMNS}
