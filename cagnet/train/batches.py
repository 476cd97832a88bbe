"""Training batches: a deterministic, resumable and distributed batch order.

Exact resumption needs a data order that depends only on (seed, epoch, position), not on
how often an iterator was created or on worker processes:

* :class:`ResumableBatchSampler` shuffles each epoch with a random stream seeded from
  ``(seed, epoch)`` and shards it over processes like ``torch.utils.data.DistributedSampler``
  (process ``r`` of ``w`` takes positions ``r, r + w, ...``); the tail that does not fill a
  batch on every process is dropped, so all processes run the same number of iterations.
  ``set_position(epoch, batch)`` restarts mid-epoch.
* it yields keys ``(dataset index, augmentation seed)``; :class:`SeededAugmentation` runs
  the dataset's random transform with a ``torch.Generator`` seeded from that key, so an
  augmentation is the same whichever worker draws it and however the run was interrupted.

DataLoaders get their own ``torch.Generator`` so that creating an iterator never consumes
the global RNG (which dropout and the latent noise use).

Two ways to turn keys into batches, with the same batches for the same keys
(:func:`training_batches` picks one):

* a small training split (the embedded benchmark: ~20 MB of pixels) is decoded once and its
  images are kept on the training device as uint8 (:class:`PreloadedTrainingSet`); a batch is
  cropped, flipped and normalised there, with the random parameters drawn exactly as
  :class:`~cagnet.data.transforms.TrainTransform` draws them from the key's seed. On the CPU
  the result is bit-identical to the DataLoader's; on a GPU the rescaling (bilinear) may
  differ in the last bits, the rest (crop, flip, normalisation, label maps) is identical;
* a large split (a real dataset) goes through a ``DataLoader`` with ``data.num_workers``
  worker processes (kept alive across epochs), pinned memory on a GPU, and copies that do
  not wait for the GPU.

Label maps stay on the CPU in both cases (and are copied to the device as well): the
engine checks them for labelled pixels and the MMD loss reads its run layout from them
without waiting for the GPU.
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import torch

from cagnet.data.datasets import SegmentationDataset
from cagnet.data.transforms import ImageNormalizer, TrainTransform
from cagnet.errors import DatasetError


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, augmentation seed)`` keys; one epoch per iteration over it.

    Args:
        size: dataset length.
        batch_size: per-process batch size.
        seed: base seed of the order and of the augmentations.
        rank, world_size: this process and the number of processes.
        shuffle: permute each epoch (False: dataset order).
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        if size < batch_size * world_size:
            raise DatasetError(f"training split has {size} images, fewer than one batch of {batch_size} "
                               f"per process x {world_size} process(es)")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, batch: int) -> None:
        """The next iteration over the sampler starts at batch ``batch`` of epoch ``epoch``."""
        self.epoch = int(epoch)
        self.start_batch = int(batch)

    def epoch_keys(self, epoch: int) -> list[tuple[int, int]]:
        """This process's keys of ``epoch`` in order (whole batches only)."""
        if self.shuffle:
            rng = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(self.size, generator=rng).tolist()
        else:
            order = list(range(self.size))
        used = self.batches_per_epoch * self.batch_size * self.world_size
        positions = range(self.rank, used, self.world_size)
        return [(order[p], mix_seed(self.seed, epoch, p)) for p in positions]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        keys = self.epoch_keys(self.epoch)
        for batch in range(self.start_batch, self.batches_per_epoch):
            yield keys[batch * self.batch_size:(batch + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


class SeededAugmentation(torch.utils.data.Dataset):
    """Wraps a :class:`SegmentationDataset` whose transform takes ``rng=``;
    ``dataset[(index, seed)]`` draws the augmentation from a random stream seeded with ``seed``."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image, raw_label = self.dataset.raw_sample(index)
        rng = torch.Generator().manual_seed(int(seed))
        image_t, label_t = self.dataset.transform(image, self.dataset.lut[raw_label], rng=rng)
        return {"image": image_t, "label": label_t, "id": self.dataset.entries[index][1]}


def training_loader(dataset: SegmentationDataset, batch_size: int, num_workers: int, seed: int,
                    rank: int = 0, world_size: int = 1, pin_memory: bool = False
                    ) -> tuple[torch.utils.data.DataLoader, ResumableBatchSampler]:
    """DataLoader over :class:`SeededAugmentation` with a :class:`ResumableBatchSampler`."""
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, rank, world_size)
    # persistent workers: no new processes each epoch (the sampler still runs in this process,
    # so a new iterator starts where set_position says)
    loader = torch.utils.data.DataLoader(
        SeededAugmentation(dataset), batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0)
    return loader, sampler


class BatchStream:
    """Endless batches from a :class:`ResumableBatchSampler` loader, epoch after epoch.

    ``position`` = (epoch, batches consumed in it) after the last :meth:`next`; give it back
    to :meth:`seek` to continue exactly there.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, sampler: ResumableBatchSampler) -> None:
        self.loader = loader
        self.sampler = sampler
        self.epoch = 0
        self.batch = 0
        self._iterator = None

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.batch

    def seek(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = int(epoch), int(batch)
        self._iterator = None

    def next(self) -> dict:
        while True:
            if self._iterator is None:
                if self.batch >= self.sampler.batches_per_epoch:
                    self.epoch, self.batch = self.epoch + 1, 0
                self.sampler.set_position(self.epoch, self.batch)
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch, self.batch = self.epoch + 1, 0
                continue
            self.batch += 1
            return batch


#: Largest training split (decoded RGB bytes, estimated from its first image) that
#: ``data.preload: null`` keeps on the training device.
PRELOAD_LIMIT_BYTES = 1 << 30


class PreloadedTrainingSet:
    """A training split decoded once: uint8 images [H, W, 3] on ``device``, mapped label
    maps on the CPU; :meth:`batch` augments a batch of keys where the images are.

    ``dataset`` must use a :class:`~cagnet.data.transforms.TrainTransform`. ``batch(keys)``
    equals stacking ``SeededAugmentation(dataset)[key]`` over the keys (see the module
    docstring for what may differ on a GPU).
    """

    def __init__(self, dataset: SegmentationDataset, device: torch.device) -> None:
        if not isinstance(dataset.transform, TrainTransform):
            raise TypeError(f"preloading needs a TrainTransform, got {type(dataset.transform).__name__}")
        self.transform: TrainTransform = dataset.transform
        self.device = device
        self.ids = dataset.ids
        images, labels = [], []
        for index in range(len(dataset)):
            image, raw_label = dataset.raw_sample(index)
            images.append(torch.from_numpy(image))
            labels.append(torch.from_numpy(dataset.lut[raw_label]))   # uint8 training labels
        self.sizes = [tuple(label.shape) for label in labels]
        if len(set(self.sizes)) == 1:   # one tensor, one copy
            self.images = torch.stack(images).to(device)
        else:
            self.images = [image.to(device) for image in images]
        self.labels = labels
        self.normalizer = ImageNormalizer(self.transform.normalization, device)

    @staticmethod
    def estimated_bytes(dataset: SegmentationDataset) -> int:
        """Decoded size of the split's images, estimated from the first one."""
        if len(dataset) == 0:
            return 0
        image, _ = dataset.raw_sample(0)
        return int(image.nbytes) * len(dataset)

    def batch(self, keys: list[tuple[int, int]]) -> dict:
        """``{"image": float [N, 3, h, w] on the device, "label": int64 [N, h, w] on the CPU,
        "id": [N] ids}`` for ``(index, augmentation seed)`` keys."""
        transform = self.transform
        draws = [transform.draw(*self.sizes[index], rng=torch.Generator().manual_seed(int(seed)))
                 for index, seed in keys]
        labels = torch.stack([transform.apply_label(self.labels[index].long(), draw)
                              for (index, _), draw in zip(keys, draws)])
        crop_h, crop_w = transform.crop_size
        if all(draw.keeps_size(*self.sizes[index]) and self.sizes[index][0] >= crop_h
               and self.sizes[index][1] >= crop_w for (index, _), draw in zip(keys, draws)):
            # no rescaling or padding: crop and flip the uint8 pixels, then normalise the batch
            # at once (each pixel is normalised on its own, so the order does not matter)
            crops = []
            for (index, _), draw in zip(keys, draws):
                crop = self.images[index][draw.top:draw.top + crop_h, draw.left:draw.left + crop_w]
                crops.append(crop.flip(1) if draw.flip else crop)
            image = self.normalizer(torch.stack(crops))
        else:
            image = torch.stack([transform.apply_image(self.normalizer(self.images[index]), draw)
                                 for (index, _), draw in zip(keys, draws)])
        return {"image": image, "label": labels, "id": [self.ids[index] for index, _ in keys]}


class PreloadedLoader:
    """Iterates a :class:`ResumableBatchSampler` into :class:`PreloadedTrainingSet` batches
    (what a DataLoader does with :class:`SeededAugmentation`)."""

    def __init__(self, data: PreloadedTrainingSet, sampler: ResumableBatchSampler) -> None:
        self.data = data
        self.sampler = sampler

    def __iter__(self) -> Iterator[dict]:
        for keys in self.sampler:
            yield self.data.batch(keys)


def training_batches(dataset: SegmentationDataset, batch_size: int, num_workers: int, seed: int,
                     rank: int = 0, world_size: int = 1, device: torch.device = torch.device("cpu"),
                     preload: bool | None = None) -> BatchStream:
    """The training batches of one process: preloaded on ``device`` (``preload`` True, or
    None and the split is at most :data:`PRELOAD_LIMIT_BYTES`), else a DataLoader with
    ``num_workers`` workers (pinned memory on a GPU)."""
    if preload is None:
        preload = PreloadedTrainingSet.estimated_bytes(dataset) <= PRELOAD_LIMIT_BYTES
    if preload:
        sampler = ResumableBatchSampler(len(dataset), batch_size, seed, rank, world_size)
        return BatchStream(PreloadedLoader(PreloadedTrainingSet(dataset, device), sampler), sampler)
    loader, sampler = training_loader(dataset, batch_size, num_workers, seed, rank, world_size,
                                      pin_memory=device.type == "cuda")
    return BatchStream(loader, sampler)
