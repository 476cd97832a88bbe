"""Validation of a whole dataset folder (``python -m cagnet check DATASET_DIR``).

Unlike the dataset, which stops at the first bad file, the check goes on and collects every
problem: metadata files, word vectors, and every image/annotation pair of the chosen splits
(missing or unreadable/truncated files, size mismatches, label ids outside the label list).
It only reads files.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from cagnet.data.datasets import (
    IMAGE_EXTENSIONS,
    LABELS_FILE,
    OPTIONAL_SPLITS,
    SPLITS,
    DatasetInfo,
    annotation_path,
    check_label_ids,
    has_split,
    image_path,
    read_annotation,
    read_class_ids,
    read_class_names,
    read_image,
    split_entries,
    split_list_path,
)
from cagnet.errors import CagnetError

#: Embedding kinds the check accepts; "none" skips the word vectors.
CHECK_EMBEDDINGS = ("auto", "fastnvec", "fasttext", "word2vec", "glove", "none")


@dataclass
class CheckReport:
    """Outcome of :func:`run_check`: one line per problem, each naming its file."""

    root: Path
    splits: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    pairs_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return (f"{self.root}: {verdict}; checked metadata and {self.pairs_checked} image/annotation "
                f"pair(s) of split(s) {', '.join(self.splits)}")


def _metadata(root: Path, problems: list[str]) -> DatasetInfo | None:
    """DatasetInfo if the label list and both class-id files are valid; problems appended."""
    try:
        names = read_class_names(root / LABELS_FILE)
    except CagnetError as err:
        problems.append(str(err))
        return None
    ids = {}
    for stem in ("seen_cls", "novel_cls"):
        try:
            ids[stem] = read_class_ids(root / "split" / f"{stem}.npy", len(names))
        except CagnetError as err:
            problems.append(str(err))
    if len(ids) != 2:
        return None
    overlap = sorted(set(ids["seen_cls"].tolist()) & set(ids["novel_cls"].tolist()))
    if overlap:
        problems.append(f"{root / 'split' / 'novel_cls.npy'}: label ids {overlap} are also in seen_cls.npy")
        return None
    return DatasetInfo(root=root, name=root.resolve().name, class_names=names,
                       seen=ids["seen_cls"], unseen=ids["novel_cls"])


def _embedding_problems(info: DatasetInfo, kind: str) -> list[str]:
    """Problems of each word-vector file that ``kind`` needs (each file checked on its own)."""
    if kind == "none":
        return []
    if kind == "auto":
        try:
            files = info.embedding_files("auto")
        except CagnetError as err:
            return [str(err)]
        kinds = ["glove"] if files[0].name == "glove.npy" else ["fasttext", "word2vec"]
    elif kind == "fastnvec":
        kinds = ["fasttext", "word2vec"]
    else:
        kinds = [kind]
    problems = []
    for single in kinds:
        try:
            info.class_embeddings(single, normalize=False)
        except CagnetError as err:
            problems.append(str(err))
    return problems


def _pair_problems(root: Path, folder: str, image_id: str, num_labels: int | None) -> list[str]:
    """Every problem of one image/annotation pair (both files are examined)."""
    problems = []
    image = label = None
    try:
        image = read_image(image_path(root, folder, image_id))
    except CagnetError as err:
        problems.append(str(err))
    ann = annotation_path(root, folder, image_id)
    try:
        label = read_annotation(ann)  # raw values, checked against the label list below
    except CagnetError as err:
        problems.append(str(err))
    if label is not None:
        if num_labels is not None:
            try:
                check_label_ids(label, num_labels, ann)
            except CagnetError as err:
                problems.append(str(err))
        if image is not None and image.shape[:2] != label.shape:
            problems.append(
                f"{ann}: annotation size {label.shape[1]}x{label.shape[0]} differs from its image "
                f"size {image.shape[1]}x{image.shape[0]} (width x height)"
            )
    return problems


def _unannotated_images(root: Path, entries: list[tuple[str, str]]) -> list[str]:
    """Images of the listed folders without an annotation (a split without a list file is
    listed from its annotations, so such an image would otherwise go unnoticed)."""
    listed = set(entries)
    problems = []
    for folder in sorted({folder for folder, _ in entries}):
        image_dir = root / "images" / folder
        if not image_dir.is_dir():
            continue
        stems = sorted({p.stem for p in image_dir.iterdir() if p.suffix in IMAGE_EXTENSIONS})
        problems.extend(f"{annotation_path(root, folder, stem)}: annotation not found (for an image in {image_dir})"
                        for stem in stems if (folder, stem) not in listed)
    return problems


def run_check(root: str | os.PathLike, splits: Sequence[str] = SPLITS, embedding: str = "auto",
              progress: bool = True) -> CheckReport:
    """Check a dataset folder; see :func:`check_dataset`. Returns the full report."""
    root = Path(root)
    splits = tuple(splits)
    for split in splits:
        if split not in SPLITS:
            raise CagnetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if embedding not in CHECK_EMBEDDINGS:
        raise CagnetError(f"unknown embedding kind {embedding!r} (expected one of {', '.join(CHECK_EMBEDDINGS)})")
    if root.is_dir():  # an optional split the folder does not have is not checked
        splits = tuple(s for s in splits if s not in OPTIONAL_SPLITS or has_split(root, s))
    report = CheckReport(root=root, splits=splits)
    if not root.is_dir():
        report.problems.append(f"{root}: dataset folder not found")
        return report

    info = _metadata(root, report.problems)
    if info is not None:
        report.problems.extend(_embedding_problems(info, embedding))
    num_labels = info.num_labels if info is not None else None

    for split in splits:
        try:
            entries = split_entries(root, split)
        except CagnetError as err:
            report.problems.append(str(err))
            continue
        repeated = [f"{folder}/{image_id}" for (folder, image_id), n in Counter(entries).items() if n > 1]
        if repeated:
            report.problems.append(f"{split_list_path(root, split)}: repeated entries {', '.join(repeated[:5])}")
        if not split_list_path(root, split).is_file():
            report.problems.extend(_unannotated_images(root, entries))
        for folder, image_id in tqdm(sorted(set(entries)), desc=f"check {split}", unit="image",
                                     disable=not progress, leave=False):
            report.problems.extend(_pair_problems(root, folder, image_id, num_labels))
            report.pairs_checked += 1
    return report


def check_dataset(root: str | os.PathLike, splits: Sequence[str] = SPLITS, embedding: str = "auto",
                  progress: bool = True) -> list[str]:
    """Every problem of a dataset folder, one line each naming its file ([] = the folder is valid).

    Checks ``labels_refined.txt``, ``split/seen_cls.npy`` / ``novel_cls.npy``, the word vectors
    of ``embedding`` (``"none"`` to skip), the image list of each split in ``splits`` (an optional
    split, ``validation``, only when the folder has one), and every
    image/annotation pair in it (present, fully decodable, same size, label ids in the label
    list or 255). Read-only.
    """
    return run_check(root, splits, embedding, progress).problems
