"""The dataset names and :func:`load`, the one entry point to every loader.

It sits above :mod:`spreadcon.data.datasets` (the benchmarks) and
:mod:`spreadcon.data.proxy` (the ``mnist-cifar`` proxy, built from two of
them), so neither of those imports the other back.

Example:
    >>> sorted(DATASETS)[:4]
    ['celeba', 'cifar-patch', 'cifar10', 'cifar100']
    >>> load("imagenet")
    Traceback (most recent call last):
    ...
    ValueError: name='imagenet' is not a dataset; valid: mnist, cifar10, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .datasets import (
    Dataset,
    default_root,
    unreadable,
    load_celeba,
    load_cifar10,
    load_cifar100,
    load_cifar100u,
    load_folder,
    load_isic,
    load_mnist,
    load_tinyimagenet,
    load_waterbirds,
)
from .errors import UnreadableDataset
from .proxy import load_cifar_patch, load_mnist_cifar

DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "cifar100u": load_cifar100u,
    "tinyimagenet": load_tinyimagenet,
    "waterbirds": load_waterbirds,
    "celeba": load_celeba,
    "isic": load_isic,
    "folder": load_folder,
    "mnist-cifar": load_mnist_cifar,
    "cifar-patch": load_cifar_patch,
}


def load(name: str, root: str | Path | None = None, **kwargs) -> Dataset:
    """Load benchmark ``name`` from ``root`` (default :func:`default_root`).

    Args:
        name: one of :data:`DATASETS`.
        root: the data root. It is only read, unless ``download=True``
            fetches a missing dataset into it.
        **kwargs: ``seed`` (0), ``val_fraction`` (0.1), ``image_size``
            (native for small images; 64 for waterbirds/celeba/isic),
            ``download`` (False), ``cache`` (the folder for decoded caches;
            default :func:`spreadcon.data.cache.cache_dir`: ``$SPREADCON_CACHE``,
            else ``$XDG_CACHE_HOME/spreadcon/decoded``, else
            ``~/.cache/spreadcon/decoded``), and per-dataset options
            (``mapping`` for ``folder``, ``test_fraction`` for ``isic``).

    Raises:
        ValueError: unknown ``name``.
        DatasetNotFound: the files are not there (the message says how to get them).
        CorruptDataset: the files are there but damaged or malformed.
        UnreadableDataset: the files are there but this user may not read them.
    """
    if name not in DATASETS:
        raise ValueError(f"name={name!r} is not a dataset; valid: {', '.join(DATASETS)}")
    root = Path(root).expanduser() if root is not None else default_root()
    if kwargs.get("image_size") is None:
        kwargs.pop("image_size", None)
    if kwargs.get("cache") is not None:
        kwargs["cache"] = Path(kwargs["cache"])
    try:
        return DATASETS[name](root, **kwargs)
    except PermissionError as e:  # a folder or file of the dataset that this user may not read
        if isinstance(e, UnreadableDataset):
            raise
        raise unreadable(name, e) from e
