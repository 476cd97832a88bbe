"""Tests of cagnet.data.transforms: label resize vs the original, augmentation properties, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cagnet.data.transforms import (
    CAFFE_MEAN_RGB,
    TestTransform,
    TrainTransform,
    denormalize_image,
    normalize_image,
    resize_labels,
)
from cagnet.errors import ConfigError


def _image_and_label(height=30, width=40, values=(3, 7), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    label = rng.choice(np.array(values, dtype=np.uint8), size=(height, width))
    return image, label


# ------------------------------------------------------------------------ resize_labels

def test_resize_labels_floor_convention_and_ignore():
    labels = torch.tensor([[0, 1, 2, 255], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 255]])
    # output (i, j) <- input (floor(i * 4 / 2), floor(j * 4 / 2)): top-left of each 2x2 block
    assert resize_labels(labels, (2, 2)).tolist() == [[0, 2], [8, 10]]
    assert resize_labels(labels, (4, 4)).tolist() == labels.tolist()
    assert set(resize_labels(labels, (7, 3)).unique().tolist()) <= set(labels.unique().tolist())
    with pytest.raises(ValueError):
        resize_labels(labels.float(), (2, 2))


# ---------------------------------------------------------------------- train transform

@pytest.mark.parametrize("height, width, crop", [(30, 40, 16), (30, 40, 48), (9, 50, (20, 12))])
def test_train_transform_output_size_and_label_values(height, width, crop):
    image, label = _image_and_label(height, width)
    transform = TrainTransform(crop_size=crop)
    crop_hw = (crop, crop) if isinstance(crop, int) else crop
    rng = torch.Generator().manual_seed(1)
    for _ in range(5):
        image_t, label_t = transform(image, label, rng=rng)
        assert image_t.shape == (3, *crop_hw) and image_t.dtype == torch.float32
        assert label_t.shape == crop_hw and label_t.dtype == torch.long
        # nearest neighbour and ignore padding only: no value other than the input's and 255
        assert set(label_t.unique().tolist()) <= {3, 7, 255}


def test_train_transform_is_reproducible():
    image, label = _image_and_label()
    transform = TrainTransform(crop_size=24)
    first = transform(image, label, rng=torch.Generator().manual_seed(5))
    second = transform(image, label, rng=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    torch.testing.assert_close(transform(image, label, rng=rng_a), transform(image, label, rng=rng_b),
                               rtol=0, atol=0)
    # a generator given to the constructor is used and advanced
    seeded = TrainTransform(crop_size=24, rng=torch.Generator().manual_seed(5))
    torch.testing.assert_close(seeded(image, label), first, rtol=0, atol=0)
    outputs = [seeded(image, label)[1] for _ in range(4)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_train_transform_pads_with_ignore_and_mean():
    image, label = _image_and_label(10, 12)
    transform = TrainTransform(crop_size=16, scale_range=(1.0, 1.0), flip_prob=0.0)
    image_t, label_t = transform(image, label, rng=torch.Generator().manual_seed(0))
    # no scaling; the only possible crop starts at (0, 0): content top-left, padding bottom/right
    torch.testing.assert_close(image_t[:, :10, :12], normalize_image(image), rtol=0, atol=0)
    assert label_t[:10, :12].tolist() == label.tolist()
    assert (label_t[10:] == 255).all() and (label_t[:, 12:] == 255).all()
    assert (image_t[:, 10:] == 0).all() and (image_t[:, :, 12:] == 0).all()  # mean padding -> 0


def test_train_transform_flip_and_scale():
    image, label = _image_and_label(8, 10)
    flip = TrainTransform(crop_size=(8, 10), scale_range=(1.0, 1.0), flip_prob=1.0)
    image_t, label_t = flip(image, label)
    torch.testing.assert_close(image_t, normalize_image(image).flip(-1), rtol=0, atol=0)
    assert label_t.tolist() == label[:, ::-1].tolist()
    double = TrainTransform(crop_size=(16, 20), scale_range=(2.0, 2.0), flip_prob=0.0)
    _, label_t = double(image, label)
    assert label_t.tolist() == np.repeat(np.repeat(label, 2, axis=0), 2, axis=1).tolist()


def test_train_transform_scale_range_is_used():
    image, label = _image_and_label(40, 40, values=(1,))
    transform = TrainTransform(crop_size=80, flip_prob=0.0)
    rng = torch.Generator().manual_seed(0)
    labelled = [int((transform(image, label, rng=rng)[1] != 255).sum()) for _ in range(40)]
    sides = np.sqrt(labelled)
    assert sides.min() >= 20 and sides.max() <= 60  # side = round(40 * s), s in [0.5, 1.5]
    assert sides.max() - sides.min() > 20  # spread over the range, not a constant scale


def test_invalid_transform_options():
    with pytest.raises(ConfigError, match="normalization"):
        TrainTransform(normalization="bgr")
    with pytest.raises(ConfigError, match="scale_range"):
        TrainTransform(scale_range=(1.5, 0.5))
    image, label = _image_and_label(8, 10)
    with pytest.raises(ValueError, match="sizes differ"):
        TrainTransform(crop_size=4)(image, label[:, :9])


# ------------------------------------------------------------------------ normalisation

def test_caffe_and_imagenet_normalization():
    pixel = np.array([[[200, 100, 50]]], dtype=np.uint8)  # R, G, B
    caffe = normalize_image(pixel, "caffe")[:, 0, 0]
    expected_bgr = [50 - CAFFE_MEAN_RGB[2], 100 - CAFFE_MEAN_RGB[1], 200 - CAFFE_MEAN_RGB[0]]
    torch.testing.assert_close(caffe, torch.tensor(expected_bgr), rtol=0, atol=1e-4)
    imagenet = normalize_image(pixel, "imagenet")[:, 0, 0]
    expected_rgb = [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(imagenet, torch.tensor(expected_rgb), rtol=0, atol=1e-5)
    image, _ = _image_and_label(5, 6)
    for normalization in ("caffe", "imagenet"):
        back = denormalize_image(normalize_image(image, normalization), normalization)
        np.testing.assert_array_equal(back, image)


# ----------------------------------------------------------------------- test transform

def test_test_transform_keeps_or_warps_size():
    image, label = _image_and_label(30, 40)
    image_t, label_t = TestTransform()(image, label)
    assert image_t.shape == (3, 30, 40) and label_t.tolist() == label.tolist()
    image_t, label_t = TestTransform(size=33)(image, label)
    assert image_t.shape == (3, 33, 33) and label_t.shape == (33, 33)
    assert set(label_t.unique().tolist()) <= {3, 7}
    torch.testing.assert_close(label_t, resize_labels(torch.from_numpy(label).long(), (33, 33)), rtol=0, atol=0)
    image_t, label_t = TestTransform(size=(17, 19), warp_label=False)(image, label)
    assert image_t.shape == (3, 17, 19) and label_t.shape == (30, 40)


def test_transforms_accept_tensors():
    image, label = _image_and_label(12, 14)
    from_numpy = TestTransform(size=9)(image, label)
    from_torch = TestTransform(size=9)(torch.from_numpy(image), torch.from_numpy(label))
    torch.testing.assert_close(from_numpy, from_torch, rtol=0, atol=0)


def test_random_crops_of_images_in_memory():
    from cagnet.data.transforms import random_crops

    images = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8)
    labels = torch.arange(2 * 6 * 8).view(2, 6, 8)
    crops, crop_labels = random_crops(images, labels, 4, 5, torch.Generator().manual_seed(1))
    assert crops.shape == (5, 3, 4, 4) and crop_labels.shape == (5, 4, 4)
    for crop, label in zip(crops, crop_labels):   # image and label crops come from the same place
        n, rest = divmod(int(label[0, 0]), 48)
        top, left = divmod(rest, 8)
        assert torch.equal(label, labels[n, top:top + 4, left:left + 4])
        assert torch.equal(crop, images[n, :, top:top + 4, left:left + 4])
    with pytest.raises(ValueError, match="exceeds"):
        random_crops(images, labels, 7, 1)
