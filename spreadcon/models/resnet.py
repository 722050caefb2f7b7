"""CIFAR-stem ResNet-18 encoder (He et al. 2016, the CIFAR variant).

The ImageNet stem (7×7 stride-2 convolution and max-pool) is replaced by a
single 3×3 stride-1 convolution with no max-pool, as is standard for 32×32
inputs. Four stages of two basic blocks (64, 128, 256, 512 channels; stride 2
at the start of stages 2–4), global average pooling, ``out_dim = 512``.
11,168,832 parameters for RGB input (independent of image size).

Each basic block computes ``ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))``
where the shortcut is the identity, or a 1×1 strided convolution + BN when
the shape changes.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResNet18Encoder", "BasicBlock"]


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a residual shortcut.

    Args:
        cin: input channels.
        cout: output channels.
        stride: stride of the first convolution (and of the shortcut).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """CIFAR-stem ResNet-18; returns the pooled 512-d feature.

    Args:
        image_shape: ``(C, H, W)``; any ``H, W >= 8`` works (pooling is global).
        widths: channels of the four stages.

    Shapes:
        input ``(B, C, H, W)`` float; output ``(B, 512)``.

    Example:
        >>> import torch
        >>> ResNet18Encoder((3, 32, 32))(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if min(h, w) < 8:
            raise ValueError(f"image_shape={tuple(image_shape)} is too small for ResNet-18 (need H, W >= 8)")
        self.image_shape = (c, h, w)
        self.out_dim = widths[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(c, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.image_shape[0]:
            raise ValueError(f"x must have shape (B, {self.image_shape[0]}, H, W), got {tuple(x.shape)}")
        return self.pool(self.stages(self.stem(x))).flatten(1)
