"""Datasets, coarse-label maps, decoded caches and batched two-view augmentation.

Modules: :mod:`~spreadcon.data.datasets` (the loaders),
:mod:`~spreadcon.data.registry` (:func:`load` and the names),
:mod:`~spreadcon.data.proxy` (the ``mnist-cifar`` proxy),
:mod:`~spreadcon.data.hierarchy` (coarse-label maps),
:mod:`~spreadcon.data.cache` (where decoded caches go),
:mod:`~spreadcon.data.errors` (the exceptions and exit codes),
:mod:`~spreadcon.data.augment` and :mod:`~spreadcon.data.cli`.

Example:
    >>> from spreadcon.data import load, batches
    >>> ds = load("cifar10")                       # doctest: +SKIP
    >>> b = next(batches(ds.splits["train"], 256))  # doctest: +SKIP
"""

from .cache import CACHE_ENV, cache_dir, clear_caches, list_caches
from .datasets import Dataset, Split, batches, default_root
from .errors import (
    EXIT_BAD_DATA,
    EXIT_MISSING_DATA,
    CorruptDataset,
    DataError,
    DatasetNotFound,
    UnreadableDataset,
    exit_code,
)
from .registry import DATASETS, load

__all__ = [
    "CACHE_ENV",
    "DATASETS",
    "EXIT_BAD_DATA",
    "EXIT_MISSING_DATA",
    "CorruptDataset",
    "DataError",
    "Dataset",
    "DatasetNotFound",
    "Split",
    "UnreadableDataset",
    "batches",
    "cache_dir",
    "clear_caches",
    "default_root",
    "exit_code",
    "list_caches",
    "load",
]
