"""Decoders for the class-conditional autoencoder.

Both map an embedding ``z`` of shape ``(B, latent_dim)`` to an image of shape
``(B, C, H, W)`` in the *normalised* pixel space (no output activation), so the
reconstruction loss compares against ``aug.normalize(x)``.

Sizes that are not a power of two: the decoder builds its output at
``S = max(8, next power of two >= max(H, W))`` and centre-crops to ``(H, W)``.
For 28×28 MNIST that is 32×32 cropped by 2 pixels on each side; 32×32 and
64×64 need no crop. The number of ×2 upsampling stages is ``log2(S / 4)``.

* :class:`ResNetDecoder`: the ResNet-18-style decoder, a mirror of the
  encoder's stages 2–4. A linear layer (+ ReLU) to ``512×4×4``, then one stage
  per ×2 upsampling, each ``[UpBlock(c_in → c_out), BasicBlock(c_out)]``, with
  channels 512 → 256 → 128 → 64 (64 for any further stage, e.g. at 64×64),
  and a final 3×3 convolution to ``C`` channels. An ``UpBlock`` mirrors the
  encoder's strided block: nearest ×2 upsampling, conv3×3 ``c_in → c_in``,
  BN, ReLU, conv3×3 ``c_in → c_out``, BN, plus an upsample + 1×1 conv + BN
  shortcut. At 32×32 RGB and ``latent_dim=256`` (the ViT's width) it has
  8,477,635 parameters, within 2% of the issue's "about 8.6M" (the exact
  official layout is not specified; 28×28: 8,476,481; 64×64: 8,629,827).
* :class:`SmallCNNDecoder`: linear to ``128×4×4``, then per stage nearest ×2
  upsampling + 3×3 conv-BN-ReLU (128 → 64 → 32 → 32 …), and a 3×3 conv to
  ``C``. About 0.2M parameters at ``latent_dim=128``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import BasicBlock

__all__ = ["ResNetDecoder", "SmallCNNDecoder", "output_side"]


def output_side(image_shape: tuple[int, int, int]) -> int:
    """The square side ``S`` the decoders build before cropping to ``(H, W)``."""
    c, h, w = image_shape
    if min(c, h, w) < 1:
        raise ValueError(f"image_shape must be positive (C, H, W), got {tuple(image_shape)}")
    return max(8, 2 ** math.ceil(math.log2(max(h, w))))


def _center_crop(x: Tensor, h: int, w: int) -> Tensor:
    top = (x.shape[-2] - h) // 2
    left = (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


class UpBlock(nn.Module):
    """Nearest ×2 upsampling residual block ``c_in → c_out`` (see module docstring)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class _SeedDecoder(nn.Module):
    """Shared skeleton: ``z → ReLU(Linear) → base×4×4 → stages → conv → crop``.

    Subclasses implement ``_stage(c_in) -> (modules, c_out)`` for one ×2
    upsampling stage.
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], base: int) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim!r}")
        if base < 1:
            raise ValueError(f"base must be >= 1, got {base!r}")
        side = output_side(image_shape)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.base = base
        self.fc = nn.Linear(latent_dim, base * 16)
        stages: list[nn.Module] = []
        cin = base
        for _ in range(int(math.log2(side // 4))):
            modules, cin = self._stage(cin)
            stages += modules
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(cin, image_shape[0], 3, padding=1)

    def _stage(self, cin: int) -> tuple[list[nn.Module], int]:
        raise NotImplementedError

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        x = F.relu(self.fc(z)).view(z.shape[0], self.base, 4, 4)
        x = self.out(self.stages(x))
        return _center_crop(x, self.image_shape[1], self.image_shape[2])


class ResNetDecoder(_SeedDecoder):
    """ResNet-18-style decoder ``z → image``.

    Args:
        latent_dim: size of the input embedding.
        image_shape: ``(C, H, W)`` of the output.
        base: channels of the 4×4 seed (512).

    Shapes:
        input ``(B, latent_dim)``; output ``(B, C, H, W)`` float.

    Example:
        >>> import torch
        >>> ResNetDecoder(16, (1, 28, 28))(torch.zeros(2, 16)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int] = (3, 32, 32), base: int = 512) -> None:
        super().__init__(latent_dim, image_shape, base)

    def _stage(self, cin: int) -> tuple[list[nn.Module], int]:
        cout = max(cin // 2, 64)
        return [UpBlock(cin, cout), BasicBlock(cout, cout)], cout


class SmallCNNDecoder(_SeedDecoder):
    """Small upsampling CNN decoder for the CPU presets.

    Args:
        latent_dim: size of the input embedding.
        image_shape: ``(C, H, W)`` of the output.
        base: channels of the 4×4 seed (128).

    Example:
        >>> import torch
        >>> SmallCNNDecoder(8, (3, 32, 32))(torch.zeros(2, 8)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int] = (3, 32, 32), base: int = 128) -> None:
        super().__init__(latent_dim, image_shape, base)

    def _stage(self, cin: int) -> tuple[list[nn.Module], int]:
        cout = max(cin // 2, 32)
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        up = nn.Upsample(scale_factor=2.0, mode="nearest")
        return [up, conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)], cout
