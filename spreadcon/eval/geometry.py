"""The geometry of fixed embeddings: within-class spread and cosine, and subclass recovery (AMI).

| function | what it measures |
|---|---|
| :func:`spread_metrics` | mean within-class cosine and ``1 - ||μ_y||²`` per class |
| :func:`subclass_ami` | per-coarse-class k-means against fine labels, adjusted mutual information |
| :func:`class_map` | a 2-D map (PCA) of one coarse class's embeddings, with their fine labels |

scikit-learn is imported inside the functions that need it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from spreadcon.eval._checks import check_xy

__all__ = ["spread_metrics", "subclass_ami", "class_map"]


@torch.no_grad()
def spread_metrics(z: Tensor, labels: Tensor) -> dict[str, Any]:
    """Within-class spread of L2-normalised embeddings.

    With ``u_i = z_i / ||z_i||`` and ``n_y`` points in class ``y``:

    * ``within_cosine[y] = 1/(n_y(n_y-1)) Σ_{i≠j, y_i=y_j=y} <u_i, u_j>``
      (1 for a collapsed class; needs ``n_y ≥ 2``, else NaN);
    * ``spread[y] = 1 - ||μ_y||²`` with ``μ_y = mean_{i: y_i=y} u_i``
      (0 for a collapsed class, ``1 - 1/n_y`` for orthogonal points).

    They are tied by ``||μ_y||² = 1/n_y + (1 - 1/n_y)·within_cosine[y]``.
    Both are computed from the class sums ``s_y = Σ u_i``:
    ``Σ_{i≠j} <u_i,u_j> = ||s_y||² - n_y``.

    Args:
        z: float ``(N, D)`` embeddings (raw; normalised here).
        labels: int64 ``(N,)`` class ids.

    Returns:
        ``{"within_cosine": float, "spread": float, "classes": int64 (K,),
        "within_cosine_per_class": (K,), "spread_per_class": (K,),
        "count_per_class": (K,)}``; the averages are unweighted means over the
        classes present (NaN entries skipped).

    Example:
        >>> m = spread_metrics(torch.eye(3), torch.zeros(3, dtype=torch.long))
        >>> round(m["within_cosine"], 6), round(m["spread"], 6)
        (0.0, 0.666667)
    """
    check_xy(z, labels, "z")
    u = F.normalize(z.double(), dim=1)
    classes, inv = labels.unique(return_inverse=True)
    n = torch.bincount(inv, minlength=len(classes)).double()
    sums = torch.zeros(len(classes), u.shape[1], dtype=u.dtype).index_add_(0, inv, u)
    sq = sums.pow(2).sum(1)
    pairs = n * (n - 1)
    within = torch.where(pairs > 0, (sq - n) / pairs.clamp_min(1), torch.full_like(n, float("nan")))
    spread = 1.0 - sq / n.pow(2)
    ok = ~torch.isnan(within)
    return {
        "within_cosine": within[ok].mean().item() if ok.any() else float("nan"),
        "spread": spread.mean().item(),
        "classes": classes,
        "within_cosine_per_class": within.float(),
        "spread_per_class": spread.float(),
        "count_per_class": n.long(),
    }


def _kmeans(x, k: int, seed: int, n_init: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


def subclass_ami(
    z: Tensor, coarse: Tensor, fine: Tensor, seed: int = 0, n_init: int = 10, normalize: bool = True
) -> dict[str, Any]:
    """Subclass recovery: per-coarse-class k-means scored against fine labels by AMI.

    For each coarse class ``c`` with ``k_c ≥ 2`` distinct fine labels among its
    points, k-means with ``k = k_c`` clusters runs on that class's embeddings
    (L2-normalised first when ``normalize``), and the clustering is compared
    to the fine labels with the adjusted mutual information (1: perfect
    recovery, ≈0: chance). Coarse classes with one fine label are skipped.

    Args:
        z: float ``(N, D)``; coarse, fine: int64 ``(N,)``.
        seed: k-means ``random_state``.
        n_init: k-means restarts.
        normalize: cluster ``z / ||z||`` (the geometry the losses act on).

    Returns:
        ``{"ami": mean over scored coarse classes, "per_class": {c: ami}}``.
    """
    from sklearn.metrics import adjusted_mutual_info_score

    check_xy(z, coarse, "z")
    if fine.shape != coarse.shape:
        raise ValueError(f"fine must have shape {tuple(coarse.shape)}, got {tuple(fine.shape)}")
    x = F.normalize(z.double(), dim=1) if normalize else z.double()
    per_class = {}
    for c in coarse.unique().tolist():
        m = coarse == c
        f = fine[m]
        k = len(f.unique())
        if k < 2 or m.sum() <= k:
            continue
        pred = _kmeans(x[m].numpy(), k, seed, n_init)
        per_class[int(c)] = float(adjusted_mutual_info_score(f.numpy(), pred))
    ami = sum(per_class.values()) / len(per_class) if per_class else float("nan")
    return {"ami": ami, "per_class": per_class}


@torch.no_grad()
def class_map(z: Tensor, coarse: Tensor, fine: Tensor, *, max_points: int = 300) -> dict[str, Any]:
    """A 2-D picture of one coarse class: its L2-normalised embeddings projected on their top two
    principal directions, each point with its fine label.

    The class drawn is the coarse class with the most distinct fine labels (the lowest id on a
    tie), so that the map can show subclasses; up to ``max_points`` of its points are used, the
    same number from each fine label (the first ones of each in the split's order), so that a
    split stored sorted by label still shows every subclass. The projection is PCA of the normalised points (centred on their mean), so
    a collapsed class is a tight blob and a spread class shows its fine labels apart or mixed.
    ``explained`` is the fraction of the class's variance the two axes hold, and ``scale`` the
    root mean squared distance from the class mean (0 for a class collapsed to one point).

    Returns:
        ``{"coarse": int, "fine": [int], "xy": [[x, y]], "explained": float, "scale": float}``
        (coordinates rounded to 4 decimals: a record stays small).

    Example:
        >>> z = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
        >>> m = class_map(z, torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 2, 3]))
        >>> m["coarse"], m["fine"], len(m["xy"])
        (0, [0, 1, 2], 3)
    """
    check_xy(z, coarse, "z")
    if fine.shape != coarse.shape:
        raise ValueError(f"fine must have shape {tuple(coarse.shape)}, got {tuple(fine.shape)}")
    classes = coarse.unique().tolist()
    counts = [len(fine[coarse == c].unique()) for c in classes]
    c = classes[counts.index(max(counts))]
    members = (coarse == c).nonzero().flatten()
    subs = fine[members].unique()
    per_fine = max(1, max_points // len(subs))
    keep = torch.cat([members[fine[members] == f][:per_fine] for f in subs.tolist()]).sort().values
    u = F.normalize(z[keep].double(), dim=1)
    centred = u - u.mean(0, keepdim=True)
    total = centred.pow(2).sum()
    if len(keep) >= 2 and total > 0:
        _, s, v = torch.linalg.svd(centred, full_matrices=False)
        xy = centred @ v[:2].T
        explained = float(s[:2].pow(2).sum() / s.pow(2).sum())
    else:  # one point, or all points equal: nothing to project
        xy = torch.zeros(len(keep), 2, dtype=u.dtype)
        explained = 1.0
    if xy.shape[1] < 2:  # one embedding dimension
        xy = torch.cat([xy, torch.zeros_like(xy)], 1)
    return {"coarse": int(c), "fine": fine[keep].tolist(), "xy": [[round(a, 4), round(b, 4)] for a, b in xy.tolist()],
            "explained": round(explained, 4), "scale": round(float(total / len(keep)) ** 0.5, 4)}
