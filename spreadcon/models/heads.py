"""Heads that sit on top of an encoder's embedding."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LinearHead", "ProjectionHead"]


class LinearHead(nn.Module):
    """A linear classifier ``logits = W z + b``.

    Args:
        in_dim: embedding size ``D``.
        n_classes: number of classes ``K``.

    Shapes:
        input ``(B, D)``; output ``(B, K)`` logits.

    Example:
        >>> import torch
        >>> LinearHead(8, 3)(torch.zeros(5, 8)).shape
        torch.Size([5, 3])
    """

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim!r}")
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes!r}")
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.fc = nn.Linear(in_dim, n_classes)

    def forward(self, z: Tensor) -> Tensor:
        return self.fc(z)


class ProjectionHead(nn.Module):
    """The SimCLR/SupCon MLP projection ``Linear → ReLU → Linear``.

    Args:
        in_dim: embedding size.
        hidden_dim: hidden width (defaults to ``in_dim``).
        out_dim: projection size (128).

    Example:
        >>> import torch
        >>> ProjectionHead(8, out_dim=4)(torch.zeros(2, 8)).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v!r}")
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
