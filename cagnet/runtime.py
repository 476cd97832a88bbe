"""Arithmetic, device and random-number settings shared by training, evaluation and the benchmark.

Two things decide how fast a CaGNet model trains on a CPU besides its size:

* **Subnormal floats.** The real feature ``sigmoid(h + h * sigmoid(latent))`` saturates as
  the model learns, and the derivatives of saturated sigmoids are float32 subnormals
  (below 1.2e-38). x86 CPUs compute with subnormals in microcode, tens of times slower:
  on the tutorial model a step-1 iteration slowed from 0.3 s to 1.5 s between iteration 900
  and 1500. Flushing them to zero (:func:`flush_denormals`) keeps the iteration time
  constant; a subnormal is below any value that can change a float32 weight, so results
  are otherwise unchanged. GPUs are not affected.
* **Thread count.** On a shared 2-core machine, torch's default of one thread per core
  slows down about tenfold when another busy process competes for the cores;
  ``runtime.num_threads: 1`` avoids that (:func:`torch_threads`); :func:`idle_threads` counts
  the cores that no other work keeps busy (the notebooks' default).

Besides: autocast for ``runtime.amp`` (:func:`autocast_context`), used alike by training and
inference, and switched off where the losses need full precision (:func:`autocast_off`), the seeding of the global random streams (:func:`seed_everything`), and where
notes for the reader go (:func:`notes_stream`).
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import Iterator, TextIO

import numpy as np
import torch

#: torch's thread count when this module was first imported (its default, or $OMP_NUM_THREADS)
_DEFAULT_THREADS = torch.get_num_threads()


def notes_stream() -> TextIO:
    """Where notes for the reader go (initial weights, periodic scores, repaired logs): standard
    output inside a Jupyter kernel, where standard error is shown as a red error box, and
    standard error elsewhere, where standard output carries the command's results."""
    return sys.stdout if in_jupyter_kernel() else sys.stderr


def in_jupyter_kernel() -> bool:
    """True inside a running Jupyter kernel (not merely when ipykernel was imported)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def flush_denormals() -> bool:
    """Flush subnormal floats to zero in CPU arithmetic (process-wide; stays on).

    Returns True when the CPU supports it (x86 with SSE3, ARM), False otherwise.
    """
    return torch.set_flush_denormal(True)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Context: ``count`` torch CPU threads (None or 0: unchanged), restored on exit; subnormal
    floats flushed to zero (:func:`flush_denormals`)."""
    previous = torch.get_num_threads()
    flush_denormals()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def busy_cores(samples: int = 5, interval: float = 0.02) -> float:
    """How many cores other processes keep busy now: the median over ``samples`` readings of the
    runnable tasks in ``/proc/loadavg`` (this process, reading it, is one of them, so one less).
    Without ``/proc`` (not Linux): the 1-minute load average, or 0."""
    import statistics
    import time

    readings = []
    for k in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as handle:
                running = int(handle.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            try:
                return float(os.getloadavg()[0])
            except (OSError, AttributeError):
                return 0.0
        readings.append(max(0, running - 1))
        if k + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(readings))


def idle_threads(busy: float | None = None, cores: int | None = None) -> int:
    """Torch CPU threads for a process that may use the idle part of the machine: the cores
    (torch's default thread count: the physical cores it may run on, or ``$OMP_NUM_THREADS``)
    minus the ones other processes keep busy now (:func:`busy_cores`, rounded), at least 1.

    On an idle 2-core CPU that is 2 (the tutorial's step 1 runs faster than on one); with
    another busy process it is 1: two threads that compete with it wait for each other at every
    parallel region and run slower than one (``benchmarks/bench_train.py --threads``).
    ``busy`` / ``cores`` replace the measured values (for tests)."""
    cores = _DEFAULT_THREADS if cores is None else cores
    busy = busy_cores() if busy is None else busy
    return max(1, int(cores) - int(round(busy)))


@contextlib.contextmanager
def cudnn_autotune(enabled: bool) -> Iterator[None]:
    """Context: ``torch.backends.cudnn.benchmark = enabled`` (restored on exit). With it,
    cuDNN times its convolution algorithms for each new input shape once and keeps the
    fastest: a gain when shapes repeat (fixed crops), a loss when every batch is new."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def copy_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``, copied without waiting for the device's queued work.

    A host-to-GPU copy from ordinary (pageable) memory makes the host wait until the GPU
    has finished everything queued before; from pinned memory it is queued like a kernel.
    So CPU tensors bound for a GPU are pinned first (PyTorch caches pinned blocks and keeps
    one alive until its copy is done).
    """
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        if not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)
    return tensor.to(device)


def autocast_context(device: torch.device, amp: str):
    """Autocast for ``amp`` in (``bf16``, ``fp16``); a no-op context for ``none``."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def autocast_off(device: torch.device):
    """Context that switches autocast off on ``device`` (a no-op where autocast is unsupported):
    the losses compute in full precision whatever ``runtime.amp`` says."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random streams with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
