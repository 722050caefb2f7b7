"""One experiment end to end: train on coarse labels, evaluate, write a record.

:func:`run_experiment` is what ``python -m spreadcon run`` (:mod:`spreadcon.runs.cli`)
and the papermill template call. What a run does:

1. check every setting (names, seed, config keys, device, the results and
   checkpoint folders) before any data loads: :func:`check_settings`;
2. :func:`spreadcon.data.load` the dataset and draw the preset's subsets of
   train / val / test. The subsets are drawn with a fixed generator
   (``DATA_SEED``), the same for every method and seed, so methods are
   compared on the same images; ``seed`` varies initialisation, shuffling
   and augmentation;
3. :func:`spreadcon.train.loop.train` each backbone on coarse labels (``thanos``:
   the ``spread`` and ``autoencoder`` backbones; the pair controls: one method
   at two seeds; ``random-init``: nothing), checkpointing into its folder.
   The trained weights are on disk before evaluation starts: a run without a
   checkpoint folder checkpoints into a private temporary one, removed once
   the record is written and kept (and named) if anything fails after
   training, so ``--eval-only`` can evaluate it again without retraining;
4. evaluate with :mod:`spreadcon.eval`:

   * transfer datasets: ``fine_test_acc`` -- a linear probe on frozen
     embeddings trained with the *fine* train labels (selected on val);
     ``coarse_test_acc`` -- the same probe on coarse labels; plus kNN
     accuracy, spread and subclass-recovery AMI.
   * robustness datasets: GEORGE's two steps (:func:`_robustness`). Subgroups
     are inferred per class (UMAP + Gaussian mixtures) and scored against the
     true groups (AMI, ARI, ``minority_recall``) and the fine labels; then
     Group DRO on them, as a last layer on the frozen embeddings
     (``worst_group_acc``, ``avg_acc``, ``per_group_acc``) and as the whole
     network retrained (``retrain_worst_group_acc``); for reference the last
     layer with the true groups (``oracle_*``) and plain ERM (``erm_*``), the
     network's own head (``head_worst_group_acc``), and for ``ce`` the whole
     network retrained on the true groups (``oracle_retrain_*``).

5. write the record (:mod:`spreadcon.runs.records`), filed under the preset name that
   says how its config differs from the preset's, if it does (:mod:`spreadcon.runs.names`).

Example:
    >>> from spreadcon.runs.experiment import run_experiment
    >>> path = run_experiment("mnist", "spread", preset="smoke", seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spreadcon import distributed as D
from spreadcon.methods import get_method
from spreadcon.presets import Config
from spreadcon.runs.checks import SettingError, check_settings
from spreadcon.runs.names import resolve_run, value_text

__all__ = ["run_experiment", "ConcatEncoder", "subset_dataset", "DATA_SEED", "TrainingSaved"]

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


class TrainingSaved(RuntimeError):
    """Evaluation or the record write failed after training finished; the weights are on disk.

    The message says where and gives the command that reruns only the evaluation.
    """


def _say(progress: bool):
    """A one-line status printer on stderr (rank 0, when progress is on), or a no-op."""
    if not progress or D.rank() != 0:
        return lambda msg: None
    return lambda msg: print(f"spreadcon: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Request:
    """One call of :func:`run_experiment`, as given: what the eval-only command is rebuilt from."""

    dataset: str
    method: str
    preset: str
    seed: int
    data_root: str | Path | None
    results_dir: str | Path
    overrides: dict[str, Any]
    alpha: float | None
    device: str | None
    eval_epochs: tuple[int, ...]
    cache: str | Path | None

    def eval_only_command(self, checkpoint_dir: str | Path) -> str:
        """The command line that evaluates the training in ``checkpoint_dir`` as this call would have."""
        args = [self.dataset, self.method, "--preset", self.preset, "--seed", str(self.seed)]
        args += [] if self.alpha is None else ["--alpha", repr(float(self.alpha))]
        for key, value in self.overrides.items():
            args += ["--set", f"{key}={value_text(value)}"]
        for flag, value in (("--results", self.results_dir), ("--data-root", self.data_root),
                            ("--cache", self.cache)):
            args += [] if value is None else [flag, os.path.abspath(value)]
        args += ["--eval-epochs", ",".join(map(str, self.eval_epochs))] if self.eval_epochs else []
        args += [] if self.device is None else ["--device", self.device]
        args += ["--checkpoint-dir", os.path.abspath(checkpoint_dir), "--eval-only"]
        return "python -m spreadcon run " + " ".join(shlex.quote(str(a)) for a in args)


@dataclass(frozen=True)
class _Plan:
    """What a checked request resolves to: the method, the config, and the record's preset name."""

    method: Any  # spreadcon.methods.Method
    cfg: Config
    record_preset: str
    eval_epochs: tuple[int, ...]


def _plan(req: _Request, *, checkpoint_dir, resume: bool, fresh: bool, eval_only: bool) -> _Plan:
    """Check every setting of ``req`` (:func:`check_settings`) and resolve it; nothing loads.

    Raises:
        SettingError: the first setting that cannot work.
    """
    if any(e < 1 for e in req.eval_epochs):
        raise SettingError(f"--eval-epochs must be epochs >= 1; got {list(req.eval_epochs)}")
    check_settings(dataset=req.dataset, method=req.method, preset=req.preset, seed=req.seed,
                   overrides={**req.overrides, **({} if req.alpha is None else {"alpha": req.alpha})},
                   alpha=req.alpha, results_dir=req.results_dir, checkpoint_dir=checkpoint_dir, resume=resume,
                   fresh=fresh, eval_only=eval_only, device=req.device)
    cfg, name = resolve_run(req.preset, req.dataset, req.method, overrides=req.overrides, alpha=req.alpha)
    if req.eval_epochs and max(req.eval_epochs) > cfg.epochs:
        raise SettingError(f"--eval-epochs {max(req.eval_epochs)} is past the run's {cfg.epochs} epochs")
    return _Plan(method=get_method(req.method), cfg=cfg, record_preset=name, eval_epochs=req.eval_epochs)


def run_experiment(dataset: str, method: str, *, preset: str = "cpu", seed: int = 0,
                   data_root: str | Path | None = None, results_dir: str | Path = "results",
                   overrides: dict[str, Any] | None = None, alpha: float | None = None,
                   checkpoint_dir: str | Path | None = None, resume: bool = False, fresh: bool = False,
                   eval_only: bool = False, device: str | None = None, progress: bool = True,
                   eval_epochs: tuple[int, ...] | None = None, cache: str | Path | None = None) -> Path | None:
    """Train and evaluate one (dataset, method, preset, seed); write its record.

    Args:
        dataset, method: names in :data:`spreadcon.data.DATASETS` and :data:`spreadcon.methods.METHODS`.
        preset: a name in :data:`spreadcon.presets.PRESETS` (``smoke``, ``cpu``, ``paper``, ...).
        seed: initialisation / shuffling / augmentation seed, ``0 <= seed <= MAX_SEED``.
        data_root: dataset folder; None = ``$SPREADCON_DATA`` or the default root.
        results_dir: where records go.
        overrides: ``{config_key: value}`` on top of the preset. A run whose config then differs
            from the preset's is filed under a preset name that says how (:mod:`spreadcon.runs.names`).
        alpha: cNCE weight; overrides ``cfg.alpha`` and adds ``_alpha<A>`` to the record's file name.
        checkpoint_dir: folder for training checkpoints (one subfolder per backbone for composite
            methods). None: a private temporary folder, removed after the record is written and
            kept if anything fails.
        resume: continue from the newest loadable checkpoint in ``checkpoint_dir`` (start from
            scratch if there is none). A finished checkpoint is not trained again: only evaluated.
        fresh: delete the checkpoints in ``checkpoint_dir`` and start over. Without ``resume``,
            ``fresh`` or ``eval_only`` an existing checkpoint is an error: it is never overwritten.
        eval_only: evaluate the finished checkpoint in ``checkpoint_dir`` without training.
        device: ``cpu``, ``cuda`` ...; None = CUDA if available.
        progress: progress bars and one-line status messages on stderr.
        eval_epochs: also evaluate the encoder(s) as they were after each of these epochs (from
            snapshots the training keeps, no retraining); the record gets ``metrics_by_epoch =
            {"<epoch>": {metric: value}}``. The final ``metrics`` stay those of the selected model.
        cache: the folder for decoded dataset caches (None: :func:`spreadcon.data.cache_dir`).

    Returns:
        The record's path (None on ranks other than 0 under DDP).

    Raises:
        spreadcon.runs.checks.SettingError: a bad setting, before any data loads, or a checkpoint
            that does not belong to this run, before training.
        TrainingSaved: evaluation or the record write failed after training; the message names
            the checkpoint and the command that evaluates it.
    """
    from spreadcon import data as sdata
    from spreadcon.runs import records
    from spreadcon.util.malloc import keep_freed_memory

    keep_freed_memory()  # for the evaluation's large tensors too (spreadcon.util.malloc)
    source_hash = records.source_hash()  # the code as it is when the run starts
    req = _Request(dataset=dataset, method=method, preset=preset, seed=seed, data_root=data_root,
                   results_dir=results_dir, overrides=dict(overrides or {}), alpha=alpha, device=device,
                   eval_epochs=tuple(sorted({int(e) for e in eval_epochs or ()})), cache=cache)
    plan = _plan(req, checkpoint_dir=checkpoint_dir, resume=resume, fresh=fresh, eval_only=eval_only)
    m, cfg = plan.method, plan.cfg
    started, t0 = _now(), time.perf_counter()
    dev = _init_device(device)
    say = _say(progress)

    say(f"loading {dataset} (preset {preset}) ...")
    # a dataset missing from the root is fetched when the network allows it (with a progress bar);
    # one that is present is only read
    options = {"hierarchy": cfg.hierarchy} if dataset == "tinyimagenet" else {}  # its coarse map
    ds = subset_dataset(sdata.load(dataset, root=data_root, image_size=cfg.image_size or None, download=True,
                                  cache=cache, **options), cfg)
    own = checkpoint_dir is None and D.rank() == 0 and not m.untrained  # made once the data loaded: none left empty
    ck_root = Path(tempfile.mkdtemp(prefix="spreadcon-checkpoints-")) if own else checkpoint_dir
    try:
        encoders, train_info = _train(m, ds, cfg, seed=seed, dev=dev, checkpoint_dir=ck_root,
                                      resume=resume or eval_only, fresh=fresh, progress=progress,
                                      eval_epochs=plan.eval_epochs,
                                      data_root=sdata.default_root() if data_root is None else data_root)
    except BaseException as exc:
        if own:
            _keep_or_remove(ck_root, exc)
        raise
    if D.rank() != 0:
        return None  # the other ranks leave now: rank 0 evaluates alone, no barrier to time out in
    try:
        metrics, extra = _evaluate_run(ds, encoders, train_info, plan, seed=seed, dev=dev, ck_root=ck_root, say=say)
        rec = records.make_record(
            dataset=dataset, method=m.name, preset=plan.record_preset, seed=seed, task=ds.task, metrics=metrics,
            config=cfg.to_dict(), started_at=started, wall_time_s=time.perf_counter() - t0,
            device=records.device_name(dev),
            extra={"alpha_override": None if alpha is None else float(alpha), "world_size": D.world_size(), **extra},
            provenance_extra={"source_hash": source_hash, **train_info["_provenance"]},
        )
        path = records.write_record(rec, results_dir)
    except Exception as exc:
        if ck_root is None or m.untrained:
            raise
        raise TrainingSaved(f"{type(exc).__name__}: {exc}. Training finished and is saved in {ck_root}; "
                            f"evaluate it again without retraining: {req.eval_only_command(ck_root)}") from exc
    except BaseException as exc:  # a signal during evaluation: the training stays where it is, and is named
        _name_checkpoint(exc, ck_root)
        raise
    if own:
        shutil.rmtree(ck_root, ignore_errors=True)
    return path


def _evaluate_run(ds, encoders: list[nn.Module], train_info: dict, plan: _Plan, *, seed: int, dev: torch.device,
                  ck_root: Path | None, say) -> tuple[dict, dict]:
    """The run's metrics (the training's included) and the record's extra keys (``untrained``,
    ``embedding_map``, ``metrics_by_epoch``)."""
    m, cfg = plan.method, plan.cfg
    say(f"evaluating ({ds.task}) ...")
    encoder = encoders[0] if len(encoders) == 1 else ConcatEncoder(encoders)
    maps: dict = {}
    metrics = _evaluate(ds, encoder, cfg, seed, dev, retrain=cfg.dro_retrain and not m.untrained, maps=maps)
    if ds.task == "robustness" and m.name == "ce" and cfg.dro_retrain:
        metrics.update(_oracle_retrain(ds, cfg, seed, dev))
    metrics.update({k: v for k, v in train_info.items() if not k.startswith("_")})
    by_epoch = {}
    for e in plan.eval_epochs if not m.untrained else ():
        say(f"evaluating the snapshot of epoch {e} ...")
        by_epoch[str(e)] = _evaluate(ds, _snapshot_encoder(encoders, m, seed, ck_root, e), cfg, seed, dev)
    return metrics, {**({"untrained": True} if m.untrained else {}), **maps,
                     **({"metrics_by_epoch": by_epoch} if by_epoch else {})}


def _name_checkpoint(exc: BaseException, folder: Path | None) -> None:
    """Tell ``exc`` where the training is (``exc.checkpoint_dir``), for the interruption message."""
    if folder is None:
        return
    try:
        exc.checkpoint_dir = folder
    except AttributeError:
        pass


def _snapshot_encoder(encoders: list[nn.Module], m, seed: int, ck_root: Path, epoch: int) -> nn.Module:
    """The run's encoder(s) with the weights they had after ``epoch`` (:func:`spreadcon.train.loop.snapshot_path`)."""
    import copy

    from spreadcon.train.loop import snapshot_path

    parts = []
    for enc, (_, _, sub) in zip(encoders, m.backbone_runs(seed)):
        part = copy.deepcopy(enc)
        state = torch.load(snapshot_path(Path(ck_root) / sub, epoch), map_location="cpu", weights_only=True)
        part.load_state_dict(state)
        parts.append(part.eval())
    return parts[0] if len(parts) == 1 else ConcatEncoder(parts)


def _keep_or_remove(folder: Path, exc: BaseException) -> None:
    """A private checkpoint folder after a failed or interrupted training: kept if it holds a
    checkpoint (the exception learns where, as ``exc.checkpoint_dir``), else removed."""
    if any(folder.rglob("*.pt")):
        _name_checkpoint(exc, folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def _init_device(device: str | None) -> torch.device:
    """Join the process group under torchrun; pick CUDA when available unless told otherwise."""
    from spreadcon.train.loop import init_distributed

    auto = init_distributed()
    return auto if device is None else torch.device(device)


def _train(m, ds, cfg: Config, *, seed: int, dev: torch.device, checkpoint_dir: str | Path | None, resume: bool,
           fresh: bool, progress: bool, eval_epochs: tuple[int, ...] = (),
           data_root: str | Path | None = None) -> tuple[list[nn.Module], dict]:
    """Train the method's backbone(s); return frozen encoders and training metrics.

    ``info["_provenance"]`` holds what the record's provenance needs: the precision, and for a
    resumed run from which epoch, how many attempts and the training time over all of them
    (summed over backbones).
    """
    from spreadcon.train.loop import coarse_accuracy, precision, train
    from spreadcon.methods import build_model

    prov = {"precision": precision(cfg, dev), "resumed_from_epoch": None, "attempts": 1, "train_time_total_s": 0.0}
    if m.untrained:  # the encoder as initialised from the seed: the floor
        torch.manual_seed(seed)
        core = build_model(m, cfg, ds.image_shape, ds.n_coarse).to(dev).eval()
        for p in core.parameters():
            p.requires_grad_(False)
        return [core.encoder], {"_provenance": {**prov, "precision": "fp32"}}
    runs = m.backbone_runs(seed)
    encoders, info = [], {}
    for i, (name, bseed, sub) in enumerate(runs):
        ck = None if checkpoint_dir is None else Path(checkpoint_dir) / sub
        result = train(name, ds, cfg, seed=bseed, device=dev, checkpoint_dir=ck,
                       resume=resume, fresh=fresh, progress=progress, snapshot_epochs=tuple(eval_epochs),
                       data_root=data_root)
        enc = result.model.encoder.eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        encoders.append(enc)
        prefix = "" if not m.backbones else (f"{name}_{i}_" if m.seed_offsets else f"{name}_")
        info[f"{prefix}coarse_val_acc"] = result.best_val_acc
        info[f"{prefix}best_epoch"] = float(result.best_epoch)
        info[f"{prefix}train_time_s"] = result.wall_time_s
        extra = result.extra
        prov["precision"] = extra.get("precision")
        if extra.get("resumed_from_epoch") is not None and prov["resumed_from_epoch"] is None:
            prov["resumed_from_epoch"] = extra["resumed_from_epoch"]
        prov["attempts"] = max(prov["attempts"], int(extra.get("attempts", 1)))
        prov["train_time_total_s"] += float(extra.get("train_time_total_s", result.wall_time_s))
        if not m.backbones:
            info["coarse_head_test_acc"] = coarse_accuracy(result.model, ds.splits["test"], _augment(ds), dev,
                                                           cfg.eval_batch_size)
            if ds.task == "robustness":  # the network's own head: ERM's whole-network worst group
                from spreadcon.train.group_dro import evaluate_retrained

                head = evaluate_retrained(result.model, ds.splits["test"], ds, cfg, dev)
                info["head_worst_group_acc"] = head["worst_group_acc"]
                info["head_per_group_acc"] = head["per_group"]
    info["_provenance"] = prov
    return encoders, info


def _augment(ds):
    from spreadcon.data.augment import TwoViewAugment

    return TwoViewAugment.for_dataset(ds)


def _evaluate(ds, encoder: nn.Module, cfg: Config, seed: int, dev: torch.device, *,
              retrain: bool = False, maps: dict | None = None) -> dict[str, float]:
    """Transfer or robustness metrics of a frozen encoder (see the module docstring).

    ``retrain`` (robustness): also GEORGE's whole-network Group DRO retraining (:func:`_robustness`).
    ``maps`` (transfer): a dict that receives ``embedding_map``, a 2-D map of one coarse class's
    test embeddings (:func:`spreadcon.eval.geometry.class_map`).

    The probe's L2 strength is chosen on val from ``probe_weight_decay x
    {0.1, 1, 10}`` (``lbfgs``); the ``adamw`` probe keeps its best val epoch.
    """
    from spreadcon.eval.embed import embed
    from spreadcon.eval.geometry import class_map, spread_metrics, subclass_ami
    from spreadcon.eval.knn import knn_accuracy
    from spreadcon.eval.probe import linear_probe, linear_probe_augmented

    aug = _augment(ds)
    amp = dev.type == "cuda" and cfg.amp != "off"
    splits = {k: ds.splits[k] for k in ("train", "val", "test")}
    z = {k: embed(encoder, s, aug.normalize, batch_size=cfg.eval_batch_size, device=dev, amp=amp)
         for k, s in splits.items()}
    tr, va, te = splits["train"], splits["val"], splits["test"]
    metrics: dict[str, float] = {}
    if ds.task == "transfer":
        l2_grid = [cfg.probe_weight_decay * f for f in (0.1, 1.0, 10.0)]
        for label, n_classes in (("fine", ds.n_fine), ("coarse", ds.n_coarse)):
            if cfg.probe == "lbfgs":
                res = linear_probe(z["train"], getattr(tr, label), z["test"], getattr(te, label), method="lbfgs",
                                   l2=l2_grid, max_iter=cfg.probe_epochs, val_x=z["val"],
                                   val_y=getattr(va, label), n_classes=n_classes)
            else:
                res = linear_probe_augmented(
                    encoder, tr, te, aug, aug.normalize, n_classes, label=label, epochs=cfg.probe_epochs,
                    lr=cfg.probe_lr, weight_decay=cfg.probe_weight_decay, batch_size=cfg.batch_size, val=va,
                    device=dev, generator=torch.Generator().manual_seed(seed), amp=amp)
            metrics[f"{label}_test_acc"] = res.accuracy
            if res.val_accuracy is not None:
                metrics[f"{label}_val_acc_probe"] = res.val_accuracy
        metrics["knn_fine_test_acc"] = knn_accuracy(z["train"], tr.fine, z["test"], te.fine, k=cfg.knn_k)
        # the geometry on the held-out test images (the book's main reading), and on the training
        # images the loss was minimised on (where the theorems about minimisers speak) and val
        for prefix, split_name in (("", "test"), ("train_", "train"), ("val_", "val")):
            split = splits[split_name]
            spread = spread_metrics(z[split_name], split.coarse)
            metrics[f"{prefix}spread"] = float(spread["spread"])
            metrics[f"{prefix}within_class_cosine"] = float(spread["within_cosine"])
            if split_name != "val":
                metrics[f"{prefix}subclass_ami"] = float(subclass_ami(z[split_name], split.coarse, split.fine,
                                                                      seed=seed)["ami"])
        if maps is not None:
            maps["embedding_map"] = class_map(z["test"], te.coarse, te.fine)
        return metrics
    return {**metrics, **_robustness(ds, encoder, z, cfg, seed, dev, retrain=retrain)}


def _robustness(ds, encoder, z: dict, cfg: Config, seed: int, dev: torch.device, *, retrain: bool) -> dict:
    """GEORGE's two steps on the frozen embeddings ``z`` (``{split: (N, D)}``), scored on the test set's true groups.

    1. Subgroups are inferred per class on the training embeddings
       (``cfg.subgroup_cluster``: UMAP + Gaussian mixtures by default); how well they match the true
       groups (``inferred_group_ami``/``ari``, ``minority_recall``) and the fine labels
       (``inferred_fine_ami``, e.g. digit identity on ``mnist-cifar``) is recorded.
    2. Group DRO on those groups: a last layer on the frozen embeddings (``worst_group_acc``,
       ``avg_acc``, ``per_group_acc``), and with ``retrain`` the whole network retrained from scratch
       (``retrain_worst_group_acc``, ``retrain_avg_acc``, ``retrain_per_group_acc``; :mod:`spreadcon.train.group_dro`),
       selected on val by the worst inferred group. References on the same embeddings: Group DRO with
       the true groups (``oracle_*``) and plain ERM (``erm_*``).
    """
    from spreadcon.eval.subgroups import infer_subgroups, minority_recall, subgroup_agreement
    from spreadcon.eval.worst_group import worst_group

    tr, va, te = ds.splits["train"], ds.splits["val"], ds.splits["test"]
    sub = infer_subgroups(z["train"], tr.coarse, max_k=cfg.max_clusters, seed=seed, cluster=cfg.subgroup_cluster)
    out: dict = {"inferred_n_groups": float(sub.n_groups),
                 "minority_recall": minority_recall(sub.groups, tr.group, tr.coarse)}
    agree = subgroup_agreement(sub.groups, tr.group, tr.coarse)
    out.update(inferred_group_ami=agree["ami"], inferred_group_ari=agree["ari"],
               inferred_fine_ami=subgroup_agreement(sub.groups, tr.fine, tr.coarse)["ami"])
    if cfg.subgroup_cluster != "kmeans-raw":  # the first edition's clustering, beside GEORGE's, for comparison
        raw = infer_subgroups(z["train"], tr.coarse, max_k=cfg.max_clusters, seed=seed, cluster="kmeans-raw")
        out.update(kmeans_raw_group_ami=subgroup_agreement(raw.groups, tr.group, tr.coarse)["ami"],
                   kmeans_raw_minority_recall=minority_recall(raw.groups, tr.group, tr.coarse),
                   kmeans_raw_n_groups=float(raw.n_groups))
    dro = dict(max_k=cfg.max_clusters, epochs=cfg.dro_epochs, seed=seed)
    for prefix, mode, groups in (("", "true", sub.groups), ("oracle_", "true", tr.group), ("erm_", "none", None)):
        res = worst_group(z["train"], tr.coarse, z["test"], te.coarse, te.group, train_groups=groups,
                          groups=mode, **dro)
        out[f"{prefix}worst_group_acc"] = res["worst_group_acc"]
        out[f"{prefix}avg_acc"] = res["avg_acc"]
        out[f"{prefix}per_group_acc"] = res["per_group"]
    if retrain:
        from spreadcon.train import group_dro as R

        val_groups = sub.assign(z["val"], va.coarse)
        rr = R.retrain_group_dro(ds, sub.groups, cfg, seed=seed, device=dev, val_groups=val_groups)
        res = R.evaluate_retrained(rr.model, te, ds, cfg, dev)
        out.update(retrain_worst_group_acc=res["worst_group_acc"], retrain_avg_acc=res["avg_acc"],
                   retrain_per_group_acc=res["per_group"], retrain_best_epoch=float(rr.best_epoch))
    return out


def _oracle_retrain(ds, cfg: Config, seed: int, dev: torch.device) -> dict:
    """The whole network retrained with Group DRO on the TRUE groups (selected on val's true groups): the
    proxy validation's reference, which does not depend on any method's embeddings (run with ``ce``)."""
    from spreadcon.train import group_dro as R

    rr = R.retrain_group_dro(ds, ds.splits["train"].group, cfg, seed=seed, device=dev,
                             val_groups=ds.splits["val"].group)
    res = R.evaluate_retrained(rr.model, ds.splits["test"], ds, cfg, dev)
    return {"oracle_retrain_worst_group_acc": res["worst_group_acc"], "oracle_retrain_avg_acc": res["avg_acc"],
            "oracle_retrain_per_group_acc": res["per_group"]}
