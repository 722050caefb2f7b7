"""spreadcon.losses.contrastive against slow references written straight from the equations.

The references loop over anchors and candidates with Python floats, so they
share no code (and no masking tricks) with the vectorised losses.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
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
    """s(a, c) for anchor a = (i, v) and candidate c = (j, w), one scalar at a time (autograd flows)."""
    (i, v), (j, w) = a, c
    dot = z[i, v] @ z[j, w]
    if norm == "row":  # u = z / ||z||
        return dot / (tau * z[i, v].norm() * z[j, w].norm())
    return dot / (tau * z[j, v].norm() * z[j, w].norm())  # both norms at the candidate j


def _lse(xs):
    return torch.logsumexp(torch.stack(list(xs)), 0)


def _mean(xs):
    xs = list(xs)
    return torch.stack(xs).sum() / len(xs)


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
    """Khosla L_out (or the one-positive denominator), averaged over anchors with a positive.

    A double loop over anchors and candidates, one scalar op at a time: slow, obviously the
    equation, and differentiable (the gradient tests take autograd through it in float64)."""
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
                numer = s[p] if clamp is None else torch.clamp(s[p], max=clamp)
                if denominator == "all":
                    den = _lse(s[c] for c in cands)
                else:
                    den = _lse([s[p]] + [s[n] for n in neg])
                terms.append(den - numer)
            losses.append(_mean(terms))
        per_problem.append(_mean(losses))
    return _mean(per_problem)


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
            den = _lse(s[c] for c in cands if y[c[0]] == y[a[0]])
            losses.append(_mean(den - s[q] for q in own))
        per_problem.append(_mean(losses))
    return _mean(per_problem)


def ref_official(z, y, alpha, tau):
    """The official thanos-code loss (`reference_quirks=True`), restated anchor by anchor (torch rows, no masks)."""
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
    want = float(ref_supcon(z, y, tau, anchors=anchors, denominator=denominator, clamp=clamp, norm=norm))
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("anchors,norm", list(itertools.product(["all", "cross_view"], ["row", "broadcast"])))
@pytest.mark.parametrize("V", [2, 3])
def test_cnce_matches_double_loop_float64(anchors, norm, V):
    z, y = _data(V=V, seed=1)
    got = cnce_loss(z, y, 0.4, anchors=anchors, norm=norm)
    assert float(got) == pytest.approx(float(ref_cnce(z, y, 0.4, anchors=anchors, norm=norm)), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_spread_paper_matches_double_loop(alpha):
    z, y = _data(B=7, V=3, seed=2)
    want = float((1 - alpha) * ref_supcon(z, y, 0.5) + alpha * ref_cnce(z, y, 0.5))
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
    want = float(ref_supcon(z, y, 0.5, anchors="cross_view", denominator="one_positive", clamp=None, norm="broadcast"))
    assert float(no_clamp) == pytest.approx(want, rel=1e-12)


def test_switches_are_a_frozen_value_and_the_quirks_differ_from_l_out_in_the_four_documented_fields():
    """The module table of spreadcon.losses.switches: REFERENCE_QUIRKS and L_OUT differ in exactly
    anchors, denominator, clamp and norm, with the values it gives; L_OUT_CLAMPED only in the clamp.
    A named form cannot be changed in place (assigning raises), and a bad value cannot be made."""
    import dataclasses

    from spreadcon.losses import L_OUT, L_OUT_CLAMPED, PAPER, REFERENCE_QUIRKS, Switches

    with pytest.raises(dataclasses.FrozenInstanceError):
        REFERENCE_QUIRKS.clamp = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        L_OUT.anchors = "cross_view"
    assert REFERENCE_QUIRKS.clamp == 1.0 and L_OUT.anchors == "all"  # nothing changed

    def differ(a, b):
        return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(Switches)
                if getattr(a, f.name) != getattr(b, f.name)}  # fmt: skip

    assert differ(L_OUT, REFERENCE_QUIRKS) == {
        "anchors": ("all", "cross_view"), "denominator": ("all", "one_positive"),
        "clamp": (None, 1.0), "norm": ("row", "broadcast"),
    }  # fmt: skip
    assert differ(L_OUT, L_OUT_CLAMPED) == {"clamp": (None, 1.0)}
    assert PAPER == L_OUT and Switches() == L_OUT
    assert SpreadLoss(reference_quirks=True).switches == REFERENCE_QUIRKS and SpreadLoss().switches == L_OUT
    assert SpreadLoss(reference_quirks=True, clamp=None).switches == REFERENCE_QUIRKS.replace(clamp=None)
    with pytest.raises(ValueError, match="norm"):
        L_OUT.replace(norm="columns")


def test_float32_within_tolerance_of_float64_reference():
    z, y = _data(B=10, V=2, seed=5)
    for q in (False, True):
        got = spread_loss(z.float(), y, 0.5, 0.1, reference_quirks=q)
        want = spread_loss(z, y, 0.5, 0.1, reference_quirks=q)
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert float(spread_loss(z.float(), y, 0.5, 0.1)) == pytest.approx(
        float(0.5 * ref_supcon(z, y, 0.1) + 0.5 * ref_cnce(z, y, 0.1)), rel=1e-5
    )


def test_simclr_is_nt_xent():
    z, y = _data(B=6, V=2, seed=6)
    tau = 0.5
    u = torch.nn.functional.normalize(z, dim=-1)
    flat = [(i, v) for v in range(2) for i in range(6)]
    terms = []
    for a in flat:  # textbook NT-Xent: positive is the other view, denominator all but self
        partner = (a[0], 1 - a[1])
        s = {c: u[a] @ u[c] / tau for c in flat if c != a}
        terms.append(_lse(s.values()) - s[partner])
    want = float(_mean(terms))
    assert float(simclr_loss(z, tau)) == pytest.approx(want, rel=1e-12)
    assert float(SimCLRLoss(tau)(z)) == pytest.approx(want, rel=1e-12)
    # SimCLR = SupCon with every sample in its own class, for any V
    z3, _ = _data(B=5, V=3, seed=7)
    assert float(simclr_loss(z3, 0.3)) == pytest.approx(float(ref_supcon(z3, torch.arange(5), 0.3)), rel=1e-12)


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
    import spreadcon.losses._kernel as K
    from spreadcon.util.syncs import HostSyncs

    monkeypatch.setattr(K, "_host_reads_are_free", lambda device: False)
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
    import spreadcon.losses._kernel as K

    z, y = _data(B=12, V=3, D=6, n_cls=4, dtype=torch.float64)
    out = []
    for free in (True, False):
        monkeypatch.setattr(K, "_host_reads_are_free", lambda device, free=free: free)
        t = z.clone().requires_grad_(True)
        loss = spread_loss(t, y, 0.4, 0.5, clamp=clamp, anchors=anchors, denominator=denominator)
        loss.backward()
        out.append((loss.detach(), t.grad))
    assert torch.allclose(out[0][0], out[1][0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- gradients on the hard cases
#
# The inputs the earlier gradient checks used have many negatives and similar norms. The fused
# backward once corrected the one-positive denominator's positives by subtracting E_p * u after
# adding it to every column; with few or no negatives that cancellation wiped out the gradient
# in float32 (the issue's repro: 0.0000 where the official code gives 0.0397). These cases break
# exactly that: one class (no negatives at all), a class of one member, row norms spread 10x-200x
# (which also drives the broadcast form onto the exact path), and V = 3.


def _hard_case(name):
    g = torch.Generator().manual_seed(hash(name) % 1000)
    if name == "one_class":
        z, y = torch.randn(6, 2, 4, generator=g, dtype=torch.float64), torch.zeros(6, dtype=torch.long)
    elif name == "singleton":
        z, y = torch.randn(6, 2, 4, generator=g, dtype=torch.float64), torch.tensor([0, 0, 0, 1, 1, 2])
    elif name == "spread_norms":
        z = torch.randn(6, 2, 4, generator=g, dtype=torch.float64)
        scale = torch.logspace(0, math.log10(200), 12, dtype=torch.float64)[torch.randperm(12, generator=g)]
        z, y = z * scale.reshape(6, 2, 1), torch.tensor([0, 0, 1, 1, 1, 2])
    else:  # "v3"
        z, y = torch.randn(5, 3, 4, generator=g, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 1])
    return z, y


def _issue_repro():
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]], [[-0.1, 0.0], [-0.1, 0.0]]],
                     dtype=torch.float64)  # fmt: skip
    return z, torch.tensor([0, 0, 0])


def _grad(fn, z, dtype):
    t = z.detach().to(dtype).clone().requires_grad_(True)
    fn(t).backward()
    return t.grad.to(torch.float64)


def _ref_spread(z, y, alpha, tau, sw):
    loss = 0.0
    if alpha != 1:
        loss = (1 - alpha) * ref_supcon(z, y, tau, **sw)
    if alpha != 0:
        loss = loss + alpha * ref_cnce(z, y, tau, anchors=sw["anchors"], norm=sw["norm"])
    return loss


def _close(got, want, rtol):
    """Equal to ``rtol`` relative to the gradient's scale (entries near 0 are judged on that scale; a
    gradient that is 0 by the equation, as one-positive SupCon's within one class, on the scale 1e-3)."""
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * max(float(want.abs().max()), 1e-3))


@pytest.mark.parametrize("case", ["one_class", "singleton", "spread_norms", "v3", "issue_repro"])
@pytest.mark.parametrize("anchors,denominator,clamp,norm", SWITCHES)
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_gradient_on_hard_cases_matches_double_loop_and_exact_path(case, anchors, denominator, clamp, norm, alpha,
                                                                    monkeypatch):  # fmt: skip
    import spreadcon.losses._kernel as K

    z, y = _issue_repro() if case == "issue_repro" else _hard_case(case)
    tau = 0.5
    sw = dict(anchors=anchors, denominator=denominator, clamp=clamp, norm=norm)
    want = _grad(lambda t: _ref_spread(t, y, alpha, tau, sw), z, torch.float64)
    fast64, fast32 = (_grad(lambda t: spread_loss(t, y, alpha, tau, **sw), z, dt) for dt in (torch.float64, torch.float32))
    monkeypatch.setattr(K, "_fused_ok", lambda *a, **k: False)
    exact64 = _grad(lambda t: spread_loss(t, y, alpha, tau, **sw), z, torch.float64)
    _close(exact64, want, 1e-8)
    _close(fast64, want, 1e-8)
    _close(fast64, exact64, 1e-8)
    _close(fast32, want, 1e-3)


def test_issue_repro_gradient_in_float32_equals_the_official_value():
    """The issue's numbers: z.grad[0,1,1] and z.grad[1,0,0] are 0.0397 and 0.0361 in the official code."""
    z, y = _issue_repro()
    for dt in (torch.float32, torch.float64):
        g = _grad(lambda t: SpreadLoss(0.5, 0.5, reference_quirks=True)(t, y), z, dt)
        assert float(g[0, 1, 1]) == pytest.approx(0.0397343, abs=1e-6)
        assert float(g[1, 0, 0]) == pytest.approx(0.0361142, abs=1e-6)
        want = _grad(lambda t: ref_official(t, y, 0.5, 0.5), z, torch.float64)
        _close(g, want, 1e-3 if dt == torch.float32 else 1e-8)


# --------------------------------------------------------------------------- any dtype, any scale, any number


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("anchors,denominator,clamp,norm", SWITCHES)
def test_low_precision_inputs_give_finite_values_near_float32(dtype, anchors, denominator, clamp, norm):
    z, y = _data(B=16, V=2, D=8, n_cls=3, dtype=torch.float32, seed=21)
    sw = dict(anchors=anchors, denominator=denominator, clamp=clamp, norm=norm)
    t = z.to(dtype).requires_grad_(True)
    loss = spread_loss(t, y, 0.5, 0.05, **sw)
    loss.backward()
    assert loss.dtype == torch.float32  # accumulated in float32
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(t.grad).all())
    # the same directions in float32: the only difference is the input's rounding
    assert float(loss.detach()) == pytest.approx(float(spread_loss(t.detach().float(), y, 0.5, 0.05, **sw)), rel=1e-5)


@pytest.mark.parametrize("reference_quirks", [False, True])
@pytest.mark.parametrize("denominator", ["all", "one_positive"])
def test_fp16_autocast_on_nearly_collapsed_embeddings_is_finite(reference_quirks, denominator):
    """The issue's repro: B=64, tau=0.05, every sample within 0.05 of its class mean. The one-positive
    denominator once summed exp(logits) per class in a float16 matmul under autocast (inf, then NaN)."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except (RuntimeError, AssertionError) as e:  # older torch: CPU autocast is bf16 only
        pytest.skip(f"fp16 CPU autocast unsupported here: {e}")
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    z = torch.randn(2, 128, generator=g)[y][:, None] + 0.05 * torch.randn(64, 2, 128, generator=g)
    t = z.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = spread_loss(t, y, 0.5, 0.05, reference_quirks=reference_quirks, denominator=denominator)
    loss.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(t.grad).all())
    want = spread_loss(z, y, 0.5, 0.05, reference_quirks=reference_quirks, denominator=denominator)
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-2)


@pytest.mark.parametrize("reference_quirks", [False, True])
@pytest.mark.parametrize("peak", [1e-20, 1e20, 1e38])
def test_loss_is_scale_invariant_for_finite_inputs_of_any_magnitude(reference_quirks, peak):
    """Once the norm overflowed at 1e20 per element (the loss of an all-zero z, zero gradient),
    and the quirks form gave NaN at 1e38."""
    z, y = _data(B=8, V=2, D=6, dtype=torch.float32, seed=22)
    unit = z / z.abs().max()
    want = spread_loss(unit, y, 0.5, 0.5, reference_quirks=reference_quirks)
    t = (unit * peak).requires_grad_(True)
    loss = spread_loss(t, y, 0.5, 0.5, reference_quirks=reference_quirks)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    u = unit.clone().requires_grad_(True)
    spread_loss(u, y, 0.5, 0.5, reference_quirks=reference_quirks).backward()
    if peak < 1e30:  # at 1e38 the true gradient (~1e-39) is subnormal in float32: finite, not comparable
        _close(t.grad.double() * peak, u.grad.double(), 1e-4)
    assert bool(torch.isfinite(t.grad).all())
    # an all-zero z: finite, as before (no direction, no gradient signal)
    assert bool(torch.isfinite(spread_loss(torch.zeros(4, 2, 3), torch.tensor([0, 0, 1, 1]), 0.5, 0.5)))


@pytest.mark.parametrize("make", [np.float32, np.float64, np.int64, lambda v: torch.tensor(v),
                                  lambda v: torch.tensor(v, dtype=torch.float64), int], ids=str)  # fmt: skip
def test_temperature_and_alpha_of_any_real_number_type(make):
    z, y = _data(seed=23)
    want = spread_loss(z, y, 1.0, 2.0)
    assert float(spread_loss(z, y, make(1), make(2))) == pytest.approx(float(want), rel=1e-12)
    assert float(SpreadLoss(make(1), make(2))(z, y)) == pytest.approx(float(want), rel=1e-12)
    assert float(supcon_loss(z, y, make(2))) == pytest.approx(float(SupConLoss(make(2))(z, y)), rel=1e-12)


@pytest.mark.parametrize("bad", [True, "0.5", torch.tensor([0.5]), float("nan"), complex(0.5, 0)])
def test_non_real_temperature_is_rejected(bad):
    z, y = _data(seed=24)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        spread_loss(z, y, 0.5, bad)
