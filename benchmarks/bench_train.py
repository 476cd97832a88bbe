"""Benchmark: seconds per step-1 training iteration, images per second and peak memory.

Two cases, each run once per autocast setting, each run in its own child process (so that
peak memory is per run):

``tutorial``  the packaged ``tutorial`` config as it trains (tiny model, 128 px images, batch 8)
``voc12``     the original VOC architecture (``voc12`` config: DeepLabV2 ResNet-101, C = E = 600
              model, multi-scale 1 / 0.5 / 0.75, the original learning rates, the stable random
              initialisation) at the original crop 368 and batch 8 on a GPU, at a reduced crop
              on the CPU (default 161 px, batch 2) - the class counts and word embeddings are the
              embedded benchmark's (12 + 4 classes, 100-d), which changes only the generator's
              input width and the classifier's output count.
``voc12_pa3`` CaGNetv2's step 1 on the same architecture (``voc12_pa3`` config: the 3x3 patch
              classifier on every real and fake feature map), at the original crop 376 and batch 4
              on a GPU, at the voc12 case's reduced crop and batch on the CPU.

Both train on the embedded synthetic benchmark (built under ``data/synthetic`` when missing)
through the real training loop (:func:`cagnet.train.train`), with no evaluation or figures
in between. The engine reads the losses back from the device once per ``--block``
iterations (its ``runtime.log_interval``), so the time of a block is exact on a GPU too; the
first ``--warmup`` iterations (cuDNN autotuning, allocator warm-up) are left out and s/iter is
the median over the remaining blocks (their mean is in ``--json``). Peak memory: the child's
maximum resident set size on the CPU (``ru_maxrss``, includes Python and torch), the
allocator's peak on a GPU (``torch.cuda.max_memory_allocated``).

    python benchmarks/bench_train.py [--device cpu|cuda] [--cases tutorial,voc12] [--amp none,bf16]
                                     [--iterations 25] [--warmup 5] [--block 5] [--threads N]
                                     [--voc-crop N] [--voc-batch N] [--set key=value ...] [--json PATH]

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

#: (crop, batch) of the voc12 case when --voc-crop / --voc-batch are not given
VOC_SIZE = {"cuda": (368, 8), "cpu": (161, 2)}
#: (crop, batch) of the voc12_pa3 case on a GPU (the original's patch config); on the CPU the voc12 case's
VOC_PA3_SIZE = {"cuda": (376, 4)}


def run_case(case: str, device: str, amp: str, iterations: int, warmup: int, block: int, threads: int | None,
             voc_crop: int, voc_batch: int, extra: list[str], voc_sized: bool = False) -> dict:
    import torch

    from cagnet.config import load_train_config
    from cagnet.train.engine import train
    from cagnet.train.runs import read_jsonl

    overrides = [f"schedules.step1.iterations={iterations}", "runtime.eval_interval=0",
                 "runtime.checkpoint_interval=0", "runtime.sample_images=0", "data.test_limit=1",
                 f"runtime.device={device}", "runtime.progress=false", f"runtime.amp={amp}",
                 f"runtime.log_interval={block}"]
    if threads:
        overrides.append(f"runtime.num_threads={threads}")
    if case == "tutorial":
        config = load_train_config("tutorial", overrides + extra)
    elif case in ("voc12", "voc12_pa3"):
        if case == "voc12_pa3" and torch.device(device).type == "cuda" and not voc_sized:
            voc_crop, voc_batch = VOC_PA3_SIZE["cuda"]
        overrides += ["data.root=null", "data.synthetic={}", "data.embedding=glove", f"data.crop_size={voc_crop}",
                      f"data.batch_size={voc_batch}", "data.test_size=65", "data.num_workers=0"]
        config = load_train_config(case, overrides + extra)
    else:
        raise SystemExit(f"unknown case {case!r}")
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(config, "step1", out, progress=False, verbose=False)
        wall = time.perf_counter() - started
        records = read_jsonl(Path(out) / "log.jsonl")
    timed = [r["seconds"] for r in records if r["iteration"] > warmup]
    blocks = timed[::block]   # one value per block (the block's time per iteration)
    batch = config.data.batch_size
    median = statistics.median(blocks)
    if torch.device(device).type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated() / 2 ** 20, "allocated"
        name = torch.cuda.get_device_name()
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "RSS"
        name = "cpu"
    return {
        "case": case, "device": name, "amp": amp, "model": config.model.backbone,
        "parameters": sum(p.numel() for p in result.model.parameters()), "crop": config.data.crop_size,
        "batch": batch, "threads": torch.get_num_threads() if not threads else threads,
        "iterations_timed": len(timed), "seconds_per_iteration": median, "seconds_mean": statistics.fmean(timed),
        "seconds_min": min(blocks), "seconds_max": max(blocks), "images_per_second": batch / median,
        "peak_mib": peak, "peak_kind": peak_kind, "wall_seconds": wall,
        "finite": all(isinstance(v, str) or v == v for r in records for v in r.values()),
        "overrides": extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--cases", default="tutorial,voc12", help="comma-separated: tutorial, voc12, voc12_pa3")
    parser.add_argument("--amp", default="none", help="comma-separated autocast settings: none, bf16, fp16")
    parser.add_argument("--iterations", type=int, default=25, help="step-1 iterations per run (default 25)")
    parser.add_argument("--warmup", type=int, default=5, help="first iterations left out (a multiple of --block)")
    parser.add_argument("--block", type=int, default=5, help="iterations between two reads of the losses")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--voc-crop", type=int, default=None, help="crop of the voc12 case (368 on cuda, 161 on cpu)")
    parser.add_argument("--voc-batch", type=int, default=None, help="batch of the voc12 case (8 on cuda, 2 on cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. runtime.compile=true (repeatable)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup % args.block or (args.iterations - args.warmup) % args.block or args.iterations <= args.warmup:
        parser.error("--warmup and --iterations - --warmup must be positive multiples of --block")
    kind = args.device.split(":")[0]
    crop = args.voc_crop or VOC_SIZE.get(kind, VOC_SIZE["cuda"])[0]
    batch = args.voc_batch or VOC_SIZE.get(kind, VOC_SIZE["cuda"])[1]

    if args.child:
        case, amp = args.child.split(":")
        print(json.dumps(run_case(case, args.device, amp, args.iterations, args.warmup, args.block, args.threads,
                                  crop, batch, args.overrides, voc_sized=bool(args.voc_crop or args.voc_batch))))
        return

    from cagnet.data.synthetic import build_synthetic_benchmark

    build_synthetic_benchmark(progress=False)  # outside the timing
    print(f"step-1 iterations: {args.iterations} per run, the first {args.warmup} left out; s/iter = median over "
          f"blocks of {args.block}; device {args.device}"
          + (f"; overrides {' '.join(args.overrides)}" if args.overrides else ""))
    header = (f"{'case':<10}{'amp':<6}{'backbone':<22}{'params':>10}{'crop':>6}{'batch':>6}{'thr':>5}"
              f"{'s/iter':>9}{'img/s':>8}{'peak':>11}")
    print(header)
    results, failed = [], False
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        for amp in [a.strip() for a in args.amp.split(",") if a.strip()]:
            command = [sys.executable, __file__, "--child", f"{case}:{amp}", "--device", args.device,
                       "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--block", str(args.block)]
            command += ["--voc-crop", str(args.voc_crop)] if args.voc_crop else []
            command += ["--voc-batch", str(args.voc_batch)] if args.voc_batch else []
            command += [f"--set={o}" for o in args.overrides]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                failed = True
                last = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
                print(f"{case:<10}{amp:<6}FAILED: {last[0][:200]}")
                results.append({"case": case, "amp": amp, "error": done.stderr.strip()[-2000:]})
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{r['case']:<10}{r['amp']:<6}{r['model']:<22}{r['parameters'] / 1e6:>9.1f}M{r['crop']:>6}"
                  f"{r['batch']:>6}{r['threads']:>5}{r['seconds_per_iteration']:>9.3f}{r['images_per_second']:>8.1f}"
                  f"{r['peak_mib']:>8.0f} MiB {r['peak_kind']}  (blocks {r['seconds_min']:.3f}-"
                  f"{r['seconds_max']:.3f} s/iter)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
