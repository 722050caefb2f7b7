"""Batched two-view augmentation on tensors (CPU or GPU).

The pipeline is the paper's (SimCLR / SupCon) one, applied independently to
every view of every image:

1. ``RandomResizedCrop(scale=(0.2, 1), ratio=(3/4, 4/3))``: the crop box is
   drawn with torchvision's rule (up to 10 tries of area ~ U(scale)·H·W and
   log-aspect ~ U(log ratio), first box that fits; else a centre crop), and
   resampled bilinearly (``align_corners=False``) to the output size;
2. horizontal flip with p = 0.5;
3. ``ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)`` with
   p = 0.8, each image with its own factors and its own random order of the
   four operations (as torchvision does);
4. grayscale with p = 0.2 (off for MNIST: ``grayscale=False``);
5. normalisation ``(x - mean) / std``.

Every random choice is a per-image tensor drawn from ``generator``, so one call
does the whole batch in a handful of kernels: one ``affine_grid`` +
``grid_sample`` for the crops and flips, masked blends for the colour ops.
The maths follows torchvision's float-tensor transforms (grey =
0.2989 R + 0.587 G + 0.114 B, HSV hue shift), so the output matches per-image
torchvision in distribution; ``tests/test_augment.py`` checks both the
deterministic ops and the distribution.

Example:
    >>> aug = TwoViewAugment(image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> aug(x).shape
    torch.Size([8, 2, 3, 32, 32])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's float rgb_to_grayscale


# --------------------------------------------------------------------------- crops


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """RandomResizedCrop boxes for ``n`` images, torchvision's rule, vectorised.

    Returns:
        int64 ``(n, 4)``: ``top, left, h, w`` in pixels.
    """
    device = generator.device if generator is not None else (device or "cpu")
    area = height * width
    tries = 10
    u_area = torch.rand(n, tries, generator=generator, device=device)
    u_ratio = torch.rand(n, tries, generator=generator, device=device)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u_ratio)
    w = torch.sqrt(target * aspect).round().long()
    h = torch.sqrt(target / aspect).round().long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.int().argmax(1, keepdim=True)  # index of the first box that fits
    any_ok = ok.any(1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # fallback: centre crop with the aspect clamped into `ratio`
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    u_i, u_j = torch.rand(2, n, generator=generator, device=device)
    top = (u_i * (height - h + 1)).floor().long().clamp_max(height - h)
    left = (u_j * (width - w + 1)).floor().long().clamp_max(width - w)
    top = torch.where(any_ok, top, (height - h) // 2)
    left = torch.where(any_ok, left, (width - w) // 2)
    return torch.stack([top, left, h, w], 1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image to its box and resize it bilinearly, flipping where asked.

    Output pixel ``u`` of a crop ``(left, w)`` samples source column
    ``left + clamp((u + 0.5) w / W_out - 0.5, 0, w - 1)`` (rows likewise): the
    grid of ``torchvision.transforms.functional.resized_crop`` on a float
    tensor (``F.interpolate``, ``align_corners=False``, no antialiasing, which
    matters only when shrinking; crops are never larger than the image). All
    images are resampled by one ``grid_sample`` call.

    Args:
        x: float ``(N, C, H, W)``.
        boxes: ``(N, 4)`` ``top, left, h, w`` in pixels.
        size: ``(H_out, W_out)``.
        flip: bool ``(N,)``, mirror horizontally.

    Returns:
        float ``(N, C, H_out, W_out)``.
    """
    n, _, height, width = x.shape
    b = boxes.to(device=x.device, dtype=x.dtype)
    top, left, h, w = (t.unsqueeze(1) for t in b.unbind(1))

    def axis(start, length, n_out, n_in):
        u = torch.arange(n_out, device=x.device, dtype=x.dtype).unsqueeze(0) + 0.5
        src = (u * length / n_out - 0.5).clamp(min=0)
        src = torch.minimum(src, length - 1) + start
        return (2 * src + 1) / n_in - 1  # grid_sample's normalised coordinate (align_corners=False)

    gx = axis(left, w, size[1], width)  # (N, W_out)
    gy = axis(top, h, size[0], height)  # (N, H_out)
    if flip is not None:
        gx = torch.where(flip.to(x.device).unsqueeze(1), gx.flip(1), gx)
    grid = torch.stack(torch.broadcast_tensors(gx.unsqueeze(1), gy.unsqueeze(2)), -1)  # (N, H_out, W_out, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------- colour


def _per_image(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return f.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """float ``(N, 3, H, W)`` → ``(N, 1, H, W)``: 0.2989 R + 0.587 G + 0.114 B."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


# In-place colour ops on float images in [0, 1], one factor per image. Each is
# torchvision's ``_blend(x, other, f) = clamp(f x + (1 - f) other, 0, 1)``
# with ``other`` = black (brightness), the mean grey level (contrast) or the
# grey image (saturation), written as one ``lerp_`` plus one ``clamp_``.


def _brightness_(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return x.mul_(_per_image(f, x)).clamp_(0, 1)


def _contrast_(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return x.lerp_(mean.expand_as(x), 1 - _per_image(f, x)).clamp_(0, 1)


def _saturation_(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return x.lerp_(rgb_to_grayscale(x).expand_as(x), 1 - _per_image(f, x)).clamp_(0, 1)


def _hue_(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``f`` turns. V = max and V·S = max - min are unchanged, so
    channel n of (R, G, B) is ``max - (max - min) clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h') mod 6`` for n = 5, 3, 1 and the new hue h'."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    maxc, argmax = x.max(1)
    delta = maxc - x.min(1).values
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    # hue in sixths of a turn, by which channel is the maximum (ties: R, then G, then B, as torchvision)
    h6 = torch.where(argmax == 0, (g - b) / safe, torch.where(argmax == 1, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h6 = torch.where(delta == 0, torch.zeros_like(h6), h6)
    h6 = h6.add_(6.0 * _per_image(f, x)[:, 0]).unsqueeze(1)
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # 5, 3, 1 (no host copy)
    k = torch.remainder(h6 + n, 6.0)
    amount = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return x.copy_(maxc.unsqueeze(1) - delta.unsqueeze(1) * amount).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(f x, 0, 1)`` per image; ``x`` float in [0, 1] ``(N, C, H, W)``, ``factor`` ``(N,)``."""
    return _brightness_(x.clone(), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(f x + (1 - f) mean(grey(x)), 0, 1)`` per image."""
    return _contrast_(x.clone(), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(f x + (1 - f) grey(x), 0, 1)`` per image; identity for 1-channel images."""
    return _saturation_(x.clone(), factor)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``factor`` (in turns, |f| <= 0.5) per image; identity for 1-channel images."""
    return _hue_(x.clone(), factor)


COLOR_OPS = (_brightness_, _contrast_, _saturation_, _hue_)  # op ids 0..3 = brightness, contrast, saturation, hue


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor,
                 sync_free: bool | None = None) -> torch.Tensor:
    """Apply the four colour ops to the images where ``apply``, each image in its own order.

    Two implementations, equal up to float rounding (tested):

    * grouped (``sync_free=False``): the jittered images are gathered once,
      sorted by their order (one of 24 permutations), processed in place as
      contiguous slices, and scattered back. Least arithmetic, but the group
      sizes are read on the host: one device sync per call.
    * masked (``sync_free=True``): for each of the 4 positions in the order,
      every op runs on the whole batch and ``torch.where`` keeps it for the
      images whose op at that position it is. 4x the arithmetic, no sync, so
      the GPU never waits for the host.

    ``sync_free=None`` picks masked on accelerators and grouped on the CPU.

    Args:
        x: float ``(N, C, H, W)`` in [0, 1].
        factors: ``(N, 4)``: brightness, contrast, saturation, hue factors.
        order: int ``(N, 4)``: a permutation of ``0..3`` per image (op ids as
            in :data:`COLOR_OPS`).
        apply: bool ``(N,)``.

    Returns:
        a new float ``(N, C, H, W)`` tensor.
    """
    apply = apply.to(x.device)
    order = order.to(x.device)
    factors = factors.to(x.device)
    if sync_free is None:
        sync_free = x.device.type != "cpu"
    if sync_free:
        return _color_jitter_masked(x, factors, order, apply)
    out = x.clone()
    code = order[:, 0] * 64 + order[:, 1] * 16 + order[:, 2] * 4 + order[:, 3]
    code = torch.where(apply, code, torch.full_like(code, -1))
    sorted_code, perm = code.sort()
    perm = perm[sorted_code >= 0]
    if len(perm) == 0:
        return out
    sorted_code = sorted_code[sorted_code >= 0]
    sub, sub_f, sub_order = out[perm], factors[perm], order[perm]
    _, counts = torch.unique_consecutive(sorted_code, return_counts=True)
    start = 0
    for count in counts.tolist():
        sl = slice(start, start + count)
        for op_id in sub_order[start].tolist():
            COLOR_OPS[op_id](sub[sl], sub_f[sl, op_id])
        start += count
    out[perm] = sub
    return out


def _color_jitter_masked(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                         apply: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    for k in range(order.shape[1]):
        for op_id, op in enumerate(COLOR_OPS):
            keep = (apply & (order[:, k] == op_id)).view(-1, 1, 1, 1)
            out = torch.where(keep, op(out.clone(), factors[:, op_id]), out)
    return out


# --------------------------------------------------------------------------- the transform


class TwoViewAugment:
    """The paper's augmentation, batched: ``aug(x_uint8, views=2)`` → float ``(B, V, C, H, W)``.

    Args:
        image_size: ``(H, W)`` of the output views.
        mean, std: per-channel normalisation (length C).
        grayscale: apply random grayscale (p = ``grayscale_p``); False for MNIST.
        scale, ratio: RandomResizedCrop ranges.
        jitter: ColorJitter ``(brightness, contrast, saturation, hue)``.
        jitter_p: probability of applying the colour jitter.
        grayscale_p: probability of grayscale.
        flip_p: probability of a horizontal flip.
        sync_free: the colour-jitter implementation (see :func:`color_jitter`):
            ``None`` picks the sync-free one on accelerators. With a generator
            on the images' device, a sync-free call never waits for the device.
    """

    def __init__(
        self,
        image_size,
        mean,
        std,
        *,
        grayscale: bool = True,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        flip_p: float = 0.5,
        sync_free: bool | None = None,
    ):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = tuple(int(s) for s in image_size)
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"image_size={image_size!r} must be (H, W) with positive sizes")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"std={std!r} must be positive and as long as mean={mean!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale={scale!r} must satisfy 0 < lo <= hi <= 1")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio={ratio!r} must satisfy 0 < lo <= hi")
        for name, p in (("jitter_p", jitter_p), ("grayscale_p", grayscale_p), ("flip_p", flip_p)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name}={p!r} must be in [0, 1]")
        b, c, s, h = jitter
        if min(b, c, s) < 0 or not 0 <= h <= 0.5:
            raise ValueError(f"jitter={jitter!r}: brightness/contrast/saturation >= 0 and hue in [0, 0.5]")
        self.grayscale, self.scale, self.ratio = bool(grayscale), tuple(scale), tuple(ratio)
        self.jitter, self.jitter_p, self.grayscale_p, self.flip_p = tuple(jitter), jitter_p, grayscale_p, flip_p
        self.sync_free = sync_free
        self._stats: dict = {}  # (device, dtype) -> normalisation mean, std tensors

    @classmethod
    def for_dataset(cls, ds, **overrides) -> "TwoViewAugment":
        """The augmentation for a :class:`spreadcon.data.Dataset` (its size, statistics, grayscale flag and
        its ``augment`` changes), with ``overrides`` last."""
        kw = dict(image_size=tuple(ds.image_shape[1:]), mean=ds.mean, std=ds.std, grayscale=ds.grayscale_aug)
        kw.update(getattr(ds, "augment", None) or {})  # the dataset's own changes (Dataset.augment)
        kw.update(overrides)
        return cls(**kw)

    def __repr__(self) -> str:
        return (
            f"TwoViewAugment(image_size={self.image_size}, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)}, "
            f"jitter={self.jitter}, jitter_p={self.jitter_p}, grayscale={self.grayscale}, grayscale_p={self.grayscale_p}, "
            f"flip_p={self.flip_p})"
        )

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a uint8 (B, C, H, W) tensor, got {got}")
        if x.shape[1] != len(self.mean):
            raise ValueError(f"x has {x.shape[1]} channels but mean/std have {len(self.mean)}")

    def _normalise(self, x01: torch.Tensor) -> torch.Tensor:
        key = (x01.device, x01.dtype)
        if key not in self._stats:  # copied to the device once, not every step
            self._stats[key] = tuple(torch.tensor(v, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
                                     for v in (self.mean, self.std))
        mean, std = self._stats[key]
        return x01.sub_(mean).div_(std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` → normalised float32, resized to ``image_size`` if needed (no augmentation)."""
        self._check(x)
        x01 = x.float().div_(255)
        if tuple(x01.shape[-2:]) != self.image_size:  # (resizing makes a new tensor; _normalise works in place)
            x01 = F.interpolate(x01, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        return self._normalise(x01)

    def sample_params(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> dict:
        """All random choices for ``n`` images, drawn on the generator's device (CPU by default)."""
        dev = generator.device if generator is not None else torch.device("cpu")
        boxes = sample_crop_boxes(n, height, width, scale=self.scale, ratio=self.ratio, generator=generator, device=dev)
        u = torch.rand(n, 8, generator=generator, device=dev)
        b, c, s, h = self.jitter
        lo, hi = (max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h), (1 + b, 1 + c, 1 + s, h)
        factors = torch.stack([lo[i] + (hi[i] - lo[i]) * u[:, 4 + i] for i in range(4)], 1)  # no host copy
        order = torch.rand(n, 4, generator=generator, device=dev).argsort(1)  # a uniform random permutation per image
        return {
            "boxes": boxes,
            "flip": u[:, 0] < self.flip_p,
            "jitter": u[:, 1] < self.jitter_p,
            "gray": (u[:, 2] < self.grayscale_p) & self.grayscale,
            "factors": factors,
            "order": order,
        }

    def apply(self, x01: torch.Tensor, params: dict) -> torch.Tensor:
        """Apply sampled ``params`` to float ``(N, C, H, W)`` in [0, 1]; returns normalised float."""
        out = resized_crop(x01, params["boxes"], self.image_size, params["flip"])
        out = color_jitter(out, params["factors"], params["order"], params["jitter"], sync_free=self.sync_free)
        gray = params["gray"].to(out.device)
        if out.shape[1] == 3:  # torch.where, not indexing: no device sync
            out = torch.where(gray.view(-1, 1, 1, 1), rgb_to_grayscale(out).expand_as(out), out)
        return self._normalise(out)

    def __call__(self, x: torch.Tensor, views: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment each image ``views`` times independently → float32 ``(B, V, C, H, W)`` on ``x.device``."""
        self._check(x)
        if not isinstance(views, int) or views < 1:
            raise ValueError(f"views={views!r} must be a positive int")
        bsz, c, height, width = x.shape
        x01 = x.float().div_(255)
        x01 = x01.unsqueeze(1).expand(bsz, views, c, height, width).reshape(bsz * views, c, height, width)
        params = self.sample_params(bsz * views, height, width, generator)
        return self.apply(x01, params).view(bsz, views, c, *self.image_size)


# --------------------------------------------------------------------------- reference


def torchvision_pipeline(aug: TwoViewAugment):
    """The per-image torchvision (v1, PIL) pipeline equivalent to ``aug``: the reference for tests and the benchmark."""
    from torchvision import transforms as T

    steps = [
        T.RandomResizedCrop(aug.image_size, scale=aug.scale, ratio=aug.ratio),
        T.RandomHorizontalFlip(aug.flip_p),
        T.RandomApply([T.ColorJitter(*aug.jitter)], p=aug.jitter_p),
    ]
    if aug.grayscale:
        steps.append(T.RandomGrayscale(aug.grayscale_p))
    steps += [T.ToTensor(), T.Normalize(aug.mean, aug.std)]
    return T.Compose(steps)
