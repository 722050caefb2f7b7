"""The losses: SupCon, the class-conditional InfoNCE (cNCE), L_spread = (1-α)·SupCon + α·cNCE, SimCLR, reconstruction.

``switches`` names the forms of the contrastive losses (one frozen :class:`Switches` value each:
``L_OUT``, the equations, and ``REFERENCE_QUIRKS``, the official thanos-code); ``contrastive`` holds the
contrastive losses, ``_kernel`` their block computation, and ``reconstruction`` the autoencoder's loss.
"""

from spreadcon.losses.contrastive import (  # noqa: F401
    CNCELoss, SimCLRLoss, SpreadLoss, SupConLoss, cnce_loss, simclr_loss, spread_loss, supcon_loss,
)
from spreadcon.losses.reconstruction import ReconstructionLoss, reconstruction_loss  # noqa: F401
from spreadcon.losses.switches import L_OUT, L_OUT_CLAMPED, PAPER, REFERENCE_QUIRKS, Switches  # noqa: F401

__all__ = [
    "supcon_loss", "cnce_loss", "spread_loss", "simclr_loss", "reconstruction_loss",
    "SupConLoss", "CNCELoss", "SpreadLoss", "SimCLRLoss", "ReconstructionLoss",
    "Switches", "L_OUT", "PAPER", "REFERENCE_QUIRKS", "L_OUT_CLAMPED",
]  # fmt: skip
