r"""Contrastive losses: SupCon, class-conditional InfoNCE, L_spread, SimCLR.

Every loss takes the raw encoder outputs ``z`` of shape ``(B, V, D)`` (``B``
samples, ``V >= 2`` augmented views, ``D`` features) and, where it needs them,
integer ``labels`` of shape ``(B,)``. It normalises ``z`` itself and returns a
0-dim tensor. The maths lives in plain functions (``supcon_loss``,
``cnce_loss``, ``spread_loss``, ``simclr_loss``); the ``nn.Module`` classes
only hold configuration. The reconstruction loss is in
:mod:`spreadcon.losses.reconstruction`.

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
difference is one field of :class:`spreadcon.losses.switches.Switches` (its
module has the table): ``anchors``, ``denominator``, ``clamp`` and ``norm``.
``reference_quirks=True`` selects :data:`~spreadcon.losses.switches.REFERENCE_QUIRKS`
(all four differences), ``False`` :data:`~spreadcon.losses.switches.L_OUT`.

Implementation: :func:`_contrastive` gathers the candidates and computes their
norms and classes once (:func:`_prepare`); then, per block of anchors, it
builds the ``(M, K)`` similarity matrix (:func:`_similarity`) and the block's
:class:`~spreadcon.losses._kernel.BlockRows`, and :mod:`spreadcon.losses._kernel`
computes the sums from them: in one fused ``exp`` with a written-out backward
when every logit lies within the float range of ``exp`` (``tau >= 0.026`` in
float32 with row norms), else by masked ``logsumexp``, exact for any spread.
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
from typing import NamedTuple

import torch
from torch import Tensor, nn

from spreadcon.distributed import gather_no_grad, gather_with_grad, world_size
from spreadcon.losses import _kernel
from spreadcon.losses._kernel import BlockRows, ClassColumns, Terms
from spreadcon.losses.switches import Anchors, Denominator, Norm, Switches

__all__ = [
    "supcon_loss",
    "cnce_loss",
    "spread_loss",
    "simclr_loss",
    "SupConLoss",
    "CNCELoss",
    "SpreadLoss",
    "SimCLRLoss",
]

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


# --------------------------------------------------------------------------- the engine


class _Batch(NamedTuple):
    """The candidates of one loss call: every rank's samples, rescaled, with their norms and classes."""

    zc: Tensor  # (Bg, V, D) in the accumulation dtype, scaled by a power of two to a largest entry in [0.5, 1)
    norms: Tensor  # (Bg, V) row norms of zc
    cls: Tensor  # (Bg,) class index 0..n_cls-1 of every sample
    n_cls: int
    offset: int  # this rank's first sample among the Bg (see _kernel._all_anchor_layout)
    B: int  # this rank's samples: the anchors


class _Setup(NamedTuple):
    """Everything about one loss call that is not data."""

    inv_t: float  # 1 / temperature
    norm: str  # the switch: "row" or "broadcast"
    terms: Terms
    w_sup: float
    w_cn: float
    chunk_size: int | None
    grad: bool  # whether a backward pass will follow (chunks are then checkpointed)
    accum_dtype: torch.dtype  # of the logits and every sum: float32 at least
    fused: bool  # every logit within exp's float range: the fused path of _kernel


def _prepare(z: Tensor, labels: Tensor | None, *, gather: bool | None, num_classes: int | None,
             accum_dtype: torch.dtype) -> _Batch:  # fmt: skip
    """Gather ``z`` (and labels) over ranks, rescale it exactly, and take its norms and class indices."""
    if gather is None:
        gather = world_size() > 1
    z_all, offset = gather_with_grad(z) if gather else (z, 0)
    Bg = z_all.shape[0]
    ids = torch.arange(Bg, device=z.device)
    lab = ids if labels is None else (gather_no_grad(labels) if gather else labels)
    # Everything below runs in ``accum_dtype`` (float32 at least), whatever the input dtype. Both forms are
    # invariant to one scale of the whole z, so z is first brought to a largest entry in [0.5, 1) by a
    # power of two (exact, no rounding): norms and the broadcast form's dot products then cannot
    # overflow for finite z of any magnitude (1e20, 1e38 per element). The factor is detached, which
    # leaves the gradient exact: for f(z) = f(c z), grad f(z) . z = 0, so the path through c adds 0.
    zc = z_all.to(accum_dtype)
    zc = torch.ldexp(zc, -torch.frexp(zc.detach().abs().amax())[1])
    # (Bg, V) norms as sqrt(sum z^2): the same value as vector_norm, and a backward without its bool-mask pass
    norms = (zc * zc).sum(-1).clamp_min(_NORM_EPS**2).sqrt()
    if labels is None:  # every sample its own class: no unique needed
        cls, n_cls = ids, Bg
    elif num_classes is not None:  # labels already are class indices: no device sync
        cls, n_cls = lab, num_classes
    else:  # data-dependent output size: one device sync
        uniq, cls = torch.unique(lab, return_inverse=True)  # class index 0..C-1 of every sample
        n_cls = uniq.numel()
    return _Batch(zc=zc, norms=norms, cls=cls, n_cls=n_cls, offset=offset, B=z.shape[0])


def _similarity(anchor_feat: Tensor, cand: Tensor, col_scale: Tensor | None, accum_dtype: torch.dtype) -> Tensor:
    """The ``(M, K)`` logits ``anchor_feat @ cand.T`` in ``accum_dtype``, times ``col_scale`` (M, K) if given."""
    S = (anchor_feat @ cand.T).to(accum_dtype)
    return S if col_scale is None else S * col_scale


def _class_columns(cls_cols: Tensor, n_cls: int, setup: _Setup) -> ClassColumns | None:
    """The fused path's per-class columns of the candidates (built once per call); ``None`` on the exact path."""
    if not setup.fused:
        return None
    return _kernel._class_columns(cls_cols, n_cls, setup.accum_dtype, setup.terms.one_positive and setup.terms.sup)


def _mean_terms(sums: Tensor, setup: _Setup) -> Tensor:
    """``w_sup * SupCon + w_cn * cNCE`` from ``[sum_sup, n_sup, sum_cn, n_cn]``."""
    sum_sup, n_sup, sum_cn, n_cn = sums.unbind()
    return setup.w_sup * sum_sup / n_sup.clamp(min=1) + setup.w_cn * sum_cn / n_cn.clamp(min=1)


def _all_anchors(batch: _Batch, setup: _Setup) -> Tensor:
    """Every local anchor ``(i, v)`` against every gathered candidate ``(j, w) != (i, v)``."""
    Bg, V, D = batch.zc.shape
    B = batch.B
    # view-major flattening: row v * Bg + j is sample j in view v (the picture: _kernel._all_anchor_layout)
    zf = batch.zc.transpose(0, 1).reshape(V * Bg, D)
    cand = zf / batch.norms.transpose(0, 1).reshape(V * Bg, 1)
    anchor_feat = cand * setup.inv_t if setup.norm == "row" else zf * setup.inv_t
    cls_f = batch.cls.repeat(V)
    # s(a, c) = anchor_feat[a] . cand[c] * scale[c, view(a)]; "broadcast" divides by ||z[j_c, v_a]|| too
    scale = (1.0 / batch.norms).repeat(V, 1) if setup.norm == "broadcast" else None  # (V Bg, V)
    lay = _kernel._all_anchor_layout(V, B, Bg, batch.offset, batch.zc.device)
    # local anchors in order: without a gather they are the first V * B rows, sliced without a copy
    take = (lambda X, rows: X[rows]) if Bg == B else (lambda X, rows: X[lay.flat[rows]])
    columns = _class_columns(cls_f, batch.n_cls, setup)

    def block(rows: slice) -> Tensor:
        col_scale = None if scale is None else scale[:, lay.view_of[rows]].T
        S = _similarity(take(anchor_feat, rows), cand, col_scale, setup.accum_dtype)
        index = BlockRows(cls_rows=take(cls_f, rows), cls_cols=cls_f, self_col=lay.flat[rows],
                          own_cols=lay.own_cols[rows])  # fmt: skip
        return _kernel._block_sums(S, index, setup.terms, columns)

    return _mean_terms(_kernel._run_chunks(block, V * B, setup.chunk_size, setup.grad), setup)


def _cross_view(batch: _Batch, setup: _Setup) -> Tensor:
    """View ``v`` of the local anchors against view ``w`` of every candidate, ``w < v``; the mean over the pairs.

    The anchor ``i`` (local) meets the candidates ``j`` (gathered) of one other
    view; its own sample there, column ``offset + i``, is its one positive for cNCE.
    """
    Bg, V, _ = batch.zc.shape
    B, offset, norms, inv_t = batch.B, batch.offset, batch.norms, setup.inv_t
    cls_local = batch.cls[offset : offset + B]
    own = (offset + torch.arange(B, device=batch.zc.device))[:, None]  # the anchor's own sample in view w
    columns = _class_columns(batch.cls, batch.n_cls, setup)
    total = batch.zc.new_zeros(())
    views = batch.zc.unbind(1)  # one backward node for all views (a select per view costs a zero-filled copy each)
    for v in range(1, V):
        for w in range(v):
            zv = views[v][offset : offset + B]
            if setup.norm == "row":
                anchor_feat = zv / norms[offset : offset + B, v, None] * inv_t
                cand = views[w] / norms[:, w, None]
            else:  # the artefact: both norms taken at the candidate index j
                anchor_feat = zv * inv_t
                cand = views[w] / (norms[:, v] * norms[:, w])[:, None]

            def block(rows: slice, anchor_feat=anchor_feat, cand=cand) -> Tensor:
                S = _similarity(anchor_feat[rows], cand, None, setup.accum_dtype)
                index = BlockRows(cls_rows=cls_local[rows], cls_cols=batch.cls, self_col=None, own_cols=own[rows])
                return _kernel._block_sums(S, index, setup.terms, columns)

            total = total + _mean_terms(_kernel._run_chunks(block, B, setup.chunk_size, setup.grad), setup)
    return total / (V * (V - 1) // 2)


def _contrastive(
    z: Tensor,
    labels: Tensor | None,
    temperature: float,
    *,
    w_sup: float,
    w_cn: float,
    switches: Switches,
    chunk_size: int | None,
    gather: bool | None,
    num_classes: int | None = None,
    check_values: bool = True,
) -> Tensor:
    """``w_sup * SupCon + w_cn * cNCE`` in the form ``switches``; ``temperature`` already checked.

    ``labels=None`` means every sample is its own class (SimCLR).
    ``num_classes`` (labels known to lie in ``0..num_classes-1``) and
    ``check_values=False`` together make the call free of host-device
    synchronisation; see :func:`spread_loss`.
    """
    _check_chunk(chunk_size)
    _check_z(z, labels, num_classes, check_values)
    accum_dtype = torch.promote_types(z.dtype, torch.float32)  # logits dtype: float32 at least
    batch = _prepare(z, labels, gather=gather, num_classes=num_classes, accum_dtype=accum_dtype)
    inv_t = 1.0 / temperature
    terms = Terms(sup=w_sup != 0, cn=w_cn != 0, clamp=switches.clamp,
                  one_positive=switches.denominator == "one_positive")  # fmt: skip
    setup = _Setup(
        inv_t=inv_t, norm=switches.norm, terms=terms, w_sup=w_sup, w_cn=w_cn, chunk_size=chunk_size,
        grad=torch.is_grad_enabled() and z.requires_grad, accum_dtype=accum_dtype,
        fused=_kernel._fused_ok(batch.norms, inv_t, switches.norm, accum_dtype),
    )  # fmt: skip
    return (_all_anchors if switches.anchors == "all" else _cross_view)(batch, setup)


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
    temperature = _check_temperature(temperature)
    switches = Switches(anchors=anchors, denominator=denominator, clamp=clamp, norm=norm)
    return _contrastive(
        z, labels, temperature, w_sup=1.0, w_cn=0.0, switches=switches, chunk_size=chunk_size, gather=gather,
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
    temperature = _check_temperature(temperature)
    switches = Switches(anchors=anchors, norm=norm)  # the denominator and clamp are SupCon's switches
    return _contrastive(
        z, labels, temperature, w_sup=0.0, w_cn=1.0, switches=switches, chunk_size=chunk_size, gather=gather,
        num_classes=num_classes, check_values=check_values,
    )  # fmt: skip


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
    temperature = _check_temperature(temperature)
    switches = Switches.resolve(reference_quirks, clamp=clamp, anchors=anchors, denominator=denominator, norm=norm)
    return _contrastive(
        z, labels, temperature, w_sup=1.0 - alpha, w_cn=float(alpha), switches=switches,
        chunk_size=chunk_size, gather=gather, num_classes=num_classes, check_values=check_values,
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
    temperature = _check_temperature(temperature)
    switches = Switches(anchors=anchors)  # every sample its own class, L_out's denominator, row norms
    return _contrastive(
        z, None, temperature, w_sup=1.0, w_cn=0.0, switches=switches, chunk_size=chunk_size, gather=gather,
        check_values=check_values,
    )  # fmt: skip


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
        self.temperature = _check_temperature(temperature)
        self.switches = Switches(anchors=anchors, denominator=denominator, clamp=clamp, norm=norm)
        _check_chunk(chunk_size)
        self.chunk_size, self.gather = chunk_size, gather
        self.num_classes, self.check_values = num_classes, bool(check_values)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(
            z, labels, self.temperature, chunk_size=self.chunk_size, gather=self.gather,
            num_classes=self.num_classes, check_values=self.check_values, **self.switches.as_dict(),
        )  # fmt: skip

    def extra_repr(self) -> str:
        sw = self.switches
        return f"temperature={self.temperature}, clamp={sw.clamp}, anchors={sw.anchors!r}, " \
            f"denominator={sw.denominator!r}, norm={sw.norm!r}"  # fmt: skip


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
        self.temperature = _check_temperature(temperature)
        self.switches = Switches(anchors=anchors, norm=norm)
        _check_chunk(chunk_size)
        self.chunk_size, self.gather = chunk_size, gather
        self.num_classes, self.check_values = num_classes, bool(check_values)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return cnce_loss(
            z, labels, self.temperature, anchors=self.switches.anchors, norm=self.switches.norm,
            chunk_size=self.chunk_size, gather=self.gather,
            num_classes=self.num_classes, check_values=self.check_values,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, anchors={self.switches.anchors!r}, norm={self.switches.norm!r}"


class SpreadLoss(nn.Module):
    """L_spread ``= (1 - alpha) * SupCon + alpha * cNCE``; see :func:`spread_loss`.

    Args:
        alpha: cNCE weight in ``[0, 1]``.
        temperature: ``tau > 0``.
        reference_quirks: ``True`` reproduces the official thanos-code exactly.
        clamp, anchors, denominator, norm, chunk_size, gather: see :func:`spread_loss`.

    ``forward(z (B, V, D), labels (B,)) -> 0-dim tensor``. ``self.switches`` is the resolved
    :class:`~spreadcon.losses.switches.Switches` (``"auto"`` replaced by ``reference_quirks``'s value).

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
        self.switches = Switches.resolve(self.reference_quirks, clamp=clamp, anchors=anchors, denominator=denominator,
                                         norm=norm)  # fmt: skip
        self.chunk_size, self.gather = chunk_size, gather
        self.num_classes, self.check_values = num_classes, bool(check_values)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return spread_loss(
            z, labels, self.alpha, self.temperature, self.reference_quirks,
            chunk_size=self.chunk_size, gather=self.gather, num_classes=self.num_classes,
            check_values=self.check_values, **self.switches.as_dict(),
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
