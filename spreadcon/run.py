"""One experiment end to end: train on coarse labels, evaluate, write a record (CONTRACT section 4).

Command line::

    python -m spreadcon run DATASET METHOD --preset PRESET --seed N --data-root DIR \\
        --results DIR [--alpha A] [--set key=value ...] [--checkpoint-dir DIR] [--resume] [--device D]

The record's path is the last line printed on stdout. Under ``torchrun
--nproc_per_node N -m spreadcon run ...`` training is data-parallel (gloo on
CPU, NCCL on GPU); rank 0 evaluates and writes the record.

Python::

    >>> from spreadcon.run import run_experiment
    >>> path = run_experiment("mnist", "spread", preset="smoke", seed=0)   # doctest: +SKIP

What a run does:

1. :func:`spreadcon.presets.resolve` the config; ``--alpha`` and ``--set``
   override it.
2. :func:`spreadcon.data.load` the dataset and draw the preset's subsets of
   train / val / test. The subsets are drawn with a fixed generator
   (``DATA_SEED``), the same for every method and seed, so methods are
   compared on the same images; ``--seed`` varies initialisation, shuffling
   and augmentation.
3. :func:`spreadcon.engine.train` the method on coarse labels (``thanos``:
   the ``spread`` and ``autoencoder`` backbones, one after the other; their
   frozen embeddings are concatenated).
4. Evaluate with :mod:`spreadcon.evaluate`:

   * transfer datasets: ``fine_test_acc`` -- a linear probe on frozen
     embeddings trained with the *fine* train labels (selected on val);
     ``coarse_test_acc`` -- the same probe on coarse labels; plus kNN
     accuracy, spread and subclass-recovery AMI.
   * robustness datasets: ``worst_group_acc`` and ``avg_acc`` of a Group DRO
     head trained on subgroups inferred GEORGE-style (per-class clustering);
     for reference the same with the true groups (oracle) and plain ERM.

5. Write the record (:mod:`spreadcon.records`).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spreadcon import distributed as D
from spreadcon.methods import METHODS, get_method
from spreadcon.presets import PRESETS, Config, resolve

__all__ = ["run_experiment", "main", "ConcatEncoder", "subset_dataset", "DATA_SEED"]

DATA_SEED = 0  # fixes which images the presets' subsets contain, across methods and seeds


class ConcatEncoder(nn.Module):
    """Frozen encoders side by side: ``z = [e_1(x), e_2(x), ...]`` (``thanos``)."""

    def __init__(self, encoders: list[nn.Module]) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.out_dim = sum(e.out_dim for e in encoders)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([e(x) for e in self.encoders], dim=1)


def subset_dataset(ds, cfg: Config):
    """Shrink ``ds``'s splits to ``cfg.train_size`` / ``val_size`` / ``test_size`` (0 = keep all).

    The indices come from a generator seeded with :data:`DATA_SEED` and are
    sorted, so the subset does not depend on the run's seed.
    """
    import dataclasses

    sizes = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}
    splits = {}
    for i, (name, split) in enumerate(sorted(ds.splits.items())):
        n = sizes.get(name, 0)
        if n and n < len(split):
            g = torch.Generator().manual_seed(DATA_SEED + i)
            idx = torch.randperm(len(split), generator=g)[:n].sort().values
            split = split.subset(idx)
        splits[name] = split
    return dataclasses.replace(ds, splits=splits)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_experiment(dataset: str, method: str, preset: str = "cpu", seed: int = 0, data_root: str | Path | None = None,
                   results_dir: str | Path = "results", overrides: dict[str, Any] | None = None,
                   alpha: float | None = None, checkpoint_dir: str | Path | None = None, resume: bool = False,
                   device: str | None = None, progress: bool = True) -> Path | None:
    """Train and evaluate one (dataset, method, preset, seed); write its record.

    Args:
        dataset: a name in :data:`spreadcon.data.DATASETS`.
        method: a name in :data:`spreadcon.methods.METHODS`.
        preset: ``smoke``, ``cpu`` or ``paper``.
        seed: initialisation / shuffling / augmentation seed.
        data_root: dataset folder; None = ``$SPREADCON_DATA`` or the cache.
        results_dir: where records go.
        overrides: ``{config_key: value}`` on top of the preset.
        alpha: cNCE weight; overrides ``cfg.alpha`` and adds ``_alpha<A>`` to
            the record's file name.
        checkpoint_dir: folder for training checkpoints (None = none).
        resume: continue from the checkpoints in ``checkpoint_dir``.
        device: ``cpu``, ``cuda`` ...; None = CUDA if available.
        progress: show progress bars.

    Returns:
        The record's path (None on ranks other than 0 under DDP).

    Raises:
        ValueError: unknown dataset, method, preset or config key.
    """
    from spreadcon import data as sdata
    from spreadcon import records
    from spreadcon.malloc import keep_freed_memory

    keep_freed_memory()  # for the evaluation's large tensors too (spreadcon.malloc)
    if dataset not in sdata.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(sdata.DATASETS)}")
    m = get_method(method)
    overrides = {**dict(overrides or {}), **dict(m.config)}  # a method's fixed keys win (see Method.config)
    if alpha is not None:
        overrides["alpha"] = float(alpha)
    cfg = resolve(preset, dataset, overrides)
    started, t0 = _now(), time.perf_counter()
    dev = _init_device(device)

    ds = subset_dataset(sdata.load(dataset, root=data_root, image_size=cfg.image_size or None), cfg)
    encoders, train_info = _train(m, ds, cfg, seed, dev, checkpoint_dir, resume, progress)
    if D.rank() != 0:
        return None
    encoder = encoders[0] if len(encoders) == 1 else ConcatEncoder(encoders)
    metrics = _evaluate(ds, encoder, cfg, seed, dev)
    metrics.update(train_info)
    rec = records.make_record(
        dataset=dataset, method=m.name, preset=preset, seed=seed, task=ds.task, metrics=metrics,
        config=cfg.to_dict(), started_at=started, wall_time_s=time.perf_counter() - t0,
        device=records.device_name(dev),
        extra={"alpha_override": None if alpha is None else float(alpha), "world_size": D.world_size()},
    )
    return records.write_record(rec, results_dir)


def _init_device(device: str | None) -> torch.device:
    """Join the process group under torchrun; pick CUDA when available unless told otherwise."""
    from spreadcon.engine import init_distributed

    auto = init_distributed()
    return auto if device is None else torch.device(device)


def _train(m, ds, cfg, seed, dev, checkpoint_dir, resume, progress):
    """Train the method's backbone(s); return frozen encoders and training metrics."""
    from spreadcon.engine import train

    names = m.backbones or (m.name,)
    encoders, info = [], {}
    for name in names:
        ck = None if checkpoint_dir is None else Path(checkpoint_dir) / (name if m.backbones else "")
        result = train(name, ds, cfg, seed=seed, device=dev, checkpoint_dir=ck, resume=resume, progress=progress)
        enc = result.model.encoder.eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        encoders.append(enc)
        prefix = f"{name}_" if m.backbones else ""
        info[f"{prefix}coarse_val_acc"] = result.best_val_acc
        info[f"{prefix}best_epoch"] = float(result.best_epoch)
        info[f"{prefix}train_time_s"] = result.wall_time_s
        if not m.backbones:
            from spreadcon.engine import coarse_accuracy

            aug = _augment(ds)
            info["coarse_head_test_acc"] = coarse_accuracy(result.model, ds.splits["test"], aug, dev,
                                                           cfg.eval_batch_size)
    return encoders, info


def _augment(ds):
    from spreadcon.data.augment import TwoViewAugment

    return TwoViewAugment.for_dataset(ds)


def _evaluate(ds, encoder: nn.Module, cfg: Config, seed: int, dev: torch.device) -> dict[str, float]:
    """Transfer or robustness metrics of a frozen encoder (see the module docstring).

    The probe's L2 strength is chosen on val from ``probe_weight_decay x
    {0.1, 1, 10}`` (``lbfgs``); the ``adamw`` probe keeps its best val epoch.
    """
    from spreadcon import evaluate as E

    aug = _augment(ds)
    amp = dev.type == "cuda" and cfg.amp != "off"
    splits = {k: ds.splits[k] for k in ("train", "val", "test")}
    z = {k: E.embed(encoder, s, aug.normalize, cfg.eval_batch_size, dev, amp) for k, s in splits.items()}
    tr, va, te = splits["train"], splits["val"], splits["test"]
    metrics: dict[str, float] = {}
    if ds.task == "transfer":
        l2_grid = [cfg.probe_weight_decay * f for f in (0.1, 1.0, 10.0)]
        for label, n_classes in (("fine", ds.n_fine), ("coarse", ds.n_coarse)):
            if cfg.probe == "lbfgs":
                res = E.linear_probe(z["train"], getattr(tr, label), z["test"], getattr(te, label), "lbfgs",
                                     l2=l2_grid, max_iter=cfg.probe_epochs, val_x=z["val"],
                                     val_y=getattr(va, label), n_classes=n_classes)
            else:
                res = E.linear_probe_augmented(
                    encoder, tr, te, aug, aug.normalize, n_classes, label=label, epochs=cfg.probe_epochs,
                    lr=cfg.probe_lr, weight_decay=cfg.probe_weight_decay, batch_size=cfg.batch_size, val=va,
                    device=dev, generator=torch.Generator().manual_seed(seed), amp=amp)
            metrics[f"{label}_test_acc"] = res.accuracy
            if res.val_accuracy is not None:
                metrics[f"{label}_val_acc_probe"] = res.val_accuracy
        metrics["knn_fine_test_acc"] = E.knn_accuracy(z["train"], tr.fine, z["test"], te.fine, k=cfg.knn_k)
        spread = E.spread_metrics(z["test"], te.coarse)
        metrics["spread"] = float(spread["spread"])
        metrics["within_class_cosine"] = float(spread["within_cosine"])
        metrics["subclass_ami"] = float(E.subclass_ami(z["test"], te.coarse, te.fine, seed=seed)["ami"])
        return metrics
    for mode, prefix in (("inferred", ""), ("true", "oracle_"), ("none", "erm_")):
        res = E.worst_group(z["train"], tr.coarse, z["test"], te.coarse, te.group, train_groups=tr.group,
                            groups=mode, max_k=cfg.max_clusters, epochs=cfg.dro_epochs, seed=seed)
        metrics[f"{prefix}worst_group_acc"] = res["worst_group_acc"]
        metrics[f"{prefix}avg_acc"] = res["avg_acc"]
        if mode == "inferred":
            for key in ("group_ami", "group_ari", "n_groups"):
                if isinstance(res.get(key), (int, float)):
                    metrics[f"inferred_{key}"] = float(res[key])
    return metrics


# ----------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spreadcon run", description=__doc__.split("\n")[0])
    p.add_argument("dataset", help="dataset name")
    p.add_argument("method", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--preset", default="cpu", help=f"one of: {', '.join(PRESETS)} (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="dataset folder (default $SPREADCON_DATA)")
    p.add_argument("--results", default="results", help="records folder (default results)")
    p.add_argument("--alpha", type=float, default=None, help="cNCE weight in L_spread (overrides the preset)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; repeatable")
    p.add_argument("--checkpoint-dir", default=None, help="folder for training checkpoints")
    p.add_argument("--resume", action="store_true", help="resume from --checkpoint-dir")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code. Prints the record path last."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    try:
        for item in args.sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
            overrides[key.strip()] = value.strip()
        if args.resume and args.checkpoint_dir is None:
            raise ValueError("--resume needs --checkpoint-dir")
        path = run_experiment(args.dataset, args.method, preset=args.preset, seed=args.seed,
                              data_root=args.data_root, results_dir=args.results, overrides=overrides,
                              alpha=args.alpha, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                              device=args.device, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:  # bad names / settings; a missing dataset says how to get it
        print(f"spreadcon run: {exc}", file=sys.stderr)
        return 2
    finally:
        if D.is_distributed():
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    if path is not None:
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
