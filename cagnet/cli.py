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
    return parser


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
