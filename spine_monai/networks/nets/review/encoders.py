"""Shared encoder set-up of the review networks built on a dilated smp ResNet (DANet, EMANet, PSANet)."""

from __future__ import annotations

import torch.nn as nn
from segmentation_models_pytorch.encoders import get_encoder

__all__ = ["dilated_encoder"]


def dilated_encoder(encoder_name: str, in_channels: int, output_stride: int) -> nn.Module:
    """An smp encoder (depth 5, no pretrained weights) dilated to ``output_stride``.

    Raises:
        ValueError: if ``output_stride`` is not 8 (the reference setting) or 16.
    """
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}.")
    return get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None, output_stride=output_stride)
