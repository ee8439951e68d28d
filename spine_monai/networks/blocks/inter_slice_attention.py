"""Inter-slice attention (ISA): refine each slice's features with attention masks from its neighbouring slices.

Zhang, Yuan, Wang, Zhang, "SAU-Net: Efficient 3D Spine MRI Segmentation Using Inter-Slice Attention",
MIDL 2020 (PMLR 121:903-913), Section 3.2 and Figures 2-3.

For slice ``i`` with feature maps ``F_i`` the module computes

    F_i' = F_i + F_i * sigmoid(conv_prev(F_{i-1})) + F_i * sigmoid(conv_next(F_{i+1}))

where ``conv_prev`` and ``conv_next`` are 1x1 convolutions whose masks have the size of ``F_i`` (paper: "masks ...
generated using 1x1 convolutional layers and sigmoid", "the size of the masks is the same as which of the feature
maps of slice i", "multiplying the corresponding elements and adding the feature maps to the results"). The first
and the last slice have one neighbour only, so their fusion is "halved": the missing term is absent.

Choices where the paper is silent (documented here and in the bundle README):
- The masks of the previous and of the next neighbour come from two separate 1x1 convolutions (the paper writes
  "layers", plural, and the two neighbours play different geometric roles). ``shared_weights=True`` uses one.
- The convolution is applied to the *neighbour's* features, never to slice ``i`` itself (a third-party snippet that
  convolves slice ``i`` and sums before the sigmoid is not the paper).
- The paper's final sigmoid is left to the loss (``BCEWithLogitsLoss``) and to post-processing
  (``Activations(sigmoid=True)``): mathematically the same output, numerically stabler in training.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["InterSliceAttention"]


class InterSliceAttention(nn.Module):
    """Inter-slice attention fusion over a stack of slice feature maps.

    Args:
        channels: number of feature channels ``C`` of every slice.
        shared_weights: use one 1x1 convolution for both neighbours instead of one per direction.
        bias: whether the 1x1 convolutions have a bias.

    Raises:
        ValueError: if ``channels`` is not positive.

    Example::

        isa = InterSliceAttention(16)
        y = isa(torch.randn(2, 16, 12, 64, 64), slice_dim=2)  # (B, C, S, H, W) -> same shape
    """

    def __init__(self, channels: int, shared_weights: bool = False, bias: bool = True) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels}.")
        self.channels = channels
        self.shared_weights = shared_weights
        # A 1x1x1 3D convolution on (B, C, S, H, W) is a per-slice 2D 1x1 convolution.
        self.conv_prev = nn.Conv3d(channels, channels, kernel_size=1, bias=bias)
        self.conv_next = self.conv_prev if shared_weights else nn.Conv3d(channels, channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, slice_dim: int = 2) -> torch.Tensor:
        """Fuse each slice with masks computed from its neighbours.

        Args:
            x: feature maps ``(B, C, *spatial)`` with three spatial axes, one of which holds the slices.
            slice_dim: tensor dimension (2, 3 or 4) of the slice axis.

        Returns:
            Tensor of the same shape as ``x``.

        Raises:
            ValueError: if ``x`` is not 5D, has the wrong channel count, or ``slice_dim`` is not 2, 3 or 4.
        """
        if x.dim() != 5:
            raise ValueError(f"InterSliceAttention expects a 5D tensor (B, C, S, H, W), got shape {list(x.shape)}.")
        if slice_dim not in (2, 3, 4):
            raise ValueError(f"slice_dim must be 2, 3 or 4 (a spatial dimension of a 5D tensor), got {slice_dim}.")
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]}.")
        # (B, C, ..., S, ...) -> (B, C, S, H, W)
        xs = x.movedim(slice_dim, 2)
        num_slices = xs.shape[2]
        if num_slices == 1:
            return x
        # mask_from_prev[i] = sigmoid(conv_prev(F_{i-1})) for i >= 1; slice 0 has no previous neighbour.
        mask_prev = torch.sigmoid(self.conv_prev(xs[:, :, :-1]))
        # mask_from_next[i] = sigmoid(conv_next(F_{i+1})) for i <= S-2; the last slice has no next neighbour.
        mask_next = torch.sigmoid(self.conv_next(xs[:, :, 1:]))
        zero = torch.zeros_like(xs[:, :, :1])
        mask_prev = torch.cat([zero, mask_prev], dim=2)
        mask_next = torch.cat([mask_next, zero], dim=2)
        out = xs + xs * mask_prev + xs * mask_next
        return out.movedim(2, slice_dim)
