r"""Contrastive losses: SupCon, class-conditional InfoNCE, L_spread, SimCLR, reconstruction.

Every loss takes the raw encoder outputs ``z`` of shape ``(B, V, D)`` (``B``
samples, ``V >= 2`` augmented views, ``D`` features) and, where it needs them,
integer ``labels`` of shape ``(B,)``. It normalises ``z`` itself and returns a
0-dim tensor. The maths lives in plain functions (``supcon_loss``,
``cnce_loss``, ``spread_loss``, ``simclr_loss``, ``reconstruction_loss``); the
``nn.Module`` classes only hold configuration.

Notation (the paper's equations; ``book/losses.md`` has the full page).
Write ``u = z / ||z||``, an anchor ``a = (i, v)``, candidates ``c = (j, w) != a``
and ``s(a, c) = <u_a, u_c> / tau``. ``P(a)`` are the same-class candidates
(including ``a``'s other views) and ``Q(a) = {(i, w): w != v}`` the anchor's
own other views.

* SupCon, Khosla et al.'s :math:`L_{out}`:
  ``mean_a  -1/|P(a)| sum_{p in P(a)} log( exp s(a,p) / sum_{c != a} exp s(a,c) )``
* cNCE, the class-conditional InfoNCE:
  ``mean_a  -1/|Q(a)| sum_{q in Q(a)} log( exp s(a,q) / sum_{c != a, y_c = y_a} exp s(a,c) )``
* L_spread ``= (1 - alpha) * SupCon + alpha * cNCE``.
* SimCLR / NT-Xent is SupCon with every sample its own class.

The official thanos-code computes something slightly different. Each
difference is a named switch; ``reference_quirks=True`` turns all four on:

=================  ==========================  ===============================
switch             paper's equations           thanos-code (``reference_quirks``)
=================  ==========================  ===============================
``anchors``        ``"all"``: every (i, v)     ``"cross_view"``: view v against
                   against all (j, w) != a     view w only, pairs w < v, mean
                                               over the V(V-1)/2 pairs
``denominator``    ``"all"`` (Khosla L_out)    ``"one_positive"``: the positive
                                               plus the negatives
``clamp``          ``None``                    ``1.0``: numerator logit
                                               ``min(s(a,p), 1)`` in SupCon
``norm``           ``"row"``: ``z/||z||``      ``"broadcast"``: divide by both
                                               norms at the candidate index
=================  ==========================  ===============================

Implementation: one ``(M, K)`` similarity matmul per block of anchors, masks
built from label and sample ids, ``torch.finfo(dtype).min`` for excluded
entries and ``logsumexp`` for the denominators. Logits are accumulated in at
least float32, so the losses stay finite under bf16/fp16 autocast. Anchors
without a positive are left out of the mean. ``chunk_size`` splits the
anchors into blocks that are recomputed in the backward pass
(activation checkpointing), so peak memory is ``O(chunk_size * B * V)``
instead of ``O((B * V)^2)``, with the same value. When ``torch.distributed``
is initialised the candidates come from every rank; see
:mod:`spreadcon.distributed` for the gradient semantics.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from spreadcon.distributed import gather_no_grad, gather_with_grad, world_size

__all__ = [
    "supcon_loss",
    "cnce_loss",
    "spread_loss",
    "simclr_loss",
    "reconstruction_loss",
    "SupConLoss",
    "CNCELoss",
    "SpreadLoss",
    "SimCLRLoss",
    "ReconstructionLoss",
    "PAPER",
    "REFERENCE_QUIRKS",
]

Anchors = Literal["all", "cross_view"]
Denominator = Literal["all", "one_positive"]
Norm = Literal["row", "broadcast"]

#: The switches that give the paper's equations.
PAPER = {"anchors": "all", "denominator": "all", "clamp": None, "norm": "row"}
#: The switches that reproduce the official thanos-code loss exactly.
REFERENCE_QUIRKS = {"anchors": "cross_view", "denominator": "one_positive", "clamp": 1.0, "norm": "broadcast"}

_NORM_EPS = 1e-12  # smallest norm divided by (as in F.normalize); a zero row stays finite


# --------------------------------------------------------------------------- checks


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")


def _check_switches(anchors: str, denominator: str, norm: str, clamp: float | None) -> None:
    if anchors not in ("all", "cross_view"):
        raise ValueError(f"anchors must be 'all' or 'cross_view'; got {anchors!r}")
    if denominator not in ("all", "one_positive"):
        raise ValueError(f"denominator must be 'all' or 'one_positive'; got {denominator!r}")
    if norm not in ("row", "broadcast"):
        raise ValueError(f"norm must be 'row' or 'broadcast'; got {norm!r}")
    if clamp is not None and not (isinstance(clamp, (int, float)) and math.isfinite(clamp)):
        raise ValueError(f"clamp must be None or a finite number; got {clamp!r}")


def _check_chunk(chunk_size: int | None) -> None:
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be None or an int >= 1; got {chunk_size!r}")


def _check_z(z: Tensor, labels: Tensor | None, num_classes: int | None = None, check_values: bool = True) -> None:
    if not isinstance(z, Tensor) or z.dim() != 3:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must be a (B, V, D) tensor; got shape {shape}")
    B, V, D = z.shape
    if V < 2:
        raise ValueError(f"z needs V >= 2 views along dim 1; got V={V} (shape {tuple(z.shape)})")
    if B < 1 or D < 1:
        raise ValueError(f"z must have B >= 1 samples and D >= 1 features; got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"z must be a floating tensor; got dtype {z.dtype}")
    if labels is not None:
        if not isinstance(labels, Tensor) or tuple(labels.shape) != (B,):
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"labels must have shape (B,) = ({B},) to match z {tuple(z.shape)}; got {shape}")
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be an integer tensor; got dtype {labels.dtype}")
        if labels.device != z.device:
            raise ValueError(f"labels are on {labels.device} but z is on {z.device}")
    if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be None or an int >= 1; got {num_classes!r}")
    if not check_values:  # the caller checks the loss itself (spreadcon.engine: once per epoch)
        return
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains non-finite values (NaN or inf); refusing to return a NaN loss")
    if num_classes is not None and labels is not None and labels.numel() and \
            not bool(((labels >= 0) & (labels < num_classes)).all()):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}); "
                         f"got values from {int(labels.min())} to {int(labels.max())}")


# --------------------------------------------------------------------------- per-anchor terms


def _supcon_rows(
    S: Tensor,
    pos: Tensor | None,
    clamp: float | None,
    one_positive: bool,
    pos_sum: Tensor | None = None,
    count: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-anchor SupCon and whether the anchor has a positive.

    ``S``: (M, K) logits with excluded entries at finfo.min; ``pos``: (M, K)
    bool positives. With the Khosla denominator and no clamp the caller may
    instead pass ``pos_sum`` (sum of the positive logits) and ``count``, which
    it gets without an (M, K) mask.
    """
    if pos_sum is not None:
        return S.logsumexp(1) - pos_sum / count.clamp(min=1), count > 0
    count = pos.sum(1)
    numer = S if clamp is None else S.clamp(max=clamp)
    if one_positive:
        # log( exp s(a,p) + sum_{n in N(a)} exp s(a,n) ), negatives N(a) = not positive, not excluded
        lse_neg = S.masked_fill(pos, torch.finfo(S.dtype).min).logsumexp(1, keepdim=True)
        total = torch.where(pos, torch.logaddexp(S, lse_neg) - numer, 0.0).sum(1)
        per_anchor = total / count.clamp(min=1)
    else:
        per_anchor = S.logsumexp(1) - torch.where(pos, numer, 0.0).sum(1) / count.clamp(min=1)
    return per_anchor, count > 0


def _cnce_rows(S: Tensor, same: Tensor, own_sum: Tensor, own_count: Tensor) -> tuple[Tensor, Tensor]:
    """Per-anchor cNCE: mean own-view logit against the logsumexp over same-class candidates."""
    lse_same = S.masked_fill(~same, torch.finfo(S.dtype).min).logsumexp(1)
    return lse_same - own_sum / own_count.clamp(min=1), own_count > 0


class _SharedExp(torch.autograd.Function):
    r"""Every denominator of one block of logits from a single ``exp``.

    Inputs: logits ``S`` (M, K), the class of each row ``cls_rows`` (M,) and
    column ``cls_cols`` (K,) in ``0..n_cls-1``, and ``has_self``: whether row
    ``r``'s own column (the anchor itself) is in the block, already set to
    ``finfo.min`` by the caller. "Same" below means same class, anchor excluded.
    With ``m`` the row maximum and ``E = exp(S - m)`` (0 at the anchor), per row:

    * ``lse_all  = m + log sum_c E_c``                        (Khosla denominator),
    * ``lse_same = m + log sum_{same} E_c``                   (cNCE denominator),
    * ``lae_sum  = sum_{p same} log(exp s_p + sum_{n not same} exp s_n)``
      ``= sum_p [m + log(E_p + sigma_neg)]``                   (one positive plus the negatives),
    * ``excess   = sum_{p same} relu(s_p - clamp)``, so that the clamped
      numerator is ``sum_p min(s_p, clamp) = sum_p s_p - excess``.

    Why a custom function: ``torch.logsumexp`` calls ``exp`` once per mask in
    the forward pass and again in the backward pass, the masks are (M, K)
    tensors, and on this CPU ``exp`` of ``finfo.min`` mask entries leaves the
    vectorised path (about 20x slower per element). Here ``E`` is computed once,
    the per-class row sums are one ``(M, K) @ (K, n_cls)`` product with the
    one-hot class matrix (no (M, K) mask), and the backward pass reuses ``E``:
    ``dS = E * coef[r, class(c)]`` plus the per-entry terms of ``lae`` and the
    clamp. Sums are floored at ``finfo.tiny``, so empty sets stay finite (the
    caller leaves those rows out of the mean).
    """

    @staticmethod
    def forward(ctx, S, cls_rows, cls_cols, n_cls, has_self, want_all, want_same, want_lae, clamp):
        tiny = torch.finfo(S.dtype).tiny
        M = S.shape[0]
        rows = torch.arange(M, device=S.device)
        onehot = F.one_hot(cls_cols, n_cls).to(S.dtype).T.contiguous()  # (C, K)

        def by_cls(X: Tensor) -> Tensor:  # (M, C) sums of X over the columns of each class
            return (onehot @ X.T).T  # this orientation is ~3x faster than X @ onehot.T in MKL

        m = S.amax(1, keepdim=True)
        E = (S - m).exp_()
        ctx.flags = (want_all, want_same, want_lae, clamp is not None)
        if want_all and not (want_same or want_lae or clamp is not None):  # Khosla SupCon alone: no classes
            sum_all = E.sum(1).clamp_min(tiny)
            ctx.save_for_backward(E, sum_all)
            zero = S.new_zeros(M)
            return m[:, 0] + sum_all.log(), zero, zero, zero
        by_class = by_cls(E)  # (M, C): sum of E over the columns of each class
        own = F.one_hot(cls_rows, n_cls).bool()  # (M, C): the row's own class
        sum_all = by_class.sum(1).clamp_min(tiny)
        sum_same = by_class[rows, cls_rows].clamp_min(tiny)
        sum_neg = by_class.masked_fill(own, 0.0).sum(1)
        zero = S.new_zeros(M)
        lse_all = m[:, 0] + sum_all.log() if want_all else zero
        lse_same = m[:, 0] + sum_same.log() if want_same else zero
        lae_sum, excess, inv_same, over_same = zero, zero, None, None
        same = cls_rows[:, None] == cls_cols[None, :] if (want_lae or clamp is not None) else None
        if want_lae:
            self_den = sum_neg.clamp_min(tiny)  # E_p + sigma_neg at the anchor's own column (E = 0 there)
            log_den = (E + sum_neg[:, None]).clamp_min_(tiny)  # E_p + sigma_neg, every column
            inv_same = log_den.reciprocal()
            log_den.log_()
            log_sum = by_cls(log_den)[rows, cls_rows]
            inv_sum = by_cls(inv_same)[rows, cls_rows]  # sum_{p same} 1 / (E_p + sigma_neg)
            if has_self:
                log_sum, inv_sum = log_sum - self_den.log(), inv_sum - self_den.reciprocal()
            count = onehot.sum(1)[cls_rows] - float(has_self)
            lae_sum = log_sum + m[:, 0] * count
            inv_same.masked_fill_(~same, 0.0)  # kept for the backward pass; the anchor's column gets E = 0 there
        else:
            inv_sum = None
        if clamp is not None:
            excess = by_cls((S - clamp).clamp_min_(0.0))[rows, cls_rows]  # 0 at the anchor (finfo.min)
            over_same = (S > clamp).logical_and_(same)
        ctx.save_for_backward(E, onehot, cls_rows, sum_all, sum_same, inv_sum, inv_same, over_same)
        return lse_all, lse_same, lae_sum, excess

    @staticmethod
    @once_differentiable
    def backward(ctx, g_all, g_same, g_lae, g_excess):
        want_all, want_same, want_lae, clamped = ctx.flags
        saved = ctx.saved_tensors  # unpacked once (activation checkpointing allows no more)
        if len(saved) == 2:  # Khosla SupCon alone
            E, sum_all = saved
            return (E * (g_all / sum_all)[:, None],) + (None,) * 8
        E, onehot, cls_rows, sum_all, sum_same, inv_sum, inv_same, over_same = saved
        M, n_cls = E.shape[0], onehot.shape[0]
        rows = torch.arange(M, device=E.device)
        # coef[r, c]: d loss / d s for a column of class c is E * coef[r, c] (+ per-entry terms below)
        coef = E.new_zeros(M, n_cls)
        if want_all:
            coef += (g_all / sum_all)[:, None]
        if want_lae:  # each negative's share of every positive's log(E_p + sigma_neg)
            coef += (g_lae * inv_sum)[:, None]
            coef[rows, cls_rows] -= g_lae * inv_sum
        if want_same:
            coef[rows, cls_rows] += g_same / sum_same
        grad = coef @ onehot  # coef[r, class(c)] for every column c, as a product with the one-hot
        if want_lae:  # d/ds_p log(E_p + sigma_neg) = E_p / (E_p + sigma_neg), positives only
            grad.addcmul_(inv_same, g_lae[:, None])
        grad.mul_(E)
        if clamped:
            grad.add_(torch.where(over_same, g_excess[:, None], 0.0))  # no bool-to-float copy
        return grad, None, None, None, None, None, None, None, None


def _block_sums(
    S: Tensor,
    cls_rows: Tensor,
    cls_cols: Tensor,
    n_cls: int,
    self_col: Tensor | None,
    fused: bool,
    w_sup: float,
    w_cn: float,
    clamp: float | None,
    one_positive: bool,
    pos_sum: Tensor,
    pos_count: Tensor,
    own_sum: Tensor,
    own_count: Tensor,
) -> Tensor:
    """Sums and counts of valid per-anchor losses in one block: ``[sum_sup, n_sup, sum_cn, n_cn]``.

    ``S``: (M, K) logits, the anchor's own column ``self_col[r]`` (if not
    ``None``) at ``finfo.min``; ``cls_rows`` (M,) / ``cls_cols`` (K,) class
    ids. The positive logits come as ``pos_sum`` / ``pos_count`` and the
    anchor's own other views as ``own_sum`` / ``own_count``, summed by the
    caller from per-class and per-sample feature sums.

    ``fused=True`` takes every denominator from one shared ``exp`` with no
    (M, K) mask (:class:`_SharedExp`); the caller uses it only when the logits
    of a row span less than the float range of ``exp`` (see ``_fused_ok``).
    Otherwise each denominator is its own masked ``logsumexp``, which is exact
    for any spread of logits.
    """
    zero = S.new_zeros(())
    out = [zero, zero, zero, zero]
    if not fused:
        same = cls_rows[:, None] == cls_cols[None, :]
        if self_col is not None:
            same[torch.arange(S.shape[0], device=S.device), self_col] = False
        if w_sup != 0:
            if clamp is None and not one_positive:
                loss, valid = _supcon_rows(S, None, None, False, pos_sum, pos_count)
            else:
                loss, valid = _supcon_rows(S, same, clamp, one_positive)
            out[0], out[1] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
        if w_cn != 0:
            loss, valid = _cnce_rows(S, same, own_sum, own_count)
            out[2], out[3] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
        return torch.stack(out)
    lse_all, lse_same, lae_sum, excess = _SharedExp.apply(
        S, cls_rows, cls_cols, n_cls, self_col is not None,
        w_sup != 0 and not one_positive, w_cn != 0, w_sup != 0 and one_positive, clamp if w_sup != 0 else None,
    )  # fmt: skip
    if w_sup != 0:
        numer_sum = pos_sum - excess  # sum_p min(s_p, clamp)
        if one_positive:  # mean_p [ log(exp s_p + sum_n exp s_n) - numer_p ]
            loss = (lae_sum - numer_sum) / pos_count.clamp(min=1)
        else:  # Khosla L_out
            loss = lse_all - numer_sum / pos_count.clamp(min=1)
        valid = pos_count > 0
        out[0], out[1] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
    if w_cn != 0:  # mean own-view logit against the logsumexp over same-class candidates
        loss, valid = lse_same - own_sum / own_count.clamp(min=1), own_count > 0
        out[2], out[3] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
    return torch.stack(out)


def _fused_ok(norms: Tensor, inv_t: float, norm: str, dtype: torch.dtype) -> bool:
    """Whether every logit of a row lies within the range where ``exp(s - max)`` stays a normal float.

    ``|s(a, c)| <= 1 / tau`` for ``norm="row"`` (no data needed, no device
    sync), and ``<= max||z|| / (tau min||z||)`` for ``norm="broadcast"``. The
    shared-exp path needs ``2 * bound`` below ``-log(finfo.tiny)`` (87 in
    float32), with a margin: ``tau >= 0.026`` in float32 with row norms.
    """
    bound = inv_t if norm == "row" else inv_t * float(norms.detach().amax() / norms.detach().amin())
    return 2.0 * bound * (1.0 + 1e-3) <= -math.log(torch.finfo(dtype).tiny) - 8.0


def _counts(cls: Tensor, n_cls: int) -> Tensor:
    """``bincount(cls, minlength=n_cls)`` without its device sync (its output size depends on the data)."""
    return cls.new_zeros(n_cls).index_add_(0, cls, torch.ones_like(cls))


def _run_chunks(block, n_rows: int, chunk_size: int | None, device: torch.device, grad: bool) -> Tensor:
    """Sum ``block(rows)`` over chunks of anchor rows, checkpointing when there is more than one."""
    rows = torch.arange(n_rows, device=device)
    if chunk_size is None or chunk_size >= n_rows:
        return block(rows)
    total = None
    for part in rows.split(chunk_size):
        out = checkpoint(block, part, use_reentrant=False) if grad else block(part)
        total = out if total is None else total + out
    return total


# --------------------------------------------------------------------------- the engine


def _contrastive(
    z: Tensor,
    labels: Tensor | None,
    temperature: float,
    *,
    w_sup: float,
    w_cn: float,
    clamp: float | None,
    anchors: str,
    denominator: str,
    norm: str,
    chunk_size: int | None,
    gather: bool | None,
    num_classes: int | None = None,
    check_values: bool = True,
) -> Tensor:
    """``w_sup * SupCon + w_cn * cNCE`` for any combination of the switches.

    ``labels=None`` means every sample is its own class (SimCLR).
    ``num_classes`` (labels known to lie in ``0..num_classes-1``) and
    ``check_values=False`` together make the call free of host-device
    synchronisation; see :func:`spread_loss`.
    """
    _check_temperature(temperature)
    _check_switches(anchors, denominator, norm, clamp)
    _check_chunk(chunk_size)
    _check_z(z, labels, num_classes, check_values)
    B, V, D = z.shape
    device = z.device
    acc = torch.promote_types(z.dtype, torch.float32)  # logits dtype: float32 at least
    neg_big = torch.finfo(acc).min
    one_positive = denominator == "one_positive"
    grad = torch.is_grad_enabled() and z.requires_grad

    if gather is None:
        gather = world_size() > 1
    if gather:
        z_all, offset = gather_with_grad(z)
    else:
        z_all, offset = z, 0
    Bg = z_all.shape[0]
    ids = torch.arange(Bg, device=device)
    if labels is None:
        lab = ids
    else:
        lab = gather_no_grad(labels) if gather else labels
    norms = torch.linalg.vector_norm(z_all.to(acc), dim=-1).clamp_min(_NORM_EPS)  # (Bg, V)
    inv_t = 1.0 / temperature

    if labels is None:  # every sample its own class: no unique needed
        cls, n_cls = ids, Bg
    elif num_classes is not None:  # labels already are class indices: no device sync
        cls, n_cls = lab, num_classes
    else:  # data-dependent output size: one device sync
        uniq, cls = torch.unique(lab, return_inverse=True)  # class index 0..C-1 of every sample
        n_cls = uniq.numel()
    fused = _fused_ok(norms, inv_t, norm, acc)

    if anchors == "all":
        # view-major flattening: row v * Bg + j is sample j in view v
        zf = z_all.transpose(0, 1).reshape(V * Bg, D)
        nf = norms.transpose(0, 1).reshape(V * Bg, 1)
        cls_f, id_f = cls.repeat(V), ids.repeat(V)
        view_f = torch.arange(V, device=device).repeat_interleave(Bg)
        cand = zf / nf
        anchor_feat = cand * inv_t if norm == "row" else zf * inv_t
        # s(a, c) = anchor_feat[a] . cand[c] * scale[c, view(a)]; the scale is 1 for "row"
        # and 1 / ||z[j_c, v_a]|| for "broadcast". Positive sums use per-class and
        # per-sample sums of the scaled candidates, so they need no (M, K) mask.
        scale = (1.0 / norms)[id_f] if norm == "broadcast" else None  # (K, V)
        if scale is None:
            class_sum = cand.new_zeros(n_cls, D).index_add(0, cls_f, cand).expand(V, n_cls, D)
            sample_sum = cand.view(V, Bg, D).sum(0).expand(V, Bg, D)
        else:
            class_sum = torch.stack([cand.new_zeros(n_cls, D).index_add(0, cls_f, cand * scale[:, v, None]) for v in range(V)])
            sample_sum = cand.view(V, Bg, D).sum(0) * (1.0 / norms).T[:, :, None]
        class_count = _counts(cls_f, n_cls)
        local = (torch.arange(V, device=device)[:, None] * Bg + offset + torch.arange(B, device=device)).reshape(-1)

        def block(rows: Tensor) -> Tensor:
            idx = local[rows]  # global flat indices of these anchors (= their own columns)
            va, ca, ia = view_f[idx], cls_f[idx], id_f[idx]
            a = anchor_feat[idx]
            S = (a @ cand.T).to(acc)
            self_term = cand[idx]
            if scale is not None:  # divide by ||z[j, v_anchor]|| too
                S = S * scale[:, va].T
                self_term = self_term * scale[idx, va, None]
            ar = torch.arange(idx.shape[0], device=device)
            S[ar, idx] = neg_big  # a candidate is never the anchor itself
            pos_sum = (a * (class_sum[va, ca] - self_term)).sum(1).to(acc)
            own_sum = (a * (sample_sum[va, ia] - self_term)).sum(1).to(acc)
            own_count = torch.full_like(ca, V - 1)
            return _block_sums(S, ca, cls_f, n_cls, idx, fused, w_sup, w_cn, clamp, one_positive,
                               pos_sum, class_count[ca] - 1, own_sum, own_count)  # fmt: skip

        s = _run_chunks(block, local.shape[0], chunk_size, device, grad)
        return w_sup * s[0] / s[1].clamp(min=1) + w_cn * s[2] / s[3].clamp(min=1)

    # anchors == "cross_view": view v (local rows) against view w (all rows), w < v
    cls_local = cls[offset : offset + B]
    class_count = _counts(cls, n_cls)
    total = z.new_zeros((), dtype=acc)
    for v in range(1, V):
        for w in range(v):
            zv = z_all[offset : offset + B, v]
            if norm == "row":
                anchor_feat = zv / norms[offset : offset + B, v, None] * inv_t
                cand = z_all[:, w] / norms[:, w, None]
            else:  # the artefact: both norms taken at the candidate index j
                anchor_feat = zv * inv_t
                cand = z_all[:, w] / (norms[:, v] * norms[:, w])[:, None]
            class_sum = cand.new_zeros(n_cls, D).index_add(0, cls, cand)

            def block(rows: Tensor, anchor_feat=anchor_feat, cand=cand, class_sum=class_sum) -> Tensor:
                a = anchor_feat[rows]
                S = (a @ cand.T).to(acc)
                ca = cls_local[rows]
                pos_sum = (a * class_sum[ca]).sum(1).to(acc)
                own_sum = (a * cand[offset + rows]).sum(1).to(acc)  # the anchor's own sample in view w
                own_count = torch.ones_like(ca)
                return _block_sums(S, ca, cls, n_cls, None, fused, w_sup, w_cn, clamp, one_positive,
                                   pos_sum, class_count[ca], own_sum, own_count)  # fmt: skip

            s = _run_chunks(block, B, chunk_size, device, grad)
            total = total + w_sup * s[0] / s[1].clamp(min=1) + w_cn * s[2] / s[3].clamp(min=1)
    return total / (V * (V - 1) // 2)


# --------------------------------------------------------------------------- functional API


def supcon_loss(
    z: Tensor,
    labels: Tensor,
    temperature: float,
    *,
    clamp: float | None = None,
    anchors: Anchors = "all",
    denominator: Denominator = "all",
    norm: Norm = "row",
    chunk_size: int | None = None,
    gather: bool | None = None,
    num_classes: int | None = None,
    check_values: bool = True,
) -> Tensor:
    r"""Supervised contrastive loss, Khosla et al.'s :math:`L_{out}` by default.

    .. math::
        \mathcal L = \frac{1}{|A|}\sum_a \frac{-1}{|P(a)|}\sum_{p\in P(a)}
        \log\frac{\exp s(a,p)}{\sum_{c\neq a}\exp s(a,c)}

    Args:
        z: ``(B, V, D)`` float embeddings, ``V >= 2``; normalised here.
        labels: ``(B,)`` integer class ids.
        temperature: ``tau > 0``; logits are ``<u_a, u_c> / tau``.
        clamp: if set, the positive logit in the numerator is ``min(s(a,p), clamp)``.
        anchors: ``"all"`` or ``"cross_view"`` (see the module table).
        denominator: ``"all"`` (Khosla) or ``"one_positive"`` (the positive plus negatives).
        norm: ``"row"`` or ``"broadcast"`` (the official norm artefact).
        chunk_size: anchors per block; ``None`` computes all at once.
        gather: gather candidates over ranks; ``None`` does so when distributed.
        num_classes: the number of classes when ``labels`` are known to lie in
            ``0..num_classes-1``; skips ``torch.unique`` (a device sync).
        check_values: check that ``z`` is finite (and labels in range) -- one
            device sync; ``False`` leaves that to the caller, as the training
            engine does.

    Returns:
        0-dim tensor, the mean over anchors that have at least one positive.

    Example:
        >>> z = torch.randn(8, 2, 16); y = torch.randint(0, 3, (8,))
        >>> supcon_loss(z, y, temperature=0.1).shape
        torch.Size([])
    """
    return _contrastive(
        z, labels, temperature, w_sup=1.0, w_cn=0.0, clamp=clamp, anchors=anchors,
        denominator=denominator, norm=norm, chunk_size=chunk_size, gather=gather,
        num_classes=num_classes, check_values=check_values,
    )  # fmt: skip


def cnce_loss(
    z: Tensor,
    labels: Tensor,
    temperature: float,
    *,
    anchors: Anchors = "all",
    norm: Norm = "row",
    chunk_size: int | None = None,
    gather: bool | None = None,
    num_classes: int | None = None,
    check_values: bool = True,
) -> Tensor:
    r"""Class-conditional InfoNCE: the anchor's own other views against its class.

    .. math::
        \mathcal L = \frac{1}{|A|}\sum_a \frac{-1}{|Q(a)|}\sum_{q\in Q(a)}
        \log\frac{\exp s(a,q)}{\sum_{c\neq a,\ y_c=y_a}\exp s(a,c)}

    Args:
        z: ``(B, V, D)`` float embeddings, ``V >= 2``.
        labels: ``(B,)`` integer class ids.
        temperature: ``tau > 0``.
        anchors, norm, chunk_size, gather, num_classes, check_values: as in :func:`supcon_loss`.

    Returns:
        0-dim tensor.

    Example:
        >>> cnce_loss(torch.randn(8, 2, 16), torch.randint(0, 3, (8,)), 0.5).shape
        torch.Size([])
    """
    return _contrastive(
        z, labels, temperature, w_sup=0.0, w_cn=1.0, clamp=None, anchors=anchors,
        denominator="all", norm=norm, chunk_size=chunk_size, gather=gather,
        num_classes=num_classes, check_values=check_values,
    )  # fmt: skip


def _resolve(reference_quirks: bool, **given) -> dict:
    base = REFERENCE_QUIRKS if reference_quirks else PAPER
    return {k: (base[k] if v == "auto" else v) for k, v in given.items()}


def spread_loss(
    z: Tensor,
    labels: Tensor,
    alpha: float = 0.5,
    temperature: float = 0.5,
    reference_quirks: bool = False,
    *,
    clamp: float | None | str = "auto",
    anchors: str = "auto",
    denominator: str = "auto",
    norm: str = "auto",
    chunk_size: int | None = None,
    gather: bool | None = None,
    num_classes: int | None = None,
    check_values: bool = True,
) -> Tensor:
    r"""L_spread ``= (1 - alpha) * SupCon + alpha * cNCE`` (Chen et al., 2022).

    Args:
        z: ``(B, V, D)`` float embeddings, ``V >= 2``; raw encoder outputs.
        labels: ``(B,)`` integer class ids.
        alpha: cNCE weight in ``[0, 1]``; 0 is SupCon alone, 1 is cNCE alone.
        temperature: ``tau > 0``.
        reference_quirks: ``False`` gives the paper's equations; ``True`` the
            official thanos-code computation (CONTRACT §1, the module table).
        clamp, anchors, denominator, norm: ``"auto"`` takes the value from
            ``reference_quirks``; anything else overrides that one switch. The
            clamp applies to the SupCon term only, as in the official code.
        chunk_size, gather, num_classes, check_values: as in :func:`supcon_loss`.
            With ``num_classes`` given and ``check_values=False`` the call has
            no host-device synchronisation with the paper's switches (the
            quirks' broadcast norm needs one, to choose the stable path).

    Returns:
        0-dim tensor. Terms with zero weight are not computed.

    Example:
        >>> z = torch.randn(8, 2, 16); y = torch.randint(0, 3, (8,))
        >>> float(spread_loss(z, y, alpha=0.0)) == float(supcon_loss(z, y, 0.5))
        True
    """
    _check_alpha(alpha)
    sw = _resolve(reference_quirks, clamp=clamp, anchors=anchors, denominator=denominator, norm=norm)
    return _contrastive(
        z, labels, temperature, w_sup=1.0 - alpha, w_cn=float(alpha),
        chunk_size=chunk_size, gather=gather, num_classes=num_classes, check_values=check_values, **sw,
    )  # fmt: skip


def simclr_loss(
    z: Tensor,
    temperature: float,
    *,
    anchors: Anchors = "all",
    chunk_size: int | None = None,
    gather: bool | None = None,
    check_values: bool = True,
) -> Tensor:
    r"""Label-free InfoNCE / NT-Xent (SimCLR): each sample is its own class.

    .. math::
        \mathcal L = \frac{1}{|A|}\sum_a \frac{-1}{V-1}\sum_{q\in Q(a)}
        \log\frac{\exp s(a,q)}{\sum_{c\neq a}\exp s(a,c)}

    With ``V = 2`` this is exactly NT-Xent (Chen et al., 2020).

    Args:
        z: ``(B, V, D)`` float embeddings, ``V >= 2``.
        temperature: ``tau > 0``.
        anchors, chunk_size, gather, check_values: as in :func:`supcon_loss`.

    Example:
        >>> simclr_loss(torch.randn(8, 2, 16), 0.5).shape
        torch.Size([])
    """
    return _contrastive(
        z, None, temperature, w_sup=1.0, w_cn=0.0, clamp=None, anchors=anchors,
        denominator="all", norm="row", chunk_size=chunk_size, gather=gather, check_values=check_values,
    )  # fmt: skip


def reconstruction_loss(x_hat: Tensor, x: Tensor, *, check_values: bool = True) -> Tensor:
    r"""Autoencoder term: mean squared error over every element.

    .. math:: \mathcal L = \frac{1}{n}\sum_k (\hat x_k - x_k)^2

    Args:
        x_hat: decoder output, any shape, float.
        x: target of the same shape (the normalised input images).
        check_values: raise on non-finite inputs (two device syncs); ``False``
            leaves that to the caller.

    Example:
        >>> float(reconstruction_loss(torch.ones(2, 3), torch.zeros(2, 3)))
        1.0
    """
    if not isinstance(x_hat, Tensor) or not isinstance(x, Tensor) or x_hat.shape != x.shape:
        a = tuple(x_hat.shape) if isinstance(x_hat, Tensor) else type(x_hat).__name__
        b = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x_hat and x must be tensors of the same shape; got {a} and {b}")
    if x_hat.numel() == 0:
        raise ValueError("x_hat and x are empty")
    if check_values and not bool(torch.isfinite(x_hat).all()):
        raise ValueError("x_hat contains non-finite values (NaN or inf)")
    if check_values and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains non-finite values (NaN or inf)")
    return F.mse_loss(x_hat, x.to(x_hat.dtype))


# --------------------------------------------------------------------------- modules


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss`; holds the configuration only.

    Example:
        >>> SupConLoss(temperature=0.1)(torch.randn(8, 2, 16), torch.randint(0, 3, (8,))).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        clamp: float | None = None,
        anchors: Anchors = "all",
        denominator: Denominator = "all",
        norm: Norm = "row",
        chunk_size: int | None = None,
        gather: bool | None = None,
        num_classes: int | None = None,
        check_values: bool = True,
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_switches(anchors, denominator, norm, clamp)
        _check_chunk(chunk_size)
        self.temperature, self.clamp, self.anchors = temperature, clamp, anchors
        self.denominator, self.norm, self.chunk_size, self.gather = denominator, norm, chunk_size, gather
        self.num_classes, self.check_values = num_classes, bool(check_values)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(
            z, labels, self.temperature, clamp=self.clamp, anchors=self.anchors, denominator=self.denominator,
            norm=self.norm, chunk_size=self.chunk_size, gather=self.gather,
            num_classes=self.num_classes, check_values=self.check_values,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, clamp={self.clamp}, anchors={self.anchors!r}, " \
            f"denominator={self.denominator!r}, norm={self.norm!r}"  # fmt: skip


class CNCELoss(nn.Module):
    """Module form of :func:`cnce_loss`.

    Example:
        >>> CNCELoss(temperature=0.5)(torch.randn(8, 2, 16), torch.randint(0, 3, (8,))).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.5,
        *,
        anchors: Anchors = "all",
        norm: Norm = "row",
        chunk_size: int | None = None,
        gather: bool | None = None,
        num_classes: int | None = None,
        check_values: bool = True,
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_switches(anchors, "all", norm, None)
        _check_chunk(chunk_size)
        self.temperature, self.anchors, self.norm = temperature, anchors, norm
        self.chunk_size, self.gather = chunk_size, gather
        self.num_classes, self.check_values = num_classes, bool(check_values)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return cnce_loss(
            z, labels, self.temperature, anchors=self.anchors, norm=self.norm,
            chunk_size=self.chunk_size, gather=self.gather,
            num_classes=self.num_classes, check_values=self.check_values,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, anchors={self.anchors!r}, norm={self.norm!r}"


class SpreadLoss(nn.Module):
    """L_spread ``= (1 - alpha) * SupCon + alpha * cNCE`` (CONTRACT §1).

    Args:
        alpha: cNCE weight in ``[0, 1]``.
        temperature: ``tau > 0``.
        reference_quirks: ``True`` reproduces the official thanos-code exactly.
        clamp, anchors, denominator, norm, chunk_size, gather: see :func:`spread_loss`.

    ``forward(z (B, V, D), labels (B,)) -> 0-dim tensor``.

    Example:
        >>> loss = SpreadLoss(alpha=0.5, temperature=0.5)
        >>> loss(torch.randn(8, 2, 16), torch.randint(0, 3, (8,))).shape
        torch.Size([])
    """

    def __init__(
        self,
        alpha: float = 0.5,
        temperature: float = 0.5,
        reference_quirks: bool = False,
        *,
        clamp: float | None | str = "auto",
        anchors: str = "auto",
        denominator: str = "auto",
        norm: str = "auto",
        chunk_size: int | None = None,
        gather: bool | None = None,
        num_classes: int | None = None,
        check_values: bool = True,
    ) -> None:
        super().__init__()
        _check_alpha(alpha)
        _check_temperature(temperature)
        _check_chunk(chunk_size)
        self.alpha, self.temperature, self.reference_quirks = alpha, temperature, bool(reference_quirks)
        self.switches = _resolve(self.reference_quirks, clamp=clamp, anchors=anchors, denominator=denominator, norm=norm)
        _check_switches(**self.switches)
        self.chunk_size, self.gather = chunk_size, gather
        self.num_classes, self.check_values = num_classes, bool(check_values)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return spread_loss(
            z, labels, self.alpha, self.temperature, self.reference_quirks,
            chunk_size=self.chunk_size, gather=self.gather, num_classes=self.num_classes,
            check_values=self.check_values, **self.switches,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}, reference_quirks={self.reference_quirks}, " \
            f"{self.switches}"  # fmt: skip


class SimCLRLoss(nn.Module):
    """Module form of :func:`simclr_loss` (NT-Xent); ``forward(z)`` takes no labels.

    Example:
        >>> SimCLRLoss(temperature=0.5)(torch.randn(8, 2, 16)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.5, *, chunk_size: int | None = None, gather: bool | None = None,
                 check_values: bool = True):
        super().__init__()
        _check_temperature(temperature)
        _check_chunk(chunk_size)
        self.temperature, self.chunk_size, self.gather = temperature, chunk_size, gather
        self.check_values = bool(check_values)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """``labels`` is accepted and ignored, so SimCLR drops in where a labelled loss was."""
        return simclr_loss(z, self.temperature, chunk_size=self.chunk_size, gather=self.gather,
                           check_values=self.check_values)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class ReconstructionLoss(nn.Module):
    """Module form of :func:`reconstruction_loss` (mean squared error).

    Example:
        >>> ReconstructionLoss()(torch.zeros(2, 3), torch.zeros(2, 3))
        tensor(0.)
    """

    def __init__(self, *, check_values: bool = True) -> None:
        super().__init__()
        self.check_values = bool(check_values)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return reconstruction_loss(x_hat, x, check_values=self.check_values)
