"""SAFNet residual downsampling unit: a strided 3x3x3 CBR branch plus a strided 1x1x1 CBR branch, summed.

Yilizati-Yilihamu, Yang, Yang, Rong, Feng, "A spine segmentation method based on scene aware fusion network",
BMC Neuroscience 2023, DOI 10.1186/s12868-023-00818-z, section "Feature extraction network" and Fig. 3:
"one branch applies a deeper CBR process using a 3x3x3 kernel and performs downsampling using a convolution with a
stride of (1, 2, 2). The other branch processes the feature map using a CBR with a 1x1x1 kernel and stride of
(1, 2, 2). The low-level features are obtained by element-wise adding the results of the two branches."

CBR = convolution + batch norm + ReLU. Unlike ``monai.networks.blocks.ResidualUnit`` (strided 3x3x3 shortcut, no
activation on it), the shortcut here is a 1x1x1 CBR and both branches end with their own activation before the sum,
as the text describes. ``num_convs > 1`` appends stride-1 CBRs to the 3x3x3 branch (one reading of "deeper"); the
default is one. Stride ``1`` gives the same unit without downsampling (used where the paper applies the residual
network at the same resolution).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["ResidualDown"]


class ResidualDown(nn.Module):
    """Two-branch residual (down)sampling unit of SAFNet (2D or 3D).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (3D inputs are ``(B, C, D, H, W)``, depth first).
        in_channels: input channels.
        out_channels: output channels.
        strides: stride of both branches; default ``(1, 2, 2)`` in 3D (depth kept) and ``2`` in 2D.
        kernel_size: kernel size of the deep branch (3 in the paper).
        num_convs: number of CBR units in the deep branch (the first is strided).
        act: activation of every CBR (MONAI name or ``(name, kwargs)``).
        norm: normalisation of every CBR.

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3, a channel count or ``num_convs`` is not positive,
            ``kernel_size`` is not a positive odd int, or ``strides`` is invalid.

    Example::

        down = ResidualDown(spatial_dims=3, in_channels=128, out_channels=128)
        y = down(torch.randn(1, 128, 18, 128, 64))  # (1, 128, 18, 64, 32)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Sequence[int] | int | None = None,
        kernel_size: int = 3,
        num_convs: int = 1,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if num_convs < 1:
            raise ValueError(f"num_convs must be positive, got {num_convs}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
        if strides is None:
            strides = (1, 2, 2) if spatial_dims == 3 else 2
        stride_t = (strides,) * spatial_dims if isinstance(strides, int) else tuple(strides)
        if len(stride_t) != spatial_dims or any(s < 1 for s in stride_t):
            raise ValueError(f"strides must be a positive int or {spatial_dims} positive ints, got {strides!r}.")
        self.strides = stride_t
        deep = [
            Convolution(
                spatial_dims, in_channels, out_channels, strides=stride_t, kernel_size=kernel_size, act=act, norm=norm
            )
        ]
        for _ in range(num_convs - 1):
            deep.append(
                Convolution(spatial_dims, out_channels, out_channels, kernel_size=kernel_size, act=act, norm=norm)
            )
        self.deep = nn.Sequential(*deep)
        self.shortcut = Convolution(
            spatial_dims, in_channels, out_channels, strides=stride_t, kernel_size=1, act=act, norm=norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the two branches.

        Args:
            x: feature map ``(B, in_channels, *spatial)``.

        Returns:
            Tensor ``(B, out_channels, *ceil(spatial / strides))``.
        """
        return self.deep(x) + self.shortcut(x)
