"""Input checks shared by the evaluation modules: one clear ``ValueError`` per bad argument."""

from __future__ import annotations

import torch
from torch import Tensor


def check_xy(x: Tensor, y: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite ``(N, D)`` tensor and ``y`` has shape ``(N,)``.

    ``name`` prefixes the message (``"train"`` → ``train_x``, ``train_y``).

    Example:
        >>> check_xy(torch.zeros(3, 2), torch.zeros(2), "train")
        Traceback (most recent call last):
        ...
        ValueError: train_y must have shape (3,), got (2,)
    """
    if x.ndim != 2:
        raise ValueError(f"{name}_x must be 2-D (N, D), got shape {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{name}_y must have shape ({len(x)},), got {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}_x contains non-finite values")
