"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a ``torch.save`` of plain data (tensors, numbers, strings, lists, dicts) so
that it loads with ``torch.load(weights_only=True)``::

    {
      "format": "cagnet-train", "version": 1,
      "iteration": int,                  # iterations completed
      "state_dict": {...},               # the model (project layout)
      "schedule": "step1", "config": {...},          # the resolved TrainConfig as plain data
      "optimizers": {"backbone": ..., "generator": ..., "discriminator": ...},
      "schedulers": {"iteration": int},  # the schedules are closed-form in the iteration
      "grad_scaler": {...},
      "rng": [per-process {"python", "numpy", "torch", "cuda"}],
      "data": {"epoch": int, "batch": int, "skipped_batches": int},
    }

``iteration`` and ``state_dict`` are the keys of the original's checkpoints, so
:func:`cagnet.models.load_checkpoint` (``--init-model``, ``evaluate --checkpoint``) reads a
training checkpoint like any other model file.
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cagnet.errors import CheckpointError
from cagnet.files import atomic_write

CHECKPOINT_FORMAT = "cagnet-train"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def capture_rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy, torch (CPU) and CUDA (when present), as plain data."""
    version, internal, gauss = random.getstate()
    bit_generator, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"bit_generator": bit_generator, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["position"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def atomic_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a reader
    (or a crash) never sees a half-written file (:func:`cagnet.files.atomic_write`)."""
    return atomic_write(path, lambda stream: torch.save(payload, stream))


def _cpu(state: Any) -> Any:
    """Tensors of a nested structure moved to the CPU (checkpoints load anywhere)."""
    if torch.is_tensor(state):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu(v) for v in state)
    return state


def build_checkpoint(*, iteration: int, model_state: dict, schedule: str, config: dict, optimizers: dict,
                     grad_scaler: dict, rng: list[dict], epoch: int, batch: int, skipped_batches: int) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "iteration": int(iteration),
        "state_dict": _cpu(model_state),
        "schedule": schedule,
        "config": config,
        "optimizers": _cpu(optimizers),
        "schedulers": {"iteration": int(iteration)},
        "grad_scaler": grad_scaler,
        "rng": _cpu(rng),
        "data": {"epoch": int(epoch), "batch": int(batch), "skipped_batches": int(skipped_batches)},
    }


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint written by :func:`build_checkpoint` + :func:`atomic_save`.

    Safe loading (``weights_only=True``); a missing file, a foreign file or a model-only
    checkpoint raises :class:`CheckpointError` in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # refused globals, truncated or foreign files
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path}: cannot be read safely ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a cagnet training checkpoint (a model-only file "
                              f"can start a run with --init-model, not --resume)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {payload.get('version')!r}, "
                              f"expected {CHECKPOINT_VERSION}")
    return payload
