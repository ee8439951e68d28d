"""SAFNet multiscale fusion: parallel dilated branches, hierarchical addition, channel concatenation.

Yilizati-Yilihamu, Yang, Yang, Rong, Feng, "A spine segmentation method based on scene aware fusion network",
BMC Neuroscience 2023, DOI 10.1186/s12868-023-00818-z, section "Multiscale fusion". Applied to the low- and mid-level
features to "enhance the scene perception ability ... while preventing further reduction in resolution
and increasing the receptive field".

The paper lists four parallel "layers", each with "dimensionality reduction (1/4)" and "dilated ratio (1, k)" for
k = 2, 4, 8, 16, then: "Element-wise addition is performed on each branch, and the structures of the four branches
are concatenated along the channel dimension". Our reading (Fig. 4-6 are not in the text we have):

- Branch i is one CBR unit (3x3x3 convolution, norm, activation; SAFNet calls Conv-BN-ReLU "CBR") from ``C`` to
  ``C/4`` channels. "(1, k)" is a pair (through-plane dilation, in-plane dilation): in 3D on ``(D, H, W)`` volumes
  the dilation is ``(1, k, k)``. SAFNet's volumes have 18 slices and keep the depth at every level, and the paper
  dilates only what it downsamples; a depth dilation of 16 on 18 slices would only sample zero padding. In 2D the
  dilation is ``(k, k)``.
- "Element-wise addition on each branch" is read as the hierarchical feature fusion of ESPNet (Mehta et al., ECCV
  2018), the standard way to add parallel dilated branches before concatenating them:
  ``y_1 = b_1, y_i = y_{i-1} + b_i``, output ``concat(y_1, ..., y_4)``, which has ``C`` channels again. The sums
  let each larger dilation see the denser sampling of the smaller ones (no gridding artefacts).
- ``residual=True`` adds the input to the concatenation (ESPNet does); the paper does not mention it, so the
  default is ``False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["MultiscaleFusion"]


class MultiscaleFusion(nn.Module):
    """Four-branch dilated multiscale fusion of SAFNet (2D or 3D).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (3D inputs are ``(B, C, D, H, W)``, depth first).
        in_channels: channels ``C`` of the input and of the output; divisible by the number of branches.
        dilations: in-plane dilation ``k`` of each branch (paper: 2, 4, 8, 16), or per-axis tuples.
        depth_dilation: through-plane dilation of the int entries of ``dilations`` in 3D (paper's "1").
        kernel_size: kernel size of every branch convolution.
        norm: normalisation of the branch units (MONAI name or ``(name, kwargs)``).
        act: activation of the branch units.
        residual: add the input to the output.

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3, ``in_channels`` is not positive or not divisible by
            ``len(dilations)``, or a dilation is not positive or has the wrong length.

    Example::

        msf = MultiscaleFusion(spatial_dims=3, in_channels=128)
        y = msf(torch.randn(1, 128, 18, 64, 32))  # (1, 128, 18, 64, 32)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        dilations: Sequence[int | Sequence[int]] = (2, 4, 8, 16),
        depth_dilation: int = 1,
        kernel_size: int = 3,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        residual: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if isinstance(dilations, int) or len(dilations) == 0:
            raise ValueError(f"dilations must be a non-empty sequence, got {dilations!r}.")
        if in_channels < 1 or in_channels % len(dilations) != 0:
            raise ValueError(
                f"in_channels must be a positive multiple of len(dilations) = {len(dilations)}, got {in_channels}."
            )
        if depth_dilation < 1:
            raise ValueError(f"depth_dilation must be positive, got {depth_dilation}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
        self.residual = residual
        parsed = []
        for d in dilations:
            if isinstance(d, int):
                dil = (depth_dilation, d, d) if spatial_dims == 3 else (d, d)
            else:
                dil = tuple(int(v) for v in d)
            if len(dil) != spatial_dims or any(v < 1 for v in dil):
                raise ValueError(f"each dilation must be a positive int or {spatial_dims} positive ints, got {d!r}.")
            parsed.append(dil)
        self.dilations = parsed
        branch_channels = in_channels // len(dilations)
        self.branches = nn.ModuleList(
            [
                Convolution(
                    spatial_dims,
                    in_channels,
                    branch_channels,
                    kernel_size=kernel_size,
                    dilation=dil,
                    padding=tuple(v * (kernel_size - 1) // 2 for v in dil),
                    act=act,
                    norm=norm,
                    bias=False,
                )
                for dil in self.dilations
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fuse the branches.

        Args:
            x: feature map ``(B, C, *spatial)``.

        Returns:
            Tensor ``(B, C, *spatial)``: ``concat(y_1, ..., y_n)`` with ``y_i = y_{i-1} + branch_i(x)``
            (plus ``x`` if ``residual``).
        """
        outs: list[torch.Tensor] = []
        acc = torch.zeros(0)
        for i, branch in enumerate(self.branches):
            b = branch(x)
            acc = b if i == 0 else acc + b  # hierarchical element-wise addition
            outs.append(acc)
        y = torch.cat(outs, dim=1)
        return y + x if self.residual else y
