"""Reverse attention (RA) with edge guidance, extended from one class to many.

Fan, Zhou, Ji, Zhou, Chen, Fu, Shen, Shao, "Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT
Images", IEEE TMI 39(8), 2020, https://doi.org/10.1109/TMI.2020.2996645, Section III-A.3 (Eq. 4-5, Fig. 4);
reverse attention first in Chen et al., "Reverse Attention for Salient Object Detection", ECCV 2018.
Reference code: DengPingFan/Inf-Net ``Code/model_lung_infection/InfNet_Res2Net.py`` (``ra{2,3,4}_conv*``).

One RA stage takes encoder features ``f``, the coarser prediction ``p`` (up-sampled to ``f``), and the edge
guidance features ``e``; it erases what ``p`` already explains, ``f' = f * (1 - sigmoid(p))`` (Eq. 4), refines
``cat(conv1x1(f'), e)`` with a few convolutions, and adds the result to ``p`` as a residual (Eq. 5).

Multi-class adaptation (the reference supports one class only: ``(1 - sigmoid(p)).expand(-1, C, ...)``).
For ``K > 1`` classes the prediction is a softmax over classes; the reverse weight is one map, so the
parameter count equals the reference and the stage stays class-agnostic:

- ``"foreground"`` (default): ``w = 1 - sum_{k >= 1} softmax(p)_k = softmax(p)_0``, i.e. one minus the
  probability that the pixel is any foreground class (channel 0 is background). This is the direct extension
  of ``1 - sigmoid(p)``: the stage mines what is not yet segmented.
- ``"confidence"``: ``w = 1 - max_k softmax(p)_k``; it attends where the current prediction is uncertain,
  including boundaries between two adjacent foreground classes (e.g. a vertebra and its disc).

With ``K == 1`` both modes reduce to the reference ``1 - sigmoid(p)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["REVERSE_MODES", "ReverseAttention", "reverse_weight"]

REVERSE_MODES = ("foreground", "confidence")


def reverse_weight(logits: torch.Tensor, mode: str = "foreground") -> torch.Tensor:
    """One-channel reverse-attention weight from prediction logits.

    Args:
        logits: ``(B, K, *spatial)``; ``K == 1`` is a binary (sigmoid) map, ``K > 1`` softmax classes with the
            background at channel 0.
        mode: ``"foreground"`` or ``"confidence"`` (see the module docstring).

    Returns:
        ``(B, 1, *spatial)`` with values in ``[0, 1]``.

    Raises:
        ValueError: on an unknown mode.
    """
    if mode != "foreground" and mode != "confidence":
        raise ValueError(f"mode must be 'foreground' or 'confidence', got '{mode}'.")
    if logits.shape[1] == 1:
        return 1.0 - torch.sigmoid(logits)
    prob = torch.softmax(logits, dim=1)
    if mode == "foreground":
        return prob[:, :1]
    return 1.0 - prob.amax(dim=1, keepdim=True)


class ReverseAttention(nn.Module):
    """One reverse-attention refinement stage of Inf-Net / PraNet.

    ``f' = f * w(p)``; ``h = conv1x1(f')`` (conv-BN); ``h = cat(h, e)``; ``num_convs`` times conv-BN-ReLU;
    a final conv-BN to ``out_channels``; output ``p + h``. The layer layout follows the reference: the deepest stage
    uses ``mid_channels=256``, kernel 5, three convolutions and a 1x1 output; the other two use 64, kernel 3, two
    convolutions and a 3x3 output. The final normalization on the residual logits is the reference's
    ``BasicConv2d`` (conv + BN).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the encoder features ``f``.
        out_channels: classes ``K`` (channels of ``p``).
        mid_channels: width of the refinement convolutions.
        edge_channels: channels of the edge guidance ``e`` (0: no edge guidance).
        kernel_size: kernel of the refinement convolutions.
        num_convs: number of conv-BN-ReLU refinement layers (>= 1).
        out_kernel_size: kernel of the output convolution.
        mode: multi-class reverse weight, ``"foreground"`` or ``"confidence"``.
        norm: normalization type.
        act: activation type.

    Raises:
        ValueError: on bad sizes or an unknown mode.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mid_channels: int = 64,
        edge_channels: int = 64,
        kernel_size: int = 3,
        num_convs: int = 2,
        out_kernel_size: int = 3,
        mode: str = "foreground",
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, mid_channels, num_convs) < 1 or edge_channels < 0:
            raise ValueError(
                f"bad sizes: in={in_channels}, out={out_channels}, mid={mid_channels}, edge={edge_channels}, "
                f"num_convs={num_convs}."
            )
        if mode not in REVERSE_MODES:
            raise ValueError(f"mode must be one of {REVERSE_MODES}, got {mode!r}.")
        self.mode = mode
        self.reduce = Convolution(spatial_dims, in_channels, mid_channels, kernel_size=1, act=None, norm=norm,
                                  bias=False)
        convs: list[nn.Module] = []
        channels = mid_channels + edge_channels
        for _ in range(num_convs):
            convs.append(Convolution(spatial_dims, channels, mid_channels, kernel_size=kernel_size, act=act,
                                     norm=norm, bias=False))
            channels = mid_channels
        convs.append(Convolution(spatial_dims, mid_channels, out_channels, kernel_size=out_kernel_size, act=None,
                                 norm=norm, bias=False))
        self.refine = nn.Sequential(*convs)
        self.use_edge = edge_channels > 0

    def forward(self, feat: torch.Tensor, prior: torch.Tensor, edge: torch.Tensor | None = None) -> torch.Tensor:
        """Refine a coarse prediction.

        Args:
            feat: encoder features ``(B, C, *spatial)``.
            prior: coarser logits ``(B, K, *spatial')``, resized to ``feat``'s size here.
            edge: edge guidance ``(B, E, *spatial'')``, resized to ``feat``'s size here; required when
                ``edge_channels > 0``.

        Returns:
            Refined logits ``(B, K, *spatial)`` of ``feat``'s spatial size.

        Raises:
            ValueError: if the edge guidance is missing although configured.
        """
        size = feat.shape[2:]
        mode = "bilinear" if feat.dim() == 4 else "trilinear"
        prior = F.interpolate(prior, size=size, mode=mode, align_corners=False)
        x = self.reduce(feat * reverse_weight(prior, self.mode))  # (B, C, ...) * (B, 1, ...) -> (B, mid, ...)
        if self.use_edge:
            if edge is None:
                raise ValueError("edge guidance features are required (edge_channels > 0).")
            x = torch.cat([x, F.interpolate(edge, size=size, mode=mode, align_corners=False)], dim=1)
        return prior + self.refine(x)
