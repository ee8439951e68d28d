"""One network per module; the names below are importable from here too (lazily), e.g.
``spine_monai.networks.nets.SAUNet``."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_MODULES = {
    "DenseUNet2D": "dense_unet",
    "SAUNet": "saunet",
    "SliceWiseNet": "slicewise",
    "SAFNet": "safnet",
    "DeepLabV3_3D": "deeplabv3_3d",
    "AttentionLocalisationNet2D": "sekuboyina",
    "SpineSegUNet2D3D": "sekuboyina",
    "FPNSEAM": "fpn_seam",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
