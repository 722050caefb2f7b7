"""Dropout with a mask drawn from random bits in bulk: the same distribution, faster on a CPU.

``torch.nn.functional.dropout`` on a CPU fills its mask with ``bernoulli_``,
which, on CPUs where PyTorch does not call MKL (AMD's included), draws one
double-precision uniform per element in a serial loop. In a bf16 training step
of the paper's ViT that was about a fifth of the step. :func:`dropout` instead
draws 64 random bits per four elements (:func:`random_words`: an SFC64
generator seeded by one draw from PyTorch's generator, so ``torch.manual_seed``
still decides the mask), reads them as four 16-bit integers ``u`` and drops an element when ``u < t``, with the integer threshold
``t = round(p * 2**16)``::

    int64 words   | w0                              | w1  ...
    int16 lanes   | u0     | u1     | u2     | u3     | u4  ...
    element       | x[0]   | x[1]   | x[2]   | x[3]   | x[4] ...
    dropped when  | u < t  (u read as unsigned: 0 .. 65535)

So every element is dropped independently with probability ``p' = t / 2**16``:
``p`` itself when it is a multiple of ``2**-16`` (0, 0.5, 0.25, ...), else
``p`` rounded to the nearest such multiple, within ``2**-17`` of it (0.1 is
dropped with probability 0.10000610, 0.05 with 0.05000305). Kept elements are
multiplied by ``1 / (1 - p')``, so the expectation is the input exactly, as
with ``F.dropout`` (which scales by ``1 / (1 - p)``).

The scaling is done in float32 or wider: a bf16 or fp16 input is multiplied by
the 0/1 mask (exact) and then by the Python scalar ``1 / (1 - p')``, which
PyTorch applies in float32 and rounds once. (``F.dropout`` builds its mask in
the input's dtype, so in bf16 it scales by ``1/(1-p)`` rounded to bf16: for
p = 0.05 that is 1.0547 instead of 1.0526.)

Everywhere else (a GPU, which has a fused dropout kernel, or inside
``torch.compile``, whose generated code draws its own random numbers, or inside
:func:`torch_dropout`) this is ``F.dropout``. With ``p == 0`` or ``training=False`` the input is returned
unchanged, as ``F.dropout`` does.

Example:
    >>> x = torch.ones(4, 1000)
    >>> y = dropout(x, 0.5, generator=torch.Generator().manual_seed(0))
    >>> sorted(set(y.unique().tolist()))
    [0.0, 2.0]
    >>> dropout(x, 0.0) is x, dropout(x, 0.5, training=False) is x
    (True, True)
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dropout", "dropout", "drop_threshold", "fast_dropout", "keep_mask", "random_words", "residual_dropout", "torch_dropout"]

_BITS = 16  # bits of randomness per element
_LANES = 64 // _BITS  # elements per int64 word
_torch_only = False  # set by torch_dropout()


@contextlib.contextmanager
def torch_dropout():
    """Within the block every dropout here takes PyTorch's own operations (``F.dropout``, and
    ``bernoulli_`` for drop-path), as on a GPU: the reference that ``python -m spreadcon bench`` times
    the ViT step against. Not thread-safe (a module-level switch)."""
    global _torch_only
    before, _torch_only = _torch_only, True
    try:
        yield
    finally:
        _torch_only = before


def fast_dropout(x: Tensor) -> bool:
    """Whether dropout on ``x`` takes the bulk-bits path: on a CPU, outside ``torch.compile`` and
    outside :func:`torch_dropout`."""
    return x.device.type == "cpu" and not _torch_only and not torch.compiler.is_compiling()


def drop_threshold(p: float) -> int:
    """The integer ``t = round(p * 2**16)``: an element whose 16 random bits ``u`` satisfy ``u < t`` is dropped."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p!r}")
    return round(p * (1 << _BITS))


def random_words(n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` uniformly random 64-bit words (``int64``, every bit pattern equally likely) from an SFC64
    generator (NumPy's ``numpy.random.SFC64``) seeded by one 63-bit draw from ``generator`` (``None``:
    PyTorch's default CPU generator).

    PyTorch's own ``random_`` over the full ``int64`` range takes two Mersenne-Twister outputs per word;
    SFC64 makes a word in half the time (measured on an AMD EPYC, one thread: 4.0 ms against 8.4 ms for
    2.2 million words, the mask of one attention dropout in the ViT step), and passes the same
    statistical test batteries. Seeding it from PyTorch's generator keeps ``torch.manual_seed`` (and a
    passed ``generator``) in charge: the same seed gives the same words, and successive calls draw
    fresh seeds, so their words are independent in practice (distinct SeedSequence-hashed seeds; not
    a proof of independence, which no seeded generator has).
    """
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))  # uniform on [0, 2**63)
    return torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64))


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.float32,
              generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """The dropout mask of :func:`dropout` and its scale: ``(mask, scale)`` with ``mask`` 1 where an element
    is kept and 0 where it is dropped, in ``dtype`` (exact in any floating dtype), and
    ``scale = 1 / (1 - t / 2**16)``, so that ``x * mask * scale`` is the dropped-out ``x``.

    Splitting the two lets a caller apply the scale where it is cheapest (the attention applies it to
    the smaller output of the product with ``V``). The random bits are seeded from ``generator`` (``None``:
    PyTorch's default CPU generator).
    """
    t = drop_threshold(p)
    shape = torch.Size(shape)
    if t == 1 << _BITS:  # p > 1 - 2**-17: everything is dropped
        return torch.zeros(shape, dtype=dtype), 0.0
    mask = torch.empty(shape, dtype=dtype)
    torch.ge(_lanes(shape, generator), t - (1 << (_BITS - 1)), out=mask)  # 1 where kept; written in dtype
    return mask, (1 << _BITS) / ((1 << _BITS) - t)  # (3x faster than a bool mask, then .to)


def _lanes(shape: torch.Size, generator: torch.Generator | None) -> Tensor:
    """One signed 16-bit lane ``u - 2**15`` per element of ``shape``, four to each random word."""
    n = shape.numel()
    return random_words((n + _LANES - 1) // _LANES, generator).view(torch.int16)[:n].view(shape)


def dropout(x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout: each element zeroed with probability ``t / 2**16`` (``t = round(p * 2**16)``),
    the others scaled by ``1 / (1 - t / 2**16)``; see the module docstring.

    Args:
        x: any floating tensor.
        p: drop probability in [0, 1].
        training: ``False`` returns ``x`` itself.
        generator: a CPU ``torch.Generator`` (``None``: PyTorch's default one, as ``F.dropout`` uses).

    Returns:
        A tensor of ``x``'s shape and dtype (``x`` itself when nothing is dropped).
    """
    t = drop_threshold(p)
    if not training or p == 0.0:
        return x
    if not fast_dropout(x):
        if generator is not None:
            raise ValueError("a generator is only taken on the CPU path (F.dropout takes none)")
        return F.dropout(x, p, training=True)
    if t == 0:  # p < 2**-17: nothing is ever dropped, and the scale is 1
        return x
    mask, scale = keep_mask(x.shape, p, x.dtype, generator)
    return _MaskScale.apply(x, mask, scale)


class _MaskScale(torch.autograd.Function):
    """``x * mask * scale``, and the same product for the gradient: one pass each way, the Python
    scalar ``scale`` applied in float32 (``addcmul``'s ``value``) and the result rounded once to ``x``'s
    dtype. (A mask that held the scale would round it to bf16 in a bf16 step.)"""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, mask, value=scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, mask, value=ctx.scale), None, None


class _ResidualMaskScale(torch.autograd.Function):
    """``x + h * mask * scale`` in ``x``'s dtype (float32 for the residual stream of an autocast step,
    ``h`` in bf16): one pass forward, and ``h``'s gradient in one pass backward, written in ``h``'s dtype."""

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.scale, ctx.h_dtype = scale, h.dtype
        return torch.addcmul(x, h, mask, value=scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        dh = torch.empty(grad.shape, dtype=ctx.h_dtype, device=grad.device)
        torch.addcmul(grad.new_zeros(()), grad, mask, value=ctx.scale, out=dh)
        return grad, dh, None, None


def residual_dropout(x: Tensor, h: Tensor, p: float, path_p: float = 0.0, training: bool = True) -> Tensor:
    """``x + DropPath(Dropout(h))``: a residual branch ``h`` after dropout ``p`` (each element, as in
    :func:`dropout`) and stochastic depth ``path_p`` (the whole branch of a sample, ``Bernoulli(1 - path_p)``
    per sample, scaled by ``1 / (1 - path_p)``), added to ``x``, as one multiply-add on the CPU.

    The masks multiply into one, and the two scales into one Python scalar, so the branch is read once
    and the sum written once (PyTorch's modules would take five passes: mask, scale, mask, scale, add).
    In evaluation, or with both rates 0, this is ``x + h``. Elsewhere than on a CPU (or inside
    ``torch.compile``) it is ``x + DropPath(F.dropout(h))``.
    """
    if not training or (p == 0.0 and path_p == 0.0):
        return x + h
    if not 0.0 <= path_p < 1.0:
        raise ValueError(f"drop-path probability must be in [0, 1), got {path_p!r}")
    sample_shape = (h.shape[0],) + (1,) * (h.ndim - 1)
    if not fast_dropout(h):  # the modules' own operations
        h = F.dropout(h, p, training=True) if p else h
        if path_p > 0.0:
            h = h * torch.empty(sample_shape, dtype=h.dtype, device=h.device).bernoulli_(1.0 - path_p) / (1.0 - path_p)
        return x + h
    if drop_threshold(p) > 0:
        mask, scale = keep_mask(h.shape, p, h.dtype)
    else:
        mask, scale = torch.ones((), dtype=h.dtype).expand(h.shape), 1.0
    if path_p > 0.0:
        mask = mask * torch.empty(sample_shape, dtype=h.dtype).bernoulli_(1.0 - path_p)
        scale /= 1.0 - path_p
    return _ResidualMaskScale.apply(x, h, mask, scale)


class Dropout(nn.Module):
    """:func:`dropout` as a module (a drop-in for ``nn.Dropout``, which it matches in evaluation and at ``p == 0``).

    Args:
        p: drop probability in [0, 1).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
