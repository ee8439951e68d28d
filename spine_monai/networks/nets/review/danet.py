"""DANet: dilated ResNet encoder (output stride 8) + dual-attention head (position + channel attention) (2D).

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019,
https://doi.org/10.1109/CVPR.2019.00326, Section 3 (Fig. 2). Compared in Zhou et al., "Review of Deep Learning
Models for Spine Segmentation", ICMR 2022, https://doi.org/10.1145/3512527.3531356, Section 3.2 (4): ResNet-101.
Reference code: junfu1115/DANet ``encoding/models/sseg/danet.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spine_monai.networks.blocks.danet_head import DANetHead
from spine_monai.networks.nets.review.encoders import dilated_encoder

__all__ = ["DANet"]


class DANet(nn.Module):
    """DANet for 2D semantic segmentation; returns logits at the input size.

    ``encoder (dilated, OS 8) -> DANetHead (in/4 channels, PAM + CAM branches summed, dropout 0.1, 1x1 conv) ->
    bilinear up-sampling to the input size``. The encoder is the ``segmentation_models_pytorch`` encoder
    ``encoder_name`` with random initialisation (default ResNet-101; the reference uses a deep-stem ResNet and also
    trains the two single-branch outputs with auxiliary losses, which :class:`DANetHead` does not build).

    Args:
        in_channels: input channels.
        out_channels: number of classes.
        encoder_name: smp encoder name (``"resnet101"``, ``"resnet18"``, ...).
        output_stride: encoder output stride, 8 (reference) or 16.
        dropout: dropout of the head.
        norm: normalization of the head.
        act: activation of the head.

    Raises:
        ValueError: on non-positive channels or a bad output stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        encoder_name: str = "resnet101",
        output_stride: int = 8,
        dropout: float = 0.1,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        self.encoder = dilated_encoder(encoder_name, in_channels, output_stride)
        self.head = DANetHead(2, self.encoder.out_channels[-1], out_channels, norm=norm, act=act, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            Logits ``(B, out_channels, H, W)``.
        """
        logits = self.head(self.encoder(x)[-1])  # (B, K, H/8, W/8)
        return F.interpolate(logits, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=True)
