"""Training batches: the resumable, sharded batch order and the two ways of making batches
(preloaded on the training device, or a DataLoader) that give the same batches."""
from __future__ import annotations

import pytest
import torch

from cagnet.config import load_train_config
from cagnet.train import batches as train_batches
from cagnet.train.batches import (PreloadedLoader, PreloadedTrainingSet, ResumableBatchSampler, SeededAugmentation,
                                  training_batches)
from cagnet.train.loading import prepare_dataset, training_dataset

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _dataset(overrides, crop, *extra):
    config = load_train_config("tutorial", [*overrides, *extra])
    return training_dataset(config, prepare_dataset(config), crop)


def _loader_batch(dataset, keys):
    samples = [SeededAugmentation(dataset)[key] for key in keys]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])


@pytest.mark.parametrize("crop, scale_range", [(64, "[1.0, 1.0]"),     # whole images: crop and flip only
                                               (48, "[0.5, 1.5]")])    # rescale, pad and crop too
def test_preloaded_batches_equal_the_loaders(tiny_train_overrides, crop, scale_range):
    dataset = _dataset(tiny_train_overrides, crop, f"data.scale_range={scale_range}")
    preloaded = PreloadedTrainingSet(dataset, torch.device("cpu"))
    sampler = ResumableBatchSampler(len(dataset), 4, seed=11)
    flips = 0
    for keys in list(sampler)[:3]:
        batch = preloaded.batch(keys)
        image, label = _loader_batch(dataset, keys)
        assert batch["image"].shape == image.shape == (4, 3, crop, crop)
        assert torch.equal(batch["image"], image)          # bit-identical on the CPU
        assert torch.equal(batch["label"], label) and batch["label"].dtype == torch.long
        assert batch["id"] == [dataset.ids[index] for index, _ in keys]
        flips += sum(dataset.transform.draw(64, 64, torch.Generator().manual_seed(seed)).flip for _, seed in keys)
    assert 0 < flips < 12   # both branches of the flip were exercised


def test_both_streams_give_the_same_batches_and_resume_alike(tiny_train_overrides):
    dataset = _dataset(tiny_train_overrides, 48)
    streams = [training_batches(dataset, 4, 0, seed=5, preload=flag) for flag in (True, False)]
    assert isinstance(streams[0].loader, PreloadedLoader)
    assert isinstance(streams[1].loader, torch.utils.data.DataLoader)
    for _ in range(6):   # 16 images / 4 per batch: crosses an epoch boundary
        first, second = (stream.next() for stream in streams)
        assert torch.equal(first["image"], second["image"]) and torch.equal(first["label"], second["label"])
    assert streams[0].position == streams[1].position == (1, 2)
    expected = streams[0].next()
    resumed = training_batches(dataset, 4, 0, seed=5, preload=True)
    resumed.seek(1, 2)
    assert torch.equal(resumed.next()["image"], expected["image"])


def test_preload_decision_follows_the_size_limit(tiny_train_overrides, monkeypatch):
    dataset = _dataset(tiny_train_overrides, 48)
    assert PreloadedTrainingSet.estimated_bytes(dataset) == 16 * 64 * 64 * 3
    assert isinstance(training_batches(dataset, 4, 0, seed=0).loader, PreloadedLoader)
    monkeypatch.setattr(train_batches, "PRELOAD_LIMIT_BYTES", 1000)
    assert isinstance(training_batches(dataset, 4, 0, seed=0).loader, torch.utils.data.DataLoader)


def test_sampler_shards_processes_and_depends_only_on_seed_and_epoch():
    ranks = [ResumableBatchSampler(10, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == 2    # 10 // (2 x 2); the tail is dropped
    keys = [ranks[r].epoch_keys(0) for r in range(2)]
    indices = [index for shard in keys for index, _ in shard]
    assert len(indices) == len(set(indices)) == 8
    assert ResumableBatchSampler(10, 2, seed=3, rank=1, world_size=2).epoch_keys(0) == keys[1]
    assert ranks[0].epoch_keys(1) != keys[0]
    ranks[0].set_position(0, 1)
    assert list(ranks[0]) == [keys[0][2:4]]
