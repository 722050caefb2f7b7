"""GEORGE step 2(b): retrain a whole network from scratch with online Group DRO on given groups.

:func:`spreadcon.eval.worst_group.worst_group` measures robustness with a linear head
trained on *frozen* embeddings. GEORGE (Sohoni et al. 2020) instead trains a
new network from scratch with Group DRO (Sagawa et al. 2020, Algorithm 1) on
the subgroups it inferred, and selects the epoch on validation worst-group
accuracy under the inferred validation groups. :func:`retrain_group_dro` is
that retraining, built from the package's own pieces:

* the model is the ``ce`` method's :class:`spreadcon.methods.MethodModel`
  (encoder named by ``cfg.encoder`` plus the coarse linear head), built by
  :func:`spreadcon.methods.build_model` after ``torch.manual_seed(seed)``;
* each step draws a shuffled minibatch of ``cfg.batch_size`` uint8 images kept
  on the device (:func:`spreadcon.data.batches`, dropping the last partial
  batch as the engine does), augments it into **one** view with
  :class:`spreadcon.data.augment.TwoViewAugment` and takes the per-image
  cross-entropy of the coarse head;
* the loss is online Group DRO (:func:`group_dro_step`), or the plain mean
  with ``method="erm"`` (GEORGE's ERM baseline);
* the training is the engine's own loop, :func:`spreadcon.train.loop.train`, with a
  one-view config and a :class:`spreadcon.train.loop.Recipe` that puts the Group DRO
  objective in place of the method's and selects on the val worst-group accuracy.
  Seeding, shuffling, the step (augment, forward under autocast, backward, gradient
  clipping, AdamW with ``cfg.lr``, ``cfg.weight_decay``), the warm-up + cosine
  schedule and the precision (bf16 autocast on CUDA, fp16 with a gradient scaler on
  GPUs without bf16, fp32 on CPU) are the engine's.

A step reads nothing back to the host: the group weights ``q`` live on the
device and are updated there; the loss is summed on the device and read
once per epoch (for the history and the non-finite check), after which the
validation split is evaluated. Single process only (no DDP: the group sums
would need an all-reduce).

Note: ``eta -> 0`` is *not* ERM. With ``q`` frozen at uniform the loss is
``(1/G) sum_g l_g``, the group-balanced loss, which already up-weights small
groups; ERM is the mean over images, ``method="erm"``.

Example:
    >>> res = retrain_group_dro(ds, inferred_train_groups, cfg, seed=0, device="cpu",
    ...                         val_groups=inferred_val_groups)          # doctest: +SKIP
    >>> evaluate_retrained(res.model, ds.splits["test"], ds, cfg, "cpu")["worst_group_acc"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spreadcon.methods import MethodModel
from spreadcon.presets import Config
from spreadcon.train.dro_update import group_dro_step

__all__ = ["group_dro_step", "RetrainResult", "retrain_group_dro", "predict_coarse", "evaluate_retrained"]


@dataclass
class RetrainResult:
    """What :func:`retrain_group_dro` returns.

    Attributes:
        model: the ``ce`` :class:`MethodModel` with the selected epoch's weights, in eval mode.
        best_epoch: that epoch (1-based).
        val_history: one dict per epoch: ``epoch``, ``lr`` (the last step's), ``loss`` (epoch
            mean of the training objective), ``val_avg_acc``, ``val_worst_group_acc`` and
            ``val_group_mean_acc`` (under ``val_groups``; absent without them) and ``q`` (the
            group weights at the end of the epoch, a list).
        q: float ``(G,)`` final group weights on the CPU (uniform for ``method="erm"``).
        train_time_s: wall seconds of training and per-epoch validation.
        extra: ``method``, ``eta``, ``precision``, ``selected_on``.
    """

    model: MethodModel
    best_epoch: int
    val_history: list[dict[str, Any]]
    q: Tensor
    train_time_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class _DROObjective(nn.Module):
    """The objective :func:`spreadcon.train.loop.train_step` calls: ``(out, x, y) -> (L, {"loss": L})``.

    ``L`` is :func:`group_dro_step` of the per-image cross-entropy of the single view's
    logits ``out["logits"]: (B, 1, K)``, or their mean for ``method="erm"``. The step's group
    ids are not among ``train_step``'s arguments, so the caller sets ``groups: (B,)`` before
    each step; ``q: (G,)`` is the running weight vector on the device.
    """

    def __init__(self, method: str, n_groups: int, eta: float, device: torch.device) -> None:
        super().__init__()
        self.method, self.eta = method, float(eta)
        self.q = torch.full((n_groups,), 1.0 / n_groups, device=device)
        self.groups: Tensor | None = None

    def forward(self, out: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        losses = F.cross_entropy(out["logits"][:, 0].float(), y, reduction="none")
        if self.method == "erm":
            loss = losses.mean()
        else:
            loss, self.q = group_dro_step(losses, self.groups, self.q, self.eta)
        return loss, {"loss": loss}


def _check_groups(groups: Tensor, n: int, name: str) -> None:
    if not isinstance(groups, Tensor) or groups.dtype != torch.int64 or groups.shape != (n,):
        got = f"{groups.dtype} {tuple(groups.shape)}" if isinstance(groups, Tensor) else type(groups).__name__
        raise ValueError(f"{name} must be an int64 tensor of shape ({n},) (one id per image), got {got}")
    if n and int(groups.min()) < 0:
        raise ValueError(f"{name} has a negative group id {int(groups.min())}; ids must be 0..G-1")


def predict_coarse(model: MethodModel, split, ds, cfg: Config, device) -> Tensor:
    """The coarse head's predicted classes for every image of ``split``, in order.

    Images are normalised as evaluation normalises them
    (``TwoViewAugment.for_dataset(ds).normalize``, no augmentation) and embedded by
    :func:`spreadcon.eval.embed.embed` (bf16 autocast on CUDA unless ``cfg.amp == "off"``,
    as :mod:`spreadcon.runs.experiment` does), then ``argmax(head(z))``.

    Returns:
        int64 ``(N,)`` on the CPU.
    """
    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.eval.embed import embed

    device = torch.device(device)
    aug = TwoViewAugment.for_dataset(ds)
    z = embed(model.encoder, split, aug.normalize, cfg.eval_batch_size, device,
              amp=device.type == "cuda" and cfg.amp != "off")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model.head(z.to(device)).argmax(dim=1).cpu()
    model.train(was_training)
    return pred


def evaluate_retrained(model: MethodModel, split, ds, cfg: Config, device) -> dict[str, Any]:
    """Group accuracies of a retrained model's coarse head on ``split``'s **true** groups.

    Returns:
        :func:`spreadcon.eval.worst_group.group_accuracies` of the predictions
        (:func:`predict_coarse`): ``worst_group_acc``, ``avg_acc``, ``group_mean_acc``,
        ``per_group``, ``group_counts``.

    Raises:
        ValueError: the split has no group labels (a transfer dataset).
    """
    from spreadcon.eval.worst_group import group_accuracies

    if split.group is None:
        raise ValueError("split has no group labels (split.group is None); evaluate_retrained needs a "
                         "robustness dataset")
    return group_accuracies(predict_coarse(model, split, ds, cfg, device), split.coarse, split.group)


def _check_arguments(ds, train_groups: Tensor | None, cfg: Config, *, val_groups: Tensor | None, eta: float,
                     epochs: int | None, method: str) -> tuple[Tensor, int]:
    """:func:`retrain_group_dro`'s arguments, checked before training; returns the train groups (all
    zeros for ERM without groups) and the number of epochs."""
    from spreadcon import distributed as D

    if method not in ("group_dro", "erm"):
        raise ValueError(f"method must be 'group_dro' or 'erm', got {method!r}")
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
    epochs = cfg.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    for name in ("train", "val"):
        if name not in ds.splits:
            raise ValueError(f"ds has no {name!r} split (splits: {sorted(ds.splits)})")
    n_train, n_val = len(ds.splits["train"]), len(ds.splits["val"])
    if n_train < 2:
        raise ValueError(f"the training split has {n_train} images; need at least 2")
    if train_groups is None:
        if method != "erm":
            raise ValueError("train_groups is None; Group DRO needs one group id per training image")
        train_groups = torch.zeros(n_train, dtype=torch.long)
    _check_groups(train_groups, n_train, "train_groups")
    if val_groups is not None:
        _check_groups(val_groups, n_val, "val_groups")
    if D.is_distributed():
        raise RuntimeError("retrain_group_dro runs in one process; under torch.distributed the group "
                           "losses would need an all-reduce")
    return train_groups, epochs


def retrain_group_dro(ds, train_groups: Tensor | None, cfg: Config, *, seed: int, device,
                      val_groups: Tensor | None = None, eta: float = 0.01, epochs: int | None = None,
                      method: str = "group_dro", progress: bool = False) -> RetrainResult:
    """Train the ``ce`` model from scratch on ``ds``'s train split with online Group DRO.

    Per step, on a minibatch ``B`` of ``cfg.batch_size`` images, each augmented
    once, with per-image cross-entropy ``l_i = CE(head(encoder(aug(x_i))), y_i)``
    on the coarse label and ``l_g = mean_{i in B, g_i = g} l_i``:
    ``q_g <- q_g exp(eta l_g)`` (groups present), ``q <- q / sum q``,
    ``L = sum_g q_g l_g`` (:func:`group_dro_step`); with ``method="erm"``,
    ``L = mean_{i in B} l_i``. AdamW (``cfg.lr``, ``cfg.weight_decay``) with the
    engine's warm-up + cosine schedule over ``epochs * steps_per_epoch`` steps.

    Model selection: after each epoch the val split is predicted
    (:func:`predict_coarse`). With ``val_groups`` the epoch with the best val
    worst-group accuracy under ``val_groups`` is kept (GEORGE selects with the
    inferred val groups), else the best val average accuracy; ties keep the
    earlier epoch. The best weights are copied in memory and restored at the end.

    Args:
        ds: a :class:`spreadcon.data.Dataset` with ``train`` and ``val`` splits
            (uint8 images ``(N, C, H, W)``, coarse labels ``(N,)``).
        train_groups: int64 ``(N_train,)`` group ids in ``[0, G)`` (inferred or true);
            may be None only with ``method="erm"``.
        cfg: the resolved config (``batch_size``, ``lr``, ``weight_decay``, ``epochs``,
            ``warmup_epochs``, ``cosine_period_epochs``, ``grad_clip``, ``amp``,
            ``encoder``, ``eval_batch_size``).
        seed: seeds initialisation, shuffling and augmentation.
        device: where the model and the uint8 images live.
        val_groups: int64 ``(N_val,)`` group ids of the val split for selection, or None.
        eta: Group DRO step size of ``q`` (Sagawa et al.: 0.01), ``> 0``.
        epochs: passes over the train split; default ``cfg.epochs``.
        method: ``"group_dro"`` or ``"erm"``.
        progress: a tqdm bar over steps.

    Returns:
        A :class:`RetrainResult`.

    Raises:
        ValueError: a bad argument, named (groups of the wrong shape or dtype, ``eta <= 0``,
            ``epochs < 1``, an unknown ``method``, a split missing or too small).
        RuntimeError: a non-finite loss, or a call under ``torch.distributed``.
    """
    from spreadcon.eval.worst_group import group_accuracies
    from spreadcon.train.loop import Recipe, train

    train_groups, epochs = _check_arguments(ds, train_groups, cfg, val_groups=val_groups, eta=eta, epochs=epochs,
                                            method=method)

    # ---- the engine's loop with the Group DRO objective and worst-group selection
    device = torch.device(device)
    val_split, groups_dev = ds.splits["val"].to(device), train_groups.to(device)
    objective = _DROObjective(method, int(train_groups.max()) + 1, eta, device)
    selected_on = "val_worst_group_acc" if val_groups is not None else "val_avg_acc"

    def hand_over_groups(batch: dict) -> None:  # this batch's group ids, for the objective's next call
        objective.groups = groups_dev[batch["index"]]

    def evaluate(model: MethodModel) -> dict[str, Any]:
        pred = predict_coarse(model, val_split, ds, cfg, device)
        row: dict[str, Any] = {"val_avg_acc": float((pred == val_split.coarse).double().mean())}
        if val_groups is not None:
            acc = group_accuracies(pred, val_split.coarse, val_groups)
            row.update(val_worst_group_acc=acc["worst_group_acc"], val_group_mean_acc=acc["group_mean_acc"])
        return {**row, "q": objective.q.tolist()}

    recipe = Recipe(objective=objective, terms=("loss",), on_batch=hand_over_groups, evaluate=evaluate,
                    select_on=selected_on, keep_best=True, name=f"retrain {method}")
    step_cfg = dataclasses.replace(cfg, views=1, epochs=epochs)  # one augmented view per image
    res = train("ce", ds, step_cfg, seed=seed, device=device, progress=progress, recipe=recipe)
    return RetrainResult(model=res.model, best_epoch=res.best_epoch, val_history=res.history, q=objective.q.cpu(),
                         train_time_s=res.wall_time_s,
                         extra={"method": method, "eta": float(eta), "precision": res.extra["precision"],
                                "selected_on": selected_on})
