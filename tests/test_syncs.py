"""HostSyncs sees each kind of host-syncing call, and nothing else."""

from __future__ import annotations

import pytest
import torch

from spreadcon.util.syncs import HostSyncs

X = torch.arange(6.0) - 2


@pytest.mark.parametrize("call, name", [
    (lambda: X.sum().item(), "Tensor.item"),
    (lambda: bool(X.sum() > 0), "Tensor.__bool__"),
    (lambda: X.tolist(), "Tensor.tolist"),
    (lambda: X[X > 0], "Tensor.__getitem__"),
    (lambda: torch.unique(X), "torch.unique"),
    (lambda: X.nonzero(), "Tensor.nonzero"),
    (lambda: torch.bincount(X.long().clamp(min=0)), "torch.bincount"),
    (lambda: torch.where(X > 0), "torch.where"),
    (lambda: torch.tensor([1.0, 2.0]), "torch.tensor"),
    (lambda: X.repeat_interleave(torch.tensor([1, 2, 1, 1, 1, 1])), "Tensor.repeat_interleave"),
])
def test_each_syncing_call_is_recorded_with_its_place(call, name):
    with HostSyncs() as syncs:
        call()
    assert [c.split(" at ")[0] for c in syncs.calls][-1] == name
    assert "test_syncs.py:" in syncs.calls[-1]  # the caller's line, not torch's


def test_device_side_work_is_not_recorded():
    with HostSyncs() as syncs:
        y = torch.where(X > 0, X, 0.0).exp().cumsum(0)
        X[0:2], X[torch.arange(2)]  # slices and integer indices need no sync
        X.repeat_interleave(2)
        torch.zeros(3).index_add_(0, torch.arange(3), torch.ones(3))
        (y @ y)
    assert syncs.calls == []
