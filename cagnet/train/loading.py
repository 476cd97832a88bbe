"""What a configuration loads: its dataset (the embedded benchmark built first when the
configuration asks for it), its training and scored splits, its class-embedding table and the
CaGNet model for the dataset's classes.

The training engine, the comparison methods, evaluation and the notebooks all read a
:class:`~cagnet.config.TrainConfig`'s data through these functions, so that they see the same
images, labels and class embeddings. The batch order over the training split is
:mod:`cagnet.train.batches`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from cagnet.config import TrainConfig
from cagnet.data.datasets import DatasetInfo, SegmentationDataset, load_dataset_info
from cagnet.data.transforms import TestTransform, TrainTransform
from cagnet.errors import DatasetError
from cagnet.models import CaGNet, build_cagnet


def dataset_root(config: TrainConfig) -> Path:
    """The dataset folder of a config (the embedded benchmark's default folder when unset)."""
    if config.data.root:
        return Path(config.data.root).expanduser()
    from cagnet.data.synthetic import default_data_root

    return default_data_root()


def builds_synthetic(config: TrainConfig, root: Path) -> bool:
    """Whether :func:`prepare_dataset` builds (or reuses) the embedded benchmark at ``root``:
    when ``data.synthetic`` is set and ``root`` is not another dataset. A folder with a
    ``labels_refined.txt`` and no ``benchmark.json`` is a dataset of its own and is read as it
    is, so ``--set data.root=DATASET`` is all a config with ``data.synthetic`` (``tutorial``)
    needs to train on it."""
    if config.data.synthetic is None:
        return False
    from cagnet.data.datasets import LABELS_FILE
    from cagnet.data.synthetic import BENCHMARK_FILE

    return not ((root / LABELS_FILE).is_file() and not (root / BENCHMARK_FILE).exists())


def prepare_dataset(config: TrainConfig, progress: bool = False) -> DatasetInfo:
    """Build the embedded benchmark when the config asks for it (:func:`builds_synthetic`), then
    read the dataset's classes.

    A missing dataset folder is a :class:`DatasetError` naming it.
    """
    root = dataset_root(config)
    if builds_synthetic(config, root):
        from cagnet.data.synthetic import SyntheticConfig, build_synthetic_benchmark

        build_synthetic_benchmark(root, SyntheticConfig.from_dict(dict(config.data.synthetic)), progress=progress)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (set data.root, e.g. --set data.root=PATH)")
    return load_dataset_info(root)


def _limited_ids(root: Path, split: str, limit: int | None) -> list[str] | None:
    if limit is None:
        return None
    from cagnet.data.datasets import split_entries

    return [image_id for _, image_id in split_entries(root, split)][:limit]


def training_dataset(config: TrainConfig, info: DatasetInfo, crop_size: int) -> SegmentationDataset:
    """The training split with the original's augmentation (random scale, crop, flip)."""
    data = config.data
    transform = TrainTransform(crop_size=crop_size, scale_range=data.scale_range,
                               flip_prob=0.5 if data.flip else 0.0, normalization=data.normalization)
    return SegmentationDataset(info.root, "train", transform=transform, info=info,
                               ids=_limited_ids(info.root, "train", data.train_limit))


def resolve_eval_split(split: str, info: DatasetInfo) -> str:
    """``data.eval_split`` for a dataset: ``auto`` becomes ``validation`` when the dataset has
    that split, else ``test``; other values are returned as they are."""
    from cagnet.data.datasets import has_split

    if split == "auto":
        return "validation" if has_split(info.root, "validation") else "test"
    return split


def evaluation_dataset(config: TrainConfig, info: DatasetInfo, split: str = "test", warp_label: bool = True,
                       limit: int | None = None) -> SegmentationDataset:
    """A scored split (``test``, ``validation``, or ``auto``: :func:`resolve_eval_split`), images
    warped to ``data.test_size`` (labels too when ``warp_label``), the first
    ``data.test_limit`` / ``limit`` images only when set.

    A dataset without the split is a :class:`DatasetError` naming the folder (the original
    datasets have no ``validation`` split).
    """
    from cagnet.data.datasets import has_split

    split = resolve_eval_split(split, info)
    if split not in ("test", "validation"):
        raise DatasetError(f"can only evaluate on the test or validation split, not {split!r}")
    if not has_split(info.root, split):
        raise DatasetError(f"{info.root}: no {split} split (no split/{split}_list.npy or annotations folder); "
                           f"use data.eval_split=test")
    data = config.data
    limits = [n for n in (data.test_limit, limit) if n is not None]
    transform = TestTransform(size=data.test_size, normalization=data.normalization, warp_label=warp_label)
    return SegmentationDataset(info.root, split, transform=transform, info=info,
                               ids=_limited_ids(info.root, split, min(limits) if limits else None))


def class_embedding_table(config: TrainConfig, info: DatasetInfo) -> torch.Tensor:
    """[S+U, E] class embeddings (seen first) of the dataset, as the config selects them."""
    return torch.from_numpy(info.class_embeddings(config.data.embedding, config.data.normalize_embeddings))


def build_model(config: TrainConfig, info: DatasetInfo) -> CaGNet:
    """The :class:`~cagnet.models.CaGNet` of ``config.model`` for the dataset's classes and
    class embeddings (:func:`class_embedding_table`), with freshly initialised weights."""
    return build_cagnet(config.model, class_embeddings=class_embedding_table(config, info),
                        num_seen=info.num_seen, num_unseen=info.num_unseen)
