"""String registry of the twelve 2D networks compared by the spine-MRI review.

Zhou, Wen, Wang, Liu, Zhou, "Review of Deep Learning Models for Spine Segmentation", ICMR 2022,
https://doi.org/10.1145/3512527.3531356, Sections 2-3 (the twelve models) and 4.4 (1 x 880 x 880 inputs,
20 output channels, no pre-training).

``get_network(name, in_channels, out_channels, **kw)`` builds a network configured as the review used it; keyword
arguments override the defaults (e.g. ``encoder_name="resnet18"`` for a light test model). Every network maps
``(B, in_channels, H, W)`` to logits ``(B, out_channels, H, W)`` at the input size, for any ``H, W``: library
networks that need sizes divisible by their output stride are wrapped in :class:`PadToMultiple`.

Library implementations (random initialisation, nothing is downloaded):

- ``unet``: MONAI ``BasicUNet`` 64-128-256-512-1024, ReLU + batch norm: the original U-Net the review describes
  (its Fig. 1); Table 3's 13M matches a bilinear 64-512 variant instead (see ``networks/README.md``).
- ``attention_unet``: MONAI ``AttentionUnet`` 64-1024.
- ``pspnet``: smp ``PSPNet`` ResNet-101, ``encoder_depth=5``, dilated to output stride 8 (the review: ResNet-101).
- ``deeplabv3plus``: smp ``DeepLabV3Plus`` ResNet-101, output stride 16, atrous rates (6, 12, 18).

Written on library encoders: ``danet``, ``emanet``, ``psanet`` (ResNet-101, OS 8), ``denseaspp`` (DenseNet-169),
``infnet`` (Res2Net-101), ``miniseg``, ``resunetpp``, ``transunet`` (timm R50-ViT-B/16, ``img_size=880``).
``psanet`` uses ``mask_size=109``, which covers the whole feature map at 880 x 880 (the review's 78M parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import AttentionUnet, BasicUNet

from spine_monai.networks.nets.review.danet import DANet
from spine_monai.networks.nets.review.denseaspp import DenseASPPNet
from spine_monai.networks.nets.review.emanet import EMANet
from spine_monai.networks.nets.review.infnet import InfNet
from spine_monai.networks.nets.review.miniseg import MiniSeg
from spine_monai.networks.nets.review.psanet import PSANet
from spine_monai.networks.nets.review.resunetpp import ResUNetPlusPlus
from spine_monai.networks.nets.review.transunet import TransUNet

__all__ = ["REVIEW_IMG_SIZE", "CPU_PRESETS", "PRESETS", "PadToMultiple", "get_network", "list_networks",
           "psanet_mask_size"]

#: In-plane size the review resampled every slice to (Section 4.1).
REVIEW_IMG_SIZE = 880


class PadToMultiple(nn.Module):
    """Zero-pad the input (bottom / right) to a multiple of ``multiple``, run ``net``, crop the output back.

    Args:
        net: a 2D network mapping ``(B, C, H, W)`` to ``(B, K, H, W)`` for sizes divisible by ``multiple``.
        multiple: required divisor of the spatial size (the network's output stride).

    Raises:
        ValueError: if ``multiple`` is not positive.
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        if multiple < 1:
            raise ValueError(f"multiple must be positive, got {multiple}.")
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad, run, crop.

        Args:
            x: ``(B, C, H, W)``.

        Returns:
            ``(B, K, H, W)``.
        """
        height, width = x.shape[2], x.shape[3]
        m = self.multiple
        y = self.net(F.pad(x, [0, (m - width % m) % m, 0, (m - height % m) % m]))
        return y[:, :, :height, :width]


def _unet(cin: int, cout: int, **kw: Any) -> nn.Module:
    args: dict[str, Any] = {"features": (64, 128, 256, 512, 1024, 64), "act": "relu", "norm": "batch"}
    return BasicUNet(spatial_dims=2, in_channels=cin, out_channels=cout, **{**args, **kw})


def _attention_unet(cin: int, cout: int, **kw: Any) -> nn.Module:
    args: dict[str, Any] = {"channels": (64, 128, 256, 512, 1024), "strides": (2, 2, 2, 2)}
    args.update(kw)
    return PadToMultiple(AttentionUnet(spatial_dims=2, in_channels=cin, out_channels=cout, **args),
                         2 ** len(args["strides"]))


def _pspnet(cin: int, cout: int, **kw: Any) -> nn.Module:
    args: dict[str, Any] = {"encoder_name": "resnet101", "encoder_weights": None, "encoder_depth": 5,
                            "output_stride": 8, "upsampling": 8}
    args.update(kw)
    return PadToMultiple(smp.PSPNet(in_channels=cin, classes=cout, **args), int(args["output_stride"]))


def _deeplabv3plus(cin: int, cout: int, **kw: Any) -> nn.Module:
    args: dict[str, Any] = {"encoder_name": "resnet101", "encoder_weights": None, "encoder_output_stride": 16,
                            "decoder_atrous_rates": (6, 12, 18)}
    args.update(kw)
    return PadToMultiple(smp.DeepLabV3Plus(in_channels=cin, classes=cout, **args), int(args["encoder_output_stride"]))


def _psanet(cin: int, cout: int, **kw: Any) -> nn.Module:
    return PSANet(cin, cout, **{"mask_size": psanet_mask_size(REVIEW_IMG_SIZE), **kw})


def psanet_mask_size(img_size: int, output_stride: int = 8, shrink_factor: int = 2) -> int:
    """PSANet attention-mask size that covers the whole feature map of an ``img_size`` input (109 at 880)."""
    return 2 * ((int(img_size) - 1) // (output_stride * shrink_factor) + 1) - 1


def _resunetpp(cin: int, cout: int, **kw: Any) -> nn.Module:
    return ResUNetPlusPlus(2, cin, cout, **kw)


def _transunet(cin: int, cout: int, **kw: Any) -> nn.Module:
    return TransUNet(cin, cout, **{"img_size": REVIEW_IMG_SIZE, **kw})


# name -> builder, in the order of the review's Section 1 list
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": _unet,
    "pspnet": _pspnet,
    "deeplabv3plus": _deeplabv3plus,
    "denseaspp": DenseASPPNet,
    "attention_unet": _attention_unet,
    "danet": DANet,
    "emanet": EMANet,
    "infnet": InfNet,
    "miniseg": MiniSeg,
    "psanet": _psanet,
    "resunetpp": _resunetpp,
    "transunet": _transunet,
}


_ALIASES = {"deeplabv3+": "deeplabv3plus", "resunet++": "resunetpp"}

#: ``preset="cpu"``: the same architectures made narrower for CPU training (the bundle's ``cpu_small`` overlay):
#: ResNet-18 / DenseNet-121 encoders instead of ResNet-101 / Res2Net-101 / DenseNet-169, U-Net widths 16-256,
#: TransUNet with 4 transformer layers of width 256. Each is still the review's design (same decoder / head), so the
#: comparison keeps its meaning at a size a CPU can train; ``networks/README.md`` lists the parameter counts.
CPU_PRESETS: dict[str, dict[str, Any]] = {
    "unet": {"features": (16, 32, 64, 128, 256, 16)},
    "pspnet": {"encoder_name": "resnet18"},
    "deeplabv3plus": {"encoder_name": "resnet18"},
    "denseaspp": {"encoder_name": "densenet121", "bottleneck_channels": 64, "growth_channels": 32},
    "attention_unet": {"channels": (16, 32, 64, 128, 256)},
    "danet": {"encoder_name": "resnet18"},
    "emanet": {"encoder_name": "resnet18", "mid_channels": 128, "head_channels": 64},
    "infnet": {"encoder_name": "resnet18"},
    "miniseg": {},
    "psanet": {"encoder_name": "resnet18", "mid_channels": 128, "head_channels": 64},
    "resunetpp": {"features": (16, 32, 64, 128, 256)},
    "transunet": {"head_channels": 256, "decoder_channels": (128, 64, 32, 16),
                  "vit_kwargs": {"depth": 4, "embed_dim": 256, "num_heads": 4}},
}

#: presets accepted by :func:`get_network`.
PRESETS = ("paper", "cpu")


def list_networks() -> list[str]:
    """Names accepted by :func:`get_network`, in the review's order."""
    return list(_BUILDERS)


def get_network(name: str, in_channels: int, out_channels: int, preset: str = "paper", img_size: int | None = None,
                **kw: Any) -> nn.Module:
    """Build one of the review's twelve networks.

    Args:
        name: one of :func:`list_networks` (case-insensitive; ``-`` and spaces read as ``_``; ``"deeplabv3+"`` and
            ``"resunet++"`` are accepted too).
        in_channels: input channels (1 for the review's MRI slices).
        out_channels: classes (20 in the review).
        preset: ``"paper"`` (the review's configuration) or ``"cpu"`` (:data:`CPU_PRESETS`, narrower).
        img_size: the training slice size; sets the networks that depend on it (TransUNet's position embeddings,
            PSANet's full-coverage attention mask, :func:`psanet_mask_size`). ``None``: the review's 880 for
            TransUNet and PSANet's mask.
        kw: overrides of the network's arguments, e.g. ``encoder_name="resnet18"`` (applied last).

    Returns:
        The network: ``(B, in_channels, H, W)`` -> logits ``(B, out_channels, H, W)``.

    Raises:
        ValueError: on an unknown name (the message lists the valid ones) or non-positive channel counts.
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in _BUILDERS:
        raise ValueError(f"unknown network {name!r}; valid names: {', '.join(_BUILDERS)}.")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}.")
    args: dict[str, Any] = dict(CPU_PRESETS[key]) if preset == "cpu" else {}
    if img_size is not None:
        if key == "transunet":
            args["img_size"] = int(img_size)
        elif key == "psanet":
            args["mask_size"] = psanet_mask_size(int(img_size))
    return _BUILDERS[key](in_channels, out_channels, **{**args, **kw})
