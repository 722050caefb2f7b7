r"""Contrastive losses: SupCon, class-conditional InfoNCE, L_spread, SimCLR, reconstruction.

Every loss takes the raw encoder outputs ``z`` of shape ``(B, V, D)`` (``B``
samples, ``V >= 2`` augmented views, ``D`` features) and, where it needs them,
integer ``labels`` of shape ``(B,)``. It normalises ``z`` itself and returns a
0-dim tensor. The maths lives in plain functions (``supcon_loss``,
``cnce_loss``, ``spread_loss``, ``simclr_loss``, ``reconstruction_loss``); the
``nn.Module`` classes only hold configuration.

Notation (Khosla et al.'s L_out with the class-conditional InfoNCE: the equations this package
uses; the paper's own SupCon denominator could not be retrieved, so this is a choice.
``book/losses.md`` has the full page).
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
switch             L_out (the equations)       thanos-code (``reference_quirks``)
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

Implementation: one ``(M, K)`` similarity matmul per block of anchors. When
every logit lies within the float range of ``exp`` (``tau >= 0.026`` in float32
with row norms; :func:`_fused_ok`), one ``exp`` of the block serves every
denominator, the positives are gathered per row into an ``(M, P)`` block
(``P`` the largest class) and the backward pass is written out
(:class:`_FusedBlock`). Otherwise masks built from label and sample ids,
``torch.finfo(dtype).min`` for excluded entries and ``logsumexp`` for the
denominators give the exact value for any spread (:func:`_exact_block`).
Tests check the two paths against each other and against double loops.
Logits are accumulated in at least float32, so the losses stay finite under bf16/fp16 autocast. Anchors
without a positive are left out of the mean. ``chunk_size`` splits the
anchors into blocks that are recomputed in the backward pass
(activation checkpointing), so peak memory is ``O(chunk_size * B * V)``
instead of ``O((B * V)^2)``, with the same value. When ``torch.distributed``
is initialised the candidates come from every rank; see
:mod:`spreadcon.distributed` for the gradient semantics.
"""

from __future__ import annotations

import math
import numbers
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
    "L_OUT",
    "PAPER",
    "REFERENCE_QUIRKS",
]

Anchors = Literal["all", "cross_view"]
Denominator = Literal["all", "one_positive"]
Norm = Literal["row", "broadcast"]

#: The switches of Khosla et al.'s L_out with the class-conditional InfoNCE, written from their
#: equations (``reference_quirks=False``). A choice: the paper's own denominator could not be retrieved.
L_OUT = {"anchors": "all", "denominator": "all", "clamp": None, "norm": "row"}
#: The earlier name of :data:`L_OUT`, kept so that code using it keeps working.
PAPER = L_OUT
#: The switches that reproduce the official thanos-code loss exactly.
REFERENCE_QUIRKS = {"anchors": "cross_view", "denominator": "one_positive", "clamp": 1.0, "norm": "broadcast"}

_NORM_EPS = 1e-12  # smallest norm divided by (as in F.normalize); a zero row stays finite


# --------------------------------------------------------------------------- checks


def _real(value: object) -> float | None:
    """``value`` as a Python float if it is a real number of any numeric type (int, float, a NumPy
    scalar, a 0-dim real tensor), else ``None``. Booleans are not numbers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            return None
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _check_temperature(temperature: object) -> float:
    """The temperature as a float; ``ValueError`` unless it is a finite real number > 0."""
    t = _real(temperature)
    if t is None or not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
    return t


def _check_alpha(alpha: object) -> float:
    """``alpha`` as a float; ``ValueError`` unless it is a real number in [0, 1]."""
    a = _real(alpha)
    if a is None or not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    return a


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
    if not check_values:  # the caller checks the loss itself (spreadcon.train.loop: once per epoch)
        return
    # any NaN or inf makes the sum non-finite; a finite z whose sum overflows is told apart by the full check
    if not bool(torch.isfinite(z.detach().sum())) and not bool(torch.isfinite(z).all()):
        raise ValueError("z contains non-finite values (NaN or inf); refusing to return a NaN loss")
    if num_classes is not None and labels is not None and labels.numel() and \
            not bool(((labels >= 0) & (labels < num_classes)).all()):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}); "
                         f"got values from {int(labels.min())} to {int(labels.max())}")


# --------------------------------------------------------------------------- one block of anchors


def _exact_block(
    S: Tensor, same: Tensor, own_cols: Tensor, sup: bool, cn: bool, clamp: float | None, one_positive: bool
) -> Tensor:
    """``[sum_sup, n_sup, sum_cn, n_cn]`` of one block by masked ``logsumexp``: exact for any spread of logits.

    ``S``: (M, K) logits with the anchor's own column at ``finfo.min``;
    ``same``: (M, K) bool, the same-class candidates (anchor excluded);
    ``own_cols``: (M, n_own) columns of the anchor's own other views.
    ``sum_sup`` and ``sum_cn`` sum the per-anchor losses over the anchors that
    have the term's positives, and ``n_sup`` / ``n_cn`` count those anchors.
    """
    neg_big = torch.finfo(S.dtype).min
    zero = S.new_zeros(())
    out = [zero, zero, zero, zero]
    if sup:
        count = same.sum(1)
        numer = S if clamp is None else S.clamp(max=clamp)
        if one_positive:
            # mean_p log( exp s(a,p) + sum_{n in N(a)} exp s(a,n) ) - numer_p, negatives N(a): not same, not the anchor
            lse_neg = S.masked_fill(same, neg_big).logsumexp(1, keepdim=True)
            loss = torch.where(same, torch.logaddexp(S, lse_neg) - numer, 0.0).sum(1) / count.clamp(min=1)
        else:
            loss = S.logsumexp(1) - torch.where(same, numer, 0.0).sum(1) / count.clamp(min=1)
        valid = count > 0
        out[0], out[1] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
    if cn:  # the anchor's own other views against every same-class candidate
        loss = S.masked_fill(~same, neg_big).logsumexp(1) - S.gather(1, own_cols).mean(1)
        out[2], out[3] = loss.sum(), S.new_full((), float(S.shape[0]))
    return torch.stack(out)


class _FusedBlock(torch.autograd.Function):
    r"""``[sum_sup, n_sup, sum_cn, n_cn]`` of one block of logits from a single ``exp``, with its own backward.

    Inputs: logits ``S`` (M, K) (the anchor's own column left as it is); each
    row's same-class columns ``pos_cols`` (M, P) with a 0/1 weight ``pos_w``
    (0 for padding and for the anchor itself, see :func:`_positive_columns`);
    the row classes and the ``(n_cls, K)`` one-hot class matrix of the columns
    (used only for the one-positive denominator); the anchor's own column ``self_col`` (M,) or
    ``None``; the columns of its own other views ``own_cols`` (M, n_own); which
    terms to compute and the SupCon switches. The caller guarantees
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
    the positives' own terms added at ``pos_cols`` and the own-view columns.

    Example: the gradient of the official form within one class (no negatives), where that
    cancellation once gave 0.0000 in float32 instead of the official code's 0.0397:

        >>> z = torch.tensor([[[1., 0.], [1., 0.]], [[0., 1.], [0., 1.]], [[-.1, 0.], [-.1, 0.]]],
        ...                  requires_grad=True)
        >>> spread_loss(z, torch.tensor([0, 0, 0]), 0.5, 0.5, reference_quirks=True).backward()
        >>> round(float(z.grad[0, 1, 1]), 4), round(float(z.grad[1, 0, 0]), 4)
        (0.0397, 0.0361)
    """

    @staticmethod
    def forward(ctx, S, pos_cols, pos_w, cls_rows, onehot, self_col, own_cols, sup, cn, clamp, one_positive):
        M = S.shape[0]
        tiny = torch.finfo(S.dtype).tiny
        E = S.exp()
        if self_col is not None:
            E[torch.arange(M, device=S.device), self_col] = 0.0
        Ep = E.gather(1, pos_cols)  # (M, P) E of the same-class columns
        out = S.new_zeros(4)
        keep = {}
        if sup:
            count = pos_w.sum(1)
            valid = count > 0
            inv_count = valid / count.clamp(min=1)  # 0 for anchors without a positive: left out of the mean
            Sp = S.gather(1, pos_cols)
            if clamp is None:
                numer, num_w = (Sp * pos_w).sum(1), pos_w
            else:  # sum_p min(s_p, clamp); its derivative is 1 where s_p <= clamp (as torch.clamp's)
                numer, num_w = (Sp.clamp_max(clamp) * pos_w).sum(1), (Sp <= clamp) * pos_w
            if one_positive:
                # (M, C) sums of E per class; ~3x faster than E @ onehot.T in MKL. Autocast off: E reaches
                # exp(1/tau) (4.9e8 at tau = 0.05), past float16's range, so this product stays in float32
                with torch.autocast(S.device.type, enabled=False):
                    by_class = (onehot @ E.T).T
                sigma = by_class.scatter(1, cls_rows[:, None], 0.0).sum(1) + tiny  # > 0: den is never 0
                den = Ep + sigma[:, None]  # E_p + sigma_neg
                inv = pos_w / den
                per = ((den.log() * pos_w).sum(1) - numer) * inv_count
                keep.update(inv=inv, inv_sum=inv.sum(1))
            else:
                sum_all = E.sum(1).clamp_min(tiny)
                per = sum_all.log() - numer * inv_count
                keep.update(sum_all=sum_all)
            out[0], out[1] = torch.where(valid, per, 0.0).sum(), valid.sum()
            keep.update(inv_count=inv_count, valid=valid, num_w=num_w)
        if cn:
            sum_same = (Ep * pos_w).sum(1).clamp_min(tiny)
            out[2] = (sum_same.log() - S.gather(1, own_cols).mean(1)).sum()
            out[3] = M
            keep.update(sum_same=sum_same)
        ctx.flags = (sup, cn, one_positive)
        ctx.names = sorted(keep)
        ctx.save_for_backward(E, Ep, pos_cols, pos_w, own_cols, *(keep[k] for k in ctx.names))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        sup, cn, one_positive = ctx.flags
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
        return (grad,) + (None,) * 10


def _host_reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor value on the host costs nothing here (a CPU tensor: no device to wait for)."""
    return device.type == "cpu"


def _class_columns(cls_cols: Tensor, n_cls: int, dtype: torch.dtype, onehot: bool) -> tuple:
    """Each class's columns, padded to one width: ``(n_cls, P)`` column indices and 0/1 weights (0: padding),
    and, if ``onehot``, the ``(n_cls, K)`` one-hot class matrix of the columns (else ``None``). Built once per
    loss call, not per block.

    ``P`` is the largest class when reading it is free (a CPU tensor), else
    every column (on a GPU: no host sync; the gather is then as wide as the block).
    """
    order = torch.argsort(cls_cols, stable=True)  # columns grouped by class
    count = cls_cols.new_zeros(n_cls).index_add_(0, cls_cols, torch.ones_like(cls_cols))  # bincount, no sync
    start = count.cumsum(0) - count
    width = int(count.max()) if _host_reads_are_free(cls_cols.device) else cls_cols.shape[0]
    j = torch.arange(width, device=cls_cols.device)
    last = (count - 1).clamp(min=0)[:, None]
    slot = (start[:, None] + torch.minimum(j, last)).clamp(max=cls_cols.shape[0] - 1)  # an empty class: weight 0
    return order[slot], (j < count[:, None]).to(dtype), F.one_hot(cls_cols, n_cls).to(dtype).T if onehot else None


def _positive_columns(cls_rows: Tensor, columns: tuple, self_col: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(M, P)`` indices of each row's same-class columns and their 0/1 weights (0: padding, the anchor).

    ``columns`` is :func:`_class_columns` of the block's column classes.
    """
    table, weight, _ = columns
    cols, w = table.index_select(0, cls_rows), weight.index_select(0, cls_rows)
    if self_col is not None:
        w = w * (cols != self_col[:, None])
    return cols, w


def _fused_ok(norms: Tensor, inv_t: float, norm: str, dtype: torch.dtype) -> bool:
    """Whether every logit lies within the range where ``exp(s)`` and ``exp(-s)`` stay normal floats with margin.

    ``|s(a, c)| <= 1 / tau`` for ``norm="row"`` (no data needed, no device
    sync), and ``<= max||z|| / (tau min||z||)`` for ``norm="broadcast"``. The
    fused path needs ``2 * bound`` below ``-log(finfo.tiny)`` (87 in float32),
    with a margin: ``tau >= 0.026`` in float32 with row norms.
    """
    bound = inv_t if norm == "row" else inv_t * float(norms.detach().amax() / norms.detach().amin())
    return 2.0 * bound * (1.0 + 1e-3) <= -math.log(torch.finfo(dtype).tiny) - 8.0


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
    temperature = _check_temperature(temperature)
    _check_switches(anchors, denominator, norm, clamp)
    _check_chunk(chunk_size)
    _check_z(z, labels, num_classes, check_values)
    B, V, D = z.shape
    device = z.device
    acc = torch.promote_types(z.dtype, torch.float32)  # logits dtype: float32 at least
    one_positive = denominator == "one_positive"
    sup, cn = w_sup != 0, w_cn != 0
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
    # Everything below runs in ``acc`` (float32 at least), whatever the input dtype. Both forms are
    # invariant to one scale of the whole z, so z is first brought to a largest entry in [0.5, 1) by a
    # power of two (exact, no rounding): norms and the broadcast form's dot products then cannot
    # overflow for finite z of any magnitude (1e20, 1e38 per element). The factor is detached, which
    # leaves the gradient exact: for f(z) = f(c z), grad f(z) . z = 0, so the path through c adds 0.
    zc = z_all.to(acc)
    zc = torch.ldexp(zc, -torch.frexp(zc.detach().abs().amax())[1])
    # (Bg, V) norms as sqrt(sum z^2): the same value as vector_norm, and a backward without its bool-mask pass
    norms = (zc * zc).sum(-1).clamp_min(_NORM_EPS**2).sqrt()
    inv_t = 1.0 / temperature

    if labels is None:  # every sample its own class: no unique needed
        cls, n_cls = ids, Bg
    elif num_classes is not None:  # labels already are class indices: no device sync
        cls, n_cls = lab, num_classes
    else:  # data-dependent output size: one device sync
        uniq, cls = torch.unique(lab, return_inverse=True)  # class index 0..C-1 of every sample
        n_cls = uniq.numel()
    fused = _fused_ok(norms, inv_t, norm, acc)

    def sums(a: Tensor, cand: Tensor, cls_rows: Tensor, cls_cols: Tensor, columns: tuple | None,
             self_col: Tensor | None, own_cols: Tensor, col_scale: Tensor | None = None) -> Tensor:  # fmt: skip
        """``[sum_sup, n_sup, sum_cn, n_cn]`` of anchors ``a`` (M, D) against candidates ``cand`` (K, D);
        ``columns``: :func:`_class_columns` of ``cls_cols`` (the fused path only)."""
        S = (a @ cand.T).to(acc)
        if col_scale is not None:
            S = S * col_scale
        if fused:
            pos_cols, pos_w = _positive_columns(cls_rows, columns, self_col)
            return _FusedBlock.apply(S, pos_cols, pos_w, cls_rows, columns[2], self_col, own_cols, sup, cn, clamp,
                                     one_positive)  # fmt: skip
        same = cls_rows[:, None] == cls_cols[None, :]
        if self_col is not None:  # a candidate is never the anchor itself
            ar = torch.arange(S.shape[0], device=device)
            S = S.index_put((ar, self_col), S.new_full((), torch.finfo(acc).min))
            same[ar, self_col] = False
        return _exact_block(S, same, own_cols, sup, cn, clamp, one_positive)

    def mean_terms(s: Tensor) -> Tensor:
        return w_sup * s[0] / s[1].clamp(min=1) + w_cn * s[2] / s[3].clamp(min=1)

    if anchors == "all":
        # view-major flattening: row v * Bg + j is sample j in view v
        zf = zc.transpose(0, 1).reshape(V * Bg, D)
        cand = zf / norms.transpose(0, 1).reshape(V * Bg, 1)
        anchor_feat = cand * inv_t if norm == "row" else zf * inv_t
        cls_f = cls.repeat(V)
        # s(a, c) = anchor_feat[a] . cand[c] * scale[c, view(a)]; "broadcast" divides by ||z[j_c, v_a]|| too
        scale = (1.0 / norms).repeat(V, 1) if norm == "broadcast" else None  # (V Bg, V)
        # the anchor (i, v)'s own other views are the columns w * Bg + i, w != v
        k = torch.arange(V - 1, device=device)
        others = k[None, :] + (k[None, :] >= torch.arange(V, device=device)[:, None]).long()  # (V, V-1): w != v
        flat = (torch.arange(V, device=device)[:, None] * Bg + offset + torch.arange(B, device=device)).reshape(-1)
        view_of = torch.arange(V, device=device).repeat_interleave(B)  # view of each local anchor
        own_f = others[view_of] * Bg + (flat - view_of * Bg)[:, None]
        # local anchors in order: without a gather they are the first V * B rows, sliced without a copy
        take = (lambda X, rows: X[rows]) if Bg == B else (lambda X, rows: X[flat[rows]])

        columns = _class_columns(cls_f, n_cls, acc, one_positive and sup) if fused else None

        def block(rows: slice) -> Tensor:
            col_scale = None if scale is None else scale[:, view_of[rows]].T
            return sums(take(anchor_feat, rows), cand, take(cls_f, rows), cls_f, columns, flat[rows], own_f[rows],
                        col_scale)  # fmt: skip

        return mean_terms(_run_chunks(block, V * B, chunk_size, grad))

    # anchors == "cross_view": view v (local rows) against view w (all rows), w < v
    cls_local = cls[offset : offset + B]
    own_cv = (offset + torch.arange(B, device=device))[:, None]  # the anchor's own sample in view w
    columns = _class_columns(cls, n_cls, acc, one_positive and sup) if fused else None
    total = z.new_zeros((), dtype=acc)
    views = zc.unbind(1)  # one backward node for all views (a select per view costs a zero-filled copy each)
    for v in range(1, V):
        for w in range(v):
            zv = views[v][offset : offset + B]
            if norm == "row":
                anchor_feat = zv / norms[offset : offset + B, v, None] * inv_t
                cand = views[w] / norms[:, w, None]
            else:  # the artefact: both norms taken at the candidate index j
                anchor_feat = zv * inv_t
                cand = views[w] / (norms[:, v] * norms[:, w])[:, None]

            def block(rows: slice, anchor_feat=anchor_feat, cand=cand) -> Tensor:
                return sums(anchor_feat[rows], cand, cls_local[rows], cls, columns, None, own_cv[rows])

            total = total + mean_terms(_run_chunks(block, B, chunk_size, grad))
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
    base = REFERENCE_QUIRKS if reference_quirks else L_OUT
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
        reference_quirks: ``False`` gives Khosla's L_out (the equations); ``True`` the
            official thanos-code computation (the module table).
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
    alpha = _check_alpha(alpha)
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
        temperature = _check_temperature(temperature)
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
        temperature = _check_temperature(temperature)
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
    """L_spread ``= (1 - alpha) * SupCon + alpha * cNCE``; see :func:`spread_loss`.

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
        alpha, temperature = _check_alpha(alpha), _check_temperature(temperature)
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
        temperature = _check_temperature(temperature)
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
