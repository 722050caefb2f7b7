"""Speed benchmarks behind ``python -m spreadcon bench [--json]`` (CONTRACT §5).

One function per benchmark, each returning a plain dict; :func:`run_all`
assembles them and :func:`main` prints the result (and, with ``--out``, writes
it atomically to a JSON file). Every time is the median of ``repeats`` runs
after ``warmup`` runs. Where two things are compared (ours against a reference,
a training step against a matmul) they are timed round-robin, so that load from
other processes on a shared machine hits both alike. ``machine`` records the
1-minute load average at the start and at the end, so a reader can judge the
noise. Peak memory is measured with the torch profiler's allocation events
(CPU) or ``torch.cuda.max_memory_allocated``. Nothing here is asserted by
tests: the numbers are reported, not checked.

Sections:

* :func:`bench_losses`: forward + backward of ``SpreadLoss`` (reference quirks)
  against a per-anchor Python loop with the official code's shape, and our
  SupCon against pytorch-metric-learning's ``SupConLoss`` (optional
  dependency, imported lazily; ``None`` with a reason when missing). The loop
  is slow (about 2 ms per anchor), so at large ``B`` it is timed on the first
  ``loop_anchors`` anchors of each view pair and scaled by ``B / loop_anchors``
  (each anchor costs the same at a given ``B``); the output says so.
* :func:`bench_chunked`: the chunked loss at a large ``B * V`` (16k), time and
  peak memory, against the size of the unchunked ``(B V)^2`` logit matrix.
* :func:`bench_train_step`: one training step of the paper's ViT on CPU
  with ``L_spread`` and AdamW, in float32 and in bf16 autocast; FLOPs from
  :func:`spreadcon.models.vit.vit_train_step_flops`
  (``torch.utils.flop_counter``), achieved FLOP/s as a fraction of this
  machine's measured matmul FLOP/s in the same dtype, and images per second.
* :func:`bench_cpu_preset_step`: one step of the ``cpu`` preset's training path
  (:func:`spreadcon.train.loop.train_step`: augmentation, the small CNN,
  ``L_spread``, AdamW) in the precision ``amp="auto"`` picks here, as a fraction
  of the measured matmul FLOP/s of that precision.
* :func:`bench_augment`: :func:`benchmark_augment`
  (the paper's pipeline, batched on tensors, against per-image PIL torchvision).
* :func:`bench_allocator`: a ViT training step with glibc's default allocator and
  with :func:`spreadcon.util.malloc.keep_freed_memory` (which the training engine
  and :func:`run_all` apply), each in a fresh process: step time and minor
  page faults per step.
* :func:`bench_gpu`: with ``--device cuda``, epoch time of the ``paper``
  preset on CIFAR-10-shaped synthetic uint8 data resident on the GPU, the
  projected 600-epoch time and the fraction of the measured bf16 matmul
  FLOP/s reached. Without CUDA every figure is ``None`` with the reason.

Example:
    >>> r = bench_losses(sizes=(16,), repeats=1, warmup=0, memory=False)
    >>> r["sizes"]["16"]["spread_quirks_s"] > 0
    True
"""

from __future__ import annotations

import argparse
import json
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spreadcon.util.atomic import atomic_write
from spreadcon.losses.contrastive import spread_loss, supcon_loss
from spreadcon.util.malloc import keep_freed_memory
from spreadcon.util.timing import interleaved_times, median_time, torch_threads

LOSS_SIZES = (128, 512, 2048)  # B; V = 2 views, D = 128 features (the grid)
LOOP_ANCHORS = 512  # the Python loop runs on at most this many anchors per view pair; larger B is scaled
PAPER_EPOCHS = 600  # the paper's schedule, for the GPU projection


# --------------------------------------------------------------------------- measuring


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the OS does not report one)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine() -> dict:
    """The CPU model, core and torch thread counts, torch version, accelerator and load average."""
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
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m_start": load_average(),
    }


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

        with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
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


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block: the profiler's C++ side logs each start and
    stop there (and a CUDA probe error on machines without a GPU), which would bury the bench's output.
    Python exceptions are unaffected (they propagate, they are not printed here)."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to silence
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------- losses


def official_loop_spread(
    z: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float, anchors: int | None = None
) -> torch.Tensor:
    """The official loss's algorithmic shape: a Python loop over anchors, one row at a time.

    Written from CONTRACT §1 (``reference_quirks=True``), not copied: for each
    view pair ``w < v`` and each anchor ``i`` it builds the logit row with the
    norms at the candidate index, the clamped SupCon term over ``P(i)`` with
    one positive plus the negatives, and the cNCE term. ``anchors`` limits the
    loop to the first ``anchors`` anchors of each pair (for timing; the value
    is then the mean over those anchors only).
    """
    B, V, _ = z.shape
    n = B if anchors is None else min(B, int(anchors))
    pairs = []
    for v in range(V):
        for w in range(v):
            zv, zw = z[:, v], z[:, w]
            nv, nw = zv.norm(dim=1), zw.norm(dim=1)
            rows = []
            for i in range(n):
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
    *, sizes: tuple[int, ...] = LOSS_SIZES, dim: int = 128, views: int = 2, n_classes: int = 10,
    temperature: float = 0.5, alpha: float = 0.5, repeats: int = 7, warmup: int = 2,
    loop_anchors: int | None = LOOP_ANCHORS, loop_repeats: int = 3, device: str = "cpu", memory: bool = True,
) -> dict:  # fmt: skip
    """Forward + backward time (s) and peak memory (MiB) of the losses at each batch size.

    Cases per ``B``: ``spread_quirks`` (``SpreadLoss(alpha, temperature,
    reference_quirks=True)``), ``spread_paper`` (the equations), ``supcon``
    (ours, Khosla L_out), ``loop_quirks`` (:func:`official_loop_spread`) and
    ``pml_supcon`` (pytorch-metric-learning on the same ``(B * V, D)``
    embeddings). When ``B > loop_anchors`` the loop runs on ``loop_anchors``
    anchors and its time and memory are multiplied by ``B / loop_anchors``
    (``loop_quirks_scale`` in the row; 1 means measured in full).

    Returns:
        ``{"sizes": {str(B): {case_s, case_peak_mib, ...}}, "loss_speedup_vs_loop_b512",
        "loss_vs_pml_supcon_b512", settings...}``. The speed-up is loop time /
        ``spread_quirks`` time; the PML ratio is our SupCon time / PML time
        (below 1: we are faster).
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
        n_loop = B if loop_anchors is None else min(B, loop_anchors)
        cases: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "spread_quirks": lambda t: spread_loss(t, y, alpha, temperature, reference_quirks=True),
            "spread_paper": lambda t: spread_loss(t, y, alpha, temperature),
            "supcon": lambda t: supcon_loss(t, y, temperature),
            "loop_quirks": lambda t: official_loop_spread(t, y, alpha, temperature, anchors=n_loop),
        }
        if PMLSupCon is not None:
            pml = PMLSupCon(temperature=temperature)
            cases["pml_supcon"] = lambda t: pml(t.transpose(0, 1).reshape(-1, t.shape[-1]), flat_y)
        steps = {name: _fwd_bwd(fn, z) for name, fn in cases.items()}
        times = interleaved_times(steps, repeats=repeats, warmup=warmup, device=device,
                                  slow={"loop_quirks": min(loop_repeats, repeats)})  # fmt: skip
        scale = B / n_loop
        row: dict[str, float | None] = {f"{name}_s": t for name, t in times.items()}
        row["loop_quirks_s"] *= scale
        row["loop_quirks_anchors_timed"], row["loop_quirks_scale"] = n_loop, scale
        if memory:
            for name, step in steps.items():
                row[f"{name}_peak_mib"] = peak_memory_mib(step, device)
            if row["loop_quirks_peak_mib"] is not None:
                row["loop_quirks_peak_mib"] *= scale
        table[str(B)] = row
    b512 = table.get("512", {})
    out = {"sizes": table, "dim": dim, "views": views, "n_classes": n_classes, "temperature": temperature,
           "alpha": alpha, "repeats": repeats, "warmup": warmup, "loop_repeats": loop_repeats,
           "loop_anchors": loop_anchors, "threads": torch.get_num_threads(), "device": str(device)}  # fmt: skip
    out["loss_speedup_vs_loop_b512"] = b512["loop_quirks_s"] / b512["spread_quirks_s"] if b512 else None
    if not b512:
        out["loss_speedup_vs_loop_b512_reason"] = "B=512 not in sizes"
    if "pml_supcon_s" in b512:
        out["loss_vs_pml_supcon_b512"] = b512["supcon_s"] / b512["pml_supcon_s"]
    else:
        out["loss_vs_pml_supcon_b512"] = None
        out["loss_vs_pml_supcon_b512_reason"] = pml_reason or "B=512 not in sizes"
    return out


def bench_chunked(
    *, bv: int = 16384, views: int = 2, dim: int = 128, chunk_size: int = 1024, n_classes: int = 10,
    repeats: int = 2, warmup: int = 1, device: str = "cpu",
) -> dict:  # fmt: skip
    """Forward + backward of ``L_spread`` (the equations, alpha 0.5) at ``B * V = bv`` anchors, chunked.

    ``chunk_size`` anchors per block, each block recomputed in the backward
    pass, so the logits held at once are ``chunk_size x bv`` instead of
    ``bv x bv``. Returns the median time (s), the measured peak memory (MiB)
    and, for comparison, the size of one unchunked ``bv x bv`` float32 logit
    matrix (the unchunked loss holds several).
    """
    if bv % views:
        raise ValueError(f"bv={bv} must be divisible by views={views}")
    g = torch.Generator().manual_seed(1)
    z = torch.randn(bv // views, views, dim, generator=g).to(device)
    y = torch.randint(0, n_classes, (bv // views,), generator=g).to(device)
    step = _fwd_bwd(lambda t: spread_loss(t, y, 0.5, 0.5, chunk_size=chunk_size), z)
    seconds = median_time(step, repeats=repeats, warmup=warmup, device=device)
    return {
        "chunked_bv": bv, "chunked_views": views, "chunked_chunk_size": chunk_size,
        "chunked_s": seconds, "chunked_peak_mib": peak_memory_mib(step, device),
        "unchunked_logits_mib": bv * bv * 4 / 2**20, "chunked_repeats": repeats,
    }  # fmt: skip


# --------------------------------------------------------------------------- ViT training step


def matmul_flops_per_s(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype=torch.float32) -> float:
    """This machine's measured matmul throughput (FLOP/s): median over ``n x n`` products."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b, repeats=repeats, warmup=1, device=device)


def vit_train_step(batch: int, views: int = 2, *, precision: str = "fp32") -> Callable[[], None]:
    """One training step of the paper's ViT, as a closure: ``views`` x ``batch`` random 32x32 images
    (seeded) through the encoder in train mode, ``L_spread`` (alpha 0.5, tau 0.5), backward, AdamW.

    ``precision``: ``"fp32"``, or ``"bf16"`` for CPU bf16 autocast (the loss still sums in float32).
    """
    from spreadcon.models import build_encoder

    torch.manual_seed(0)
    enc = build_encoder("vit", image_shape=(3, 32, 32)).train()
    opt = torch.optim.AdamW(enc.parameters(), lr=3e-4, weight_decay=1e-2, fused=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * views, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    autocast = precision == "bf16"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            z = enc(x).view(views, batch, -1).transpose(0, 1)  # view-major batch -> (B, V, D)
        spread_loss(z.float(), y, 0.5, 0.5).backward()
        opt.step()

    return step


_STEP_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _with_torch_dropout(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with every dropout of the ViT on PyTorch's own operations (``F.dropout``, ``bernoulli_``):
    :func:`spreadcon.models.dropout.torch_dropout`, the reference for ``train_step_*dropout_speedup``."""
    from spreadcon.models.dropout import torch_dropout

    def ref() -> None:
        with torch_dropout():
            step()

    return ref


def bench_train_step(
    batch: int = 128, views: int = 2, repeats: int = 5, warmup: int = 1, matmul_n: int = 2048,
    threads: int | None = None, *, precision: str = "fp32",
) -> dict:  # fmt: skip
    """One full training step of the paper's ViT on CPU, against this machine's matmul throughput
    in the same precision (bf16 autocast against a bf16 matmul, fp32 against sgemm).

    The step: ``views`` x ``batch`` random 32x32 images through the ViT
    encoder (train mode), ``L_spread`` (alpha 0.5, tau 0.5), backward and a
    fused AdamW step. FLOPs are the encoder's forward + backward from
    :func:`spreadcon.models.vit.vit_train_step_flops` (matmuls, convolutions
    and attention, ``torch.utils.flop_counter``; the loss and optimiser are a
    rounding error and not counted). The step, the same step with PyTorch's
    own dropout (:func:`spreadcon.models.dropout.torch_dropout`: ``F.dropout``
    draws its mask with ``bernoulli_``) and a ``matmul_n``-square matmul of the
    same dtype are timed round-robin; the fraction is
    ``(flops / step_s) / (2 matmul_n^3 / matmul_s)``, and
    ``train_step_{P}dropout_speedup`` is the PyTorch-dropout step's time over
    the step's.

    Returns (``P`` = ``""`` for fp32, the CONTRACT §5 keys; ``"bf16_"`` for bf16):
        ``train_step_{P}flops_fraction_cpu``, ``train_step_{P}s``,
        ``train_step_{P}images_per_s``, ``matmul_{P}flops_per_s``,
        ``train_step_{P}achieved_flops_per_s``, ``train_step_{P}torch_dropout_s``,
        ``train_step_{P}torch_dropout_flops_fraction_cpu``,
        ``train_step_{P}dropout_speedup`` and the settings; or ``None``
        with ``..._reason`` if the model is unavailable.
    """
    p = "" if precision == "fp32" else f"{precision}_"
    key = f"train_step_{p}flops_fraction_cpu"
    try:
        from spreadcon.models.vit import vit_train_step_flops
    except Exception as e:  # pragma: no cover - a broken install
        return {key: None, f"{key}_reason": f"spreadcon.models ViT unavailable: {type(e).__name__}: {e}"}
    with torch_threads(threads) as used:
        step = vit_train_step(batch, views, precision=precision)
        n = matmul_n
        a, b = torch.randn(n, n, dtype=_STEP_DTYPE[precision]), torch.randn(n, n, dtype=_STEP_DTYPE[precision])
        times = interleaved_times({"step": step, "torch_dropout": _with_torch_dropout(step), "matmul": lambda: a @ b},
                                  repeats=repeats, warmup=warmup)  # fmt: skip
    flops = vit_train_step_flops(batch * views, (3, 32, 32))
    peak = 2 * n**3 / times["matmul"]
    achieved = flops / times["step"]
    out = {
        key: achieved / peak, f"train_step_{p}s": times["step"], f"train_step_{p}achieved_flops_per_s": achieved,
        f"matmul_{p}flops_per_s": peak, f"train_step_{p}images_per_s": batch / times["step"],
        f"train_step_{p}views_per_s": batch * views / times["step"],
        f"train_step_{p}torch_dropout_s": times["torch_dropout"],
        f"train_step_{p}torch_dropout_flops_fraction_cpu": flops / times["torch_dropout"] / peak,
        f"train_step_{p}dropout_speedup": times["torch_dropout"] / times["step"],
    }
    if not p:
        out.update({"train_step_flops": flops, "matmul_n": n, "train_step_batch": batch, "train_step_views": views,
                    "train_step_threads": used, "train_step_repeats": repeats})
    else:
        from spreadcon.train.loop import cpu_has_native_bf16

        out["cpu_native_bf16"] = cpu_has_native_bf16()
    return out  # fmt: skip


def cpu_preset_step(batch: int = 128, *, dataset: str = "cifar10",
                    amp: str = "auto") -> tuple[Callable[[], object], dict]:  # fmt: skip
    """One step of the ``cpu`` preset's training path, as a closure, and what it computes.

    The step is :func:`spreadcon.train.loop.train_step` itself, in the precision
    ``amp`` picks on this machine (``"auto"``, the preset's, or ``"off"`` / ``"bf16"``;
    :func:`spreadcon.train.loop.precision`):
    ``batch`` CIFAR-10-shaped random uint8 images (seeded) augmented into two
    views, the preset's encoder (the small CNN) with its coarse head,
    ``L_spread`` and the preset's fused AdamW. The dict holds the precision and
    the FLOPs of the model's forward + backward on those views
    (``torch.utils.flop_counter``: convolutions and matmuls).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.methods import Objective, build_model
    from spreadcon.presets import resolve
    from spreadcon.train.loop import make_optimizer, precision, train_step

    cfg, device = resolve("cpu", dataset, overrides={"amp": amp}), torch.device("cpu")
    ds = _synthetic_cifar10(n_train=batch, n_val=1)
    torch.manual_seed(0)
    model = build_model("spread", cfg, ds.image_shape, ds.n_coarse).train()
    objective = Objective("spread", cfg, num_classes=ds.n_coarse, check_values=False)
    optimizer = make_optimizer(model.parameters(), cfg, device)
    augment = TwoViewAugment.for_dataset(ds)
    split = ds.splits["train"]
    data = {"images": split.images, "coarse": split.coarse}
    prec = precision(cfg, device)
    generator = torch.Generator().manual_seed(0)
    views = augment(split.images, views=cfg.views, generator=generator)
    counter = FlopCounterMode(display=False)
    with counter:
        sum(t.float().sum() for t in model(views).values()).backward()
    model.zero_grad(set_to_none=True)

    def step() -> object:
        return train_step(model, objective, optimizer, augment, data, cfg=cfg, generator=generator,
                          use_amp=False if prec == "fp32" else prec)

    return step, {"precision": prec, "flops": int(counter.get_total_flops()), "views": cfg.views,
                  "encoder": cfg.encoder}


def bench_cpu_preset_step(batch: int = 128, repeats: int = 5, warmup: int = 2, matmul_n: int = 2048,
                          threads: int | None = None) -> dict:  # fmt: skip
    """The ``cpu`` preset's training step (:func:`cpu_preset_step`) against a matmul of its precision.

    Timed round-robin with a ``matmul_n``-square matmul in the dtype the step
    computes in (bf16 where ``amp="auto"`` picks bf16 autocast, else float32);
    the fraction is ``(flops / step_s) / (2 matmul_n^3 / matmul_s)``. The step
    also augments and computes the loss, which the FLOPs leave out, so this is
    what the users of the ``cpu`` preset wait for, measured against what the
    machine could do.

    Where that precision is not float32, the same step with ``amp="off"`` joins the
    round-robin: ``cpu_preset_step_fp32_s`` and ``cpu_preset_step_speedup_vs_fp32``
    (its time over the step's) are what the precision buys.

    Returns:
        ``cpu_preset_step_flops_fraction_cpu``, ``cpu_preset_step_s``,
        ``cpu_preset_step_images_per_s``, ``cpu_preset_matmul_flops_per_s``,
        ``cpu_preset_step_precision``, ``cpu_preset_step_flops``,
        ``cpu_preset_step_fp32_s`` and ``cpu_preset_step_speedup_vs_fp32`` (``None`` when
        the step is float32) and the settings.
    """
    with torch_threads(threads) as used:
        step, info = cpu_preset_step(batch)
        dtype = torch.bfloat16 if info["precision"] == "bf16" else torch.float32
        a, b = torch.randn(matmul_n, matmul_n, dtype=dtype), torch.randn(matmul_n, matmul_n, dtype=dtype)
        steps = {"step": step, "matmul": lambda: a @ b}
        if info["precision"] != "fp32":
            steps["fp32"] = cpu_preset_step(batch, amp="off")[0]
        times = interleaved_times(steps, repeats=repeats, warmup=warmup)
    peak = 2 * matmul_n**3 / times["matmul"]
    return {
        "cpu_preset_step_fp32_s": times.get("fp32"),
        "cpu_preset_step_speedup_vs_fp32": times["fp32"] / times["step"] if "fp32" in times else None,
        "cpu_preset_step_flops_fraction_cpu": info["flops"] / times["step"] / peak,
        "cpu_preset_step_s": times["step"], "cpu_preset_step_images_per_s": batch / times["step"],
        "cpu_preset_matmul_flops_per_s": peak, "cpu_preset_step_precision": info["precision"],
        "cpu_preset_step_flops": info["flops"], "cpu_preset_step_batch": batch,
        "cpu_preset_step_views": info["views"], "cpu_preset_step_encoder": info["encoder"],
        "cpu_preset_step_threads": used, "cpu_preset_step_repeats": repeats,
    }  # fmt: skip


# --------------------------------------------------------------------------- augmentation


def benchmark_augment(
    n: int = 512, repeats: int = 5, *, image_size: int = 32, views: int = 2, device="cpu", seed: int = 0, threads: int | None = 1
) -> dict:
    """Throughput of batched two-view augmentation vs per-image PIL torchvision.

    Both produce ``views`` normalised float views of ``n`` RGB images of
    ``image_size``²; the PIL side starts from ready PIL images (as a torchvision
    dataset would hand them over) and stacks its tensors. Each figure is the
    median of ``repeats`` timed runs after one warm-up run.

    ``threads`` (default 1) sets ``torch.set_num_threads`` for the run (restored
    afterwards): the PIL pipeline runs on one core, so one thread compares like
    with like, and on a shared, oversubscribed CPU OpenMP's spinning threads can
    make multi-threaded timings meaningless. ``None`` keeps the current setting.

    Returns:
        dict with ``augment_speedup_vs_pil`` (batched / PIL images per second),
        ``batched_images_per_s``, ``pil_images_per_s``, and the settings.
    """
    from PIL import Image

    from spreadcon.data.augment import TwoViewAugment, torchvision_pipeline

    if n < 1 or repeats < 1:
        raise ValueError(f"n={n!r} and repeats={repeats!r} must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    # smooth random images (upsampled noise) so colour ops see natural-ish content
    small = torch.randint(0, 256, (n, 3, image_size // 4 or 1, image_size // 4 or 1), generator=gen, dtype=torch.uint8)
    x = torch.nn.functional.interpolate(small.float(), size=(image_size, image_size), mode="bilinear")
    x = x.round().clamp(0, 255).to(torch.uint8)
    aug = TwoViewAugment((image_size, image_size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    pil_images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x]
    reference = torchvision_pipeline(aug)
    xd = x.to(device)

    def batched():
        aug(xd, views=views)

    def per_image():
        torch.stack([torch.stack([reference(im) for _ in range(views)]) for im in pil_images])

    with torch_threads(threads) as used:  # each a median of `repeats` runs after one warm-up; CUDA synced
        tb = median_time(batched, repeats=repeats, warmup=1, device=device)
        tp = median_time(per_image, repeats=repeats, warmup=1)
    return {
        "augment_speedup_vs_pil": tp / tb,
        "batched_images_per_s": n * views / tb,
        "pil_images_per_s": n * views / tp,
        "n": n,
        "views": views,
        "image_size": image_size,
        "repeats": repeats,
        "threads": used,
        "device": str(device),
    }


def bench_augment(n: int = 512, repeats: int = 5, device: str = "cpu", threads: int | None = 1) -> dict:
    """Batched two-view augmentation vs per-image PIL torchvision, via ``benchmark_augment``.

    The paper's pipeline at 32x32 (``TwoViewAugment`` against the torchvision
    pipeline with the same parameters). ``None`` with a reason if torchvision
    or PIL is missing.
    """
    key = "augment_speedup_vs_pil"
    try:
        r = benchmark_augment(n=n, repeats=repeats, image_size=32, views=2, device=device, threads=threads)
    except ImportError as e:
        return {key: None, f"{key}_reason": f"{type(e).__name__}: {e}"}
    return {key: r.pop(key), "augment": r}


# --------------------------------------------------------------------------- GPU


def _synthetic_cifar10(n_train: int = 50000, n_val: int = 5000, seed: int = 0):
    """A :class:`spreadcon.data.Dataset` shaped like CIFAR-10 (coarse = fine // 5), random uint8 images."""
    from spreadcon.data.datasets import Dataset, Split

    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        fine = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        return Split(fine=fine, coarse=fine // 5, images=images)

    return Dataset(
        name="cifar10-synthetic", task="transfer", image_shape=(3, 32, 32),
        fine_names=[f"f{i}" for i in range(10)], coarse_names=["c0", "c1"],
        mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), grayscale_aug=True,
        splits={"train": split(n_train), "val": split(n_val), "test": split(n_val)},
    )  # fmt: skip


def bench_gpu(device: str = "cuda", method: str = "spread", epochs: int = 2, n_train: int = 50000,
              compile: bool | None = None) -> dict:  # fmt: skip
    """Epoch time of the ``paper`` preset on CIFAR-10-shaped uint8 data resident on the GPU.

    Trains ``method`` for ``epochs`` epochs (the first includes
    ``torch.compile`` and warm-up; the last is the timed one) through
    :func:`spreadcon.train.loop.train`, projects ``PAPER_EPOCHS`` epochs from the
    timed one (training only, not the final probe), and divides the encoder's
    FLOP/s (:func:`vit_train_step_flops` per step) by the measured bf16 matmul
    FLOP/s of the device. ``compile`` overrides the preset's ``torch.compile``
    switch (``None``: the preset's, on), to measure what compiling buys.
    Without CUDA every figure is ``None`` with the reason.
    """
    keys = ("gpu_epoch_s", "gpu_projected_600_epochs_s", "gpu_bf16_flops_fraction")
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        reason = "no CUDA device in this session" if not torch.cuda.is_available() else f"device {device} is not CUDA"
        return {**{k: None for k in keys}, "gpu_reason": reason,
                "gpu_command": "python -m spreadcon bench --json --device cuda --out results/bench/gpu.json"}  # fmt: skip
    from spreadcon.train.loop import train
    from spreadcon.models.vit import vit_train_step_flops
    from spreadcon.presets import resolve

    cfg = resolve("paper", "cifar10", {"epochs": epochs} | ({} if compile is None else {"compile": bool(compile)}))
    ds = _synthetic_cifar10(n_train=n_train)
    stamps: list[float] = []

    def on_epoch_end(_row: dict) -> None:
        torch.cuda.synchronize(dev)
        stamps.append(time.perf_counter())

    torch.cuda.synchronize(dev)
    start = time.perf_counter()
    train(method, ds, cfg, seed=0, device=dev, progress=False, on_epoch_end=on_epoch_end)
    edges = [start] + stamps
    epoch_s = [b - a for a, b in zip(edges, edges[1:])]
    steps = n_train // cfg.batch_size
    flops_epoch = vit_train_step_flops(cfg.batch_size * cfg.views, (3, 32, 32)) * steps
    peak = matmul_flops_per_s(n=8192, repeats=10, device=device, dtype=torch.bfloat16)
    return {
        "gpu_epoch_s": epoch_s[-1], "gpu_epoch_times_s": epoch_s,
        "gpu_projected_600_epochs_s": epoch_s[-1] * PAPER_EPOCHS,
        "gpu_bf16_flops_fraction": flops_epoch / epoch_s[-1] / peak, "gpu_bf16_matmul_flops_per_s": peak,
        "gpu_encoder_flops_per_epoch": flops_epoch, "gpu_method": method, "gpu_train_images": n_train,
        "gpu_device": torch.cuda.get_device_name(dev), "gpu_preset": "paper", "gpu_compile": cfg.compile,
        "gpu_peak_memory_mib": torch.cuda.max_memory_allocated(dev) / 2**20,
    }  # fmt: skip


# --------------------------------------------------------------------------- allocator

_ALLOCATOR_CHILD = """
import json, resource, statistics, sys, time
mode, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "kept":
    from spreadcon.util.malloc import keep_freed_memory
    keep_freed_memory()
import torch
from spreadcon.bench import vit_train_step
torch.set_num_threads(1)
step = vit_train_step(batch)
for _ in range(2):  # the heap settles
    step()
faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"s": statistics.median(times), "minflt_per_step": faults / steps}))
"""


def bench_allocator(batch: int = 128, steps: int = 3, rounds: int = 1) -> dict:
    """A ViT training step (:func:`vit_train_step`, one thread) with glibc's default allocator and
    with :func:`spreadcon.util.malloc.keep_freed_memory`, each in a fresh process (the setting cannot be undone).

    Rounds alternate the two modes; each reports the median step time and the
    minor page faults per step (``ru_minflt``: pages the kernel had to hand
    out, zeroed). Returns medians over rounds and ``allocator_speedup`` =
    default time / kept time.
    """
    import subprocess

    key = "allocator_speedup"
    if not sys.platform.startswith("linux"):
        return {key: None, f"{key}_reason": f"glibc's mallopt only (platform {sys.platform})"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs: dict[str, list[dict]] = {"default": [], "kept": []}
    for _ in range(rounds):
        for mode in runs:
            proc = subprocess.run([sys.executable, "-c", _ALLOCATOR_CHILD, mode, str(batch), str(steps)],
                                  capture_output=True, text=True, env=env, check=False)  # fmt: skip
            if proc.returncode:
                return {key: None, f"{key}_reason": f"the {mode} child failed: {proc.stderr.strip()[-500:]}"}
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = {"allocator_batch": batch, "allocator_steps": steps, "allocator_rounds": rounds,
           "allocator_case": "ViT training step (L_spread, AdamW), batch x 2 views of 3x32x32, float32, 1 thread"}  # fmt: skip
    for mode, rs in runs.items():
        out[f"allocator_{mode}_s"] = statistics.median(r["s"] for r in rs)
        out[f"allocator_{mode}_minflt_per_step"] = statistics.median(r["minflt_per_step"] for r in rs)
    out[key] = out["allocator_default_s"] / out["allocator_kept_s"]
    return out


# --------------------------------------------------------------------------- CLI

#: Settings of the full run and of ``--quick`` (tests and the book; about a minute on 2 busy cores).
FULL = dict(sizes=LOSS_SIZES, repeats=11, warmup=5, loop_anchors=LOOP_ANCHORS, loop_repeats=3, chunk_bv=16384,
            chunk_size=1024, chunk_repeats=2, vit_batch=128, vit_repeats=5, matmul_n=2048, aug_n=512, aug_repeats=5,
            alloc_batch=128, alloc_steps=3, alloc_rounds=1, cpu_batch=128, cpu_repeats=7)
QUICK = dict(sizes=(128, 512), repeats=3, warmup=1, loop_anchors=128, loop_repeats=2, chunk_bv=2048,
             chunk_size=256, chunk_repeats=1, vit_batch=8, vit_repeats=2, matmul_n=1024, aug_n=64, aug_repeats=2,
             alloc_batch=16, alloc_steps=2, alloc_rounds=1, cpu_batch=16, cpu_repeats=2)


def run_all(quick: bool = False, device: str = "cpu", threads: int | None = None, **overrides) -> dict:
    """Every section, merged into one dict with the CONTRACT §5 keys at the top level.

    ``threads`` sets ``torch.set_num_threads`` for the loss, chunked and ViT
    sections (``None``: torch's default); augmentation runs on one thread, as
    its PIL reference does. The CLI defaults to one thread: every comparison
    here is a ratio measured at one thread count, and on a shared,
    oversubscribed CPU OpenMP's spinning threads make multi-threaded timings of
    small kernels meaningless (we saw 20x slowdowns at B=128 with 2 threads
    under a load average of 7 on 2 cores). ``overrides`` replace entries of :data:`FULL` /
    :data:`QUICK` (for example ``sizes=(64, 128, 256, 512)``).
    """
    s = {**(QUICK if quick else FULL), **overrides}
    unknown = set(overrides) - set(FULL)
    if unknown:
        raise ValueError(f"unknown bench settings {sorted(unknown)}; valid: {sorted(FULL)}")
    t0 = time.perf_counter()
    out: dict = {"machine": machine(), "device": device, "quick": quick, "settings": s}
    out["machine"]["malloc"] = keep_freed_memory()  # as training runs (spreadcon.train.loop.train)
    with torch_threads(threads) as used:
        out["machine"]["bench_threads"] = used
        losses = bench_losses(sizes=tuple(s["sizes"]), repeats=s["repeats"], warmup=s["warmup"],
                              loop_anchors=s["loop_anchors"], loop_repeats=s["loop_repeats"], device=device)  # fmt: skip
        out["loss_speedup_vs_loop_b512"] = losses.pop("loss_speedup_vs_loop_b512")
        out["loss_vs_pml_supcon_b512"] = losses.pop("loss_vs_pml_supcon_b512")
        out["losses"] = losses
        out["chunked"] = bench_chunked(bv=s["chunk_bv"], chunk_size=s["chunk_size"], repeats=s["chunk_repeats"],
                                       device=device)  # fmt: skip
    for precision in ("fp32", "bf16"):  # each against the matmul peak of its own dtype
        out.update(bench_train_step(batch=s["vit_batch"], repeats=s["vit_repeats"], matmul_n=s["matmul_n"],
                                    threads=threads, precision=precision))  # fmt: skip
    out.update(bench_cpu_preset_step(batch=s["cpu_batch"], repeats=s["cpu_repeats"], matmul_n=s["matmul_n"],
                                     threads=threads))  # fmt: skip
    out.update(bench_augment(n=s["aug_n"], repeats=s["aug_repeats"], device=device))
    out.update(bench_allocator(batch=s["alloc_batch"], steps=s["alloc_steps"], rounds=s["alloc_rounds"]))
    out["gpu"] = bench_gpu(device)
    out["machine"]["load_avg_1m_end"] = load_average()
    out["wall_time_s"] = time.perf_counter() - t0
    return out


def write_json_atomic(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` as JSON to ``path`` through a temp file in the same folder and ``os.replace``."""
    def dump(f) -> None:
        json.dump(obj, f, indent=2)
        f.write("\n")

    return atomic_write(path, dump, binary=False)


def _provenance() -> dict:
    """The git commit (``-dirty`` if the tree has changes) and whether ``spreadcon/`` itself is committed."""
    import subprocess

    from spreadcon.runs.records import git_commit

    root = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=root,
                           capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
        clean: bool | None = not r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        clean = None
    return {"git_commit": git_commit(), "package_committed": clean}


def main(argv: list[str] | None = None) -> int:
    """``python -m spreadcon bench [--json] [--quick] [--device DEV] [--threads N] [--out FILE]``."""
    parser = argparse.ArgumentParser(
        prog="python -m spreadcon bench",
        description="Speed benchmarks: the loss against a per-anchor loop and pytorch-metric-learning, a ViT "
                    "training step against this machine's matmul FLOP/s, and batched augmentation against PIL. "
                    "Each figure is a median of repeated runs after a warm-up.")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (tests, the book)")
    parser.add_argument("--device", default="cpu", help="torch device for the loss, augmentation and GPU sections")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the CPU sections (default 1; 0 = torch's default)")  # fmt: skip
    parser.add_argument("--out", default=None, help="also write the JSON to this file (atomically)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0; got {args.threads}")
    result = run_all(quick=args.quick, device=args.device, threads=args.threads or None)
    result.update(_provenance())
    result["command"] = "python -m spreadcon bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        write_json_atomic(result, args.out)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
