"""The prepared GPU check: what to measure in the few minutes a device is lent.

``.ci/gpu_check.sh`` calls :func:`main` (``python -m spreadcon.gpu_check OUT``).
On a CUDA device it runs, each section under its own time budget:

1. ``step``: the ``paper`` preset's training step (ViT, batch 128 x 2 views,
   L_spread, fused AdamW, bf16 autocast) with ``torch.compile`` off, in its
   default mode and in ``mode="reduce-overhead"`` (CUDA graphs): images per
   second and the fraction of the device's measured bf16 matmul peak. A small
   ViT at 32x32 is launch-bound on a large GPU, which is what CUDA graphs fix.
2. ``official``: a short real run of the ``official`` preset on CIFAR-10
   (an 8,000-image subset, 2 epochs): the whole pipeline, probe included.
3. ``projection``: one timed epoch per backbone (``supcon``, ``spread``,
   ``autoencoder``) on CIFAR-10-shaped data at the paper preset, projected to
   600 epochs of the full 50,000 images, per method (Thanos = spread +
   autoencoder backbones).

The device sees only the repository, so the data travels as a subset:
``python -m spreadcon.gpu_check --make-data ../shared/data .gpu-data`` (git
ignores ``.gpu-data/``), then ``run(command="bash .ci/gpu_check.sh",
carry=[".gpu-data"])``; the script reads ``SPREADCON_DATA=.gpu-data`` when it
exists. It writes ``OUT/gpu.json``, whose ``gpu`` section is what
:func:`spreadcon.runs.cost.measured_throughput` reads: copy it to
``results/bench/gpu.json`` and ``reproduce --paper --dry-run`` prices the
paper's grid at the measured throughput instead of the assumed one.

Without CUDA (a dry run on the CPU) the CUDA sections say ``skipped`` with
the reason, and ``official`` runs on the CPU at a tiny size, so the script's
plumbing is exercised before a device is lent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["step_rates", "official_run", "projections", "run_check", "main"]

PAPER_EPOCHS = 600
CIFAR10_TRAIN = 50_000
COMPILE_MODES = ("off", "default", "reduce-overhead")
# Backbones of each headline method: a method's 600-epoch cost is the sum of its backbones'.
METHOD_BACKBONES = {"supcon": ("supcon",), "spread": ("spread",), "autoencoder": ("autoencoder",),
                    "thanos": ("spread", "autoencoder")}


def _cuda(device: str) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def _skipped(device: str) -> dict:
    return {"skipped": f"device {device!r} is not an available CUDA device"}


def step_rates(device: str = "cuda", *, steps: int = 20, warmup: int = 5) -> dict:
    """Images/s and fraction of the bf16 matmul peak of the paper preset's step, per compile mode."""
    if not _cuda(device):
        return _skipped(device)
    from spreadcon.bench import matmul_flops_per_s
    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.methods import Objective, build_model
    from spreadcon.models.vit import vit_train_step_flops
    from spreadcon.presets import resolve
    from spreadcon.train.loop import make_optimizer, train_step

    dev = torch.device(device)
    cfg = resolve("paper", "cifar10")
    peak = matmul_flops_per_s(n=8192, repeats=10, device=device, dtype=torch.bfloat16)
    flops = vit_train_step_flops(cfg.batch_size * cfg.views, (3, 32, 32))
    g = torch.Generator(device=dev).manual_seed(0)
    batch = {"images": torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, device=dev),
             "coarse": torch.randint(0, 2, (cfg.batch_size,), device=dev)}
    augment = TwoViewAugment(image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)  # runs where the images are
    out: dict = {"bf16_matmul_flops_per_s": peak, "step_flops": flops, "batch": cfg.batch_size, "views": cfg.views}
    for mode in COMPILE_MODES:
        torch.manual_seed(0)
        model = build_model("spread", cfg, (3, 32, 32), 2).to(dev)
        run_model = model if mode == "off" else torch.compile(model, mode=None if mode == "default" else mode)
        objective = Objective("spread", cfg, num_classes=2, check_values=False).to(dev)
        opt = make_optimizer(model.parameters(), cfg, dev)

        def one() -> None:
            train_step(run_model, objective, opt, augment, batch, cfg=cfg, generator=g, use_amp="bf16")

        try:
            t0 = time.perf_counter()
            for _ in range(warmup):
                one()
            torch.cuda.synchronize(dev)
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(steps):
                one()
            torch.cuda.synchronize(dev)
            step_s = (time.perf_counter() - t0) / steps
        except Exception as e:  # a mode that fails on this device is a finding, not a crash
            out[mode] = {"error": f"{type(e).__name__}: {e}"[:300]}
            continue
        out[mode] = {"step_s": step_s, "images_per_s": cfg.batch_size / step_s, "warmup_s": warm_s,
                     "bf16_peak_fraction": flops / step_s / peak}
    return out


def official_run(device: str, out_dir: Path, *, data_root: str | None = None) -> dict:
    """A short real run of the ``official`` preset on CIFAR-10 (tiny on a CPU): its record's headline."""
    from spreadcon.runs.experiment import run_experiment

    cuda = _cuda(device)
    size = dict(train_size=8_000, val_size=1_000, test_size=2_000, epochs=2, probe_epochs=5) if cuda else \
        dict(train_size=48, val_size=32, test_size=48, epochs=1, batch_size=16, probe_epochs=1,
             eval_batch_size=48, knn_k=5, compile=False)
    t0 = time.perf_counter()
    try:
        path = run_experiment("cifar10", "spread-quirks", preset="official", seed=0, data_root=data_root,
                              results_dir=out_dir / "results", checkpoint_dir=out_dir / "checkpoints",
                              device=device, progress=False, overrides=size)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:300], "wall_s": time.perf_counter() - t0}
    rec = json.loads(Path(path).read_text())
    return {"record": str(path), "wall_s": time.perf_counter() - t0, "sizes": size, "metrics": rec["metrics"],
            "precision": rec["provenance"].get("precision"), "device": rec["provenance"].get("device")}


def projections(device: str = "cuda", *, n_train: int = 10_000) -> dict:
    """One timed epoch per backbone (after a warm-up epoch), projected to 600 epochs of 50,000 images."""
    if not _cuda(device):
        return _skipped(device)
    from spreadcon.bench import bench_gpu

    per_backbone: dict = {}
    for backbone in ("spread", "supcon", "autoencoder"):
        r = bench_gpu(device, method=backbone, epochs=2, n_train=n_train)
        per_backbone[backbone] = r
    scale = CIFAR10_TRAIN / n_train * PAPER_EPOCHS
    methods = {m: sum(per_backbone[b]["gpu_epoch_s"] for b in bbs) * scale for m, bbs in METHOD_BACKBONES.items()}
    full = per_backbone["spread"]
    gpu = {**full, "gpu_train_images": n_train}  # what spreadcon.runs.cost reads (FLOPs and seconds of one epoch)
    return {"per_backbone": per_backbone, "projected_600_epochs_s": methods, "gpu": gpu}


def make_data(src_root: str | Path, dest: str | Path, *, train_per_class: int = 1000,
              test_per_class: int = 200) -> Path:
    """A CIFAR-10 subset in the offline copy's own format, small enough to travel to a lent device.

    Copies ``train/<class>/NNNN.jpg`` for ``NNNN < train_per_class`` and
    ``test/<class>/NNNN.jpg`` for ``NNNN < test_per_class`` from
    ``src_root/cifar10-jpeg.zip`` into ``dest/cifar10-jpeg.zip`` (about 11 MB
    at the defaults): the same loader reads it, with fewer images.
    """
    import zipfile

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    limit = {"train": train_per_class, "test": test_per_class}
    with zipfile.ZipFile(Path(src_root) / "cifar10-jpeg.zip") as src, \
            zipfile.ZipFile(dest / "cifar10-jpeg.zip", "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            parts = info.filename.rstrip("/").split("/")
            keep = info.is_dir() or (len(parts) == 3 and int(parts[2].split(".")[0]) < limit[parts[0]])
            if keep:
                out.writestr(info, b"" if info.is_dir() else src.read(info))
    return dest / "cifar10-jpeg.zip"


def _timed(name: str, fn: Callable[[], dict], log: Callable[[str], None]) -> dict:
    t0 = time.perf_counter()
    result = fn()
    result["section_s"] = round(time.perf_counter() - t0, 1)
    log(f"== {name}: {json.dumps(result, default=str)[:2000]}")
    return result


def run_check(out_dir: str | Path, *, device: str | None = None, data_root: str | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Every section; writes ``out_dir/gpu.json`` and returns what it wrote."""
    from spreadcon.bench import machine

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {"machine": machine(), "device": device,
                    "device_name": torch.cuda.get_device_name(0) if _cuda(device) else "cpu (dry run)"}
    report["step"] = _timed("step", lambda: step_rates(device), log)
    report["official"] = _timed("official", lambda: official_run(device, out_dir, data_root=data_root), log)
    proj = _timed("projection", lambda: projections(device), log)
    report["projection"] = {k: v for k, v in proj.items() if k != "gpu"}
    if "gpu" in proj:
        report["gpu"] = proj["gpu"]
    (out_dir / "gpu.json").write_text(json.dumps(report, indent=1, default=str, allow_nan=False) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 3 and argv[0] == "--make-data":
        print(make_data(argv[1], argv[2]))
        return 0
    if len(argv) != 1:
        print("usage: python -m spreadcon.gpu_check OUT_DIR | --make-data SRC_ROOT DEST", file=sys.stderr)
        return 2
    run_check(argv[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
