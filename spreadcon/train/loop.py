"""The training loop shared by every method, and by Group DRO retraining: AdamW, cosine schedule, DDP.

One step:

1. draw the next (global) batch of uint8 images, kept on the device
   (:func:`spreadcon.data.batches`), shuffled by the run's generator;
2. augment it into ``V`` views with :class:`spreadcon.data.augment.TwoViewAugment`,
   using the same generator (so one ``torch.Generator`` fixes the whole data
   stream, and its state is saved in checkpoints);
3. under DDP, keep this rank's contiguous slice of the global batch;
4. forward through :class:`spreadcon.methods.MethodModel` (bf16 autocast on CUDA),
   weighted loss terms from :class:`spreadcon.methods.Objective`, backward, AdamW.

No host synchronisation happens inside a step: the loss terms are summed on
the device and read back every ``cfg.log_every`` steps (and at the end of the
epoch) for the progress bar and the history.

The learning rate follows :func:`lr_factor` of the global step: linear warm-up
over ``cfg.warmup_epochs``, then cosine annealing to zero. With
``cfg.cosine_period_epochs = 0`` (default) there is one cosine over the rest of
the run. With ``k > 0`` the cosine restarts every ``k`` epochs, as in the
official configs (600 epochs, period 100: the rate falls to zero and jumps back
to the peak six times). The schedule has no state beyond the step counter, so
the checkpoint stores the step.

What is optimised and which epoch is kept is a :class:`Recipe`: by default the
method's objective and the coarse head's val accuracy;
:func:`spreadcon.train.group_dro.retrain_group_dro` passes the Group DRO loss and
the val worst-group accuracy, and runs through the same loop.

Checkpoints (:mod:`spreadcon.train.checkpoint`): ``<checkpoint_dir>/last.pt`` is
written atomically every ``cfg.checkpoint_every`` epochs, when a call stops early,
and at the end, the one before kept as ``prev.pt``; ``resume`` takes the newest one
that loads, after checking that it belongs to this run (method, seed, config,
dataset, data). A call without ``resume`` never overwrites an existing checkpoint:
it raises :class:`CheckpointExists` unless told ``fresh``. Resuming from an epoch
boundary restores every source of randomness, so an interrupted and resumed CPU
run ends bit-identical to an uninterrupted one. One process at a time trains in a
folder (:func:`spreadcon.train.checkpoint.lock_folder`).

Example:
    >>> result = train("spread", dataset, resolve("smoke", "mnist"), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from spreadcon import distributed as D
from spreadcon.methods import Method, MethodModel, Objective, build_model, get_method
from spreadcon.presets import Config
from spreadcon.train.checkpoint import (
    CHECKPOINT_NAMES, CHECKPOINT_VERSION, CheckpointBusy, CheckpointError, CheckpointExists, CheckpointMismatch,
    check_identity, checkpoint_files, data_source, describe_checkpoint, latest_checkpoint, load_checkpoint,
    lock_folder, open_checkpoint, save_checkpoint, save_rotating, snapshot_path,
)

__all__ = [
    "TrainResult", "Recipe", "CheckpointError", "CheckpointExists", "CheckpointMismatch", "CheckpointBusy", "train",
    "lr_factor", "save_checkpoint", "load_checkpoint", "checkpoint_files", "latest_checkpoint",
    "describe_checkpoint", "snapshot_path", "init_distributed", "coarse_accuracy", "OOM_HINT",
]

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5 has only the CUDA name
OOM_HINT = (
    "out of memory. Knobs that cut memory, cheapest first: `--set batch_size=64` (activations scale "
    "with it), `--set eval_batch_size=256`, `--set amp=bf16` on CUDA, `--set encoder=cnn` (smaller "
    "than vit/resnet18), `--set decoder=cnn`, `--set views=2`, `--set image_size=32` (smaller images); "
    "`--set train_size=...` only cuts memory when the data is kept on the device."
)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (the best epoch's weights when
            ``cfg.select_on_val``), in eval mode, on the training device.
        history: one dict per finished epoch: ``epoch``, ``lr``, each loss
            term's epoch mean, ``loss`` and the recipe's validation metrics
            (``val_acc`` by default).
        best_epoch: the epoch (1-based) whose weights ``model`` holds.
        best_val_acc: its selection score (by default the coarse validation accuracy, a fraction).
        epochs_done: epochs finished so far (across resumed calls).
        finished: False when ``max_epochs_this_call`` stopped the run early.
        wall_time_s: seconds spent in this call.
    """

    model: MethodModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val_acc: float
    epochs_done: int
    finished: bool
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """What :func:`train` optimises and which epoch it keeps; every field left None takes the method's default.

    Attributes:
        objective: an ``nn.Module`` on the device, ``(out, views, y) -> (total, {term: 0-dim value})``;
            default the method's :class:`spreadcon.methods.Objective`.
        terms: the names of ``objective``'s terms, in order (history rows, progress bar); default the method's.
        on_batch: called with each batch (a dict with ``images``, ``coarse``, ``index``) before its
            step; Group DRO hands its objective the batch's group ids this way.
        evaluate: ``evaluate(model) -> {metric: value}`` after each epoch, on the unwrapped model;
            default ``{"val_acc": coarse_accuracy(model, val split)}``.
        select_on: the metric of ``evaluate`` that picks the epoch to keep; default ``"val_acc"``.
        keep_best: keep the epoch with the highest ``select_on`` (ties keep the earlier) rather than
            the last; default ``cfg.select_on_val``.
        name: the run's name in messages and on the progress bar; default the method's.

    A recipe's ``objective`` is not checkpointed: :func:`train` refuses one together with a
    ``checkpoint_dir`` (Group DRO's weights ``q`` would restart at uniform on resume).
    """

    objective: nn.Module | None = None
    terms: tuple[str, ...] | None = None
    on_batch: Callable[[dict], None] | None = None
    evaluate: Callable[[MethodModel], dict[str, float]] | None = None
    select_on: str | None = None
    keep_best: bool | None = None
    name: str | None = None


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
              period_epochs: int = 0) -> float:
    """Multiplier of the peak learning rate at a (0-based) global step.

    ``f = step / W`` during warm-up (``W = warmup_epochs * steps_per_epoch``), then
    ``f = (1 + cos(pi * t)) / 2`` with ``t`` the fraction of the current cosine
    period elapsed: the whole remaining run when ``period_epochs == 0``, else
    ``((step - W) mod P) / P`` with ``P = period_epochs * steps_per_epoch``.

    Example:
        >>> lr_factor(0, 100, 10), round(lr_factor(50, 100, 10), 3), round(lr_factor(50, 100, 10, 0, 5), 3)
        (1.0, 0.5, 1.0)
    """
    warm = int(round(warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    if period_epochs > 0:
        period = period_epochs * steps_per_epoch
        t = ((step - warm) % period) / period
    else:
        t = (step - warm) / max(1, total_steps - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def init_distributed() -> torch.device:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (``WORLD_SIZE > 1``).

    Uses NCCL with one GPU per process (``LOCAL_RANK``) when CUDA is available,
    else gloo on CPU. Returns the device this process trains on. Without
    ``torchrun`` it does nothing and returns ``cuda`` if available, else ``cpu``.
    """
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not D.is_distributed():
        import torch.distributed as dist

        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if D.is_distributed() else 0)
    return torch.device("cpu")


# ------------------------------------------------------------------ helpers


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@torch.no_grad()
def coarse_accuracy(model: MethodModel, split, augment, device: torch.device, batch_size: int = 512) -> float:
    """Accuracy (fraction) of the model's coarse CE head on an unaugmented split."""
    from spreadcon.data import batches

    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    for batch in batches(split, batch_size, shuffle=False, device=device):
        x = augment.normalize(batch["images"])
        pred = model.head(model.embed(x)).argmax(dim=1)
        correct += (pred == batch["coarse"]).sum()
        n += len(batch["coarse"])
    model.train(was_training)
    return float(correct.item()) / max(1, n)


def _wants_model(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` takes a ``model`` keyword (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: the old one-argument call
        return False
    return any(p.name == "model" and p.kind != p.POSITIONAL_ONLY or p.kind == p.VAR_KEYWORD for p in params)


def _call_epoch_hook(fn: Callable[..., Any], row: dict[str, float], core: MethodModel) -> None:
    """Call the ``on_epoch_end`` hook without letting it disturb the run's randomness."""
    rng, was_training = torch.get_rng_state(), core.training
    core.eval()
    try:
        if _wants_model(fn):
            fn(row, model=core)
        else:
            fn(row)
    finally:
        torch.set_rng_state(rng)
        core.train(was_training)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively: AMX tiles (``amx_bf16``) or AVX-512 BF16
    (``avx512_bf16``), read from ``/proc/cpuinfo``; False where that file does not exist.

    Measured (``book/appendix_performance``): on an AMD EPYC with ``avx512_bf16``, one
    thread, the ``cpu`` preset's step took 0.24 s in bf16 against 0.55 s in float32, and
    three seeds of MNIST / spread / ``cpu`` agreed within seed noise in every metric.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def precision(cfg: Config, device: torch.device) -> str:
    """What training computes in: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast with a
    gradient scaler).

    ``cfg.amp = "auto"``: bf16 on a GPU that supports it (Ampere and later), fp16 with a
    :class:`torch.amp.GradScaler` on one that does not (a T4, Colab's free GPU, has no bf16
    tensor cores); on a CPU, bf16 where the CPU computes it natively
    (:func:`cpu_has_native_bf16`), else fp32. The losses sum in float32 under autocast
    either way. ``"bf16"`` forces bf16; ``"off"`` is fp32.

    Example:
        >>> from spreadcon.presets import resolve
        >>> precision(resolve("smoke", overrides={"amp": "off"}), torch.device("cpu"))
        'fp32'
        >>> precision(resolve("smoke"), torch.device("cpu")) == ("bf16" if cpu_has_native_bf16() else "fp32")
        True
    """
    if cfg.amp == "off":
        return "fp32"
    if cfg.amp == "bf16":
        return "bf16"
    if device.type != "cuda":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------- one step


def make_optimizer(params, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with ``cfg.lr`` and ``cfg.weight_decay``; the fused kernel on CPU and CUDA.

    Fused is one kernel for all parameters and keeps its step counts on the
    device, so ``step()`` reads nothing back to the host (the ``foreach``
    version calls ``.item()`` on them every step).
    """
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             fused=torch.device(device).type in ("cpu", "cuda"))


def train_step(model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, augment, batch: dict,
               *, cfg: Config, generator: torch.Generator | None, use_amp: bool | str = False, rank: int = 0,
               world: int = 1, scaler: torch.amp.GradScaler | None = None) -> Tensor:
    """One optimiser step on one global batch; returns the detached per-term values and the total.

    The whole global batch is augmented (identically on every rank, from the
    same generator state), then each rank keeps its slice. Nothing here reads
    a device value on the host, so on a GPU the step is queued without waiting
    (checked on the CPU by ``tests/test_engine.py`` with
    :class:`spreadcon.util.syncs.HostSyncs`).

    ``use_amp``: False (fp32), True or ``"bf16"`` (bf16 autocast), ``"fp16"``
    (fp16 autocast; pass the ``scaler`` that scales the loss and unscales the
    gradients before clipping).

    Returns:
        float ``(n_terms + 1,)`` on the device: the method's terms in order, then the total.
    """
    views = augment(batch["images"], views=cfg.views, generator=generator)
    y = batch["coarse"]
    if world > 1:
        local = y.shape[0] // world
        views, y = views[rank * local:(rank + 1) * local], y[rank * local:(rank + 1) * local]
    dtype = _AUTOCAST.get(use_amp, torch.bfloat16) if use_amp else None
    with torch.autocast(views.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = model(views)
    total, terms = objective(out, views, y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        total.backward()
    else:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return torch.stack([t.detach().float() for t in terms.values()] + [total.detach().float()])


# --------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """One training run's parts, and the state that a checkpoint saves and a resume restores."""

    method: str
    seed: int
    cfg: Config
    device: torch.device
    core: MethodModel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    aug_generator: torch.Generator
    augment: Any
    train_split: Any
    recipe: Recipe  # every field set
    rank: int = 0
    world: int = 1
    model: nn.Module | None = None  # what the steps call (_prepare_steps): core, or core wrapped by DDP / compile
    use_amp: bool | str = False
    scaler: torch.amp.GradScaler | None = None
    epoch: int = 0
    step: int = 0
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1
    time_before: float = 0.0
    resumed_from: int | None = None
    start: float = 0.0

    @property
    def drop_last(self) -> bool:
        return len(self.train_split) >= self.cfg.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_split) // self.cfg.batch_size if self.drop_last else 1

    @property
    def precision(self) -> str:
        return precision(self.cfg, self.device)


def _setup(method: str | Method, dataset, cfg: Config, *, seed: int, device, augment, recipe: Recipe | None) -> _Run:
    """Check the arguments, seed everything from ``seed``, build the model, objective and optimiser."""
    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.util.malloc import keep_freed_memory

    keep_freed_memory()  # large CPU tensors reuse freed heap memory instead of page-faulting (spreadcon.util.malloc)
    method = get_method(method) if isinstance(method, str) else method
    if method.config:  # e.g. the -quirks rows: their fixed keys win over the preset's
        cfg = dataclasses.replace(cfg, **dict(method.config))
    device = torch.device(device)
    world, rank = D.world_size(), D.rank()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the world size {world}")
    train_split, val_split = dataset.splits["train"].to(device), dataset.splits["val"].to(device)
    if len(train_split) < 2:
        raise ValueError(f"the training split has {len(train_split)} images; need at least 2")
    augment = augment if augment is not None else TwoViewAugment.for_dataset(dataset)

    # Everything random below derives from `seed`.
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # shuffling (and, on the CPU, augmentation)
    # On an accelerator the augmentation draws its random numbers there, so no step copies them over.
    aug_generator = generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    core = build_model(method, cfg, dataset.image_shape, dataset.n_coarse).to(device)
    recipe = _complete(recipe or Recipe(), method, cfg, n_classes=dataset.n_coarse, val_split=val_split,
                       augment=augment, device=device)
    return _Run(method=method.name, seed=seed, cfg=cfg, device=device, core=core,
                optimizer=make_optimizer(core.parameters(), cfg, device), generator=generator,
                aug_generator=aug_generator, augment=augment, train_split=train_split, recipe=recipe,
                rank=rank, world=world)


def _complete(recipe: Recipe, method: Method, cfg: Config, *, n_classes: int, val_split, augment,
              device: torch.device) -> Recipe:
    """``recipe`` with each field left None set to the method's default (see :class:`Recipe`)."""

    def val_acc(model: MethodModel) -> dict[str, float]:
        return {"val_acc": coarse_accuracy(model, val_split, augment, device, cfg.eval_batch_size)}

    # Labels are class indices 0..n_classes-1 and the epoch means are checked for NaN,
    # so the losses skip their own value checks: a step has no host-device sync.
    objective = recipe.objective if recipe.objective is not None else \
        Objective(method, cfg, num_classes=n_classes, check_values=False).to(device)
    return dataclasses.replace(
        recipe, objective=objective, terms=recipe.terms or method.terms, evaluate=recipe.evaluate or val_acc,
        select_on=recipe.select_on or "val_acc", name=recipe.name or method.name,
        keep_best=cfg.select_on_val if recipe.keep_best is None else recipe.keep_best)


def _prepare_steps(run: _Run) -> None:
    """What the steps need once the weights are final: the model they call (DDP under
    ``torch.distributed``, compiled with ``cfg.compile``), the autocast dtype and the fp16 scaler."""
    model: nn.Module = run.core
    if D.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(run.core, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    run.model = torch.compile(model) if run.cfg.compile else model
    prec = run.precision
    run.use_amp = False if prec == "fp32" else prec
    run.scaler = torch.amp.GradScaler(run.device.type) if prec == "fp16" else None


def _run_state(run: _Run, identity: dict[str, Any]) -> dict[str, Any]:
    """What ``last.pt`` holds: tensors and primitive containers only (``weights_only`` loads it)."""
    device = run.device
    return {
        **identity, "version": CHECKPOINT_VERSION, "epoch": run.epoch, "step": run.step,
        "model": _cpu_state(run.core), "optimizer": run.optimizer.state_dict(),
        "generator": run.generator.get_state(), "torch_rng": torch.get_rng_state(),
        "aug_generator": None if run.aug_generator is run.generator else run.aug_generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "best_val_acc": run.best_score, "best_epoch": run.best_epoch, "best_model": run.best_state,
        "history": run.history, "attempts": run.attempts,
        "train_time_s": run.time_before + time.perf_counter() - run.start,
    }


def _restore(run: _Run, state: dict[str, Any]) -> None:
    """Put ``run`` where the checkpoint ``state`` left it, every source of randomness included."""
    run.core.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.generator.set_state(state["generator"])
    if run.aug_generator is not run.generator and state.get("aug_generator") is not None:
        run.aug_generator.set_state(state["aug_generator"])
    torch.set_rng_state(state["torch_rng"])
    if run.device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    run.epoch, run.step = int(state["epoch"]), int(state["step"])
    run.best_score, run.best_epoch, run.best_state = float(state["best_val_acc"]), int(state["best_epoch"]), \
        state["best_model"]
    run.history = [dict(h) for h in state["history"]]
    run.attempts = int(state.get("attempts", 1)) + 1
    run.time_before = float(state.get("train_time_s", 0.0))
    run.resumed_from = run.epoch


class _Checkpoints:
    """A run's checkpoint folder: resume from it, and (rank 0 only) write ``last.pt`` and snapshots into it."""

    def __init__(self, folder: str | Path | None, identity: dict[str, Any], *, rank: int,
                 snapshot_epochs: tuple[int, ...]) -> None:
        self.folder = None if folder is None else Path(folder)
        self.identity, self.snapshot_epochs = identity, tuple(snapshot_epochs)
        self.writer = self.folder is not None and rank == 0
        self.last_is_good = True  # whether last.pt may become prev.pt at the next save

    def lock(self) -> contextlib.AbstractContextManager:
        """One writer per folder: a second run into it raises :class:`CheckpointBusy`."""
        return lock_folder(self.folder) if self.writer else contextlib.nullcontext()

    def resume(self, run: _Run, *, resume: bool, fresh: bool) -> None:
        if self.folder is None:
            return
        say = (lambda msg: print(f"spreadcon: {msg}", file=sys.stderr, flush=True)) if self.writer else None
        found = open_checkpoint(self.folder, resume=resume, fresh=fresh, writer=self.writer, say=say)
        if found is not None:
            used, state = found
            check_identity(used, state, self.identity)
            _restore(run, state)
            self.last_is_good = used.name == CHECKPOINT_NAMES[0]

    def save(self, run: _Run) -> None:
        if not self.writer:
            return
        path = self.folder / CHECKPOINT_NAMES[0]
        try:
            save_rotating(_run_state(run, self.identity), path, keep_previous=self.last_is_good)
        except OSError as exc:  # a full disk: one line, and the checkpoint before this one is intact
            raise CheckpointError(f"cannot write the checkpoint {path} ({exc.strerror or exc}); the one before "
                                  f"it is intact: free space and continue with --resume") from exc
        self.last_is_good = True

    def after_epoch(self, run: _Run) -> None:
        if self.writer and run.epoch in self.snapshot_epochs:
            save_checkpoint(_cpu_state(run.core.encoder), snapshot_path(self.folder, run.epoch))
        if run.epoch % run.cfg.checkpoint_every == 0 or run.epoch == run.cfg.epochs:
            self.save(run)


def _progress_bar(run: _Run, progress: bool):
    """A tqdm bar over the run's steps (rank 0, when tqdm is installed), or None."""
    if not progress or run.rank != 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    total = run.steps_per_epoch * run.cfg.epochs
    return tqdm(total=total, initial=run.step, desc=run.recipe.name, leave=False, dynamic_ncols=True)


def _postfix(terms: tuple[str, ...], means: list[float]) -> dict[str, str]:
    return {k: f"{v:.3f}" for k, v in zip(terms, means)}


def _run_epoch(run: _Run, bar) -> tuple[list[float], float]:
    """One pass over the training split; returns the epoch means of the terms and the total, and the last lr."""
    from spreadcon.data import batches

    cfg, recipe = run.cfg, run.recipe
    total_steps = run.steps_per_epoch * cfg.epochs
    run.model.train()
    sums = torch.zeros(len(recipe.terms) + 1, device=run.device)  # per-term sums and the total, on device
    count, factor = 0, 1.0
    for batch in batches(run.train_split, cfg.batch_size, shuffle=True, generator=run.generator,
                         device=run.device, drop_last=run.drop_last):
        factor = lr_factor(run.step, total_steps, run.steps_per_epoch, cfg.warmup_epochs, cfg.cosine_period_epochs)
        for group in run.optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        if recipe.on_batch is not None:
            recipe.on_batch(batch)
        sums += train_step(run.model, recipe.objective, run.optimizer, run.augment, batch, cfg=cfg,
                           generator=run.aug_generator, use_amp=run.use_amp, rank=run.rank, world=run.world,
                           scaler=run.scaler)
        count += 1
        run.step += 1
        if bar is not None:
            bar.update(1)
            if run.step % cfg.log_every == 0:  # the only host sync, every log_every steps
                bar.set_postfix(_postfix(recipe.terms, (sums / count).tolist()), refresh=False)
    return (sums / max(1, count)).tolist(), cfg.lr * factor


def _end_epoch(run: _Run, means: list[float], lr: float, *, bar, on_epoch_end) -> None:
    """Check the epoch's losses, evaluate, record the history row, keep the selected epoch's weights."""
    recipe = run.recipe
    run.epoch += 1
    if not all(math.isfinite(m) for m in means):
        raise RuntimeError(f"non-finite loss in epoch {run.epoch} of {recipe.name}: "
                           f"{dict(zip(recipe.terms + ('loss',), means))}; try a lower --set lr=...")
    row = {"epoch": run.epoch, "lr": lr, **dict(zip(recipe.terms, means)), "loss": means[-1],
           **recipe.evaluate(run.core)}
    run.history.append(row)
    if on_epoch_end is not None:
        _call_epoch_hook(on_epoch_end, row, run.core)
    score = row[recipe.select_on]
    if not recipe.keep_best or score > run.best_score:
        run.best_score, run.best_epoch, run.best_state = score, run.epoch, _cpu_state(run.core)
    if bar is not None:
        bar.set_postfix({**_postfix(recipe.terms, means), "val": f"{score:.3f}"})


def _finish(run: _Run) -> TrainResult:
    """The selected epoch's weights, in eval mode, and what the run did."""
    if run.best_state is not None:
        run.core.load_state_dict(run.best_state)
    run.core.eval()
    wall = time.perf_counter() - run.start
    return TrainResult(model=run.core, history=run.history, best_epoch=run.best_epoch, best_val_acc=run.best_score,
                       epochs_done=run.epoch, finished=run.epoch >= run.cfg.epochs, wall_time_s=wall,
                       extra={"precision": run.precision, "resumed_from_epoch": run.resumed_from,
                              "attempts": run.attempts, "train_time_total_s": run.time_before + wall})


def _identity(run: _Run, dataset, data_root: str | Path | None) -> dict[str, Any]:
    """Which run a checkpoint belongs to: method, seed, resolved config, dataset and its data."""
    root = None if data_root is None else str(Path(data_root).expanduser().resolve())
    return {"method": run.method, "seed": run.seed, "config": run.cfg.to_dict(), "dataset": dataset.name,
            "data_root": root, "data_source": data_source(dataset)}


def train(method: str | Method, dataset, cfg: Config, *, seed: int = 0, device: str | torch.device = "cpu",
          checkpoint_dir: str | Path | None = None, resume: bool = False, fresh: bool = False,
          max_epochs_this_call: int | None = None, progress: bool = True,
          augment=None, on_epoch_end: Callable[..., None] | None = None,
          snapshot_epochs: tuple[int, ...] = (), recipe: Recipe | None = None,
          data_root: str | Path | None = None) -> TrainResult:
    """Train one single-backbone method on ``dataset``'s coarse labels.

    Args:
        method: a name from :data:`spreadcon.methods.METHODS` (not ``thanos``,
            whose backbones are trained by separate calls).
        dataset: a :class:`spreadcon.data.Dataset` whose ``splits["train"]``
            and ``splits["val"]`` are already the sizes to use.
        cfg: the resolved config.
        seed: seeds model initialisation, shuffling and augmentation.
        device: where the model and the (uint8) images live.
        checkpoint_dir: folder for ``last.pt``; None disables checkpoints. The
            run holds the folder's lock while it trains.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` that
            loads (``last.pt``, else ``prev.pt``); start from scratch if there is none.
        fresh: delete the folder's checkpoints and snapshots and start over. Without
            ``resume`` or ``fresh`` an existing checkpoint raises
            :class:`CheckpointExists` (nothing is overwritten).
        max_epochs_this_call: stop (after checkpointing) once this many epochs
            ran in this call; used to simulate interruption.
        progress: show a tqdm bar with each loss term (rank 0 only).
        augment: a :class:`TwoViewAugment`; default ``TwoViewAugment.for_dataset(dataset)``.
        on_epoch_end: called after each epoch as ``on_epoch_end(row)`` with
            the epoch's history row, or as ``on_epoch_end(row, model=core)``
            when it has a ``model`` parameter (or ``**kwargs``). ``core`` is the
            unwrapped :class:`MethodModel` at the end of that epoch (before
            best-epoch selection), in eval mode; the callback must not change
            its weights. The global CPU RNG state is restored after the call, so a
            callback that draws random numbers (a probe, a k-means) leaves the
            training run unchanged.
        snapshot_epochs: after each of these epochs, the encoder's weights as
            they are then go to ``<checkpoint_dir>/snapshots/epoch-EEEE.pt``
            (:func:`snapshot_path`), so the run can be evaluated along its
            training afterwards without retraining. Needs ``checkpoint_dir``.
        recipe: what to optimise and which epoch to keep (:class:`Recipe`); default the method's.
        data_root: the folder ``dataset`` was read from, recorded in the checkpoint beside
            the dataset's name and data fingerprint.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a composite method, a batch size not divisible by the
            world size under DDP, or a recipe's own objective with ``checkpoint_dir``.
        CheckpointError: an unreadable checkpoint, or one that cannot be written.
        CheckpointMismatch: ``resume`` into a checkpoint of another run (method, seed,
            config, dataset or data differ).
        CheckpointExists: a checkpoint exists and neither ``resume`` nor ``fresh`` was given.
        CheckpointBusy: another process is training in ``checkpoint_dir``.
        RuntimeError: out of memory (with the knobs to turn), or a non-finite loss.
    """
    if checkpoint_dir is not None and recipe is not None and recipe.objective is not None:
        raise ValueError("checkpoints keep the method's state only; a recipe's own objective (its state, e.g. "
                         "Group DRO's q) would restart on resume: pass checkpoint_dir=None")
    run = _setup(method, dataset, cfg, seed=seed, device=device, augment=augment, recipe=recipe)
    cfg = run.cfg
    identity = {} if checkpoint_dir is None else _identity(run, dataset, data_root)
    checkpoints = _Checkpoints(checkpoint_dir, identity, rank=run.rank, snapshot_epochs=snapshot_epochs)
    with checkpoints.lock():
        checkpoints.resume(run, resume=resume, fresh=fresh)
        _prepare_steps(run)  # after the resume: DDP broadcasts the weights it starts from
        bar = _progress_bar(run, progress)
        run.start, epochs_here = time.perf_counter(), 0
        try:
            while run.epoch < cfg.epochs and (max_epochs_this_call is None or epochs_here < max_epochs_this_call):
                means, lr = _run_epoch(run, bar)
                epochs_here += 1
                _end_epoch(run, means, lr, bar=bar, on_epoch_end=on_epoch_end)
                checkpoints.after_epoch(run)
        except _OOM as exc:
            raise RuntimeError(f"{run.recipe.name}: {OOM_HINT}") from exc
        finally:
            if bar is not None:
                bar.close()
        if run.epoch < cfg.epochs and epochs_here > 0 and run.epoch % cfg.checkpoint_every:
            checkpoints.save(run)  # stopped early: save where we are
    return _finish(run)
