"""Channel attention module (CAM): self-attention between the channels of a feature map.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983,
Section 3.3 (Channel Attention Module, equations 3-4). Used after the position attention module on SAFNet's
high-level features: Yilizati-Yilihamu et al., BMC Neuroscience 2023, DOI 10.1186/s12868-023-00818-z,
section "Self-attention mechanism" and Fig. 6.

Follows the authors' code (github.com/junfu1115/DANet, ``encoding/nn/da_att.py``, ``CAM_Module``), written anew for
any number of spatial dimensions. There are no convolutions:

    X = x.flatten(2)                               (B, C, N)
    E = X X^T                                      (B, C, C)
    A = softmax(max(E, dim=-1) - E, dim=-1)        the official code's "energy_new"; eq. (3) of the paper
                                                   writes softmax(E), the code's form is followed here
    out = gamma * (A X) + x                        gamma is a learnable scalar initialised to 0

``max - E`` keeps the softmax arguments non-negative and bounded at 0 for the most similar channel, so that each
channel is rebuilt mostly from the channels *least* correlated with it. The ``C x C`` matrix is small: no guard needed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ChannelAttention"]


class ChannelAttention(nn.Module):
    """DANet channel attention module for 2D or 3D feature maps.

    Args:
        spatial_dims: number of spatial dimensions, 1, 2 or 3.
        in_channels: channels ``C`` of the input (and of the output); used to validate inputs.

    Raises:
        ValueError: if ``spatial_dims`` is not 1, 2 or 3 or ``in_channels`` is not positive.

    Example::

        cam = ChannelAttention(spatial_dims=3, in_channels=128)
        y = cam(torch.randn(2, 128, 18, 16, 8))  # same shape
    """

    def __init__(self, spatial_dims: int, in_channels: int) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-weight each channel by its affinity to the other channels.

        Args:
            x: feature map ``(B, C, *spatial)``.

        Returns:
            Tensor of the same shape as ``x``: ``gamma * attended + x``.

        Raises:
            ValueError: if ``x`` has the wrong number of dimensions or channels.
        """
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (B, C, *spatial), got shape {list(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {x.shape[1]}.")
        flat = x.flatten(2)  # (B, C, *spatial) -> (B, C, N)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, N) x (B, N, C) -> (B, C, C)
        energy_new = energy.amax(dim=-1, keepdim=True) - energy  # official DANet: max(energy) - energy
        attention = torch.softmax(energy_new, dim=-1)
        out = torch.bmm(attention, flat).reshape(x.shape)  # (B, C, C) x (B, C, N) -> (B, C, *spatial)
        return self.gamma * out + x
