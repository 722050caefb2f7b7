"""The losses: SupCon, the class-conditional InfoNCE (cNCE), L_spread = (1-α)·SupCon + α·cNCE, SimCLR, reconstruction."""

from spreadcon.losses.contrastive import (  # noqa: F401
    L_OUT, PAPER, REFERENCE_QUIRKS, supcon_loss, cnce_loss, spread_loss,
    simclr_loss, reconstruction_loss, SupConLoss, CNCELoss, SpreadLoss, SimCLRLoss,
    ReconstructionLoss,
)
