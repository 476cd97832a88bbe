"""Draw the CaGNet pipeline diagram of the README: ``docs/pipeline.png``.

Usage: ``python scripts/draw_pipeline.py [--out docs/pipeline.png] [--dpi 150]``
(the figure itself is :func:`cagnet.viz.plot_pipeline`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cagnet.viz import plot_pipeline

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "pipeline.png", help="PNG file to write")
    parser.add_argument("--dpi", type=int, default=150, help="resolution (dots per inch)")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_pipeline().savefig(args.out, dpi=args.dpi, facecolor="white")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
