"""Position attention module (PAM): self-attention over all spatial positions of a feature map.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983,
Section 3.2 (Position Attention Module, equations 1-2). Used on the high-level features of SAFNet:
Yilizati-Yilihamu, Yang, Yang, Rong, Feng, "A spine segmentation method based on scene aware fusion network",
BMC Neuroscience 2023, DOI 10.1186/s12868-023-00818-z, section "Self-attention mechanism" and Fig. 5.

Follows the authors' code (github.com/junfu1115/DANet, ``encoding/nn/da_att.py``, ``PAM_Module``), written anew for
any number of spatial dimensions:

    Q = conv_q(x), K = conv_k(x)      (B, C/r, N)   1x1 convolutions, r = 8 in DANet and SAFNet
    V = conv_v(x)                     (B, C, N)
    A = softmax(Q^T K, dim=-1)        (B, N, N)     N = prod(spatial), e.g. D*H*W
    out = gamma * (V A^T) + x         gamma is a learnable scalar initialised to 0

The ``N x N`` attention matrix is quadratic in the number of positions (at 18 x 16 x 8 it is 2304^2 floats, 21 MB per
sample; at the full 18 x 256 x 128 SAFNet input it would be 3.5 TB). ``max_positions`` refuses such inputs with a
``ValueError`` before anything of size ``N x N`` is allocated.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

__all__ = ["PositionAttention"]


class PositionAttention(nn.Module):
    """DANet position attention module for 2D or 3D feature maps.

    Args:
        spatial_dims: number of spatial dimensions, 1, 2 or 3.
        in_channels: channels ``C`` of the input (and of the output).
        reduction: channel reduction ``r`` of the query and key projections (``C // r`` channels, 8 in DANet).
        max_positions: largest accepted number of positions ``N``; larger inputs raise ``ValueError``
            instead of allocating the ``(B, N, N)`` attention matrix.

    Raises:
        ValueError: if ``spatial_dims`` is not 1, 2 or 3, ``in_channels`` or ``reduction`` is not positive,
            ``in_channels // reduction`` is 0, or ``max_positions`` is not positive.

    Example::

        pam = PositionAttention(spatial_dims=3, in_channels=128)
        y = pam(torch.randn(2, 128, 18, 16, 8))  # same shape; N = 2304 positions
    """

    def __init__(self, spatial_dims: int, in_channels: int, reduction: int = 8, max_positions: int = 65536) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if reduction < 1:
            raise ValueError(f"reduction must be positive, got {reduction}.")
        if in_channels // reduction < 1:
            raise ValueError(
                f"in_channels // reduction must be at least 1, got in_channels={in_channels}, reduction={reduction}."
            )
        if max_positions < 1:
            raise ValueError(f"max_positions must be positive, got {max_positions}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.max_positions = max_positions
        conv_type = Conv[Conv.CONV, spatial_dims]
        key_channels = in_channels // reduction
        self.query_conv = conv_type(in_channels, key_channels, kernel_size=1)
        self.key_conv = conv_type(in_channels, key_channels, kernel_size=1)
        self.value_conv = conv_type(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend every position to every other position.

        Args:
            x: feature map ``(B, C, *spatial)``, e.g. ``(B, C, H, W)`` or ``(B, C, D, H, W)``.

        Returns:
            Tensor of the same shape as ``x``: ``gamma * attended + x``.

        Raises:
            ValueError: if ``x`` has the wrong number of dimensions or channels, or more than ``max_positions``
                positions (the message gives ``N``, the limit and the memory the attention matrix would need).
        """
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (B, C, *spatial), got shape {list(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {x.shape[1]}.")
        batch = x.shape[0]
        num_positions = 1
        for s in x.shape[2:]:
            num_positions *= s
        if num_positions > self.max_positions:
            # energy and its softmax are two (B, N, N) tensors of x's element size.
            mib = 2 * batch * num_positions * num_positions * x.element_size() // (1024 * 1024)
            raise ValueError(
                f"PositionAttention: N = {num_positions} positions (spatial shape {list(x.shape[2:])}) exceeds "
                f"max_positions = {self.max_positions}; the (B, N, N) attention would need about {mib} MiB. "
                "Apply it to a lower-resolution feature map or raise max_positions."
            )
        query = self.query_conv(x).flatten(2).transpose(1, 2)  # (B, C', N) -> (B, N, C')
        key = self.key_conv(x).flatten(2)  # (B, C', N)
        energy = torch.bmm(query, key)  # (B, N, N), energy[i, j] = q_i . k_j
        attention = torch.softmax(energy, dim=-1)
        value = self.value_conv(x).flatten(2)  # (B, C, N)
        out = torch.bmm(value, attention.transpose(1, 2))  # (B, C, N): out_i = sum_j A[i, j] v_j
        out = out.reshape(x.shape)  # (B, C, N) -> (B, C, *spatial)
        return self.gamma * out + x
