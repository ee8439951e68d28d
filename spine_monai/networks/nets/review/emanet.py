"""EMANet: dilated ResNet encoder (output stride 8) + expectation-maximisation attention unit + FCN head (2D).

Li, Zhong, Wu, Yang, Lin, Liu, "Expectation-Maximization Attention Networks for Semantic Segmentation", ICCV 2019,
https://doi.org/10.1109/ICCV.2019.00926, Section 3 (Fig. 2). Compared in Zhou et al., "Review of Deep Learning
Models for Spine Segmentation", ICMR 2022, https://doi.org/10.1145/3512527.3531356, Section 3.2 (5): ResNet-101.
Reference code: XiaLiPKU/EMANet ``network.py`` (``EMANet``: ``fc0``, ``emau``, ``fc1``, ``fc2``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

from spine_monai.networks.blocks.em_attention import EMAttention
from spine_monai.networks.nets.review.encoders import dilated_encoder

__all__ = ["EMANet"]


class EMANet(nn.Module):
    """EMANet for 2D semantic segmentation; returns logits at the input size.

    ``encoder (dilated, OS 8) -> conv3x3-BN-ReLU (to 512) -> EMAU (64 bases, 3 EM iterations, bases as a buffer
    updated by a moving average, momentum 0.9, EM steps without gradient) -> conv3x3-BN-ReLU (to 256) ->
    Dropout2d(0.1) -> conv1x1 -> bilinear up-sampling (align_corners=True)``, as the reference.

    Notes: the bases are a buffer, not a parameter; they change in ``train()`` mode on every forward. The EMAU's
    input 1x1 convolution receives no gradient (EM steps run without gradient, as in the reference) and is
    frozen (``requires_grad=False``), see :class:`~spine_monai.networks.blocks.em_attention.EMAttention`. The
    encoder is the ``segmentation_models_pytorch`` encoder ``encoder_name`` (random init); the reference uses a
    deep-stem ResNet with multi-grid (1, 2, 4) dilations in the last stage, smp dilates uniformly.

    Args:
        in_channels: input channels.
        out_channels: number of classes.
        encoder_name: smp encoder name (``"resnet101"``, ``"resnet18"``, ...).
        output_stride: encoder output stride, 8 (reference) or 16.
        mid_channels: channels of the EMA unit (512).
        head_channels: channels of the last 3x3 conv (256).
        num_bases: EM bases (64).
        num_iters: EM iterations (3).
        momentum: moving-average momentum of the bases (0.9).
        dropout: dropout before the classifier (0.1).
        norm: normalization type.
        act: activation type.

    Raises:
        ValueError: on non-positive channels or a bad output stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        encoder_name: str = "resnet101",
        output_stride: int = 8,
        mid_channels: int = 512,
        head_channels: int = 256,
        num_bases: int = 64,
        num_iters: int = 3,
        momentum: float = 0.9,
        dropout: float = 0.1,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, mid_channels, head_channels) < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, out={out_channels}, "
                             f"mid={mid_channels}, head={head_channels}.")
        self.encoder = dilated_encoder(encoder_name, in_channels, output_stride)
        self.fc0 = Convolution(2, self.encoder.out_channels[-1], mid_channels, act=act, norm=norm, bias=False)
        self.emau = EMAttention(2, mid_channels, num_bases=num_bases, num_iters=num_iters, momentum=momentum,
                                norm=norm)
        self.fc1 = Convolution(2, mid_channels, head_channels, act=act, norm=norm, bias=False, dropout=dropout,
                               dropout_dim=2, adn_ordering="NAD")
        self.fc2 = Convolution(2, head_channels, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            Logits ``(B, out_channels, H, W)``.
        """
        feat = self.fc0(self.encoder(x)[-1])  # (B, 512, H/8, W/8)
        logits = self.fc2(self.fc1(self.emau(feat)))
        return F.interpolate(logits, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=True)
