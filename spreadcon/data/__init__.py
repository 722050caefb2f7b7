"""Datasets, coarse-label maps and batched two-view augmentation.

Example:
    >>> from spreadcon.data import load, batches
    >>> ds = load("cifar10")                       # doctest: +SKIP
    >>> b = next(batches(ds.splits["train"], 256))  # doctest: +SKIP
"""

from .datasets import (
    DATASETS,
    CorruptDataset,
    Dataset,
    DatasetNotFound,
    Split,
    batches,
    cache_dir,
    default_root,
    load,
)

__all__ = [
    "DATASETS",
    "CorruptDataset",
    "Dataset",
    "DatasetNotFound",
    "Split",
    "batches",
    "cache_dir",
    "default_root",
    "load",
]
