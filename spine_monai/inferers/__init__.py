"""Inferers used by the bundles: the attention-driven two-stage inference (localisation, segmentation, fusion) and
the slice-by-slice inference of the review's 2D networks."""

from __future__ import annotations

from spine_monai.inferers.slices import SagittalSliceInferer
from spine_monai.inferers.two_stage import (
    AttentionFusionInferer,
    load_localization_weights,
    sagittal_slice_indices,
    smooth_attention,
)

__all__ = ["AttentionFusionInferer", "SagittalSliceInferer", "load_localization_weights", "sagittal_slice_indices",
           "smooth_attention"]
