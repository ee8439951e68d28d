"""3D DeepLabv3: dilated residual encoder (output stride 8) + ASPP + upsampling, the SAFNet paper's baseline.

Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabv3),
arXiv:1706.05587, 2017, Sections 3.2-3.3 (multi-grid-free variant). Baseline "3D DeepLabv3" of Yilizati-Yilihamu et
al., "A spine segmentation method based on scene aware fusion network", BMC Neuroscience 2023,
DOI 10.1186/s12868-023-00818-z, Table 1 (no details given there; no library provides a 3D DeepLabv3).

Layout (``w`` = ``widths``, ResNet basic blocks, ``blocks`` per stage):

    stem     conv-norm-act 3x3x3 stride s (1 -> w0), conv-norm-act 3x3x3 (w0 -> w0)           1/2
    stage1   blocks[0] basic blocks, first with stride s (w0 -> w0)                             1/4
    stage2   blocks[1] basic blocks, first with stride s (w0 -> w1)                             1/8
    stage3   blocks[2] basic blocks, dilation 2 instead of stride (w1 -> w2)                    1/8
    stage4   blocks[3] basic blocks, dilation 4 instead of stride (w2 -> w3)                    1/8
    ASPP(rates) -> conv-norm-act 3x3x3 -> 1x1x1 conv to classes -> (tri)linear upsampling to the input size

With ``in_plane_only=True`` (default, for few-slice MRI such as SAFNet's 18 x 256 x 128, depth first) the strides
are ``(1, 2, 2)`` and the dilations ``(1, d, d)``, so the output stride is 8 in-plane and 1 through-plane; with
``False`` they are isotropic. The ASPP rates default to (6, 12, 18) rather than DeepLabv3's (12, 24, 36) for output
stride 8, because a 256 x 128 slice gives 32 x 16 maps on which dilations of 24-36 sample only padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer

from spine_monai.networks.blocks.aspp import ASPP

__all__ = ["DeepLabV3_3D", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _BasicBlock(nn.Module):
    """ResNet basic block with optional stride and dilation: act(conv-norm-act, conv-norm + shortcut)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Sequence[int],
        dilation: Sequence[int],
        act: str | tuple,
        norm: str | tuple,
    ) -> None:
        super().__init__()
        self.conv1 = Convolution(
            spatial_dims, in_channels, out_channels, strides=strides, kernel_size=3, dilation=dilation,
            padding=dilation, act=act, norm=norm, bias=False,
        )  # fmt: skip
        self.conv2 = Convolution(
            spatial_dims, out_channels, out_channels, kernel_size=3, dilation=dilation, padding=dilation,
            act=None, norm=norm, bias=False,
        )  # fmt: skip
        if in_channels != out_channels or any(s != 1 for s in strides):
            self.shortcut: nn.Module = Convolution(
                spatial_dims, in_channels, out_channels, strides=strides, kernel_size=1, act=None, norm=norm, bias=False
            )
        else:
            self.shortcut = nn.Identity()
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class DeepLabV3_3D(nn.Module):  # noqa: N801 (the paper's name)
    """DeepLabv3 with a dilated residual encoder, for 3D (or 2D) volumes.

    Args:
        spatial_dims: 3 (``(B, C, D, H, W)``, depth first) or 2.
        in_channels: input channels.
        out_channels: classes including background.
        widths: channels of stages 1-4 (stem = ``widths[0]``).
        blocks: basic blocks per stage.
        aspp_channels: channels of the ASPP branches and of the head.
        aspp_rates: ASPP dilations, ints or per-axis tuples.
        in_plane_only: strides and encoder dilations only on the last two axes (3D only; see module docstring).
        act: activation (MONAI name or ``(name, kwargs)``).
        norm: normalisation.
        dropout: dropout after the ASPP projection (DeepLabv3 uses 0.5).

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3, a channel count is not positive, or ``widths`` / ``blocks``
            do not have 4 positive entries.

    Example::

        net = DeepLabV3_3D(spatial_dims=3, in_channels=1, out_channels=20)
        logits = net(torch.randn(1, 1, 18, 256, 128))  # (1, 20, 18, 256, 128)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 20,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (2, 2, 2, 2),
        aspp_channels: int = 128,
        aspp_rates: Sequence[int | Sequence[int]] = (6, 12, 18),
        in_plane_only: bool = True,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1 or aspp_channels < 1:
            raise ValueError(
                f"in_channels, out_channels and aspp_channels must be positive, got {in_channels}, {out_channels}, "
                f"{aspp_channels}."
            )
        if len(widths) != 4 or any(w < 1 for w in widths):
            raise ValueError(f"widths must have 4 positive entries, got {widths!r}.")
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ValueError(f"blocks must have 4 positive entries, got {blocks!r}.")
        anis = in_plane_only and spatial_dims == 3
        self.interp_mode = "trilinear" if spatial_dims == 3 else "bilinear"

        def axes(v: int) -> tuple[int, ...]:
            return (1, v, v) if anis else (v,) * spatial_dims

        one = (1,) * spatial_dims
        self.stem = nn.Sequential(
            Convolution(spatial_dims, in_channels, widths[0], strides=axes(2), kernel_size=3, act=act, norm=norm),
            Convolution(spatial_dims, widths[0], widths[0], kernel_size=3, act=act, norm=norm),
        )
        stages = []
        cin = widths[0]
        # (stride, dilation) per stage: output stride 8 with dilation 2 and 4 in the last two stages
        plan = zip(widths, blocks, (axes(2), axes(2), one, one), (one, one, axes(2), axes(4)), strict=True)
        for cout, n, stride, dil in plan:
            layers = []
            for i in range(n):
                layers.append(_BasicBlock(spatial_dims, cin, cout, stride if i == 0 else one, dil, act, norm))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.encoder = nn.Sequential(*stages)
        self.aspp = ASPP(spatial_dims, widths[3], aspp_channels, rates=aspp_rates, norm=norm, act=act, dropout=dropout)
        self.head = nn.Sequential(
            Convolution(spatial_dims, aspp_channels, aspp_channels, kernel_size=3, act=act, norm=norm, bias=False),
            Conv[Conv.CONV, spatial_dims](aspp_channels, out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a volume.

        Args:
            x: image ``(B, in_channels, *spatial)``; any size.

        Returns:
            Logits ``(B, out_channels, *x.shape[2:])``.
        """
        y = self.head(self.aspp(self.encoder(self.stem(x))))  # output stride 8
        return F.interpolate(y, size=x.shape[2:], mode=self.interp_mode, align_corners=False)
