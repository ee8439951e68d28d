"""MiniSeg: an extremely small encoder-decoder with attentive hierarchical spatial pyramids (2D, about 83k params).

Qiu, Liu, Li, Xu, "MiniSeg: An Extremely Minimum Network for Efficient COVID-19 Segmentation", AAAI 2021
(arXiv:2004.09750), Section 3 (Fig. 2). Compared in Zhou et al., "Review of Deep Learning Models for Spine
Segmentation", ICMR 2022, https://doi.org/10.1145/3512527.3531356, Section 2.2 (4) and Table 3 (83K parameters).
Reference code: yun-liu/MiniSeg ``MiniSeg.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_norm_layer

from spine_monai.networks.blocks.ahsp import AHSP, make_act

__all__ = ["MiniSeg"]


class _ConvBNAct(nn.Sequential):
    """conv k x k -> BN [-> PReLU]: the reference ``ConvBlock`` (k=3), the fusions and the decoder laterals (k=1)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, bias: bool = False,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [
            Convolution(2, cin, cout, strides=stride, kernel_size=kernel, groups=groups, bias=bias, conv_only=True),
            get_norm_layer("batch", 2, cout),
        ]
        if act:
            layers.append(make_act("prelu", cout))
        super().__init__(*layers)


class _Downsampler(nn.Sequential):
    """The reference ``DownsamplerBlock``: 1x1 conv -> depth-wise 5x5 conv with stride -> BN -> PReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(
            Convolution(2, cin, cout, kernel_size=1, bias=False, conv_only=True),
            _ConvBNAct(cout, cout, kernel=5, stride=stride, groups=cout),
        )


class _DecoderConv(nn.Module):
    """The reference ``DilatedParallelConvBlockD2``: 1x1 conv, then depth-wise 3x3 dilation 1 + dilation 2, BN."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = Convolution(2, cin, cout, kernel_size=1, bias=False, conv_only=True)
        self.d1 = Convolution(2, cout, cout, kernel_size=3, groups=cout, bias=False, conv_only=True)
        self.d2 = Convolution(2, cout, cout, kernel_size=3, dilation=2, groups=cout, bias=False, conv_only=True)
        self.norm = get_norm_layer("batch", 2, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.norm(self.d1(x) + self.d2(x))


class _Step(nn.Module):
    """One block of a level: ``out' = main(out + long) + out`` and, for the first ``P // 2`` blocks, also
    ``long' = long_block(out + long) + long`` (the reference's two interleaved paths)."""

    def __init__(self, main: nn.Module, long_block: nn.Module | None) -> None:
        super().__init__()
        self.main = main
        self.has_long = long_block is not None
        self.long_block = long_block if long_block is not None else nn.Identity()

    def forward(self, out: torch.Tensor, long: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        added = out + long
        new_out = self.main(added) + out
        if self.has_long:
            long = self.long_block(added) + long
        return new_out, long


class _Level(nn.Module):
    """One encoder level: strided entry of both paths, the refinement steps, then the 1x1 fusion whose two halves
    feed the next level (``fuse=False`` for the last level)."""

    def __init__(self, down: nn.Module, long_down: nn.Module, steps: nn.ModuleList, channels: int, fuse: bool) -> None:
        super().__init__()
        self.down = down
        self.long_down = long_down
        self.steps = steps
        self.fuse = fuse
        self.cat = _ConvBNAct(2 * channels, 2 * channels, kernel=1, act=False) if fuse else nn.Identity()

    def forward(self, out_in: torch.Tensor, long_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, long = self.down(out_in), self.long_down(long_in)
        for step in self.steps:
            out, long = step(out, long)
        if not self.fuse:
            return out, out, long
        fused = self.cat(torch.cat([long, out], dim=1))
        half = fused.shape[1] // 2
        # (level output, next main-path input = right half + out, next long-path input = left half + long)
        return out, fused[:, half:] + out, fused[:, :half] + long


class MiniSeg(nn.Module):
    """MiniSeg for 2D segmentation; ``forward`` returns the main logits at the input size.

    Four levels of widths 8, 24, 32, 64 (strides 2, 4, 8, 16) with ``blocks = (2, 3, 8, 6)``; level 1 uses
    conv-BN-PReLU blocks, levels 2-4 AHSP modules; a parallel "long" down-sampling path (depth-wise 5x5) with
    ``blocks // 2`` refinement blocks per level; a 1x1 fusion between levels whose output is split in two
    halves feeding the next level's two paths; a decoder of dilated depth-wise blocks + 1x1 laterals with bilinear
    up-sampling to explicit sizes (any input size works). ``forward_all`` also returns the three auxiliary
    predictions of the reference (deep supervision, ``aux=True`` there); their heads are always built, so the
    parameter count matches the reference.

    Args:
        in_channels: input channels.
        out_channels: number of classes.
        blocks: blocks per level ``(P1, P2, P3, P4)``.
        widths: channels per level; levels 2-4 must be multiples of 4 (AHSP).
        dropout: dropout before each prediction conv (0.01 in the reference).

    Raises:
        ValueError: on bad channel counts, block counts or widths.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: tuple[int, int, int, int] = (2, 3, 8, 6),
        widths: tuple[int, int, int, int] = (8, 24, 32, 64),
        dropout: float = 0.01,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ValueError(f"blocks must be four positive integers, got {blocks}.")
        if len(widths) != 4 or widths[0] < 1 or any(w < 4 or w % 4 for w in widths[1:]):
            raise ValueError(f"widths must be four channel counts, levels 2-4 multiples of 4, got {widths}.")
        self.levels = nn.ModuleList()
        prev = in_channels
        for lvl, (n_blocks, c) in enumerate(zip(blocks, widths, strict=True)):
            first = lvl == 0
            steps = nn.ModuleList()
            for i in range(n_blocks):
                main = _ConvBNAct(c, c) if first else AHSP(2, c, c)
                steps.append(_Step(main, _Downsampler(c, c, stride=1) if i < n_blocks // 2 else None))
            down = _ConvBNAct(prev, c, stride=2) if first else AHSP(2, prev, c, stride=2)
            self.levels.append(_Level(down, _Downsampler(prev, c, stride=2), steps, c, fuse=lvl < 3))
            prev = c
        w1, w2, w3, w4 = widths
        self.up4 = _ConvBNAct(w4, w4, kernel=1, bias=True)
        # decoder level k: dilated depth-wise block from below + 1x1 lateral (conv with bias, BN), summed, PReLU
        self.dec3, self.lat3, self.act3 = _DecoderConv(w4, w3), self._lateral(w3), nn.PReLU(w3)
        self.dec2, self.lat2, self.act2 = _DecoderConv(w3, w2), self._lateral(w2), nn.PReLU(w2)
        self.dec1, self.lat1, self.act1 = _DecoderConv(w2, w1), self._lateral(w1), nn.PReLU(w1)
        self.head1, self.head2, self.head3, self.head4 = (
            nn.Sequential(nn.Dropout2d(dropout), Convolution(2, c, out_channels, kernel_size=1, conv_only=True))
            for c in (w1, w2, w3, w4)
        )

    @staticmethod
    def _lateral(channels: int) -> nn.Module:
        return _ConvBNAct(channels, channels, kernel=1, bias=True, act=False)

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        out_in, long_in = x, x
        for level in self.levels:
            out, out_in, long_in = level(out_in, long_in)
            outputs.append(out)
        return outputs

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Main and auxiliary predictions, resized to the input.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            ``(pred1, pred2, pred3, pred4)``, each ``(B, out_channels, H, W)``; ``pred1`` is the prediction.
        """
        o1, o2, o3, o4 = self._encode(x)
        up4 = self.up4(o4)
        up4 = F.interpolate(up4, size=[o3.shape[2], o3.shape[3]], mode="bilinear", align_corners=False)
        up3 = self.act3(self.dec3(up4) + self.lat3(o3))
        up3 = F.interpolate(up3, size=[o2.shape[2], o2.shape[3]], mode="bilinear", align_corners=False)
        up2 = self.act2(self.dec2(up3) + self.lat2(o2))
        up2 = F.interpolate(up2, size=[o1.shape[2], o1.shape[3]], mode="bilinear", align_corners=False)
        up1 = self.act1(self.dec1(up2) + self.lat1(o1))
        size = [x.shape[2], x.shape[3]]
        return (
            F.interpolate(self.head1(up1), size=size, mode="bilinear", align_corners=False),
            F.interpolate(self.head2(up2), size=size, mode="bilinear", align_corners=False),
            F.interpolate(self.head3(up3), size=size, mode="bilinear", align_corners=False),
            F.interpolate(self.head4(up4), size=size, mode="bilinear", align_corners=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            Logits ``(B, out_channels, H, W)``.
        """
        return self.forward_all(x)[0]
