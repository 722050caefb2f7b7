"""The training engine: schedule, tiny overfit, exact resume, checkpoint faults, OOM message."""

from __future__ import annotations

import math

import pytest
import torch

from spreadcon.train import loop as engine
from spreadcon.train.loop import CheckpointError, lr_factor, train
from spreadcon.presets import resolve


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def synthetic_dataset(n: int = 96, side: int = 8, seed: int = 0, task: str = "transfer"):
    """4 fine classes = 2 coarse x 2 subclasses; each fine class is a fixed random
    pattern plus uint8 noise, so a small CNN can learn coarse labels in a few steps."""
    from spreadcon.data import Dataset, Split

    g = torch.Generator().manual_seed(1234)
    patterns = torch.randint(0, 256, (4, 1, side, side), generator=g)

    def split(m: int, s: int) -> Split:
        gs = torch.Generator().manual_seed(s)
        fine = torch.arange(m) % 4
        noise = torch.randint(-40, 41, (m, 1, side, side), generator=gs)
        images = (patterns[fine] + noise).clamp(0, 255).to(torch.uint8)
        group = fine.clone() if task == "robustness" else None
        return Split(fine=fine, coarse=fine // 2, group=group, images=images)

    return Dataset(name="synthetic", task=task, image_shape=(1, side, side), fine_names=list("abcd"),
                   coarse_names=["ab", "cd"], mean=(0.5,), std=(0.25,), grayscale_aug=False,
                   splits={"train": split(n, seed + 1), "val": split(n // 2, seed + 2), "test": split(n // 2, seed + 3)},
                   group_names=list("abcd") if task == "robustness" else [])


def tiny_cfg(**kw):
    base = {"epochs": 3, "batch_size": 32, "checkpoint_every": 1, "log_every": 1, "eval_batch_size": 64}
    base.update(kw)
    return resolve("smoke", None, base)


def test_lr_factor_warmup_cosine_and_restarts():
    # warm-up over 1 epoch of 10 steps: 0.1, 0.2, ... 1.0
    assert [round(lr_factor(s, 100, 10, warmup_epochs=1), 2) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    # one cosine over the remaining 90 steps: half way (step 55) is 0.5
    assert lr_factor(55, 100, 10, warmup_epochs=1) == pytest.approx(0.5)
    # restarts every 2 epochs (20 steps): back to the peak at 20, 40, ...
    f = [lr_factor(s, 100, 10, period_epochs=2) for s in range(100)]
    assert f[0] == f[20] == f[40] == 1.0 and f[10] == pytest.approx(0.5)
    assert f[19] == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 20)))


@pytest.mark.parametrize("method", ["spread", "autoencoder"])
def test_tiny_overfit_loss_decreases(method):
    ds = synthetic_dataset()
    result = train(method, ds, tiny_cfg(epochs=6, lr=3e-3), seed=0, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and result.finished
    assert losses[-1] < losses[0] - 0.3, losses  # contrastive terms have a floor > 0, so compare a margin
    assert result.history[-1]["ce"] < 0.75 * result.history[0]["ce"]
    assert result.best_val_acc > 0.75  # coarse task is easy: chance is 0.5
    assert result.best_val_acc == max(h["val_acc"] for h in result.history)


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_interrupted_then_resumed_run_is_exact(tmp_path):
    ds = synthetic_dataset()
    cfg = tiny_cfg(epochs=3)
    full = train("spread", ds, cfg, seed=3, progress=False, checkpoint_dir=tmp_path / "a")
    part = train("spread", ds, cfg, seed=3, progress=False, checkpoint_dir=tmp_path / "b", max_epochs_this_call=1)
    assert not part.finished and part.epochs_done == 1
    rest = train("spread", ds, cfg, seed=3, progress=False, checkpoint_dir=tmp_path / "b", resume=True)
    assert rest.finished and rest.epochs_done == 3
    assert rest.history == full.history  # identical losses and val accuracies, epoch by epoch
    a, b = _params(full.model), _params(rest.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the resumed call really resumed: a fresh run with another seed differs
    other = train("spread", ds, cfg, seed=4, progress=False)
    assert other.history != full.history


def test_checkpoint_holds_only_weights_only_loadable_state(tmp_path):
    ds = synthetic_dataset()
    train("ce", ds, tiny_cfg(epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # raises if anything is not a tensor/primitive
    assert state["epoch"] == 1 and state["method"] == "ce" and isinstance(state["generator"], torch.Tensor)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    ds = synthetic_dataset()
    train("ce", ds, tiny_cfg(epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="different run"):
        train("ce", ds, tiny_cfg(epochs=2), seed=0, progress=False, checkpoint_dir=tmp_path, resume=True)


def test_resume_refuses_a_checkpoint_of_other_data_and_says_what_differs(tmp_path):
    """A checkpoint records its dataset, data root, data fingerprint and config (issue "trust"): a resume on
    other data is refused before any training; the same data read from another folder resumes."""
    import dataclasses
    from pathlib import Path

    from spreadcon.train.checkpoint import CheckpointMismatch, data_source

    ds, cfg = synthetic_dataset(), tiny_cfg(epochs=2)
    train("ce", ds, cfg, seed=0, progress=False, checkpoint_dir=tmp_path / "ck", max_epochs_this_call=1,
          data_root=tmp_path / "a")
    state = engine.load_checkpoint(tmp_path / "ck" / "last.pt")
    assert (state["dataset"], state["data_root"], state["data_source"]) == ("synthetic", str(tmp_path / "a"),
                                                                           data_source(ds))
    assert state["config"] == cfg.to_dict()
    resume = dict(seed=0, progress=False, checkpoint_dir=tmp_path / "ck", resume=True)
    with pytest.raises(CheckpointMismatch, match="dataset 'synthetic', not 'other'"):
        train("ce", dataclasses.replace(ds, name="other"), cfg, **resume)
    with pytest.raises(CheckpointMismatch, match="data fingerprint"):  # the same name, other images
        train("ce", synthetic_dataset(seed=1), cfg, **resume)
    with pytest.raises(CheckpointMismatch, match=r"config .*lr=0.001 \(now 0.002\)"):
        train("ce", ds, tiny_cfg(epochs=2, lr=2e-3), **resume)
    assert engine.load_checkpoint(tmp_path / "ck" / "last.pt")["epoch"] == 1  # untouched
    rest = train("ce", ds, cfg, data_root=Path(tmp_path / "b"), **resume)
    assert rest.finished and rest.extra["resumed_from_epoch"] == 1


def test_a_fresh_start_removes_the_previous_runs_snapshots(tmp_path):
    """``--fresh`` used to keep ``snapshots/``: a later ``--eval-only --eval-epochs 1`` then reported
    the previous run's epoch 1 as this run's."""
    ds, cfg = synthetic_dataset(), tiny_cfg(epochs=2, select_on_val=False)
    train("spread", ds, cfg, seed=0, progress=False, checkpoint_dir=tmp_path, snapshot_epochs=(1, 2))
    second = train("spread", ds, cfg, seed=1, progress=False, checkpoint_dir=tmp_path, fresh=True,
                   snapshot_epochs=(2,))
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["epoch-0002.pt"]
    saved = torch.load(engine.snapshot_path(tmp_path, 2), weights_only=True)
    final = second.model.encoder.state_dict()
    assert all(torch.equal(saved[k], final[k]) for k in final)  # the second run's own epoch 2
    train("spread", ds, cfg, seed=1, progress=False, checkpoint_dir=tmp_path, fresh=True)
    assert not (tmp_path / "snapshots").exists()


def test_a_folder_in_use_by_another_process_is_refused_and_freed_when_it_dies(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from spreadcon.train.checkpoint import CheckpointBusy

    code = ("import sys\nfrom spreadcon.train.checkpoint import lock_folder\n"
            "with lock_folder(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointBusy, match=rf"in use by another run \(process {holder.pid}\)"):
            train("ce", synthetic_dataset(), tiny_cfg(epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path)
        assert engine.checkpoint_files(tmp_path) == []
    finally:
        holder.kill()
        holder.wait(timeout=60)
    train("ce", synthetic_dataset(), tiny_cfg(epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path)
    assert engine.checkpoint_files(tmp_path) == [tmp_path / "last.pt"]  # a killed holder's lock is gone


def test_a_full_disk_at_a_checkpoint_is_one_clear_error(tmp_path, full_disk):
    full_disk()  # every file written takes 64 KiB, then ENOSPC: torch.save fails midway
    with pytest.raises(CheckpointError, match="cannot write the checkpoint .*No space left on device.*intact"):
        train("ce", synthetic_dataset(), tiny_cfg(epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no partial checkpoint


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    ds = synthetic_dataset()
    train("ce", ds, tiny_cfg(epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "last.pt"
    path.write_bytes(path.read_bytes()[:200])  # a partial write
    with pytest.raises(CheckpointError, match="corrupt or partial"):
        train("ce", ds, tiny_cfg(epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert len(path.read_bytes()) == 200  # left as it was for inspection


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    good = {"version": 1, "x": torch.arange(3)}
    engine.save_checkpoint(good, tmp_path / "last.pt")

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        engine.save_checkpoint({"version": 1, "x": torch.zeros(3)}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert torch.equal(torch.load(tmp_path / "last.pt", weights_only=True)["x"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_out_of_memory_names_the_knobs(monkeypatch):
    from spreadcon.methods import MethodModel

    def oom(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(MethodModel, "forward", oom)
    with pytest.raises(RuntimeError, match="batch_size") as err:
        train("ce", synthetic_dataset(), tiny_cfg(epochs=1), seed=0, progress=False)
    assert "encoder" in str(err.value)


def test_composite_method_is_refused_by_the_engine():
    with pytest.raises(ValueError, match="composite"):
        train("thanos", synthetic_dataset(), tiny_cfg(epochs=1), seed=0, progress=False)


def test_on_epoch_end_gets_the_model_and_leaves_the_run_unchanged():
    """A hook with a ``model`` parameter sees each epoch's weights; one-argument hooks still work.

    The hook draws random numbers on purpose: the engine restores the RNG after
    it, so the run's history and weights must equal a run without any hook.
    """
    ds = synthetic_dataset()
    cfg = tiny_cfg(epochs=3, select_on_val=False)  # keep the last epoch's weights
    plain = train("spread", ds, cfg, seed=5, progress=False)
    rng_after_plain = torch.get_rng_state()
    rows, snapshots, modes, old_style = [], [], [], []

    def hook(row, model):
        rows.append(row)
        snapshots.append(_params(model))
        modes.append(model.training)
        torch.randn(100)  # randomness inside the hook must not leak into training

    hooked = train("spread", ds, cfg, seed=5, progress=False, on_epoch_end=hook)
    assert torch.equal(torch.get_rng_state(), rng_after_plain)  # the global stream (dropout, ...) is untouched
    train("spread", ds, cfg, seed=5, progress=False, on_epoch_end=old_style.append)
    assert rows == hooked.history == plain.history == old_style
    assert len(snapshots) == 3 and modes == [False] * 3
    last, final = snapshots[-1], _params(plain.model)
    assert all(torch.equal(last[k], final[k]) for k in final)
    first = snapshots[0]
    assert any(not torch.equal(first[k], final[k]) for k in final)  # the hook saw the weights change


@pytest.mark.parametrize("method,encoder", [("spread", "cnn"), ("autoencoder", "cnn"), ("simclr", "vit"),
                                            ("supcon", "linear")])
def test_a_training_step_never_waits_for_the_device(method, encoder, monkeypatch):
    """The GPU fast path's rule, checked on the CPU: fetching a batch and one full
    optimiser step (augmentation, forward, losses, backward, clipping, AdamW) make
    no call that reads a device value on the host (spreadcon.util.syncs.HostSyncs). The
    losses read one size on the host where that is free (CPU tensors), and the CPU's dropout
    seeds its bit generator from one host read of PyTorch's; the test takes the GPU's path
    for both (dropout on PyTorch's own operations, spreadcon.models.dropout.torch_dropout)."""
    import spreadcon.losses._kernel
    import spreadcon.models.dropout

    monkeypatch.setattr(spreadcon.losses._kernel, "_host_reads_are_free", lambda device: False)
    monkeypatch.setattr(spreadcon.models.dropout, "_torch_only", True)  # what torch_dropout() sets, as on a GPU
    from spreadcon.data import batches
    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.methods import Objective, build_model
    from spreadcon.util.syncs import HostSyncs

    ds = synthetic_dataset(n=64, side=8)
    cfg = tiny_cfg(encoder=encoder, grad_clip=1.0)
    model = build_model(method, cfg, ds.image_shape, ds.n_coarse)
    objective = Objective(method, cfg, num_classes=ds.n_coarse, check_values=False)
    optimizer = engine.make_optimizer(model.parameters(), cfg, torch.device("cpu"))
    augment = TwoViewAugment.for_dataset(ds, sync_free=True)
    gen = torch.Generator().manual_seed(0)
    it = batches(ds.splits["train"], 32, generator=gen)
    engine.train_step(model, objective, optimizer, augment, next(it), cfg=cfg, generator=gen)  # warm-up
    with HostSyncs() as syncs:
        values = engine.train_step(model, objective, optimizer, augment, next(it), cfg=cfg, generator=gen)
    assert syncs.calls == []
    assert values.shape == (len(objective.method.terms) + 1,) and torch.isfinite(values).all()
    # the same step with the losses' own checks on does wait: the detector can fail
    checked = Objective(method, cfg)
    with HostSyncs() as syncs:
        engine.train_step(model, checked, optimizer, augment, next(batches(ds.splits["train"], 32, generator=gen)),
                          cfg=cfg, generator=gen)
    assert syncs.calls


def test_quirks_method_rows_train_with_the_official_loss():
    """supcon-quirks == supcon with reference_quirks=True (same weights after training), != plain supcon."""
    ds = synthetic_dataset(n=64)
    cfg = tiny_cfg(epochs=1, select_on_val=False)
    a = train("supcon-quirks", ds, cfg, seed=3, progress=False).model.state_dict()
    b = train("supcon", ds, tiny_cfg(epochs=1, select_on_val=False, reference_quirks=True), seed=3,
              progress=False).model.state_dict()
    c = train("supcon", ds, cfg, seed=3, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["spread", "autoencoder"])
def test_cuda_step_passes_the_sync_debugger(method):
    """On a GPU: torch's own sync debugger, set to error, sees no synchronisation in a step
    (data resident as uint8, device generator, bf16 autocast, fused AdamW)."""
    from spreadcon.data import batches
    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.methods import Objective, build_model

    dev = torch.device("cuda")
    ds = synthetic_dataset(n=64, side=8)
    split = ds.splits["train"].to(dev)
    cfg = tiny_cfg(encoder="cnn", grad_clip=1.0)
    model = build_model(method, cfg, ds.image_shape, ds.n_coarse).to(dev)
    objective = Objective(method, cfg, num_classes=ds.n_coarse, check_values=False).to(dev)
    opt = engine.make_optimizer(model.parameters(), cfg, dev)
    augment = TwoViewAugment.for_dataset(ds)
    gen = torch.Generator(device=dev).manual_seed(0)
    it = batches(split, 32, generator=torch.Generator().manual_seed(0), device=dev)
    engine.train_step(model, objective, opt, augment, next(it), cfg=cfg, generator=gen, use_amp=True)  # warm-up
    batch = next(it)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        values = engine.train_step(model, objective, opt, augment, batch, cfg=cfg, generator=gen, use_amp=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(values).all()


def test_clamp_key_reaches_the_supcon_term():
    """Config clamp="1" gives the objective's supcon term the equations' SupCon with the clamp
    (checked against the loss called directly), and the supcon-clamp row trains exactly like it."""
    from spreadcon.losses.contrastive import spread_loss
    from spreadcon.methods import Objective

    g = torch.Generator().manual_seed(0)
    z, y = 3 * torch.randn(16, 2, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    out = {"z": z, "logits": torch.zeros(16, 2, 3)}
    for clamp, want in (("1", 1.0), ("none", None), ("auto", None)):
        _, terms = Objective("supcon", tiny_cfg(clamp=clamp))(out, None, y)
        assert torch.allclose(terms["supcon"], spread_loss(z, y, 0.0, 0.5, clamp=want))
    assert not torch.allclose(spread_loss(z, y, 0.0, 0.5, clamp=1.0), spread_loss(z, y, 0.0, 0.5))  # it bites
    ds = synthetic_dataset(n=64)
    a = train("supcon-clamp", ds, tiny_cfg(epochs=1, select_on_val=False), seed=3, progress=False).model.state_dict()
    b = train("supcon", ds, tiny_cfg(epochs=1, select_on_val=False, clamp="1"), seed=3, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
