"""ResUNet++ building blocks: residual unit with squeeze-and-excitation, sum-ASPP, and the decoder attention block.

Jha, Smedsrud, Riegler, Johansen, de Lange, Halvorsen, Johansen, "ResUNet++: An Advanced Architecture for Medical
Image Segmentation", IEEE ISM 2019, https://doi.org/10.1109/ISM46123.2019.00049, Section III (Fig. 1).
Reference code: DebeshJha/ResUNetPlusPlus ``m_resunet.py`` (Keras, the paper's code) and ``resunet++_pytorch.py``.

ResUNet++'s ASPP differs from DeepLab's: four 3x3 branches with dilation 1, 6, 12, 18, each followed by BN, are
*summed* (not concatenated), then a 1x1 convolution; there is no image-pooling branch and no activation. It is
therefore written here instead of reusing a DeepLab ASPP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import ChannelSELayer, Convolution
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer

__all__ = ["ResUNetPPASPP", "ResUNetPPAttention", "ResidualSEUnit"]


class ResidualSEUnit(nn.Module):
    """Residual unit followed by squeeze-and-excitation.

    ``se(body(x) + shortcut(x))`` with ``body`` = ``[norm-act] -> conv3x3 (stride) -> norm -> act -> conv3x3`` and
    ``shortcut`` = ``conv1x1 (stride) -> norm``. ``preactivation=False`` drops the leading norm-act: the stem
    block of ResUNet++. SE is MONAI's ``ChannelSELayer`` (reduction 8; its linear layers have biases, the
    reference's do not: ``2 * C`` extra parameters).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        strides: stride of the first conv and of the shortcut.
        preactivation: start the body with norm-act (encoder / decoder units) or not (stem).
        se_reduction: SE reduction ratio.
        norm: normalization type.
        act: activation type.

    Raises:
        ValueError: on non-positive channels, stride or reduction.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: int = 1,
        preactivation: bool = True,
        se_reduction: int = 8,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, strides, se_reduction) < 1:
            raise ValueError(
                f"bad sizes: in={in_channels}, out={out_channels}, strides={strides}, se_reduction={se_reduction}."
            )
        body: list[nn.Module] = []
        if preactivation:
            body += [get_norm_layer(norm, spatial_dims, in_channels), get_act_layer(act)]
        body += [
            Convolution(spatial_dims, in_channels, out_channels, strides=strides, kernel_size=3, act=act, norm=norm),
            Convolution(spatial_dims, out_channels, out_channels, kernel_size=3, conv_only=True),
        ]
        self.body = nn.Sequential(*body)
        self.shortcut = Convolution(spatial_dims, in_channels, out_channels, strides=strides, kernel_size=1,
                                    act=None, norm=norm)
        self.se = ChannelSELayer(spatial_dims, out_channels, r=se_reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``(B, out_channels, *spatial / strides)``.
        """
        return self.se(self.body(x) + self.shortcut(x))


class ResUNetPPASPP(nn.Module):
    """ResUNet++ atrous spatial pyramid: ``conv1x1(sum_r norm(conv3x3_dilation_r(x)))``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        rates: dilation of each 3x3 branch (``(1, 6, 12, 18)`` in the reference).
        norm: normalization after each branch.

    Raises:
        ValueError: on non-positive channels or rates, or no rates.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (1, 6, 12, 18),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or len(rates) == 0 or any(r < 1 for r in rates):
            raise ValueError(f"bad arguments: in={in_channels}, out={out_channels}, rates={rates}.")
        self.branches = nn.ModuleList(
            Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, dilation=r, act=None, norm=norm)
            for r in rates
        )
        self.project = Convolution(spatial_dims, out_channels, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the pyramid.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``(B, out_channels, *spatial)``.
        """
        total = torch.zeros(1, dtype=x.dtype, device=x.device)
        for branch in self.branches:
            total = total + branch(x)
        return self.project(total)


class ResUNetPPAttention(nn.Module):
    """ResUNet++ decoder attention: the encoder feature ``g`` (twice the resolution) gates the decoder feature ``x``.

    ``a = conv3x3(norm-act(maxpool2(conv3x3(norm-act(g))) + conv3x3(norm-act(x))))``; output ``a * x``. The
    attention map has ``x``'s channels (element-wise, not one spatial map as in Attention U-Net), as in the
    reference.

    Args:
        spatial_dims: 2 or 3.
        g_channels: channels of the encoder (skip) feature ``g``.
        x_channels: channels of the decoder feature ``x``.
        norm: normalization type.
        act: activation type.

    Raises:
        ValueError: on non-positive channels.
    """

    def __init__(
        self,
        spatial_dims: int,
        g_channels: int,
        x_channels: int,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if g_channels < 1 or x_channels < 1:
            raise ValueError(f"channels must be positive, got g={g_channels}, x={x_channels}.")

        def pre_conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                get_norm_layer(norm, spatial_dims, cin),
                get_act_layer(act),
                Convolution(spatial_dims, cin, cout, kernel_size=3, conv_only=True),
            )

        self.g_conv = nn.Sequential(pre_conv(g_channels, x_channels), Pool[Pool.MAX, spatial_dims](kernel_size=2))
        self.x_conv = pre_conv(x_channels, x_channels)
        self.gc_conv = pre_conv(x_channels, x_channels)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x``.

        Args:
            g: encoder feature ``(B, Cg, *2S)``.
            x: decoder feature ``(B, Cx, *S)``.

        Returns:
            ``(B, Cx, *S)``.
        """
        return self.gc_conv(self.g_conv(g) + self.x_conv(x)) * x
