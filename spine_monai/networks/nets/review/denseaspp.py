"""DenseASPP: dilated DenseNet encoder (output stride 8) + densely connected ASPP + 1x1 classifier (2D).

Yang, Yu, Zhang, Li, Yang, "DenseASPP for Semantic Segmentation in Street Scenes", CVPR 2018,
https://doi.org/10.1109/CVPR.2018.00388, Section 3 (Fig. 2). Compared in Zhou et al., "Review of Deep Learning Models
for Spine Segmentation", ICMR 2022, https://doi.org/10.1145/3512527.3531356, Section 3.2 (3): DenseNet-169 backbone.
Reference code: DeepMotionAIResearch/DenseASPP ``models/DenseASPP.py`` and ``cfgs/DenseASPP{121,161,169,201}.py``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from segmentation_models_pytorch.encoders import get_encoder

from spine_monai.networks.blocks.dense_aspp import DenseASPP

__all__ = ["DENSEASPP_WIDTHS", "DenseASPPNet"]

#: (bottleneck ``d_feature0``, growth ``d_feature1``) per backbone, from the reference ``cfgs``.
DENSEASPP_WIDTHS: dict[str, tuple[int, int]] = {
    "densenet121": (128, 64),
    "densenet161": (512, 128),
    "densenet169": (336, 168),
    "densenet201": (480, 240),
}


def _dilate(block: nn.Module, dilation: int) -> None:
    """Set the dilation (and matching padding) of every 3x3 convolution of a DenseNet dense block."""
    for module in block.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            module.dilation = (dilation, dilation)
            module.padding = (dilation, dilation)


class DenseASPPNet(nn.Module):
    """DenseASPP for 2D semantic segmentation; returns logits at the input size.

    The encoder is the library DenseNet (``segmentation_models_pytorch`` / torchvision, ``weights=None``) modified
    as in the reference: transitions 2 and 3 lose their average pooling (output stride 8), dense blocks 3 and 4
    use dilation 2 and 4, a fourth transition (norm-ReLU-1x1 conv) halves the channels and a new final norm
    follows; then the DenseASPP cascade (dilations 3, 6, 12, 18, 24), channel dropout 0.1, a 1x1 classifier and
    bilinear up-sampling to the input size (the reference up-samples by 8; resizing to the input size also
    handles sizes that are not multiples of 8).

    Args:
        in_channels: input channels.
        out_channels: number of classes.
        encoder_name: ``"densenet121"``, ``"densenet161"``, ``"densenet169"`` (review) or ``"densenet201"``.
        bottleneck_channels: 1x1 width of the ASPP branches; ``None`` takes the reference value of the backbone.
        growth_channels: output width of each ASPP branch; ``None`` takes the reference value.
        dilations: ASPP dilation rates.
        dropout: channel dropout of the ASPP branches and before the classifier.
        norm: normalization type of the added layers.
        act: activation type of the added layers.

    Raises:
        ValueError: on a non-DenseNet encoder without explicit widths, or bad channel counts.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        encoder_name: str = "densenet169",
        bottleneck_channels: int | None = None,
        growth_channels: int | None = None,
        dilations: tuple[int, ...] = (3, 6, 12, 18, 24),
        dropout: float = 0.1,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if not encoder_name.startswith("densenet"):
            raise ValueError(f"DenseASPPNet needs a DenseNet encoder ({sorted(DENSEASPP_WIDTHS)}), got {encoder_name}.")
        if bottleneck_channels is None or growth_channels is None:
            if encoder_name not in DENSEASPP_WIDTHS:
                raise ValueError(f"no reference ASPP widths for {encoder_name}: pass bottleneck/growth channels.")
            bottleneck_channels, growth_channels = DENSEASPP_WIDTHS[encoder_name]
        encoder = get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None)
        f = encoder.features
        f.transition2.pool = nn.Identity()  # output stride 8
        f.transition3.pool = nn.Identity()
        _dilate(f.denseblock3, 2)
        _dilate(f.denseblock4, 4)
        num_features = encoder.out_channels[-1]
        half = num_features // 2
        transition4 = nn.Sequential(
            get_norm_layer(norm, 2, num_features),
            get_act_layer(act),
            Convolution(2, num_features, half, kernel_size=1, bias=False, conv_only=True),
        )
        names = ["conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2", "transition2",
                 "denseblock3", "transition3", "denseblock4"]
        modules = OrderedDict((name, getattr(f, name)) for name in names)
        modules["transition4"] = transition4
        modules["norm5"] = get_norm_layer(norm, 2, half)
        self.encoder = nn.Sequential(modules)
        self.aspp = DenseASPP(2, half, growth_channels, bottleneck_channels, dilations, act=act, norm=norm,
                              dropout=dropout)
        # the reference applies channel dropout before the 1x1 classifier
        self.classifier = nn.Sequential(
            nn.Dropout2d(dropout), Convolution(2, self.aspp.out_channels, out_channels, kernel_size=1, conv_only=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            Logits ``(B, out_channels, H, W)``.
        """
        feat = self.aspp(self.encoder(x))  # (B, C', H/8, W/8)
        logits = self.classifier(feat)
        return F.interpolate(logits, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=False)
