"""Two gloo processes on CPU give the single-process full-batch loss and gradients.

Each rank holds half of the batch. The reported per-rank losses must average
to the full-batch loss, each rank's embedding gradient must be ``world_size``
times the full-batch gradient of its rows (the gather sums gradients over
ranks), and after DDP's gradient averaging the parameter gradients of a small
encoder must equal the full-batch ones.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spreadcon import distributed as sd
from spreadcon.losses.contrastive import simclr_loss, spread_loss

WORLD = 2
B_LOCAL, V, D_IN, D = 6, 2, 5, 4

LOSSES = {
    "paper": lambda z, y, **kw: spread_loss(z, y, 0.5, 0.3, **kw),
    "quirks": lambda z, y, **kw: spread_loss(z, y, 0.5, 0.3, reference_quirks=True, **kw),
    "supcon_chunked": lambda z, y, **kw: spread_loss(z, y, 0.0, 0.3, chunk_size=5, **kw),
    "simclr": lambda z, y, **kw: simclr_loss(z, 0.3, **kw),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_loss(rank: int, name: str) -> None:
    torch.manual_seed(0)  # identical full batch and encoder on every rank
    x = torch.randn(WORLD * B_LOCAL, V, D_IN, dtype=torch.float64)
    y = torch.randint(0, 3, (WORLD * B_LOCAL,))
    enc = torch.nn.Linear(D_IN, D).double()
    fn = LOSSES[name]

    # single process, full batch
    z_full = enc(x).detach().requires_grad_(True)
    full = fn(z_full, y, gather=False)
    full.backward()
    enc.zero_grad()
    full_param = torch.autograd.grad(fn(enc(x), y, gather=False), list(enc.parameters()))

    # distributed: this rank's half, candidates gathered from both ranks
    assert sd.is_distributed() and sd.world_size() == WORLD and sd.rank() == rank
    rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    z_loc = enc(x[rows]).detach().requires_grad_(True)
    loss = fn(z_loc, y[rows])
    loss.backward()
    losses = [torch.zeros((), dtype=torch.float64) for _ in range(WORLD)]
    dist.all_gather(losses, loss.detach())
    torch.testing.assert_close(torch.stack(losses).mean(), full.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z_loc.grad, WORLD * z_full.grad[rows], rtol=1e-10, atol=1e-12)

    # DDP averages parameter gradients: the optimiser sees the full-batch gradient
    ddp = torch.nn.parallel.DistributedDataParallel(enc)
    fn(ddp(x[rows]), y[rows]).backward()
    for p, g in zip(ddp.module.parameters(), full_param):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def _check_helpers(rank: int) -> None:
    """The plain gather: rank order, offsets, unequal sizes, summed gradients."""
    part = torch.full((rank + 1, 2), float(rank), requires_grad=True)
    g, off = sd.gather_with_grad(part)
    assert off == (0 if rank == 0 else 1) and g.shape == (3, 2)
    assert g[:1].eq(0).all() and g[1:].eq(1).all()
    (g * torch.arange(1.0, 4.0)[:, None]).sum().backward()
    want = torch.tensor([[1.0]]) if rank == 0 else torch.tensor([[2.0], [3.0]])
    torch.testing.assert_close(part.grad, WORLD * want.expand(rank + 1, 2))


def _worker(rank: int, port: int) -> None:
    # one process group for every case: spawning is the slow part on a shared CPU
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for name in LOSSES:
            _check_loss(rank, name)
        _check_helpers(rank)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_gloo_ranks_equal_single_process_full_batch():
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)


def test_helpers_without_process_group():
    assert not sd.is_distributed() and sd.rank() == 0 and sd.world_size() == 1
    x = torch.randn(3, 2)
    g, off = sd.gather_with_grad(x)
    assert g is x and off == 0
    assert sd.gather_no_grad(x) is x
