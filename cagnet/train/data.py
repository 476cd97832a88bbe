"""Compatibility names: the former ``cagnet.train.data`` was split into
:mod:`cagnet.train.loading` (a configuration's dataset, splits and class embeddings) and
:mod:`cagnet.train.batches` (the batch order). Only what code outside the package still imports
from here is kept; import from the new modules instead.
"""
from cagnet.train.loading import class_embedding_table, evaluation_dataset, prepare_dataset  # noqa: F401  (compatibility)

__all__ = ["class_embedding_table", "evaluation_dataset", "prepare_dataset"]
