"""GEORGE step 1: subgroups inferred per class, and how well they match a reference.

| function | what it does |
|---|---|
| :func:`infer_subgroups` | cluster each class's embeddings (UMAP + Gaussian mixture, or k-means), k by silhouette |
| :func:`subgroup_agreement` | per-class AMI and ARI of inferred subgroups against any reference labelling |
| :func:`minority_recall` | share of each class's smallest true group that its inferred clusters recover |

**The pipelines.** Each class is clustered on its own (Sohoni et al. 2020,
"No subclass left behind"). Three pipelines, by ``cluster``
(:data:`SUBGROUP_CLUSTERINGS`):

* ``"umap-gmm"`` (GEORGE's): L2-normalise, reduce the class's points with
  UMAP to ``umap_components`` dimensions, fit a Gaussian mixture (full
  covariances) for each ``k`` in ``2..max_k``, and keep the ``k`` with the
  largest *mean per-cluster silhouette* (the mean over clusters of each
  cluster's mean silhouette, Euclidean, in the UMAP space; ties go to the
  larger ``k``, as in GEORGE).
* ``"umap-kmeans"``: the same with k-means instead of the mixture.
* ``"kmeans-raw"`` (the default, and the behaviour before the UMAP pipelines
  existed): k-means on the normalised ``D``-dim embedding, ``k`` by
  scikit-learn's global ``silhouette_score`` (ties to the smaller ``k``).

**No subgroups.** In all three, ``k = 1`` is chosen when even the best score
is below ``min_silhouette`` (default 0.1: "no substantial structure" in
Kaufman & Rousseeuw's reading of silhouette widths is below 0.25; we use a
laxer bar because high-dimensional clusters score low). GEORGE has no
``k = 1`` option. In a 2-D UMAP plane even one isotropic Gaussian scores
0.36-0.45 (measured: 150-500 points, 8-32 dims, k = 2..5), because UMAP with
``min_dist=0`` tears a blob into clumps, so with ``umap-*`` a
``min_silhouette`` of about 0.6 is needed for ``k = 1`` to be possible; two
well-separated blobs score above 0.9 there.

The default stays ``"kmeans-raw"``: with ``"umap-gmm"``, the isotropic class
of ``tests/test_evaluate.py::test_silhouette_picks_the_right_k_per_class`` is
split and the 2-D spurious-feature classes of
``test_group_dro_beats_erm_on_spurious_features`` get ``k = max_k`` (UMAP
clumps the majority group), so the existing results and tests are kept.

**Overclustering** (``overcluster_factor = F > 1``, GEORGE's
``OverclusterModel``): after the base clustering of a class with ``k ≥ 2``,
each base cluster is split into ``F`` sub-clusters by the same clusterer, and
a sub-cluster becomes a group of its own iff its mean silhouette
(overclustered labelling) beats its points' mean silhouette under the base
labelling and 0, it holds at least ``max(0.5 % of the class, 25)`` points,
and, when per-point ``losses`` are given, its mean loss is at least its base
cluster's. The rest of a split cluster stays one group. GEORGE also requires
25 *validation* points per kept sub-cluster, and always has the losses (of
its ERM model); we have no validation split here, and without ``losses`` the
loss test is skipped. Classes with ``k = 1`` are not overclustered (there is
no base silhouette to beat).

**GEORGE's defaults**, read in HazyResearch/hidden-stratification
(``stratification/utils/schema.py``, ``stratification/harness.py``,
``stratification/cluster/models/reduction.py`` and ``.../cluster.py``), and
what we do:

==========================  ==========================  ==================
setting                     GEORGE                      here
==========================  ==========================  ==================
normalise before reducing   yes (``normalize: True``)   ``normalize=True``
reducer                     UMAP, 2 components          same
UMAP n_neighbors, min_dist  10, 0.0                     same
UMAP metric                 UMAP's default, euclidean   same
UMAP random_state           the run's seed              ``seed``, n_jobs=1
clusterer                   GaussianMixture, full cov.  same (``umap-gmm``)
restarts                    ``n_init=3``                3 (``umap-*``)
k                           ``k=10`` fixed unless       search ``2..max_k``
                            ``search_k`` (then 2..k)    (``max_k=4``)
selection score             mean per-cluster silhouette same (``umap-*``)
k = 1                       never                       ``min_silhouette``
overclustering              off; factor 5 when on       off (``F=1``)
overcluster filter          sil > max(orig, 0), loss ≥  same, no val. count
                            parent, ≥ max(.5 %, 25) pts
                            (train), ≥ 25 (val)
==========================  ==========================  ==================

GEORGE's released configs vary these: Waterbirds uses its "hardness" reducer
with 1 component and ``search_k``, CelebA clusters raw features with k-means
and overclustering, MNIST uses UMAP + GMM with overclustering.

scikit-learn and umap-learn are imported inside the functions that need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from spreadcon.eval._checks import check_xy

__all__ = ["SUBGROUP_CLUSTERINGS", "SubgroupResult", "infer_subgroups", "subgroup_agreement", "minority_recall"]

#: The step-1 pipelines :func:`infer_subgroups` can run (see the module docstring).
SUBGROUP_CLUSTERINGS = ("umap-gmm", "umap-kmeans", "kmeans-raw")


def _make_clusterer(method: str, k: int, seed: int, n_init: int):
    """An unfitted scikit-learn clusterer with ``fit``/``predict``: ``"gmm"`` or ``"kmeans"``."""
    if method == "gmm":
        from sklearn.mixture import GaussianMixture

        # covariance_type="full" is scikit-learn's default, and GEORGE keeps it
        return GaussianMixture(n_components=k, covariance_type="full", n_init=n_init, random_state=seed)
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed)


def _mean_cluster_silhouette(x, assign, sample: int, seed: int) -> float:
    """GEORGE's model-selection score: the mean over clusters of each cluster's mean silhouette."""
    import numpy as np
    from sklearn.metrics import silhouette_samples

    if len(x) > sample:
        idx = np.random.RandomState(seed).choice(len(x), sample, replace=False)
        x, assign = x[idx], assign[idx]
        if len(np.unique(assign)) < 2:
            return -1.0
    s = silhouette_samples(x, assign)
    return float(np.mean([s[assign == j].mean() for j in np.unique(assign)]))


@dataclass
class _ClassClusterer:
    """The fitted step-1 models of one class, so :meth:`SubgroupResult.assign` can place new points.

    ``predict`` maps normalised embeddings ``(n, D)`` to this class's local
    cluster ids ``0..k-1``: ``reducer.transform`` (if any), then ``base.predict``,
    then, inside each overclustered base cluster, ``sub[b].predict``, and
    ``label_map[(base, sub)]`` gives the final id (``sub = 0`` where a base
    cluster was not split).
    """

    reducer: Any  # fitted umap.UMAP, or None: clustered the (normalised) embedding itself
    base: Any  # fitted clusterer, or None when k = 1
    sub: dict[int, Any] = field(default_factory=dict)
    label_map: dict[tuple[int, int], int] = field(default_factory=dict)

    def predict(self, x):
        import numpy as np

        if self.base is None:
            return np.zeros(len(x), dtype=np.int64)
        if self.reducer is not None:
            x = self.reducer.transform(x).astype(np.float64)
        base = np.asarray(self.base.predict(x), dtype=np.int64)
        sub = np.zeros_like(base)
        for b, model in self.sub.items():
            m = base == b
            if m.any():
                sub[m] = model.predict(x[m])
        return np.array([self.label_map[(int(b), int(s))] for b, s in zip(base, sub)], dtype=np.int64)


def _overcluster(x, base, *, method: str, factor: int, losses, seed: int, n_init: int):
    """GEORGE's overclustering of one class: split each cluster, keep the sub-clusters that earn it.

    Each base cluster ``b`` (``≥ factor`` points) is clustered again into
    ``factor`` sub-clusters with the same clusterer. Sub-cluster ``(b, j)`` is
    kept as a group of its own iff all of

    * its mean silhouette under the overclustering is above both its points'
      mean silhouette under the base clustering and 0;
    * it has at least ``max(0.005 n, 25)`` of the class's ``n`` points;
    * (only when ``losses`` is given) its mean loss is at least the mean loss
      of ``b``: splitting off a *harder* part is the point.

    Sub-clusters not kept are merged back into one group for ``b``; when all
    ``factor`` are kept, ``b`` itself disappears.

    Returns:
        ``(sub_models, label_map, final)``: ``{b: fitted clusterer}``,
        ``{(b, j): final id}``, and the int64 ``(n,)`` final ids.
    """
    import numpy as np
    from sklearn.metrics import silhouette_samples

    n, k = len(x), int(base.max()) + 1
    sub_models, sub = {}, np.zeros(n, dtype=np.int64)
    for b in range(k):
        m = base == b
        if m.sum() >= max(factor, 2):
            sub_models[b] = _make_clusterer(method, factor, seed, n_init).fit(x[m])
            sub[m] = sub_models[b].predict(x[m])
    keep = set()
    if sub_models:
        oc = base * factor + sub
        sil_base, sil_oc = silhouette_samples(x, base), silhouette_samples(x, oc)
        min_size = max(0.005 * n, 25)
        for b in sub_models:
            for j in range(factor):
                m = oc == b * factor + j
                if m.sum() < min_size or not sil_oc[m].mean() > max(sil_base[m].mean(), 0.0):
                    continue
                if losses is not None and losses[m].mean() < losses[base == b].mean():
                    continue
                keep.add((b, j))
    label_map, next_id = {}, 0
    for b in range(k):
        subs = range(factor) if b in sub_models else (0,)
        merged = None
        if any((b, j) not in keep for j in subs):
            merged, next_id = next_id, next_id + 1
        for j in subs:
            if (b, j) in keep:
                label_map[(b, j)], next_id = next_id, next_id + 1
            else:
                label_map[(b, j)] = merged
    final = np.array([label_map[(int(b), int(s))] for b, s in zip(base, sub)], dtype=np.int64)
    return sub_models, label_map, final


@dataclass
class SubgroupResult:
    """Subgroups inferred per class (GEORGE step 1).

    Attributes:
        groups: int64 ``(N,)`` global subgroup ids; class ``y``'s clusters get
            consecutive ids starting at ``offset[y]``.
        n_groups: total number of inferred subgroups.
        k_per_class: final number of clusters per class (after overclustering).
        silhouette_per_class: ``{y: {k: score}}`` for every k tried (the
            selection score of ``cluster``; see :func:`infer_subgroups`).
        centers: ``{y: (k, d) float}`` mean of each cluster in the clustered
            space (the ``D``-dim embedding, or the UMAP plane).
        offset: ``{y: first global id of class y}``.
        normalize: whether the embeddings were L2-normalised before clustering.
        cluster: the pipeline, one of :data:`SUBGROUP_CLUSTERINGS`.
        models: ``{y: fitted reducer and clusterers}``, used by :meth:`assign`.
        fallback: ``{y: reason}`` for classes too small for UMAP, which were
            clustered with k-means on the normalised embedding instead.
    """

    groups: Tensor
    n_groups: int
    k_per_class: dict[int, int]
    silhouette_per_class: dict[int, dict[int, float]]
    centers: dict[int, Tensor]
    offset: dict[int, int]
    normalize: bool = True
    cluster: str = "kmeans-raw"
    models: dict[int, _ClassClusterer] = field(default_factory=dict)
    fallback: dict[int, str] = field(default_factory=dict)

    def assign(self, z: Tensor, labels: Tensor) -> Tensor:
        """Subgroup ids for new points ``z`` ``(n, D)`` of classes ``labels`` ``(n,)``.

        With fitted models (every result :func:`infer_subgroups` returns), each
        class's points go through that class's reducer (``UMAP.transform``) and
        clusterer (``predict``); for k-means on the raw embedding that is the
        nearest centre. Results built without models fall back to the nearest
        entry of ``centers``. A class never seen in training gets id ``-1``.

        Note:
            ``UMAP.transform`` of the training points is close to, not equal to,
            the embedding UMAP fitted, so in the ``umap-*`` pipelines
            ``assign(z_train, y_train)`` can differ from ``groups`` on a few
            border points.
        """
        x = F.normalize(z.double(), dim=1) if self.normalize else z.double()
        out = torch.full((len(z),), -1, dtype=torch.long)
        for y, c in self.centers.items():
            m = labels == y
            if not m.any():
                continue
            if y in self.models:
                local = torch.as_tensor(self.models[y].predict(x[m].numpy()), dtype=torch.long)
            else:
                local = torch.cdist(x[m], c).argmin(1)
            out[m] = local + self.offset[y]
        return out



@dataclass(frozen=True)
class _Step1Settings:
    """The settings of one :func:`infer_subgroups` call, the same for every class it clusters."""

    cluster: str
    max_k: int
    min_silhouette: float
    seed: int
    n_init: int
    silhouette_sample: int
    umap_components: int
    umap_neighbors: int
    umap_min_dist: float
    overcluster_factor: int


class _ClassFit(NamedTuple):
    """One class's step-1 result: local ids ``0..k-1`` of its points, and what produced them."""

    assign: Any  # int64 numpy (n,): local cluster ids
    k: int
    scores: dict[int, float]  # selection score of every k tried
    space: Any  # float64 numpy (n, d): the points as clustered (the embedding, or the UMAP plane)
    models: _ClassClusterer
    fallback: str | None  # why UMAP was skipped, or None


def _check_subgroup_args(labels: Tensor, s: _Step1Settings, losses: Tensor | None) -> None:
    """Raise ``ValueError`` naming the first bad setting of :func:`infer_subgroups`."""
    if s.max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {s.max_k!r}")
    if s.cluster not in SUBGROUP_CLUSTERINGS:
        raise ValueError(f"cluster must be one of {SUBGROUP_CLUSTERINGS}, got {s.cluster!r}")
    if s.umap_components < 1:
        raise ValueError(f"umap_components must be >= 1, got {s.umap_components!r}")
    if s.umap_neighbors < 2:
        raise ValueError(f"umap_neighbors must be >= 2, got {s.umap_neighbors!r}")
    if not isinstance(s.overcluster_factor, int) or s.overcluster_factor < 1:
        raise ValueError(f"overcluster_factor must be an int >= 1, got {s.overcluster_factor!r}")
    if losses is not None:
        if losses.shape != labels.shape:
            raise ValueError(f"losses must have shape {tuple(labels.shape)}, got {tuple(losses.shape)}")
        if not torch.isfinite(losses).all():
            raise ValueError("losses must be finite")


def _reduce(xn, s: _Step1Settings):
    """The space one class is clustered in: ``(points, reducer, clusterer name, GEORGE's score?, fallback)``.

    ``umap-*``: the class's UMAP embedding, unless the class has fewer than
    ``umap_neighbors + 2`` points (then the normalised embedding, with the
    reason as ``fallback``). ``kmeans-raw``: the normalised embedding itself.
    """
    import numpy as np

    if not s.cluster.startswith("umap"):
        return xn, None, "kmeans", False, None
    if len(xn) < s.umap_neighbors + 2:
        reason = (f"{len(xn)} points < umap_neighbors + 2 = {s.umap_neighbors + 2}: "
                  "k-means on the normalised embedding")
        return xn, None, "kmeans", False, reason
    import umap  # GEORGE's reducer; imported here so the package imports without it

    reducer = umap.UMAP(n_components=s.umap_components, n_neighbors=s.umap_neighbors,
                        min_dist=s.umap_min_dist, random_state=s.seed, n_jobs=1)
    xn = reducer.fit(xn).embedding_.astype(np.float64)
    return xn, reducer, ("gmm" if s.cluster == "umap-gmm" else "kmeans"), True, None


def _choose_k(xn, *, method: str, georges_score: bool, s: _Step1Settings):
    """Fit ``k = 2..max_k`` clusters and keep the best-scoring ``k``: ``(k, model, assignment, scores)``.

    The score is GEORGE's mean per-cluster silhouette (ties to the larger
    ``k``) or scikit-learn's ``silhouette_score`` (ties to the smaller). A
    ``k`` whose fit leaves a cluster empty is skipped; a best score below
    ``min_silhouette`` gives ``k = 1`` (model None).
    """
    import numpy as np
    from sklearn.metrics import silhouette_score

    best = (-math.inf, 1, None, np.zeros(len(xn), dtype=np.int64))  # (score, k, model, assignment)
    scores = {}
    for k in range(2, min(s.max_k, len(xn) - 1) + 1):
        model = _make_clusterer(method, k, s.seed, s.n_init).fit(xn)
        a = np.asarray(model.predict(xn), dtype=np.int64)
        if len(np.unique(a)) < k:  # a component left empty: not k clusters
            continue
        if georges_score:
            score = _mean_cluster_silhouette(xn, a, s.silhouette_sample, s.seed)
        else:
            score = float(silhouette_score(xn, a, sample_size=min(s.silhouette_sample, len(xn)),
                                           random_state=s.seed))
        scores[k] = score
        if score > best[0] or (georges_score and score == best[0]):
            best = (score, k, model, a)
    score, k, model, a = best
    if score < s.min_silhouette:
        k, model, a = 1, None, np.zeros(len(xn), dtype=np.int64)
    return k, model, a, scores


def _cluster_class(xn, losses, s: _Step1Settings) -> _ClassFit:
    """Step 1 for one class's normalised points ``xn`` (numpy ``(n, D)``): reduce, choose k, overcluster."""
    xn, reducer, method, georges_score, fallback = _reduce(xn, s)
    k, model, a, scores = _choose_k(xn, method=method, georges_score=georges_score, s=s)
    fitted = _ClassClusterer(reducer, model, label_map={(j, 0): j for j in range(k)})
    if s.overcluster_factor > 1 and k >= 2:
        fitted.sub, fitted.label_map, a = _overcluster(
            xn, a, method=method, factor=s.overcluster_factor, losses=losses, seed=s.seed, n_init=s.n_init)
        k = int(a.max()) + 1
    return _ClassFit(a, k, scores, xn, fitted, fallback)


def infer_subgroups(
    z: Tensor,
    labels: Tensor,
    *,
    max_k: int = 4,
    min_silhouette: float = 0.1,
    seed: int = 0,
    n_init: int | None = None,
    normalize: bool = True,
    silhouette_sample: int = 2000,
    cluster: str = "kmeans-raw",
    umap_components: int = 2,
    umap_neighbors: int = 10,
    umap_min_dist: float = 0.0,
    overcluster_factor: int = 1,
    losses: Tensor | None = None,
) -> SubgroupResult:
    """GEORGE step 1: cluster each class's embeddings, choosing k by silhouette.

    Each class is reduced (``umap-*``: UMAP; ``kmeans-raw``: not at all),
    clustered for each ``k`` in ``2..max_k`` (Gaussian mixture or k-means),
    and keeps the ``k`` with the best silhouette score, or ``k = 1`` when that
    score is below ``min_silhouette``; with ``overcluster_factor > 1`` its
    clusters are then split where the split earns it. The module docstring
    gives each pipeline's score, the ``k = 1`` rule, the overclustering filter
    and GEORGE's defaults beside ours. Everything after ``labels`` is
    keyword-only.

    Args:
        z: float ``(N, D)`` embeddings; labels: int64 ``(N,)`` classes.
        max_k: largest number of clusters tried per class (``≥ 1``).
        min_silhouette: below this best score a class stays one group.
        seed: UMAP, clusterer and silhouette-subsample ``random_state``.
        n_init: clusterer restarts; default 10 for ``kmeans-raw`` (as before),
            3 for ``umap-*`` (GEORGE's).
        normalize: cluster ``z / ||z||``.
        silhouette_sample: at most this many points per selection score.
        cluster: one of :data:`SUBGROUP_CLUSTERINGS`.
        umap_components, umap_neighbors, umap_min_dist: UMAP's
            ``n_components``, ``n_neighbors``, ``min_dist``. A class with
            fewer than ``umap_neighbors + 2`` points is clustered with k-means
            on the normalised embedding instead, and listed in
            ``result.fallback``.
        overcluster_factor: ``F``; 1 turns overclustering off.
        losses: optional float ``(N,)`` per-point losses (GEORGE: the ERM
            model's training losses), used only by the overclustering filter.

    Returns:
        :class:`SubgroupResult`, with the fitted models for :meth:`~SubgroupResult.assign`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.cat([torch.randn(40, 2, generator=g) * 0.1 + torch.tensor([1.0, 0.0]),
        ...                torch.randn(10, 2, generator=g) * 0.1 + torch.tensor([0.0, 1.0])])
        >>> res = infer_subgroups(z, torch.zeros(50, dtype=torch.long), max_k=3)
        >>> res.k_per_class, sorted(torch.bincount(res.groups).tolist())
        ({0: 2}, [10, 40])
    """
    check_xy(z, labels, "z")
    if n_init is None:
        n_init = 3 if str(cluster).startswith("umap") else 10
    s = _Step1Settings(cluster, max_k, min_silhouette, seed, n_init, silhouette_sample,
                       umap_components, umap_neighbors, umap_min_dist, overcluster_factor)
    _check_subgroup_args(labels, s, losses)
    x = F.normalize(z.double(), dim=1) if normalize else z.double()
    groups = torch.empty(len(z), dtype=torch.long)
    k_per_class, sil, centers, offset, models, fallback = {}, {}, {}, {}, {}, {}
    next_id = 0
    for y in labels.unique().tolist():
        y = int(y)
        m = labels == y
        fit = _cluster_class(x[m].numpy(), None if losses is None else losses[m].double().numpy(), s)
        if fit.fallback is not None:
            fallback[y] = fit.fallback
        at = torch.as_tensor(fit.assign, dtype=torch.long)
        xt = torch.as_tensor(fit.space, dtype=torch.float64)
        centers[y] = torch.stack([xt[at == j].mean(0) for j in range(fit.k)])
        groups[m] = at + next_id
        offset[y], k_per_class[y], sil[y], models[y] = next_id, fit.k, fit.scores, fit.models
        next_id += fit.k
    return SubgroupResult(groups, next_id, k_per_class, sil, centers, offset, normalize,
                          cluster=cluster, models=models, fallback=fallback)


def subgroup_agreement(inferred: Tensor, reference: Tensor, labels: Tensor) -> dict[str, Any]:
    """Per-class agreement of an inferred subgroup labelling with a reference one.

    Within each class ``y`` (the points with ``labels == y``), the inferred ids
    are compared with the reference ids by the adjusted mutual information
    (scikit-learn's ``adjusted_mutual_info_score``, arithmetic normalisation)
    and the adjusted Rand index; both are 1 for the same partition (whatever
    the ids) and about 0 for chance. The reference can be any labelling: true
    groups, digit identity, background colour. Scores are averaged over
    classes with equal weight.

    Args:
        inferred, reference, labels: int64 ``(N,)``.

    Returns:
        ``{"ami", "ari": class means, "ami_per_class", "ari_per_class": {y: score}}``.

    Example:
        >>> y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> r = subgroup_agreement(torch.tensor([5, 5, 6, 6, 0, 0, 0, 1]),
        ...                        torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), y)
        >>> r["ami_per_class"][0], r["ari_per_class"][0]
        (1.0, 1.0)
    """
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    if inferred.shape != labels.shape or reference.shape != labels.shape:
        raise ValueError(f"inferred {tuple(inferred.shape)}, reference {tuple(reference.shape)} and "
                         f"labels {tuple(labels.shape)} must have one shape (N,)")
    ami, ari = {}, {}
    for y in labels.unique().tolist():
        m = labels == y
        a, b = inferred[m].numpy(), reference[m].numpy()
        ami[int(y)] = float(adjusted_mutual_info_score(b, a))
        ari[int(y)] = float(adjusted_rand_score(b, a))
    return {
        "ami": sum(ami.values()) / len(ami),
        "ari": sum(ari.values()) / len(ari),
        "ami_per_class": ami,
        "ari_per_class": ari,
    }


def minority_recall(inferred: Tensor, true: Tensor, labels: Tensor) -> float:
    """Fraction of the true-minority points whose inferred cluster is "theirs".

    Definition. Within each class ``y``:

    1. the *true minority* is the smallest true group among the class's points
       (ties: the smallest group id); a class with a single true group has no
       minority and contributes nothing;
    2. each inferred cluster ``c`` (among the class's points) is *mapped* to the
       true group holding most of its points in that class (ties: the smallest
       group id);
    3. a minority point is *recalled* when its cluster maps to its own group.

    The recall pools over classes: recalled minority points / all minority
    points. It is 1.0 when the clusters are the true groups (under any ids),
    and 0 when every minority point sits in a cluster that the majority
    dominates (the minority was absorbed). NaN when no class has two true
    groups.

    Args:
        inferred, true, labels: int64 ``(N,)``.

    Returns:
        float in ``[0, 1]``, or NaN.

    Example:
        >>> y = torch.zeros(6, dtype=torch.long)
        >>> true = torch.tensor([0, 0, 0, 0, 1, 1])
        >>> minority_recall(torch.tensor([3, 3, 3, 3, 7, 7]), true, y)
        1.0
        >>> minority_recall(torch.tensor([3, 3, 3, 3, 3, 7]), true, y)  # one of two absorbed
        0.5
    """
    if inferred.shape != labels.shape or true.shape != labels.shape:
        raise ValueError(f"inferred {tuple(inferred.shape)}, true {tuple(true.shape)} and "
                         f"labels {tuple(labels.shape)} must have one shape (N,)")
    hit = total = 0
    for y in labels.unique().tolist():
        m = labels == y
        t, c = true[m], inferred[m]
        ids, counts = t.unique(return_counts=True)  # ids ascending, so argmin breaks ties to the smallest
        if len(ids) < 2:
            continue
        minority = ids[counts.argmin()]
        mine = t == minority
        owner = {}
        for cl in c.unique().tolist():
            gids, gcounts = t[c == cl].unique(return_counts=True)
            owner[cl] = int(gids[gcounts.argmax()])
        hit += sum(owner[cl] == int(minority) for cl in c[mine].tolist())
        total += int(mine.sum())
    return hit / total if total else float("nan")
