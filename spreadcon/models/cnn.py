"""Small encoders for the CPU presets and the constrained-encoder experiments.

* :class:`SmallCNN`: four 3×3 conv-BN-ReLU layers (32, 64, 128, 128 channels,
  stride 2 from the second on), global average pooling and a linear map to
  ``out_dim`` (128). About 260k parameters; a forward + backward of 256
  CIFAR images takes well under a second on two CPU cores. Its convolutions
  run channels-last (NHWC), the layout oneDNN computes in, which saved a fifth of
  the ``cpu`` preset's training step (bf16 and float32, one thread).
* :class:`LinearEncoder`: ``z = s · W vec(x)``, one linear map of the
  flattened image. With ``spectral_norm=True`` the weight is divided by its
  largest singular value (power iteration), so the map is ``s``-Lipschitz
  (``s = lipschitz``). This is the "constrained encoder" symmetry breaker: a
  linear map cannot send the images of one class to arbitrary points, so the
  loss's indifference to within-class permutations cannot be exploited.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SmallCNN", "LinearEncoder"]


class SmallCNN(nn.Module):
    """Four conv layers, global pool, linear projection.

    Args:
        image_shape: ``(C, H, W)``.
        out_dim: embedding size (128).
        widths: channels of the four conv layers.

    Shapes:
        input ``(B, C, H, W)`` float; output ``(B, out_dim)``.

    Memory layout: the convolution weights are stored channels-last and the
    input is made channels-last (:data:`torch.channels_last`) before the first
    convolution, so oneDNN reorders nothing between layers. Only the layout
    changes, not the values: the output equals the NCHW computation up to float
    rounding (``tests/test_models.py``). Measured on an AMD EPYC with AVX-512
    BF16 (one thread, the ``cpu`` preset's whole training step of 2 x 128
    CIFAR-10-shaped images, timed round-robin against the NCHW model): 18% less
    time in bf16, 21% in float32; MNIST-shaped, 19% in bf16.

    Example:
        >>> SmallCNN((1, 28, 28), out_dim=16)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        out_dim: int = 128,
        widths: tuple[int, ...] = (32, 64, 128, 128),
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim!r}")
        c = image_shape[0]
        self.image_shape = tuple(image_shape)
        self.out_dim = out_dim
        layers: list[nn.Module] = []
        cin = c
        for i, cout in enumerate(widths):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.features = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.image_shape[0]:
            raise ValueError(f"x must have shape (B, {self.image_shape[0]}, H, W), got {tuple(x.shape)}")
        x = x.contiguous(memory_format=torch.channels_last)
        return self.fc(self.pool(self.features(x)).flatten(1))


class LinearEncoder(nn.Module):
    """Flatten + one linear map, optionally spectrally normalised.

    ``z = lipschitz · W vec(x) / σ_max(W)`` when ``spectral_norm`` is on, else
    ``z = W vec(x) + b``.

    Args:
        image_shape: ``(C, H, W)``.
        out_dim: embedding size (128).
        spectral_norm: divide ``W`` by its spectral norm (one power iteration
            per training step, as :func:`torch.nn.utils.parametrizations.spectral_norm`).
        lipschitz: the Lipschitz bound ``s`` when ``spectral_norm`` is on.
        bias: add a bias (ignored with ``spectral_norm``, which keeps the map
            linear so the bound is exact).

    Example:
        >>> enc = LinearEncoder((1, 4, 4), out_dim=3, spectral_norm=True)
        >>> enc(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        out_dim: int = 128,
        spectral_norm: bool = False,
        lipschitz: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim!r}")
        if lipschitz <= 0:
            raise ValueError(f"lipschitz must be > 0, got {lipschitz!r}")
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        self.out_dim = out_dim
        self.lipschitz = float(lipschitz)
        self.spectral = bool(spectral_norm)
        linear = nn.Linear(c * h * w, out_dim, bias=bias and not spectral_norm)
        if spectral_norm:
            linear = torch.nn.utils.parametrizations.spectral_norm(linear)
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (B, {self.image_shape}), got {tuple(x.shape)}")
        z = self.linear(x.flatten(1))
        return z * self.lipschitz if self.spectral else z
