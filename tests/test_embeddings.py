"""Tests of cagnet.data.embeddings: load_word_vectors (restricted unpickling) on real and crafted files,
cosine similarities of class embeddings."""
from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest

from cagnet.data.embeddings import cosine_similarity, load_word_vectors
from cagnet.errors import EmbeddingError


@pytest.mark.parametrize("dataset, num_labels, w2v_dtype", [
    ("voc12", 21, np.float64), ("context", 34, np.float32), ("cocostuff", 182, np.float64),
])
def test_original_word_vector_files_load(original_reference_dir, dataset, num_labels, w2v_dtype):
    folder = original_reference_dir / "dataset" / dataset / "word_vectors"
    fasttext = load_word_vectors(folder / "fasttext.pkl")
    word2vec = load_word_vectors(folder / "word2vec.pkl")
    assert fasttext.shape == word2vec.shape == (num_labels, 300)
    assert fasttext.dtype == np.float64
    assert word2vec.dtype == w2v_dtype
    assert np.isfinite(fasttext).all() and np.isfinite(word2vec).all()
    assert (np.linalg.norm(fasttext, axis=1) > 0).all()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_float_array_pickles_of_every_protocol_load(tmp_path, protocol):
    table = np.random.default_rng(protocol).normal(size=(5, 7)).astype(np.float32)
    path = tmp_path / "vectors.pkl"
    path.write_bytes(pickle.dumps(table, protocol=protocol))
    loaded = load_word_vectors(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, table)


def test_npy_loads_without_pickle(tmp_path):
    table = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "glove.npy", table)
    np.testing.assert_array_equal(load_word_vectors(tmp_path / "glove.npy"), table)


class _SystemPayload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalPayload:
    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return (eval, (self.source,))


class _SubprocessPayload:
    def __init__(self, argv):
        self.argv = argv

    def __reduce__(self):
        return (subprocess.check_call, (self.argv,))


@pytest.mark.parametrize("make_payload, refused_name", [
    (lambda marker: _SystemPayload(f"touch {marker}"), "system"),
    (lambda marker: _EvalPayload(f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
    (lambda marker: _SubprocessPayload(["touch", str(marker)]), "subprocess.check_call"),
    # the payload hidden inside a list next to a genuine array
    (lambda marker: [np.zeros((2, 3)), _SystemPayload(f"touch {marker}")], "system"),
])
def test_code_executing_pickle_is_refused_and_not_run(tmp_path, make_payload, refused_name):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "word2vec.pkl"
    path.write_bytes(pickle.dumps(make_payload(marker), protocol=3))
    with pytest.raises(EmbeddingError) as info:
        load_word_vectors(path)
    message = str(info.value)
    assert str(path) in message
    assert "refused" in message and refused_name in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("content, expected", [
    ({"vectors": [1.0, 2.0]}, "expected a numpy array"),
    (np.zeros(5), "2-D float array"),
    (np.zeros((3, 2, 2)), "2-D float array"),
    (np.zeros((3, 4), dtype=np.int64), "2-D float array"),
])
def test_non_float_matrix_is_rejected(tmp_path, content, expected):
    path = tmp_path / "fasttext.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(EmbeddingError, match=expected) as info:
        load_word_vectors(path)
    assert str(path) in str(info.value)


def test_truncated_pickle_is_rejected(tmp_path):
    path = tmp_path / "fasttext.pkl"
    path.write_bytes(pickle.dumps(np.ones((4, 300)))[:200])
    with pytest.raises(EmbeddingError, match="cannot read") as info:
        load_word_vectors(path)
    assert str(path) in str(info.value)


def test_object_npy_is_rejected_without_unpickling(tmp_path):
    path = tmp_path / "glove.npy"
    np.save(path, np.array([_SystemPayload("true"), 1], dtype=object), allow_pickle=True)
    with pytest.raises(EmbeddingError) as info:
        load_word_vectors(path)
    assert str(path) in str(info.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(EmbeddingError, match="not found") as info:
        load_word_vectors(tmp_path / "word2vec.pkl")
    assert "word2vec.pkl" in str(info.value)
    (tmp_path / "vectors.txt").write_text("1 2 3")
    with pytest.raises(EmbeddingError, match="unsupported"):
        load_word_vectors(tmp_path / "vectors.txt")


def test_cosine_similarity_of_rows():
    emb = np.array([[1.0, 0.0], [3.0, 3.0], [0.0, -2.0], [0.0, 0.0]])
    similarity = cosine_similarity(emb)
    np.testing.assert_allclose(similarity[:3, :3], [[1.0, 0.5 ** 0.5, 0.0], [0.5 ** 0.5, 1.0, -(0.5 ** 0.5)],
                                                    [0.0, -(0.5 ** 0.5), 1.0]], atol=1e-12)
    np.testing.assert_array_equal(similarity[3], 0.0)           # a zero row is similar to nothing
    rows = np.random.default_rng(0).normal(size=(4, 6))
    np.testing.assert_allclose(cosine_similarity(rows), cosine_similarity(rows).T)
