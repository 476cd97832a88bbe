"""Measure CaGNet's premise on the embedded benchmark, plain and scene, and write the result.

For each appearance setting of the benchmark, on its own pretrained tutorial backbone (built
when missing, about two minutes on one CPU thread), :func:`cagnet.premise.premise_measurement`
on the validation split: (a) the share of a class's feature variance that the scene factor
explains, above its placebo level, on feature-grid cells and on region means; (b) how well a
ridge probe of the other regions' features recovers the factor. Writes
``docs/results/premise.json`` and ``premise.md`` (machine and date included)::

    python scripts/measure_premise.py [--out docs/results] [--split validation]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

SETTINGS = {"plain": ["data.synthetic.appearance=plain"],
            "scene": ["data.root=data/synthetic_scene", "data.synthetic.appearance=scene"]}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def markdown(result: dict) -> str:
    lines = ["# CaGNet's premise on the embedded benchmark", "",
             f"{result['split']} split; each setting on its own pretrained tutorial backbone; measured "
             f"{result['date']} on {result['machine']} (`python scripts/measure_premise.py`).", "",
             "(a) share of a class's real-feature variance explained by the scene factor (linear, within each "
             "class), minus the same share with the images' factors permuted (placebo); (b) R^2 of a ridge "
             "probe that recovers each factor from the other regions' features, on held-out images.", "",
             "| setting | (a) grid cells | (a) region means | between-image share of a class's variance | "
             "(b) probe R^2 (mean) | (b) per factor |",
             "|---|---|---|---|---|---|"]
    for name, m in result["settings"].items():
        probe = ", ".join(f"{k} {v:.2f}" for k, v in m["context_probe"].items())
        lines.append(f"| {name} | {m['class_factor_share_excess']:.3f} | {m['region_factor_share_excess']:.3f} | "
                     f"{m['between_image_share']:.2f} | {m['context_probe_r2']:.2f} | {probe} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()
    import torch

    from cagnet.config import load_train_config
    from cagnet.files import atomic_write_text
    from cagnet.premise import premise_measurement
    from cagnet.pretrain import ensure_pretrained

    torch.set_num_threads(1)
    result = {"split": args.split, "date": date.today().isoformat(), "machine": machine(), "settings": {}}
    for name, overrides in SETTINGS.items():
        config = load_train_config("tutorial", [*overrides, "runtime.num_threads=1"])
        ensure_pretrained(config, progress=True)
        started = time.perf_counter()
        result["settings"][name] = premise_measurement(config, args.split, progress=True)
        result["settings"][name]["seconds"] = time.perf_counter() - started
        print(name, {k: v for k, v in result["settings"][name].items() if not isinstance(v, (dict, list))})
    out = Path(args.out)
    atomic_write_text(out / "premise.json", json.dumps(result, indent=1, default=float) + "\n")
    atomic_write_text(out / "premise.md", markdown(result))
    print(f"wrote {out / 'premise.json'} and {out / 'premise.md'}")


if __name__ == "__main__":
    main()
