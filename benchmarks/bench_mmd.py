"""Benchmark: vectorised ``cagnet.losses.mmd_loss`` against a straightforward Python loop.

Size of one step-1 batch of the original VOC configuration: 8 images, 600 feature channels,
a 46 x 46 feature grid. The features are seeded random values in [0, 1] (like sigmoid
outputs); the labels are the embedded synthetic benchmark's training annotations (mapped to
training labels, nearest-neighbour resized to 46 x 46) when that benchmark can be built, else
a synthetic piecewise-constant label map (said so in the output).

    python benchmarks/bench_mmd.py [--repeats 5] [--loop-repeats 1] [--device cpu]
                                   [--labels auto|benchmark|blocks] [--threads N] [--no-backward]
                                   [--clock wall|process]

Both the forward pass and forward + backward (what a generator step does) are timed: the
loop's backward is slow because autograd scatters every run's gradient into a full-size
tensor, one run at a time.

``--clock process`` measures the CPU time of this process instead of the wall time: on a
shared machine it leaves out the time other processes hold the cores (with one thread; with
several it adds up the threads).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from cagnet.data import IGNORE_INDEX
from cagnet.losses import mmd_loss, mmd_loss_loop

BATCH, CHANNELS, GRID = 8, 600, 46
NUM_CLASSES = 16


def benchmark_labels(seed: int, source: str = "auto") -> tuple[torch.Tensor, str]:
    """[BATCH, GRID, GRID] training labels and a description of where they come from.

    ``source``: "benchmark" (the embedded synthetic benchmark), "blocks" (random rectangles)
    or "auto" (the benchmark when its modules are importable, else rectangles).
    """
    if source == "blocks":
        return synthetic_label_map(seed), "random piecewise-constant labels (--labels blocks)"
    try:
        from cagnet.data.datasets import SegmentationDataset
        from cagnet.data.synthetic import build_synthetic_benchmark, default_data_root
    except ImportError as error:
        if source == "benchmark":
            raise SystemExit(f"embedded benchmark not available: {error}")
        return synthetic_label_map(seed), ("FALLBACK: random piecewise-constant labels, the "
                                           f"embedded benchmark is not importable ({error})")
    root = build_synthetic_benchmark(default_data_root(), progress=False)
    dataset = SegmentationDataset(root, "train")  # labels mapped to training labels
    maps = []
    for index in range(min(BATCH, len(dataset))):
        label = dataset[index]["label"][None, None].float()
        maps.append(F.interpolate(label, size=(GRID, GRID), mode="nearest")[0, 0].long())
    if len(maps) < BATCH:
        raise SystemExit(f"benchmark at {root} has only {len(maps)} training images, need {BATCH}")
    return torch.stack(maps), f"synthetic benchmark annotations at {root} (train split, mapped)"


def synthetic_label_map(seed: int) -> torch.Tensor:
    """Random rectangles of NUM_CLASSES classes over a random base class, plus ignored blocks."""
    rng = np.random.default_rng(seed)
    maps = np.empty((BATCH, GRID, GRID), dtype=np.int64)
    for image in maps:
        image[:] = rng.integers(NUM_CLASSES)
        for _ in range(rng.integers(3, 8)):
            top, left = rng.integers(0, GRID - 4, size=2)
            height, width = rng.integers(4, GRID // 2, size=2)
            value = IGNORE_INDEX if rng.random() < 0.3 else rng.integers(NUM_CLASSES)
            image[top:top + height, left:left + width] = value
    return torch.from_numpy(maps)


def timed(function, repeats: int, device: torch.device, clock=time.perf_counter) -> tuple[float, torch.Tensor]:
    """Median time in seconds (``clock``) over ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(clock() - start)
    return statistics.median(times), result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of the vectorised loss")
    parser.add_argument("--loop-repeats", type=int, default=1, help="runs of the (slow) loop")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--labels", choices=("auto", "benchmark", "blocks"), default="auto",
                        help="label maps: embedded benchmark (auto: when available) or rectangles")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-backward", action="store_true",
                        help="time the forward pass only (the loop's backward takes ~1 min)")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="wall time, or this process's CPU time (steadier on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    labels, source = benchmark_labels(args.seed, args.labels)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (BATCH, CHANNELS, GRID, GRID)
    predict = torch.rand(shape, generator=generator).to(device)
    target = torch.rand(shape, generator=generator).to(device)
    labels = labels.to(device)

    flat = labels.reshape(-1)
    kept = flat[flat != IGNORE_INDEX]
    run_lengths = torch.bincount(torch.cumsum(
        torch.cat([kept.new_ones(1), (kept[1:] != kept[:-1]).long()]), 0) - 1)
    print(f"labels: {source}")
    print(f"batch: predict/target {list(shape)} float32, labels {list(labels.shape)}, "
          f"device {device}, threads {torch.get_num_threads()}, clock {args.clock}")
    print(f"labelled pixels {kept.numel()} of {flat.numel()}, runs {run_lengths.numel()}, "
          f"run length median {int(run_lengths.median())} max {int(run_lengths.max())}")

    def forward_backward(loss_function):
        """Forward and backward pass, as in a generator step; returns the loss value."""
        p = predict.detach().requires_grad_(True)
        t = target.detach().requires_grad_(True)
        loss = loss_function(p, t, labels)
        loss.backward()
        return loss.detach()

    def forward_only(loss_function):
        with torch.no_grad():
            return loss_function(predict, target, labels)

    mmd_loss(predict, target, labels)  # warm-up
    modes = [("forward", forward_only)]
    if not args.no_backward:
        modes.append(("forward+backward", forward_backward))
    for mode, run in modes:
        vector_time, vector_value = timed(lambda: run(mmd_loss), args.repeats, device, clock)
        loop_time, loop_value = timed(lambda: run(mmd_loss_loop), args.loop_repeats, device, clock)
        relative = abs(float(vector_value) - float(loop_value)) / abs(float(loop_value))
        print(f"[{mode}]")
        print(f"  loop       : {loop_time * 1e3:10.1f} ms (median of {args.loop_repeats})  "
              f"value {float(loop_value):.8f}")
        print(f"  vectorised : {vector_time * 1e3:10.1f} ms (median of {args.repeats})  "
              f"value {float(vector_value):.8f}")
        print(f"  speed-up   : {loop_time / vector_time:.1f}x   "
              f"relative difference {relative:.2e}")

if __name__ == "__main__":
    main()
