"""The training loop shared by every method: AdamW, cosine schedule, checkpoints, exact resume, DDP.

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

Checkpoints (``<checkpoint_dir>/last.pt``) are written atomically every
``cfg.checkpoint_every`` epochs, when a call stops early, and at the end; the
one before is kept as ``prev.pt``, so a damaged ``last.pt`` leaves something to
fall back on, and ``resume`` takes the newest one that loads (and says which).
A call without ``resume`` never overwrites an existing checkpoint: it raises
:class:`CheckpointExists` unless told ``fresh``. They
hold only tensors and primitive containers, so they load with
``torch.load(weights_only=True)``: model, optimiser, step, epoch, the data
generator's state, the global CPU (and CUDA) RNG states, the best model so far
and its coarse validation accuracy, the history and the config. Resuming from
an epoch boundary restores every source of randomness, so an interrupted and
resumed CPU run ends bit-identical to an uninterrupted one.

Example:
    >>> result = train("spread", dataset, resolve("smoke", "mnist"), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

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
from spreadcon.util.atomic import atomic_torch_save, atomic_write
from spreadcon.methods import Method, MethodModel, Objective, build_model, get_method
from spreadcon.presets import Config

__all__ = [
    "TrainResult", "CheckpointError", "CheckpointExists", "train", "lr_factor", "save_checkpoint",
    "load_checkpoint", "checkpoint_files", "latest_checkpoint", "describe_checkpoint", "snapshot_path",
    "init_distributed", "coarse_accuracy", "OOM_HINT",
]

CHECKPOINT_VERSION = 1
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5 has only the CUDA name
OOM_HINT = (
    "out of memory. Knobs that cut memory, cheapest first: `--set batch_size=64` (activations scale "
    "with it), `--set eval_batch_size=256`, `--set amp=bf16` on CUDA, `--set encoder=cnn` (smaller "
    "than vit/resnet18), `--set decoder=cnn`, `--set views=2`, `--set image_size=32` (smaller images); "
    "`--set train_size=...` only cuts memory when the data is kept on the device."
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that belongs to a different run."""


class CheckpointExists(CheckpointError):
    """A run without ``resume`` found a checkpoint it would overwrite."""


CHECKPOINT_NAMES = ("last.pt", "prev.pt")  # newest first


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (the best epoch's weights when
            ``cfg.select_on_val``), in eval mode, on the training device.
        history: one dict per finished epoch: ``epoch``, ``lr``, each loss
            term's epoch mean, ``loss`` and ``val_acc``.
        best_epoch: the epoch (1-based) whose weights ``model`` holds.
        best_val_acc: its coarse validation accuracy (fraction).
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


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: a temp file in the same folder, fsync, ``os.replace``.

    If anything fails midway the temp file is removed and any previous
    checkpoint at ``path`` is untouched.
    """
    return atomic_torch_save(state, path)


_CHECKPOINT_KEYS = ("version", "epoch", "step", "model", "optimizer", "generator", "torch_rng",
                    "best_val_acc", "best_epoch", "best_model", "history", "config", "method", "seed")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its keys.

    Raises:
        CheckpointError: the file is truncated, corrupt, or not one of ours.
            The file itself is left as it is.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / garbage files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or partial ({type(exc).__name__}: {exc}). "
            f"Delete it to start over, or restore an earlier copy; nothing was overwritten."
        ) from exc
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}; it was not written by spreadcon.train.loop")
    if state["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has version {state['version']}, expected {CHECKPOINT_VERSION}")
    return state


def checkpoint_files(checkpoint_dir: str | Path) -> list[Path]:
    """The checkpoints present in ``checkpoint_dir``, newest first (``last.pt``, then ``prev.pt``)."""
    return [p for p in (Path(checkpoint_dir) / n for n in CHECKPOINT_NAMES) if p.exists()]


def latest_checkpoint(checkpoint_dir: str | Path, *, say: Callable[[str], None] | None = None
                      ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``checkpoint_dir`` that loads, as ``(path, state)``; None if there is none.

    A damaged ``last.pt`` falls back to ``prev.pt``; ``say`` (e.g. ``print``) is told what was
    skipped and which file is used.

    Raises:
        CheckpointError: there are checkpoints and none of them loads.
    """
    errors = []
    for path in checkpoint_files(checkpoint_dir):
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            if say is not None:
                say(f"skipping {path}: it does not load ({str(exc).split(' (')[0]})")
            continue
        if say is not None and errors:
            say(f"resuming from the previous checkpoint {path} (epoch {int(state['epoch'])})")
        return path, state
    if errors:
        raise CheckpointError("no checkpoint in " + str(checkpoint_dir) + " loads: " + "; ".join(errors))
    return None


def describe_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """``"<dir> from epoch E"`` for the newest loadable checkpoint in the folder, ``"<dir> (unreadable)"``
    when none loads, or None when the folder has no checkpoint."""
    if not checkpoint_files(checkpoint_dir):
        return None
    try:
        found = latest_checkpoint(checkpoint_dir)
    except CheckpointError:
        return f"{checkpoint_dir} (unreadable)"
    return f"{checkpoint_dir} from epoch {int(found[1]['epoch'])}" if found else None


def snapshot_path(checkpoint_dir: str | Path, epoch: int) -> Path:
    """Where :func:`train` keeps the encoder's weights after ``epoch`` (``snapshot_epochs``).

    Example:
        >>> snapshot_path("ck", 5).as_posix()
        'ck/snapshots/epoch-0005.pt'
    """
    return Path(checkpoint_dir) / "snapshots" / f"epoch-{epoch:04d}.pt"


def _save_rotating(state: dict[str, Any], ckpt_path: Path, keep_previous: bool) -> None:
    """Write ``last.pt``; with ``keep_previous`` the file it replaces becomes ``prev.pt`` first.

    ``keep_previous`` is False when the current ``last.pt`` is not known to be good (it failed to
    load on resume): then it is overwritten and ``prev.pt`` is left as it is.
    """
    if keep_previous and ckpt_path.exists():
        # last.pt -> prev.pt without a moment when last.pt is missing: a hard link (or, on a file
        # system without them, a copy) under a temporary name, moved onto prev.pt atomically
        prev = ckpt_path.with_name(CHECKPOINT_NAMES[1])
        tmp = ckpt_path.with_name(f".{prev.name}.{os.getpid()}.link.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(ckpt_path, tmp)
            os.replace(tmp, prev)
        except OSError:
            tmp.unlink(missing_ok=True)
            atomic_write(prev, lambda f: f.write(ckpt_path.read_bytes()))
    save_checkpoint(state, ckpt_path)


# ------------------------------------------------------------------ helpers


def _unwrap(model: nn.Module) -> MethodModel:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)      # DistributedDataParallel


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


def precision(cfg: Config, device: torch.device) -> str:
    """What training computes in: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast with a
    gradient scaler).

    ``cfg.amp = "auto"``: bf16 on a GPU that supports it (Ampere and later), fp16 with a
    :class:`torch.amp.GradScaler` on one that does not (a T4, Colab's free GPU, has no bf16
    tensor cores), fp32 on a CPU. ``"bf16"`` forces bf16; ``"off"`` is fp32.

    Example:
        >>> from spreadcon.presets import resolve
        >>> precision(resolve("smoke"), torch.device("cpu"))
        'fp32'
    """
    if cfg.amp == "off":
        return "fp32"
    if cfg.amp == "bf16":
        return "bf16"
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _amp_enabled(cfg: Config, device: torch.device) -> bool:
    return precision(cfg, device) != "fp32"


# --------------------------------------------------------------------- train


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


def train(method: str | Method, dataset, cfg: Config, *, seed: int = 0, device: str | torch.device = "cpu",
          checkpoint_dir: str | Path | None = None, resume: bool = False, fresh: bool = False,
          max_epochs_this_call: int | None = None, progress: bool = True,
          augment=None, on_epoch_end: Callable[..., None] | None = None,
          snapshot_epochs: tuple[int, ...] = ()) -> TrainResult:
    """Train one single-backbone method on ``dataset``'s coarse labels.

    Args:
        method: a name from :data:`spreadcon.methods.METHODS` (not ``thanos``,
            whose backbones are trained by separate calls).
        dataset: a :class:`spreadcon.data.Dataset` whose ``splits["train"]``
            and ``splits["val"]`` are already the sizes to use.
        cfg: the resolved config.
        seed: seeds model initialisation, shuffling and augmentation.
        device: where the model and the (uint8) images live.
        checkpoint_dir: folder for ``last.pt``; None disables checkpoints.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` that
            loads (``last.pt``, else ``prev.pt``); start from scratch if there is none.
        fresh: delete the folder's checkpoints and start over. Without
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

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a composite method, or a batch size not divisible by the
            world size under DDP.
        CheckpointError: an unreadable checkpoint, or one from another run.
        CheckpointExists: a checkpoint exists and neither ``resume`` nor ``fresh`` was given.
        RuntimeError: out of memory (with the knobs to turn), or a non-finite loss.
    """
    from spreadcon.data import batches
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
    # Labels are class indices 0..n_coarse-1 and the epoch means are checked for NaN below,
    # so the losses skip their own value checks: a step has no host-device sync.
    objective = Objective(method, cfg, num_classes=dataset.n_coarse, check_values=False).to(device)
    optimizer = make_optimizer(core.parameters(), cfg, device)
    drop_last = len(train_split) >= cfg.batch_size
    steps_per_epoch = len(train_split) // cfg.batch_size if drop_last else 1
    total_steps = steps_per_epoch * cfg.epochs

    epoch, step = 0, 0
    best_val, best_epoch, best_state = -1.0, 0, None
    history: list[dict[str, float]] = []
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAMES[0] if checkpoint_dir is not None else None
    last_is_good = True  # whether last.pt may become prev.pt at the next save
    attempts, time_before, resumed_from = 1, 0.0, None
    found = None
    if ckpt_path is not None and checkpoint_files(checkpoint_dir):
        if fresh:
            if rank == 0:
                for old in checkpoint_files(checkpoint_dir):
                    old.unlink()
        elif not resume:
            raise CheckpointExists(f"checkpoint at {describe_checkpoint(checkpoint_dir)}; "
                                   f"pass --resume to continue or --fresh to start over")
        else:
            say = (lambda msg: print(f"spreadcon: {msg}", file=sys.stderr, flush=True)) if rank == 0 else None
            found = latest_checkpoint(checkpoint_dir, say=say)
    if found is not None:
        used, state = found
        last_is_good = used == ckpt_path
        if state["config"] != cfg.to_dict() or state["method"] != method.name or state["seed"] != seed:
            raise CheckpointError(f"checkpoint {ckpt_path} belongs to a different run "
                                  f"(method/seed/config differ); use another --checkpoint-dir")
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        if aug_generator is not generator and state.get("aug_generator") is not None:
            aug_generator.set_state(state["aug_generator"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        epoch, step = int(state["epoch"]), int(state["step"])
        best_val, best_epoch, best_state = float(state["best_val_acc"]), int(state["best_epoch"]), state["best_model"]
        history = [dict(h) for h in state["history"]]
        attempts = int(state.get("attempts", 1)) + 1
        time_before = float(state.get("train_time_s", 0.0))
        resumed_from = epoch

    model: nn.Module = core
    if D.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    prec = precision(cfg, device)
    use_amp = False if prec == "fp32" else prec
    scaler = torch.amp.GradScaler(device.type) if prec == "fp16" else None

    def checkpoint() -> None:
        nonlocal last_is_good
        if ckpt_path is None or rank != 0:
            return
        _save_rotating({
            "version": CHECKPOINT_VERSION, "epoch": epoch, "step": step,
            "model": _cpu_state(core), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "aug_generator": None if aug_generator is generator else aug_generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "best_val_acc": best_val, "best_epoch": best_epoch, "best_model": best_state,
            "history": history, "config": cfg.to_dict(), "method": method.name, "seed": seed,
            "attempts": attempts, "train_time_s": time_before + time.perf_counter() - start,
        }, ckpt_path, keep_previous=last_is_good)
        last_is_good = True

    bar = None
    if progress and rank == 0:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total_steps, initial=step, desc=f"{method.name}", leave=False, dynamic_ncols=True)
        except ImportError:
            bar = None

    start, epochs_this_call = time.perf_counter(), 0
    n_terms = len(method.terms)
    try:
        while epoch < cfg.epochs:
            if max_epochs_this_call is not None and epochs_this_call >= max_epochs_this_call:
                break
            model.train()
            sums = torch.zeros(n_terms + 1, device=device)  # per-term sums and the total, on device
            count = 0
            for batch in batches(train_split, cfg.batch_size, shuffle=True, generator=generator,
                                 device=device, drop_last=drop_last):
                factor = lr_factor(step, total_steps, steps_per_epoch, cfg.warmup_epochs, cfg.cosine_period_epochs)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * factor
                sums += train_step(model, objective, optimizer, augment, batch, cfg=cfg, generator=aug_generator,
                                   use_amp=use_amp, rank=rank, world=world, scaler=scaler)
                count += 1
                step += 1
                if bar is not None:
                    bar.update(1)
                    if step % cfg.log_every == 0:  # the only host sync, every log_every steps
                        means = (sums / count).tolist()
                        bar.set_postfix({k: f"{v:.3f}" for k, v in zip(method.terms, means)}, refresh=False)
            epoch += 1
            epochs_this_call += 1
            means = (sums / max(1, count)).tolist()
            if not all(math.isfinite(m) for m in means):
                raise RuntimeError(f"non-finite loss in epoch {epoch} of {method.name}: "
                                   f"{dict(zip(method.terms + ('loss',), means))}; try a lower --set lr=...")
            val_acc = coarse_accuracy(core, val_split, augment, device, cfg.eval_batch_size)
            row = {"epoch": epoch, "lr": cfg.lr * factor, **dict(zip(method.terms, means)),
                   "loss": means[-1], "val_acc": val_acc}
            history.append(row)
            if on_epoch_end is not None:
                _call_epoch_hook(on_epoch_end, row, core)
            if not cfg.select_on_val or val_acc > best_val:
                best_val, best_epoch, best_state = val_acc, epoch, _cpu_state(core)
            if bar is not None:
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in zip(method.terms, means)}, "val": f"{val_acc:.3f}"})
            if epoch in snapshot_epochs and ckpt_path is not None and rank == 0:
                save_checkpoint(_cpu_state(core.encoder), snapshot_path(ckpt_path.parent, epoch))
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                checkpoint()
    except _OOM as exc:
        raise RuntimeError(f"{method.name}: {OOM_HINT}") from exc
    finally:
        if bar is not None:
            bar.close()
    finished = epoch >= cfg.epochs
    if not finished and epochs_this_call > 0 and epoch % cfg.checkpoint_every:
        checkpoint()  # stopped early: save where we are
    if best_state is not None:
        core.load_state_dict(best_state)
    core.eval()
    wall = time.perf_counter() - start
    return TrainResult(model=core, history=history, best_epoch=best_epoch, best_val_acc=best_val,
                       epochs_done=epoch, finished=finished, wall_time_s=wall,
                       extra={"precision": prec, "resumed_from_epoch": resumed_from, "attempts": attempts,
                              "train_time_total_s": time_before + wall})
