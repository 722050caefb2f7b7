"""spreadcon.losses against slow references written straight from the equations.

The references loop over anchors and candidates with Python floats, so they
share no code (and no masking tricks) with the vectorised losses.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from spreadcon.losses import (
    CNCELoss,
    ReconstructionLoss,
    SimCLRLoss,
    SpreadLoss,
    SupConLoss,
    cnce_loss,
    reconstruction_loss,
    simclr_loss,
    spread_loss,
    supcon_loss,
)

# --------------------------------------------------------------------------- references


def _logit(z, tau, norm, a, c):
    """s(a, c) for anchor a = (i, v) and candidate c = (j, w), as plain floats."""
    (i, v), (j, w) = a, c
    dot = float(z[i, v] @ z[j, w])
    if norm == "row":  # u = z / ||z||
        return dot / (tau * float(z[i, v].norm()) * float(z[j, w].norm()))
    return dot / (tau * float(z[j, v].norm()) * float(z[j, w].norm()))  # both norms at the candidate j


def _lse(xs):
    m = max(xs)
    return m + math.log(math.fsum(math.exp(x - m) for x in xs))


def _problems(B, V, anchors):
    """(anchor list, candidate function) per problem; the loss is the mean over problems."""
    if anchors == "all":
        everyone = [(i, v) for v in range(V) for i in range(B)]
        return [(everyone, lambda a: [c for c in everyone if c != a])]
    out = []
    for v in range(V):
        for w in range(v):
            out.append(([(i, v) for i in range(B)], lambda a, w=w: [(j, w) for j in range(B)]))
    return out


def ref_supcon(z, y, tau, *, anchors="all", denominator="all", clamp=None, norm="row"):
    """Khosla L_out (or the one-positive denominator), averaged over anchors with a positive."""
    B, V, _ = z.shape
    y = [int(t) for t in y]
    per_problem = []
    for anchor_list, cands_of in _problems(B, V, anchors):
        losses = []
        for a in anchor_list:
            cands = cands_of(a)
            s = {c: _logit(z, tau, norm, a, c) for c in cands}
            pos = [c for c in cands if y[c[0]] == y[a[0]]]
            neg = [c for c in cands if y[c[0]] != y[a[0]]]
            if not pos:
                continue
            terms = []
            for p in pos:
                numer = s[p] if clamp is None else min(s[p], clamp)
                if denominator == "all":
                    den = _lse([s[c] for c in cands])
                else:
                    den = _lse([s[p]] + [s[n] for n in neg])
                terms.append(den - numer)
            losses.append(math.fsum(terms) / len(pos))
        per_problem.append(math.fsum(losses) / len(losses))
    return math.fsum(per_problem) / len(per_problem)


def ref_cnce(z, y, tau, *, anchors="all", norm="row"):
    """Class-conditional InfoNCE: own other views over the same-class candidates."""
    B, V, _ = z.shape
    y = [int(t) for t in y]
    per_problem = []
    for anchor_list, cands_of in _problems(B, V, anchors):
        losses = []
        for a in anchor_list:
            cands = cands_of(a)
            s = {c: _logit(z, tau, norm, a, c) for c in cands}
            own = [c for c in cands if c[0] == a[0]]
            den = _lse([s[c] for c in cands if y[c[0]] == y[a[0]]])
            losses.append(math.fsum(den - s[q] for q in own) / len(own))
        per_problem.append(math.fsum(losses) / len(losses))
    return math.fsum(per_problem) / len(per_problem)


def ref_official(z, y, alpha, tau):
    """CONTRACT §1 `reference_quirks=True`, restated anchor by anchor (torch rows, no masks)."""
    B, V, _ = z.shape
    pair_losses = []
    for v in range(V):
        for w in range(v):
            nv, nw = z[:, v].norm(dim=1), z[:, w].norm(dim=1)
            per_i = []
            for i in range(B):
                S = (z[i, v] @ z[:, w].T) / (tau * nv * nw)  # norms broadcast at the candidate index
                P = [j for j in range(B) if y[j] == y[i]]
                N = [j for j in range(B) if y[j] != y[i]]
                sc = sum(
                    -torch.clamp(S[p], max=1.0) + torch.log(torch.exp(S[p]) + torch.exp(S[N]).sum()) for p in P
                ) / len(P)
                cn = -S[i] + torch.log(torch.exp(S[P]).sum())
                per_i.append((1 - alpha) * sc + alpha * cn)
            pair_losses.append(torch.stack(per_i).mean())
    return torch.stack(pair_losses).mean()


def _data(B=6, V=2, D=5, n_cls=3, dtype=torch.float64, seed=0, scale=True):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, V, D, generator=g, dtype=dtype)
    if scale:  # unequal norms, so the norm artefact matters
        z = z * (0.5 + 2 * torch.rand(B, V, 1, generator=g, dtype=dtype))
    y = torch.randint(0, n_cls, (B,), generator=g)
    return z, y


SWITCHES = list(itertools.product(["all", "cross_view"], ["all", "one_positive"], [None, 1.0], ["row", "broadcast"]))

# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("anchors,denominator,clamp,norm", SWITCHES)
@pytest.mark.parametrize("V", [2, 3])
def test_supcon_matches_double_loop_float64(anchors, denominator, clamp, norm, V):
    z, y = _data(V=V)
    tau = 0.3
    got = supcon_loss(z, y, tau, anchors=anchors, denominator=denominator, clamp=clamp, norm=norm)
    want = ref_supcon(z, y, tau, anchors=anchors, denominator=denominator, clamp=clamp, norm=norm)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("anchors,norm", list(itertools.product(["all", "cross_view"], ["row", "broadcast"])))
@pytest.mark.parametrize("V", [2, 3])
def test_cnce_matches_double_loop_float64(anchors, norm, V):
    z, y = _data(V=V, seed=1)
    got = cnce_loss(z, y, 0.4, anchors=anchors, norm=norm)
    assert float(got) == pytest.approx(ref_cnce(z, y, 0.4, anchors=anchors, norm=norm), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_spread_paper_matches_double_loop(alpha):
    z, y = _data(B=7, V=3, seed=2)
    want = (1 - alpha) * ref_supcon(z, y, 0.5) + alpha * ref_cnce(z, y, 0.5)
    assert float(spread_loss(z, y, alpha, 0.5)) == pytest.approx(want, rel=1e-12)
    assert float(SpreadLoss(alpha, 0.5)(z, y)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("V", [2, 3, 4])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_reference_quirks_equals_official_restatement(V, alpha):
    z, y = _data(B=8, V=V, seed=3)
    got = SpreadLoss(alpha=alpha, temperature=0.2, reference_quirks=True)(z, y)
    want = ref_official(z, y, alpha, 0.2)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    # and it really differs from the paper's equations on the same input
    assert abs(float(got) - float(spread_loss(z, y, alpha, 0.2))) > 1e-3


def test_reference_quirks_is_the_official_switch_combination():
    z, y = _data(seed=4)
    quirks = spread_loss(z, y, 0.4, 0.5, reference_quirks=True)
    explicit = spread_loss(z, y, 0.4, 0.5, anchors="cross_view", denominator="one_positive", clamp=1.0, norm="broadcast")
    assert torch.equal(quirks, explicit)
    # one switch overridden inside quirks mode: the clamp off
    no_clamp = spread_loss(z, y, 0.0, 0.5, reference_quirks=True, clamp=None)
    want = ref_supcon(z, y, 0.5, anchors="cross_view", denominator="one_positive", clamp=None, norm="broadcast")
    assert float(no_clamp) == pytest.approx(want, rel=1e-12)


def test_float32_within_tolerance_of_float64_reference():
    z, y = _data(B=10, V=2, seed=5)
    for q in (False, True):
        got = spread_loss(z.float(), y, 0.5, 0.1, reference_quirks=q)
        want = spread_loss(z, y, 0.5, 0.1, reference_quirks=q)
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert float(spread_loss(z.float(), y, 0.5, 0.1)) == pytest.approx(
        0.5 * ref_supcon(z, y, 0.1) + 0.5 * ref_cnce(z, y, 0.1), rel=1e-5
    )


def test_simclr_is_nt_xent():
    z, y = _data(B=6, V=2, seed=6)
    tau = 0.5
    u = torch.nn.functional.normalize(z, dim=-1)
    flat = [(i, v) for v in range(2) for i in range(6)]
    terms = []
    for a in flat:  # textbook NT-Xent: positive is the other view, denominator all but self
        partner = (a[0], 1 - a[1])
        s = {c: float(u[a] @ u[c]) / tau for c in flat if c != a}
        terms.append(_lse(list(s.values())) - s[partner])
    want = math.fsum(terms) / len(terms)
    assert float(simclr_loss(z, tau)) == pytest.approx(want, rel=1e-12)
    assert float(SimCLRLoss(tau)(z)) == pytest.approx(want, rel=1e-12)
    # SimCLR = SupCon with every sample in its own class, for any V
    z3, _ = _data(B=5, V=3, seed=7)
    assert float(simclr_loss(z3, 0.3)) == pytest.approx(ref_supcon(z3, torch.arange(5), 0.3), rel=1e-12)


def test_reconstruction_is_mean_squared_error():
    a, b = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    want = math.fsum(float(t) ** 2 for t in (a - b).flatten()) / a.numel()
    assert float(reconstruction_loss(a, b)) == pytest.approx(want, rel=1e-12)
    assert float(ReconstructionLoss()(a, b)) == pytest.approx(want, rel=1e-12)


def test_modules_equal_functions():
    z, y = _data(seed=8)
    assert torch.equal(SupConLoss(0.2, denominator="one_positive")(z, y), supcon_loss(z, y, 0.2, denominator="one_positive"))
    assert torch.equal(CNCELoss(0.2, anchors="cross_view")(z, y), cnce_loss(z, y, 0.2, anchors="cross_view"))


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("reference_quirks", [False, True])
def test_alpha_endpoints(reference_quirks):
    z, y = _data(B=9, V=2, seed=9)
    sw = dict(anchors="cross_view", norm="broadcast") if reference_quirks else {}
    sup = supcon_loss(z, y, 0.5, **sw, **(dict(denominator="one_positive", clamp=1.0) if reference_quirks else {}))
    cn = cnce_loss(z, y, 0.5, **sw)
    assert torch.equal(spread_loss(z, y, 0.0, 0.5, reference_quirks), sup)
    assert torch.equal(spread_loss(z, y, 1.0, 0.5, reference_quirks), cn)
    mid = spread_loss(z, y, 0.3, 0.5, reference_quirks)
    assert float(mid) == pytest.approx(0.7 * float(sup) + 0.3 * float(cn), rel=1e-12)


@pytest.mark.parametrize(
    "fn",
    [
        lambda z, y: spread_loss(z, y, 0.4, 0.5),
        lambda z, y: spread_loss(z, y, 0.4, 0.5, reference_quirks=True),
        lambda z, y: supcon_loss(z, y, 0.3, denominator="one_positive", clamp=0.9),
        lambda z, y: simclr_loss(z, 0.5),
        lambda z, y: spread_loss(z, y, 0.4, 0.5, chunk_size=4),
        lambda z, y: spread_loss(z, y, 0.4, 0.5, reference_quirks=True, chunk_size=2),
    ],
    ids=["spread", "quirks", "one_positive_clamp", "simclr", "chunked", "quirks_chunked"],
)
def test_gradcheck_float64(fn):
    z, y = _data(B=5, V=3, D=4, n_cls=2, seed=10)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: fn(t, y), (z,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("reference_quirks", [False, True])
def test_permutation_within_class_leaves_losses_unchanged(reference_quirks):
    z, y = _data(B=10, V=3, n_cls=3, seed=11)
    perm = torch.arange(10)
    for c in y.unique():  # shuffle the samples of each class among themselves
        idx = (y == c).nonzero().flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(int(c)))]
    assert not torch.equal(perm, torch.arange(10))
    for fn in (
        lambda z, y: spread_loss(z, y, 0.5, 0.5, reference_quirks),
        lambda z, y: supcon_loss(z, y, 0.5),
        lambda z, y: cnce_loss(z, y, 0.5),
        lambda z, y: simclr_loss(z, 0.5),
    ):
        assert float(fn(z[perm], y[perm])) == pytest.approx(float(fn(z, y)), rel=1e-12)


def test_chunked_equals_unchunked_value_and_gradient():
    z, y = _data(B=64, V=2, D=16, n_cls=5, dtype=torch.float32, seed=12)
    for q in (False, True):
        outs = []
        for chunk in (None, 7):
            t = z.clone().requires_grad_(True)
            loss = spread_loss(t, y, 0.5, 0.1, reference_quirks=q, chunk_size=chunk)
            loss.backward()
            outs.append((loss.detach(), t.grad))
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- mixed precision


def _autocast_check(dtype):
    z, y = _data(B=2048, V=2, D=128, n_cls=10, dtype=torch.float32, seed=13, scale=False)
    ref = spread_loss(z, y, 0.5, 0.05)
    t = z.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        loss = spread_loss(t, y, 0.5, 0.05)
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(t.grad).all())
    assert float(t.grad.abs().sum()) > 0
    # low-precision matmul, float32 softmax: within a percent of the float32 value
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-2)


def test_bf16_autocast_is_stable_at_tau_005_and_4096_rows():
    _autocast_check(torch.bfloat16)


def test_fp16_autocast_is_stable_at_tau_005_and_4096_rows():
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except (RuntimeError, AssertionError) as e:  # older torch: CPU autocast is bf16 only
        pytest.skip(f"fp16 CPU autocast unsupported here: {e}")
    _autocast_check(torch.float16)


# --------------------------------------------------------------------------- bad input


def _ok():
    return torch.randn(4, 2, 3), torch.tensor([0, 1, 0, 1])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda z, y: spread_loss(z, y, 0.5, 0.0), "temperature"),
        (lambda z, y: spread_loss(z, y, 0.5, -1.0), "temperature"),
        (lambda z, y: spread_loss(z, y, 0.5, float("nan")), "temperature"),
        (lambda z, y: spread_loss(z, y, -0.1, 0.5), "alpha"),
        (lambda z, y: spread_loss(z, y, 1.1, 0.5), "alpha"),
        (lambda z, y: spread_loss(z[:, :1], y, 0.5, 0.5), "V >= 2"),
        (lambda z, y: spread_loss(z[:, 0], y, 0.5, 0.5), r"\(B, V, D\)"),
        (lambda z, y: spread_loss(z, y[:3], 0.5, 0.5), "labels"),
        (lambda z, y: spread_loss(z, y[:, None], 0.5, 0.5), "labels"),
        (lambda z, y: spread_loss(z, y.float(), 0.5, 0.5), "labels"),
        (lambda z, y: spread_loss(z.int(), y, 0.5, 0.5), "floating"),
        (lambda z, y: spread_loss(z.index_fill(0, torch.tensor([1]), float("nan")), y, 0.5, 0.5), "non-finite"),
        (lambda z, y: spread_loss(z.index_fill(0, torch.tensor([2]), float("inf")), y, 0.5, 0.5), "non-finite"),
        (lambda z, y: supcon_loss(z, y, 0.5, anchors="some"), "anchors"),
        (lambda z, y: supcon_loss(z, y, 0.5, denominator="x"), "denominator"),
        (lambda z, y: supcon_loss(z, y, 0.5, norm="col"), "norm"),
        (lambda z, y: supcon_loss(z, y, 0.5, clamp=float("inf")), "clamp"),
        (lambda z, y: supcon_loss(z, y, 0.5, chunk_size=0), "chunk_size"),
        (lambda z, y: cnce_loss(z, y, -0.5), "temperature"),
        (lambda z, y: simclr_loss(z[:, :1], 0.5), "V >= 2"),
        (lambda z, y: SpreadLoss(alpha=2.0), "alpha"),
        (lambda z, y: SpreadLoss(temperature=0), "temperature"),
        (lambda z, y: SupConLoss(temperature=-1), "temperature"),
        (lambda z, y: SpreadLoss(reference_quirks=True, norm="columns"), "norm"),
        (lambda z, y: SpreadLoss()(z[:, :1], y), "V >= 2"),
        (lambda z, y: reconstruction_loss(z, z[:2]), "same shape"),
        (lambda z, y: reconstruction_loss(z * float("nan"), z), "x_hat"),
        (lambda z, y: spread_loss(z, y + 1, 0.5, 0.5, num_classes=2), r"\[0, num_classes=2\)"),
        (lambda z, y: spread_loss(z, y - 1, 0.5, 0.5, num_classes=2), "num_classes"),
        (lambda z, y: supcon_loss(z, y, 0.5, num_classes=0), "num_classes"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, match):
    z, y = _ok()
    with pytest.raises(ValueError, match=match):
        call(z, y)


def test_supcon_equals_pytorch_metric_learning():
    """An independent implementation of Khosla L_out (optional dependency)."""
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z, y = _data(B=12, V=2, D=8, n_cls=3, seed=14)
    flat = z.transpose(0, 1).reshape(-1, 8)
    want = pml.SupConLoss(temperature=0.2)(flat, y.repeat(2))
    assert float(supcon_loss(z, y, 0.2)) == pytest.approx(float(want), rel=1e-10)


# --------------------------------------------------------------------------- the sync-free path


@pytest.mark.parametrize("anchors,denominator,clamp,norm", SWITCHES)
def test_num_classes_path_equals_unique_path(anchors, denominator, clamp, norm):
    """Labels 1, 4, 6 of 8 classes (gaps, absent classes): same value and gradient as with torch.unique."""
    z, y = _data(B=9, V=3, n_cls=3, seed=4)
    y = torch.tensor([1, 4, 6])[y]
    kw = dict(anchors=anchors, denominator=denominator, clamp=clamp, norm=norm)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    a = spread_loss(z1, y, 0.4, 0.3, **kw)
    b = spread_loss(z2, y, 0.4, 0.3, num_classes=8, check_values=False, **kw)
    a.backward(), b.backward()
    assert float(b.detach()) == pytest.approx(float(a.detach()), rel=1e-12, abs=1e-12)
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-10, atol=1e-12)


def test_sync_free_loss_makes_no_host_syncing_call(monkeypatch):
    """num_classes + check_values=False: nothing in the loss's forward or backward reads a
    device value on the host (paper switches); the defaults do, which shows the detector works.
    On a CPU tensor the loss reads the largest class size (free there: no device to wait for),
    so the test takes the path a GPU takes."""
    import spreadcon.losses as L
    from spreadcon.syncs import HostSyncs

    monkeypatch.setattr(L, "_host_reads_are_free", lambda device: False)
    z, y = _data(B=16, V=2, D=8, n_cls=4, dtype=torch.float32)
    for fn in (lambda z: spread_loss(z, y, 0.5, 0.5, num_classes=4, check_values=False),
               lambda z: simclr_loss(z, 0.5, check_values=False),
               lambda z: reconstruction_loss(z, z.detach() + 1, check_values=False)):
        zz = z.clone().requires_grad_()
        with HostSyncs() as syncs:
            fn(zz).backward()
        assert syncs.calls == []
    with HostSyncs() as syncs:
        spread_loss(z, y, 0.5, 0.5)
    assert any("__bool__" in c for c in syncs.calls) and any(c.startswith("torch.unique ")
                                                             for c in syncs.calls), syncs.calls


def test_unchecked_loss_returns_nan_instead_of_raising():
    z, y = _ok()
    z = z.index_fill(0, torch.tensor([1]), float("nan"))
    assert torch.isnan(spread_loss(z, y, 0.5, 0.5, num_classes=2, check_values=False))


@pytest.mark.parametrize("anchors,denominator,clamp", list(itertools.product(
    ["all", "cross_view"], ["all", "one_positive"], [None, 0.8])))  # fmt: skip
def test_gpu_width_of_the_positives_gather_gives_the_cpu_result(monkeypatch, anchors, denominator, clamp):
    """The fused path gathers each row's same-class columns into a (M, P) block: P is the largest
    class on a CPU and every column on a GPU (no host read). Both give the same loss and gradient."""
    import spreadcon.losses as L

    z, y = _data(B=12, V=3, D=6, n_cls=4, dtype=torch.float64)
    out = []
    for free in (True, False):
        monkeypatch.setattr(L, "_host_reads_are_free", lambda device, free=free: free)
        t = z.clone().requires_grad_(True)
        loss = spread_loss(t, y, 0.4, 0.5, clamp=clamp, anchors=anchors, denominator=denominator)
        loss.backward()
        out.append((loss.detach(), t.grad))
    assert torch.allclose(out[0][0], out[1][0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-10, atol=1e-12)
