"""Worst-group robustness: per-group accuracies, and GEORGE end to end on frozen embeddings.

| function | what it measures |
|---|---|
| :func:`group_accuracies` | per-group, worst-group and average accuracy of predictions |
| :func:`worst_group` | inferred groups → last-layer Group DRO → worst-group accuracy on the true test groups |

The last layer is :func:`spreadcon.eval.probe.train_linear_head`, whose Group
DRO update is the one the whole-network retraining uses
(:func:`spreadcon.train.dro_update.group_dro_step`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from spreadcon.eval._checks import check_xy
from spreadcon.eval.probe import train_linear_head
from spreadcon.eval.subgroups import infer_subgroups, minority_recall, subgroup_agreement

__all__ = ["group_accuracies", "worst_group"]


@torch.no_grad()
def group_accuracies(pred: Tensor, y: Tensor, groups: Tensor) -> dict[str, Any]:
    """Per-group, worst-group and average accuracy.

    Returns:
        ``{"worst_group_acc": min over groups present, "avg_acc": accuracy over
        all points, "group_mean_acc": unweighted mean over groups,
        "per_group": {g: acc}, "group_counts": {g: n}}``.
    """
    correct = (pred == y).double()
    per, counts = {}, {}
    for g in groups.unique().tolist():
        m = groups == g
        per[int(g)] = correct[m].mean().item()
        counts[int(g)] = int(m.sum())
    return {
        "worst_group_acc": min(per.values()),
        "avg_acc": correct.mean().item(),
        "group_mean_acc": sum(per.values()) / len(per),
        "per_group": per,
        "group_counts": counts,
    }


def worst_group(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    test_groups: Tensor,
    train_groups: Tensor | None = None,
    *,
    groups: str = "inferred",
    max_k: int = 4,
    min_silhouette: float = 0.1,
    cluster: str = "kmeans-raw",
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 512,
    eta: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """Worst-group robustness as in GEORGE (Sohoni et al. 2020).

    1. ``groups="inferred"``: cluster each class's training embeddings
       (:func:`infer_subgroups` with pipeline ``cluster``, k by silhouette up
       to ``max_k``); ``"true"``: use ``train_groups`` (the oracle);
       ``"none"``: no groups, plain ERM (the baseline).
    2. Train a linear head on the frozen training embeddings with Group DRO on
       those groups (:func:`train_linear_head`).
    3. Score it on the test set's TRUE groups: worst-group accuracy and
       average accuracy (over all test points).

    The true training groups, when given, are used only to report how well the
    inferred groups match them unless ``groups="true"``: ``group_ami`` and
    ``group_ari`` (:func:`subgroup_agreement`) and ``minority_recall``
    (:func:`minority_recall`). Test labels and groups are used only for
    scoring. Everything after ``train_groups`` is keyword-only.

    Returns:
        ``{"worst_group_acc", "avg_acc", "group_mean_acc", "per_group",
        "group_counts", "groups", "n_groups", "k_per_class", ...}`` plus
        ``cluster``, ``group_ami``/``group_ari``(``_per_class``) and
        ``minority_recall`` when ``train_groups`` is given and groups were
        inferred.

    Example:
        See ``tests/test_evaluate.py::test_group_dro_beats_erm_on_spurious_features``.
    """
    if groups not in {"inferred", "true", "none"}:
        raise ValueError(f"groups must be 'inferred', 'true' or 'none', got {groups!r}")
    check_xy(train_x, train_y, "train")
    check_xy(test_x, test_y, "test")
    if test_groups.shape != test_y.shape:
        raise ValueError(f"test_groups must have shape {tuple(test_y.shape)}, got {tuple(test_groups.shape)}")
    if groups == "true" and train_groups is None:
        raise ValueError("groups='true' needs train_groups")
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    info: dict[str, Any] = {"groups": groups}
    opt = dict(n_classes=n_classes, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
               eta=eta, seed=seed)
    if groups == "none":
        head, fit = train_linear_head(train_x, train_y, None, "erm", **opt)
    else:
        if groups == "inferred":
            sub = infer_subgroups(train_x, train_y, max_k=max_k, min_silhouette=min_silhouette, seed=seed,
                                  cluster=cluster)
            g = sub.groups
            info.update(n_groups=sub.n_groups, k_per_class=sub.k_per_class, cluster=cluster,
                        silhouette_per_class=sub.silhouette_per_class)
            if train_groups is not None:
                agree = subgroup_agreement(g, train_groups, train_y)
                info.update({f"group_{key}": value for key, value in agree.items()})
                info["minority_recall"] = minority_recall(g, train_groups, train_y)
        else:
            g = train_groups.unique(return_inverse=True)[1]
            info.update(n_groups=int(g.max()) + 1)
        head, fit = train_linear_head(train_x, train_y, g, "group_dro", **opt)
        info["q"] = fit["q"].tolist()
    with torch.no_grad():
        pred = head(test_x).argmax(1)
    return {**group_accuracies(pred, test_y, test_groups), **info}
