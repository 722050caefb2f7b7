"""Speed benchmarks behind ``python -m spreadcon bench [--json]`` (CONTRACT §5).

One function per benchmark, each returning a plain dict; :func:`run_all`
assembles them and :func:`main` prints the result. Every time is the median of
``repeats`` runs after ``warmup`` runs. Peak memory is measured with the torch
profiler's allocation events (CPU) or ``torch.cuda.max_memory_allocated``.
Nothing here is asserted by tests: the numbers are reported, not checked.

Sections:

* :func:`bench_losses`: forward + backward of ``SpreadLoss`` (reference quirks)
  against a per-anchor Python loop with the official code's shape, and our
  SupCon against pytorch-metric-learning's ``SupConLoss`` (optional
  dependency, imported lazily; ``None`` when missing).
* :func:`bench_train_step_flops` and :func:`bench_augment`: hooks for the ViT
  training-step and augmentation figures. They import ``spreadcon.models`` and
  ``spreadcon.data.augment`` lazily and record ``None`` with a reason when
  those are not available.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from spreadcon.losses import spread_loss, supcon_loss

LOSS_SIZES = (128, 512, 2048)  # B; V = 2 views, D = 128 features (the grid)


# --------------------------------------------------------------------------- measuring


def machine() -> dict:
    """The CPU model, torch thread count, torch version and accelerator, if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 2, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(
    steps: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2, device: str = "cpu",
    slow: dict[str, int] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Median time of each step, measured round-robin so that load changes on a shared
    machine hit every step alike. ``slow`` caps the repeats of named slow steps."""
    dev = torch.device(device)
    slow = slow or {}
    for name, step in steps.items():
        for _ in range(min(warmup, 1) if name in slow else warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats):
        for name, step in steps.items():
            if r >= slow.get(name, repeats):
                continue
            _sync(dev)
            t0 = time.perf_counter()
            step()
            _sync(dev)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_memory_mib(fn: Callable[[], object], device: str = "cpu") -> float | None:
    """Peak bytes allocated by torch during one ``fn()`` call, in MiB (``None`` if unmeasurable)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted(
            (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
        )
    except Exception:  # the profiler's private event API moved; report nothing rather than guess
        return None
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak / 2**20


# --------------------------------------------------------------------------- losses


def official_loop_spread(z: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """The official loss's algorithmic shape: a Python loop over anchors, one row at a time.

    Written from CONTRACT §1 (``reference_quirks=True``), not copied: for each
    view pair ``w < v`` and each anchor ``i`` it builds the logit row with the
    norms at the candidate index, the clamped SupCon term over ``P(i)`` with
    one positive plus the negatives, and the cNCE term.
    """
    B, V, _ = z.shape
    pairs = []
    for v in range(V):
        for w in range(v):
            zv, zw = z[:, v], z[:, w]
            nv, nw = zv.norm(dim=1), zw.norm(dim=1)
            rows = []
            for i in range(B):
                s = (zv[i] @ zw.T) / (temperature * nv * nw)
                pos = labels == labels[i]
                sp, neg_sum = s[pos], torch.exp(s[~pos]).sum()
                sc = (-sp.clamp(max=1.0) + torch.log(torch.exp(sp) + neg_sum)).mean()
                cn = -s[i] + torch.logsumexp(sp, 0)
                rows.append((1 - alpha) * sc + alpha * cn)
            pairs.append(torch.stack(rows).mean())
    return torch.stack(pairs).mean()


def _fwd_bwd(loss_fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        t = z.detach().requires_grad_(True)
        loss_fn(t).backward()

    return step


def bench_losses(
    sizes: tuple[int, ...] = LOSS_SIZES, dim: int = 128, views: int = 2, n_classes: int = 10,
    temperature: float = 0.5, alpha: float = 0.5, repeats: int = 7, warmup: int = 2,
    loop_max_b: int = 2048, device: str = "cpu", memory: bool = True,
) -> dict:  # fmt: skip
    """Forward + backward time (s) and peak memory (MiB) of the losses at each batch size.

    Returns ``{"sizes": {B: {...}}, "loss_speedup_vs_loop_b512": ..., "loss_vs_pml_supcon_b512": ...}``.
    The speed-up is loop time / ``SpreadLoss(reference_quirks=True)`` time; the
    PML ratio is our SupCon time / PML ``SupConLoss`` time on the same
    ``(B * V, D)`` embeddings (below 1: we are faster).
    """
    try:
        from pytorch_metric_learning.losses import SupConLoss as PMLSupCon
    except ImportError as e:
        PMLSupCon, pml_reason = None, f"pytorch-metric-learning not installed: {e}"
    else:
        pml_reason = None
    g = torch.Generator().manual_seed(0)
    table: dict[str, dict] = {}
    for B in sizes:
        z = torch.randn(B, views, dim, generator=g).to(device)
        y = torch.randint(0, n_classes, (B,), generator=g).to(device)
        flat_y = y.repeat(views)  # view-major flattening, as (B*V, D) below
        cases: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "spread_quirks": lambda t: spread_loss(t, y, alpha, temperature, reference_quirks=True),
            "spread_paper": lambda t: spread_loss(t, y, alpha, temperature),
            "supcon": lambda t: supcon_loss(t, y, temperature),
        }
        if B <= loop_max_b:
            cases["loop_quirks"] = lambda t: official_loop_spread(t, y, alpha, temperature)
        if PMLSupCon is not None:
            pml = PMLSupCon(temperature=temperature)
            cases["pml_supcon"] = lambda t: pml(t.transpose(0, 1).reshape(-1, t.shape[-1]), flat_y)
        row: dict[str, float | None] = {}
        steps = {name: _fwd_bwd(fn, z) for name, fn in cases.items()}
        for name, t in interleaved_times(steps, repeats=repeats, warmup=warmup, device=device,
                                         slow={"loop_quirks": 3}).items():  # fmt: skip
            row[f"{name}_s"] = t
        if memory:
            for name, step in steps.items():
                row[f"{name}_peak_mib"] = peak_memory_mib(step, device)
        table[str(B)] = row
    b512 = table.get("512", {})
    out = {"sizes": table, "dim": dim, "views": views, "n_classes": n_classes, "temperature": temperature,
           "alpha": alpha, "repeats": repeats}  # fmt: skip
    out["loss_speedup_vs_loop_b512"] = (
        b512["loop_quirks_s"] / b512["spread_quirks_s"] if "loop_quirks_s" in b512 else None
    )
    if "pml_supcon_s" in b512:
        out["loss_vs_pml_supcon_b512"] = b512["supcon_s"] / b512["pml_supcon_s"]
    else:
        out["loss_vs_pml_supcon_b512"] = None
        out["loss_vs_pml_supcon_b512_reason"] = pml_reason or "B=512 not in sizes"
    return out


# --------------------------------------------------------------------------- hooks for other sections


def matmul_flops_per_s(n: int = 1024, repeats: int = 5, device: str = "cpu") -> float:
    """This machine's measured float32 matmul throughput (FLOP/s) on ``n x n`` matrices."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n**3 / median_time(lambda: a @ b, repeats=repeats, device=device)


def bench_train_step_flops(batch: int = 128, views: int = 2, repeats: int = 3, device: str = "cpu") -> dict:
    """Hook: achieved FLOP/s of one ViT training step / measured matmul FLOP/s.

    Needs ``spreadcon.models.build_encoder("vit", ...)`` (ARCHITECTURE.md);
    records ``None`` with the reason when it is not available yet. The owner
    of the ViT section may replace this body.
    """
    key = "train_step_flops_fraction_cpu"
    try:
        from torch.utils.flop_counter import FlopCounterMode

        from spreadcon.models import build_encoder

        enc = build_encoder("vit", image_shape=(3, 32, 32)).to(device)
    except Exception as e:  # missing module, or an interface that is not there yet
        return {key: None, f"{key}_reason": f"spreadcon.models ViT unavailable: {type(e).__name__}: {e}"}
    opt = torch.optim.SGD(enc.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * views, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        z = enc(x).reshape(batch, views, -1)
        spread_loss(z, y, 0.5, 0.5).backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = median_time(step, repeats=repeats, warmup=1, device=device)
    peak = matmul_flops_per_s(device=device)
    return {key: (flops / seconds) / peak, "train_step_flops": flops, "train_step_s": seconds,
            "matmul_flops_per_s": peak}  # fmt: skip


def bench_augment(batch: int = 256, size: int = 32, repeats: int = 3, device: str = "cpu") -> dict:
    """Hook: batched two-view augmentation throughput / per-image PIL torchvision throughput.

    Needs ``spreadcon.data.augment.TwoViewAugment`` (ARCHITECTURE.md); records
    ``None`` with the reason when it is not available yet. The owner of the
    augmentation section may replace this body.
    """
    key = "augment_speedup_vs_pil"
    try:
        from spreadcon.data.augment import TwoViewAugment

        aug = TwoViewAugment(image_size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        import torchvision.transforms as T
        from PIL import Image
    except Exception as e:
        return {key: None, f"{key}_reason": f"spreadcon.data.augment unavailable: {type(e).__name__}: {e}"}
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    pil = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                     T.RandomGrayscale(0.2), T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)])  # fmt: skip
    images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x]
    xd = x.to(device)
    ours = median_time(lambda: aug(xd, views=2), repeats=repeats, device=device)
    ref = median_time(lambda: [pil(im) for im in images for _ in range(2)], repeats=repeats, warmup=1)
    return {key: ref / ours, "augment_batched_s": ours, "augment_pil_s": ref, "augment_batch": batch}


# --------------------------------------------------------------------------- CLI


def run_all(quick: bool = False, device: str = "cpu") -> dict:
    """Every section, merged into one dict with the CONTRACT §5 keys at the top level."""
    out: dict = {"machine": machine(), "device": device}
    sizes = (128, 512) if quick else LOSS_SIZES
    losses = bench_losses(sizes=sizes, repeats=3 if quick else 7, device=device)
    out["loss_speedup_vs_loop_b512"] = losses.pop("loss_speedup_vs_loop_b512")
    out["loss_vs_pml_supcon_b512"] = losses.pop("loss_vs_pml_supcon_b512")
    out["losses"] = losses
    for section in (bench_train_step_flops, bench_augment):
        out.update(section(device=device))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m spreadcon bench [--json] [--quick] [--device DEV]``."""
    parser = argparse.ArgumentParser(prog="python -m spreadcon bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    parser.add_argument("--quick", action="store_true", help="B in {128, 512} and fewer repeats")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)
    result = run_all(quick=args.quick, device=args.device)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
