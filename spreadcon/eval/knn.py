"""Cosine k-nearest-neighbour accuracy of fixed embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spreadcon.eval._checks import check_xy

__all__ = ["knn_accuracy"]


@torch.no_grad()
def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    k: int = 20,
    batch_size: int = 1024,
) -> float:
    """Cosine k-nearest-neighbour accuracy.

    Each test point takes the majority label of its ``k`` most cosine-similar
    training points; a tie goes to the tied class with the larger summed
    similarity (``score = count + Σ sim / (k + 1)``, which never overturns a
    strict majority because ``|Σ sim| ≤ k``).

    Args:
        train_x, test_x: float ``(N, D)``; train_y, test_y: int64 ``(N,)``.
        k: neighbours (capped at the number of training points).
        batch_size: test points per similarity block.

    Returns:
        Accuracy in [0, 1].

    Example:
        >>> x = torch.tensor([[1., 0], [0, 1], [1, .1], [.1, 1]]); y = torch.tensor([0, 1, 0, 1])
        >>> knn_accuracy(x, y, x, y, k=1)
        1.0
    """
    check_xy(train_x, train_y, "train")
    check_xy(test_x, test_y, "test")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    k = min(k, len(train_x))
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    tr = F.normalize(train_x.float(), dim=1)
    correct = 0
    for xs, ys in zip(test_x.split(batch_size), test_y.split(batch_size)):
        sim = F.normalize(xs.float(), dim=1) @ tr.T
        top, idx = sim.topk(k, dim=1)
        neigh = train_y[idx]
        score = torch.zeros(len(xs), n_classes)
        score.scatter_add_(1, neigh, torch.ones_like(top))
        score.scatter_add_(1, neigh, top / (k + 1))
        correct += (score.argmax(1) == ys).sum().item()
    return correct / len(test_x)
