"""Run a 2D network slice by slice over a 3D volume, in chunks of slices so that memory stays bounded.

Used for the 2D U-Net baseline of SAU-Net (Zhang et al., MIDL 2020, Table 1): the paper's 2D methods segment each
sagittal slice independently. :class:`~spine_monai.networks.nets.saunet.SAUNet` shares the helpers below.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SliceWiseNet", "check_volume", "volume_to_slices", "slices_to_volume"]


def check_slice_args(slice_dim: int, slice_chunk: int) -> None:
    """Validate the slice arguments shared by the slice-wise networks.

    Raises:
        ValueError: if ``slice_dim`` is not 0, 1 or 2 or ``slice_chunk`` is not positive.
    """
    if slice_dim not in (0, 1, 2):
        raise ValueError(f"slice_dim must be a spatial axis 0, 1 or 2 of (B, C, X, Y, Z), got {slice_dim}.")
    if slice_chunk < 1:
        raise ValueError(f"slice_chunk must be a positive number of slices, got {slice_chunk}.")


def check_volume(x: torch.Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` unless ``x`` is a 5D ``(B, C, X, Y, Z)`` tensor with ``in_channels`` channels."""
    if x.dim() != 5:
        raise ValueError(
            f"expected a 5D volume batch (B, C, X, Y, Z), got shape {list(x.shape)}; a 2D image must be given as a "
            "volume with one slice."
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channel(s), got {x.shape[1]} (shape {list(x.shape)}).")
    if x.shape[2] < 1 or x.shape[3] < 1 or x.shape[4] < 1:
        raise ValueError(f"empty volume of shape {list(x.shape)}.")


def volume_to_slices(xs: torch.Tensor) -> torch.Tensor:
    """``(B, C, S, H, W) -> (B * S, C, H, W)``."""
    b, c, s, h, w = xs.shape
    return xs.transpose(1, 2).reshape(b * s, c, h, w)


def slices_to_volume(y: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B * S, C, H, W) -> (B, C, S, H, W)``."""
    n, c, h, w = y.shape
    return y.reshape(batch, n // batch, c, h, w).transpose(1, 2)


class SliceWiseNet(nn.Module):
    """Apply a 2D network to every slice of a volume along a chosen axis.

    Args:
        network: a 2D network mapping ``(N, C_in, H, W)`` to ``(N, C_out, H, W)``.
        in_channels: input channels (checked at run time).
        slice_dim: spatial axis of ``(B, C, X, Y, Z)`` holding the slices; 0 is left-right (sagittal slices) for
            RAS-oriented volumes.
        slice_chunk: slices processed together in evaluation mode (bounds memory on large volumes).
        pad_multiple: in-plane sizes are zero-padded to a multiple of this and cropped back.

    Raises:
        ValueError: on bad ``slice_dim``, ``slice_chunk`` or ``pad_multiple``.
    """

    def __init__(self, network: nn.Module, in_channels: int = 1, slice_dim: int = 0, slice_chunk: int = 8,
                 pad_multiple: int = 16) -> None:
        super().__init__()
        check_slice_args(slice_dim, slice_chunk)
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be positive, got {pad_multiple}.")
        self.network = network
        self.in_channels = in_channels
        self.slice_dim = slice_dim
        self.slice_chunk = slice_chunk
        self.pad_multiple = pad_multiple

    def _run_2d(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        pad_h = (self.pad_multiple - h % self.pad_multiple) % self.pad_multiple
        pad_w = (self.pad_multiple - w % self.pad_multiple) % self.pad_multiple
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [0, pad_w, 0, pad_h])
        return self.network(x)[:, :, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C_in, X, Y, Z)``. Returns ``(B, C_out, X, Y, Z)``."""
        check_volume(x, self.in_channels)
        # (B, C, X, Y, Z) -> (B, C, S, H, W) with the slices on dim 2
        xs = x.movedim(self.slice_dim + 2, 2)
        batch, num_slices = xs.shape[0], xs.shape[2]
        chunk = num_slices if self.training else self.slice_chunk
        outs: list[torch.Tensor] = []
        for start in range(0, num_slices, chunk):
            part = xs[:, :, start:start + chunk]
            outs.append(slices_to_volume(self._run_2d(volume_to_slices(part)), batch))
        return torch.cat(outs, dim=2).movedim(2, self.slice_dim + 2)
