"""Atrous spatial pyramid pooling (ASPP) with an image-pooling branch, for 2D and 3D feature maps.

Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabv3),
arXiv:1706.05587, 2017, Section 3.3 and Fig. 5. As used on SAFNet's high-level features: Yilizati-Yilihamu et al.,
"A spine segmentation method based on scene aware fusion network", BMC Neuroscience 2023,
DOI 10.1186/s12868-023-00818-z, section "Atrous spatial pyramid pooling" and Fig. 4 (five branches: 1x1; 3x3 with
dilation and padding 6, 12, 18; global pooling + 1x1 + upsampling; concatenation; 1x1 projection).

Choices where the papers are silent or the 3D case needs one:
- Anisotropic dilation: an entry of ``rates`` is an int (same dilation on every axis) or a tuple with one dilation
  per spatial axis, e.g. ``(1, 6, 6)`` for a ``(D, H, W)`` volume with few slices (SAFNet's 18 slices: a depth
  dilation of 18 only ever samples zero padding). Padding equals the dilation, so every branch keeps the size.
- The image-pooling branch is global average pooling -> 1x1 convolution (with bias) -> activation, without
  normalisation: a norm over a single 1x1(x1) value per channel is undefined for batch size 1 in training
  (BatchNorm raises), which SAFNet-size 3D volumes often need. Its output is broadcast back to the input size
  (nearest-neighbour "upsampling" of a 1x1 map, identical to any interpolation of a constant).
- The other branches and the projection are conv-norm-act without bias (DeepLabv3 / torchvision layout); each branch
  has ``out_channels`` channels and the projection maps ``5 * out_channels`` (more with more rates) to
  ``out_channels``. ``dropout`` follows the projection (DeepLabv3 uses 0.5; default 0.0 here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Dropout, Pool
from monai.networks.layers.utils import get_act_layer

__all__ = ["ASPP"]


def _per_axis(rate: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    """Expand an int to ``spatial_dims`` entries or check a per-axis sequence; raise ``ValueError`` if invalid."""
    values = (int(rate),) * spatial_dims if isinstance(rate, int) else tuple(int(r) for r in rate)
    if len(values) != spatial_dims or any(v < 1 for v in values):
        raise ValueError(f"{name} must be a positive int or {spatial_dims} positive ints, got {rate!r}.")
    return values


class ASPP(nn.Module):
    """Five-branch atrous spatial pyramid pooling (with the default three rates).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of the input feature map.
        out_channels: channels of every branch and of the output.
        rates: dilation of each 3x3 branch; an int (isotropic) or a tuple with one dilation per spatial axis.
        norm: normalisation of the convolutional branches and the projection (MONAI name or ``(name, kwargs)``).
        act: activation of all branches and of the projection, or None.
        dropout: dropout probability after the projection.

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3, a channel count is not positive, ``rates`` is empty or has an
            invalid entry, or ``dropout`` is not in ``[0, 1)``.

    Example::

        aspp = ASPP(spatial_dims=3, in_channels=128, out_channels=128, rates=((1, 6, 6), (1, 12, 12), (1, 18, 18)))
        y = aspp(torch.randn(2, 128, 18, 16, 8))  # (2, 128, 18, 16, 8)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int | Sequence[int]] = (6, 12, 18),
        norm: str | tuple = "batch",
        act: str | tuple | None = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if isinstance(rates, int) or len(rates) == 0:
            raise ValueError(f"rates must be a non-empty sequence, got {rates!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.rates = [_per_axis(r, spatial_dims, "each entry of rates") for r in rates]

        branches = [Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, act=act, norm=norm, bias=False)]
        for dil in self.rates:
            branches.append(
                Convolution(
                    spatial_dims,
                    in_channels,
                    out_channels,
                    kernel_size=3,
                    dilation=dil,
                    padding=dil,
                    act=act,
                    norm=norm,
                    bias=False,
                )
            )
        self.branches = nn.ModuleList(branches)
        # image pooling: GAP -> 1x1 conv (bias) -> act, no norm (see module docstring)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.pool_conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1)
        self.pool_act = get_act_layer(act) if act is not None else nn.Identity()
        num_branches = len(branches) + 1
        self.project = Convolution(
            spatial_dims, num_branches * out_channels, out_channels, kernel_size=1, act=act, norm=norm, bias=False
        )
        self.dropout = Dropout[Dropout.DROPOUT, 1](dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the pyramid.

        Args:
            x: feature map ``(B, in_channels, *spatial)``.

        Returns:
            Tensor ``(B, out_channels, *spatial)``.
        """
        outs = [branch(x) for branch in self.branches]
        pooled = self.pool_act(self.pool_conv(self.pool(x)))  # (B, out, 1, ..., 1)
        outs.append(F.interpolate(pooled, size=x.shape[2:], mode="nearest"))  # broadcast back to x's size
        return self.dropout(self.project(torch.cat(outs, dim=1)))
