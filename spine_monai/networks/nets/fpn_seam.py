"""FPN with the structure-enhanced attention module (SEAM) and the attention baselines of the SEAM paper.

Zhao, Huang, Liu, Leung, Ling, Yang, Lee, Lun, Zheng, Lam, "Structure-Enhanced Attentive Learning for Spine
Segmentation from Ultrasound Volume Projection Images", ICASSP 2021, pp. 1195-1199,
DOI 10.1109/ICASSP39728.2021.9414658. Fig. 1 and Section 3.2 (FPN backbone with the Panoptic-FPN semantic head of
Kirillov et al., CVPR 2019; SEAM between the FPN features and the last convolution, the "segmentation head", which
produces the four class maps); Table 1 baselines (vanilla FPN, DANet, EMANet, Non-local) and ablations.

The FPN is ``segmentation_models_pytorch.FPN`` (Panoptic-FPN semantic head: 128 channels per level, merged by
addition, at 1/4 of the input size; 1x1 head then x4 bilinear up-sampling). Its ``encoder``, ``decoder`` and
``segmentation_head`` are kept under the same attribute names, so state-dict keys match a plain smp FPN.

Ablations (Table 1), as the paper describes them (Sec. 3.3):
- "w/o AL" (without attentive learning): "directly introduces the structure supervision to the features extracted
  from the FPN backbone": the key mapping varphi (1x1 conv to N maps) is applied to the FPN features and supervised
  by the same losses, but no attention re-estimates the features; the head sees the FPN features unchanged
  (``FPNSEAM(attentive=False)``). Its runtime equals the vanilla FPN's in Table 1, consistent with this reading.
- "w/o SS" (without structure supervision): "trained with beta = 0": same network, ``SEAMLoss(beta=0)``.
``SEAM_ABLATIONS`` maps these names to the network and loss keyword arguments.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from spine_monai.networks.blocks.em_attention import EMAttention
from spine_monai.networks.blocks.seam import StructureEnhancedAttention

__all__ = ["FPNSEAM", "FPNWithBlock", "SEAM_ABLATIONS", "fpn_baseline"]

#: name -> (FPNSEAM kwargs, SEAMLoss kwargs) for the paper's Table 1 rows "Ours", "~ w/o AL", "~ w/o SS".
SEAM_ABLATIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "seam": ({"attentive": True}, {"beta": 0.5}),
    "wo_al": ({"attentive": False}, {"beta": 0.5}),
    "wo_ss": ({"attentive": True}, {"beta": 0.0}),
}

BASELINE_VARIANTS = ("fpn", "nonlocal", "danet", "em")


def _smp_fpn(
    in_channels: int,
    out_channels: int,
    encoder_name: str,
    encoder_weights: str | None,
    encoder_depth: int,
    decoder_pyramid_channels: int,
    decoder_segmentation_channels: int,
    decoder_dropout: float,
) -> smp.FPN:
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}.")
    if out_channels < 1:
        raise ValueError(f"out_channels must be positive, got {out_channels}.")
    return smp.FPN(
        encoder_name=encoder_name,
        encoder_depth=encoder_depth,
        encoder_weights=encoder_weights,
        decoder_pyramid_channels=decoder_pyramid_channels,
        decoder_segmentation_channels=decoder_segmentation_channels,
        decoder_merge_policy="add",
        decoder_dropout=decoder_dropout,
        in_channels=in_channels,
        classes=out_channels,
    )


class _KeyOnly(nn.Module):
    """The "w/o AL" ablation: the key mapping varphi on the features, no attention; same interface as SEAM."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.key = Conv[Conv.CONV, spatial_dims](in_channels, num_classes, kernel_size=1, bias=True)

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v, self.key(v)


class _FPNBase(nn.Module):
    """Shared encoder / decoder / head construction and the input-size check of smp."""

    def __init__(self, fpn: smp.FPN) -> None:
        super().__init__()
        self.encoder = fpn.encoder
        self.decoder = fpn.decoder
        self.segmentation_head = fpn.segmentation_head
        self.output_stride: int = int(fpn.encoder.output_stride)

    @torch.jit.unused
    def _check_input_shape(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if x.dim() != 4 or h % self.output_stride or w % self.output_stride:
            raise ValueError(
                f"expected input (B, C, H, W) with H and W divisible by {self.output_stride}, got {list(x.shape)}."
            )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_input_shape(x)
        return self.decoder(self.encoder(x))  # (B, 128, H/4, W/4)


class FPNSEAM(_FPNBase):
    """smp FPN (Panoptic-FPN semantic head) with SEAM between the decoder and the segmentation head.

    Args:
        in_channels: image channels (1 for VPI images).
        out_channels: number of classes N including background (4: background, lumbar, thoracic, rib).
        encoder_name: smp encoder name (the paper's FPN follows Panoptic FPN, ResNet-50).
        encoder_weights: smp encoder weights; None (default) never downloads.
        encoder_depth: smp encoder depth (3-5).
        decoder_pyramid_channels: FPN pyramid channels (256 in Panoptic FPN).
        decoder_segmentation_channels: channels C of the semantic-head features SEAM works on (128).
        decoder_dropout: smp FPN spatial dropout on the merged features.
        key_channels: SEAM query channels C' (default ``decoder_segmentation_channels // 2``).
        norm: normalisation inside SEAM.
        act: activation inside SEAM.
        attentive: False builds the "w/o AL" ablation (key maps supervised, no attention).
        return_keys: True returns ``(logits, keys)`` for training with ``SEAMLoss``; False returns the logits only
            (inference, sliding windows, TorchScript export in bundles).

    Raises:
        ValueError: on a non-positive channel count or fewer than 2 classes; in ``forward``, on an input whose
            height or width is not divisible by the encoder's output stride (32).

    Example::

        net = FPNSEAM(in_channels=1, out_channels=4, encoder_name="resnet18")
        logits, keys = net(torch.randn(2, 1, 512, 256))  # (2, 4, 512, 256), (2, 4, 128, 64)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_pyramid_channels: int = 256,
        decoder_segmentation_channels: int = 128,
        decoder_dropout: float = 0.2,
        key_channels: int | None = None,
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
        attentive: bool = True,
        return_keys: bool = True,
    ) -> None:
        if out_channels < 2:
            raise ValueError(f"out_channels (number of classes) must be at least 2, got {out_channels}.")
        fpn = _smp_fpn(
            in_channels,
            out_channels,
            encoder_name,
            encoder_weights,
            encoder_depth,
            decoder_pyramid_channels,
            decoder_segmentation_channels,
            decoder_dropout,
        )
        super().__init__(fpn)
        channels = fpn.decoder.out_channels
        self.attentive = attentive
        self.return_keys = return_keys
        self.seam: nn.Module
        if attentive:
            self.seam = StructureEnhancedAttention(2, channels, out_channels, key_channels, norm=norm, act=act)
        else:
            self.seam = _KeyOnly(2, channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Segment ``x``.

        Args:
            x: image ``(B, in_channels, H, W)``, H and W divisible by 32.

        Returns:
            ``(logits, keys)`` if ``return_keys`` else ``logits``. ``logits``: ``(B, N, H, W)``; ``keys``: key-map
            logits ``(B, N, H/4, W/4)`` at the decoder's resolution (cheaper; ``SEAMLoss`` up-samples them to the
            label size, as the head up-samples the logits).
        """
        v = self._features(x)
        z, keys = self.seam(v)
        logits = self.segmentation_head(z)
        if self.return_keys:
            return logits, keys
        return logits


class FPNWithBlock(_FPNBase):
    """smp FPN with a block between decoder and head (the Table 1 attention baselines).

    Args:
        block: module ``(B, C, h, w) -> (B, C, h, w)`` applied to the decoder features, or, with
            ``block_is_head=True``, ``(B, C, h, w) -> (B, N, h, w)`` class logits replacing the 1x1 head.
        fpn: the smp FPN providing encoder, decoder and head.
        block_is_head: the block produces the class logits (DANet head); only the x4 up-sampling is kept.

    Example::

        net = fpn_baseline("em", in_channels=1, out_channels=4, encoder_name="resnet18")
    """

    def __init__(self, block: nn.Module, fpn: smp.FPN, block_is_head: bool = False) -> None:
        super().__init__(fpn)
        self.block = block
        if block_is_head:
            self.segmentation_head = nn.Sequential(self.segmentation_head[1])  # keep only the x4 up-sampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, N, H, W)``; H and W divisible by 32."""
        return self.segmentation_head(self.block(self._features(x)))


def fpn_baseline(
    variant: str,
    in_channels: int = 1,
    out_channels: int = 4,
    encoder_name: str = "resnet50",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    decoder_pyramid_channels: int = 256,
    decoder_segmentation_channels: int = 128,
    decoder_dropout: float = 0.2,
) -> nn.Module:
    """Build one of the SEAM paper's FPN baselines (Table 1), all with the same FPN as ``FPNSEAM``.

    Args:
        variant: ``"fpn"`` (vanilla smp FPN), ``"nonlocal"`` (``timm.layers.NonLocalAttn`` between decoder and head),
            ``"danet"`` (``DANetHead`` on the decoder features replacing the 1x1 head; its dropout 0.1),
            ``"em"`` (``EMAttention``: 64 bases, 3 iterations, momentum 0.9, between decoder and head).
        in_channels: image channels.
        out_channels: number of classes.
        encoder_name: smp encoder name.
        encoder_weights: smp encoder weights (None: random, no download).
        encoder_depth: smp encoder depth.
        decoder_pyramid_channels: FPN pyramid channels.
        decoder_segmentation_channels: semantic-head channels C.
        decoder_dropout: smp FPN spatial dropout.

    Returns:
        ``nn.Module`` mapping ``(B, in_channels, H, W)`` to logits ``(B, out_channels, H, W)``.

    Raises:
        ValueError: if ``variant`` is unknown or a channel count is not positive.
    """
    if variant not in BASELINE_VARIANTS:
        raise ValueError(f"variant must be one of {BASELINE_VARIANTS}, got {variant!r}.")
    fpn = _smp_fpn(
        in_channels,
        out_channels,
        encoder_name,
        encoder_weights,
        encoder_depth,
        decoder_pyramid_channels,
        decoder_segmentation_channels,
        decoder_dropout,
    )
    if variant == "fpn":
        return fpn
    channels = fpn.decoder.out_channels
    if variant == "nonlocal":
        from timm.layers import NonLocalAttn

        return FPNWithBlock(NonLocalAttn(channels), fpn)
    if variant == "em":
        return FPNWithBlock(EMAttention(2, channels), fpn)
    from spine_monai.networks.blocks.danet_head import DANetHead

    return FPNWithBlock(DANetHead(2, channels, out_channels), fpn, block_is_head=True)
