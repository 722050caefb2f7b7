"""Data-parallel training equals single-process training on the concatenated batch (2 gloo processes).

One optimiser step of ``spread`` (CE + L_spread, contrastive candidates
gathered across ranks) on a global batch of 32: two processes with 16 images
each must give the same gradients, parameters and loss as one process with
all 32. The encoder is ``linear`` (no batch norm, no dropout), because batch
statistics are per rank by design and would differ.

Tolerances: float32; gradients ``atol 1e-6, rtol 1e-4`` (reduction order
differs); parameters after one AdamW step ``atol 1e-5``, 1% of the step size
``lr = 1e-3`` -- Adam's first update ``g / (|g| + eps)`` turns float32
rounding in a near-zero gradient into an O(1e-6) difference.

Why gradients are captured too: AdamW's first step divides the gradient by
its own magnitude, so a gradient off by a constant factor (a wrong DDP
average) would still give the same parameters. The gradients are recorded by
a test-only AdamW subclass patched in for the call.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from spreadcon.train import loop as engine
from spreadcon.presets import resolve

BATCH = 32


def _cfg():
    return resolve("smoke", None, {"encoder": "linear", "epochs": 1, "batch_size": BATCH, "lr": 1e-3,
                                   "select_on_val": False, "log_every": 1, "amp": "off"})  # fp32: an exactness test


class _RecordingAdamW(torch.optim.AdamW):
    grads: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        _RecordingAdamW.grads.append([p.grad.detach().clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def _one_step(out_file: str) -> None:
    from test_engine import synthetic_dataset

    torch.set_num_threads(1)
    _RecordingAdamW.grads = []
    original = engine.torch.optim.AdamW
    engine.torch.optim.AdamW = _RecordingAdamW
    try:
        ds = synthetic_dataset(n=BATCH)  # one batch = one step
        result = engine.train("spread", ds, _cfg(), seed=7, progress=False)
    finally:
        engine.torch.optim.AdamW = original
    torch.save({"params": {k: v.clone() for k, v in result.model.state_dict().items()},
                "grads": _RecordingAdamW.grads[0], "loss": result.history[0]["loss"]}, out_file)


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _one_step(os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_step_equals_single_process_full_batch(tmp_path):
    _one_step(str(tmp_path / "single.pt"))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    for rank in (0, 1):
        multi = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for g1, g2 in zip(single["grads"], multi["grads"], strict=True):
            torch.testing.assert_close(g2, g1, atol=1e-6, rtol=1e-4)
        for k, p in single["params"].items():
            torch.testing.assert_close(multi["params"][k], p, atol=1e-5, rtol=0)
    # each rank reports the loss of its own anchors; their mean is the full-batch loss
    losses = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["loss"] for r in (0, 1)]
    assert sum(losses) / 2 == pytest.approx(single["loss"], rel=1e-5)
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)  # the ranks really saw different halves


def test_batch_size_must_split_evenly_over_ranks(monkeypatch):
    from test_engine import synthetic_dataset

    monkeypatch.setattr(engine.D, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="divisible by the world size"):
        engine.train("ce", synthetic_dataset(), _cfg(), seed=0, progress=False)
