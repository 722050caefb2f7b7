"""spreadcon.models.dropout: the bulk-bits dropout mask is Bernoulli(1 - p') per element with
p' = round(p * 2**16) / 2**16, independent, scaled by 1 / (1 - p'), reproducible from a seed, and the
identity in evaluation and at p = 0; the ViT built on it matches the model it replaced there."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spreadcon.models import build_encoder
from spreadcon.models import vit
from spreadcon.models.dropout import (
    Dropout, _MaskScale, _ResidualMaskScale, drop_threshold, dropout, keep_mask, random_words, residual_dropout,
    torch_dropout,
)

N = 1 << 20  # elements per mask in the statistical tests
Z = 5.0  # standard errors allowed: a false alarm about once in 3.5 million runs per check


def _bound(q: float, n: int) -> float:
    return Z * math.sqrt(max(q * (1 - q), 1e-12) / n) + 1e-12


@pytest.mark.parametrize("p", [0.0, 0.05, 0.1, 0.3, 0.5, 0.9])
def test_threshold_is_p_to_within_2_to_the_minus_17(p):
    t = drop_threshold(p)
    assert t == round(p * 65536) and abs(t / 65536 - p) <= 2**-17
    assert (t / 65536 == p) == (p in (0.0, 0.5))  # 0.05, 0.1, 0.3, 0.9 are not multiples of 2**-16


@pytest.mark.parametrize("p", [0.0, 0.05, 0.1, 0.3, 0.5, 0.9])
def test_keep_rate_is_within_binomial_bounds(p):
    g = torch.Generator().manual_seed(1)
    mask, scale = keep_mask((N,), p, torch.float32, g)
    q = 1 - drop_threshold(p) / 65536  # the keep probability
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs(mask.mean().item() - q) <= _bound(q, N)
    assert scale == pytest.approx(1 / q, rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_kept_elements_are_scaled_by_one_over_keep_rate_and_the_rest_are_zero(p, dtype):
    x = (torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    y = dropout(x, p, generator=torch.Generator().manual_seed(2))
    assert y.dtype == dtype
    mask, _ = keep_mask(x.shape, p, torch.float32, torch.Generator().manual_seed(2))  # the same bits
    q = 1 - drop_threshold(p) / 65536
    # 1/(1-p') applied in float32 (not rounded to bf16 first), the product rounded once to dtype
    expected = (x.float() * torch.tensor(1 / q, dtype=torch.float32)).to(dtype)
    torch.testing.assert_close(expected.double(), x.double() / q, rtol=torch.finfo(dtype).eps, atol=0)
    assert torch.equal(y[mask == 0], torch.zeros_like(y[mask == 0]))
    assert torch.equal(y[mask == 1], expected[mask == 1])
    assert 0 < (mask == 0).sum() < x.numel()


def test_mean_is_preserved():
    """E[dropout(x)] = x: the mean of many dropped-out copies of a constant is the constant."""
    x = torch.full((N,), 2.0)
    y = dropout(x, 0.1, generator=torch.Generator().manual_seed(3))
    q = 1 - drop_threshold(0.1) / 65536
    assert abs(y.mean().item() - 2.0) <= 2.0 / q * _bound(q, N)


@pytest.mark.parametrize("lag", [1, 2, 3, 4, 5, 8, 64])
def test_elements_are_uncorrelated(lag):
    """Lags 1-3 compare lanes of one 64-bit word, 4 and up lanes of different words."""
    mask, _ = keep_mask((N,), 0.3, torch.float64, torch.Generator().manual_seed(4))
    a, b = mask[:-lag], mask[lag:]
    corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(corr.item()) <= Z / math.sqrt(N - lag)


def test_consecutive_calls_are_independent():
    g = torch.Generator().manual_seed(5)
    a = keep_mask((N,), 0.5, torch.float64, g)[0]
    b = keep_mask((N,), 0.5, torch.float64, g)[0]
    assert not torch.equal(a, b)
    corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(corr.item()) <= Z / math.sqrt(N)
    both = (a * b).mean().item()  # P(kept in both) = 1/4
    assert abs(both - 0.25) <= _bound(0.25, N)


def test_random_words_have_every_bit_uniform_and_follow_torchs_seed():
    """Each of the 64 bit positions is set in half the words (binomial bounds, 200,000 words); the same
    torch seed gives the same words, the next call other words."""
    words = random_words(200_000, torch.Generator().manual_seed(31))
    bits = (words.unsqueeze(1) >> torch.arange(64)) & 1
    freq = bits.double().mean(0)
    assert words.dtype == torch.int64 and ((freq - 0.5).abs() < 5 * 0.5 / 200_000**0.5).all()
    g = torch.Generator().manual_seed(31)
    assert torch.equal(random_words(200_000, g), words) and not torch.equal(random_words(200_000, g), words)
    torch.manual_seed(32)
    a = random_words(10)
    torch.manual_seed(32)
    assert torch.equal(random_words(10), a)


def test_odd_sizes_and_shapes():
    """A size that is not a multiple of four lanes, and a 4-d shape: every element gets its own bits."""
    for shape in [(1,), (3,), (7, 5), (2, 3, 5, 7)]:
        mask, _ = keep_mask(shape, 0.5, torch.float32, torch.Generator().manual_seed(6))
        assert mask.shape == torch.Size(shape)
    mask, _ = keep_mask((N + 3,), 0.5, torch.float32, torch.Generator().manual_seed(6))
    assert abs(mask.mean().item() - 0.5) <= _bound(0.5, N)


def test_seeded_generators_and_the_global_seed_reproduce_the_mask():
    x = torch.randn(1000)
    a = dropout(x, 0.2, generator=torch.Generator().manual_seed(7))
    b = dropout(x, 0.2, generator=torch.Generator().manual_seed(7))
    c = dropout(x, 0.2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(9)
    d = dropout(x, 0.2)
    torch.manual_seed(9)
    assert torch.equal(d, dropout(x, 0.2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identity_at_p_zero_in_evaluation_and_below_the_resolution(dtype):
    x = torch.randn(100).to(dtype)
    assert dropout(x, 0.0) is x and dropout(x, 0.5, training=False) is x
    assert dropout(x, 2**-18) is x  # rounds to threshold 0: never dropped, scale 1
    m = Dropout(0.3).eval()
    assert m(x) is x and torch.equal(Dropout(0.0).train()(x), x)
    h = torch.randn(100).to(dtype)
    assert torch.equal(residual_dropout(x, h, 0.3, 0.2, training=False), x + h)
    assert torch.equal(residual_dropout(x, h, 0.0, 0.0), x + h)


def test_p_one_drops_everything_and_bad_p_raises():
    assert torch.equal(dropout(torch.ones(10), 1.0), torch.zeros(10))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            dropout(torch.ones(3), bad)
    with pytest.raises(ValueError):
        Dropout(1.0)
    with pytest.raises(ValueError):
        residual_dropout(torch.ones(2, 3), torch.ones(2, 3), 0.1, 1.0)


def test_mask_scale_gradients_match_autograd_of_the_product():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(6, 5, generator=g) > 0.3).double()
    assert torch.autograd.gradcheck(lambda t: _MaskScale.apply(t, mask, 1.7), (x,))
    r = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _ResidualMaskScale.apply(a, b, mask, 1.3), (r, x))


def test_residual_gradient_comes_back_in_the_branch_dtype():
    """The bf16 branch of an autocast step gets a bf16 gradient equal to g * mask * scale rounded once."""
    x = torch.randn(4, 3, 8, requires_grad=True)
    h = torch.randn(4, 3, 8, dtype=torch.bfloat16, requires_grad=True)
    mask = (torch.rand(4, 3, 8) > 0.5).bfloat16()
    out = _ResidualMaskScale.apply(x, h, mask, 1.25)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x + h.float() * mask.float() * 1.25, rtol=0, atol=1e-6)
    grad = torch.randn(4, 3, 8)
    out.backward(grad)
    assert h.grad.dtype == torch.bfloat16 and torch.equal(x.grad, grad)
    assert torch.equal(h.grad, (grad.double() * mask.double() * 1.25).bfloat16())


def test_residual_dropout_is_elementwise_dropout_times_a_per_sample_drop_path():
    """With the same seed: the element mask is keep_mask's, then each sample's branch is kept whole or
    dropped whole (Bernoulli(1 - path_p)), and the kept values are scaled by 1/(1-p') / (1-path_p)."""
    x, h = torch.zeros(64, 5, 7), torch.ones(64, 5, 7)
    torch.manual_seed(11)
    out = residual_dropout(x, h, 0.1, 0.25)
    torch.manual_seed(11)
    mask, scale = keep_mask(h.shape, 0.1, h.dtype)
    sample = torch.empty(64, 1, 1).bernoulli_(0.75)
    assert torch.equal(out, mask * sample * (scale / 0.75))
    kept = out.flatten(1).amax(1) > 0
    assert torch.equal(kept, sample.flatten() > 0) and 0 < kept.sum() < 64


# ------------------------------------------------------------------ the ViT on top of it


def _reference_tokens(enc, x):
    """ViTEncoder.tokens written from torch.nn.functional as the model computed it before the dropout
    change, for evaluation or p = 0 (every dropout the identity): pre-norm blocks, attention through
    vit.attention, residual sums in the stream's dtype."""
    d = enc.out_dim
    h = enc.patch_norm(enc.patch_embed(x).flatten(2).transpose(1, 2))
    h = torch.cat([enc.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + enc.pos_embed
    for blk in enc.blocks:
        a = F.layer_norm(h, (d,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        b, t, _ = a.shape
        qkv = F.linear(a, blk.attn.qkv.weight, blk.attn.qkv.bias)
        q, k, v = qkv.reshape(b, t, 3, blk.attn.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        o = vit.attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        h = h + F.linear(o, blk.attn.proj.weight, blk.attn.proj.bias)
        m = F.layer_norm(h, (d,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        fc1, fc2 = blk.mlp[0], blk.mlp[3]
        h = h + F.linear(F.gelu(F.linear(m, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    return enc.norm(h)


@pytest.mark.parametrize("amp", [False, True])
def test_vit_without_dropout_equals_the_reference_bit_for_bit(amp):
    """Evaluation mode, and training mode with every rate 0, give exactly the reference forward."""
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    enc = build_encoder("vit", image_shape=(3, 16, 16), depth=2)
    zero = build_encoder("vit", image_shape=(3, 16, 16), depth=2, dropout=0.0, attn_dropout=0.0, drop_path=0.0)
    zero.load_state_dict(enc.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        ref = _reference_tokens(enc, x)
        assert torch.equal(enc.eval().tokens(x), ref)
        assert torch.equal(zero.train().tokens(x), ref)


def test_vit_state_dict_keys_are_unchanged():
    """Moving the dropouts into the residual sums adds and removes no parameter (old checkpoints load)."""
    keys = set(build_encoder("vit", image_shape=(3, 8, 8), depth=1).state_dict())
    expected = {"cls_token", "pos_embed", "patch_embed.weight", "patch_embed.bias", "patch_norm.weight",
                "patch_norm.bias", "norm.weight", "norm.bias"} | {
        f"blocks.0.{m}.{w}" for m in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.0", "mlp.3")
        for w in ("weight", "bias")}
    assert keys == expected


def test_bf16_attention_dropout_is_the_keep_mask_on_the_probabilities():
    """attention(q, k, v, p) on a CPU in bf16 = (softmax(q/sqrt(d) kᵀ) * mask) v / (1 - p'), mask drawn
    from the global generator by keep_mask."""
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(2, 4, 9, 8, generator=g).bfloat16() for _ in range(3))
    torch.manual_seed(13)
    out = vit.attention(q, k, v, dropout_p=0.1)
    torch.manual_seed(13)
    mask, scale = keep_mask((2, 4, 9, 9), 0.1, torch.bfloat16)
    probs = torch.matmul(q * 8**-0.5, k.transpose(-2, -1)).softmax(-1)
    assert torch.equal(out, torch.matmul(probs * mask, v).mul_(scale))
    assert 0 < (mask == 0).sum() < mask.numel()


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("b,t,heads,d_head,strided", [(3, 11, 4, 8, False), (16, 65, 8, 32, False),
                                                      (2, 1, 1, 16, False), (4, 33, 1, 32, True)])
def test_packed_attention_is_attention_of_the_split_views_bit_for_bit(p, b, t, heads, d_head, strided):
    """qkv_attention on a CPU in bf16 (one autograd function, its backward written out) gives exactly
    the output and the qkv gradient that autograd gives through attention() on the split, permuted
    views, for the same seed: same mask, same products, same roundings. Shapes include the CIFAR ViT's
    (T = 65, d_head = 32, 8 heads), one token, one head, and a non-contiguous qkv."""
    g = torch.Generator().manual_seed(21)
    width = heads * d_head
    qkv64 = torch.randn(t, b, 3 * width, generator=g, dtype=torch.float64).transpose(0, 1) if strided else \
        torch.randn(b, t, 3 * width, generator=g, dtype=torch.float64)
    w = torch.randn(b, t, width, generator=g).bfloat16()

    def through(packed):
        qkv = qkv64.bfloat16().requires_grad_(True)
        torch.manual_seed(22)
        if packed:
            out = vit.qkv_attention(qkv, heads=heads, dropout_p=p)
        else:
            q, k, v = qkv.reshape(b, t, 3, heads, d_head).permute(2, 0, 3, 1, 4).unbind(0)
            out = vit.attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(b, t, width)
        (out * w).sum().backward()
        return out, qkv.grad

    assert vit._packed_path(qkv64.bfloat16()) and not vit._packed_path(qkv64.half())
    for packed, split in zip(through(True), through(False)):
        assert packed.dtype == torch.bfloat16 and torch.equal(packed, split)


def test_packed_attention_takes_an_output_gradient_of_any_layout():
    """An expanded gradient (out.sum()) and a transposed one give the split path's qkv gradient."""
    qkv64 = torch.randn(3, 7, 3 * 32, dtype=torch.float64)

    def grad_of(packed, loss):
        qkv = qkv64.bfloat16().requires_grad_(True)
        if packed:
            out = vit.qkv_attention(qkv, heads=2)
        else:
            q, k, v = qkv.view(3, 7, 3, 2, 16).permute(2, 0, 3, 1, 4).unbind(0)
            out = vit.attention(q, k, v).transpose(1, 2).reshape(3, 7, 32)
        loss(out).backward()
        return qkv.grad

    w = torch.randn(7, 3, 32).bfloat16()
    for loss in (lambda o: o.sum(), lambda o: (o.transpose(0, 1) * w).sum()):
        assert torch.equal(grad_of(True, loss), grad_of(False, loss))


def test_packed_attention_refuses_a_double_backward():
    """The written-out backward is first order: asking for a graph of it raises instead of silently
    dropping the second-order terms through q, k and v."""
    qkv = torch.randn(2, 5, 3 * 16).bfloat16().requires_grad_(True)
    (grad,) = torch.autograd.grad(vit.qkv_attention(qkv, heads=2).float().pow(2).sum(), qkv, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.float().sum().backward()


def test_packed_attention_gradient_matches_float64_autograd():
    """The written-out backward against autograd of the plain formula in float64 (dropout off, so both
    compute the same function): within bf16 rounding of the gradient's size."""
    g = torch.Generator().manual_seed(23)
    qkv64 = torch.randn(2, 9, 3 * 2 * 16, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(2, 9, 32, generator=g, dtype=torch.float64)
    q, k, v = qkv64.view(2, 9, 3, 2, 16).permute(2, 0, 3, 1, 4).unbind(0)
    exact = (torch.softmax(q @ k.transpose(-2, -1) / 4.0, -1) @ v).transpose(1, 2).reshape(2, 9, 32)
    (exact * w).sum().backward()
    qkv = qkv64.detach().bfloat16().requires_grad_(True)
    out = vit.qkv_attention(qkv, heads=2)
    (out.double() * w).sum().backward()
    assert ((out.double() - exact).norm() / exact.norm()).item() < 0.02
    assert ((qkv.grad.double() - qkv64.grad).norm() / qkv64.grad.norm()).item() < 0.03


def test_packed_attention_outside_the_cpu_half_path_is_attention_and_checks_its_width():
    """In float32 (and under torch_dropout) qkv_attention is attention() on the split views; a packed
    width that is not 3 * heads * d_head is refused."""
    qkv = torch.randn(2, 5, 3 * 16)
    assert not vit._packed_path(qkv)
    q, k, v = qkv.view(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
    assert torch.equal(vit.qkv_attention(qkv, heads=2), vit.attention(q, k, v).transpose(1, 2).reshape(2, 5, 16))
    with torch_dropout():
        assert not vit._packed_path(qkv.bfloat16())
    with pytest.raises(ValueError, match="3 \\* heads"):
        vit.qkv_attention(torch.randn(2, 5, 40), heads=3)


def test_bf16_attention_is_as_accurate_as_the_float32_softmax_it_replaced():
    """Against float64, the bf16 attention (scale on q, softmax rounded to bf16) errs about as much as
    the previous one (softmax of float32 logits, rounded to bf16 for the product with V): within 1.5x,
    forward and gradients."""
    g = torch.Generator().manual_seed(14)
    q64, k64, v64 = (torch.randn(4, 8, 65, 32, generator=g, dtype=torch.float64) * 1.5 for _ in range(3))

    def previous(q, k, v):
        probs = torch.matmul(q, k.transpose(-2, -1)).float().mul_(q.shape[-1] ** -0.5).softmax(-1)
        return torch.matmul(probs.to(v.dtype), v)

    def exact(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v

    w = torch.randn(4, 8, 65, 32, generator=g, dtype=torch.float64)
    results = {}
    for name, fn, dtype in (("new", vit.attention, torch.bfloat16), ("old", previous, torch.bfloat16),
                            ("exact", exact, torch.float64)):
        args = [t.to(dtype).requires_grad_(True) for t in (q64, k64, v64)]
        out = fn(*args)
        (out.double() * w).sum().backward()
        results[name] = [out.double()] + [a.grad.double() for a in args]
    for new, old, ex in zip(results["new"], results["old"], results["exact"]):
        err_new, err_old = ((new - ex).norm() / ex.norm()).item(), ((old - ex).norm() / ex.norm()).item()
        assert err_new < 0.02 and err_new <= 1.5 * err_old


def test_torch_dropout_switches_every_dropout_to_pytorchs_own_and_back():
    """The bench's reference: inside torch_dropout() the values are F.dropout's for the same seed, and
    the drop-path residual is x + DropPath(F.dropout(h)) as the modules computed it."""
    x, h = torch.randn(8, 5, 16), torch.randn(8, 5, 16)
    with torch_dropout():
        torch.manual_seed(15)
        a = dropout(x, 0.3)
        r = residual_dropout(x, h, 0.2, 0.5)
    torch.manual_seed(15)
    assert torch.equal(a, F.dropout(x, 0.3))
    hd = F.dropout(h, 0.2)
    assert torch.equal(r, x + hd * torch.empty(8, 1, 1).bernoulli_(0.5) / 0.5)
    torch.manual_seed(15)
    assert not torch.equal(dropout(x, 0.3), a)  # the switch is off again
