"""Inf-Net adapted to many classes: Res2Net encoder + RFBs + parallel partial decoder + reverse attention + edges (2D).

Fan, Zhou, Ji, Zhou, Chen, Fu, Shen, Shao, "Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT
Images", IEEE TMI 39(8), 2020, https://doi.org/10.1109/TMI.2020.2996645, Section III-A (Fig. 2). Compared in
Zhou et al., "Review of Deep Learning Models for Spine Segmentation", ICMR 2022,
https://doi.org/10.1145/3512527.3531356, Section 3.2 (6): Res2Net-101 backbone, 20 classes.
Reference code: DengPingFan/Inf-Net ``Code/model_lung_infection/InfNet_Res2Net.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from segmentation_models_pytorch.encoders import get_encoder

from spine_monai.networks.blocks.partial_decoder import ParallelPartialDecoder, ReceptiveFieldBlock
from spine_monai.networks.blocks.reverse_attention import REVERSE_MODES, ReverseAttention

__all__ = ["InfNet"]


class InfNet(nn.Module):
    """Inf-Net for 2D multi-class segmentation; ``forward`` returns the final logits at the input size.

    Pipeline (reference layout): encoder levels ``f2`` (1/4), ``f3`` (1/8), ``f4`` (1/16), ``f5`` (1/32); RFBs
    reduce ``f3..f5`` to ``channels``; the PPD gives the global map ``S_g`` (1/8); an edge branch on ``f2`` gives
    edge-guidance features (64 channels) and an edge map; reverse-attention stages on ``f5``, ``f4``, ``f3`` refine
    ``S_g`` from coarse to fine, each adding a residual to the up-sampled previous map. ``forward_all`` returns
    every side output for Inf-Net's deep supervision: ``(S_g, S_5, S_4, S_3, edge)``, all resized to the input;
    ``S_3`` is the prediction (``forward``).

    Multi-class adaptation (the reference is binary):

    - every map ``S_*`` has ``out_channels`` logits (softmax over classes, background at channel 0);
    - the reverse weight is one map from the softmax (``reverse_mode``, see
      :mod:`spine_monai.networks.blocks.reverse_attention`): ``"foreground"`` = ``1 - P(any foreground)``
      (default, the direct extension of ``1 - sigmoid``), or ``"confidence"`` = ``1 - max_k P(k)``;
    - the edge map stays one channel: the boundary between any two labels, class-agnostic, to be supervised with
      BCE against the label-map boundaries (the reference supervises a binary edge map).

    Other choices: the encoder is the ``segmentation_models_pytorch`` encoder ``encoder_name`` with random
    initialisation (default ``"tu-res2net101d"``: timm's Res2Net-101 with the deep stem and average-pool
    shortcut of the reference's ``res2net_v1b``; the reference uses the 50-layer version). All up-sampling is
    bilinear to explicit sizes, so any input size works.

    Args:
        in_channels: input channels.
        out_channels: number of classes ``K``.
        encoder_name: smp encoder name with 5 stages (``"tu-res2net101d"``, ``"tu-res2net50d"``, ``"resnet18"``...).
        channels: RFB / PPD width (32 in the reference).
        edge_channels: width of the edge-guidance features (64 in the reference).
        reverse_mode: ``"foreground"`` or ``"confidence"``.
        norm: normalization type.
        act: activation type of the refinement convolutions.

    Raises:
        ValueError: on non-positive sizes or an unknown reverse mode.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        encoder_name: str = "tu-res2net101d",
        channels: int = 32,
        edge_channels: int = 64,
        reverse_mode: str = "foreground",
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, channels, edge_channels) < 1:
            raise ValueError(
                f"sizes must be positive, got in={in_channels}, out={out_channels}, channels={channels}, "
                f"edge_channels={edge_channels}."
            )
        if reverse_mode not in REVERSE_MODES:
            raise ValueError(f"reverse_mode must be one of {REVERSE_MODES}, got {reverse_mode!r}.")
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None)
        enc = self.encoder.out_channels  # [in, 1/2, 1/4, 1/8, 1/16, 1/32]
        self.rfb3 = ReceptiveFieldBlock(enc[3], channels, norm=norm)
        self.rfb4 = ReceptiveFieldBlock(enc[4], channels, norm=norm)
        self.rfb5 = ReceptiveFieldBlock(enc[5], channels, norm=norm)
        self.ppd = ParallelPartialDecoder(channels, out_channels, norm=norm)
        e = edge_channels
        self.edge_guidance = nn.Sequential(
            Convolution(2, enc[2], e, kernel_size=1, act=None, norm=norm, bias=False),
            Convolution(2, e, e, kernel_size=3, act=None, norm=norm, bias=False),
            Convolution(2, e, e, kernel_size=3, act=None, norm=norm, bias=False),
        )
        self.edge_head = Convolution(2, e, 1, kernel_size=3, act=None, norm=norm, bias=False)
        kw = {"mode": reverse_mode, "norm": norm, "act": act}
        # deepest stage: 256 wide, 5x5 kernels, three convs, 1x1 output; the others: 64 wide, 3x3, two convs, 3x3
        self.ra5 = ReverseAttention(2, enc[5], out_channels, 256, e, kernel_size=5, num_convs=3, out_kernel_size=1,
                                    **kw)
        self.ra4 = ReverseAttention(2, enc[4], out_channels, 64, e, kernel_size=3, num_convs=2, out_kernel_size=3,
                                    **kw)
        self.ra3 = ReverseAttention(2, enc[3], out_channels, 64, e, kernel_size=3, num_convs=2, out_kernel_size=3,
                                    **kw)

    def forward_all(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All side outputs for deep supervision, resized to the input.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            ``(S_g, S_5, S_4, S_3, edge)``: four ``(B, K, H, W)`` logit maps from coarse to fine and the
            ``(B, 1, H, W)`` edge logits.
        """
        size = [x.shape[2], x.shape[3]]
        feats = self.encoder(x)
        f2, f3, f4, f5 = feats[2], feats[3], feats[4], feats[5]
        guidance = self.edge_guidance(f2)  # (B, 64, H/4, W/4)
        edge = self.edge_head(guidance)
        s_g = self.ppd(self.rfb5(f5), self.rfb4(f4), self.rfb3(f3))  # (B, K, H/8, W/8)
        s_5 = self.ra5(f5, s_g, guidance)  # (B, K, H/32, W/32)
        s_4 = self.ra4(f4, s_5, guidance)  # (B, K, H/16, W/16)
        s_3 = self.ra3(f3, s_4, guidance)  # (B, K, H/8, W/8)
        return (
            F.interpolate(s_g, size=size, mode="bilinear", align_corners=False),
            F.interpolate(s_5, size=size, mode="bilinear", align_corners=False),
            F.interpolate(s_4, size=size, mode="bilinear", align_corners=False),
            F.interpolate(s_3, size=size, mode="bilinear", align_corners=False),
            F.interpolate(edge, size=size, mode="bilinear", align_corners=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            Logits ``(B, out_channels, H, W)`` of the finest reverse-attention stage.
        """
        return self.forward_all(x)[3]
