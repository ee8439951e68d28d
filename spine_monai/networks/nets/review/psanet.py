"""PSANet: dilated ResNet encoder + bi-directional point-wise spatial attention + FCN head (2D).

Zhao, Zhang, Liu, Shi, Loy, Lin, Jia, "PSANet: Point-wise Spatial Attention Network for Scene Parsing",
ECCV 2018, https://doi.org/10.1007/978-3-030-01240-3_17, Section 3.3 (Fig. 2 and 4). Compared in Zhou et al.,
"Review of Deep Learning Models for Spine Segmentation", ICMR 2022, https://doi.org/10.1145/3512527.3531356,
Section 3.2 (7) and Table 3 (ResNet-101 backbone). Reference code: hszhao/semseg ``model/psanet.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

from spine_monai.networks.blocks.psa import PointwiseSpatialAttention
from spine_monai.networks.nets.review.encoders import dilated_encoder

__all__ = ["PSANet"]


class PSANet(nn.Module):
    """PSANet for 2D semantic segmentation; returns logits at the input size.

    ``encoder (OS 8) -> PSA (concat, 2C channels) -> conv3x3-BN-ReLU-Dropout -> conv1x1 -> bilinear up``.

    Choices and deviations from the reference, with reasons:

    - Encoder: the ``segmentation_models_pytorch`` encoder ``encoder_name`` (default ResNet-101, random init,
      ``weights=None``) made dilated to ``output_stride`` 8. The reference uses a "deep-base" ResNet (three 3x3
      stem convolutions, +0.1M parameters); smp's ResNet has the torchvision 7x7 stem.
    - The auxiliary training head on layer 3 (2.4M parameters in the reference) is not built: it is a training
      device, not part of the predicted output.
    - ``mask_size`` sets the attention-mask size and therefore the size of the last attention convolution. The
      reference uses 59 x 59 (full coverage for 465-473 pixel crops). For full coverage at an input of ``S``
      pixels use ``2 * ((S - 1) // (output_stride * shrink_factor) + 1) - 1`` (109 for the review's 880 x 880,
      +8.6M parameters); smaller masks attend locally.
    - Any input size is accepted (no ``8k + 1`` constraint): the output is resized to the input size.

    Args:
        in_channels: input channels.
        out_channels: number of classes.
        encoder_name: smp encoder name (e.g. ``"resnet101"``, ``"resnet18"``, ``"tu-res2net101d"``).
        output_stride: encoder output stride, 8 (reference) or 16.
        mask_size: odd attention-mask size ``int`` or ``(h, w)``.
        shrink_factor: down-sampling inside the PSA module.
        mid_channels: reduced channels of the PSA branches.
        head_channels: channels of the 3x3 classification conv.
        dropout: dropout before the classifier.
        norm: normalization type.
        act: activation type.

    Raises:
        ValueError: on non-positive channels, a bad output stride, or bad PSA arguments.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        encoder_name: str = "resnet101",
        output_stride: int = 8,
        mask_size: int | tuple[int, int] = (59, 59),
        shrink_factor: int = 2,
        mid_channels: int = 512,
        head_channels: int = 512,
        dropout: float = 0.1,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        self.encoder = dilated_encoder(encoder_name, in_channels, output_stride)
        enc_channels = self.encoder.out_channels[-1]
        self.psa = PointwiseSpatialAttention(enc_channels, mid_channels, mask_size, shrink_factor, norm=norm, act=act)
        self.head = nn.Sequential(
            Convolution(2, self.psa.out_channels, head_channels, kernel_size=3, act=act, norm=norm, bias=False,
                        dropout=dropout, dropout_dim=2, adn_ordering="NAD"),
            Convolution(2, head_channels, out_channels, kernel_size=1, conv_only=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            Logits ``(B, out_channels, H, W)``.
        """
        feat = self.encoder(x)[-1]  # (B, C, H/8, W/8)
        logits = self.head(self.psa(feat))
        return F.interpolate(logits, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=True)
