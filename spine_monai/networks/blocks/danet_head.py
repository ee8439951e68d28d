"""DANet head: parallel position- and channel-attention branches on top of a backbone feature map.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983,
Section 3.4 (Attention Module Embedding with Networks) and Fig. 2. Used as the DANet baseline of the twelve-model
review and of the SEAM comparison, and by the FPN baselines.

Layout of the authors' ``DANetHead`` (github.com/junfu1115/DANet, ``encoding/models/sseg/danet.py``), written anew
with MONAI factories for 2D and 3D:

    inter = in_channels // 4
    PAM branch:  conv3x3-norm-act (in -> inter) -> PositionAttention -> conv3x3-norm-act (inter -> inter)
    CAM branch:  conv3x3-norm-act (in -> inter) -> ChannelAttention  -> conv3x3-norm-act (inter -> inter)
    sum of both branches -> channel dropout (0.1) -> conv1x1 (inter -> out_channels, with bias)

The 3x3 convolutions have no bias (a norm follows them), as in the official code. The official head also returns the
two single-branch predictions (``conv6``/``conv7``) for auxiliary losses; they are not built here (the paper's
evaluation uses the fused output); ``forward_branches`` returns the two branch features for such losses.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Dropout

from spine_monai.networks.blocks.channel_attention import ChannelAttention
from spine_monai.networks.blocks.position_attention import PositionAttention

__all__ = ["DANetHead"]


class DANetHead(nn.Module):
    """Dual-attention segmentation head (2D or 3D).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of the backbone feature map (2048 for ResNet-101 in DANet).
        out_channels: number of output channels (classes).
        norm: normalisation after each 3x3 convolution (MONAI name or ``(name, kwargs)``).
        act: activation after each 3x3 convolution (MONAI name or ``(name, kwargs)``).
        dropout: channel-dropout probability before the final 1x1 convolution (0.1 in DANet).
        inter_channels: channels inside the head; default ``in_channels // 4`` as in DANet.
        reduction: query/key channel reduction of the position attention (8 in DANet).
        max_positions: largest number of positions the position attention accepts (see ``PositionAttention``).

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3, a channel count is not positive, ``in_channels // 4`` is 0,
            or ``dropout`` is not in ``[0, 1)``.

    Example::

        head = DANetHead(spatial_dims=2, in_channels=2048, out_channels=20)
        logits = head(torch.randn(2, 2048, 64, 64))  # (2, 20, 64, 64), same spatial size as the input
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        dropout: float = 0.1,
        inter_channels: int | None = None,
        reduction: int = 8,
        max_positions: int = 65536,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        inter = in_channels // 4 if inter_channels is None else inter_channels
        if inter < 1:
            raise ValueError(f"inter_channels must be positive, got {inter} (in_channels={in_channels}).")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.inter_channels = inter

        def cna(cin: int, cout: int) -> Convolution:
            return Convolution(spatial_dims, cin, cout, kernel_size=3, act=act, norm=norm, bias=False)

        self.conv_pam_in = cna(in_channels, inter)
        self.pam = PositionAttention(spatial_dims, inter, reduction=reduction, max_positions=max_positions)
        self.conv_pam_out = cna(inter, inter)
        self.conv_cam_in = cna(in_channels, inter)
        self.cam = ChannelAttention(spatial_dims, inter)
        self.conv_cam_out = cna(inter, inter)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.classifier = Conv[Conv.CONV, spatial_dims](inter, out_channels, kernel_size=1)

    @torch.jit.export
    def forward_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the two attention branches.

        Args:
            x: backbone features ``(B, in_channels, *spatial)``.

        Returns:
            ``(pam_features, cam_features)``, each ``(B, inter_channels, *spatial)``.
        """
        pam_feat = self.conv_pam_out(self.pam(self.conv_pam_in(x)))
        cam_feat = self.conv_cam_out(self.cam(self.conv_cam_in(x)))
        return pam_feat, cam_feat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused prediction of both branches.

        Args:
            x: backbone features ``(B, in_channels, *spatial)``.

        Returns:
            Logits ``(B, out_channels, *spatial)`` at the resolution of ``x``.
        """
        pam_feat, cam_feat = self.forward_branches(x)
        return self.classifier(self.dropout(pam_feat + cam_feat))
