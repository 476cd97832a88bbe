"""Benchmark: peak memory (maximum resident set size) of ``python -m cagnet predict`` per image size.

``predict`` keeps the decoded image (PIL: 4 bytes per pixel) and one uint8 label map (1 byte
per pixel) and does everything else in bands (:mod:`cagnet.predict`), so its peak memory
should be a fixed cost (Python, torch, the model) plus about 5 bytes per pixel. The
benchmark writes a small dataset folder (5 classes, GloVe vectors) and the ``tutorial``
model with random weights into a temporary folder, then for each size a JPEG of
``size x size`` pixels (smooth colours with noise, like a photo), and runs the command line
on each image in its own process; it prints the child's maximum RSS (``os.wait4``), the
bytes per pixel above the smallest image's run and the seconds. The fixed cost peaks while
the model loads, so a few megapixels may fit below that peak: the largest size tells the
cost per pixel best.

The files are made by a separate process, so that this one stays small: Linux counts the
memory a child had before ``exec`` (a copy of its parent) in its maximum RSS.

    python benchmarks/bench_predict_memory.py [--sizes 64,2500,5000,10000] [--protocol full]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_dataset(root: Path) -> Path:
    """A dataset folder with 5 classes (3 seen, 2 unseen) and their GloVe vectors, no images."""
    import numpy as np

    from cagnet.data.embed import embed_class_names

    (root / "split").mkdir(parents=True)
    names = ["sky", "grass", "potted plant", "road", "water"]
    (root / "labels_refined.txt").write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(names)))
    np.save(root / "split" / "seen_cls.npy", np.array([0, 1, 3]))
    np.save(root / "split" / "novel_cls.npy", np.array([2, 4]))
    embed_class_names(root)
    return root


def write_model(config, dataset: Path, path: Path) -> Path:
    """The config's model with random weights, as a state dict."""
    import torch

    from cagnet.data import load_dataset_info
    from cagnet.models import build_cagnet

    info = load_dataset_info(dataset)
    torch.manual_seed(0)
    model = build_cagnet(config.model, class_embeddings=info.class_embeddings("glove"),
                         num_seen=info.num_seen, num_unseen=info.num_unseen)
    torch.save(model.state_dict(), path)
    return path


def write_photo(path: Path, side: int) -> Path:
    """A ``side x side`` JPEG of smooth colours with noise, built band by band."""
    import numpy as np
    from PIL import Image

    image = Image.new("RGB", (side, side))
    x = np.linspace(0, 1, side, dtype=np.float32)[None, :]
    for top in range(0, side, 256):
        y = np.linspace(0, 1, side, dtype=np.float32)[top:top + 256, None]
        band = np.stack([0.5 + 0.5 * np.sin(12 * x + 3 * y), y + 0 * x, 0.5 + 0.5 * np.cos(20 * x * y)], axis=-1)
        noise = np.random.default_rng(top).integers(-8, 9, band.shape)
        image.paste(Image.fromarray(np.clip(255 * band + noise, 0, 255).astype(np.uint8)), (0, top))
    image.save(path, quality=90)
    return path


def run(command: list[str]) -> tuple[int, float, int]:
    """(exit status, seconds, maximum RSS in bytes) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)   # this child's own rusage (RUSAGE_CHILDREN would be cumulative)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode(errors="replace").strip()
    child.stderr.close()
    if child.returncode != 0:
        print(f"  exit status {child.returncode}: {error.splitlines()[-1] if error else ''}")
    return child.returncode, seconds, usage.ru_maxrss * 1024   # ru_maxrss is in KiB on Linux


def prepare(folder: Path, sizes: list[int], test_size: int) -> None:
    """The dataset, the model and one JPEG per size in ``folder`` (run in its own process)."""
    from cagnet.config import load_train_config

    dataset = write_dataset(folder / "dataset")
    write_model(load_train_config("tutorial", _sets(dataset, test_size)), dataset, folder / "model.pt")
    for side in sizes:
        write_photo(folder / f"photo_{side}.jpg", side)


def _sets(dataset: Path, test_size: int) -> list[str]:
    return [f"data.root={dataset}", f"data.test_size={test_size}", "runtime.device=cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,2500,5000,10000",
                        help="comma-separated image sides in pixels, the first one the baseline "
                             "(default 64,2500,5000,10000)")
    parser.add_argument("--protocol", choices=("full", "original"), default="full", help="predict --protocol")
    parser.add_argument("--test-size", type=int, default=64, help="data.test_size of the model input (default 64)")
    parser.add_argument("--prepare", metavar="DIR", default=None, help=argparse.SUPPRESS)   # the files' process
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.prepare:
        prepare(Path(args.prepare), sizes, args.test_size)
        return

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, __file__, "--prepare", str(tmp), "--sizes", args.sizes,
                        "--test-size", str(args.test_size)], check=True)
        sets = _sets(tmp / "dataset", args.test_size)
        print(f"predict --protocol {args.protocol}, tutorial model (random weights), data.test_size={args.test_size}")
        print(f"{'image':>13} {'pixels':>12} {'max RSS':>10} {'bytes/pixel above first':>24} {'seconds':>8}")
        baseline = 0
        for index, side in enumerate(sizes):
            command = [sys.executable, "-m", "cagnet", "predict", "--config", "tutorial", "--checkpoint",
                       str(tmp / "model.pt"), str(tmp / f"photo_{side}.jpg"), "--out", str(tmp / f"out_{side}"),
                       "--protocol", args.protocol, "--no-progress"] + [arg for item in sets for arg in ("--set", item)]
            status, seconds, peak = run(command)
            baseline = peak if index == 0 else baseline
            above = "(baseline)" if index == 0 else f"{(peak - baseline) / side ** 2:.2f}"
            print(f"{side:>6} x {side:<6}{side * side:>12,} {peak / 2 ** 30:>8.2f} GiB {above:>23} {seconds:>8.1f}"
                  + ("" if status == 0 else "  FAILED"))


if __name__ == "__main__":
    main()
