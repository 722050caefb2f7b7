"""GEORGE step 1 (subgroup discovery) and the subgroup metrics in ``spreadcon.eval.subgroups``.

The synthetic classes are two Gaussian blobs of unequal size (95 % / 5 %) on
orthogonal directions, far apart after L2 normalisation, so a faithful
subgroup finder must return exactly those two groups per class. UMAP runs on
at most 300 points per fit; the first fit pays numba's compile (~20 s).
"""

from __future__ import annotations

import math

import pytest
import torch

from spreadcon.eval.subgroups import SUBGROUP_CLUSTERINGS, infer_subgroups, minority_recall, subgroup_agreement

D = 32


def blobs(n_per_class: int, n_classes: int = 2, minority: float = 0.05, seed: int = 0, sep: float = 8.0):
    """Class ``c``: a majority blob at ``sep·e_{2c}`` and a minority blob at ``sep·e_{2c+1}``, unit noise.

    Returns ``(x (N, D), y (N,), group (N,))`` with ``group = 2c + is_minority``.
    """
    g = torch.Generator().manual_seed(seed)
    n_min = round(n_per_class * minority)
    xs, ys, gs = [], [], []
    for c in range(n_classes):
        for is_min, n in ((0, n_per_class - n_min), (1, n_min)):
            centre = torch.zeros(D)
            centre[2 * c + is_min] = sep
            xs.append(centre + torch.randn(n, D, generator=g))
            ys.append(torch.full((n,), c))
            gs.append(torch.full((n,), 2 * c + is_min))
    return torch.cat(xs), torch.cat(ys), torch.cat(gs)


@pytest.fixture(scope="module")
def data():
    return blobs(300)


@pytest.fixture(scope="module")
def umap_gmm(data):
    x, y, _ = data
    return infer_subgroups(x, y, cluster="umap-gmm", seed=0)


@pytest.mark.parametrize("cluster", ["umap-gmm", "umap-kmeans", "kmeans-raw"])
def test_every_pipeline_recovers_the_unequal_blobs(cluster, data, umap_gmm):
    x, y, truth = data
    res = umap_gmm if cluster == "umap-gmm" else infer_subgroups(x, y, cluster=cluster, seed=0)
    assert res.cluster == cluster and res.fallback == {}
    assert res.k_per_class == {0: 2, 1: 2} and res.n_groups == 4
    agree = subgroup_agreement(res.groups, truth, y)
    assert agree["ami"] > 0.9 and agree["ari"] > 0.9
    assert minority_recall(res.groups, truth, y) == 1.0
    # the clusters are the blobs, so each blob is one inferred group
    for grp in range(4):
        assert len(res.groups[truth == grp].unique()) == 1


def test_umap_space_is_what_was_clustered(umap_gmm):
    """The kept centres live in the 2-D UMAP plane, and the models for assign() are kept."""
    assert all(c.shape == (2, 2) for c in umap_gmm.centers.values())
    assert set(umap_gmm.models) == {0, 1}
    assert all(m.reducer is not None for m in umap_gmm.models.values())


def test_assign_puts_new_points_in_their_blobs_cluster(data, umap_gmm):
    x, y, truth = data
    x_new, y_new, truth_new = blobs(300, seed=1)
    new = umap_gmm.assign(x_new, y_new)
    for grp in range(4):
        train_id = umap_gmm.groups[truth == grp].mode().values
        assert (new[truth_new == grp] == train_id).float().mean().item() == 1.0
    # training points through UMAP.transform land back in their own clusters
    assert (umap_gmm.assign(x, y) == umap_gmm.groups).float().mean().item() == 1.0


def test_same_seed_same_subgroups(data, umap_gmm):
    x, y, _ = data
    again = infer_subgroups(x, y, cluster="umap-gmm", seed=0)
    assert torch.equal(again.groups, umap_gmm.groups)
    assert again.silhouette_per_class == umap_gmm.silhouette_per_class


def test_a_one_cluster_class_stays_one_group():
    x, y, truth = blobs(150, n_classes=1, seed=2)
    # class 1: one isotropic Gaussian
    iso = torch.randn(150, D, generator=torch.Generator().manual_seed(3))
    x, y = torch.cat([x, iso]), torch.cat([y, torch.ones(150, dtype=torch.long)])
    raw = infer_subgroups(x, y, cluster="kmeans-raw")
    assert raw.k_per_class == {0: 2, 1: 1}
    # in the UMAP plane a single blob scores ~0.4, two separated blobs > 0.9 (see the docstring)
    um = infer_subgroups(x, y, cluster="umap-gmm", min_silhouette=0.6)
    assert um.k_per_class == {0: 2, 1: 1}
    assert um.silhouette_per_class[0][2] > 0.9
    assert max(um.silhouette_per_class[1].values()) < 0.6
    assert torch.equal(um.groups[y == 1], torch.full((150,), 2))


def test_tiny_class_falls_back_to_the_raw_embedding():
    x, y, truth = blobs(8, n_classes=1, minority=0.375)  # 5 + 3 points: fewer than n_neighbors + 2
    res = infer_subgroups(x, y, cluster="umap-gmm", max_k=3)
    assert 0 in res.fallback and "k-means on the normalised embedding" in res.fallback[0]
    assert res.models[0].reducer is None
    assert res.k_per_class == {0: 2}
    assert subgroup_agreement(res.groups, truth, y)["ami"] == pytest.approx(1.0)
    assert torch.equal(res.assign(x, y), res.groups)


def test_overclustering_splits_a_merged_cluster():
    """Tight blobs A (200), B (100), C (100); B and C are nearer each other than A, so k = 2 merges them.

    Overclustering by 2 splits B∪C (both halves gain silhouette and hold ≥ 25
    points) and leaves A whole (its halves lose silhouette).
    """
    g = torch.Generator().manual_seed(4)
    centre = torch.zeros(3, D)
    centre[0, 0] = 10.0
    centre[1, 1], centre[2, 1], centre[2, 2] = 10.0, 7.0, 7.0  # B, C 45° apart; A at 90° from both
    sizes = (200, 100, 100)
    x = torch.cat([centre[i] + 0.1 * torch.randn(n, D, generator=g) for i, n in enumerate(sizes)])
    truth = torch.arange(3).repeat_interleave(torch.tensor(sizes))
    y = torch.zeros(len(x), dtype=torch.long)
    base = infer_subgroups(x, y, max_k=2, cluster="kmeans-raw")
    assert base.k_per_class == {0: 2}
    oc = infer_subgroups(x, y, max_k=2, cluster="kmeans-raw", overcluster_factor=2)
    assert oc.k_per_class == {0: 3}
    assert subgroup_agreement(oc.groups, truth, y)["ami"] == pytest.approx(1.0)
    assert torch.equal(oc.assign(x, y), oc.groups)
    # GEORGE keeps a sub-cluster only if its mean loss is >= its parent's. Equal losses pass the
    # test (with > both halves of B∪C would fail, and k would fall back to 2). With F = 2 one half
    # always passes (the parent's mean lies between its halves'), so the partition is the same.
    same = infer_subgroups(x, y, max_k=2, cluster="kmeans-raw", overcluster_factor=2,
                           losses=(truth == 0).double())
    assert same.k_per_class == {0: 3}


def test_minority_recall_by_hand():
    y = torch.zeros(10, dtype=torch.long)
    true = torch.tensor([0] * 7 + [1] * 3)
    # perfect, under other ids
    assert minority_recall(torch.tensor([4] * 7 + [9] * 3), true, y) == 1.0
    # a permuted labelling is the same partition
    assert minority_recall(torch.tensor([1] * 7 + [0] * 3), true, y) == 1.0
    # the minority absorbed into the majority's cluster
    assert minority_recall(torch.zeros(10, dtype=torch.long), true, y) == 0.0
    # minority split over a cluster it owns (2 points) and the majority's (1 point)
    assert minority_recall(torch.tensor([0] * 7 + [5, 5, 0]), true, y) == pytest.approx(2 / 3)
    # pooled over classes: class 0 recalls 3 of 3, class 1 recalls 0 of 2 → 3/5
    y2 = torch.tensor([0] * 10 + [1] * 6)
    true2 = torch.cat([true, torch.tensor([5, 5, 5, 5, 6, 6])])
    inf2 = torch.cat([torch.tensor([4] * 7 + [9] * 3), torch.tensor([2, 2, 2, 2, 2, 2])])
    assert minority_recall(inf2, true2, y2) == pytest.approx(3 / 5)
    # no class with two true groups: undefined
    assert math.isnan(minority_recall(torch.tensor([0, 1]), torch.tensor([3, 3]), torch.tensor([0, 0])))


def test_subgroup_agreement_is_sklearns_ami_per_class():
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    y = torch.tensor([0] * 6 + [1] * 6)
    ref = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3])
    inf = torch.tensor([7, 7, 8, 8, 8, 8, 0, 1, 1, 0, 0, 0])
    r = subgroup_agreement(inf, ref, y)
    for c, sl in ((0, slice(0, 6)), (1, slice(6, 12))):
        assert r["ami_per_class"][c] == pytest.approx(adjusted_mutual_info_score(ref[sl].numpy(), inf[sl].numpy()))
        assert r["ari_per_class"][c] == pytest.approx(adjusted_rand_score(ref[sl].numpy(), inf[sl].numpy()))
    assert r["ami"] == pytest.approx((r["ami_per_class"][0] + r["ami_per_class"][1]) / 2)
    assert 0.0 < r["ami"] < 1.0
    assert subgroup_agreement(ref + 10, ref, y)["ami"] == pytest.approx(1.0)


def test_bad_arguments_say_what_is_wrong():
    x, y, _ = blobs(20, n_classes=1)
    with pytest.raises(ValueError, match="cluster"):
        infer_subgroups(x, y, cluster="hdbscan")
    with pytest.raises(ValueError, match="overcluster_factor"):
        infer_subgroups(x, y, overcluster_factor=0)
    with pytest.raises(ValueError, match="losses"):
        infer_subgroups(x, y, losses=torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        minority_recall(torch.zeros(3, dtype=torch.long), y, y)
    assert set(SUBGROUP_CLUSTERINGS) == {"umap-gmm", "umap-kmeans", "kmeans-raw"}
