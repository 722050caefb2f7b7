"""The reconstruction loss of the autoencoder (and of Thanos's autoencoder backbone): the mean squared error."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["reconstruction_loss", "ReconstructionLoss"]


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
