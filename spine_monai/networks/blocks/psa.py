"""Point-wise spatial attention (PSA): collect and distribute branches with a pure-PyTorch ``psa_mask``.

Zhao, Zhang, Liu, Shi, Loy, Lin, Jia, "PSANet: Point-wise Spatial Attention Network for Scene Parsing",
ECCV 2018, https://doi.org/10.1007/978-3-030-01240-3_17, Section 3 (Eq. 5-9, Fig. 3-4: bi-direction information
flow). Reference code: hszhao/semseg, ``model/psanet.py`` (``PSA``) and ``lib/psa`` (the CUDA/C++ ``psa_mask`` op).

Each position ``i`` predicts an over-complete attention map of ``mask_h x mask_w`` values centred on itself
(Eq. 9). ``psa_mask`` places these values on the ``H x W`` feature grid, giving an ``(H*W) x (H*W)`` matrix:

- *collect*: position ``i`` gathers features from every neighbour ``j`` with its own mask
  (``out[:, j, i] = mask_i[j - i + half]``);
- *distribute*: position ``i`` sends its feature to every neighbour ``j`` with its own mask; the matrix is the
  transpose of the collect one.

The official op is a hand-written C++/CUDA kernel. Here it is one ``torch.gather`` over a precomputed index
(positions outside the mask read a zero row, as the kernel's zero-initialised buffer does), so it runs on any
device, is differentiable by autograd and scripts with TorchScript.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["PSA_MODES", "PointwiseSpatialAttention", "psa_mask", "psa_mask_index"]

PSA_MODES = ("collect", "distribute")


def psa_mask_index(height: int, width: int, mask_h: int, mask_w: int, device: torch.device) -> torch.Tensor:
    """Index of the mask channel that feeds each (neighbour, centre) pair of the collect matrix.

    Args:
        height: feature-map height ``H``.
        width: feature-map width ``W``.
        mask_h: mask height (odd).
        mask_w: mask width (odd).
        device: device of the returned index.

    Returns:
        Long tensor ``(H*W, H*W)``; entry ``[j, i]`` is ``dy * mask_w + dx`` with ``(dy, dx) = j - i + half`` when
        the neighbour ``j`` lies inside the mask centred on ``i``, else ``mask_h * mask_w`` (a zero row).
    """
    half_h = (mask_h - 1) // 2
    half_w = (mask_w - 1) // 2
    rows = torch.arange(height, device=device).repeat_interleave(width)  # (HW,) row of each flat position
    cols = torch.arange(width, device=device).repeat(height)  # (HW,) column of each flat position
    dy = rows[:, None] - rows[None, :] + half_h  # (HW_neighbour, HW_centre)
    dx = cols[:, None] - cols[None, :] + half_w
    valid = (dy >= 0) & (dy < mask_h) & (dx >= 0) & (dx < mask_w)
    index = dy * mask_w + dx
    return torch.where(valid, index, torch.full_like(index, mask_h * mask_w))


def psa_mask(x: torch.Tensor, mode: str, mask_h: int, mask_w: int) -> torch.Tensor:
    """Pure-PyTorch equivalent of the official ``psa_mask`` CUDA/C++ operator.

    Args:
        x: per-position masks ``(B, mask_h * mask_w, H, W)``.
        mode: ``"collect"`` (``psa_type=0`` in the reference) or ``"distribute"`` (``psa_type=1``).
        mask_h: mask height, odd.
        mask_w: mask width, odd.

    Returns:
        ``(B, H*W, H, W)``: for collect, channel = neighbour and spatial = centre; for distribute, channel = centre
        and spatial = neighbour (the layout of the reference op, ready for ``bmm`` with features ``(B, C, H*W)``).

    Raises:
        ValueError: on a bad mode, even mask sizes, or a channel count other than ``mask_h * mask_w``.
    """
    if mode != "collect" and mode != "distribute":
        raise ValueError(f"mode must be 'collect' or 'distribute', got '{mode}'.")
    if mask_h % 2 != 1 or mask_w % 2 != 1:
        raise ValueError(f"mask sizes must be odd, got ({mask_h}, {mask_w}).")
    if x.dim() != 4 or x.shape[1] != mask_h * mask_w:
        raise ValueError(f"expected a (B, {mask_h * mask_w}, H, W) tensor, got shape {x.shape}.")
    batch, _, height, width = x.shape
    index = psa_mask_index(height, width, mask_h, mask_w, x.device)
    # (B, M, H, W) -> (B, M + 1, HW): the extra zero row serves positions outside the mask
    flat = torch.cat([x.flatten(2), x.new_zeros(batch, 1, height * width)], dim=1)
    collect = torch.gather(flat, 1, index.unsqueeze(0).expand(batch, -1, -1))  # (B, HW_neighbour, HW_centre)
    out = collect if mode == "collect" else collect.transpose(1, 2)
    return out.reshape(batch, height * width, height, width)


class PointwiseSpatialAttention(nn.Module):
    """Bi-directional point-wise spatial attention module of PSANet (2D).

    ``out = cat([x, proj(cat([collect(x), distribute(x)]))])``: the input is concatenated with the attended
    features, so the output has ``2 * in_channels`` channels (``self.out_channels``), as in the reference.

    Choices (reference code where the paper is silent): features are reduced to ``mid_channels`` by 1x1
    conv-BN-ReLU per branch, down-sampled by ``shrink_factor`` (bilinear, ``align_corners=True``) before the
    attention, and the attended result is up-sampled back to the input size exactly (the reference assumes sizes
    ``k * shrink + 1``); masks are soft-maxed over the neighbour axis; ``normalization_factor`` scales the
    aggregation. Positions outside a local mask get logit 0 and take part in the softmax, as in the reference op.
    With ``mask_size = 2 * feature_size - 1`` every position sees every other one (the reference's setting).
    The mask geometry is two-dimensional, so this block is 2D only.

    Args:
        in_channels: input channels ``C``.
        mid_channels: reduced channels of each branch (512 in PSANet).
        mask_size: odd ``(mask_h, mask_w)`` of the per-position attention masks (59 x 59 in the reference).
        shrink_factor: spatial down-sampling before the attention (2 in the reference).
        norm: normalization of the conv blocks.
        act: activation of the conv blocks.
        normalization_factor: divisor of the aggregated features (1.0 in the reference).
        psa_softmax: apply softmax to the masks.

    Raises:
        ValueError: on non-positive channels or shrink factor, or even / non-positive mask sizes.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int = 512,
        mask_size: int | tuple[int, int] = (59, 59),
        shrink_factor: int = 2,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        normalization_factor: float = 1.0,
        psa_softmax: bool = True,
    ) -> None:
        super().__init__()
        mask_hw = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(mask_size)
        if in_channels < 1 or mid_channels < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, mid={mid_channels}.")
        if len(mask_hw) != 2 or any(m < 1 or m % 2 != 1 for m in mask_hw):
            raise ValueError(f"mask_size must be one or two odd positive integers, got {mask_size}.")
        if shrink_factor < 1:
            raise ValueError(f"shrink_factor must be >= 1, got {shrink_factor}.")
        self.mask_h, self.mask_w = int(mask_hw[0]), int(mask_hw[1])
        self.shrink_factor = shrink_factor
        self.normalization_factor = normalization_factor
        self.psa_softmax = psa_softmax
        self.out_channels = 2 * in_channels
        n_mask = self.mask_h * self.mask_w

        def cbr(cin: int, cout: int) -> Convolution:
            return Convolution(2, cin, cout, kernel_size=1, act=act, norm=norm, bias=False)

        def attention() -> nn.Sequential:
            last = Convolution(2, mid_channels, n_mask, kernel_size=1, bias=False, conv_only=True)
            return nn.Sequential(cbr(mid_channels, mid_channels), last)

        self.reduce_collect = cbr(in_channels, mid_channels)
        self.reduce_distribute = cbr(in_channels, mid_channels)
        self.attention_collect = attention()
        self.attention_distribute = attention()
        self.proj = cbr(2 * mid_channels, in_channels)

    def _aggregate(self, feat: torch.Tensor, logits: torch.Tensor, mode: str) -> torch.Tensor:
        batch, channels, height, width = feat.shape
        weights = psa_mask(logits, mode, self.mask_h, self.mask_w)  # (B, HW, H, W)
        if self.psa_softmax:
            weights = F.softmax(weights, dim=1)
        # (B, C, HW) @ (B, HW_neighbour, HW_centre) -> (B, C, HW_centre)
        out = torch.bmm(feat.flatten(2), weights.flatten(2))
        return out.reshape(batch, channels, height, width) * (1.0 / self.normalization_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend and concatenate.

        Args:
            x: features ``(B, C, H, W)``.

        Returns:
            ``(B, 2C, H, W)``: ``cat([x, attended])``.
        """
        height, width = x.shape[2], x.shape[3]
        x_col = self.reduce_collect(x)
        x_dis = self.reduce_distribute(x)
        if self.shrink_factor != 1:
            size = [(height - 1) // self.shrink_factor + 1, (width - 1) // self.shrink_factor + 1]
            x_col = F.interpolate(x_col, size=size, mode="bilinear", align_corners=True)
            x_dis = F.interpolate(x_dis, size=size, mode="bilinear", align_corners=True)
        y_col = self._aggregate(x_col, self.attention_collect(x_col), "collect")
        y_dis = self._aggregate(x_dis, self.attention_distribute(x_dis), "distribute")
        y = self.proj(torch.cat([y_col, y_dis], dim=1))
        if self.shrink_factor != 1:
            y = F.interpolate(y, size=[height, width], mode="bilinear", align_corners=True)
        return torch.cat([x, y], dim=1)
