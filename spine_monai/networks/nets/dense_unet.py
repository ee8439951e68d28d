"""2D Dense U-Net: a U-Net whose convolution blocks have dense connections.

Zhang, Yuan, Wang, Zhang, "SAU-Net: Efficient 3D Spine MRI Segmentation Using Inter-Slice Attention",
MIDL 2020 (PMLR 121:903-913), Section 3.1 and Figure 1 (DownBlock / UpBlock).

DownBlock: Conv-BN-ReLU units with dense connections (MONAI ``ConvDenseBlock``: each unit's output is concatenated
to its input), then max-pooling. UpBlock: concatenation with the encoder skip, Conv-BN-ReLU units with dense
connections, and a transposed convolution ("Deconv") to the next finer level.

Choices where the paper is silent (Figure 1 shows the block types, not the widths):
- Each dense block has ``dense_layers`` Conv-BN-ReLU units of ``growth_rate`` channels, followed by a 1x1
  Conv-BN-ReLU transition to the level's width ``features[l]`` (as in FC-DenseNet, Jegou et al. 2017, which the
  paper cites), so the skip and up-sampling widths stay fixed.
- Widths default to ``(16, 32, 64, 128, 256)`` with ``growth_rate = width // 2``: the dense units make narrow layers
  expressive, and the efficiency claim of the paper (SAU-Net faster than a 3D U-Net) needs a light 2D network; a
  64-base 2D U-Net on 15 slices of 512 x 512 is slower on a CPU than a 3D U-Net (ARCHITECTURES.md). The bundle's
  benchmark reports the resulting cost.
- Inputs of any in-plane size: the slice is zero-padded to a multiple of ``2 ** (len(features) - 1)`` and the
  output cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.blocks.denseblock import ConvDenseBlock

__all__ = ["DenseUNet2D"]


class _DenseUnit(nn.Sequential):
    """Dense block (``dense_layers`` Conv-BN-ReLU units of ``growth_rate`` channels) + 1x1 transition to ``out``."""

    def __init__(self, in_channels: int, out_channels: int, growth_rate: int, dense_layers: int,
                 act: str | tuple, norm: str | tuple, dropout: float | tuple | None) -> None:
        dense = ConvDenseBlock(
            spatial_dims=2, in_channels=in_channels, channels=[growth_rate] * dense_layers, kernel_size=3,
            adn_ordering="NDA", act=act, norm=norm, dropout=dropout,
        )
        transition = Convolution(
            spatial_dims=2, in_channels=in_channels + growth_rate * dense_layers, out_channels=out_channels,
            kernel_size=1, adn_ordering="NA", act=act, norm=norm,
        )
        super().__init__(dense, transition)


class _UpLevel(nn.Module):
    """UpBlock: transposed convolution to the finer level, concatenation with the skip, dense unit."""

    def __init__(self, in_channels: int, out_channels: int, growth_rate: int, dense_layers: int,
                 act: str | tuple, norm: str | tuple, dropout: float | tuple | None) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.dense = _DenseUnit(2 * out_channels, out_channels, growth_rate, dense_layers, act, norm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.cat([skip, self.deconv(x)], dim=1))


class DenseUNet2D(nn.Module):
    """2D Dense U-Net returning feature maps (or logits when ``out_channels`` is given).

    Args:
        in_channels: input channels.
        out_channels: if given, a 1x1 convolution maps the last decoder features to this many logits; if ``None``
            the network returns the ``features[0]`` decoder feature maps (as SAU-Net uses it, before ISA).
        features: widths of the levels, finest first; ``len(features) - 1`` max-pool steps.
        growth_rate: channels added by each dense unit, per level (int for all levels, or a sequence);
            default ``max(features[l] // 2, 4)``.
        dense_layers: Conv-BN-ReLU units per dense block.
        act: activation (MONAI name or tuple); the paper uses ReLU (in place by default, to save memory).
        norm: normalisation (MONAI name or tuple); the paper uses batch normalisation.
        dropout: dropout inside the dense units.

    Raises:
        ValueError: on non-positive channels, fewer than two levels, or a growth-rate sequence of the wrong length.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        growth_rate: int | Sequence[int] | None = None,
        dense_layers: int = 2,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        dropout: float | tuple | None = None,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if out_channels is not None and out_channels < 1:
            raise ValueError(f"out_channels must be positive or None, got {out_channels}.")
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features needs at least two positive widths, got {features}.")
        if dense_layers < 1:
            raise ValueError(f"dense_layers must be at least 1, got {dense_layers}.")
        if growth_rate is None:
            growth = tuple(max(f // 2, 4) for f in features)
        elif isinstance(growth_rate, int):
            growth = (growth_rate,) * len(features)
        else:
            growth = tuple(int(g) for g in growth_rate)
        if len(growth) != len(features) or min(growth) < 1:
            raise ValueError(
                f"growth_rate must be a positive int or one per level ({len(features)}), got {growth_rate}."
            )

        self.features = features
        self.size_divisor = 2 ** (len(features) - 1)
        self.out_channels = features[0] if out_channels is None else out_channels

        depth = len(features)
        self.down = nn.ModuleList()
        c_in = in_channels
        for level in range(depth):  # the last level is the bottleneck
            self.down.append(_DenseUnit(c_in, features[level], growth[level], dense_layers, act, norm, dropout))
            c_in = features[level]
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.up = nn.ModuleList(
            [_UpLevel(features[level + 1], features[level], growth[level], dense_layers, act, norm, dropout)
             for level in range(depth - 2, -1, -1)]
        )
        self.head = nn.Identity() if out_channels is None else nn.Conv2d(features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on a batch of slices.

        Args:
            x: ``(N, C_in, H, W)``; any ``H, W``.

        Returns:
            ``(N, features[0] or out_channels, H, W)``.
        """
        if x.dim() != 4:
            raise ValueError(f"DenseUNet2D expects (N, C, H, W), got shape {list(x.shape)}.")
        h, w = x.shape[2], x.shape[3]
        pad_h = (self.size_divisor - h % self.size_divisor) % self.size_divisor
        pad_w = (self.size_divisor - w % self.size_divisor) % self.size_divisor
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [0, pad_w, 0, pad_h])
        skips: list[torch.Tensor] = []
        n_down = len(self.down)
        for i, block in enumerate(self.down):
            x = block(x)
            if i < n_down - 1:
                skips.append(x)
                x = self.pool(x)
        for i, level in enumerate(self.up):
            x = level(x, skips[n_down - 2 - i])
        x = self.head(x)
        return x[:, :, :h, :w]
