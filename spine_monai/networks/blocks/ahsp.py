"""Attentive hierarchical spatial pyramid (AHSP) module of MiniSeg.

Qiu, Liu, Li, Xu, "MiniSeg: An Extremely Minimum Network for Efficient COVID-19 Segmentation", AAAI 2021
(arXiv:2004.09750), Section 3.2 (Fig. 3, Eq. 1-3). Reference code: yun-liu/MiniSeg ``MiniSeg.py``
(``DilatedParallelConvBlock``).

A 1x1 convolution reduces the input to ``C/4`` channels; four depth-wise 3x3 convolutions with dilation 1, 2, 4, 8
(and the same stride) plus a 3x3 average pool form the pyramid; the branches are summed hierarchically
(``d1 = conv_1 + pool``, ``d_k = d_{k-1} + conv_k``), re-weighted by a spatial attention per branch
(``d_k + d_k * sigmoid(att_k)``, one grouped 1x1 conv gives the four maps), concatenated, fused by a grouped 1x1
convolution (4 groups), normalized and activated (PReLU per channel in the reference).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer

__all__ = ["AHSP", "make_act"]


def make_act(act: str | tuple, channels: int) -> nn.Module:
    """Activation layer; the string ``"prelu"`` gives a per-channel ``nn.PReLU(channels)`` as in MiniSeg."""
    if isinstance(act, str) and act.lower() == "prelu":
        return nn.PReLU(channels)
    return get_act_layer(act)


class AHSP(nn.Module):
    """Attentive hierarchical spatial pyramid (2D or 3D).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels, a multiple of 4.
        stride: stride of the pyramid convolutions and pool (1, or 2 to down-sample).
        dilations: dilations of the four depth-wise branches.
        norm: normalization type.
        act: activation type (``"prelu"``: per-channel PReLU).

    Raises:
        ValueError: if ``out_channels`` is not a positive multiple of 4, or on a bad stride or dilations.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilations: tuple[int, int, int, int] = (1, 2, 4, 8),
        norm: str | tuple = "batch",
        act: str | tuple = "prelu",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 4 or out_channels % 4 != 0:
            raise ValueError(f"out_channels must be a positive multiple of 4 and in_channels >= 1, got "
                             f"in={in_channels}, out={out_channels}.")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}.")
        if len(dilations) != 4 or any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be four positive integers, got {dilations}.")
        inter = out_channels // 4
        self.reduce = Convolution(spatial_dims, in_channels, inter, kernel_size=1, bias=False, conv_only=True)
        self.branches = nn.ModuleList(
            Convolution(spatial_dims, inter, inter, strides=stride, kernel_size=3, dilation=d, groups=inter,
                        bias=False, conv_only=True)
            for d in dilations
        )
        self.pool = Pool[Pool.AVG, spatial_dims](kernel_size=3, stride=stride, padding=1)
        self.attention = Convolution(spatial_dims, out_channels, 4, kernel_size=1, groups=4, bias=False,
                                     conv_only=True)
        self.fuse = Convolution(spatial_dims, out_channels, out_channels, kernel_size=1, groups=4, bias=False,
                                conv_only=True)
        self.norm = get_norm_layer(norm, spatial_dims, out_channels)
        self.act = make_act(act, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``(B, out_channels, *spatial / stride)``.
        """
        x = self.reduce(x)
        pyramid: list[torch.Tensor] = []
        prev = self.pool(x)
        for branch in self.branches:
            prev = prev + branch(x)  # hierarchical sum: d1 = b1 + pool, d_k = d_{k-1} + b_k
            pyramid.append(prev)
        att = torch.sigmoid(self.attention(torch.cat(pyramid, dim=1)))  # (B, 4, ...) one map per branch
        weighted: list[torch.Tensor] = []
        for i, d in enumerate(pyramid):
            weighted.append(d + d * att[:, i : i + 1])
        return self.act(self.norm(self.fuse(torch.cat(weighted, dim=1))))
