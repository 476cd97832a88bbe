"""Benchmark: seconds per step-1 training iteration, images per second and peak memory.

Two cases, each in its own child process (so that peak memory is per case):

``tutorial``  the packaged ``tutorial`` config as it trains (tiny model, 128 px images, batch 8)
``voc12``     the original VOC architecture (``voc12`` config: DeepLabV2 ResNet-101, C = E = 600
              model, multi-scale 1 / 0.5 / 0.75) at a reduced crop on the CPU (default 161 px,
              batch 2) - the class counts and word embeddings are the embedded benchmark's
              (12 + 4 classes, 100-d), which changes only the generator's input width and the
              classifier's output count.

Both train on the embedded synthetic benchmark (built under ``data/synthetic`` when missing)
through the real training loop (:func:`cagnet.train.train`), with no evaluation or figures
in between; the time per iteration is read from ``log.jsonl`` (the median after
``--warmup`` iterations). Peak memory is the child's maximum resident set size
(``resource.getrusage(...).ru_maxrss``), which includes the Python interpreter and torch.

    python benchmarks/bench_train.py [--cases tutorial,voc12] [--iterations 12] [--warmup 3]
                                     [--threads N] [--voc-crop 161] [--voc-batch 2]

Timings on a shared machine vary with other load: with 2 cores, a second busy process makes
2-thread convolutions an order of magnitude slower (try ``--threads 1``).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_case(case: str, iterations: int, warmup: int, threads: int | None, voc_crop: int, voc_batch: int) -> dict:
    import torch

    from cagnet.config import load_train_config
    from cagnet.train.engine import read_jsonl, train

    overrides = [f"schedules.step1.iterations={iterations}", "runtime.eval_interval=0",
                 "runtime.checkpoint_interval=0", "runtime.sample_images=0", "data.test_limit=1",
                 "runtime.device=cpu", "runtime.progress=false"]
    if threads:
        overrides.append(f"runtime.num_threads={threads}")
    if case == "tutorial":
        config = load_train_config("tutorial", overrides)
    elif case == "voc12":
        overrides += ["data.root=null", "data.synthetic={}", "data.embedding=glove", f"data.crop_size={voc_crop}",
                      f"data.batch_size={voc_batch}", "data.test_size=161", "data.num_workers=0"]
        config = load_train_config("voc12", overrides)
    else:
        raise SystemExit(f"unknown case {case!r}")
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(config, "step1", out, progress=False, verbose=False)
        wall = time.perf_counter() - started
        seconds = [r["seconds"] for r in read_jsonl(Path(out) / "log.jsonl")][warmup:]
    batch = config.data.batch_size
    median = statistics.median(seconds)
    return {
        "case": case, "model": config.model.backbone, "parameters": sum(p.numel() for p in result.model.parameters()),
        "crop": config.data.crop_size, "batch": batch, "threads": torch.get_num_threads() if not threads else threads,
        "iterations_timed": len(seconds), "seconds_per_iteration": median,
        "seconds_min": min(seconds), "seconds_max": max(seconds), "images_per_second": batch / median,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tutorial,voc12", help="comma-separated: tutorial, voc12")
    parser.add_argument("--iterations", type=int, default=12, help="step-1 iterations per case (default 12)")
    parser.add_argument("--warmup", type=int, default=3, help="first iterations left out of the timing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--voc-crop", type=int, default=161, help="crop size of the voc12 case (default 161)")
    parser.add_argument("--voc-batch", type=int, default=2, help="batch size of the voc12 case (default 2)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.iterations <= args.warmup:
        parser.error("--iterations must exceed --warmup")

    if args.child:
        print(json.dumps(run_case(args.child, args.iterations, args.warmup, args.threads, args.voc_crop,
                                  args.voc_batch)))
        return

    from cagnet.data.synthetic import build_synthetic_benchmark

    build_synthetic_benchmark(progress=False)  # outside the timing
    print(f"step-1 iterations: {args.iterations} per case, median of the last {args.iterations - args.warmup}")
    header = f"{'case':<10}{'backbone':<22}{'params':>10}{'crop':>6}{'batch':>6}{'thr':>5}" \
             f"{'s/iter':>9}{'img/s':>8}{'peak RSS':>11}"
    print(header)
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        command = [sys.executable, __file__, "--child", case, "--iterations", str(args.iterations),
                   "--warmup", str(args.warmup), "--voc-crop", str(args.voc_crop), "--voc-batch", str(args.voc_batch)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{case}: failed\n{done.stderr.strip()[-2000:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['case']:<10}{r['model']:<22}{r['parameters'] / 1e6:>9.1f}M{r['crop']:>6}{r['batch']:>6}"
              f"{r['threads']:>5}{r['seconds_per_iteration']:>9.3f}{r['images_per_second']:>8.2f}"
              f"{r['peak_rss_mib']:>8.0f} MiB   (min {r['seconds_min']:.3f}, max {r['seconds_max']:.3f} s)")


if __name__ == "__main__":
    main()
