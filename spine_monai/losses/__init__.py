"""Method-specific losses: SEAM (Zhao et al., ICASSP 2021, Section 2.2), SAFNet (BMC Neuroscience 2023, eq. 9) and the
attention net of Sekuboyina et al. (MSKI 2017, Section 2.1)."""

from __future__ import annotations

from spine_monai.losses.attention_loss import AttentionMSELoss
from spine_monai.losses.safnet_loss import SAFNetLoss
from spine_monai.losses.seam_loss import SEAMLoss

__all__ = ["AttentionMSELoss", "SAFNetLoss", "SEAMLoss"]
