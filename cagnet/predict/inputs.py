"""The inputs of :mod:`cagnet.predict`: image files given directly or found below folders (symbolic
links followed, each real folder read once), each with the printable name its outputs get."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cagnet.predict.images import display_path


@dataclass
class PredictInput:
    """An input file and the name its outputs get (``<name>_labels.png``, ``<name>_overlay.png``):
    printable text (:func:`display_path` of the name)."""

    path: Path
    name: str


def collect_inputs(sources: Sequence[str | bytes | os.PathLike], out_dir: str | os.PathLike
                   ) -> tuple[list[PredictInput], list[str]]:
    """(inputs, problems) of files and folders given on the command line.

    A file is taken as it is (named by its stem); a folder contributes every file below it
    whose name does not start with '.', named by its path relative to the folder without the
    suffix (subfolders are kept in the output folder), except the files of ``out_dir`` when it
    lies inside the folder (or a link inside leads to it). Symbolic links to folders are
    followed; a folder whose real path was already read (a link to an ancestor, or a second
    link to one folder) is skipped, so a loop ends. A file named twice is taken once. A missing path, an empty folder or a
    subfolder that cannot be listed is a problem (one line naming it).
    """
    out_real = os.path.realpath(out_dir)
    inputs: list[PredictInput] = []
    problems: list[str] = []
    for source in sources:
        path = Path(os.fsdecode(source))
        if path.is_file():
            inputs.append(PredictInput(path, display_path(path.stem)))
        elif path.is_dir():
            found = _walk_folder(path, out_real, problems)
            if not found:
                problems.append(f"{display_path(path)}: no files in this folder")
            inputs.extend(PredictInput(p, display_path(p.relative_to(path).with_suffix("").as_posix()))
                          for p in found)
        else:
            problems.append(f"{display_path(path)}: no such file or folder")
    unique: dict[tuple[Path, str], PredictInput] = {}
    for item in inputs:
        unique.setdefault((item.path.resolve(), item.name), item)
    return list(unique.values()), problems


def _walk_folder(root: Path, out_real: str, problems: list[str]) -> list[Path]:
    """The files below ``root`` (sorted; names starting with '.' left out), following links to
    folders once per real folder, leaving out the folder whose real path is ``out_real``
    (reached directly or through a link) unless it is ``root`` itself."""
    root_real = os.path.realpath(root)
    skip_out = out_real != root_real
    visited = {root_real}
    found: list[Path] = []

    def unreadable(err: OSError) -> None:
        problems.append(f"{display_path(err.filename or root)}: cannot list this folder ({err.strerror})")

    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=unreadable):
        kept = []
        for name in sorted(subfolders):
            real = os.path.realpath(os.path.join(folder, name))
            if name.startswith(".") or real in visited or (skip_out and real == out_real):
                continue
            visited.add(real)
            kept.append(name)
        subfolders[:] = kept    # os.walk descends into these only
        for name in files:
            file = os.path.join(folder, name)
            if not name.startswith(".") and os.path.isfile(file):
                found.append(Path(file))
    return sorted(found, key=lambda p: p.relative_to(root).parts)
