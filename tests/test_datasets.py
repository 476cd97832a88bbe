"""Tests of cagnet.data.datasets: label mappings, image lists, embeddings, samples and bad input."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cagnet.data.datasets import (
    SegmentationDataset,
    class_pixel_counts,
    image_ids,
    load_dataset_info,
    split_entries,
    split_folder,
)
from cagnet.data.embeddings import load_word_vectors
from cagnet.data.transforms import TestTransform
from cagnet.errors import DatasetError, EmbeddingError

NAMES = ["background", "cat", "dog", "tree", "car", "sky"]
SEEN = [1, 2, 3]
UNSEEN = [5, 4]


def make_fake_dataset(root: Path, train=("a", "b", "c"), test=("d", "e"), size=(20, 24), seed=0) -> Path:
    """Tiny dataset in the original layout: 6 labels, seen 1 2 3, unseen 5 4 (in that order)."""
    rng = np.random.default_rng(seed)
    (root / "split").mkdir(parents=True)
    (root / "labels_refined.txt").write_text("\n".join(f"{i}\t{n}" for i, n in enumerate(NAMES)))
    np.save(root / "split" / "seen_cls.npy", np.array(SEEN))
    np.save(root / "split" / "novel_cls.npy", np.array(UNSEEN))
    for folder, ids in (("train", train), ("val", test)):
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for k, image_id in enumerate(ids):
            image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            ext = ".jpg" if k % 2 == 0 else ".png"  # both extensions occur
            Image.fromarray(image).save(root / "images" / folder / f"{image_id}{ext}")
            label = rng.choice(np.array([0, 1, 2, 3, 4, 5, 255], dtype=np.uint8), size=size)
            Image.fromarray(label).save(root / "annotations" / folder / f"{image_id}.png")
    (root / "word_vectors").mkdir()
    for stem in ("fasttext", "word2vec"):
        table = rng.normal(size=(len(NAMES), 300))
        (root / "word_vectors" / f"{stem}.pkl").write_bytes(pickle.dumps(table, protocol=3))
    np.save(root / "word_vectors" / "glove.npy", rng.normal(size=(len(NAMES), 50)).astype(np.float32))
    return root


@pytest.fixture
def fake_root(tmp_path) -> Path:
    return make_fake_dataset(tmp_path / "fake")


# ------------------------------------------------------------------ original metadata

def test_voc_label_mappings(original_reference_dir):
    info = load_dataset_info(original_reference_dir / "dataset" / "voc12")
    assert (info.num_labels, info.num_seen, info.num_unseen) == (21, 15, 5)
    train = info.train_lut()
    assert train.shape == (256,) and train.dtype == np.uint8
    np.testing.assert_array_equal(train[1:16], np.arange(15))
    assert (train[[0, 16, 17, 18, 19, 20, 21, 254, 255]] == 255).all()
    test = info.test_lut()
    np.testing.assert_array_equal(test[1:16], np.arange(15))
    np.testing.assert_array_equal(test[[16, 17, 18, 19, 20]], [15, 16, 17, 18, 19])
    assert test[0] == 255 and test[255] == 255 and (test[21:255] == 255).all()
    assert info.eval_class_names[15:] == ["potted_plant", "sheep", "sofa", "train", "tv"]


def test_context_label_mappings(original_reference_dir):
    info = load_dataset_info(original_reference_dir / "dataset" / "context")
    assert (info.num_labels, info.num_seen, info.num_unseen) == (34, 29, 4)
    test = info.test_lut()
    np.testing.assert_array_equal(test[[10, 14, 18, 8]], [29, 30, 31, 32])
    seen = [i for i in range(1, 34) if i not in (10, 14, 18, 8)]
    np.testing.assert_array_equal(test[seen], np.arange(29))
    train = info.train_lut()
    np.testing.assert_array_equal(train[seen], np.arange(29))
    assert (train[[0, 8, 10, 14, 18, 255]] == 255).all()
    assert info.eval_class_names[29:] == ["cow", "motorbike", "sofa", "cat"]


def test_cocostuff_person_is_seen(original_reference_dir):
    info = load_dataset_info(original_reference_dir / "dataset" / "cocostuff")
    assert (info.num_labels, info.num_seen, info.num_unseen) == (182, 167, 15)
    assert info.train_lut()[0] == 0 and info.test_lut()[255] == 255
    assert info.eval_class_names[167:170] == ["cow", "giraffe", "suitcase"]


def test_image_ids_from_original_lists(original_reference_dir):
    voc = original_reference_dir / "dataset" / "voc12"
    test_ids = image_ids(voc, "test")
    assert len(test_ids) == 1449 and len(set(test_ids)) == 1449
    assert test_ids[0] == "2010_005159"  # path and ".png" stripped
    assert split_folder(voc, "test") == "val"
    assert split_folder(voc, "train") == "train" and len(image_ids(voc, "train")) == 10582
    context_entries = split_entries(original_reference_dir / "dataset" / "context", "test")
    assert len(context_entries) == 5105 and context_entries[0] == ("val", "2008_006425")
    assert split_folder(original_reference_dir / "dataset" / "cocostuff", "test") == "val2017"


def test_voc_fastnvec_embeddings(original_reference_dir):
    root = original_reference_dir / "dataset" / "voc12"
    info = load_dataset_info(root)
    emb = info.class_embeddings("fastnvec")
    assert emb.shape == (20, 600) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    fasttext = load_word_vectors(root / "word_vectors" / "fasttext.pkl")
    word2vec = load_word_vectors(root / "word_vectors" / "word2vec.pkl")
    order = list(range(1, 16)) + [16, 17, 18, 19, 20]  # seen, then unseen: raw id 0 is not a class
    expected = np.concatenate([fasttext[order], word2vec[order]], axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(emb, expected, atol=1e-6)
    np.testing.assert_array_equal(info.class_embeddings("auto"), emb)
    assert info.class_embeddings("word2vec").shape == (20, 300)


# ----------------------------------------------------------------------- fake datasets

def test_samples_are_mapped_by_the_split_lut(fake_root):
    train = SegmentationDataset(fake_root, "train")
    assert len(train) == 3 and train.ids == ["a", "b", "c"]  # listed from annotations/train
    for index in range(len(train)):
        image, raw = train.raw_sample(index)
        sample = train[index]
        assert sample["image"].shape == (3, 20, 24) and sample["image"].dtype == torch.float32
        assert sample["label"].dtype == torch.long
        expected = np.full(raw.shape, 255)
        for position, label_id in enumerate(SEEN):
            expected[raw == label_id] = position
        np.testing.assert_array_equal(sample["label"].numpy(), expected)
    test = SegmentationDataset(fake_root, "test", transform=TestTransform(normalization="imagenet"))
    assert test.ids == ["d", "e"]
    image, raw = test.raw_sample(1)
    label = test[1]["label"].numpy()
    for index, label_id in enumerate(SEEN + UNSEEN):
        assert (label[raw == label_id] == index).all()
    assert (label[(raw == 0) | (raw == 255)] == 255).all()


def test_raw_sample_returns_the_files(fake_root):
    dataset = SegmentationDataset(fake_root, "train")
    image, label = dataset.raw_sample(1)  # "b" is a PNG image
    np.testing.assert_array_equal(image, np.asarray(Image.open(fake_root / "images/train/b.png")))
    np.testing.assert_array_equal(label, np.asarray(Image.open(fake_root / "annotations/train/b.png")))


def test_split_list_with_absolute_paths(fake_root):
    np.save(fake_root / "split" / "test_list.npy",
            np.array(["/home/someone/data/annotations/val/e.png", "/x/annotations/val/d"]))
    assert split_entries(fake_root, "test") == [("val", "e"), ("val", "d")]
    dataset = SegmentationDataset(fake_root, "test", ids=["d"])
    assert dataset[0]["id"] == "d"
    with pytest.raises(DatasetError, match="test_list.npy"):
        SegmentationDataset(fake_root, "test", ids=["a"])


def test_fake_embedding_kinds(fake_root):
    info = load_dataset_info(fake_root)
    assert info.class_embeddings("auto").shape == (5, 600)
    glove = info.class_embeddings("glove", normalize=False)
    table = np.load(fake_root / "word_vectors" / "glove.npy")
    np.testing.assert_allclose(glove, table[[1, 2, 3, 5, 4]])
    (fake_root / "word_vectors" / "fasttext.pkl").unlink()
    np.testing.assert_array_equal(info.class_embeddings("auto", normalize=False), glove)  # falls back to glove


# ------------------------------------------------------------------------- bad input

def _first_item(root: Path, split: str = "train"):
    return SegmentationDataset(root, split)[0]


def test_missing_annotation_names_file(fake_root):
    np.save(fake_root / "split" / "train_list.npy", np.array(["train/a", "train/zz"]))
    dataset = SegmentationDataset(fake_root, "train")
    with pytest.raises(DatasetError, match="annotation not found") as info:
        dataset[1]
    assert str(fake_root / "annotations" / "train" / "zz.png") in str(info.value)


def test_missing_image_names_file(fake_root):
    (fake_root / "images" / "train" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="image not found") as info:
        _first_item(fake_root)
    assert str(fake_root / "images" / "train" / "a.jpg") in str(info.value)


@pytest.mark.parametrize("image_id, ext", [("a", ".jpg"), ("b", ".png")])
def test_truncated_image_names_file(fake_root, image_id, ext):
    path = fake_root / "images" / "train" / f"{image_id}{ext}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    dataset = SegmentationDataset(fake_root, "train", ids=[image_id])
    with pytest.raises(DatasetError, match="unreadable image") as info:
        dataset[0]
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_annotation_names_file(fake_root):
    path = fake_root / "annotations" / "train" / "a.png"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match="unreadable annotation") as info:
        _first_item(fake_root)
    assert str(path) in str(info.value)


def test_size_mismatch_names_file(fake_root):
    path = fake_root / "annotations" / "train" / "a.png"
    Image.fromarray(np.ones((20, 23), dtype=np.uint8)).save(path)
    with pytest.raises(DatasetError, match="differs from image") as info:
        _first_item(fake_root)
    assert str(path) in str(info.value)


def test_label_id_outside_label_list_names_file(fake_root):
    path = fake_root / "annotations" / "val" / "d.png"
    label = np.zeros((20, 24), dtype=np.uint8)
    label[3, 4], label[5, 6] = 6, 200  # 6 labels: 0..5 and 255 are valid
    Image.fromarray(label).save(path)
    with pytest.raises(DatasetError, match=r"label ids 6, 200 not in 0\.\.5") as info:
        _first_item(fake_root, "test")
    assert str(path) in str(info.value)


def test_rgb_annotation_is_rejected(fake_root):
    path = fake_root / "annotations" / "train" / "a.png"
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DatasetError, match="single-channel") as info:
        _first_item(fake_root)
    assert str(path) in str(info.value)


def test_wrong_embedding_shape_names_file(fake_root):
    path = fake_root / "word_vectors" / "word2vec.pkl"
    path.write_bytes(pickle.dumps(np.ones((4, 300)), protocol=3))
    with pytest.raises(EmbeddingError) as info:
        load_dataset_info(fake_root).class_embeddings("fastnvec")
    message = str(info.value)
    assert str(path) in message and "(4, 300)" in message and "(6, dim)" in message


def test_missing_embedding_row_names_file(fake_root):
    path = fake_root / "word_vectors" / "glove.npy"
    table = np.load(path)
    table[4] = 0.0  # unseen class "car" has no vector
    np.save(path, table)
    with pytest.raises(EmbeddingError, match=r"missing embedding row.*4 \(car\)") as info:
        load_dataset_info(fake_root).class_embeddings("glove")
    assert str(path) in str(info.value)


def test_bad_metadata_names_file(fake_root):
    np.save(fake_root / "split" / "novel_cls.npy", np.array([5, 9]))
    with pytest.raises(DatasetError, match="outside 0..5") as info:
        load_dataset_info(fake_root)
    assert "novel_cls.npy" in str(info.value)
    (fake_root / "labels_refined.txt").write_text("0\tbackground\n2\tcat\n")
    with pytest.raises(DatasetError, match="line 2") as info:
        load_dataset_info(fake_root)
    assert "labels_refined.txt" in str(info.value)


def test_empty_split_folder(fake_root):
    for path in (fake_root / "annotations" / "val").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match="no .png annotations") as info:
        SegmentationDataset(fake_root, "test")
    assert str(fake_root / "annotations" / "val") in str(info.value)


def test_class_pixel_counts_skip_ignored_and_unknown_ids():
    masks = [np.array([[0, 1, 255], [4, 1, 7]], dtype=np.uint8), np.array([[4, 4]], dtype=np.uint8)]
    np.testing.assert_array_equal(class_pixel_counts(masks, 5), [1, 2, 0, 0, 3])   # 255 and 7 not counted
    np.testing.assert_array_equal(class_pixel_counts(masks, 5, ignore_index=4), [1, 2, 0, 0, 0])
    assert class_pixel_counts([], 3).tolist() == [0, 0, 0]
