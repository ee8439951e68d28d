"""Parallel partial decoder (PPD) and its receptive-field-block (RFB) inputs.

Fan, Zhou, Ji, Zhou, Chen, Fu, Shen, Shao, "Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT
Images", IEEE TMI 39(8), 2020, https://doi.org/10.1109/TMI.2020.2996645, Section III-A.1 (Eq. 2, Fig. 3);
the partial decoder is from Wu, Su, Huang, "Cascaded Partial Decoder for Fast and Accurate Salient Object
Detection", CVPR 2019, and the RFB from Liu, Huang, Wang, "Receptive Field Block Net", ECCV 2018.
Reference code: DengPingFan/Inf-Net ``Code/model_lung_infection/InfNet_Res2Net.py`` (``RFB_modified``,
``aggregation``).

The PPD aggregates only the three high-level encoder features (after RFBs reduce them to ``channels``): the
deepest is up-sampled and multiplied into the shallower ones, then concatenated and fused into a global coarse
map ``S_g`` at 1/8 resolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["ParallelPartialDecoder", "ReceptiveFieldBlock"]


def _cb(
    cin: int, cout: int, kernel: int | tuple[int, int], dilation: int = 1, norm: str | tuple = "batch"
) -> Convolution:
    """Conv (no bias) + norm, no activation: the reference's ``BasicConv2d`` (its ReLU is never called)."""
    return Convolution(2, cin, cout, kernel_size=kernel, dilation=dilation, act=None, norm=norm, bias=False)


class ReceptiveFieldBlock(nn.Module):
    """Modified RFB (2D): four branches of 1x1, (1xk, kx1, 3x3 dilation k) for k = 3, 5, 7, fused, plus a shortcut.

    ``relu(conv3x3(cat(b0, b1, b2, b3)) + conv1x1(x))``. Two-dimensional because the branches use the
    asymmetric ``1 x k`` / ``k x 1`` kernels of the reference.

    Args:
        in_channels: input channels.
        out_channels: output channels (32 in Inf-Net).
        norm: normalization type.

    Raises:
        ValueError: on non-positive channels.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str | tuple = "batch") -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, out={out_channels}.")
        branches = [nn.Sequential(_cb(in_channels, out_channels, 1, norm=norm))]
        for k in (3, 5, 7):
            branches.append(
                nn.Sequential(
                    _cb(in_channels, out_channels, 1, norm=norm),
                    _cb(out_channels, out_channels, (1, k), norm=norm),
                    _cb(out_channels, out_channels, (k, 1), norm=norm),
                    _cb(out_channels, out_channels, 3, dilation=k, norm=norm),
                )
            )
        self.branches = nn.ModuleList(branches)
        self.conv_cat = _cb(4 * out_channels, out_channels, 3, norm=norm)
        self.conv_res = _cb(in_channels, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            ``(B, out_channels, H, W)``.
        """
        outs: list[torch.Tensor] = []
        for branch in self.branches:
            outs.append(branch(x))
        cat = torch.cat(outs, dim=1)
        return F.relu(self.conv_cat(cat) + self.conv_res(x))


class ParallelPartialDecoder(nn.Module):
    """Parallel partial decoder (the reference ``aggregation``) for three feature levels (2D).

    With ``x1`` the deepest (1/32), ``x2`` (1/16) and ``x3`` (1/8) features, all with ``channels`` channels:
    ``x2' = c1(up(x1)) * x2``; ``x3' = c2(up(up(x1))) * c3(up(x2)) * x3``;
    ``x2'' = c_cat2(cat(x2', c4(up(x1))))``; ``x3'' = c_cat3(cat(x3', c5(up(x2''))))``;
    ``out = conv1x1(c6(x3''))``. Every ``c`` is conv3x3 + norm. Up-sampling is bilinear (``align_corners=True``,
    as in the reference) to the size of the next level, not a fixed factor of 2, so odd sizes work.

    Args:
        channels: channels of the three inputs (32 in Inf-Net).
        out_channels: channels of the coarse map (classes).
        norm: normalization type.

    Raises:
        ValueError: on non-positive channels.
    """

    def __init__(self, channels: int, out_channels: int, norm: str | tuple = "batch") -> None:
        super().__init__()
        if channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got channels={channels}, out={out_channels}.")
        c = channels
        self.conv_up1 = _cb(c, c, 3, norm=norm)
        self.conv_up2 = _cb(c, c, 3, norm=norm)
        self.conv_up3 = _cb(c, c, 3, norm=norm)
        self.conv_up4 = _cb(c, c, 3, norm=norm)
        self.conv_up5 = _cb(2 * c, 2 * c, 3, norm=norm)
        self.conv_concat2 = _cb(2 * c, 2 * c, 3, norm=norm)
        self.conv_concat3 = _cb(3 * c, 3 * c, 3, norm=norm)
        self.conv4 = _cb(3 * c, 3 * c, 3, norm=norm)
        self.conv5 = Convolution(2, 3 * c, out_channels, kernel_size=1, conv_only=True)

    @staticmethod
    def _up(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=[ref.shape[2], ref.shape[3]], mode="bilinear", align_corners=True)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        """Aggregate.

        Args:
            x1: deepest features ``(B, C, H/32, W/32)``.
            x2: ``(B, C, H/16, W/16)``.
            x3: ``(B, C, H/8, W/8)``.

        Returns:
            Coarse logits ``(B, out_channels, H/8, W/8)``.
        """
        x1_up2 = self._up(x1, x2)
        x1_up3 = self._up(x1_up2, x3)
        x2_1 = self.conv_up1(x1_up2) * x2
        x3_1 = self.conv_up2(x1_up3) * self.conv_up3(self._up(x2, x3)) * x3
        x2_2 = self.conv_concat2(torch.cat([x2_1, self.conv_up4(x1_up2)], dim=1))
        x3_2 = self.conv_concat3(torch.cat([x3_1, self.conv_up5(self._up(x2_2, x3))], dim=1))
        return self.conv5(self.conv4(x3_2))
