"""The online Group DRO update (Sagawa et al. 2020, Algorithm 1), one minibatch at a time.

One pure function of tensors, shared by both places that train with Group DRO:
the whole-network retraining (:func:`spreadcon.train.group_dro.retrain_group_dro`)
and the last layer on frozen embeddings
(:func:`spreadcon.eval.probe.train_linear_head`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["group_dro_step"]


def group_dro_step(losses: Tensor, groups: Tensor, q: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """One online Group DRO update (Sagawa et al. 2020, Algorithm 1) on a minibatch.

    With ``l_g`` the mean loss of the images of group ``g`` in the batch,

    ``q_g <- q_g exp(eta l_g)`` for the groups present (the others keep their
    weight), ``q <- q / sum_h q_h``, and the loss to minimise is
    ``L = sum_g q_g l_g`` with the *updated* ``q`` (absent groups have
    ``l_g = 0``). The update is computed as ``softmax(log q + eta l 1[present])``,
    which is the same number without overflow for large ``eta l``. Nothing
    is read back to the host, so the step does not stall a GPU.

    Args:
        losses: float ``(B,)`` per-image losses (gradients flow through them into ``L``).
        groups: int64 ``(B,)`` group ids in ``[0, G)``, on the same device.
        q: float ``(G,)`` current group weights on the simplex (not modified).
        eta: the exponentiated-gradient step size, ``> 0``.

    Returns:
        ``(L, q_new)``: the 0-dim loss and the new ``(G,)`` weights (detached).

    Example:
        >>> losses = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
        >>> loss, q = group_dro_step(losses, torch.tensor([0, 2, 2]), torch.full((3,), 1 / 3, dtype=torch.float64), 1.0)
        >>> [round(v, 4) for v in q.tolist()], round(loss.item(), 4)  # q ~ (e^1, 1, e^2.5): group 1 is absent
        ([0.171, 0.0629, 0.7662], 2.0863)
    """
    n_groups = q.shape[0]
    sums = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
    counts = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add(
        0, groups, torch.ones_like(losses))  # not bincount: its output size is read on the host
    group_loss = sums / counts.clamp_min(1)
    with torch.no_grad():
        step = torch.where(counts > 0, eta * group_loss.detach(), torch.zeros_like(group_loss))
        q_new = torch.softmax(torch.log(q.to(losses.dtype)) + step, dim=0)
    return (q_new * group_loss).sum(), q_new
