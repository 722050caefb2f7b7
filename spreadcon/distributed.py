"""Rank helpers and an all-gather that lets gradients flow back to every rank.

The contrastive losses in :mod:`spreadcon.losses.contrastive` want negatives from the
*global* batch. :func:`gather_with_grad` concatenates every rank's embeddings
along dim 0 so that each rank can score its own (local) anchors against all
candidates.

Gradient semantics (why the result is exact):

* Rank ``r`` computes ``L_r = mean over its local anchors`` of the per-anchor
  loss, with candidates from the global batch.
* The full-batch loss on one process is ``L = (1/W) * sum_r L_r`` when every
  rank holds the same number of anchors (``W`` = world size).
* The backward of the gather **sums** the incoming gradients over ranks
  (``all_reduce``) and hands each rank the slice for its own rows. So rank
  ``r``'s embeddings receive ``sum_r' dL_r'/dz_r = W * dL/dz_r``: the
  contributions of other ranks' anchors are not lost.
* ``DistributedDataParallel`` then *averages* parameter gradients over ranks,
  which divides by ``W`` again. The optimiser therefore sees exactly
  ``dL/dtheta`` of the single-process full batch, and each rank's reported
  loss ``L_r`` averages to ``L``.

``tests/test_distributed.py`` checks this with two gloo processes on CPU.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "rank", "world_size", "gather_with_grad", "gather_no_grad"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """all_gather for tensors whose dim 0 differs across ranks (pad, gather, trim)."""
    longest = max(sizes)
    if x.shape[0] < longest:
        pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return [p[:n] for p, n in zip(parts, sizes)]


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate ``x`` from all ranks; backward sums gradients over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # type: ignore[override]
        ctx.sizes = sizes
        ctx.rank = rank()
        return torch.cat(_gather_padded(x.detach(), sizes), dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``x`` along dim 0 so that gradients reach every rank.

    Args:
        x: ``(n_local, ...)`` tensor on this rank; ``n_local`` may differ
            between ranks.

    Returns:
        ``(x_global, offset)``: the ``(sum of n_local, ...)`` concatenation in
        rank order, and where this rank's rows start in it. Without an
        initialised process group this is ``(x, 0)``.

    The backward all-reduces (sums) the gradient of ``x_global`` and returns
    this rank's slice; see the module docstring for why that, combined with
    DDP's gradient averaging, reproduces the single-process full-batch
    gradient.

    Example:
        >>> g, off = gather_with_grad(torch.ones(3, 2))   # not distributed
        >>> g.shape, off
        (torch.Size([3, 2]), 0)
    """
    if world_size() == 1:
        return x, 0
    sizes = _gather_sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes), sum(sizes[: rank()])


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` along dim 0 without autograd (labels, indices)."""
    if world_size() == 1:
        return x
    return torch.cat(_gather_padded(x, _gather_sizes(x.shape[0], x.device)), dim=0)
