"""Slice-by-slice inference of a 2D network over sagittal slices: the review bundle's inferer.

Zhou et al., ICMR 2022, Section 4.1: the twelve 2D networks see one sagittal slice at a time. A volume batch
``(B, C, X, Y, Z)`` (RAS, X = left-right) is cut into its ``X`` sagittal slices, run through the network in chunks of
``slice_chunk`` slices (memory stays bounded) and stacked back; a 2D batch ``(B, C, H, W)`` goes through as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from spine_monai.networks.nets.slicewise import slices_to_volume, volume_to_slices

__all__ = ["SagittalSliceInferer"]


class SagittalSliceInferer(Inferer):
    """Run a 2D network on every sagittal slice of a volume (or on a 2D image as it is).

    Args:
        slice_chunk: slices per forward pass.
        progress: show a tqdm bar over the chunks of each volume.

    Raises:
        ValueError: on a non-positive ``slice_chunk``, or inputs that are neither 4D nor 5D.
    """

    def __init__(self, slice_chunk: int = 8, progress: bool = False) -> None:
        super().__init__()
        if int(slice_chunk) < 1:
            raise ValueError(f"slice_chunk must be positive, got {slice_chunk}.")
        self.slice_chunk = int(slice_chunk)
        self.progress = progress

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` for a volume batch, ``(B, K, H, W)`` for a 2D batch."""
        if inputs.dim() == 4:
            return network(inputs, *args, **kwargs)
        if inputs.dim() != 5:
            raise ValueError(f"expected (B, C, H, W) images or (B, C, X, Y, Z) volumes, got {tuple(inputs.shape)}.")
        batch = int(inputs.shape[0])
        # a batch of MetaTensors cannot be re-sliced along its spatial axes; the meta goes back on the result
        slices = volume_to_slices(inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs)  # (B * X, C, Y, Z)
        starts = range(0, int(slices.shape[0]), self.slice_chunk)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="slices", unit="chunk", leave=False)
        out = [network(slices[s:s + self.slice_chunk], *args, **kwargs) for s in starts]
        logits = slices_to_volume(torch.cat(out, dim=0), batch)
        return convert_to_dst_type(logits, inputs, dtype=logits.dtype)[0]
