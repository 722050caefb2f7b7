"""Evaluation on synthetic features whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from spreadcon.eval.embed import embed
from spreadcon.eval.geometry import class_map, spread_metrics, subclass_ami
from spreadcon.eval.knn import knn_accuracy
from spreadcon.eval.probe import linear_probe, linear_probe_augmented, train_linear_head
from spreadcon.eval.subgroups import infer_subgroups
from spreadcon.eval.worst_group import group_accuracies, worst_group


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def linear_data(n, d=10, k=4, seed=0):
    """Points labelled by argmax of a fixed linear map (linearly separable)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, k, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, d, generator=g)
    return x, (x @ w).argmax(1)


# ------------------------------------------------------------------ probes


@pytest.mark.parametrize("method", ["lbfgs", "closed_form"])
def test_probe_on_separable_data_is_near_perfect(method):
    xtr, ytr = linear_data(2000, seed=0)
    xte, yte = linear_data(1000, seed=1)
    res = linear_probe(xtr, ytr, xte, yte, method=method, l2=1e-6, max_iter=200)
    floor = 0.97 if method == "lbfgs" else 0.85  # ridge on one-hot targets is a weaker classifier
    assert res.accuracy >= floor
    assert res.predictions.shape == (1000,)
    assert res.accuracy == pytest.approx((res.predictions == yte).double().mean().item())


def test_probe_on_random_labels_is_at_chance():
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(1000, 20, generator=g), torch.randn(2000, 20, generator=g)
    ytr, yte = torch.randint(0, 5, (1000,), generator=g), torch.randint(0, 5, (2000,), generator=g)
    res = linear_probe(xtr, ytr, xte, yte, l2=1e-3)
    sd = math.sqrt(0.2 * 0.8 / 2000)
    assert abs(res.accuracy - 0.2) < 4 * sd
    assert res.train_accuracy > 0.2 + 4 * math.sqrt(0.16 / 1000)  # it does fit the training noise a little


def test_probe_lbfgs_matches_sklearn_logistic_regression():
    """Same objective as sklearn's (C = 1 / (N · l2)) gives the same predictions."""
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = linear_data(300, d=5, k=3, seed=2)
    xtr = xtr + 0.8 * torch.randn(300, 5, generator=torch.Generator().manual_seed(3))  # overlap
    xte, yte = linear_data(200, d=5, k=3, seed=4)
    l2 = 1e-2
    res = linear_probe(xtr, ytr, xte, yte, l2=l2, max_iter=500)
    mu, sd = xtr.double().mean(0), xtr.double().std(0, unbiased=False)
    sk = LogisticRegression(C=1.0 / (len(xtr) * l2), tol=1e-10, max_iter=5000)
    sk.fit(((xtr - mu) / sd).numpy(), ytr.numpy())
    sk_pred = torch.as_tensor(sk.predict(((xte - mu) / sd).numpy()))
    assert (sk_pred == res.predictions).double().mean() >= 0.99


def test_probe_l2_selection_never_looks_at_test():
    xtr, ytr = linear_data(400, seed=5)
    xva, yva = linear_data(200, seed=6)
    xte, yte = linear_data(200, seed=7)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    a = linear_probe(xtr, ytr, xte, yte, l2=grid, val_x=xva, val_y=yva)
    b = linear_probe(xtr, ytr, xte, yte.roll(1), l2=grid, val_x=xva, val_y=yva)
    assert a.l2 == b.l2 and a.val_accuracy == b.val_accuracy
    assert a.l2 < 100.0  # the huge penalty underfits and loses on validation
    with pytest.raises(ValueError, match="val"):
        linear_probe(xtr, ytr, xte, yte, l2=grid)


def test_probe_bad_input():
    x, y = linear_data(10)
    with pytest.raises(ValueError, match="method"):
        linear_probe(x, y, x, y, method="sgd")
    with pytest.raises(ValueError, match="train_y"):
        linear_probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="non-finite"):
        linear_probe(x * float("nan"), y, x, y)


def test_augmented_probe_learns_and_selects_on_val():
    """The paper's protocol on a frozen identity-like encoder over 2×2 images."""
    g = torch.Generator().manual_seed(0)

    def images(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randint(0, 100, (n, 1, 2, 2), generator=g, dtype=torch.uint8)
        x[:, 0, 0, 0] = (y * 150 + torch.randint(0, 100, (n,), generator=g)).to(torch.uint8)
        return x, y

    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4))
    with torch.no_grad():
        enc[1].weight.copy_(torch.eye(4))
        enc[1].bias.zero_()
    enc.train()

    def aug(x, views=2, generator=None):
        xf = x.float() / 255
        return (xf.unsqueeze(1) + 0.01 * torch.randn(len(x), views, *x.shape[1:], generator=generator))

    res = linear_probe_augmented(enc, images(256), images(200), aug, lambda x: x.float() / 255,
                                 n_classes=2, epochs=15, lr=5e-2, batch_size=64, val=images(100),
                                 generator=torch.Generator().manual_seed(1))
    assert res.accuracy > 0.95 and res.val_accuracy > 0.95
    assert 1 <= res.details["epoch"] <= 15
    assert enc.training  # the encoder's mode is restored
    assert all(p.grad is None for p in enc.parameters())  # and it stayed frozen


# ---------------------------------------------------------------- embed


def test_embed_matches_direct_forward_from_every_source():
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3), torch.nn.Dropout(0.5))
    enc.train()
    x = torch.randint(0, 256, (10, 3, 2, 2), dtype=torch.uint8)
    ref = enc.eval()(x.float() / 255).detach()
    enc.train()
    torch.testing.assert_close(embed(enc, x, batch_size=3), ref)
    torch.testing.assert_close(embed(enc, [{"images": x[:4]}, {"images": x[4:]}]), ref)
    torch.testing.assert_close(embed(enc, [x[:7], x[7:]]), ref)
    assert enc.training


def test_embed_of_a_split():
    data = pytest.importorskip("spreadcon.data")
    x = torch.randint(0, 256, (6, 1, 2, 2), dtype=torch.uint8)
    split = data.Split(fine=torch.arange(6), coarse=torch.zeros(6, dtype=torch.long), images=x)
    enc = torch.nn.Flatten()
    torch.testing.assert_close(embed(enc, split, batch_size=4), x.flatten(1).float() / 255)


# ------------------------------------------------------------------- kNN


def knn_reference(trx, tr_y, tex, te_y, k):
    correct = 0
    for xi, yi in zip(tex, te_y):
        sims = [(float(torch.nn.functional.cosine_similarity(xi, xj, dim=0)), int(yj)) for xj, yj in zip(trx, tr_y)]
        sims.sort(key=lambda t: -t[0])
        votes = {}
        for s, c in sims[:k]:
            cnt, tot = votes.get(c, (0, 0.0))
            votes[c] = (cnt + 1, tot + s)
        pred = max(votes, key=lambda c: votes[c])  # count first, then summed similarity
        correct += pred == int(yi)
    return correct / len(tex)


@pytest.mark.parametrize("k", [1, 4, 7])
def test_knn_matches_slow_reference(k):
    g = torch.Generator().manual_seed(k)
    trx, tex = torch.randn(60, 5, generator=g), torch.randn(25, 5, generator=g)
    tr_y, te_y = (trx[:, 0] > 0).long() + (trx[:, 1] > 0).long(), (tex[:, 0] > 0).long() + (tex[:, 1] > 0).long()
    assert knn_accuracy(trx, tr_y, tex, te_y, k=k, batch_size=7) == pytest.approx(knn_reference(trx, tr_y, tex, te_y, k))


def test_knn_is_scale_invariant_cosine():
    x, y = linear_data(200, seed=9)
    scaled = x * torch.rand(200, 1) * 10
    assert knn_accuracy(x, y, x, y, k=5) == knn_accuracy(scaled, y, x, y, k=5)


# ----------------------------------------------------------------- spread


def test_spread_of_collapsed_classes():
    z = torch.tensor([[2.0, 0, 0]] * 5 + [[0, 0, -1.0]] * 4)
    y = torch.tensor([0] * 5 + [1] * 4)
    m = spread_metrics(z, y)
    assert m["within_cosine"] == pytest.approx(1.0)
    assert m["spread"] == pytest.approx(0.0, abs=1e-12)


def test_spread_of_orthogonal_and_antipodal_configurations():
    n = 6
    m = spread_metrics(torch.eye(n) * 3, torch.zeros(n, dtype=torch.long))
    assert m["within_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert m["spread"] == pytest.approx(1 - 1 / n)
    # a regular simplex centred at 0 has μ = 0: the maximum spread 1
    simplex = torch.eye(4) - 0.25
    m = spread_metrics(simplex, torch.zeros(4, dtype=torch.long))
    assert m["spread"] == pytest.approx(1.0)
    assert m["within_cosine"] == pytest.approx(-1 / 3)


def test_spread_matches_double_loop():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    m = spread_metrics(z, y)
    u = torch.nn.functional.normalize(z.double(), dim=1)
    for i, c in enumerate(m["classes"].tolist()):
        idx = (y == c).nonzero().flatten().tolist()
        cos = [float(u[a] @ u[b]) for a in idx for b in idx if a != b]
        mu = u[idx].mean(0)
        assert float(m["within_cosine_per_class"][i]) == pytest.approx(sum(cos) / len(cos), abs=1e-6)
        assert float(m["spread_per_class"][i]) == pytest.approx(1 - float(mu @ mu), abs=1e-6)


# -------------------------------------------------- clustering and groups


def blobs(centers, n_per, std=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(centers, dtype=torch.float32)
    x = c.repeat_interleave(n_per, 0) + std * torch.randn(len(c) * n_per, c.shape[1], generator=g)
    return x, torch.arange(len(c)).repeat_interleave(n_per)


def test_subclass_ami_is_one_for_separated_subclasses_and_zero_for_random():
    x, fine = blobs(torch.eye(6) * 5, 40)
    coarse = fine // 3  # two coarse classes of three fine classes each
    res = subclass_ami(x, coarse, fine)
    assert res["ami"] == pytest.approx(1.0)
    assert set(res["per_class"]) == {0, 1}
    shuffled = fine[torch.randperm(len(fine), generator=torch.Generator().manual_seed(0))]
    rnd = subclass_ami(x, coarse, (shuffled % 3) + 3 * coarse)
    assert abs(rnd["ami"]) < 0.1


def test_silhouette_picks_the_right_k_per_class():
    d = 32
    e = torch.eye(d) * 4
    x0, _ = blobs(e[:3], 50, seed=1)  # class 0: three blobs
    x1, _ = blobs(e[3:5], 50, seed=2)  # class 1: two blobs
    # class 2: one isotropic Gaussian; its best k-means silhouette in 32-D is ~0.04
    x2 = torch.randn(150, d, generator=torch.Generator().manual_seed(3))
    x = torch.cat([x0, x1, x2])
    y = torch.tensor([0] * 150 + [1] * 100 + [2] * 150)
    res = infer_subgroups(x, y, max_k=5, normalize=False)
    assert res.k_per_class == {0: 3, 1: 2, 2: 1}
    assert res.n_groups == 6
    # clusters agree with the blobs they came from
    from sklearn.metrics import adjusted_rand_score

    truth = torch.cat([torch.arange(3).repeat_interleave(50), torch.arange(2).repeat_interleave(50) + 3])
    assert adjusted_rand_score(truth.numpy(), res.groups[:250].numpy()) == pytest.approx(1.0)
    # assign puts training points back in their own groups
    assert torch.equal(res.assign(x, y), res.groups)


def spurious_set(n, minority, seed):
    """y depends on a weak core feature; attribute a = y for a (1-minority) majority.

    Features: [core, spurious]. core ~ y-shifted noisy; spurious = a, nearly noiseless.
    Groups (y, a) -> 2*y + a.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    flip = torch.rand(n, generator=g) < minority
    a = torch.where(flip, 1 - y, y)
    core = (2 * y - 1).float() + 0.8 * torch.randn(n, generator=g)
    spur = 3 * (2 * a - 1).float() + 0.3 * torch.randn(n, generator=g)
    return torch.stack([core, spur], 1), y, 2 * y + a


def test_group_dro_beats_erm_on_spurious_features():
    xtr, ytr, gtr = spurious_set(2000, 0.05, 0)
    xte, yte, gte = spurious_set(2000, 0.5, 1)  # balanced groups at test
    kw = dict(epochs=60, lr=1e-2, batch_size=256, eta=0.05)
    erm = worst_group(xtr, ytr, xte, yte, gte, groups="none", **kw)
    oracle = worst_group(xtr, ytr, xte, yte, gte, train_groups=gtr, groups="true", **kw)
    george = worst_group(xtr, ytr, xte, yte, gte, train_groups=gtr, groups="inferred", max_k=3, **kw)
    assert erm["worst_group_acc"] < 0.5  # ERM leans on the spurious feature (measured 0.42)
    assert oracle["worst_group_acc"] > erm["worst_group_acc"] + 0.2
    assert george["k_per_class"] == {0: 2, 1: 2}
    assert george["group_ami"] > 0.9  # the clusters are the true groups
    assert george["worst_group_acc"] > erm["worst_group_acc"] + 0.2
    for r in (erm, oracle, george):
        assert 0.0 <= r["worst_group_acc"] <= r["avg_acc"] <= 1.0


def test_group_dro_lowers_the_worst_group_training_loss():
    """Group DRO minimises max_g loss_g: its worst group loss is below ERM's."""
    xtr, ytr, gtr = spurious_set(1000, 0.05, 2)
    kw = dict(epochs=30, lr=1e-2, batch_size=256)
    worst = {}
    for method in ("erm", "group_dro"):
        head, info = train_linear_head(xtr, ytr, gtr, method, eta=0.05, **kw)
        with torch.no_grad():
            losses = torch.nn.functional.cross_entropy(head(xtr), ytr, reduction="none")
        worst[method] = max(losses[gtr == g].mean().item() for g in range(4))
    assert worst["group_dro"] < 0.7 * worst["erm"]
    q = info["q"]
    assert q.sum().item() == pytest.approx(1.0) and (q > 0).all()


def test_group_dro_head_stays_finite_when_eta_times_loss_overflows_exp():
    """exp(200 · ℓ) overflows float32: the update runs as softmax(log q + η ℓ) (the one in
    ``spreadcon.train.dro_update``), so the weights stay a finite point of the simplex."""
    x, y, g = spurious_set(400, 0.1, 3)
    head, info = train_linear_head(x, y, g, "group_dro", epochs=3, batch_size=64, eta=200.0)
    q = info["q"]
    assert torch.isfinite(q).all() and q.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert all(torch.isfinite(p).all() for p in head.parameters())


def test_group_accuracies_by_hand():
    pred = torch.tensor([0, 0, 1, 1, 1])
    y = torch.tensor([0, 1, 1, 1, 0])
    g = torch.tensor([0, 0, 1, 1, 2])
    r = group_accuracies(pred, y, g)
    assert r["per_group"] == {0: 0.5, 1: 1.0, 2: 0.0}
    assert r["worst_group_acc"] == 0.0 and r["avg_acc"] == pytest.approx(0.6)


def test_worst_group_bad_input():
    x, y, g = spurious_set(50, 0.1, 0)
    with pytest.raises(ValueError, match="groups"):
        worst_group(x, y, x, y, g, groups="oracle")
    with pytest.raises(ValueError, match="train_groups"):
        worst_group(x, y, x, y, g, groups="true")
    with pytest.raises(ValueError, match="method"):
        train_linear_head(x, y, method="irm")


@pytest.mark.parametrize("call", [
    lambda x, y, g: linear_probe(x, y, x, y, "closed_form"),  # method
    lambda x, y, g: train_linear_head(x, y, g, "erm", 2),  # n_classes
    lambda x, y, g: infer_subgroups(x, y, 3),  # max_k
    lambda x, y, g: worst_group(x, y, x, y, g, g, "true"),  # groups
])
def test_settings_after_the_data_are_keyword_only(call):
    """STYLE 21: a setting passed by position (where two floats could swap silently) is a TypeError."""
    x, y, g = spurious_set(50, 0.1, 0)
    with pytest.raises(TypeError, match="positional argument"):
        call(x, y, g)


def test_class_map_draws_the_class_with_most_subclasses_and_matches_a_slow_pca():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(60, 5, generator=g, dtype=torch.float64)
    coarse = torch.tensor([0] * 20 + [1] * 40)
    fine = torch.tensor([0] * 20 + [1, 2, 3, 4] * 10)  # class 1 holds 4 subclasses, class 0 one
    m = class_map(z, coarse, fine, max_points=30)
    # 30 // 4 = 7 points from each of the class's 4 fine labels: the first 7 of each, in split order
    idx = torch.tensor(sorted(i for f in (1, 2, 3, 4) for i in [j for j in range(20, 60) if fine[j] == f][:7]))
    assert m["coarse"] == 1 and m["fine"] == fine[idx].tolist() and len(m["xy"]) == 28
    # slow reference: eigenvectors of the covariance of the normalised, centred points
    u = z[idx] / z[idx].norm(dim=1, keepdim=True)
    c = u - u.mean(0)
    vals, vecs = torch.linalg.eigh(c.T @ c)
    ref = c @ vecs[:, [-1, -2]]
    got = torch.tensor(m["xy"], dtype=torch.float64)
    for k in range(2):  # each axis is defined up to its sign
        assert min((got[:, k] - ref[:, k]).abs().max(), (got[:, k] + ref[:, k]).abs().max()) < 1e-3
    assert m["explained"] == pytest.approx(float(vals[-2:].sum() / vals.sum()), abs=1e-4)
    assert m["scale"] == pytest.approx(float((c.pow(2).sum() / 28).sqrt()), abs=1e-4)


def test_class_map_of_a_split_sorted_by_label_still_shows_every_subclass():
    fine = torch.arange(6).repeat_interleave(100)         # 600 points stored sorted by fine label
    z = torch.randn(600, 4, generator=torch.Generator().manual_seed(1))
    m = class_map(z, torch.zeros(600, dtype=torch.long), fine, max_points=300)
    assert sorted(set(m["fine"])) == list(range(6)) and [m["fine"].count(f) for f in range(6)] == [50] * 6


def test_class_map_of_a_collapsed_class_is_one_point():
    z = torch.tensor([[1.0, 2.0]] * 5 + [[0.0, 1.0]] * 2)
    m = class_map(z, torch.tensor([0] * 5 + [1] * 2), torch.tensor([0, 1, 0, 1, 2, 3, 3]))
    assert m["coarse"] == 0 and m["scale"] == 0.0 and all(p == [0.0, 0.0] for p in m["xy"])
