"""Theory helpers for chapters 1-3: the symmetric model, rho*(alpha), free embeddings, subclasses.

Everything here is *our* formulation (the paper's proofs are not available to
us). The book chapters derive each formula; this module holds the closed forms
so that the chapters and ``tests/test_theory.py`` use one implementation.

The symmetric model
-------------------
``K`` balanced classes of ``n`` unit vectors each (``N = nK``), two views per
sample and **identical views** (view 0 equals view 1). Its Gram matrix over the
``N`` samples has three values: 1 on the diagonal, ``rho`` for two different
samples of one class and ``sigma`` for samples of different classes. The
Gram matrix is positive semi-definite iff ``-1/(n-1) <= rho <= 1`` and

    -(1 + (n-1) rho) / (n (K-1))  <=  sigma  <=  (1 + (n-1) rho) / n.

Both losses only grow with ``sigma``, so their minimiser sits on the lower
bound, where the N vectors sum to zero and the class means form a regular
simplex::

    sigma(rho) = -(1 + (n-1) rho) / (n (K-1)) = -rho_bar / (K-1),
    rho_bar = ||class mean||^2 = (1 + (n-1) rho) / n.

With ``t = 1/temperature`` the loss of ``SpreadLoss()`` (Khosla et al.'s L_out,
``reference_quirks=False``; the paper's own denominator is not known) is exactly,
for every anchor alike,

    SupCon(rho) = -t (1 + 2(n-1) rho) / (2n-1)
                  + log(e^t + 2(n-1) e^{t rho} + 2n(K-1) e^{t sigma})
    cNCE(rho)   = -t + log(e^t + 2(n-1) e^{t rho})

and with ``reference_quirks=True`` (the official code, one view pair,
positive logits clamped at 1 in the SupCon numerator)

    SupCon_q(rho) = (1/n) [ -min(t, 1) + log(e^t + n(K-1) e^{t sigma}) ]
                  + ((n-1)/n) [ -min(t rho, 1) + log(e^{t rho} + n(K-1) e^{t sigma}) ]
    cNCE_q(rho)   = -t + log(e^t + (n-1) e^{t rho}).

Both are convex functions of the Gram matrix (log-sum-exp of linear maps, plus
linear terms, plus ``max(-x, -1)``), so ``L(rho)`` is convex on the feasible
interval and its minimiser ``rho*(alpha)`` is found by a bracketed search.
For L_out ``dL/drho`` has the closed form below, which gives the
collapse threshold ``alpha*`` and the inverse map ``alpha(rho)``.

Three forms of SupCon
---------------------
The paper's own SupCon denominator is not known, so every function takes
``form=`` (one of ``FORMS``): ``"l_out"`` (Khosla et al.'s L_out, the
package default, ``reference_quirks=False``), ``"one_positive_clamped"``
(the official code, ``reference_quirks=True``) and ``"one_positive"`` (the
official denominator without the clamp). ``symmetric_loss_hess`` gives the
second derivative (strict convexity), ``gram_eigenvalues`` Lemma 1.

Exchangeable views
------------------
An encoder sees two i.i.d. draws of the augmentation and cannot tell "view 0"
from "view 1". With ``mu_i`` the mean embedding of image ``i``, its expected
cosines are ``c = ||mu_i||^2`` for the image's own two views and
``<mu_i, mu_j>`` for two different images, the same in either view
(``exchangeable_gram``). The loss is convex in the Gram matrix, so by Jensen
and the averaging argument the best an encoder can do is the minimum over
``(c, rho)`` with ``rho <= c`` (``exchangeable_minimum``), approached by
mean embeddings plus fresh noise in many extra dimensions
(``exchangeable_views``). Every logit is a cosine over the temperature, so
view cosine ``c`` acts as the temperature ``temperature / c``
(``exchangeable_loss``). For L_out the optimum keeps ``c = 1`` (computed, not
proved); for the clamped form at small alpha it does not (K=2, n=16,
tau=0.5, alpha=0: ``c = ln 2`` with the class means collapsed, ``rho = c``).
The older five-cosine model (``ViewCosines``, ``two_view_loss``) lets the
same-view and cross-view cosines differ, which no encoder can do; it stays
as the general closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = [
    "FORMS",
    "spread_loss_for_form",
    "symmetric_loss_hess",
    "gram_eigenvalues",
    "ViewCosines",
    "two_view_eigenvalues",
    "two_view_gram",
    "two_view_embedding",
    "two_view_loss",
    "exchangeable_sigma",
    "exchangeable_eigenvalues",
    "exchangeable_gram",
    "exchangeable_loss",
    "ExchangeableMinimum",
    "exchangeable_minimum",
    "exchangeable_views",
    "between_class_cosine",
    "rho_bounds",
    "symmetric_gram",
    "symmetric_embedding",
    "symmetric_terms",
    "symmetric_loss",
    "symmetric_loss_grad",
    "alpha_of_rho",
    "rho_star",
    "Thresholds",
    "thresholds",
    "optimise_free_embeddings",
    "class_cosines",
    "Separation",
    "separation",
    "within_class_permutation",
    "same_spread_pair",
    "SubclassData",
    "make_subclass_data",
    "MECHANISMS",
    "mlp",
    "subclass_recovery",
]


#: The three forms of the SupCon term that the chapter analyses (the paper's own denominator is not known):
#: ``"l_out"``: Khosla et al.'s L_out, every positive in the denominator (``SpreadLoss()``, the package default);
#: ``"one_positive_clamped"``: the official code, one positive plus the negatives in each denominator and the
#: numerator logit clamped at 1 (``SpreadLoss(reference_quirks=True)``);
#: ``"one_positive"``: the same without the clamp (``SpreadLoss(reference_quirks=True, clamp=None)``).
FORMS = ("l_out", "one_positive_clamped", "one_positive")


def _check_model(n: int, K: int, temperature: float) -> None:
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an int >= 2 (points per class), got {n!r}")
    if not isinstance(K, (int, np.integer)) or K < 2:
        raise ValueError(f"K must be an int >= 2 (number of classes), got {K!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def rho_bounds(n: int, K: int) -> tuple[float, float]:
    """Feasible within-class cosines of the symmetric model: ``[-1/(n-1), 1]``.

    The lower end is the *uniform* within-class configuration: each class is a
    regular simplex centred at the origin, its mean is zero.

    Example:
        >>> rho_bounds(16, 2)
        (-0.06666666666666667, 1.0)
    """
    _check_model(n, K, 1.0)
    return -1.0 / (n - 1), 1.0


def between_class_cosine(rho: float, n: int, K: int) -> float:
    """The between-class cosine at the loss minimiser, ``sigma = -(1+(n-1) rho)/(n(K-1))``.

    This is the smallest ``sigma`` that keeps the Gram matrix PSD; both losses
    increase with ``sigma`` so their minimiser takes it. At ``rho = 1`` it is
    the simplex value ``-1/(K-1)``; at the uniform ``rho = -1/(n-1)`` it is 0.

    Example:
        >>> between_class_cosine(1.0, 16, 3)
        -0.5
    """
    _check_model(n, K, 1.0)
    return -(1.0 + (n - 1) * rho) / (n * (K - 1))


def symmetric_gram(rho: float, n: int, K: int, sigma: float | None = None) -> torch.Tensor:
    """Gram matrix ``(nK, nK)`` float64 of the symmetric model; samples ordered class by class.

    Args:
        rho: within-class cosine.
        n, K: points per class and number of classes.
        sigma: between-class cosine; ``None`` takes ``between_class_cosine(rho)``.

    Example:
        >>> symmetric_gram(0.5, 2, 2)[0]
        tensor([ 1.0000,  0.5000, -0.7500, -0.7500], dtype=torch.float64)
    """
    lo, hi = rho_bounds(n, K)
    if not lo - 1e-12 <= rho <= hi + 1e-12:
        raise ValueError(f"rho must be in [{lo}, 1] for n={n}, got {rho!r}")
    s = between_class_cosine(rho, n, K) if sigma is None else float(sigma)
    labels = torch.arange(K).repeat_interleave(n)
    same = labels[:, None] == labels[None, :]
    g = torch.where(same, torch.tensor(rho, dtype=torch.float64), torch.tensor(s, dtype=torch.float64))
    g.fill_diagonal_(1.0)
    return g


def symmetric_embedding(rho: float, n: int, K: int, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors realising the symmetric model, and their labels.

    Factorises the Gram matrix by its eigendecomposition, then applies a random
    rotation-free zero padding to ``dim`` columns.

    Returns:
        ``(u, labels)``: ``u`` float64 ``(nK, dim)`` with unit rows, ``labels``
        int64 ``(nK,)``.

    Example:
        >>> u, y = symmetric_embedding(0.3, 4, 3)
        >>> round(float(u[0] @ u[1]), 6), round(float(u[0] @ u[4]), 6)
        (0.3, -0.2375)
    """
    g = symmetric_gram(rho, n, K)
    evals, evecs = torch.linalg.eigh(g)
    keep = evals > 1e-10
    u = evecs[:, keep] * evals[keep].sqrt()
    dim = u.shape[1] if dim is None else dim
    if dim < u.shape[1]:
        raise ValueError(f"dim must be >= rank {u.shape[1]} of the Gram matrix, got {dim}")
    u = torch.cat([u, u.new_zeros(u.shape[0], dim - u.shape[1])], dim=1)
    return u / u.norm(dim=1, keepdim=True), torch.arange(K).repeat_interleave(n)


def _resolve_form(reference_quirks: bool, form: str | None) -> str:
    """The SupCon form: ``form`` if given, else ``reference_quirks`` (False: ``"l_out"``, True: the clamp)."""
    if form is None:
        return "one_positive_clamped" if reference_quirks else "l_out"
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if reference_quirks and form != "one_positive_clamped":
        raise ValueError(f"form={form!r} contradicts reference_quirks=True (the clamped one-positive form)")
    return form


def spread_loss_for_form(alpha: float, temperature: float, form: str) -> torch.nn.Module:
    """The ``spreadcon.losses.contrastive.SpreadLoss`` that computes ``form`` (see ``FORMS``).

    ``"l_out"`` is the default ``SpreadLoss``, ``"one_positive_clamped"`` is
    ``reference_quirks=True`` and ``"one_positive"`` is the same without the clamp.

    Example:
        >>> spread_loss_for_form(0.5, 0.5, "one_positive").switches.clamp is None
        True
    """
    from spreadcon.losses.contrastive import SpreadLoss

    form = _resolve_form(False, form)
    if form == "l_out":
        return SpreadLoss(alpha, temperature)
    if form == "one_positive_clamped":
        return SpreadLoss(alpha, temperature, True)
    return SpreadLoss(alpha, temperature, True, clamp=None)


def symmetric_terms(rho, n: int, K: int, temperature: float, reference_quirks: bool = False, *, form: str | None = None):
    """Exact ``(SupCon(rho), cNCE(rho))`` of the symmetric model with identical views.

    Works on floats, numpy arrays and torch tensors (so it can be
    differentiated). The formulas are in the module docstring; ``sigma`` is
    ``between_class_cosine(rho)``. ``form`` (one of ``FORMS``) overrides
    ``reference_quirks``; ``"one_positive"`` is the clamped form with
    ``-min(x, 1)`` replaced by ``-x``.

    Example:
        >>> s, c = symmetric_terms(1.0, 16, 2, 0.5)
        >>> round(float(c), 4)   # cNCE at collapse: log(2n - 1)
        3.434
    """
    _check_model(n, K, temperature)
    form = _resolve_form(reference_quirks, form)
    t = 1.0 / temperature
    lib = torch if isinstance(rho, torch.Tensor) else np
    rho = rho if isinstance(rho, torch.Tensor) else np.asarray(rho, dtype=np.float64)
    sigma = -(1.0 + (n - 1) * rho) / (n * (K - 1))
    m = n * (K - 1)  # other-class samples per view
    if form == "l_out":
        supcon = -t * (1 + 2 * (n - 1) * rho) / (2 * n - 1) + lib.log(
            math.exp(t) + 2 * (n - 1) * lib.exp(t * rho) + 2 * m * lib.exp(t * sigma)
        )
        cnce = -t + lib.log(math.exp(t) + 2 * (n - 1) * lib.exp(t * rho))
        return supcon, cnce
    if form == "one_positive_clamped":
        numer = lib.minimum(t * rho, lib.ones_like(rho)) if lib is torch else np.minimum(t * rho, 1.0)
        self_numer = min(t, 1.0)
    else:
        numer, self_numer = t * rho, t
    self_term = -self_numer + lib.log(math.exp(t) + m * lib.exp(t * sigma))
    pos_term = -numer + lib.log(lib.exp(t * rho) + m * lib.exp(t * sigma))
    supcon = self_term / n + (n - 1) / n * pos_term
    cnce = -t + lib.log(math.exp(t) + (n - 1) * lib.exp(t * rho))
    return supcon, cnce


def symmetric_loss(rho, alpha: float, n: int, K: int, temperature: float, reference_quirks: bool = False, *,
                   form: str | None = None):
    """Exact ``L_spread(rho) = (1-alpha) SupCon(rho) + alpha cNCE(rho)`` of the symmetric model.

    Example:
        >>> round(float(symmetric_loss(1.0, 0.0, 16, 2, 0.5)), 4)
        3.4527
    """
    _check_alpha(alpha)
    s, c = symmetric_terms(rho, n, K, temperature, reference_quirks, form=form)
    return (1 - alpha) * s + alpha * c


def symmetric_loss_grad(rho, n: int, K: int, temperature: float, reference_quirks: bool = False, side: int = 1, *,
                        form: str | None = None) -> tuple:
    """Closed-form ``(dSupCon/drho, dcNCE/drho)`` of the symmetric model.

    With ``t = 1/temperature``, ``m = n(K-1)``, ``dsigma/drho = -(n-1)/m`` and, for
    L_out, ``D = e^t + 2(n-1) e^{t rho} + 2m e^{t sigma}``:

        dSupCon/drho = 2(n-1) t [ -1/(2n-1) + (e^{t rho} - e^{t sigma}) / D ]   (< 0)
        dcNCE/drho   = 2(n-1) t e^{t rho} / (e^t + 2(n-1) e^{t rho})            (> 0)

    For the clamped official form (``reference_quirks=True``):

        dSupCon_q/drho = -(n-1) t e^{t sigma} / (n (e^t + m e^{t sigma}))
                         + (n-1)/n t [ -[t rho < 1] + (e^{t rho} - (n-1) e^{t sigma}) / (e^{t rho} + m e^{t sigma}) ]
        dcNCE_q/drho   = (n-1) t e^{t rho} / (e^t + (n-1) e^{t rho})

    The indicator makes ``SupCon_q`` kinked at ``rho = temperature``; ``side``
    picks the right (+1) or left (-1) derivative there. ``form="one_positive"``
    (no clamp) has the indicator always 1.

    Example:
        >>> gs, gc = symmetric_loss_grad(1.0, 16, 2, 0.5)
        >>> bool(gs < 0 < gc)
        True
    """
    _check_model(n, K, temperature)
    if side not in (1, -1):
        raise ValueError(f"side must be +1 or -1, got {side!r}")
    form = _resolve_form(reference_quirks, form)
    t = 1.0 / temperature
    m = n * (K - 1)
    rho = np.asarray(rho, dtype=np.float64)
    sigma = -(1.0 + (n - 1) * rho) / m
    er, es, et = np.exp(t * rho), np.exp(t * sigma), math.exp(t)
    if form == "l_out":
        d = et + 2 * (n - 1) * er + 2 * m * es
        g_s = 2 * (n - 1) * t * (-1.0 / (2 * n - 1) + (er - es) / d)
        g_c = 2 * (n - 1) * t * er / (et + 2 * (n - 1) * er)
        return g_s, g_c
    at_kink = np.isclose(t * rho, 1.0, rtol=0, atol=1e-12)
    active = (t * rho < 1) & ~at_kink | (at_kink & (side == -1))
    if form == "one_positive":
        active = np.ones_like(active)
    g_s = -(n - 1) * t * es / (n * (et + m * es)) + (n - 1) / n * t * (
        -active.astype(np.float64) + (er - (n - 1) * es) / (er + m * es)
    )
    g_c = (n - 1) * t * er / (et + (n - 1) * er)
    return g_s, g_c


def alpha_of_rho(rho, n: int, K: int, temperature: float, reference_quirks: bool = False, side: int = 1, *,
                 form: str | None = None):
    """The weight at which ``rho`` is a stationary point: ``alpha = -g_S / (g_C - g_S)``.

    ``dL/drho = (1-alpha) g_S + alpha g_C`` vanishes there (``g_S, g_C`` from
    ``symmetric_loss_grad``). Where ``g_S < 0 < g_C`` and ``L`` is convex this
    is the exact inverse of ``rho*(alpha)``; at the ends it gives the
    thresholds: ``alpha_of_rho(1)`` is the collapse threshold ``alpha*`` and
    ``alpha_of_rho(-1/(n-1))`` the weight from which the classes are uniform.
    A value outside ``[0, 1]`` means no weight makes ``rho`` the minimiser.

    Example:
        >>> round(float(alpha_of_rho(1.0, 16, 2, 0.5)), 4)
        0.0352
    """
    g_s, g_c = symmetric_loss_grad(rho, n, K, temperature, reference_quirks, side, form=form)
    return -g_s / (g_c - g_s)


def rho_star(alpha: float, n: int, K: int, temperature: float, reference_quirks: bool = False, tol: float = 1e-10, *,
             form: str | None = None) -> float:
    """The minimiser ``rho*(alpha)`` of the symmetric-model loss over ``[-1/(n-1), 1]``.

    ``L(rho)`` is convex (see the module docstring), so a golden-section search
    on the feasible interval finds the global minimiser, kinks and boundary
    minima included.

    Example:
        >>> rho_star(0.0, 16, 2, 0.5)       # SupCon alone collapses
        1.0
        >>> round(rho_star(1.0, 16, 2, 0.5), 4)   # cNCE alone: uniform classes
        -0.0667
    """
    _check_alpha(alpha)
    form = _resolve_form(reference_quirks, form)
    lo, hi = rho_bounds(n, K)

    def f(r: float) -> float:
        return float(symmetric_loss(r, alpha, n, K, temperature, form=form))

    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    best = (a + b) / 2
    # the minimum may sit exactly on an end of the interval or on the kink
    kinked = form == "one_positive_clamped" and lo < temperature < hi
    cands = [lo, hi, best] + ([temperature] if kinked else [])
    return min(cands, key=lambda r: (f(r), abs(r - best)))


@dataclass(frozen=True)
class Thresholds:
    """Where the symmetric model changes regime as alpha grows (all closed form).

    Attributes:
        collapse: ``alpha*``: for ``alpha <= alpha*`` the classes are collapsed
            (``rho* = 1``); ``None`` when even ``alpha = 0`` does not collapse
            (the clamped form).
        overlap: the weight at which ``rho* = sigma`` (both ``-1/(N-1)``): a
            point's own class is no longer nearer than the others.
        uniform: from here on ``rho* = -1/(n-1)``: class means vanish and the
            classes are not linearly separable.
        plateau: clamped form only: ``rho* = temperature`` for every alpha in
            this interval (the kink of the clamp); ``None`` for the other forms.
    """

    collapse: float | None
    overlap: float
    uniform: float
    plateau: tuple[float, float] | None = None


def thresholds(n: int, K: int, temperature: float, reference_quirks: bool = False, *, form: str | None = None) -> Thresholds:
    """The regime boundaries of ``rho*(alpha)``, each ``alpha_of_rho`` at a special ``rho``.

    ``collapse = alpha_of_rho(1)``, ``overlap = alpha_of_rho(-1/(N-1))``,
    ``uniform = alpha_of_rho(-1/(n-1))``; for the clamped form the plateau is
    ``[alpha_of_rho(tau, side=+1), alpha_of_rho(tau, side=-1)]``.

    Example:
        >>> th = thresholds(16, 2, 0.5)
        >>> th.collapse < th.overlap < th.uniform
        True
    """
    _check_model(n, K, temperature)
    form = _resolve_form(reference_quirks, form)
    lo, over = -1.0 / (n - 1), -1.0 / (n * K - 1)
    a = lambda r, side=-1: float(alpha_of_rho(r, n, K, temperature, side=side, form=form))  # noqa: E731
    collapse = a(1.0)
    plateau = None
    if form == "one_positive_clamped" and lo < temperature < 1:
        p_lo, p_hi = a(temperature, +1), a(temperature, -1)
        plateau = (max(p_lo, 0.0), p_hi) if p_lo <= p_hi and p_hi >= 0 else None
    return Thresholds(
        collapse=collapse if 0 <= collapse <= 1 else None,
        overlap=a(over),
        uniform=a(lo),
        plateau=plateau,
    )


def symmetric_loss_hess(rho, alpha: float, n: int, K: int, temperature: float, *, form: str = "l_out"):
    """Closed-form second derivative ``d^2 L_alpha / d rho^2`` along ``sigma = sigma(rho)``, away from the kink.

    Every log-sum-exp in the model is ``log sum_j w_j exp(a_j + b_j rho)``
    with constant ``w_j > 0`` and slopes ``b_j``; its second derivative is the
    variance of the slopes under the softmax weights ``p_j``:
    ``sum_j p_j b_j^2 - (sum_j p_j b_j)^2``. The other terms are linear (or
    piecewise linear: the clamp), so they add nothing. The slopes are ``0``
    (the anchor's own other view), ``t`` (classmates) and
    ``t sigma' = -t (n-1) / (n (K-1))`` (other classes): at least two distinct
    slopes with positive weight in every log-sum-exp, hence a positive
    variance, hence ``L_alpha`` is **strictly** convex for every alpha.

    Example:
        >>> bool(symmetric_loss_hess(0.3, 0.5, 16, 2, 0.5) > 0)
        True
    """
    _check_alpha(alpha)
    _check_model(n, K, temperature)
    form = _resolve_form(False, form)
    t = 1.0 / temperature
    m = n * (K - 1)
    rho = np.asarray(rho, dtype=np.float64)
    sigma = -(1.0 + (n - 1) * rho) / m
    b_sig = -t * (n - 1) / m

    def var(weights_logits):
        # weights_logits: list of (log weight + logit array, slope)
        logits = np.stack([np.broadcast_to(a, rho.shape) for a, _ in weights_logits])
        slopes = np.array([b for _, b in weights_logits]).reshape((-1,) + (1,) * rho.ndim)
        p = np.exp(logits - logits.max(0))
        p = p / p.sum(0)
        return (p * slopes**2).sum(0) - ((p * slopes).sum(0)) ** 2

    if form == "l_out":
        h_s = var([(t, 0.0), (math.log(2 * (n - 1)) + t * rho, t), (math.log(2 * m) + t * sigma, b_sig)])
        h_c = var([(t, 0.0), (math.log(2 * (n - 1)) + t * rho, t)])
    else:
        h_s = var([(t, 0.0), (math.log(m) + t * sigma, b_sig)]) / n + (n - 1) / n * var(
            [(t * rho, t), (math.log(m) + t * sigma, b_sig)])
        h_c = var([(t, 0.0), (math.log(n - 1) + t * rho, t)])
    return (1 - alpha) * h_s + alpha * h_c


def gram_eigenvalues(rho: float, sigma: float, n: int, K: int) -> list[tuple[float, int]]:
    """Lemma 1: the eigenvalues of the symmetric Gram matrix, with their multiplicities.

    ``G = (1-rho) I + (rho-sigma) blockdiag(J_n) + sigma J_N`` (``J``: all ones).
    ``I``, ``blockdiag(J_n)`` and ``J_N`` commute and share three eigenspaces:

    * vectors summing to zero inside every class (dimension ``K(n-1)``):
      ``blockdiag(J_n) v = 0``, ``J_N v = 0``, eigenvalue ``1 - rho``;
    * class-constant vectors summing to zero (dimension ``K-1``):
      ``blockdiag(J_n) v = n v``, ``J_N v = 0``, eigenvalue ``1 + (n-1) rho - n sigma``;
    * the all-ones vector: ``blockdiag(J_n) v = n v``, ``J_N v = N v``,
      eigenvalue ``1 + (n-1) rho + n(K-1) sigma``.

    The dimensions add to ``N = nK``, so these are all the eigenvalues.

    Example:
        >>> gram_eigenvalues(0.5, -0.25, 4, 2)
        [(0.5, 6), (3.5, 1), (1.5, 1)]
    """
    _check_model(n, K, 1.0)
    return [(1.0 - rho, K * (n - 1)), (1.0 + (n - 1) * rho - n * sigma, K - 1),
            (1.0 + (n - 1) * rho + n * (K - 1) * sigma, 1)]


# --------------------------------------------------------------------------- free views

@dataclass(frozen=True)
class ViewCosines:
    """The cosines of the two-view symmetric model (two views per sample, not necessarily equal).

    Attributes:
        view: ``c``, between the two views of one sample.
        within_same: ``rho_w``, two classmates in the same view.
        within_cross: ``rho_x``, two classmates in different views.
        between_same: ``sigma_w``, two samples of different classes, same view.
        between_cross: ``sigma_x``, different classes, different views.

    Identical views are ``c = 1``, ``rho_w = rho_x = rho``, ``sigma_w = sigma_x = sigma``.
    """

    view: float
    within_same: float
    within_cross: float
    between_same: float
    between_cross: float


def two_view_eigenvalues(v: ViewCosines, n: int, K: int) -> list[tuple[float, int]]:
    """Eigenvalues of the ``2N x 2N`` Gram matrix of the two-view model, with multiplicities.

    The Gram matrix is ``[[W, X], [X, W]]`` with ``W`` (diagonal 1, values
    ``rho_w, sigma_w``) and ``X`` (diagonal ``c``, values ``rho_x, sigma_x``)
    both of Lemma 1's form. On vectors ``(a, a)`` it acts as ``W + X``, on
    ``(a, -a)`` as ``W - X``; each is Lemma 1's matrix with diagonal ``1 +- c``,
    so the six eigenvalues are Lemma 1's with ``(1 +- c, rho_w +- rho_x,
    sigma_w +- sigma_x)``. Unit vectors with these cosines exist iff all six
    are ``>= 0``.

    Example:
        >>> ev = two_view_eigenvalues(ViewCosines(1.0, 0.5, 0.5, -0.75, -0.75), 2, 2)
        >>> [round(e, 6) for e, _ in ev]
        [1.0, 6.0, 0.0, 0.0, 0.0, 0.0]
    """
    _check_model(n, K, 1.0)
    out = []
    for sgn in (1.0, -1.0):
        d = 1.0 + sgn * v.view
        r = v.within_same + sgn * v.within_cross
        s = v.between_same + sgn * v.between_cross
        out += [(d - r, K * (n - 1)), (d + (n - 1) * r - n * s, K - 1), (d + (n - 1) * r + n * (K - 1) * s, 1)]
    return out


def two_view_gram(v: ViewCosines, n: int, K: int) -> torch.Tensor:
    """The ``(2N, 2N)`` float64 Gram matrix of the two-view model: view 0 of all samples, then view 1.

    Example:
        >>> two_view_gram(ViewCosines(0.5, 1.0, 0.5, -0.5, -1.0), 16, 2).shape
        torch.Size([64, 64])
    """
    _check_model(n, K, 1.0)
    labels = torch.arange(K).repeat_interleave(n)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n * K, dtype=torch.bool)

    def block(diag: float, r: float, s: float) -> torch.Tensor:
        g = torch.where(same, torch.tensor(float(r), dtype=torch.float64), torch.tensor(float(s), dtype=torch.float64))
        return torch.where(eye, torch.tensor(float(diag), dtype=torch.float64), g)

    w = block(1.0, v.within_same, v.between_same)
    x = block(v.view, v.within_cross, v.between_cross)
    return torch.cat([torch.cat([w, x], 1), torch.cat([x, w], 1)], 0)


def two_view_embedding(v: ViewCosines, n: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors ``(N, 2, 2N)`` float64 realising the two-view model, and the labels ``(N,)``.

    Raises ``ValueError`` if the cosines are infeasible (a negative eigenvalue).
    """
    if min(e for e, _ in two_view_eigenvalues(v, n, K)) < -1e-9:
        raise ValueError(f"infeasible two-view cosines {v} for n={n}, K={K}")
    g = two_view_gram(v, n, K)
    evals, evecs = torch.linalg.eigh(g)
    u = evecs * evals.clamp(min=0).sqrt()
    u = u / u.norm(dim=1, keepdim=True)
    N = n * K
    return torch.stack([u[:N], u[N:]], dim=1), torch.arange(K).repeat_interleave(n)


def two_view_loss(v: ViewCosines, alpha: float, n: int, K: int, temperature: float, *, form: str = "l_out") -> float:
    """Exact ``L_spread`` of the two-view model, for each SupCon form.

    With ``t = 1/temperature`` and ``m = n(K-1)``:

    * ``"l_out"`` (every anchor, both views): an anchor sees its other view
      (logit ``t c``), ``n-1`` classmates in each view (``t rho_w``,
      ``t rho_x``) and ``m`` others in each view (``t sigma_w``, ``t sigma_x``)::

          SupCon = -t (c + (n-1)(rho_w + rho_x)) / (2n-1)
                   + log(e^{tc} + (n-1)(e^{t rho_w} + e^{t rho_x}) + m (e^{t sigma_w} + e^{t sigma_x}))
          cNCE   = -t c + log(e^{tc} + (n-1)(e^{t rho_w} + e^{t rho_x}))

    * the one-positive forms (view 1 against view 0 only), with ``h(x) =
      min(x, 1)`` (clamped) or ``h(x) = x``::

          SupCon = (1/n) [-h(tc) + log(e^{tc} + m e^{t sigma_x})]
                   + ((n-1)/n) [-h(t rho_x) + log(e^{t rho_x} + m e^{t sigma_x})]
          cNCE   = -t c + log(e^{tc} + (n-1) e^{t rho_x})

    With identical views these are ``symmetric_loss``.

    Example:
        >>> v = ViewCosines(0.5, 1.0, 0.5, -0.5, -1.0)
        >>> round(two_view_loss(v, 0.0, 16, 2, 0.5, form="one_positive_clamped"), 4)
        0.5859
    """
    _check_alpha(alpha)
    _check_model(n, K, temperature)
    form = _resolve_form(False, form)
    t, m = 1.0 / temperature, n * (K - 1)
    c, pw, px, qw, qx = v.view, v.within_same, v.within_cross, v.between_same, v.between_cross
    lse = lambda terms: float(np.logaddexp.reduce([math.log(w) + a for w, a in terms if w > 0]))  # noqa: E731
    if form == "l_out":
        sup = -t * (c + (n - 1) * (pw + px)) / (2 * n - 1) + lse(
            [(1, t * c), (n - 1, t * pw), (n - 1, t * px), (m, t * qw), (m, t * qx)])
        cn = -t * c + lse([(1, t * c), (n - 1, t * pw), (n - 1, t * px)])
    else:
        h = (lambda x: min(x, 1.0)) if form == "one_positive_clamped" else (lambda x: x)
        sup = (-h(t * c) + lse([(1, t * c), (m, t * qx)])) / n + (n - 1) / n * (
            -h(t * px) + lse([(1, t * px), (m, t * qx)]))
        cn = -t * c + lse([(1, t * c), (n - 1, t * px)])
    return (1 - alpha) * sup + alpha * cn


# --------------------------------------------------------------------------- exchangeable views

def exchangeable_sigma(view: float, rho: float, n: int, K: int) -> float:
    """The smallest between-class cosine an encoder with exchangeable views can have: ``-(c + (n-1) rho)/(n(K-1))``.

    With ``mu_i`` the mean embedding of image ``i`` over its augmentations, the
    expected cosines are ``c = ||mu_i||^2`` and ``rho, sigma = <mu_i, mu_j>``;
    the Gram matrix of the ``mu`` is Lemma 1's with diagonal ``c``, and its
    third eigenvalue ``c + (n-1) rho + n(K-1) sigma >= 0`` gives the bound.
    At ``c = 1`` this is ``between_class_cosine``.

    Example:
        >>> exchangeable_sigma(0.5, 0.5, 16, 2)
        -0.5
    """
    _check_model(n, K, 1.0)
    return -(view + (n - 1) * rho) / (n * (K - 1))


def exchangeable_eigenvalues(view: float, rho: float, sigma: float, n: int, K: int) -> list[tuple[float, int]]:
    """Eigenvalues of the Gram matrix of the mean embeddings (diagonal ``c``), with multiplicities.

    ``c - rho`` (``K(n-1)`` times), ``c + (n-1) rho - n sigma`` (``K-1``) and
    ``c + (n-1) rho + n(K-1) sigma`` (once): Lemma 1 with the diagonal 1
    replaced by ``c``. An encoder with exchangeable views reaches these expected
    cosines iff all are ``>= 0`` and ``0 <= c <= 1``.

    Example:
        >>> exchangeable_eigenvalues(0.5, 0.5, -0.5, 16, 2)
        [(0.0, 30), (16.0, 1), (0.0, 1)]
    """
    _check_model(n, K, 1.0)
    return [(view - rho, K * (n - 1)), (view + (n - 1) * rho - n * sigma, K - 1),
            (view + (n - 1) * rho + n * (K - 1) * sigma, 1)]


def exchangeable_gram(view: float, rho: float, n: int, K: int, sigma: float | None = None) -> torch.Tensor:
    """The expected ``(2N, 2N)`` float64 Gram matrix of an encoder with exchangeable views: view 0, then view 1.

    ``[[M + (1-c) I, M], [M, M + (1-c) I]]`` with ``M`` the Gram matrix of the
    mean embeddings (diagonal ``c``, ``rho`` within a class, ``sigma``
    between classes): an image's own two views meet at ``c``, two different
    images at ``rho`` or ``sigma`` whichever views they are in. ``sigma=None``
    takes ``exchangeable_sigma``.

    Example:
        >>> g = exchangeable_gram(0.5, 0.25, 2, 2)
        >>> [round(float(x), 4) for x in g[0]]
        [1.0, 0.25, -0.375, -0.375, 0.5, 0.25, -0.375, -0.375]
    """
    s = exchangeable_sigma(view, rho, n, K) if sigma is None else float(sigma)
    if not 0 <= view <= 1 or min(e for e, _ in exchangeable_eigenvalues(view, rho, s, n, K)) < -1e-12:
        raise ValueError(f"no encoder with exchangeable views has c={view!r}, rho={rho!r}, sigma={s!r} (n={n}, K={K})")
    return two_view_gram(ViewCosines(view, rho, rho, s, s), n, K)


def exchangeable_loss(view, rho, alpha: float, n: int, K: int, temperature: float, *, form: str = "l_out"):
    """Exact ``L_spread`` of the exchangeable-view model at ``sigma = exchangeable_sigma``.

    Every logit is a cosine over the temperature, and the cosines ``(c, rho,
    sigma(c, rho))`` are ``c`` times ``(1, rho/c, sigma(rho/c))``. So the loss
    equals the identical-views loss at the within-class cosine ``rho/c`` and
    the temperature ``temperature/c``: the view cosine acts as a temperature.
    That is how it is computed here (``view > 0``; at ``view = 0`` every logit
    is 0).

    Example:
        >>> round(float(exchangeable_loss(1.0, 0.3, 0.5, 16, 2, 0.5)), 6) == round(float(symmetric_loss(0.3, 0.5, 16, 2, 0.5)), 6)
        True
    """
    _check_alpha(alpha)
    _check_model(n, K, temperature)
    if not 0 < view <= 1:
        raise ValueError(f"view cosine must be in (0, 1], got {view!r}")
    return symmetric_loss(np.asarray(rho, dtype=np.float64) / view, alpha, n, K, temperature / view, form=form)


@dataclass(frozen=True)
class ExchangeableMinimum:
    """The minimum of ``L_spread`` over encoders with exchangeable views, against the identical-views model.

    Attributes:
        loss: the minimum.
        view: ``c``, the cosine of an image's own two views at the minimum.
        rho: the within-class cosine ``rho`` of two different images (``<= c``).
        sigma: the between-class cosine.
        identical_loss: the minimum with identical views (``c = 1``).
        identical_rho: ``rho_star`` of the identical-views model.

    ``rho / view`` is the cosine of two classmates' mean embeddings: 1 when the class means coincide.
    """

    loss: float
    view: float
    rho: float
    sigma: float
    identical_loss: float
    identical_rho: float


def exchangeable_minimum(alpha: float, n: int, K: int, temperature: float, *, form: str = "l_out",
                         tol: float = 1e-9) -> ExchangeableMinimum:
    """Minimise ``L_spread`` over every encoder whose two views are i.i.d. draws of the augmentation.

    Chapter 2's proposition reduces this to the model ``(c, rho)`` with
    ``0 < c <= 1`` and ``-c/(n-1) <= rho <= c`` (``exchangeable_loss``), a
    convex problem: the loss is convex in the expected Gram matrix, which is
    affine in ``(c, rho, sigma)``. For each ``c`` the inner minimum is
    ``rho_star`` at temperature ``temperature/c`` (times ``c``), and the outer
    function of ``c``, a partial minimum of a convex function, is convex, so a
    golden-section search over ``c`` finds the global minimum (ends and the
    clamp's kink included).

    Example:
        >>> r = exchangeable_minimum(0.0, 16, 2, 0.5, form="one_positive_clamped")
        >>> round(r.view, 4), round(r.rho / r.view, 4)   # views apart, class means collapsed
        (0.6931, 1.0)
    """
    _check_alpha(alpha)
    _check_model(n, K, temperature)
    form = _resolve_form(False, form)

    def inner(c: float) -> tuple[float, float]:
        r = rho_star(alpha, n, K, temperature / c, form=form)
        return float(symmetric_loss(r, alpha, n, K, temperature / c, form=form)), r * c

    g = (math.sqrt(5) - 1) / 2
    a, b = 1e-6, 1.0
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = inner(x1)[0], inner(x2)[0]
    while b - a > tol:
        if f1 < f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = inner(x1)[0]
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = inner(x2)[0]
    cands = [(a + b) / 2, 1.0] + ([temperature] if form == "one_positive_clamped" and temperature < 1 else [])
    best = min(cands, key=lambda c: (inner(c)[0], -c))
    loss, rho = inner(best)
    r_id = rho_star(alpha, n, K, temperature, form=form)
    return ExchangeableMinimum(loss=loss, view=best, rho=rho, sigma=exchangeable_sigma(best, rho, n, K),
                               identical_loss=float(symmetric_loss(r_id, alpha, n, K, temperature, form=form)),
                               identical_rho=r_id)


def exchangeable_views(view: float, rho: float, n: int, K: int, *, noise_dim: int = 4096,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw of an encoder that reaches the exchangeable model: ``(N, 2, N + noise_dim)`` unit views and labels.

    Each view is ``mu_i + sqrt(1-c) e`` with ``mu_i`` the mean embeddings
    (their Gram matrix has diagonal ``c``, ``rho`` and ``sigma =
    exchangeable_sigma``) and ``e`` a fresh random unit vector in ``noise_dim``
    further coordinates. The realised cosines are the model's up to the
    noise overlaps, of order ``1/sqrt(noise_dim)``.
    """
    s = exchangeable_sigma(view, rho, n, K)
    if min(e for e, _ in exchangeable_eigenvalues(view, rho, s, n, K)) < -1e-12:
        raise ValueError(f"infeasible exchangeable cosines c={view!r}, rho={rho!r} (n={n}, K={K})")
    labels = torch.arange(K).repeat_interleave(n)
    m = torch.where(labels[:, None] == labels[None, :], torch.tensor(float(rho), dtype=torch.float64),
                    torch.tensor(s, dtype=torch.float64))
    m.fill_diagonal_(float(view))
    evals, evecs = torch.linalg.eigh(m)
    mu = evecs * evals.clamp(min=0).sqrt()                                        # (N, N), rows: mu_i
    e = torch.randn(n * K, 2, noise_dim, generator=generator, dtype=torch.float64)
    e = e / e.norm(dim=-1, keepdim=True) * math.sqrt(max(1.0 - view, 0.0))
    u = torch.cat([mu.unsqueeze(1).expand(-1, 2, -1), e], dim=-1)
    return u / u.norm(dim=-1, keepdim=True), labels


def optimise_free_embeddings(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    *,
    dim: int,
    steps: int = 500,
    lr: float = 0.05,
    views: int = 2,
    identical_views: bool = True,
    seed: int = 0,
    init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    history_every: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """Minimise a loss over free unit embeddings, one per sample, by Adam.

    The parameters ``w`` are unconstrained; the embedding is ``u = w / ||w||``
    (on ``S^{dim-1}``), fed to ``loss_fn`` as ``(N, views, dim)``. With
    ``identical_views`` every view is the same vector, the setting of the
    symmetric model; otherwise each view has its own parameters.

    Args:
        loss_fn: ``f(z: (N, V, D), labels: (N,)) -> 0-dim tensor``, e.g. a
            ``spreadcon.losses.contrastive.SpreadLoss``.
        labels: int64 ``(N,)``.
        dim: embedding dimension ``D`` (``3`` for the sphere ``S^2``).
        steps, lr: Adam steps and learning rate.
        views: ``V``.
        identical_views: share one vector across the views.
        seed: seed of the Gaussian initialisation.
        init: optional starting parameters ``(N, D)`` or ``(N, V, D)``.
        dtype: float dtype of the optimisation.
        history_every: record the loss every this many steps (0: only the last).

    Returns:
        ``(u, history)``: the unit embeddings, detached, ``(N, D)`` with
        identical views else ``(N, V, D)``; and the recorded losses.

    Example:
        >>> from spreadcon.losses.contrastive import SpreadLoss
        >>> y = torch.arange(3).repeat_interleave(4)
        >>> u, _ = optimise_free_embeddings(SpreadLoss(alpha=0.0), y, dim=3, steps=300)
        >>> round(float(u[0] @ u[1]), 2)
        1.0
    """
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    if views < 2:
        raise ValueError(f"views must be >= 2, got {views!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = labels.shape[0]
    shape = (n, dim) if identical_views else (n, views, dim)
    if init is None:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(shape, generator=g, dtype=dtype)
    else:
        w = init.detach().to(dtype).clone().reshape(shape)
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    history: list[float] = []

    def embed() -> torch.Tensor:
        u = w / w.norm(dim=-1, keepdim=True)
        return u.unsqueeze(1).expand(n, views, dim) if identical_views else u

    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(embed(), labels)
        loss.backward()
        opt.step()
        if history_every and step % history_every == 0:
            history.append(float(loss.detach()))
    with torch.no_grad():
        u = w / w.norm(dim=-1, keepdim=True)
        history.append(float(loss_fn(embed(), labels)))
    return u.detach(), history


def class_cosines(u: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean within-class and between-class cosine: the symmetric model's ``(rho, sigma)``.

    Args:
        u: ``(N, D)`` embeddings (normalised here).
        labels: int64 ``(N,)``.

    Returns:
        ``(rho, sigma)``: the mean cosine over pairs ``i != j`` of one class,
        and over pairs of different classes.

    Example:
        >>> u, y = symmetric_embedding(0.3, 4, 3)
        >>> [round(v, 4) for v in class_cosines(u, y)]
        [0.3, -0.2375]
    """
    u = torch.nn.functional.normalize(u.double(), dim=-1)
    labels = torch.as_tensor(labels)
    cos = u @ u.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    return float(cos[same & ~eye].mean()), float(cos[~same].mean())


@dataclass(frozen=True)
class Separation:
    """How far apart the classes are, next to how spread each one is (unit embeddings).

    Attributes:
        within: mean within-class cosine ``rho`` (pairs ``i != j`` of a class).
        between: mean between-class cosine ``sigma``.
        gap: ``rho - sigma``; positive while a class is, on average, closer to
            itself than to the other classes (``gap <= 0`` is the symmetric
            model's overlap, ``rho <= sigma``).
        ratio: ``(1 - rho) / (1 - sigma)``, the mean squared distance between
            classmates over the mean squared distance between classes (for unit
            vectors ``|u - v|^2 = 2 - 2 cos``). 0 is collapse, 1 is a class as
            wide as the distance between classes. Unlike the two cosines and the
            gap, it does not move when every distance shrinks by one factor, so
            a *global contraction* (both cosines rising or falling together)
            leaves it unchanged, while spread *inside* a class raises it.
    """

    within: float
    between: float
    gap: float
    ratio: float


def separation(within: float, between: float) -> Separation:
    """:class:`Separation` from the two mean cosines (for example :func:`class_cosines`).

    Args:
        within: mean within-class cosine ``rho``.
        between: mean between-class cosine ``sigma``; must be below 1.

    Example:
        >>> s = separation(0.0, -0.5)   # classes {e1, e2} and {-e1, -e2}
        >>> s.gap, round(s.ratio, 4)
        (0.5, 0.6667)
    """
    if not between < 1:
        raise ValueError(f"between must be below 1 (all classes on one point), got {between}")
    return Separation(float(within), float(between), float(within - between), float((1 - within) / (1 - between)))


def same_spread_pair(K: int = 2, m: int = 3, n_per_subclass: int = 30, arc: float = 0.5, jitter: float = 0.05,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two embeddings on the circle with the same spread and very different subclass structure.

    Class ``k`` is centred at angle ``2 pi k / K``; its ``m`` subclasses sit at
    evenly spaced angles within ``+- arc`` radians of the class centre, and
    each point adds Gaussian angular jitter of standard deviation ``jitter``.
    The *structured* embedding keeps each subclass together; the *scrambled*
    one is the same set of points per class, reassigned by a random
    within-class permutation. Every loss of chapters 1-3 and every spread
    statistic is the same for both (chapter 3); a fine-label probe is not.

    Returns:
        ``(structured, scrambled, coarse, fine)``: float64 ``(N, 2)`` unit
        vectors twice, int64 ``(N,)`` class and subclass ids.

    Example:
        >>> a, b, y, f = same_spread_pair()
        >>> [round(c, 10) for c in class_cosines(a, y)] == [round(c, 10) for c in class_cosines(b, y)]
        True
    """
    for name, v in (("K", K), ("m", m), ("n_per_subclass", n_per_subclass)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    g = torch.Generator().manual_seed(seed)
    fine = torch.arange(K * m).repeat_interleave(n_per_subclass)
    coarse = fine // m
    offsets = torch.linspace(-arc, arc, m, dtype=torch.float64) if m > 1 else torch.zeros(1, dtype=torch.float64)
    angle = 2 * math.pi * coarse.double() / K + offsets[fine % m]
    angle = angle + jitter * torch.randn(len(fine), generator=g, dtype=torch.float64)
    structured = torch.stack([angle.cos(), angle.sin()], dim=1)
    scrambled = structured[within_class_permutation(coarse, g)]
    return structured, scrambled, coarse, fine


def within_class_permutation(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation ``pi`` of ``0..N-1`` with ``labels[pi] == labels``.

    Reassigning embeddings by ``z[pi]`` keeps every class's set of embeddings,
    so every loss of chapter 3 is unchanged, but scrambles which sample within
    a class got which embedding.

    Example:
        >>> y = torch.tensor([0, 1, 0, 1, 0])
        >>> pi = within_class_permutation(y, torch.Generator().manual_seed(0))
        >>> bool((y[pi] == y).all())
        True
    """
    labels = torch.as_tensor(labels)
    pi = torch.arange(len(labels))
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        pi[idx] = idx[torch.randperm(len(idx), generator=generator)]
    return pi


@dataclass
class SubclassData:
    """Synthetic vectors with K classes x m latent subclasses.

    Attributes:
        x: float32 ``(N, d)`` inputs.
        coarse: int64 ``(N,)`` class ids (what training sees).
        fine: int64 ``(N,)`` subclass ids, ``coarse * m + j``.
        centres: float32 ``(K * m, d)`` subclass centres.
        noise: the within-subclass standard deviation.
        class_centres: float32 ``(K, d)`` the class centres ``c_k``.
    """

    x: torch.Tensor
    coarse: torch.Tensor
    fine: torch.Tensor
    centres: torch.Tensor
    noise: float
    class_centres: torch.Tensor | None = None

    def subclass_views(self, views: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augmentation that stays within the subclass: fresh noise around each sample's own centre.

        Returns float32 ``(N, views, d)``: view ``v`` of sample ``i`` is
        ``centres[fine[i]] + noise * eps``, so the two views of a sample share
        its subclass and nothing else.
        """
        return _subclass_views_at(self, torch.arange(len(self.fine)), generator, views)

    def split(self, frac: float, generator: torch.Generator | None = None) -> tuple["SubclassData", "SubclassData"]:
        """A random ``(train, test)`` split with ``frac`` of the samples in train."""
        perm = torch.randperm(len(self.fine), generator=generator)
        k = int(round(frac * len(perm)))
        pick = lambda idx: SubclassData(self.x[idx], self.coarse[idx], self.fine[idx], self.centres, self.noise, self.class_centres)  # noqa: E731
        return pick(perm[:k]), pick(perm[k:])


def make_subclass_data(
    K: int = 2,
    m: int = 4,
    *,
    n_per_subclass: int = 100,
    dim: int = 32,
    class_separation: float = 4.0,
    subclass_separation: float = 2.0,
    noise: float = 1.0,
    seed: int = 0,
) -> SubclassData:
    """K classes x m latent subclasses of Gaussian vectors in ``R^dim``.

    Class ``k`` has a centre ``c_k`` of norm ``class_separation``; its subclass
    ``j`` sits at ``c_k + d_kj`` with ``||d_kj|| = subclass_separation``, the
    offsets ``d_kj`` random directions orthogonal to all class centres. Samples
    add isotropic noise of standard deviation ``noise``. So
    ``subclass_separation / noise`` is how separable the subclasses are in
    input space (0: not at all), while the coarse label only depends on ``c_k``.

    Example:
        >>> d = make_subclass_data(K=2, m=3, n_per_subclass=5, dim=8)
        >>> d.x.shape, d.fine.unique().tolist()
        (torch.Size([30, 8]), [0, 1, 2, 3, 4, 5])
    """
    for name, v in (("K", K), ("m", m), ("n_per_subclass", n_per_subclass)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if dim < K + 1:
        raise ValueError(f"dim must be > K={K}, got {dim!r}")
    if noise <= 0:
        raise ValueError(f"noise must be > 0, got {noise!r}")
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    class_dirs, rest = basis[:, :K].T, basis[:, K:]
    centres_k = class_separation * class_dirs  # (K, dim)
    offsets = torch.randn(K, m, rest.shape[1], generator=g) @ rest.T  # orthogonal to class centres
    offsets = subclass_separation * offsets / offsets.norm(dim=-1, keepdim=True)
    centres = (centres_k[:, None, :] + offsets).reshape(K * m, dim)
    fine = torch.arange(K * m).repeat_interleave(n_per_subclass)
    x = centres[fine] + noise * torch.randn(len(fine), dim, generator=g)
    return SubclassData(
        x=x.float(), coarse=fine // m, fine=fine, centres=centres.float(), noise=float(noise), class_centres=centres_k.float()
    )


MECHANISMS = ("baseline", "linear", "autoencoder", "augment")


def mlp(in_dim: int, out_dim: int, hidden: int = 128, depth: int = 2) -> torch.nn.Sequential:
    """A ReLU multilayer perceptron for the synthetic vectors of chapter 3 (the unconstrained encoder).

    Example:
        >>> mlp(8, 4)(torch.zeros(2, 8)).shape
        torch.Size([2, 4])
    """
    layers: list[torch.nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [torch.nn.Linear(d, hidden), torch.nn.ReLU()]
        d = hidden
    layers.append(torch.nn.Linear(d, out_dim))
    return torch.nn.Sequential(*layers)


def _subclass_views_at(data: SubclassData, idx: torch.Tensor, generator: torch.Generator | None,
                       views: int = 2) -> torch.Tensor:
    """Within-subclass views of the samples ``idx``: ``(len(idx), views, d)``."""
    c = data.centres[data.fine[idx]]
    eps = torch.randn((len(idx), views, c.shape[1]), generator=generator)
    return c[:, None, :] + data.noise * eps


def subclass_recovery(encoder: torch.nn.Module, train: SubclassData, test: SubclassData, seed: int = 0) -> dict[str, float]:
    """How much of the latent subclass structure a frozen encoder keeps.

    Uses :mod:`spreadcon.eval`: a fine-label linear probe (train on
    ``train``, score on ``test``), per-class k-means AMI on the test
    embeddings, and the within-class cosine.

    Returns:
        ``{"fine_acc", "coarse_acc", "ami", "within_cosine"}``; fine accuracy at
        chance within each class is ``1/m``.
    """
    from spreadcon.eval.geometry import spread_metrics, subclass_ami
    from spreadcon.eval.probe import linear_probe

    with torch.no_grad():
        ztr, zte = encoder(train.x).float(), encoder(test.x).float()
    fine = linear_probe(ztr, train.fine, zte, test.fine, l2=1e-3).accuracy
    coarse = linear_probe(ztr, train.coarse, zte, test.coarse, l2=1e-3).accuracy
    ami = subclass_ami(zte, test.coarse, test.fine, seed=seed, n_init=3)["ami"]
    return {"fine_acc": fine, "coarse_acc": coarse, "ami": ami,
            "within_cosine": spread_metrics(zte, test.coarse)["within_cosine"]}
