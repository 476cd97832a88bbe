"""cagnet.data.embed and ``python -m cagnet embed``: GloVe vectors of a dataset's own class names."""
from __future__ import annotations

import numpy as np
import pytest

from cagnet.cli import main
from cagnet.data import load_dataset_info
from cagnet.data.embed import GLOVE_FILE, embed_class_names
from cagnet.data.embeddings import glove_vectors, read_text_vectors
from cagnet.errors import CagnetError, EmbeddingError


def _vector_line(word: str, values) -> str:
    return word + " " + " ".join(f"{v:.6f}" for v in values) + "\n"


def test_embed_writes_one_row_per_label_with_multi_word_names_averaged(custom_dataset, capsys):
    labels_before = (custom_dataset / "labels_refined.txt").read_bytes()
    assert main(["embed", str(custom_dataset)]) == 0
    out = capsys.readouterr().out
    assert "5 classes x 50" in out and "glove.npy" in out
    table = np.load(custom_dataset / GLOVE_FILE, allow_pickle=False)
    assert table.shape == (5, 50) and table.dtype == np.float32
    sky, grass, potted, plant, road, water = glove_vectors(["sky", "grass", "potted", "plant", "road", "water"])
    np.testing.assert_allclose(table[0], sky, rtol=0, atol=1e-6)
    np.testing.assert_allclose(table[2], (potted + plant) / 2, rtol=0, atol=1e-6)   # "potted plant"
    np.testing.assert_allclose(table[[1, 3, 4]], np.stack([grass, road, water]), rtol=0, atol=1e-6)
    assert (custom_dataset / "labels_refined.txt").read_bytes() == labels_before
    # the dataset reads it: evaluation order (seen 0, 1, 3 then unseen 2, 4), rows normalised
    embeddings = load_dataset_info(custom_dataset).class_embeddings("auto")
    np.testing.assert_allclose(embeddings[3], table[2] / np.linalg.norm(table[2]), rtol=1e-5, atol=1e-6)


def test_underscores_and_hyphens_compose_like_spaces(custom_dataset):
    rows = []
    for name in ("potted_plant", "Potted-Plant", "potted plant"):
        (custom_dataset / "labels_refined.txt").write_text(f"0\tsky\n1\t{name}\n")
        rows.append(embed_class_names(custom_dataset, force=True).table[1])
    np.testing.assert_array_equal(rows[0], rows[2])
    np.testing.assert_array_equal(rows[1], rows[2])


def test_class_names_with_the_same_words_are_refused(custom_dataset, cli_error):
    """Two names that read as the same words would get identical word vectors."""
    (custom_dataset / "labels_refined.txt").write_text("0\tsky\n1\tpotted_plant\n2\tPotted-Plant\n")
    err = cli_error(["embed", str(custom_dataset)])
    assert "labels_refined.txt: line 3 repeats the class name 'Potted-Plant' of line 2" in err
    assert not (custom_dataset / GLOVE_FILE).exists()


def test_check_lists_repeated_class_names(custom_dataset, capsys):
    (custom_dataset / "labels_refined.txt").write_text("0\tsky\n1\tgrass\n2\tSky\n3\troad\n4\twater\n")
    assert main(["check", str(custom_dataset), "--embedding", "none", "--no-progress"]) == 1
    assert "line 3 repeats the class name 'Sky' of line 1" in capsys.readouterr().out


def test_unknown_word_names_the_class_and_the_word(custom_dataset, cli_error):
    (custom_dataset / "labels_refined.txt").write_text("0\tsky\n1\tflorbish grass\n2\tzzyzxq\n")
    err = cli_error(["embed", str(custom_dataset)])
    assert "word 'florbish' of class 'florbish grass'" in err and "word 'zzyzxq' of class 'zzyzxq'" in err
    assert "--extra-vectors" in err
    assert not (custom_dataset / GLOVE_FILE).exists()


def test_extra_vectors_supply_missing_words(custom_dataset, capsys):
    (custom_dataset / "labels_refined.txt").write_text("0\tsky\n1\tflorbish grass\n")
    florbish = np.linspace(-1, 1, 50)
    extra = custom_dataset.parent / "words.txt"
    extra.write_text(_vector_line("Florbish", florbish) + "\n" + _vector_line("unused", np.ones(50)))
    assert main(["embed", str(custom_dataset), "--extra-vectors", str(extra)]) == 0
    assert "from the extra vectors: florbish" in capsys.readouterr().out
    table = np.load(custom_dataset / GLOVE_FILE)
    np.testing.assert_allclose(table[1], (florbish + glove_vectors(["grass"])[0]) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("content, expected", [
    ("flor " + "0.1 " * 49 + "\n", "line 1 ('flor') has 49 values, expected 50"),
    ("a " + "0.1 " * 50 + "\nflor " + "0.1 " * 48 + "x 0.2\n", "line 2 ('flor'): 'x' is not a number"),
    ("flor " + "0.1 " * 49 + "nan\n", "line 1 ('flor'): values must be finite"),
    ("flor " + "0.1 " * 50 + "\nFLOR " + "0.2 " * 50 + "\n", "line 2: word 'flor' repeats line 1"),
    ("\n\n", "no word vectors"),
])
def test_bad_extra_vector_files_are_one_line_errors(tmp_path, content, expected, cli_error, custom_dataset):
    path = tmp_path / "words.txt"
    path.write_text(content)
    with pytest.raises(EmbeddingError) as info:
        read_text_vectors(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)
    err = cli_error(["embed", str(custom_dataset), "--extra-vectors", str(path)])
    assert str(path) in err and expected in err
    assert not (custom_dataset / GLOVE_FILE).exists()


def test_existing_vectors_need_force_and_are_replaced_atomically(custom_dataset, cli_error):
    target = custom_dataset / GLOVE_FILE
    target.parent.mkdir()
    np.save(target, np.ones((5, 50), np.float32))
    before = target.read_bytes()
    err = cli_error(["embed", str(custom_dataset)])
    assert str(target) in err and "--force" in err
    assert target.read_bytes() == before
    assert main(["embed", str(custom_dataset), "--force"]) == 0
    assert not np.array_equal(np.load(target), np.ones((5, 50)))
    assert sorted(p.name for p in target.parent.iterdir()) == ["glove.npy"]   # no temporary file left


def test_missing_dataset_or_label_list(tmp_path, cli_error):
    assert "dataset folder not found" in cli_error(["embed", str(tmp_path / "absent")])
    (tmp_path / "empty").mkdir()
    err = cli_error(["embed", str(tmp_path / "empty")])
    assert "labels_refined.txt" in err and "not found" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "labels_refined.txt").write_text("0\tsky\n2\tgrass\n")
    assert "line 2 has id 2, expected 1" in cli_error(["embed", str(tmp_path / "bad")])
    (tmp_path / "bad" / "labels_refined.txt").write_text("0\tsky\n")
    err = cli_error(["embed", str(tmp_path / "bad"), "--extra-vectors", str(tmp_path / "absent.txt")])
    assert "absent.txt: word-vector file not found" in err


def test_library_errors_are_cagnet_errors(custom_dataset):
    embed_class_names(custom_dataset)
    with pytest.raises(CagnetError, match="exists; pass --force"):
        embed_class_names(custom_dataset)
