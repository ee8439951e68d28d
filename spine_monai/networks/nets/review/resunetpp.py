"""ResUNet++: residual U-Net with squeeze-and-excitation, an ASPP bridge and decoder attention (2D or 3D).

Jha, Smedsrud, Riegler, Johansen, de Lange, Halvorsen, Johansen, "ResUNet++: An Advanced Architecture for Medical
Image Segmentation", IEEE ISM 2019, https://doi.org/10.1109/ISM46123.2019.00049, Section III (Fig. 1). Compared in
Zhou et al., "Review of Deep Learning Models for Spine Segmentation", ICMR 2022,
https://doi.org/10.1145/3512527.3531356, Section 2.2 (2). Reference code: DebeshJha/ResUNetPlusPlus
``m_resunet.py`` (filters 16, 32, 64, 128, 256: 4.1M parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

from spine_monai.networks.blocks.resunetpp_blocks import ResidualSEUnit, ResUNetPPASPP, ResUNetPPAttention

__all__ = ["ResUNetPlusPlus"]


class _DecoderStage(nn.Module):
    """``unit(cat(up2(attention(g, x)), g))``: the reference ``Decoder_Block``."""

    def __init__(self, spatial_dims: int, g_channels: int, x_channels: int, out_channels: int, norm: str | tuple,
                 act: str | tuple) -> None:
        super().__init__()
        self.attention = ResUNetPPAttention(spatial_dims, g_channels, x_channels, norm=norm, act=act)
        self.unit = ResidualSEUnit(spatial_dims, g_channels + x_channels, out_channels, norm=norm, act=act)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = F.interpolate(self.attention(g, x), scale_factor=2.0, mode="nearest")
        return self.unit(torch.cat([d, g], dim=1))


class ResUNetPlusPlus(nn.Module):
    """ResUNet++; returns logits at the input size.

    Encoder: stem unit (no pre-activation) at full resolution, three strided residual-SE units; bridge: ASPP
    (dilations 1, 6, 12, 18, summed); decoder: three stages of attention -> nearest up-sampling x2 -> concatenation
    with the skip -> residual-SE unit; output: ASPP -> 1x1 conv to ``out_channels`` logits (the reference ends with
    a sigmoid for one class; here the loss applies softmax / sigmoid).

    The attention block max-pools the skip by 2, so the spatial size must be divisible by 8: other sizes are
    zero-padded (bottom / right) to the next multiple of 8 and the logits cropped back.

    Args:
        spatial_dims: 2 (the review) or 3.
        in_channels: input channels.
        out_channels: number of classes.
        features: five widths ``(stem, enc2, enc3, enc4, bridge)``; the reference is (16, 32, 64, 128, 256).
        aspp_rates: dilations of both ASPP modules.
        norm: normalization type.
        act: activation type.

    Raises:
        ValueError: on bad channel counts, five ``features`` not given, or bad ``spatial_dims``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        aspp_rates: Sequence[int] = (1, 6, 12, 18),
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if len(features) != 5 or any(f < 1 for f in features):
            raise ValueError(f"features must be five positive widths, got {features}.")
        f0, f1, f2, f3, f4 = (int(f) for f in features)
        kw = {"norm": norm, "act": act}
        self.c1 = ResidualSEUnit(spatial_dims, in_channels, f0, strides=1, preactivation=False, **kw)
        self.c2 = ResidualSEUnit(spatial_dims, f0, f1, strides=2, **kw)
        self.c3 = ResidualSEUnit(spatial_dims, f1, f2, strides=2, **kw)
        self.c4 = ResidualSEUnit(spatial_dims, f2, f3, strides=2, **kw)
        self.bridge = ResUNetPPASPP(spatial_dims, f3, f4, aspp_rates, norm=norm)
        self.d1 = _DecoderStage(spatial_dims, f2, f4, f3, **kw)
        self.d2 = _DecoderStage(spatial_dims, f1, f3, f2, **kw)
        self.d3 = _DecoderStage(spatial_dims, f0, f2, f1, **kw)
        self.out_aspp = ResUNetPPASPP(spatial_dims, f1, f0, aspp_rates, norm=norm)
        self.out_conv = Convolution(spatial_dims, f0, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, *spatial)``.

        Returns:
            Logits ``(B, out_channels, *spatial)``.
        """
        spatial = x.shape[2:]
        pad: list[int] = []
        for s in spatial[::-1]:  # F.pad order: last axis first
            pad += [0, (8 - s % 8) % 8]
        xp = F.pad(x, pad)
        c1 = self.c1(xp)
        c2 = self.c2(c1)
        c3 = self.c3(c2)
        b = self.bridge(self.c4(c3))
        d = self.d3(c1, self.d2(c2, self.d1(c3, b)))
        out = self.out_conv(self.out_aspp(d))
        if x.dim() == 4:
            return out[:, :, : spatial[0], : spatial[1]]
        return out[:, :, : spatial[0], : spatial[1], : spatial[2]]
