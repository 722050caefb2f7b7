r"""The block computation behind the contrastive losses: ``[sum_sup, n_sup, sum_cn, n_cn]`` of one block of anchors.

:mod:`spreadcon.losses.contrastive` builds, per block of ``M`` anchor rows,
the ``(M, K)`` similarity matrix ``S`` and a :class:`BlockRows` (which class
each row and column has, which column is the anchor itself and which are its
own other views). :func:`_block_sums` turns that into masks and computes the
sums from them, by one of two paths:

* fused (:class:`_FusedBlock`), when every logit lies within the float range of
  ``exp`` (:func:`_fused_ok`): one ``exp`` of the block serves every
  denominator, the positives are gathered per row into an ``(M, P)`` block
  (:func:`_positive_columns`, ``P`` the largest class) and the backward pass
  is written out;
* exact (:func:`_exact_block`), for any spread of logits: dense positive and
  candidate masks (:func:`_pair_masks`), ``torch.finfo(dtype).min`` for the
  excluded entries and ``logsumexp`` for the denominators.

:func:`_run_chunks` sums blocks of anchors with activation checkpointing, and
:func:`_all_anchor_layout` says where each local anchor sits among the gathered
rows. Each bundle of tensors travels as a named tuple, read by field name.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint


class Terms(NamedTuple):
    """Which sums one block computes, and SupCon's form (from :class:`spreadcon.losses.switches.Switches`)."""

    sup: bool  # the SupCon sums
    cn: bool  # the cNCE sums
    clamp: float | None  # cap on SupCon's positive logit in the numerator, or None
    one_positive: bool  # SupCon's denominator: the positive plus the negatives (else every candidate)


class BlockRows(NamedTuple):
    """What the rows and columns of one ``(M, K)`` block of logits are."""

    cls_rows: Tensor  # (M,) class index of each anchor row
    cls_cols: Tensor  # (K,) class index of each candidate column
    self_col: Tensor | None  # (M,) the column that is the anchor itself; None: the anchor is no candidate
    own_cols: Tensor  # (M, n_own) the columns of the anchor's own other views (cNCE's positives)


class ClassColumns(NamedTuple):
    """Each class's columns, padded to one width ``P`` (:func:`_class_columns`)."""

    table: Tensor  # (n_cls, P) column indices
    weight: Tensor  # (n_cls, P) 1 for a column, 0 for padding
    onehot: Tensor | None  # (n_cls, K) one-hot class matrix of the columns (one-positive SupCon only)


class PositiveColumns(NamedTuple):
    """Each row's same-class columns (:func:`_positive_columns`): the fused path's positive mask."""

    cols: Tensor  # (M, P) column indices
    weight: Tensor  # (M, P) 1 for a positive, 0 for padding and for the anchor itself


class PairMasks(NamedTuple):
    """Dense masks of one block (:func:`_pair_masks`): the exact path's positive and candidate masks."""

    positive: Tensor  # (M, K) bool: same class as the anchor, the anchor excluded (SupCon's P(a), cNCE's candidates)
    candidate: Tensor | None  # (M, K) bool: every column but the anchor itself; None: every column
    own_cols: Tensor  # (M, n_own) the columns of the anchor's own other views (cNCE's Q(a))


class AnchorLayout(NamedTuple):
    """Where this rank's anchors sit among the gathered rows (:func:`_all_anchor_layout`)."""

    flat: Tensor  # (V B,) gathered row of each local anchor, in the order (view, sample)
    view_of: Tensor  # (V B,) view of each local anchor
    own_cols: Tensor  # (V B, V - 1) gathered rows of each local anchor's other views


# --------------------------------------------------------------------------- layout and chunks


def _all_anchor_layout(V: int, B: int, Bg: int, offset: int, device: torch.device) -> AnchorLayout:
    r"""The view-major layout of ``V`` views of ``Bg`` gathered samples, and this rank's ``B`` anchors in it.

    Row ``v * Bg + j`` is sample ``j`` in view ``v``, where ``j`` counts the
    samples of every rank in rank order and this rank's samples are
    ``offset .. offset + B - 1``. For ``V = 3`` on two ranks of ``B = 2``
    (``Bg = 4``; rank 1 has ``offset = 2``)::

                    sample j:   0    1  |  2    3
                    rank:       r0   r0 |  r1   r1
                    view 0:     0    1  |  2    3
                    view 1:     4    5  |  6    7
                    view 2:     8    9  | 10   11

        rank 1:  flat     = [2, 3, 6, 7, 10, 11]      (its anchors, view by view)
                 view_of  = [0, 0, 1, 1,  2,  2]
                 own_cols = [[6, 10], [7, 11], [2, 10], [3, 11], [2, 6], [3, 7]]

    Example:
        >>> lay = _all_anchor_layout(3, 2, 4, 2, torch.device("cpu"))
        >>> lay.flat.tolist(), lay.own_cols[2].tolist()
        ([2, 3, 6, 7, 10, 11], [2, 10])
    """
    k = torch.arange(V - 1, device=device)
    others = k[None, :] + (k[None, :] >= torch.arange(V, device=device)[:, None]).long()  # (V, V-1): w != v
    flat = (torch.arange(V, device=device)[:, None] * Bg + offset + torch.arange(B, device=device)).reshape(-1)
    view_of = torch.arange(V, device=device).repeat_interleave(B)  # view of each local anchor
    own_cols = others[view_of] * Bg + (flat - view_of * Bg)[:, None]  # the columns w * Bg + j, w != v
    return AnchorLayout(flat=flat, view_of=view_of, own_cols=own_cols)


def _run_chunks(block, n_rows: int, chunk_size: int | None, grad: bool) -> Tensor:
    """Sum ``block(rows)`` over slices of anchor rows, checkpointing when there is more than one."""
    if chunk_size is None or chunk_size >= n_rows:
        return block(slice(0, n_rows))
    total = None
    for start in range(0, n_rows, chunk_size):
        part = slice(start, min(start + chunk_size, n_rows))
        out = checkpoint(block, part, use_reentrant=False) if grad else block(part)
        total = out if total is None else total + out
    return total


# --------------------------------------------------------------------------- masks


def _host_reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor value on the host costs nothing here (a CPU tensor: no device to wait for)."""
    return device.type == "cpu"


def _class_columns(cls_cols: Tensor, n_cls: int, dtype: torch.dtype, onehot: bool) -> ClassColumns:
    """Each class's columns, padded to one width, and, if ``onehot``, the ``(n_cls, K)`` one-hot class matrix of
    the columns (else ``None``). Built once per loss call, not per block.

    ``P`` is the largest class when reading it is free (a CPU tensor), else
    every column (on a GPU: no host sync; the gather is then as wide as the block).

    Example:
        >>> c = _class_columns(torch.tensor([1, 0, 1, 1]), 3, torch.float32, onehot=False)
        >>> c.table.tolist(), c.weight.tolist()
        ([[1, 1, 1], [0, 2, 3], [3, 3, 3]], [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    """
    order = torch.argsort(cls_cols, stable=True)  # columns grouped by class
    count = cls_cols.new_zeros(n_cls).index_add_(0, cls_cols, torch.ones_like(cls_cols))  # bincount, no sync
    start = count.cumsum(0) - count
    width = int(count.max()) if _host_reads_are_free(cls_cols.device) else cls_cols.shape[0]
    j = torch.arange(width, device=cls_cols.device)
    last = (count - 1).clamp(min=0)[:, None]
    slot = (start[:, None] + torch.minimum(j, last)).clamp(max=cls_cols.shape[0] - 1)  # an empty class: weight 0
    return ClassColumns(table=order[slot], weight=(j < count[:, None]).to(dtype),
                        onehot=F.one_hot(cls_cols, n_cls).to(dtype).T if onehot else None)  # fmt: skip


def _positive_columns(rows: BlockRows, columns: ClassColumns) -> PositiveColumns:
    """Each row's same-class columns, gathered from ``columns`` (the classes of the block's columns)."""
    cols, w = columns.table.index_select(0, rows.cls_rows), columns.weight.index_select(0, rows.cls_rows)
    if rows.self_col is not None:
        w = w * (cols != rows.self_col[:, None])
    return PositiveColumns(cols=cols, weight=w)


def _pair_masks(rows: BlockRows) -> PairMasks:
    """The dense masks of one block: positives (same class, not the anchor) and candidates (not the anchor)."""
    same = rows.cls_rows[:, None] == rows.cls_cols[None, :]
    candidate = None
    if rows.self_col is not None:  # a candidate is never the anchor itself
        ar = torch.arange(same.shape[0], device=same.device)
        candidate = torch.ones_like(same)
        candidate[ar, rows.self_col] = False
        same[ar, rows.self_col] = False
    return PairMasks(positive=same, candidate=candidate, own_cols=rows.own_cols)


def _fused_ok(norms: Tensor, inv_t: float, norm: str, dtype: torch.dtype) -> bool:
    """Whether every logit lies within the range where ``exp(s)`` and ``exp(-s)`` stay normal floats with margin.

    ``|s(a, c)| <= 1 / tau`` for ``norm="row"`` (no data needed, no device
    sync), and ``<= max||z|| / (tau min||z||)`` for ``norm="broadcast"``. The
    fused path needs ``2 * bound`` below ``-log(finfo.tiny)`` (87 in float32),
    with a margin: ``tau >= 0.026`` in float32 with row norms.
    """
    bound = inv_t if norm == "row" else inv_t * float(norms.detach().amax() / norms.detach().amin())
    return 2.0 * bound * (1.0 + 1e-3) <= -math.log(torch.finfo(dtype).tiny) - 8.0


# --------------------------------------------------------------------------- the sums of one block


def _block_sums(S: Tensor, rows: BlockRows, terms: Terms, columns: ClassColumns | None) -> Tensor:
    """``[sum_sup, n_sup, sum_cn, n_cn]`` of one block of logits ``S`` (M, K) whose rows and columns are ``rows``.

    ``columns`` (:func:`_class_columns` of ``rows.cls_cols``) selects the fused
    path; ``None`` the exact one. ``sum_sup`` and ``sum_cn`` sum the
    per-anchor losses over the anchors that have the term's positives, and
    ``n_sup`` / ``n_cn`` count those anchors.
    """
    if columns is not None:
        return _FusedBlock.apply(S, rows, _positive_columns(rows, columns), columns.onehot, terms)
    return _exact_block(S, _pair_masks(rows), terms)


def _masked_logsumexp(S: Tensor, drop: Tensor, keepdim: bool = False) -> Tensor:
    """``log sum exp`` of each row of ``S`` over the entries where ``drop`` is False."""
    return S.masked_fill(drop, torch.finfo(S.dtype).min).logsumexp(1, keepdim=keepdim)


def _exact_block(S: Tensor, masks: PairMasks, terms: Terms) -> Tensor:
    """``[sum_sup, n_sup, sum_cn, n_cn]`` of one block by masked ``logsumexp``: exact for any spread of logits.

    ``S``: (M, K) logits; ``masks``: which entries are candidates, positives
    and own other views (:class:`PairMasks`).
    """
    if masks.candidate is not None:
        S = S.masked_fill(~masks.candidate, torch.finfo(S.dtype).min)
    same = masks.positive
    zero = S.new_zeros(())
    out = [zero, zero, zero, zero]
    if terms.sup:
        count = same.sum(1)
        numer = S if terms.clamp is None else S.clamp(max=terms.clamp)
        if terms.one_positive:
            # mean_p log( exp s(a,p) + sum_{n in N(a)} exp s(a,n) ) - numer_p, negatives N(a): not same, not the anchor
            lse_neg = _masked_logsumexp(S, same, keepdim=True)
            loss = torch.where(same, torch.logaddexp(S, lse_neg) - numer, 0.0).sum(1) / count.clamp(min=1)
        else:
            loss = S.logsumexp(1) - torch.where(same, numer, 0.0).sum(1) / count.clamp(min=1)
        valid = count > 0
        out[0], out[1] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
    if terms.cn:  # the anchor's own other views against every same-class candidate
        loss = _masked_logsumexp(S, ~same) - S.gather(1, masks.own_cols).mean(1)
        out[2], out[3] = loss.sum(), S.new_full((), float(S.shape[0]))
    return torch.stack(out)


class _FusedBlock(torch.autograd.Function):
    r"""``[sum_sup, n_sup, sum_cn, n_cn]`` of one block of logits from a single ``exp``, with its own backward.

    Inputs: logits ``S`` (M, K) (the anchor's own column left as it is); the
    block's :class:`BlockRows` (row classes, the anchor's own column
    ``self_col`` or ``None``, the columns of its own other views ``own_cols``);
    each row's same-class columns as :class:`PositiveColumns` (weight 0 for
    padding and for the anchor itself); the ``(n_cls, K)`` one-hot class
    matrix of the columns (used only for the one-positive denominator, else
    ``None``); and the :class:`Terms`. The caller guarantees
    ``|s| <= b`` with ``2 b`` inside the float range of ``exp``
    (:func:`_fused_ok`), so ``E = exp(S)`` needs no max subtraction: every
    entry is a normal float and no sum overflows. ``E`` is 0 at the anchor's
    own column. Per row, with "same" the same-class columns other than the anchor:

    * Khosla denominator ``log sum_c E_c``; cNCE denominator ``log sum_same E_c``;
    * one-positive denominators ``sum_{p same} log(E_p + sigma_neg)``,
      ``sigma_neg = sum_{n not same} E_n`` (summed per class, never as a
      difference of two large sums);
    * numerator ``sum_{p same} min(s_p, clamp)``.

    Why: ``torch.logsumexp`` calls ``exp`` once per mask in the forward pass
    and again in the backward pass, autograd keeps every intermediate, and on
    this CPU comparisons and bool masks cost 5-10 times a float pass (``exp`` of
    ``finfo.min`` mask entries 20 times). Here only ``exp``, the row sums and
    one pass of the backward touch the whole (M, K) block; everything about
    the positives works on the gathered (M, P) columns, about ``1 / n_cls`` of
    the block. The backward pass is written out: ``dS = E * u[r]`` on every
    column that a denominator sums (every column for Khosla's; only the
    negatives for the one-positive form, whose same-class columns are set to
    0 rather than corrected by subtracting ``E_p * u``, a difference that
    cancels to noise when the negatives' sum is small next to ``E_p``), plus
    the positives' own terms added at the positive columns and the own-view columns.

    Example: the gradient of the official form within one class (no negatives), where that
    cancellation once gave 0.0000 in float32 instead of the official code's 0.0397:

        >>> from spreadcon.losses import spread_loss
        >>> z = torch.tensor([[[1., 0.], [1., 0.]], [[0., 1.], [0., 1.]], [[-.1, 0.], [-.1, 0.]]],
        ...                  requires_grad=True)
        >>> spread_loss(z, torch.tensor([0, 0, 0]), 0.5, 0.5, reference_quirks=True).backward()
        >>> round(float(z.grad[0, 1, 1]), 4), round(float(z.grad[1, 0, 0]), 4)
        (0.0397, 0.0361)
    """

    @staticmethod
    def forward(ctx, S, rows: BlockRows, positives: PositiveColumns, onehot: Tensor | None, terms: Terms):
        M = S.shape[0]
        E = S.exp()
        if rows.self_col is not None:
            E[torch.arange(M, device=S.device), rows.self_col] = 0.0
        Ep = E.gather(1, positives.cols)  # (M, P) E of the same-class columns
        out = S.new_zeros(4)
        keep = {}
        if terms.sup:
            out[0], out[1], saved = _fused_supcon(S, E, Ep, rows, positives, onehot=onehot, terms=terms)
            keep.update(saved)
        if terms.cn:
            sum_same = (Ep * positives.weight).sum(1).clamp_min(torch.finfo(S.dtype).tiny)
            out[2] = (sum_same.log() - S.gather(1, rows.own_cols).mean(1)).sum()
            out[3] = M
            keep.update(sum_same=sum_same)
        ctx.terms = terms
        ctx.names = sorted(keep)
        ctx.save_for_backward(E, Ep, positives.cols, positives.weight, rows.own_cols, *(keep[k] for k in ctx.names))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        sup, cn, one_positive = ctx.terms.sup, ctx.terms.cn, ctx.terms.one_positive
        E, Ep, pos_cols, pos_w, own_cols, *rest = ctx.saved_tensors  # unpacked once (checkpointing allows no more)
        k = dict(zip(ctx.names, rest))
        M, n_own = E.shape[0], own_cols.shape[1]
        u = E.new_zeros(M)  # d loss / d s_c = E_c * u[r] on every column, plus the positives' terms
        pos_coef = E.new_zeros(M, 1)  # the positives' extra coefficient of E_p
        extra = None  # per-positive terms
        if sup:
            g_row = g[0] * k["inv_count"]  # d loss / d (numerator), and / d (one-positive denominators)
            if one_positive:  # negatives: their share of every positive's log(E_p + sigma_neg)
                u += g_row * k["inv_sum"]
                extra = Ep * k["inv"] * g_row[:, None]  # d/ds_p log(E_p + sigma_neg) = E_p / (E_p + sigma_neg)
            else:
                u += g[0] * k["valid"] / k["sum_all"]
            numer_term = k["num_w"] * g_row[:, None]
            extra = -numer_term if extra is None else extra - numer_term
        if cn:
            pos_coef += (g[2] / k["sum_same"])[:, None]
        grad = E * u[:, None]
        if sup and one_positive:
            # sigma_neg holds negatives only: a same-class column gets no share of u. Its entries are
            # overwritten with 0 (the positives' own terms follow), never corrected by subtracting
            # E_p * u, which cancels catastrophically when sigma_neg is small next to E_p.
            grad.scatter_(1, pos_cols, 0.0)
        pos = Ep * pos_coef * pos_w
        grad.scatter_add_(1, pos_cols, pos if extra is None else pos + extra)
        if cn:
            grad.scatter_add_(1, own_cols, (g[2] / -n_own).expand(M, n_own))
        return grad, None, None, None, None


def _fused_supcon(S: Tensor, E: Tensor, Ep: Tensor, rows: BlockRows, positives: PositiveColumns, *,
                  onehot: Tensor | None, terms: Terms) -> tuple[Tensor, Tensor, dict]:
    """``(sum_sup, n_sup, saved)`` of :class:`_FusedBlock`'s forward pass, ``saved`` the tensors its backward needs.

    ``E = exp(S)`` with 0 at the anchor's own column; ``Ep`` its positive columns.
    """
    tiny = torch.finfo(S.dtype).tiny
    pos_w = positives.weight
    count = pos_w.sum(1)
    valid = count > 0
    inv_count = valid / count.clamp(min=1)  # 0 for anchors without a positive: left out of the mean
    Sp = S.gather(1, positives.cols)
    if terms.clamp is None:
        numer, num_w = (Sp * pos_w).sum(1), pos_w
    else:  # sum_p min(s_p, clamp); its derivative is 1 where s_p <= clamp (as torch.clamp's)
        numer, num_w = (Sp.clamp_max(terms.clamp) * pos_w).sum(1), (Sp <= terms.clamp) * pos_w
    if terms.one_positive:
        # (M, C) sums of E per class; ~3x faster than E @ onehot.T in MKL. Autocast off: E reaches
        # exp(1/tau) (4.9e8 at tau = 0.05), past float16's range, so this product stays in float32
        with torch.autocast(S.device.type, enabled=False):
            by_class = (onehot @ E.T).T
        sigma = by_class.scatter(1, rows.cls_rows[:, None], 0.0).sum(1) + tiny  # > 0: den is never 0
        den = Ep + sigma[:, None]  # E_p + sigma_neg
        inv = pos_w / den
        per = ((den.log() * pos_w).sum(1) - numer) * inv_count
        saved = {"inv": inv, "inv_sum": inv.sum(1)}
    else:
        sum_all = E.sum(1).clamp_min(tiny)
        per = sum_all.log() - numer * inv_count
        saved = {"sum_all": sum_all}
    saved.update(inv_count=inv_count, valid=valid, num_w=num_w)
    return torch.where(valid, per, 0.0).sum(), valid.sum(), saved
