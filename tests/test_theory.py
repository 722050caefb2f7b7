"""The symmetric model of chapter 2 against the real losses, and the helpers of chapters 1 and 3.

The closed forms in ``spreadcon.theory.model`` are checked against brute-force
evaluation of ``spreadcon.losses.contrastive.SpreadLoss`` on embeddings that realise the
model, against finite differences, against a dense grid search, and against
gradient descent over free embeddings. Tolerances are stated where used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spreadcon.theory import symmetry as S
from spreadcon.theory import model as T
from spreadcon.losses.contrastive import SpreadLoss

@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one thread is fastest, and stays fast on a shared, loaded CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CASES = [(0.3, 4, 3, 0.5, 0.3), (0.8, 3, 2, 0.2, 0.7), (-0.1, 5, 2, 1.0, 0.5), (0.6, 4, 3, 0.5, 0.0), (0.95, 6, 2, 0.5, 1.0)]


@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("rho,n,K,tau,alpha", CASES)
def test_closed_form_equals_real_loss(quirks, rho, n, K, tau, alpha):
    """L(rho) of the module docstring is exactly SpreadLoss on identical views (float64, 1e-10)."""
    u, y = T.symmetric_embedding(rho, n, K)
    z = u.unsqueeze(1).expand(-1, 2, -1)
    real = float(SpreadLoss(alpha, tau, quirks)(z, y))
    assert real == pytest.approx(float(T.symmetric_loss(rho, alpha, n, K, tau, quirks)), abs=1e-10)


def test_symmetric_embedding_realises_the_gram_matrix():
    u, y = T.symmetric_embedding(0.2, 5, 3, dim=20)
    assert u.shape == (15, 20)
    torch.testing.assert_close(u @ u.T, T.symmetric_gram(0.2, 5, 3), atol=1e-10, rtol=0)
    rho, sigma = T.class_cosines(u, y)
    assert rho == pytest.approx(0.2) and sigma == pytest.approx(T.between_class_cosine(0.2, 5, 3))


def test_sigma_is_the_psd_boundary():
    """Just below sigma(rho) the Gram matrix has a negative eigenvalue; at it, it does not."""
    for rho in (-0.2, 0.0, 0.5, 1.0):
        s = T.between_class_cosine(rho, 6, 3)
        assert torch.linalg.eigvalsh(T.symmetric_gram(rho, 6, 3, sigma=s)).min() > -1e-10
        assert torch.linalg.eigvalsh(T.symmetric_gram(rho, 6, 3, sigma=s - 1e-3)).min() < -1e-6


@pytest.mark.parametrize("quirks", [False, True])
def test_closed_form_gradients_match_finite_differences(quirks):
    n, K, tau, h = 7, 3, 0.4, 1e-6
    for rho in (-0.1, 0.1, 0.3, 0.6, 0.9):
        g_s, g_c = T.symmetric_loss_grad(rho, n, K, tau, quirks)
        s_hi, c_hi = T.symmetric_terms(rho + h, n, K, tau, quirks)
        s_lo, c_lo = T.symmetric_terms(rho - h, n, K, tau, quirks)
        assert float(g_s) == pytest.approx(float(s_hi - s_lo) / (2 * h), abs=1e-6)
        assert float(g_c) == pytest.approx(float(c_hi - c_lo) / (2 * h), abs=1e-6)


@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("n,K,tau", [(16, 2, 0.5), (5, 4, 0.2), (8, 3, 1.0)])
def test_rho_star_is_the_grid_minimum(quirks, n, K, tau):
    """Golden section equals a 20001-point grid search (to the grid step)."""
    grid = np.linspace(-1 / (n - 1), 1, 20001)
    for alpha in (0.0, 0.05, 0.2, 0.5, 0.7, 1.0):
        values = T.symmetric_loss(grid, alpha, n, K, tau, quirks)
        assert T.rho_star(alpha, n, K, tau, quirks) == pytest.approx(grid[np.argmin(values)], abs=2 * (grid[1] - grid[0]))


def test_equations_thresholds_bracket_the_regimes():
    n, K, tau = 16, 2, 0.5
    th = T.thresholds(n, K, tau)
    assert 0 < th.collapse < th.overlap < th.uniform < 1 and th.plateau is None
    assert T.rho_star(th.collapse - 1e-3, n, K, tau) == 1.0
    assert T.rho_star(th.collapse + 1e-3, n, K, tau) < 1 - 1e-4
    assert T.rho_star(th.overlap, n, K, tau) == pytest.approx(-1 / (n * K - 1), abs=1e-6)
    assert T.rho_star(th.uniform + 1e-3, n, K, tau) == pytest.approx(-1 / (n - 1), abs=1e-9)
    assert T.rho_star(th.uniform - 1e-3, n, K, tau) > -1 / (n - 1) + 1e-5
    # alpha* in closed form: E (2N-1) / ((2n-1) + E (4N-2n-1)), E = exp(-K / ((K-1) tau))
    N, E = n * K, math.exp(-K / ((K - 1) * tau))
    assert th.collapse == pytest.approx(E * (2 * N - 1) / ((2 * n - 1) + E * (4 * N - 2 * n - 1)), rel=1e-12)


def test_alpha_of_rho_inverts_rho_star():
    n, K, tau = 10, 3, 0.3
    for rho in (0.9, 0.5, 0.1, -0.05):
        alpha = float(T.alpha_of_rho(rho, n, K, tau))
        assert 0 < alpha < 1
        assert T.rho_star(alpha, n, K, tau) == pytest.approx(rho, abs=1e-6)


def test_clamped_form_never_collapses_and_sticks_at_the_temperature():
    n, K, tau = 16, 2, 0.5
    th = T.thresholds(n, K, tau, reference_quirks=True)
    assert th.collapse is None and T.rho_star(0.0, n, K, tau, True) < 0.9
    lo, hi = th.plateau
    assert 0 < lo < hi < th.overlap < th.uniform
    for alpha in np.linspace(lo + 1e-3, hi - 1e-3, 7):
        assert T.rho_star(float(alpha), n, K, tau, True) == pytest.approx(tau, abs=1e-8)
    assert T.rho_star(lo - 1e-2, n, K, tau, True) > tau + 1e-4
    assert T.rho_star(hi + 1e-2, n, K, tau, True) < tau - 1e-4


@pytest.mark.parametrize("quirks,alphas", [(False, (0.0, 0.2, 0.8)), (True, (0.0, 0.4))])
def test_free_embeddings_reach_rho_star(quirks, alphas):
    """Adam on free unit embeddings (dim >= N) finds rho* within 0.015 and sigma(rho*) within 0.02."""
    n, K, tau = 8, 2, 0.5
    y = torch.arange(K).repeat_interleave(n)
    for alpha in alphas:
        u, _ = T.optimise_free_embeddings(SpreadLoss(alpha, tau, quirks), y, dim=20, steps=300, lr=0.05, seed=1)
        rho, sigma = T.class_cosines(u, y)
        r_star = T.rho_star(alpha, n, K, tau, quirks)
        assert rho == pytest.approx(r_star, abs=0.015), (alpha, rho, r_star)
        assert sigma == pytest.approx(T.between_class_cosine(r_star, n, K), abs=0.02)


def test_supcon_collapses_free_embeddings_on_the_sphere_to_a_simplex():
    """Chapter 1's theorem on S^2: 4 classes collapse to the vertices of a regular tetrahedron."""
    y = torch.arange(4).repeat_interleave(5)
    u, _ = T.optimise_free_embeddings(SpreadLoss(0.0, 0.5), y, dim=3, steps=400, lr=0.05, seed=0)
    rho, _ = T.class_cosines(u, y)
    assert rho > 0.999
    means = torch.stack([u[y == k].mean(0) for k in range(4)])
    means = means / means.norm(dim=1, keepdim=True)
    off = (means @ means.T)[~torch.eye(4, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 3), atol=2e-3, rtol=0)


@pytest.mark.parametrize("quirks", [False, True])
def test_within_class_permutation_leaves_the_loss_unchanged(quirks):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (24,), generator=g)
    z = torch.randn(24, 2, 8, generator=g, dtype=torch.float64)
    pi = T.within_class_permutation(y, g)
    assert (y[pi] == y).all() and not (pi == torch.arange(24)).all()
    assert sorted(pi.tolist()) == list(range(24))
    loss = SpreadLoss(0.4, 0.5, quirks)
    assert float(loss(z[pi], y)) == pytest.approx(float(loss(z, y)), abs=1e-12)
    assert T.class_cosines(z[pi, 0], y) == pytest.approx(T.class_cosines(z[:, 0], y), abs=1e-12)


def test_subclass_data_geometry():
    d = T.make_subclass_data(K=3, m=4, n_per_subclass=50, dim=16, class_separation=5.0, subclass_separation=2.0, seed=3)
    assert d.x.shape == (600, 16) and d.x.dtype == torch.float32
    assert (d.coarse == d.fine // 4).all() and d.fine.bincount().tolist() == [50] * 12
    offsets = (d.centres.reshape(3, 4, 16) - d.class_centres[:, None]).reshape(12, 16)
    # subclass offsets have the stated norm and are orthogonal to every class centre
    torch.testing.assert_close(offsets.norm(dim=1), torch.full((12,), 2.0))
    torch.testing.assert_close(d.class_centres.norm(dim=1), torch.full((3,), 5.0))
    assert (offsets @ d.class_centres.T).abs().max() < 1e-4
    # sample means sit near their subclass centre (noise 1, 50 samples: sd 1/sqrt(50) per axis)
    emp = torch.stack([d.x[d.fine == f].mean(0) for f in range(12)])
    assert (emp - d.centres).norm(dim=1).max() < 1.5
    views = d.subclass_views(2, torch.Generator().manual_seed(0))
    assert views.shape == (600, 2, 16)
    train, test = d.split(0.5, torch.Generator().manual_seed(0))
    assert len(train.fine) == len(test.fine) == 300


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: T.rho_bounds(1, 2), "n"),
        (lambda: T.symmetric_loss(0.5, 1.5, 4, 2, 0.5), "alpha"),
        (lambda: T.symmetric_terms(0.5, 4, 2, 0.0), "temperature"),
        (lambda: T.symmetric_gram(-0.9, 4, 2), "rho"),
        (lambda: T.optimise_free_embeddings(SpreadLoss(), torch.zeros(4, dtype=torch.long), dim=1), "dim"),
        (lambda: T.make_subclass_data(noise=0.0), "noise"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_train_synthetic_rejects_unknown_mechanism():
    d = T.make_subclass_data(K=2, m=2, n_per_subclass=5, dim=8)
    with pytest.raises(ValueError, match="mechanism"):
        S.train_synthetic(d, "dropout", steps=1)


def test_subclass_views_stay_in_the_subclass():
    """Each view is nearest to its own subclass centre when noise is small against the offsets."""
    d = T.make_subclass_data(K=2, m=3, n_per_subclass=20, dim=16, subclass_separation=6.0, noise=0.3, seed=1)
    views = d.subclass_views(2, torch.Generator().manual_seed(0))
    nearest = torch.cdist(views.flatten(0, 1), d.centres).argmin(1).view(-1, 2)
    assert (nearest == d.fine[:, None]).all()


def test_mechanisms_train_and_are_scored():
    """Every mechanism trains a few steps and yields finite recovery scores in range (the plumbing of chapter 3)."""
    d = T.make_subclass_data(K=2, m=2, n_per_subclass=20, dim=8, subclass_separation=4.0, seed=0)
    tr, te = d.split(0.5, torch.Generator().manual_seed(0))
    for mech in T.MECHANISMS:
        enc = S.train_synthetic(tr, mech, steps=3, batch_size=32, out_dim=8)
        rec = T.subclass_recovery(enc, tr, te)
        assert 0 <= rec["fine_acc"] <= 1 and 0 <= rec["coarse_acc"] <= 1 and -1 <= rec["ami"] <= 1


@pytest.mark.parametrize("n,K,tau", [(16, 2, 0.5), (13, 10, 0.5), (100, 2, 0.9), (4, 3, 0.3), (30, 5, 0.45)])
def test_clamped_supcon_collapses_iff_tau_above_the_bound(n, K, tau):
    """Chapter 2: for tau < 1 the clamped SupCon collapses iff tau >= K / ((K-1) log n)."""
    bound = K / ((K - 1) * math.log(n))
    collapses = T.rho_star(0.0, n, K, tau, reference_quirks=True) == 1.0
    assert collapses == (tau >= bound)
    assert (T.thresholds(n, K, tau, reference_quirks=True).collapse is not None) == collapses


def test_train_synthetic_on_eval_follows_the_run_without_changing_it():
    """on_eval sees step 0, every eval_every steps and the last step; the run equals one without it."""
    d = T.make_subclass_data(K=2, m=2, n_per_subclass=20, dim=8, seed=0)
    plain = S.train_synthetic(d, "baseline", steps=7, batch_size=16, out_dim=4, seed=3)
    seen = {}

    def on_eval(step, enc):
        assert not enc.training
        torch.randn(10)  # global randomness in a callback must not change the batches
        with torch.no_grad():
            seen[step] = enc(d.x).clone()

    hooked = S.train_synthetic(d, "baseline", steps=7, batch_size=16, out_dim=4, seed=3, on_eval=on_eval, eval_every=3)
    assert sorted(seen) == [0, 3, 6, 7]
    with torch.no_grad():
        final = plain(d.x)
        assert torch.equal(hooked(d.x), final) and torch.equal(seen[7], final)
    assert not torch.allclose(seen[0], final)  # the callback saw training move the embedding
    with pytest.raises(ValueError, match="eval_every"):
        S.train_synthetic(d, "baseline", steps=1, eval_every=-1)


# --------------------------------------------------------------------------- three forms, free views, Lemma 1


@pytest.mark.parametrize("form", T.FORMS)
@pytest.mark.parametrize("rho,n,K,tau,alpha", CASES)
def test_every_form_closed_form_equals_real_loss(form, rho, n, K, tau, alpha):
    """Each form's L(rho) is exactly its SpreadLoss on identical views (float64, 1e-10)."""
    u, y = T.symmetric_embedding(rho, n, K)
    z = u.unsqueeze(1).expand(-1, 2, -1)
    real = float(T.spread_loss_for_form(alpha, tau, form)(z, y))
    assert real == pytest.approx(float(T.symmetric_loss(rho, alpha, n, K, tau, form=form)), abs=1e-10)


def test_forms_keep_the_reference_quirks_names():
    """reference_quirks=False/True are the forms l_out / one_positive_clamped; a contradiction is an error."""
    for r in (-0.05, 0.3, 0.9):
        assert T.symmetric_loss(r, 0.3, 8, 3, 0.4, False) == T.symmetric_loss(r, 0.3, 8, 3, 0.4, form="l_out")
        assert T.symmetric_loss(r, 0.3, 8, 3, 0.4, True) == T.symmetric_loss(r, 0.3, 8, 3, 0.4, form="one_positive_clamped")
    with pytest.raises(ValueError, match="form"):
        T.symmetric_loss(0.3, 0.3, 8, 3, 0.4, True, form="l_out")
    with pytest.raises(ValueError, match="form"):
        T.thresholds(8, 3, 0.4, form="paper")


@pytest.mark.parametrize("form", ["one_positive"])
def test_unclamped_gradient_matches_finite_differences(form):
    n, K, tau, h = 7, 3, 0.4, 1e-6
    for rho in (-0.1, 0.1, 0.3, 0.6, 0.9):
        g_s, g_c = T.symmetric_loss_grad(rho, n, K, tau, form=form)
        s_hi, c_hi = T.symmetric_terms(rho + h, n, K, tau, form=form)
        s_lo, c_lo = T.symmetric_terms(rho - h, n, K, tau, form=form)
        assert float(g_s) == pytest.approx(float(s_hi - s_lo) / (2 * h), abs=1e-6)
        assert float(g_c) == pytest.approx(float(c_hi - c_lo) / (2 * h), abs=1e-6)


@pytest.mark.parametrize("form", T.FORMS)
def test_thresholds_of_every_form_against_free_embeddings(form):
    """Each regime of rho*(alpha) (collapsed, spread, uniform) is where Adam on free embeddings lands.

    n = 8, K = 2, tau = 0.5: free unit embeddings in 20 dimensions with identical views, 300 Adam steps;
    the optimised within-class cosine is within 0.02 of the analytic one in each regime.
    """
    n, K, tau = 8, 2, 0.5
    th = T.thresholds(n, K, tau, form=form)
    assert th.overlap < th.uniform < 1
    if th.collapse is not None:
        assert 0 < th.collapse < th.overlap
    start = 0.0 if th.collapse is None else th.collapse
    probes = [(start + th.overlap) / 2, min(th.uniform + 0.1, 1.0)]
    if th.collapse is not None:
        probes.append(th.collapse / 2)
    y = torch.arange(K).repeat_interleave(n)
    for alpha in probes:
        u, _ = T.optimise_free_embeddings(T.spread_loss_for_form(alpha, tau, form), y, dim=20, steps=300, lr=0.05, seed=2)
        rho, _ = T.class_cosines(u, y)
        assert rho == pytest.approx(T.rho_star(alpha, n, K, tau, form=form), abs=0.02), (form, alpha)
    # and the regime edges by the closed forms
    assert T.rho_star(min(th.uniform + 0.1, 1.0), n, K, tau, form=form) == pytest.approx(-1 / (n - 1), abs=1e-9)
    if th.collapse is not None:
        assert T.rho_star(th.collapse / 2, n, K, tau, form=form) == 1.0


def test_threshold_ordering_moves_between_forms():
    """K=2, n=16, tau=0.5: L_out collapses only below 0.036; without the clamp collapse lasts to 0.31; with it, never."""
    lo = T.thresholds(16, 2, 0.5, form="l_out")
    up = T.thresholds(16, 2, 0.5, form="one_positive")
    cl = T.thresholds(16, 2, 0.5, form="one_positive_clamped")
    assert lo.collapse == pytest.approx(0.03524, abs=1e-4) and up.collapse == pytest.approx(0.3119, abs=1e-3)
    assert cl.collapse is None
    # the two one-positive forms share the cNCE term and agree below the kink, so their alpha_o and alpha_u coincide
    assert up.overlap == pytest.approx(cl.overlap, abs=1e-12) and up.uniform == pytest.approx(cl.uniform, abs=1e-12)
    assert lo.uniform < up.overlap


def test_gram_eigenvalues_are_lemma_1():
    """The three eigenvalues with multiplicities equal numpy.linalg.eigvalsh of the Gram matrix."""
    for rho, sigma, n, K in [(0.3, -0.1, 4, 3), (0.8, 0.2, 5, 2), (-0.2, -0.05, 6, 4), (1.0, -0.5, 3, 3)]:
        got = sorted(e for e, mult in T.gram_eigenvalues(rho, sigma, n, K) for _ in range(mult))
        want = np.linalg.eigvalsh(T.symmetric_gram(rho, n, K, sigma=sigma).numpy())
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_two_view_eigenvalues_match_eigvalsh():
    g = np.random.default_rng(0)
    for _ in range(5):
        v = T.ViewCosines(*g.uniform(-0.5, 1, 5))
        got = sorted(e for e, mult in T.two_view_eigenvalues(v, 4, 3) for _ in range(mult))
        np.testing.assert_allclose(got, np.linalg.eigvalsh(T.two_view_gram(v, 4, 3).numpy()), atol=1e-10)


@pytest.mark.parametrize("form", T.FORMS)
def test_two_view_loss_equals_real_loss(form):
    """The two-view model's closed form is SpreadLoss on vectors that realise it (feasible random cosines)."""
    g = np.random.default_rng(1)
    n, K, tau, alpha = 4, 3, 0.5, 0.3
    done = 0
    while done < 4:
        v = T.ViewCosines(*g.uniform(0.2, 1, 3), *g.uniform(-0.3, 0, 2))
        if min(e for e, _ in T.two_view_eigenvalues(v, n, K)) < 0:
            continue
        z, y = T.two_view_embedding(v, n, K)
        real = float(T.spread_loss_for_form(alpha, tau, form)(z, y))
        assert real == pytest.approx(T.two_view_loss(v, alpha, n, K, tau, form=form), abs=1e-9)
        done += 1


# --------------------------------------------------------------------------- exchangeable views (chapter 2)

def _vectors(gram: torch.Tensor) -> torch.Tensor:
    """Rows whose Gram matrix is ``gram`` (PSD), by eigendecomposition."""
    evals, evecs = torch.linalg.eigh(gram)
    u = evecs * evals.clamp(min=0).sqrt()
    return u / u.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("form", T.FORMS)
@pytest.mark.parametrize("n,K,tau,alpha", [(4, 3, 0.5, 0.3), (3, 2, 0.2, 0.0), (5, 2, 1.0, 0.8)])
def test_exchangeable_loss_is_the_real_loss_on_the_expected_gram(form, n, K, tau, alpha):
    """Vectors with the model's 2N x 2N expected Gram matrix, through the package's SpreadLoss, give
    ``exchangeable_loss`` (which is computed through the temperature identity: another code path)."""
    g = np.random.default_rng(n + K)
    done = 0
    while done < 4:
        c = float(g.uniform(0.05, 1))
        rho = float(g.uniform(-c / (n - 1), c))
        u = _vectors(T.exchangeable_gram(c, rho, n, K))
        N = n * K
        z, y = torch.stack([u[:N], u[N:]], dim=1), torch.arange(K).repeat_interleave(n)
        assert float((z[0, 0] * z[0, 1]).sum()) == pytest.approx(c, abs=1e-9)
        assert float((z[0, 0] * z[1, 1]).sum()) == pytest.approx(rho, abs=1e-9)   # cross-view = same-view
        real = float(T.spread_loss_for_form(alpha, tau, form)(z, y))
        assert real == pytest.approx(float(T.exchangeable_loss(c, rho, alpha, n, K, tau, form=form)), abs=1e-9)
        done += 1


def test_exchangeable_gram_refuses_what_no_encoder_reaches():
    """rho > c would need two classmates' mean embeddings nearer than an image's own: Cauchy-Schwarz forbids it,
    although a 2N x 2N Gram matrix with those entries can be PSD."""
    with pytest.raises(ValueError, match="no encoder"):
        T.exchangeable_gram(0.5, 0.7, 4, 2)
    v = T.ViewCosines(0.5, 0.7, 0.7, T.exchangeable_sigma(0.5, 0.7, 4, 2), T.exchangeable_sigma(0.5, 0.7, 4, 2))
    assert min(e for e, _ in T.two_view_eigenvalues(v, 4, 2)) >= 0


def test_an_encoders_expected_loss_is_bounded_by_the_model():
    """The proposition, on a random encoder enumerated exactly: 2 images per class, 2 classes, each image with
    2 equally likely augmented embeddings, views i.i.d. Over all 2^8 batches:
    E[loss] >= loss(E[Gram]) >= loss at the symmetrised cosines (c, rho, sigma_min) >= exchangeable_minimum,
    and E[Gram] has same-view = cross-view cosines for different images and c = ||mu||^2."""
    import itertools

    n, K, tau, alpha = 2, 2, 0.5, 0.3
    N, outcomes = n * K, 2
    g = torch.Generator().manual_seed(0)
    centre = torch.randn(K, 6, generator=g, dtype=torch.float64)
    emb = centre.repeat_interleave(n, 0)[:, None, :] + 0.8 * torch.randn(N, outcomes, 6, generator=g, dtype=torch.float64)
    emb = emb / emb.norm(dim=-1, keepdim=True)                  # (image, outcome, D) unit vectors
    y = torch.arange(K).repeat_interleave(n)
    loss_fn = SpreadLoss(alpha, tau)
    total, gram = 0.0, torch.zeros(2 * N, 2 * N, dtype=torch.float64)
    draws = list(itertools.product(range(outcomes), repeat=2 * N))
    for d in draws:
        z = torch.stack([emb[i, [d[i], d[N + i]]] for i in range(N)])      # (N, 2, D)
        total += float(loss_fn(z, y))
        flat = torch.cat([z[:, 0], z[:, 1]])
        gram += flat @ flat.T
    e_loss, gram = total / len(draws), gram / len(draws)
    mu = emb.mean(1)
    off = ~torch.eye(N, dtype=torch.bool)
    assert torch.allclose(gram[:N, :N][off], gram[:N, N:][off], atol=1e-12)   # same-view = cross-view
    assert torch.allclose(gram[:N, N:].diagonal(), (mu * mu).sum(1), atol=1e-12)  # c_i = ||mu_i||^2
    u = _vectors(gram)
    at_mean = float(loss_fn(torch.stack([u[:N], u[N:]], dim=1), y))
    same = (y[:, None] == y[None, :]) & off
    c, rho = float(gram[:N, N:].diagonal().mean()), float(gram[:N, :N][same].mean())
    assert rho <= c
    symmetrised = float(T.exchangeable_loss(c, rho, alpha, n, K, tau))
    best = T.exchangeable_minimum(alpha, n, K, tau).loss
    assert e_loss >= at_mean - 1e-12 and at_mean >= symmetrised - 1e-12 and symmetrised >= best - 1e-9
    assert e_loss > best + 1e-3                                  # this encoder is not optimal: the chain is not trivial


@pytest.mark.parametrize("form", T.FORMS)
def test_an_encoder_with_noise_reaches_the_model(form):
    """The construction of the proposition (mean embeddings plus fresh noise in many extra dimensions):
    its average loss over draws tends to the model's loss."""
    n, K, tau, alpha, c, rho = 4, 2, 0.5, 0.3, 0.7, 0.4
    g = torch.Generator().manual_seed(1)
    loss_fn = T.spread_loss_for_form(alpha, tau, form)
    vals = [float(loss_fn(*T.exchangeable_views(c, rho, n, K, noise_dim=20000, generator=g))) for _ in range(20)]
    assert float(np.mean(vals)) == pytest.approx(float(T.exchangeable_loss(c, rho, alpha, n, K, tau, form=form)), abs=0.01)


@pytest.mark.parametrize("form", T.FORMS)
@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3, 0.6])
def test_exchangeable_minimum_is_the_grid_minimum(form, alpha):
    """A dense grid over (c, rho) with the direct closed form (two_view_loss) finds nothing lower, and comes close."""
    n, K, tau = 8, 2, 0.5
    best = T.exchangeable_minimum(alpha, n, K, tau, form=form)
    grid = []
    for c in np.linspace(0.02, 1, 99):
        for rho in np.linspace(-c / (n - 1), c, 99):
            s = T.exchangeable_sigma(float(c), float(rho), n, K)
            grid.append(T.two_view_loss(T.ViewCosines(float(c), float(rho), float(rho), s, s), alpha, n, K, tau, form=form))
    assert min(grid) >= best.loss - 1e-9 and min(grid) <= best.loss + 2e-3
    assert best.loss <= best.identical_loss + 1e-12 and best.rho <= best.view + 1e-12


@pytest.mark.parametrize("n,K,tau", [(16, 2, 0.5), (8, 2, 0.3), (16, 3, 0.5), (51, 2, 0.5), (10, 5, 0.2)])
def test_clamp_alone_collapses_the_class_means(n, K, tau):
    """Chapter 2's exercise: with the clamp and alpha = 0 the class means coincide (rho = c) and the views sit at
    c = min(1, tau (K-1) ln n / K): the identical-views optimum at the temperature K/((K-1) ln n)."""
    r = T.exchangeable_minimum(0.0, n, K, tau, form="one_positive_clamped")
    assert r.rho / r.view == pytest.approx(1.0, abs=1e-6)
    assert r.view == pytest.approx(min(1.0, tau * (K - 1) * math.log(n) / K), abs=1e-6)
    if r.view < 1:
        assert r.loss < r.identical_loss and T.rho_star(0.0, n, K, tau, form="one_positive_clamped") < 1


@pytest.mark.parametrize("n,K,tau", [(16, 2, 0.5), (8, 2, 0.3), (16, 3, 0.5), (51, 2, 0.5), (77, 2, 0.5), (10, 5, 0.2), (4, 2, 2.0)])
def test_l_out_keeps_identical_views(n, K, tau):
    """The evidence for the chapter's conjecture: for L_out the exchangeable optimum has c = 1 at every weight."""
    for alpha in np.linspace(0, 1, 11):
        r = T.exchangeable_minimum(float(alpha), n, K, tau)
        assert r.view == pytest.approx(1.0, abs=1e-6) and r.loss == pytest.approx(r.identical_loss, abs=1e-10)


def test_clamped_views_coincide_beyond_the_smallest_weights():
    """Chapter 2's table: K=2, n=16, tau=0.5: the clamped form keeps c < 1 at alpha = 0.005, c = 1 from 0.015 on."""
    assert T.exchangeable_minimum(0.005, 16, 2, 0.5, form="one_positive_clamped").view < 0.9
    for alpha in (0.015, 0.1, 0.5, 0.9):
        r = T.exchangeable_minimum(alpha, 16, 2, 0.5, form="one_positive_clamped")
        assert r.view == pytest.approx(1.0, abs=1e-6) and r.rho == pytest.approx(r.identical_rho, abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5])
def test_free_two_view_embeddings_stay_identical_for_l_out(alpha):
    """Adam on free, separate views (a wider search than any encoder): for L_out the two views still coincide."""
    y = torch.arange(2).repeat_interleave(8)
    u, _ = T.optimise_free_embeddings(SpreadLoss(alpha, 0.5), y, dim=32, steps=300, lr=0.05, identical_views=False, seed=0)
    assert float((u[:, 0] * u[:, 1]).sum(-1).min()) > 0.99


@pytest.mark.parametrize("form", T.FORMS)
def test_strict_convexity_and_monotone_alpha_of_rho(form):
    """L_alpha'' > 0 (closed form = finite differences away from the kink) and alpha(rho) strictly decreasing."""
    n, K, tau, h = 10, 3, 0.4, 1e-4
    rhos = np.linspace(-1 / (n - 1) + 1e-3, 1 - 1e-3, 300)
    rhos = rhos[np.abs(rhos - tau) > 5 * h]
    for alpha in (0.0, 0.4, 1.0):
        hess = T.symmetric_loss_hess(rhos, alpha, n, K, tau, form=form)
        assert (hess > 0).all()
        fd = (T.symmetric_loss(rhos + h, alpha, n, K, tau, form=form) - 2 * T.symmetric_loss(rhos, alpha, n, K, tau, form=form)
              + T.symmetric_loss(rhos - h, alpha, n, K, tau, form=form)) / h**2
        np.testing.assert_allclose(hess, fd, rtol=1e-3, atol=1e-4)
    a = np.asarray(T.alpha_of_rho(rhos, n, K, tau, form=form))
    g_s, g_c = T.symmetric_loss_grad(rhos, n, K, tau, form=form)
    for side in (rhos < tau, rhos > tau) if form == "one_positive_clamped" else (np.ones_like(rhos, bool),):
        ok = side & (g_c > g_s)
        assert (np.diff(a[ok]) < 0).all()


def test_same_spread_pair_has_equal_spread_and_different_transfer():
    """Same points per class (equal cosines and loss), but only the structured one lets a probe read the subclass."""
    from spreadcon.eval.probe import linear_probe

    a, b, y, f = T.same_spread_pair(K=2, m=3, n_per_subclass=40, seed=1)
    assert T.class_cosines(a, y) == pytest.approx(T.class_cosines(b, y), abs=1e-12)
    loss = SpreadLoss(0.5, 0.5)
    assert float(loss(a.unsqueeze(1).expand(-1, 2, -1), y)) == pytest.approx(float(loss(b.unsqueeze(1).expand(-1, 2, -1), y)), abs=1e-9)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = idx[: len(y) // 2], idx[len(y) // 2:]
    acc = lambda u: linear_probe(u[tr].float(), f[tr], u[te].float(), f[te], l2=1e-4).accuracy  # noqa: E731
    assert acc(a) > 0.9 and acc(b) < 0.5  # chance within a class is 1/3


def test_the_chapters_regime_claims():
    """The numbers chapters 2 and 3 state in words.

    Coarse-label CIFAR-10 batch of 128 (K=2, n between 51 and 77, tau=0.5): L_out puts alpha=0.5 inside
    (alpha*, alpha_o); without the clamp collapse lasts to about 0.49 (n=51) and 0.54 (n=77). Chapter 3's batch
    (n=48): alpha=0.5 just below L_out's overlap edge, on the clamp's plateau, almost collapsed without it.
    """
    for n in (51, 77):
        th = T.thresholds(n, 2, 0.5)
        assert th.collapse < 0.5 < th.overlap < 0.52
    assert T.thresholds(51, 2, 0.5, form="one_positive").collapse == pytest.approx(0.491, abs=2e-3)
    assert T.thresholds(77, 2, 0.5, form="one_positive").collapse == pytest.approx(0.539, abs=2e-3)
    th48 = T.thresholds(48, 2, 0.5)
    assert 0.5 < th48.overlap < 0.52 and 0 < T.rho_star(0.5, 48, 2, 0.5) < 0.05
    assert T.rho_star(0.5, 48, 2, 0.5, form="one_positive_clamped") == pytest.approx(0.5, abs=1e-8)
    assert T.rho_star(0.5, 48, 2, 0.5, form="one_positive") > 0.95


def test_separation_on_a_hand_made_embedding():
    """Classes {e1, e2} and {-e1, -e2}: within cosine 0, between -1/2, gap 1/2, ratio 2/3 (from the pairs by hand)."""
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = torch.tensor([0, 0, 1, 1])
    s = T.separation(*T.class_cosines(u, y))
    assert (s.within, s.between) == pytest.approx((0.0, -0.5), abs=1e-12)
    assert s.gap == pytest.approx(0.5, abs=1e-12)
    assert s.ratio == pytest.approx(2 / 3, abs=1e-12)
    # The ratio is the mean squared distance between classmates over that between classes.
    d2 = torch.cdist(u.double(), u.double()) ** 2
    same, eye = y[:, None] == y[None, :], torch.eye(4, dtype=torch.bool)
    assert s.ratio == pytest.approx(float(d2[same & ~eye].mean() / d2[~same].mean()), abs=1e-12)


def test_separation_tells_global_contraction_from_spread_inside_a_class():
    """Shrinking every distance by one factor (global contraction) moves both cosines and the gap, not the ratio;
    the symmetric model at its overlap edge rho = sigma has gap 0 and ratio 1, and collapse has ratio 0."""
    u, y = T.symmetric_embedding(0.4, 5, 2)                 # unit vectors, rho = 0.4
    u = torch.cat([u, torch.zeros(len(u), 1, dtype=u.dtype)], 1)
    pole = torch.zeros(u.shape[1], dtype=u.dtype)
    pole[-1] = 1.0                                          # orthogonal to every u_i
    a = T.separation(*T.class_cosines(u, y))
    # Contract towards the pole: v = (pole + eps u) / sqrt(1 + eps^2) is a unit vector and
    # 1 - cos(v_i, v_j) = eps^2 (1 - cos(u_i, u_j)) / (1 + eps^2): every squared distance scales by one factor.
    eps = 0.3
    v = (pole + eps * u) / math.sqrt(1 + eps ** 2)
    b = T.separation(*T.class_cosines(v, y))
    assert b.within > a.within + 0.3 and b.between > a.between + 0.3   # both cosines rise together
    assert b.gap == pytest.approx(a.gap * eps ** 2 / (1 + eps ** 2), abs=1e-10)
    assert b.ratio == pytest.approx(a.ratio, abs=1e-10)
    edge = -1 / (2 * 5 - 1)
    e = T.separation(*T.class_cosines(*T.symmetric_embedding(edge, 5, 2)))
    assert e.gap == pytest.approx(0.0, abs=1e-10) and e.ratio == pytest.approx(1.0, abs=1e-10)
    assert T.separation(1.0, -1.0).ratio == 0.0
    with pytest.raises(ValueError, match="between"):
        T.separation(1.0, 1.0)


def test_sweep_stats_mean_std_gap_ratio():
    """sweep_stats averages over seeds with ddof=1 and computes gap and ratio per run before averaging."""
    from spreadcon.book.collapse import sweep_stats

    rec = {(0, 0.0): {"within_test": 0.9, "between_test": 0.8, "coarse_acc": 0.7},
           (1, 0.0): {"within_test": 0.5, "between_test": 0.0, "coarse_acc": 0.9}}
    st = sweep_stats(rec, [0, 1], [0.0])
    assert st["within_test"][0][0] == pytest.approx(0.7)
    assert st["within_test"][1][0] == pytest.approx(math.sqrt(0.08))       # std of (0.9, 0.5), ddof=1
    assert st["gap_test"][0][0] == pytest.approx((0.1 + 0.5) / 2)
    assert st["ratio_test"][0][0] == pytest.approx((0.5 + 0.5) / 2)        # 0.1/0.2 and 0.5/1.0
    assert st["coarse_acc"][0][0] == pytest.approx(0.8)
    assert sweep_stats(rec, [0], [0.0])["gap_test"][1][0] == 0.0


def test_collapse_threshold_closed_form_by_sympy():
    """Chapter 2's theorem, part 1: sympy differentiates L_out along sigma(rho) and alpha(1) equals
    E (2N-1) / ((2n-1) + E (4N-2n-1)), E = exp(-tK/(K-1)); the derivatives equal symmetric_loss_grad."""
    sp = pytest.importorskip("sympy")
    r_, t_, n_, K_ = sp.symbols("rho t n K", positive=True)
    sig = -(1 + (n_ - 1) * r_) / (n_ * (K_ - 1))
    Ls = -t_ * (1 + 2 * (n_ - 1) * r_) / (2 * n_ - 1) + sp.log(
        sp.exp(t_) + 2 * (n_ - 1) * sp.exp(t_ * r_) + 2 * n_ * (K_ - 1) * sp.exp(t_ * sig))
    Lc = -t_ + sp.log(sp.exp(t_) + 2 * (n_ - 1) * sp.exp(t_ * r_))
    gS, gC = sp.diff(Ls, r_), sp.diff(Lc, r_)
    E, N = sp.exp(-t_ * K_ / (K_ - 1)), n_ * K_
    claimed = E * (2 * N - 1) / ((2 * n_ - 1) + E * (4 * N - 2 * n_ - 1))
    g = np.random.default_rng(0)
    for _ in range(10):
        vals = {t_: g.uniform(0.5, 10), n_: int(g.integers(2, 40)), K_: int(g.integers(2, 12))}
        rho = g.uniform(-1 / (vals[n_] - 1), 1)
        gs, gc = T.symmetric_loss_grad(rho, vals[n_], vals[K_], 1 / vals[t_])
        assert float(gS.subs(vals).subs(r_, rho)) == pytest.approx(float(gs), abs=1e-10)
        assert float(gC.subs(vals).subs(r_, rho)) == pytest.approx(float(gc), abs=1e-10)
        a1 = float((-gS / (gC - gS)).subs(vals).subs(r_, 1))
        assert a1 == pytest.approx(float(claimed.subs(vals)), abs=1e-12)
        assert a1 == pytest.approx(float(T.alpha_of_rho(1.0, vals[n_], vals[K_], 1 / vals[t_])), abs=1e-12)
