"""Run the tutorial notebooks in order through papermill (the job behind ``make run``).

Each notebook is executed into ``--out`` (default ``runs/notebooks/``) with its default
parameters (or ``-p NAME VALUE`` overrides applied to every notebook that declares NAME).
The run stops at the first failing notebook and names it and the failing cell. At the end it
prints the executed notebooks' location, the time per notebook, the total time and the peak
memory of the notebook kernels.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def _declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    import ast

    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            return {t.id for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
    return set()


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks to run, in order")
    parser.add_argument("--out", type=Path, default=Path("runs/notebooks"), help="folder for executed copies")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter (JSON value or plain string) in every notebook declaring it")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    args = parser.parse_args(argv)

    import papermill
    from papermill.exceptions import PapermillExecutionError

    args.out.mkdir(parents=True, exist_ok=True)
    overrides = {name: _parse_value(value) for name, value in args.parameter}
    started = time.perf_counter()
    timings = []
    for notebook in sorted(args.notebooks):
        declared = _declared_parameters(notebook)
        params = {k: v for k, v in overrides.items() if k in declared}
        output = args.out / notebook.name
        print(f"==> {notebook} -> {output}" + (f" with {params}" if params else ""), flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=args.kernel,
                                       cwd=str(notebook.parent), progress_bar=sys.stderr.isatty())
        except PapermillExecutionError as err:
            print(f"FAILED: {notebook}, cell {err.exec_count} (index {err.cell_index}): {err.ename}: {err.evalue}",
                  file=sys.stderr)
            print(f"The executed notebook with the error is {output}", file=sys.stderr)
            return 1
        timings.append((notebook.name, time.perf_counter() - t0))
    total = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\nExecuted notebooks are in {args.out.resolve()}")
    for name, seconds in timings:
        print(f"  {name:<40s} {seconds:7.1f} s")
    print(f"Total time: {total:.1f} s ({total / 60:.1f} min); peak kernel memory: {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
