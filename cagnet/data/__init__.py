"""Data: datasets in the original CaGNet layout, the embedded synthetic benchmark, transforms,
word embeddings and dataset checking.

Modules
-------
``datasets``     DatasetInfo, label mappings (LUTs), image lists, SegmentationDataset
``transforms``   training augmentation / evaluation transform, ``resize_labels``
``embeddings``   GloVe vectors, the original word-vector files (``load_word_vectors``)
``synthetic``    the small embedded benchmark (``build_synthetic_benchmark``)
``scenes``       drawing of its scenes: warped regions, objects, patterns
``pretraining``  scenes of other colours and patterns for pretraining the backbone
``check``        ``check_dataset``: every problem of a dataset folder
``embed``        ``embed_class_names``: ``word_vectors/glove.npy`` of a dataset's own class names
``blocks``       CaGNetv2's label blocks: cutting, hole filling, tiling, block banks, ``BlockSource``
"""
from cagnet.data.datasets import (
    EMBEDDING_KINDS,
    DatasetInfo,
    SegmentationDataset,
    class_pixel_counts,
    image_ids,
    load_dataset_info,
    load_pair,
    read_annotation,
    read_image,
    split_entries,
    split_folder,
)
from cagnet.data.embeddings import (
    cosine_similarity,
    glove_class_embeddings,
    glove_vectors,
    l2_normalize_rows,
    load_word_vectors,
    read_text_vectors,
    split_class_name,
)
from cagnet.data.transforms import (
    CAFFE_MEAN_RGB,
    IGNORE_INDEX,
    EvalTransform,
    TestTransform,
    TrainTransform,
    denormalize_image,
    normalize_image,
    resize_labels,
)

# The synthetic benchmark module is imported on first use (it may import this package's
# other modules itself).
_SYNTHETIC_NAMES = ("build_synthetic_benchmark", "SyntheticConfig", "default_data_root")


def __getattr__(name: str):
    if name in _SYNTHETIC_NAMES:
        from cagnet.data import synthetic

        return getattr(synthetic, name)
    if name == "check_dataset":
        from cagnet.data.check import check_dataset

        return check_dataset
    if name == "embed_class_names":
        from cagnet.data.embed import embed_class_names

        return embed_class_names
    raise AttributeError(f"module 'cagnet.data' has no attribute {name!r}")


__all__ = [
    "EMBEDDING_KINDS", "DatasetInfo", "SegmentationDataset", "class_pixel_counts", "image_ids", "load_dataset_info", "load_pair",
    "read_annotation", "read_image", "split_entries", "split_folder",
    "cosine_similarity", "glove_class_embeddings", "glove_vectors", "l2_normalize_rows", "load_word_vectors", "read_text_vectors",
    "split_class_name",
    "CAFFE_MEAN_RGB", "IGNORE_INDEX", "EvalTransform", "TestTransform", "TrainTransform",
    "denormalize_image", "normalize_image", "resize_labels",
    "check_dataset", "embed_class_names", *_SYNTHETIC_NAMES,
]
