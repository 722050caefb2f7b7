"""``mnist-cifar``: a spurious-correlation **proxy** built from real MNIST and CIFAR-10.

It stands in, offline, for Waterbirds-style robustness benchmarks. It is a
proxy, not one of the paper's datasets, and every record and chapter should
call it that.

Construction (seeded by ``seed``):

* target ``y`` = digit >= 5 (the MNIST coarse label); fine label = the digit.
* each MNIST image (28×28, zero-padded to 32×32) is composited as a white
  stroke over a CIFAR-10 image: ``x = bg * (1 - m) + 255 * m`` with
  ``m = digit / 255``.
* the background's coarse class ``b`` (0 vehicle, 1 animal) equals ``y`` with
  probability ``p_agree``: 0.95 in train, 0.5 in val and test. The background
  image is drawn uniformly, with replacement, from the CIFAR-10 images of that
  class in the matching split (train/val hold-outs of both datasets, and the
  official test sets for test).
* group = 2 y + b, so groups 1 and 2 are the rare, background-disagreeing ones
  in train.

Example:
    >>> ds = load_mnist_cifar("/work/shared/data")   # doctest: +SKIP
    >>> ds.proxy, ds.n_groups, ds.image_shape         # doctest: +SKIP
    (True, 4, (3, 32, 32))
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import hierarchy
from .cache import cached
from .datasets import Dataset, Split, _dataset_stats, load_cifar10, load_mnist

P_AGREE = {"train": 0.95, "val": 0.5, "test": 0.5}
GROUP_NAMES = ["digit<5 on vehicle", "digit<5 on animal", "digit>=5 on vehicle", "digit>=5 on animal"]


def composite(digits: torch.Tensor, backgrounds: torch.Tensor) -> torch.Tensor:
    """Paint uint8 digits ``(N, 1, 28, 28)`` white over uint8 backgrounds ``(N, 3, 32, 32)`` → uint8 ``(N, 3, 32, 32)``."""
    if digits.shape[0] != backgrounds.shape[0]:
        raise ValueError(f"digits has {digits.shape[0]} images but backgrounds has {backgrounds.shape[0]}")
    pad = (backgrounds.shape[-1] - digits.shape[-1]) // 2
    d = torch.nn.functional.pad(digits, (pad, pad, pad, pad)).to(torch.int32)
    # bg * (1 - d/255) + 255 * d/255, rounded, in integer arithmetic
    out = (backgrounds.to(torch.int32) * (255 - d) + 127) // 255 + d
    return out.clamp_(0, 255).to(torch.uint8)


def make_split(mnist: Split, cifar: Split, p_agree: float, generator: torch.Generator) -> Split:
    """One proxy split from an MNIST split and a CIFAR-10 split (see the module docstring)."""
    if not 0.0 <= p_agree <= 1.0:
        raise ValueError(f"p_agree={p_agree!r} must be in [0, 1]")
    y = mnist.coarse
    agree = torch.rand(len(y), generator=generator) < p_agree
    b = torch.where(agree, y, 1 - y)
    bg_index = torch.empty(len(y), dtype=torch.long)
    for cls in (0, 1):
        pool = (cifar.coarse == cls).nonzero().flatten()
        want = (b == cls).nonzero().flatten()
        bg_index[want] = pool[torch.randint(len(pool), (len(want),), generator=generator)]
    images = torch.cat([composite(d, bg) for d, bg in zip(mnist.images.split(8192), cifar.images[bg_index].split(8192))])
    return Split(fine=mnist.fine.clone(), coarse=y.clone(), group=2 * y + b, images=images)


def load_mnist_cifar(root: str | Path, *, seed=0, val_fraction=0.1, image_size=None, download=False, cache=None) -> Dataset:
    """The ``mnist-cifar`` proxy from ``<root>/MNIST/raw`` and ``<root>/cifar10-jpeg.zip``."""
    if image_size not in (None, 32):
        raise ValueError(f"image_size={image_size!r}: mnist-cifar is 32x32")
    root = Path(root)
    kw = dict(seed=seed, val_fraction=val_fraction, download=download, cache=cache)
    def build() -> dict:
        mnist, cifar = load_mnist(root, **kw), load_cifar10(root, **kw)
        gen = torch.Generator().manual_seed(int(seed) + 7919)
        out = {}
        for s in ("train", "val", "test"):
            split = make_split(mnist.splits[s], cifar.splits[s], P_AGREE[s], gen)
            out.update({f"{s}_{k}": getattr(split, k) for k in ("images", "fine", "coarse", "group")})
        return out

    sources = sorted(p for p in (root / "MNIST" / "raw").glob("*-ubyte*")) + [
        p for p in (root / "cifar10-jpeg.zip", root / "cifar-10-batches-py" / "test_batch") if p.exists()
    ]
    a = cached(f"mnist-cifar-seed{int(seed)}-val{float(val_fraction)}", sources, build, cache, dataset="mnist-cifar")
    splits = {
        s: Split(fine=a[f"{s}_fine"], coarse=a[f"{s}_coarse"], group=a[f"{s}_group"], images=a[f"{s}_images"])
        for s in ("train", "val", "test")
    }
    mean, std = _dataset_stats(splits["train"].images)
    return Dataset(
        name="mnist-cifar", task="robustness", image_shape=(3, 32, 32),
        fine_names=list(hierarchy.MNIST_FINE), coarse_names=list(hierarchy.MNIST_COARSE), group_names=list(GROUP_NAMES),
        mean=mean, std=std, grayscale_aug=True, splits=splits, proxy=True,
        description="PROXY (not a paper benchmark): MNIST digit over CIFAR-10 background; "
        "target = digit>=5, background vehicle/animal agrees with it 95% in train, 50% in val/test",
    )
