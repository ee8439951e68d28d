"""Method-specific losses: SEAM (Zhao et al., ICASSP 2021, Section 2.2) and SAFNet (BMC Neuroscience 2023, eq. 9)."""

from __future__ import annotations

from spine_monai.losses.safnet_loss import SAFNetLoss
from spine_monai.losses.seam_loss import SEAMLoss

__all__ = ["SAFNetLoss", "SEAMLoss"]
