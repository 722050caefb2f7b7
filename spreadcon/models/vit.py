"""The paper's Vision Transformer encoder, and its training-step FLOP count.

The encoder the paper trains on every dataset is a small pre-norm ViT:

* a 4×4 patch embedding (a linear map of each flattened patch, written as a
  stride-4 convolution) to ``dim=256``, followed by LayerNorm;
* a learned CLS token and learned positional embeddings, one per token, so the
  number of tokens follows the image size: 28×28 MNIST → 49 patches, 32×32
  CIFAR → 64, 64×64 TinyImageNet → 256 (plus the CLS token);
* ``depth=7`` pre-norm transformer blocks, ``heads=8``, MLP width 512 (GELU);
* dropout 0.05 on the embeddings, the attention output and the MLP; dropout
  0.1 on the attention probabilities ("attention-logit dropout");
  stochastic depth (drop-path) rising linearly from 0 in the first block to
  0.05 in the last;
* a final LayerNorm; the CLS token is the embedding, ``out_dim = dim = 256``.

Each block computes, for tokens ``x`` of shape ``(B, T, dim)``::

    x = x + DropPath(Dropout(Attn(LN(x))))
    x = x + DropPath(MLP(LN(x)))
    Attn(h) = W_o · softmax(Q Kᵀ / sqrt(d_head)) V,   Q, K, V = split(W_qkv h)

Parameter count at 32×32 RGB with the defaults: 3,720,192. The issue and the
paper's text say "about 3.2M"; the 7-block architecture as specified cannot
give that (each block has 527,104 parameters; 6 blocks would give 3,193,088). We
keep the specified 7 blocks and report the true count.

Attention goes through :func:`attention`: PyTorch's fused
:func:`torch.nn.functional.scaled_dot_product_attention` (whose ``dropout_p`` is
exactly dropout on the attention probabilities) everywhere except bf16 / fp16 on
a CPU, where it is written out, because there the fused call is slow (see
:func:`attention`); there the model calls it through :func:`qkv_attention`,
which computes the same numbers from the packed projection with fewer passes over
memory. Nothing in the forward pass branches on data, so the module
compiles with ``torch.compile`` and runs under ``torch.autocast(dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dropout import Dropout, fast_dropout, keep_mask, residual_dropout

__all__ = ["ViTEncoder", "attention", "qkv_attention", "vit_train_step_flops"]


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample.

    In training, each sample's branch output is multiplied by ``m / (1 - p)``
    with ``m ~ Bernoulli(1 - p)``, so the expectation is unchanged. The identity
    in evaluation or when ``p == 0``.

    Args:
        p: drop probability in [0, 1).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep


def attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """``Dropout(softmax(Q Kᵀ / sqrt(d_head))) V``: multi-head attention without a mask.

    On a CPU in bf16 or fp16 (under ``torch.autocast`` the projections hand over
    bf16 ``q, k, v``) the formula is written out: ``Q Kᵀ`` and the product with
    ``V`` run in the inputs' dtype, the scaling, softmax and dropout in float32.
    PyTorch's fused call would instead take its math path there (its CPU flash
    kernel has no dropout, and at ``d_head = 32`` is slower than this even without
    dropout), which upcasts ``q, k, v`` to float32 and runs both products in
    float32: measured on an AMD EPYC (AVX-512 BF16, one thread), the attention's
    forward + backward for 2 x 128 images took about half the time written out,
    and the whole bf16 training step of the ViT 18% less. The
    dropout mask is :func:`~spreadcon.models.dropout.keep_mask`'s (the fused
    kernel draws its own, so the two agree in distribution, not mask for mask).
    Everywhere else (float32, any GPU) this is
    :func:`torch.nn.functional.scaled_dot_product_attention`, unchanged.

    Args:
        q, k, v: ``(B, heads, T, d_head)``, one dtype.
        dropout_p: dropout on the attention probabilities (0 in evaluation).

    Returns:
        ``(B, heads, T, d_head)`` in the dtype of ``q``.

    Example:
        >>> q = torch.randn(2, 8, 5, 32)
        >>> out = attention(q.bfloat16(), q.bfloat16(), q.bfloat16())  # the written-out path
        >>> out.dtype, torch.allclose(out.float(), F.scaled_dot_product_attention(q, q, q), atol=0.05)
        (torch.bfloat16, True)
    """
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    logits = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))  # (B, heads, T, T), fp32 accumulation
    probs = logits.softmax(dim=-1)  # in q's dtype, computed in float32 and rounded once
    if dropout_p == 0.0:
        return torch.matmul(probs, v)
    if not fast_dropout(probs):
        return torch.matmul(F.dropout(probs, p=dropout_p, training=True), v)
    mask, scale = keep_mask(probs.shape, dropout_p, probs.dtype)  # 0/1, and 1 / (1 - p)
    return torch.matmul(probs * mask, v).mul_(scale)  # the scale on the (T x d_head) output, not the (T x T) probs


def qkv_attention(qkv: Tensor, heads: int, dropout_p: float = 0.0) -> Tensor:
    """Multi-head attention from the packed projection ``qkv = W_qkv h``: :func:`attention` of its
    three thirds, split into heads, with the heads joined again for ``W_o``.

    On a CPU in bf16 (outside ``torch.compile`` and :func:`~spreadcon.models.dropout.torch_dropout`)
    this is one autograd function, :class:`_PackedAttention`, that computes exactly what
    :func:`attention` computes (the same products, softmax and dropout mask, so bit for bit the same
    output and gradients for the same seed) but moves each tensor between the token-major layout of the
    projections and the head-major layout of the products once, in a pass that also applies a scale
    (``1/sqrt(d_head)`` on ``q``, ``1/(1 - p)`` on the output), and writes the gradients of ``q, k, v``
    straight into the packed gradient. Through autograd's views the same step took a scaling pass,
    three layout copies and a stack in each direction: about 3% of the bf16 ViT training step
    (AMD EPYC, one thread). Everywhere else it is :func:`attention` on the split views; that includes
    fp16 on a CPU, where the half-precision GEMM's summation order depends on the operands' layout, so
    the packed products would agree with :func:`attention` only to rounding (training never picks
    fp16 on a CPU). The backward is first-order only: a double backward raises.

    Args:
        qkv: ``(B, T, 3 * dim)``, the query, key and value projections side by side.
        heads: number of heads; ``dim`` must be divisible by it.
        dropout_p: dropout on the attention probabilities (0 in evaluation).

    Returns:
        ``(B, T, dim)``: each token's heads side by side, in the dtype of ``qkv``.

    Example:
        >>> qkv = torch.randn(2, 5, 3 * 64).bfloat16()
        >>> q, k, v = qkv.view(2, 5, 3, 4, 16).permute(2, 0, 3, 1, 4)
        >>> ref = attention(q, k, v).transpose(1, 2).reshape(2, 5, 64)
        >>> torch.equal(qkv_attention(qkv, heads=4), ref)
        True
    """
    b, t, three_d = qkv.shape
    if three_d % (3 * heads):
        raise ValueError(f"qkv's last dimension {three_d} must be 3 * heads * d_head (heads={heads})")
    if _packed_path(qkv):
        return _PackedAttention.apply(qkv, heads, float(dropout_p))
    q, k, v = qkv.reshape(b, t, 3, heads, three_d // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    return attention(q, k, v, dropout_p=dropout_p).transpose(1, 2).reshape(b, t, three_d // 3)


def _packed_path(x: Tensor) -> bool:
    """Whether :func:`qkv_attention` takes :class:`_PackedAttention`: a CPU, bf16, eager mode with this
    module's dropout (the written-out branch of :func:`attention`, in one function)."""
    return x.dtype == torch.bfloat16 and fast_dropout(x)


class _PackedAttention(torch.autograd.Function):
    """:func:`attention` on the packed ``qkv`` (see :func:`qkv_attention`), with its backward written out.

    With ``s = d_head**-0.5``, ``P = softmax((s q) kᵀ)``, ``M`` the keep mask and ``c = 1/(1 - p')``:
    ``out = c (P ∘ M) v``. Backward, for the output gradient ``g``: ``dv = (P ∘ M)ᵀ (c g)``,
    ``dP = ((c g) vᵀ) ∘ M``, ``dL = softmax_backward(dP, P)``, ``dq = s dL k`` and ``dk = dLᵀ (s q)``:
    the products autograd would run, in the same dtypes.
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, heads: int, dropout_p: float) -> Tensor:
        b, t, three_d = qkv.shape
        d_head = three_d // (3 * heads)
        s = d_head**-0.5
        split = qkv.view(b, t, 3, heads, d_head).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, d_head), a view
        qkv_h = torch.empty((3, b, heads, t, d_head), dtype=qkv.dtype, device=qkv.device)
        torch.mul(split[0], s, out=qkv_h[0])  # s q, rounded once, as attention() scales q
        qkv_h[1:].copy_(split[1:])
        q, k, v = (u.view(b * heads, t, d_head) for u in qkv_h.unbind(0))
        probs = torch.bmm(q, k.transpose(1, 2)).softmax(dim=-1)  # in qkv's dtype, computed in float32
        if dropout_p > 0.0:
            mask, scale = keep_mask(probs.shape, dropout_p, probs.dtype)
            kept = probs * mask
        else:
            mask, scale, kept = None, 1.0, probs
        out = torch.empty((b, t, heads, d_head), dtype=qkv.dtype, device=qkv.device)
        heads_major = torch.bmm(kept, v).view(b, heads, t, d_head).transpose(1, 2)
        if scale != 1.0:
            torch.mul(heads_major, scale, out=out)
        else:
            out.copy_(heads_major)
        ctx.save_for_backward(qkv_h, probs, kept, *(() if mask is None else (mask,)))
        ctx.dims = (b, t, heads, d_head, s, scale)
        return out.view(b, t, heads * d_head)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        qkv_h, probs, kept, *mask = ctx.saved_tensors
        b, t, heads, d_head, s, scale = ctx.dims
        q, k, v = (u.view(b * heads, t, d_head) for u in qkv_h.unbind(0))
        g = torch.empty((b, heads, t, d_head), dtype=grad.dtype, device=grad.device)
        g_tokens = grad.reshape(b, t, heads, d_head).transpose(1, 2)  # any strides (an expanded sum() gradient)
        if scale != 1.0:
            torch.mul(g_tokens, scale, out=g)
        else:
            g.copy_(g_tokens)
        g = g.view(b * heads, t, d_head)
        packed = torch.empty((b, t, 3, heads, d_head), dtype=grad.dtype, device=grad.device)
        dq, dk, dv = packed.permute(2, 0, 3, 1, 4).unbind(0)  # views into the packed gradient
        dv.copy_(torch.bmm(kept.transpose(1, 2), g).view(b, heads, t, d_head))
        d_probs = torch.bmm(g, v.transpose(1, 2))
        if mask:
            d_probs.mul_(mask[0])
        d_logits = torch._softmax_backward_data(d_probs, probs, -1, probs.dtype)
        torch.mul(torch.bmm(d_logits, k).view(b, heads, t, d_head), s, out=dq)
        dk.copy_(torch.bmm(d_logits.transpose(1, 2), q).view(b, heads, t, d_head))
        return packed.view(b, t, 3 * heads * d_head), None, None


class Attention(nn.Module):
    """Multi-head self-attention through :func:`qkv_attention`.

    Args:
        dim: token width.
        heads: number of heads; ``dim`` must be divisible by it.
        attn_dropout: dropout on the attention probabilities (training only).
        proj_dropout: dropout on the output projection; :class:`Block` applies it together with the
            residual sum (:func:`spreadcon.models.dropout.residual_dropout`), so ``forward`` leaves it out.
    """

    def __init__(self, dim: int, heads: int, attn_dropout: float, proj_dropout: float) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = float(attn_dropout)
        self.proj_dropout = float(proj_dropout)  # applied by the block, with its residual (residual_dropout)

    def forward(self, x: Tensor) -> Tensor:
        p = self.attn_dropout if self.training else 0.0
        return self.proj(qkv_attention(self.qkv(x), self.heads, dropout_p=p))


class Block(nn.Module):
    """One pre-norm transformer block (attention + MLP, each residual)."""

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, dropout: float, attn_dropout: float, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attn_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(mlp_dim, dim),
        )
        self.mlp_dropout = float(dropout)  # on the MLP's output, applied with the residual
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        path_p = self.drop_path.p
        x = residual_dropout(x, self.attn(self.norm1(x)), self.attn.proj_dropout, path_p, self.training)
        return residual_dropout(x, self.mlp(self.norm2(x)), self.mlp_dropout, path_p, self.training)


class ViTEncoder(nn.Module):
    """The paper's ViT encoder; returns the final-LayerNorm CLS token.

    Args:
        image_shape: ``(C, H, W)`` of the input; ``H`` and ``W`` must be
            divisible by ``patch_size``.
        patch_size: side of the square patches (4).
        dim: token width and embedding size (256).
        depth: number of transformer blocks (7).
        heads: attention heads (8).
        mlp_dim: hidden width of each block's MLP (512).
        dropout: dropout on embeddings, attention output and MLP (0.05).
        attn_dropout: dropout on attention probabilities (0.1).
        drop_path: stochastic-depth rate of the last block; block ``i`` uses
            ``drop_path * i / (depth - 1)`` (0.05).

    Shapes:
        input ``(B, C, H, W)`` float (normalised images); output ``(B, dim)``.

    Example:
        >>> enc = ViTEncoder((3, 32, 32))
        >>> enc(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 256])
        >>> enc.num_patches
        64
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        *,
        patch_size: int = 4,
        dim: int = 256,
        depth: int = 7,
        heads: int = 8,
        mlp_dim: int = 512,
        dropout: float = 0.05,
        attn_dropout: float = 0.1,
        drop_path: float = 0.05,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if patch_size < 1 or h % patch_size or w % patch_size:
            raise ValueError(
                f"image_shape={tuple(image_shape)} must have H and W divisible by patch_size={patch_size}"
            )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        self.image_shape = (c, h, w)
        self.patch_size = patch_size
        self.num_patches = (h // patch_size) * (w // patch_size)
        self.out_dim = dim

        self.patch_embed = nn.Conv2d(c, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim))
        self.embed_drop = Dropout(dropout)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_dim, dropout, attn_dropout, r) for r in rates
        )
        self.norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) weights, zero biases, unit LayerNorm gains."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        fan_in = self.patch_embed.in_channels * self.patch_size**2
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.patch_embed.bias)

    def tokens(self, x: Tensor) -> Tensor:
        """All final-normed tokens ``(B, 1 + num_patches, dim)``; index 0 is CLS."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, P, dim)
        x = self.patch_norm(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.embed_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (B, {self.image_shape}), got {tuple(x.shape)}")
        return self.tokens(x)[:, 0]


def vit_train_step_flops(
    batch: int = 256, image_shape: tuple[int, int, int] = (3, 32, 32), **overrides
) -> int:
    """FLOPs of one forward + backward pass of the ViT encoder.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the
    ``meta`` device (no memory, no compute), with the backward of
    ``out.sum()``. The counter covers matmuls, convolutions and attention
    (2 FLOPs per multiply-add); element-wise work (LayerNorm, GELU, softmax,
    dropout) is not counted, which is the usual convention for "model FLOPs".
    The loss head and optimiser are not included.

    Args:
        batch: number of images in the step, all views included (the paper's
            128 images × 2 views is 256).
        image_shape: ``(C, H, W)``.
        **overrides: keyword arguments for :class:`ViTEncoder`.

    Returns:
        Total FLOPs (int).

    Example:
        >>> vit_train_step_flops(batch=2) > 0
        True
    """
    from torch.utils.flop_counter import FlopCounterMode

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch!r}")
    with torch.device("meta"):
        model = ViTEncoder(tuple(image_shape), **overrides)
        x = torch.empty(batch, *image_shape)
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return int(counter.get_total_flops())
