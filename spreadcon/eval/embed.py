"""Frozen embeddings: run an encoder in eval mode under ``no_grad`` over any image source.

:func:`embed` returns a float32 ``(N, D)`` CPU tensor, the input of every
metric in :mod:`spreadcon.eval`. A source may be a uint8 tensor, an
``(images, labels)`` tuple, a :class:`spreadcon.data.Split` (in memory or
streaming) or an iterable of batches; ``_iter_images`` reads them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["embed", "encoder_out_dim"]


def _default_normalize(x: Tensor) -> Tensor:
    return x.float() / 255.0


def _iter_images(
    source: Any,
    batch_size: int,
    label: str | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(uint8 images (b, C, H, W), labels (b,) or None)`` from many kinds of source.

    ``source`` may be a uint8 tensor, an ``(images, labels)`` tuple, a
    :class:`spreadcon.data.Split` (in memory or streaming), or any iterable of
    uint8 tensors, ``(images, labels)`` pairs or ``{"images": ..., label: ...}``
    dicts (such as :func:`spreadcon.data.batches`).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if isinstance(source, Tensor):
        source = (source, None)
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], Tensor):
        images, labels = source
        n = len(images)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for idx in order.split(int(batch_size)):
            yield images[idx.to(images.device)], None if labels is None else labels[idx.to(labels.device)]
        return
    if hasattr(source, "fine") and hasattr(source, "images"):  # a Split
        labels = getattr(source, label) if label is not None else None
        if source.images is not None:
            yield from _iter_images((source.images, labels), batch_size, None, shuffle, generator)
            return
        from spreadcon.data import batches

        for b in batches(source, batch_size, shuffle=shuffle, generator=generator):
            yield b["images"], (b[label] if label is not None else None)
        return
    if shuffle:
        raise ValueError("shuffle=True needs a tensor, a (images, labels) tuple or a Split as source")
    for item in source:
        if isinstance(item, dict):
            yield item["images"], (item[label] if label is not None else None)
        elif isinstance(item, (tuple, list)):
            yield item[0], item[1]
        else:
            yield item, None


def _prepare(encoder: nn.Module, device) -> tuple[torch.device, bool]:
    was_training = encoder.training
    encoder.eval()
    if device is None:
        p = next(encoder.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    return torch.device(device), was_training


@torch.no_grad()
def embed(
    encoder: nn.Module,
    split: Any,
    normalize_fn: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> Tensor:
    """Frozen embeddings of every image of a split, in order.

    The encoder runs in eval mode (its previous mode is restored afterwards)
    under ``torch.no_grad``.

    Args:
        encoder: maps float ``(b, C, H, W)`` to ``(b, D)``.
        split: a :class:`spreadcon.data.Split`, a uint8 ``(N, C, H, W)``
            tensor, or an iterable of uint8 batches / ``{"images": ...}`` dicts
            (e.g. ``spreadcon.data.batches(split, 512, shuffle=False)``).
        normalize_fn: uint8 ``(b, C, H, W)`` → float ``(b, C, H, W)``; usually
            ``TwoViewAugment.normalize``. Default ``x / 255``.
        batch_size: images per forward pass (ignored for iterables).
        device: where the encoder runs; default: the encoder's device.
        amp: run under bf16 autocast (CUDA only; ignored on CPU).

    Returns:
        float32 ``(N, D)`` tensor on the CPU.

    Example:
        >>> enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
        >>> embed(enc, torch.zeros(5, 3, 2, 2, dtype=torch.uint8)).shape
        torch.Size([5, 4])
    """
    normalize_fn = normalize_fn or _default_normalize
    dev, was_training = _prepare(encoder, device)
    out = []
    try:
        for x, _ in _iter_images(split, batch_size):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
                z = encoder(normalize_fn(x.to(dev, non_blocking=True)))
            out.append(z.float().cpu())
    finally:
        encoder.train(was_training)
    if not out:
        raise ValueError("split is empty: no images to embed")
    return torch.cat(out)


def encoder_out_dim(encoder: nn.Module, sample: Tensor) -> int:
    """``encoder.out_dim`` if it has one, else the width of ``sample`` embeddings."""
    return int(getattr(encoder, "out_dim", sample.shape[1]))


def _only_images(source: Any) -> Any:
    return source[0] if isinstance(source, tuple) else source


def _labels_of(source: Any, label: str) -> Tensor:
    if isinstance(source, tuple):
        return source[1]
    return getattr(source, label)
