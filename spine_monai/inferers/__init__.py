"""Inferers used by the bundles: the attention-driven two-stage inference (localisation, segmentation, fusion)."""

from __future__ import annotations

from spine_monai.inferers.two_stage import (
    AttentionFusionInferer,
    load_localization_weights,
    sagittal_slice_indices,
    smooth_attention,
)

__all__ = ["AttentionFusionInferer", "load_localization_weights", "sagittal_slice_indices", "smooth_attention"]
