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


def _check_z(z: Tensor, labels: Tensor | None) -> None:
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
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains non-finite values (NaN or inf); refusing to return a NaN loss")


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


def _block_sums(
    S: Tensor,
    same: Tensor | None,
    w_sup: float,
    w_cn: float,
    clamp: float | None,
    one_positive: bool,
    pos_sum: Tensor,
    pos_count: Tensor,
    own_sum: Tensor,
    own_count: Tensor,
) -> Tensor:
    """Sums and counts of valid per-anchor losses in one block: ``[sum_sup, n_sup, sum_cn, n_cn]``."""
    zero = S.new_zeros(())
    out = [zero, zero, zero, zero]
    if w_sup != 0:
        if clamp is None and not one_positive:  # positives summed without a mask
            loss, valid = _supcon_rows(S, None, None, False, pos_sum, pos_count)
        else:
            loss, valid = _supcon_rows(S, same, clamp, one_positive)
        out[0], out[1] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
    if w_cn != 0:
        loss, valid = _cnce_rows(S, same, own_sum, own_count)
        out[2], out[3] = torch.where(valid, loss, 0.0).sum(), valid.sum().to(S.dtype)
    return torch.stack(out)


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
) -> Tensor:
    """``w_sup * SupCon + w_cn * cNCE`` for any combination of the switches.

    ``labels=None`` means every sample is its own class (SimCLR).
    """
    _check_temperature(temperature)
    _check_switches(anchors, denominator, norm, clamp)
    _check_chunk(chunk_size)
    _check_z(z, labels)
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

    _, cls = torch.unique(lab, return_inverse=True)  # class index 0..C-1 of every sample
    n_cls = int(cls.max()) + 1
    needs_mask = w_cn != 0 or clamp is not None or one_positive  # else SupCon needs no (M, K) mask

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
        class_count = torch.bincount(cls_f, minlength=n_cls)
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
            same = None
            if needs_mask:
                same = cls_f[idx, None] == cls_f[None, :]
                same[ar, idx] = False
            pos_sum = (a * (class_sum[va, ca] - self_term)).sum(1).to(acc)
            own_sum = (a * (sample_sum[va, ia] - self_term)).sum(1).to(acc)
            own_count = torch.full_like(ca, V - 1)
            return _block_sums(S, same, w_sup, w_cn, clamp, one_positive, pos_sum, class_count[ca] - 1, own_sum, own_count)

        s = _run_chunks(block, local.shape[0], chunk_size, device, grad)
        return w_sup * s[0] / s[1].clamp(min=1) + w_cn * s[2] / s[3].clamp(min=1)

    # anchors == "cross_view": view v (local rows) against view w (all rows), w < v
    cls_local = cls[offset : offset + B]
    class_count = torch.bincount(cls, minlength=n_cls)
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
                same = cls_local[rows, None] == cls[None, :] if needs_mask else None
                pos_sum = (a * class_sum[ca]).sum(1).to(acc)
                own_sum = (a * cand[offset + rows]).sum(1).to(acc)  # the anchor's own sample in view w
                own_count = torch.ones_like(ca)
                return _block_sums(S, same, w_sup, w_cn, clamp, one_positive, pos_sum, class_count[ca], own_sum, own_count)

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
) -> Tensor:
    r"""Class-conditional InfoNCE: the anchor's own other views against its class.

    .. math::
        \mathcal L = \frac{1}{|A|}\sum_a \frac{-1}{|Q(a)|}\sum_{q\in Q(a)}
        \log\frac{\exp s(a,q)}{\sum_{c\neq a,\ y_c=y_a}\exp s(a,c)}

    Args:
        z: ``(B, V, D)`` float embeddings, ``V >= 2``.
        labels: ``(B,)`` integer class ids.
        temperature: ``tau > 0``.
        anchors, norm, chunk_size, gather: as in :func:`supcon_loss`.

    Returns:
        0-dim tensor.

    Example:
        >>> cnce_loss(torch.randn(8, 2, 16), torch.randint(0, 3, (8,)), 0.5).shape
        torch.Size([])
    """
    return _contrastive(
        z, labels, temperature, w_sup=0.0, w_cn=1.0, clamp=None, anchors=anchors,
        denominator="all", norm=norm, chunk_size=chunk_size, gather=gather,
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
        chunk_size, gather: as in :func:`supcon_loss`.

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
        chunk_size=chunk_size, gather=gather, **sw,
    )  # fmt: skip


def simclr_loss(
    z: Tensor,
    temperature: float,
    *,
    anchors: Anchors = "all",
    chunk_size: int | None = None,
    gather: bool | None = None,
) -> Tensor:
    r"""Label-free InfoNCE / NT-Xent (SimCLR): each sample is its own class.

    .. math::
        \mathcal L = \frac{1}{|A|}\sum_a \frac{-1}{V-1}\sum_{q\in Q(a)}
        \log\frac{\exp s(a,q)}{\sum_{c\neq a}\exp s(a,c)}

    With ``V = 2`` this is exactly NT-Xent (Chen et al., 2020).

    Args:
        z: ``(B, V, D)`` float embeddings, ``V >= 2``.
        temperature: ``tau > 0``.
        anchors, chunk_size, gather: as in :func:`supcon_loss`.

    Example:
        >>> simclr_loss(torch.randn(8, 2, 16), 0.5).shape
        torch.Size([])
    """
    return _contrastive(
        z, None, temperature, w_sup=1.0, w_cn=0.0, clamp=None, anchors=anchors,
        denominator="all", norm="row", chunk_size=chunk_size, gather=gather,
    )  # fmt: skip


def reconstruction_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    r"""Autoencoder term: mean squared error over every element.

    .. math:: \mathcal L = \frac{1}{n}\sum_k (\hat x_k - x_k)^2

    Args:
        x_hat: decoder output, any shape, float.
        x: target of the same shape (the normalised input images).

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
    if not bool(torch.isfinite(x_hat).all()):
        raise ValueError("x_hat contains non-finite values (NaN or inf)")
    if not bool(torch.isfinite(x).all()):
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
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_switches(anchors, denominator, norm, clamp)
        _check_chunk(chunk_size)
        self.temperature, self.clamp, self.anchors = temperature, clamp, anchors
        self.denominator, self.norm, self.chunk_size, self.gather = denominator, norm, chunk_size, gather

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(
            z, labels, self.temperature, clamp=self.clamp, anchors=self.anchors, denominator=self.denominator,
            norm=self.norm, chunk_size=self.chunk_size, gather=self.gather,
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
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_switches(anchors, "all", norm, None)
        _check_chunk(chunk_size)
        self.temperature, self.anchors, self.norm = temperature, anchors, norm
        self.chunk_size, self.gather = chunk_size, gather

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return cnce_loss(
            z, labels, self.temperature, anchors=self.anchors, norm=self.norm,
            chunk_size=self.chunk_size, gather=self.gather,
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
    ) -> None:
        super().__init__()
        _check_alpha(alpha)
        _check_temperature(temperature)
        _check_chunk(chunk_size)
        self.alpha, self.temperature, self.reference_quirks = alpha, temperature, bool(reference_quirks)
        self.switches = _resolve(self.reference_quirks, clamp=clamp, anchors=anchors, denominator=denominator, norm=norm)
        _check_switches(**self.switches)
        self.chunk_size, self.gather = chunk_size, gather

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return spread_loss(
            z, labels, self.alpha, self.temperature, self.reference_quirks,
            chunk_size=self.chunk_size, gather=self.gather, **self.switches,
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

    def __init__(self, temperature: float = 0.5, *, chunk_size: int | None = None, gather: bool | None = None):
        super().__init__()
        _check_temperature(temperature)
        _check_chunk(chunk_size)
        self.temperature, self.chunk_size, self.gather = temperature, chunk_size, gather

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """``labels`` is accepted and ignored, so SimCLR drops in where a labelled loss was."""
        return simclr_loss(z, self.temperature, chunk_size=self.chunk_size, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class ReconstructionLoss(nn.Module):
    """Module form of :func:`reconstruction_loss` (mean squared error).

    Example:
        >>> ReconstructionLoss()(torch.zeros(2, 3), torch.zeros(2, 3))
        tensor(0.)
    """

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return reconstruction_loss(x_hat, x)
