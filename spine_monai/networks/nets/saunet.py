"""SAU-Net: 2D Dense U-Net on every sagittal slice plus inter-slice attention (ISA) across neighbouring slices.

Zhang, Yuan, Wang, Zhang, "SAU-Net: Efficient 3D Spine MRI Segmentation Using Inter-Slice Attention",
MIDL 2020 (PMLR 121:903-913), Section 3 and Figure 1.

The volume ``X`` (d slices) is split into 2D slices, the Dense U-Net extracts intra-slice features of every slice,
the inter-slice attention module fuses each slice with masks from slices ``i - 1`` and ``i + 1``, and a 1x1
classifier gives the per-voxel logits (the paper's final sigmoid is applied by the loss / post-processing).

Choices where the paper is silent (also in the bundle README):
- ISA acts on the Dense U-Net's last decoder feature maps (``features[0]`` channels), the "feature maps of slice i"
  of Figure 3, followed by a 1x1 classifier; with ``use_isa=False`` the classifier follows the Dense U-Net directly
  (the paper's ablation "w/o ISA", Table 4).
- The slice axis is an explicit argument (``slice_dim``); for RAS-oriented volumes axis 0 (left-right) holds the
  sagittal slices.
- Memory: in evaluation mode the slices are processed in chunks of ``slice_chunk``; ISA of a chunk's border slices
  uses the features of the neighbouring chunks' border slices, so the result equals the unchunked one while only
  two chunks of features are alive at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from spine_monai.networks.blocks.inter_slice_attention import InterSliceAttention
from spine_monai.networks.nets.dense_unet import DenseUNet2D
from spine_monai.networks.nets.slicewise import check_slice_args, check_volume, slices_to_volume, volume_to_slices

__all__ = ["SAUNet"]


class _NoInterSliceAttention(nn.Module):
    """Identity with ISA's call signature (the ablation without ISA); keeps the network scriptable."""

    def forward(self, x: torch.Tensor, slice_dim: int = 2) -> torch.Tensor:
        return x


class SAUNet(nn.Module):
    """SAU-Net for volumes ``(B, C, X, Y, Z)`` with sagittal slices along ``slice_dim``.

    Args:
        spatial_dims: must be 3 (a volume of 2D slices); kept first for MONAI-style configs.
        in_channels: input channels.
        out_channels: output logits (1 for the paper's binary spine segmentation).
        features: Dense U-Net level widths, finest first.
        growth_rate: dense-unit growth rate (int, per-level sequence, or ``None`` for ``width // 2``).
        dense_layers: Conv-BN-ReLU units per dense block.
        use_isa: apply inter-slice attention (``False`` is the paper's ablation without ISA).
        slice_dim: spatial axis (0, 1 or 2) of the slices.
        slice_chunk: slices processed together in evaluation mode.
        act: activation; the paper uses ReLU (in place by default, to save memory).
        norm: normalisation; the paper uses batch normalisation.
        dropout: dropout in the dense units.

    Raises:
        ValueError: on bad arguments (``spatial_dims != 3``, ``slice_dim``, ``slice_chunk``, channels).

    Example::

        net = SAUNet(in_channels=1, out_channels=1)
        logits = net(torch.randn(1, 1, 13, 97, 101))  # any number of slices, odd in-plane sizes
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        growth_rate: int | Sequence[int] | None = None,
        dense_layers: int = 2,
        use_isa: bool = True,
        slice_dim: int = 0,
        slice_chunk: int = 8,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        dropout: float | tuple | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"SAUNet segments volumes: spatial_dims must be 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        check_slice_args(slice_dim, slice_chunk)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.slice_dim = slice_dim
        self.slice_chunk = slice_chunk
        self.use_isa = use_isa
        self.unet = DenseUNet2D(in_channels, None, features, growth_rate, dense_layers, act, norm, dropout)
        width = self.unet.out_channels
        self.isa = InterSliceAttention(width) if use_isa else _NoInterSliceAttention()
        self.head = nn.Conv3d(width, out_channels, kernel_size=1)

    def slice_features(self, xs: torch.Tensor) -> torch.Tensor:
        """Dense U-Net features of every slice: ``(B, C, S, H, W) -> (B, F, S, H, W)``."""
        return slices_to_volume(self.unet(volume_to_slices(xs)), xs.shape[0])

    def _refine(self, feats: torch.Tensor) -> torch.Tensor:
        return self.isa(feats, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a volume.

        Args:
            x: ``(B, C_in, X, Y, Z)``, any number of slices (including 1) and any in-plane size.

        Returns:
            Logits ``(B, out_channels, X, Y, Z)``.

        Raises:
            ValueError: if ``x`` is not 5D or has the wrong number of channels.
        """
        check_volume(x, self.in_channels)
        # (B, C, X, Y, Z) -> (B, C, S, H, W) with the slices on dim 2
        xs = x.movedim(self.slice_dim + 2, 2)
        num_slices = xs.shape[2]
        chunk = self.slice_chunk
        if self.training or num_slices <= chunk:
            out = self.head(self._refine(self.slice_features(xs)))
            return out.movedim(2, self.slice_dim + 2)

        # Streaming: features of chunk k and k+1 are alive; ISA at chunk borders sees the true neighbours.
        outs: list[torch.Tensor] = []
        prev_tail: torch.Tensor | None = None
        cur = self.slice_features(xs[:, :, 0:chunk])
        for start in range(0, num_slices, chunk):
            end = min(start + chunk, num_slices)
            nxt: torch.Tensor | None = None
            if end < num_slices:
                nxt = self.slice_features(xs[:, :, end:end + chunk])
            parts: list[torch.Tensor] = []
            lead = 0
            if prev_tail is not None:
                parts.append(prev_tail)
                lead = 1
            parts.append(cur)
            if nxt is not None:
                parts.append(nxt[:, :, 0:1])
            refined = self._refine(torch.cat(parts, dim=2))
            outs.append(self.head(refined[:, :, lead:lead + cur.shape[2]]))
            prev_tail = cur[:, :, -1:]
            if nxt is not None:
                cur = nxt
        return torch.cat(outs, dim=2).movedim(2, self.slice_dim + 2)
