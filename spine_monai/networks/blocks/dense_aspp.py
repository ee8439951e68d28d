"""DenseASPP: atrous convolutions with increasing rates, densely connected.

Yang, Yu, Zhang, Li, Yang, "DenseASPP for Semantic Segmentation in Street Scenes", CVPR 2018,
https://doi.org/10.1109/CVPR.2018.00388, Section 3.2-3.3 (Fig. 2, Eq. 3). Reference code:
DeepMotionAIResearch/DenseASPP ``models/DenseASPP.py`` (``_DenseAsppBlock`` and the ``ASPP_3 ... ASPP_24`` chain).

Every branch ``l`` sees the concatenation of the encoder feature and all earlier branch outputs
(``y_l = H_{K, d_l}([y_{l-1}, ..., y_0])``), so later, more dilated branches build on denser, multi-scale
inputs and the receptive fields of the cascade combine densely.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer, get_norm_layer

__all__ = ["DenseASPP"]


class _DenseASPPBranch(nn.Sequential):
    """``[norm] -> act -> conv1x1 -> norm -> act -> conv3x3 (dilated) -> channel dropout``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        dilation: int,
        act: str | tuple,
        norm: str | tuple,
        dropout: float,
        norm_first: bool,
    ) -> None:
        layers: list[nn.Module] = []
        if norm_first:
            layers.append(get_norm_layer(norm, spatial_dims, in_channels))
        layers.append(get_act_layer(act))
        layers.append(Convolution(spatial_dims, in_channels, bottleneck_channels, kernel_size=1, conv_only=True))
        layers.append(get_norm_layer(norm, spatial_dims, bottleneck_channels))
        layers.append(get_act_layer(act))
        layers.append(
            Convolution(spatial_dims, bottleneck_channels, out_channels, kernel_size=3, dilation=dilation,
                        act=None, norm=None, dropout=dropout, dropout_dim=spatial_dims, adn_ordering="D")
        )
        super().__init__(*layers)


class DenseASPP(nn.Module):
    """Densely connected atrous spatial pyramid (2D or 3D).

    Output ``cat([y_L, ..., y_1, x])`` with ``self.out_channels = in_channels + len(dilations) * growth_channels``
    channels (newest branch first, as the reference concatenates ``(aspp_l, feature)``).

    Choices from the reference code: each branch is pre-activation ``[norm] -> act -> 1x1 conv (bias) -> norm ->
    act -> 3x3 dilated conv (bias) -> dropout``; the first branch has no leading norm because the encoder ends with
    one (``norm_first_branch=False``); dropout is channel-wise (``Dropout2d`` / ``Dropout3d``), rate 0.1. The
    DenseNet-161 setting is ``bottleneck_channels=512, growth_channels=128``; DenseNet-169 ``336, 168``;
    DenseNet-121 ``128, 64``; DenseNet-201 ``480, 240``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the encoder feature.
        growth_channels: output channels of each branch (``d_feature1`` in the reference).
        bottleneck_channels: channels of each branch's 1x1 bottleneck (``d_feature0``).
        dilations: dilation rate of each branch, in cascade order.
        act: activation type.
        norm: normalization type.
        dropout: channel-dropout rate after each branch.
        norm_first_branch: whether the first branch starts with a normalization layer.

    Raises:
        ValueError: on non-positive sizes, an empty or non-positive ``dilations``, or a bad dropout rate.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        growth_channels: int = 128,
        bottleneck_channels: int = 512,
        dilations: Sequence[int] = (3, 6, 12, 18, 24),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float = 0.1,
        norm_first_branch: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if min(in_channels, growth_channels, bottleneck_channels) < 1:
            raise ValueError(
                f"channels must be positive, got in={in_channels}, growth={growth_channels}, "
                f"bottleneck={bottleneck_channels}."
            )
        if len(dilations) == 0 or any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be a non-empty sequence of positive integers, got {dilations}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.dilations = tuple(int(d) for d in dilations)
        self.branches = nn.ModuleList()
        channels = in_channels
        for i, rate in enumerate(self.dilations):
            self.branches.append(
                _DenseASPPBranch(spatial_dims, channels, bottleneck_channels, growth_channels, rate, act, norm,
                                 dropout, norm_first=norm_first_branch or i > 0)
            )
            channels += growth_channels
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the cascade.

        Args:
            x: features ``(B, C, H, W[, D])``.

        Returns:
            ``(B, C + L * growth_channels, H, W[, D])``.
        """
        for branch in self.branches:
            x = torch.cat([branch(x), x], dim=1)
        return x
