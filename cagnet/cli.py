"""Command line interface: ``python -m cagnet <command> ...``.

Every command is a function ``cmd_<name>(args) -> int`` registered in :func:`build_parser`.
Expected failures raise :class:`CagnetError`; :func:`main` prints them as one line on stderr
and exits with status 2 instead of showing a traceback.
"""
from __future__ import annotations

import argparse
import sys

from cagnet.errors import CagnetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cagnet",
        description="CaGNet zero-shot semantic segmentation: data checks, training and evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    check = sub.add_parser(
        "check",
        help="validate a dataset folder (metadata, word vectors, every image/annotation pair)",
        description="List every problem of a dataset folder in the original CaGNet layout, one line "
                    "each naming the file; exit status 1 if there is any, 0 otherwise. Read-only.",
    )
    check.add_argument("dataset_dir", metavar="DATASET_DIR", help="dataset folder (images/, annotations/, split/, ...)")
    check.add_argument("--split", choices=("train", "test", "all"), default="all", help="split(s) to check (default: all)")
    check.add_argument("--embedding", choices=("auto", "fastnvec", "fasttext", "word2vec", "glove", "none"),
                       default="auto", help="word vectors to validate (default: auto; none = skip)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=cmd_check)

    data = sub.add_parser(
        "data",
        help="build (or reuse) the embedded synthetic zero-shot benchmark",
        description="Generate the embedded synthetic benchmark in the original CaGNet folder layout, "
                    "deterministically from a seed. A complete copy with the same parameters is reused.",
    )
    data.add_argument("--root", default=None,
                      help="target folder (default: $CAGNET_DATA, else data/synthetic in the repository)")
    data.add_argument("--seed", type=int, default=0, help="generation seed (default: 0)")
    data.add_argument("--num-train", type=int, default=400, help="training images (default: 400)")
    data.add_argument("--num-test", type=int, default=150, help="test images (default: 150)")
    data.add_argument("--image-size", type=int, default=128, help="image side in pixels (default: 128)")
    data.add_argument("--force", action="store_true", help="regenerate even when a matching copy exists")
    data.add_argument("--no-progress", action="store_true", help="no progress bar")
    data.set_defaults(func=cmd_data)
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    """``check DATASET_DIR``: print every problem, then a summary; 1 if any problem."""
    from cagnet.data.check import run_check

    splits = ("train", "test") if args.split == "all" else (args.split,)
    report = run_check(args.dataset_dir, splits=splits, embedding=args.embedding, progress=not args.no_progress)
    for problem in report.problems:
        print(problem)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_data(args: argparse.Namespace) -> int:
    """``data``: build or reuse the synthetic benchmark and print where it is."""
    from cagnet.data.synthetic import SyntheticConfig, build_synthetic_benchmark

    config = SyntheticConfig(seed=args.seed, num_train=args.num_train, num_test=args.num_test,
                             image_size=args.image_size)
    root = build_synthetic_benchmark(args.root, config, force=args.force, progress=not args.no_progress)
    print(f"synthetic benchmark: {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CagnetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
