"""Segmentation datasets in the original CaGNet folder layout (voc12, context, cocostuff and the
embedded synthetic benchmark).

Layout of a dataset folder ``root``::

    images/<dir>/<id>.jpg|.png        <dir> = train | val (the original's test split is "val")
                                      | validation (optional: a split for recipe choices)
    annotations/<dir>/<id>.png        raw label ids (8-bit), 255 = unlabeled
    labels_refined.txt                "<id>\\t<name>" per line, ids 0..L-1
    split/seen_cls.npy                seen label ids (their order defines indices 0..S-1)
    split/novel_cls.npy               unseen label ids (their order defines S..S+U-1)
    split/train_list.npy              optional; entries ending in "<dir>/<id>[.png]"
    split/test_list.npy               optional; same
    split/validation_list.npy         optional; same (the embedded benchmark has one)
    word_vectors/fasttext.pkl, word2vec.pkl ([L, 300]) or word_vectors/glove.npy ([L, D])

Label mappings (as the original):

* training: seen id -> its position in ``seen_cls`` (0..S-1); every other value (background,
  unseen classes, unlabeled) -> 255, so unseen pixels of training images are ignored;
* test (and validation): seen id -> 0..S-1, unseen id -> S..S+U-1 in ``novel_cls`` order,
  anything else -> 255.

:func:`class_pixel_counts` counts the pixels of each class over label maps.

Every problem with a file raises :class:`DatasetError` (or :class:`EmbeddingError` for word
vectors) with a one-line message that names the file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from cagnet.data.embeddings import l2_normalize_rows, load_word_vectors
from cagnet.data.transforms import IGNORE_INDEX, TestTransform
from cagnet.errors import DatasetError, EmbeddingError
from cagnet.files import read_text

LABELS_FILE = "labels_refined.txt"
SPLITS = ("train", "validation", "test")
#: Splits a dataset may lack (the original datasets have none; the embedded benchmark has one).
OPTIONAL_SPLITS = ("validation",)
#: Image folder of each split when no list file names it (the original keeps its test split in "val").
DEFAULT_FOLDERS = {"train": "train", "validation": "validation", "test": "val"}
#: Extensions tried, in order, for an image file.
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
#: Extensions stripped from list entries (the original lists hold annotation paths).
_LIST_EXTENSIONS = {".png", ".jpg", ".jpeg", ".mat", ".bmp"}
EMBEDDING_KINDS = ("auto", "fastnvec", "fasttext", "word2vec", "glove")


# ------------------------------------------------------------------------------ metadata

def _name_key(name: str) -> str:
    """A class name's words, lower case (``Potted_Plant`` and ``potted plant`` are one name)."""
    return " ".join(re.split(r"[\s_\-]+", name.lower())).strip()


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names of ``labels_refined.txt``: line k must be ``"k<TAB>name"`` (ids 0..L-1), and
    no two names may have the same words (:func:`_name_key`)."""
    path = Path(path)
    text = read_text(path, "label list", DatasetError)
    names: list[str] = []
    first_line: dict[str, int] = {}    # a name's words (as word vectors read them) -> its first line
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
        if len(parts) != 2 or not parts[1].strip():
            raise DatasetError(f"{path}: line {line_no} is not '<id><TAB><name>': {line!r}")
        try:
            label_id = int(parts[0])
        except ValueError:
            raise DatasetError(f"{path}: line {line_no} has a non-integer id {parts[0]!r}") from None
        if label_id != len(names):
            raise DatasetError(f"{path}: line {line_no} has id {label_id}, expected {len(names)} (ids must be 0..L-1 in order)")
        name = parts[1].strip()
        key = _name_key(name)
        if key in first_line:
            raise DatasetError(f"{path}: line {line_no} repeats the class name {name!r} of line {first_line[key]} "
                               f"(classes need distinct names: their word vectors would be identical)")
        first_line[key] = line_no
        names.append(name)
    if not names:
        raise DatasetError(f"{path}: label list is empty")
    if len(names) > IGNORE_INDEX:
        raise DatasetError(f"{path}: {len(names)} labels; at most {IGNORE_INDEX} fit 8-bit annotations with 255 = unlabeled")
    return names


def read_class_ids(path: str | os.PathLike, num_labels: int) -> np.ndarray:
    """Label ids of ``seen_cls.npy`` / ``novel_cls.npy``: 1-D, distinct, in 0..num_labels-1 (int64)."""
    path = Path(path)
    ids = _load_npy(path, "class id list")
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DatasetError(f"{path}: expected a 1-D integer array, found shape {ids.shape} dtype {ids.dtype}")
    bad = ids[(ids < 0) | (ids >= num_labels)]
    if bad.size:
        raise DatasetError(f"{path}: label ids {sorted(set(bad.tolist()))} outside 0..{num_labels - 1}")
    if len(set(ids.tolist())) != ids.size:
        raise DatasetError(f"{path}: repeated label ids")
    return ids.astype(np.int64)


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found") from None
    except ValueError as err:  # object arrays (need pickle) or a corrupt header
        raise DatasetError(f"{path}: cannot read {what} without pickle ({err})") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read {what} ({err})") from None


@dataclass
class DatasetInfo:
    """Classes of a dataset and their seen/unseen split.

    ``class_names[i]`` is the name of raw label id ``i``; ``seen`` / ``unseen`` hold raw ids in
    the order of ``seen_cls.npy`` / ``novel_cls.npy``. Evaluation order = seen then unseen.
    """

    root: Path
    name: str
    class_names: list[str]
    seen: np.ndarray
    unseen: np.ndarray
    _embedding_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    @property
    def num_seen(self) -> int:
        return int(self.seen.size)

    @property
    def num_unseen(self) -> int:
        return int(self.unseen.size)

    @property
    def eval_ids(self) -> np.ndarray:
        """Raw label ids in evaluation order: [seen..., unseen...] (int64 [S+U])."""
        return np.concatenate([self.seen, self.unseen])

    @property
    def eval_class_names(self) -> list[str]:
        """Class names in evaluation order (index = evaluation class index)."""
        return [self.class_names[i] for i in self.eval_ids]

    def train_lut(self) -> np.ndarray:
        """uint8 [256]: seen id -> 0..S-1, every other value -> 255."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[self.seen] = np.arange(self.num_seen)
        return lut

    def test_lut(self) -> np.ndarray:
        """uint8 [256]: seen id -> 0..S-1, unseen id -> S..S+U-1, every other value -> 255."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[self.eval_ids] = np.arange(self.num_seen + self.num_unseen)
        return lut

    def embedding_files(self, kind: str = "auto") -> list[Path]:
        """The word-vector files ``kind`` reads (``auto`` resolved); raises if absent."""
        if kind not in EMBEDDING_KINDS:
            raise EmbeddingError(f"unknown embedding kind {kind!r} (expected one of {', '.join(EMBEDDING_KINDS)})")
        folder = self.root / "word_vectors"

        def source(stem: str) -> Path:
            for suffix in (".pkl", ".npy"):
                if (folder / f"{stem}{suffix}").is_file():
                    return folder / f"{stem}{suffix}"
            raise EmbeddingError(f"{folder / (stem + '.pkl')}: word-vector file not found (nor {stem}.npy)")

        if kind == "auto":
            if (folder / "fasttext.pkl").is_file() and (folder / "word2vec.pkl").is_file():
                kind = "fastnvec"
            elif (folder / "glove.npy").is_file():
                kind = "glove"
            else:
                raise EmbeddingError(f"{folder}: no word vectors (expected fasttext.pkl and word2vec.pkl, or glove.npy)")
        if kind == "fastnvec":
            return [source("fasttext"), source("word2vec")]  # fastText first, as the original
        if kind == "glove":
            path = folder / "glove.npy"
            if not path.is_file():
                raise EmbeddingError(f"{path}: word-vector file not found")
            return [path]
        return [source(kind)]

    def class_embeddings(self, kind: str = "auto", normalize: bool = True) -> np.ndarray:
        """Class embeddings in evaluation order: float32 [S+U, D].

        ``kind``: ``fasttext`` / ``word2vec`` (300-d), ``fastnvec`` (fastText rows concatenated
        with word2vec rows, 600-d, the original's default), ``glove`` (``glove.npy``), or
        ``auto`` (fastnvec when both .pkl files exist, else glove). With ``normalize`` every
        row (of the concatenation, for fastnvec) is scaled to unit L2 norm
        (``emb_without_normal: False`` in the original).

        Raises :class:`EmbeddingError` naming the file when a table does not have one row per
        label or a needed row is missing (all zeros or not finite).
        """
        key = (kind, bool(normalize))
        if key not in self._embedding_cache:
            tables = []
            for path in self.embedding_files(kind):
                table = load_word_vectors(path)
                if table.shape[0] != self.num_labels:
                    raise EmbeddingError(
                        f"{path}: shape {tuple(table.shape)}, expected ({self.num_labels}, dim): one row per label of {LABELS_FILE}"
                    )
                rows = table[self.eval_ids].astype(np.float64)
                missing = [int(i) for i, row in zip(self.eval_ids, rows) if not np.isfinite(row).all() or not row.any()]
                if missing:
                    names = ", ".join(f"{i} ({self.class_names[i]})" for i in missing)
                    raise EmbeddingError(f"{path}: missing embedding row (zero or not finite) for label ids {names}")
                tables.append(rows)
            embeddings = np.concatenate(tables, axis=1)
            if normalize:
                embeddings = l2_normalize_rows(embeddings)
            self._embedding_cache[key] = embeddings.astype(np.float32)
        return self._embedding_cache[key].copy()


def load_dataset_info(root: str | os.PathLike) -> DatasetInfo:
    """Read ``labels_refined.txt`` and ``split/{seen,novel}_cls.npy`` of a dataset folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    names = read_class_names(root / LABELS_FILE)
    seen = read_class_ids(root / "split" / "seen_cls.npy", len(names))
    unseen = read_class_ids(root / "split" / "novel_cls.npy", len(names))
    overlap = sorted(set(seen.tolist()) & set(unseen.tolist()))
    if overlap:
        raise DatasetError(f"{root / 'split' / 'novel_cls.npy'}: label ids {overlap} are also in seen_cls.npy")
    return DatasetInfo(root=root, name=root.resolve().name, class_names=names, seen=seen, unseen=unseen)


# ---------------------------------------------------------------------------- image lists

def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")


def split_list_path(root: str | os.PathLike, split: str) -> Path:
    """``<root>/split/<split>_list.npy`` (which may not exist)."""
    _check_split(split)
    return Path(root) / "split" / f"{split}_list.npy"


def split_entries(root: str | os.PathLike, split: str) -> list[tuple[str, str]]:
    """(folder, image id) pairs of a split, in list order.

    From ``split/<split>_list.npy`` when present: only the last two path parts of an entry,
    ``<folder>/<id>``, are used (the original lists hold absolute paths of the authors'
    machines) and a file extension is stripped. Otherwise the annotation files of
    ``annotations/train`` (train), ``annotations/validation`` (validation) or
    ``annotations/val`` (test), sorted.
    """
    root = Path(root)
    list_path = split_list_path(root, split)
    if list_path.is_file():
        raw = _load_npy(list_path, "image list")
        if raw.ndim != 1 or raw.dtype.kind not in "US":
            raise DatasetError(f"{list_path}: expected a 1-D array of paths, found shape {raw.shape} dtype {raw.dtype}")
        entries = []
        for entry in raw.tolist():
            entry = entry.decode() if isinstance(entry, bytes) else entry
            parts = [p for p in entry.replace("\\", "/").split("/") if p]
            if not parts:
                raise DatasetError(f"{list_path}: empty entry")
            stem, ext = os.path.splitext(parts[-1])
            image_id = stem if ext.lower() in _LIST_EXTENSIONS else parts[-1]
            folder = parts[-2] if len(parts) >= 2 else DEFAULT_FOLDERS[split]
            entries.append((folder, image_id))
        if not entries:
            raise DatasetError(f"{list_path}: image list is empty")
        return entries
    folder = DEFAULT_FOLDERS[split]
    ann_dir = root / "annotations" / folder
    if not ann_dir.is_dir():
        raise DatasetError(f"{ann_dir}: annotation folder not found (and no {list_path.name})")
    entries = sorted((folder, p.stem) for p in ann_dir.iterdir() if p.suffix.lower() == ".png")
    if not entries:
        raise DatasetError(f"{ann_dir}: no .png annotations")
    return entries


def has_split(root: str | os.PathLike, split: str) -> bool:
    """True when the dataset folder has a list file or an annotation folder for ``split``."""
    return split_list_path(root, split).is_file() or (Path(root) / "annotations" / DEFAULT_FOLDERS[split]).is_dir()


def image_ids(root: str | os.PathLike, split: str) -> list[str]:
    """Image ids of a split (``split`` in train|validation|test), in list order; see :func:`split_entries`."""
    return [image_id for _, image_id in split_entries(root, split)]


def split_folder(root: str | os.PathLike, split: str) -> str:
    """The image/annotation folder of a split (e.g. "val" for the original test lists)."""
    folders = sorted({folder for folder, _ in split_entries(root, split)})
    return folders[0] if len(folders) == 1 else ",".join(folders)


# ------------------------------------------------------------------------------ file access

def image_path(root: str | os.PathLike, folder: str, image_id: str) -> Path:
    """``images/<folder>/<id>.jpg`` or ``.png`` (first that exists); raises if neither does."""
    base = Path(root) / "images" / folder
    for ext in IMAGE_EXTENSIONS:
        candidate = base / f"{image_id}{ext}"
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{base / (image_id + '.jpg')}: image not found (nor .png)")


def annotation_path(root: str | os.PathLike, folder: str, image_id: str) -> Path:
    """``annotations/<folder>/<id>.png`` (not checked for existence)."""
    return Path(root) / "annotations" / folder / f"{image_id}.png"


def _open_fully(path: Path, what: str) -> Image.Image:
    """Open and decode an image completely, so a truncated file fails here (naming it)."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        with Image.open(path) as img:
            img.load()  # decodes all data: truncated PNG/JPEG raise OSError
            return img.copy()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... on corrupt files
        raise DatasetError(f"{path}: unreadable {what} ({type(err).__name__}: {err})") from None


def read_image(path: str | os.PathLike, exif_orientation: bool = False) -> np.ndarray:
    """RGB image as uint8 [H, W, 3]: grayscale, palette, CMYK and RGBA images are converted (the
    alpha channel is dropped), 16-bit grayscale is scaled to 8 bits, an animation gives its first
    frame. With ``exif_orientation`` the EXIF orientation tag is applied (the image as viewers
    show it; dataset images are read as stored, like their annotations)."""
    image = _open_fully(Path(path), "image")
    if exif_orientation:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):   # PIL's own conversion would clip at 255
        gray = (np.asarray(image, dtype=np.uint32) + 128) // 257
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def read_annotation(path: str | os.PathLike, num_labels: int | None = None) -> np.ndarray:
    """Raw label ids of a single-channel PNG as uint8 [H, W].

    With ``num_labels``, every value must be a label id (0..num_labels-1) or 255.
    """
    path = Path(path)
    img = _open_fully(path, "annotation")
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise DatasetError(f"{path}: annotation must be a single-channel label image, found mode {img.mode}")
    label = np.asarray(img)  # palette images give palette indices = label ids
    if num_labels is not None:
        check_label_ids(label, num_labels, path)
    elif label.dtype != np.uint8 and (label.min() < 0 or label.max() > 255):
        raise DatasetError(f"{path}: label values outside 0..255")
    return label.astype(np.uint8)


def check_label_ids(label: np.ndarray, num_labels: int, path: str | os.PathLike) -> None:
    """Raise DatasetError naming ``path`` if ``label`` holds values other than 0..L-1 and 255."""
    if label.dtype == np.uint8:
        counts = np.bincount(label.ravel(), minlength=256)
        present = np.flatnonzero(counts)
    else:
        present = np.unique(label)
    bad = [int(v) for v in present if not (0 <= v < num_labels or v == IGNORE_INDEX)]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise DatasetError(f"{path}: label ids {shown} not in 0..{num_labels - 1} (or 255 = unlabeled)")


def class_pixel_counts(masks: Iterable[np.ndarray], num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixels per class over label maps, int64 [num_classes] (``ignore_index`` and ids >=
    num_classes are not counted)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        values = np.asarray(mask).ravel().astype(np.int64)
        values = values[(values != ignore_index) & (values >= 0) & (values < num_classes)]
        counts += np.bincount(values, minlength=num_classes)
    return counts


def load_pair(root: str | os.PathLike, folder: str, image_id: str,
              num_labels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H, W, 3], raw label ids uint8 [H, W]) of one sample, fully validated."""
    ann = annotation_path(root, folder, image_id)
    if not ann.is_file():
        raise DatasetError(f"{ann}: annotation not found")
    img_path = image_path(root, folder, image_id)
    image = read_image(img_path)
    label = read_annotation(ann, num_labels)
    if image.shape[:2] != label.shape:
        raise DatasetError(
            f"{ann}: annotation size {label.shape[1]}x{label.shape[0]} differs from image {img_path.name} "
            f"size {image.shape[1]}x{image.shape[0]} (width x height)"
        )
    return image, label


# ------------------------------------------------------------------------------- dataset

class SegmentationDataset(torch.utils.data.Dataset):
    """Image/label pairs of one split, labels mapped by the split's LUT.

    ``split="train"`` uses :meth:`DatasetInfo.train_lut` (unseen -> 255), ``"validation"`` and
    ``"test"`` use :meth:`DatasetInfo.test_lut`. ``transform(image_uint8_rgb, mapped_label) -> (image, label)``
    (see :mod:`cagnet.data.transforms`); default: :class:`TestTransform` without warp and with
    the "caffe" normalisation of the original weights. ``ids`` restricts the dataset to these
    image ids of the split, in the given order.

    ``dataset[i]`` = ``{"image": FloatTensor [3, H, W], "label": LongTensor [H, W], "id": str}``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None,
                 info: DatasetInfo | None = None, ids: Sequence[str] | None = None):
        _check_split(split)
        self.root = Path(root)
        self.split = split
        self.info = info if info is not None else load_dataset_info(self.root)
        entries = split_entries(self.root, split)
        if ids is not None:
            folder_of = {image_id: folder for folder, image_id in entries}
            unknown = [i for i in ids if i not in folder_of]
            if unknown:
                raise DatasetError(
                    f"{split_list_path(self.root, split)}: image ids not in the {split} split: {', '.join(map(str, unknown[:5]))}"
                )
            entries = [(folder_of[i], i) for i in ids]
        self.entries = entries
        self.lut = self.info.train_lut() if split == "train" else self.info.test_lut()
        self.transform = transform if transform is not None else TestTransform()

    @property
    def ids(self) -> list[str]:
        return [image_id for _, image_id in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def raw_sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 [H, W, 3], raw label ids uint8 [H, W]) before mapping and transform."""
        folder, image_id = self.entries[index]
        return load_pair(self.root, folder, image_id, self.info.num_labels)

    def __getitem__(self, index: int) -> dict:
        image, raw_label = self.raw_sample(index)
        image_t, label_t = self.transform(image, self.lut[raw_label])
        return {"image": image_t, "label": label_t, "id": self.entries[index][1]}

    def __repr__(self) -> str:
        return f"SegmentationDataset(root={str(self.root)!r}, split={self.split!r}, size={len(self)})"
