"""Method-specific losses (SEAM: Zhao et al., ICASSP 2021, Section 2.2)."""

from __future__ import annotations

from spine_monai.losses.seam_loss import SEAMLoss

__all__ = ["SEAMLoss"]
