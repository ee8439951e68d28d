"""SAFNet: scene aware fusion network for multi-class 3D spine MRI segmentation.

Yilizati-Yilihamu, Yang, Yang, Rong, Feng, "A spine segmentation method based on scene aware fusion network",
BMC Neuroscience 2023, DOI 10.1186/s12868-023-00818-z. Sections "Feature extraction network" (Fig. 2-3),
"Atrous spatial pyramid pooling" (Fig. 4), "Self-attention mechanism" (Fig. 5-6), "Multiscale fusion",
"Dimension splicing" (eq. 6-8) and the ablation of Table 2.

Volumes are ``(B, C, D, H, W)`` with the few-slice axis first (the paper's ``18 x 256 x 128``); strides are
``(1, 2, 2)`` so the depth is kept. Layout (``F`` = ``features``, 128 in the paper):

    stem       CBR 3x3x3 (in -> F), then CBR 3x3x3 stride (1,2,2)                     1/2 in-plane
    low        ResidualDown stride (1,2,2)                        F x 18 x 64 x 32     1/4
    mid        ResidualDown stride (1,2,2)                        F x 18 x 32 x 16     1/8
    high       ResidualDown stride (1,2,2), ResidualDown stride 1, 3 dilated CBRs
                                                                  F x 18 x 16 x 8      1/16
    high       -> ASPP -> PositionAttention -> ChannelAttention ("sequentially ... spatial and channel")
    low, mid   -> MultiscaleFusion each
    gate       R_S = sigmoid(GAP(high)) (eq. 6-7);  R_SAM = CAM(PAM(R_S)) (the attention module on R_S, eq. 8)
    splice     F_sh = R_SAM * F_l * up(F_m) (eq. 8);  concat(F_sh, F_l, up(F_m)) at the low-level size (3F)
    head       CBR 3x3x3 (3F -> F), 1x1x1 conv (F -> classes), (tri)linear upsampling to the input size

The sizes in the right column are the paper's, for an ``18 x 256 x 128`` input. They are 1/4, 1/8 and 1/16 in-plane
(the paper's numbers; the stem's strided CBR halves before the first residual unit), not 1/2, 1/4, 1/8.

Dimension splicing (``splice``), the paper's text read three ways:

- ``"paper"`` (default): eq. 8 as printed, ``F_sh = R_SAM . F_l . F_m``, one element-wise product with ``F_m``
  up-sampled to the size of ``F_l``; then, as the abstract says, "the new high-level features, low-level features,
  and mid-level features are all sampled to the same size and concatenated": ``concat(F_sh, F_l, up(F_m))``.
- ``"respectively"``: the sentence before eq. 8 ("multiplying ... R_SAM ... with F_l and F_m respectively") as two
  products, ``concat(R_SAM F_l, up(R_SAM F_m), F_l, up(F_m))`` (4F channels).
- ``"gated_high"``: this module's earlier reading, ``concat(R F_l, up(R F_m), up(F_h))``: it keeps the high-level
  map's spatial detail, which the paper's splicing reduces to the channel vector ``R_SAM``, and drops the raw
  ``F_l`` / ``F_m``. Kept as an option for comparison; not the paper.

``R_SAM`` (eq. 8, "using the attention mechanism module to process the activated R_S"): the position and channel
attention modules of the "Self-attention mechanism" section (separate instances from those on ``F_h``) applied to
the ``C x 1 x 1 x 1`` map ``R_S``. On one position the position attention is ``gamma * V(R_S) + R_S`` (its softmax
over one position is 1, so its query and key projections, 2 x (C^2/8 + C/8) parameters, never receive a gradient)
and the channel attention mixes the channels by their affinity; both start as the identity (``gamma = 0``), so training
starts from ``R_SAM = R_S``. ``gate_attention=False`` uses ``R_S`` itself. The gate attention belongs to the
self-attention component, so it follows ``use_attention`` unless set (Table 2's rows switch both together).

Other choices where the paper is silent: the widths of the stem (``F``); "processed twice using the residual network"
giving 1/16 (not 1/32) means one strided and one stride-1 unit; the dilations of the three "CBR modules with holes"
(``high_dilations``, default in-plane 2, 4, 8, depth 1); the head and the final upsampling (the paper only says
"output the final result").

ASPP rates are the paper's isotropic 6, 12, 18 (Fig. 4, "padding of 6 and a dilation rate of 6", ...). On the
``18 x 16 x 8`` high-level map of the paper's input they degenerate: every off-centre tap of the rate-18 branch falls
in the zero padding on all three axes, so that branch is exactly a 1x1x1 convolution, and rate 12 reads padding for
most taps (``tests/networks/test_safnet.py`` pins this). :data:`FIT_ASPP_RATES` gives in-plane rates that fit the
map (depth 1), offered as an overlay of the bundle; the default stays the paper's.

Ablation (Table 2): ``use_aspp``, ``use_msf`` and ``use_attention`` replace the module with the identity; the base
model keeps the feature extractor, the gate, the splicing and the head. ``safnet_variant(name)`` gives the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

from spine_monai.networks.blocks.aspp import ASPP
from spine_monai.networks.blocks.channel_attention import ChannelAttention
from spine_monai.networks.blocks.multiscale_fusion import MultiscaleFusion
from spine_monai.networks.blocks.position_attention import PositionAttention
from spine_monai.networks.blocks.residual_down import ResidualDown

__all__ = ["SAFNet", "safnet_variant", "SAFNET_VARIANTS", "SPLICES", "FIT_ASPP_RATES", "count_parameters"]

#: Table 2 rows -> switches. Aliases map to the same rows.
SAFNET_VARIANTS: dict[str, dict[str, bool]] = {
    "base": {"use_aspp": False, "use_msf": False, "use_attention": False},
    "base+aspp": {"use_aspp": True, "use_msf": False, "use_attention": False},
    "base+multiscale_fusion": {"use_aspp": False, "use_msf": True, "use_attention": False},
    "base+self_attention": {"use_aspp": False, "use_msf": False, "use_attention": True},
    "safnet": {"use_aspp": True, "use_msf": True, "use_attention": True},
}
_ALIASES = {"base+msf": "base+multiscale_fusion", "base+attention": "base+self_attention", "full": "safnet"}

#: Readings of the dimension splicing (module docstring); "paper" is eq. 8 and the abstract.
SPLICES = ("paper", "respectively", "gated_high")

#: ASPP rates that fit the 18 x 16 x 8 high-level map of the paper's input: in-plane dilations 1/2/3 x (2, 2), depth 1
#: (the paper's 6 / 12 / 18 reach past the map; see the module docstring).
FIT_ASPP_RATES: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (1, 4, 4), (1, 6, 6))


def safnet_variant(name: str) -> dict[str, bool]:
    """Keyword arguments of ``SAFNet`` for a row of the paper's ablation (Table 2).

    Args:
        name: ``"base"``, ``"base+aspp"``, ``"base+multiscale_fusion"`` (or ``"base+msf"``),
            ``"base+self_attention"`` (or ``"base+attention"``), ``"safnet"`` (or ``"full"``); case-insensitive.

    Returns:
        A new dict with ``use_aspp``, ``use_msf`` and ``use_attention``.

    Raises:
        ValueError: if ``name`` is not a known row.
    """
    key = name.strip().lower().replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in SAFNET_VARIANTS:
        raise ValueError(f"unknown SAFNet variant {name!r}; choose from {sorted(SAFNET_VARIANTS) + sorted(_ALIASES)}.")
    return dict(SAFNET_VARIANTS[key])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class SAFNet(nn.Module):
    """Scene aware fusion network (2D or 3D; the paper is 3D).

    Args:
        spatial_dims: 3 (paper, ``(B, C, D, H, W)`` depth first) or 2.
        in_channels: input channels (1 for T2 MRI).
        out_channels: classes including background (20 for MRSpineSeg).
        features: channels of all feature levels (128 in the paper).
        use_aspp: apply ASPP to the high-level features.
        use_msf: apply multiscale fusion to the low- and mid-level features.
        use_attention: apply position then channel attention to the high-level features.
        act: activation (MONAI name or ``(name, kwargs)``); the paper's CBR uses ReLU.
        norm: normalisation; the paper's CBR uses batch norm.
        aspp_rates: ASPP dilations, ints or per-axis tuples.
        msf_dilations: in-plane dilations of the multiscale fusion branches (depth dilation 1).
        high_dilations: dilations of the three dilated CBRs; ints mean ``(1, d, d)`` in 3D, ``(d, d)`` in 2D.
        reduction: query/key reduction of the position attention.
        max_positions: position attention guard (at the high level the paper's input gives 2304 positions).
        splice: dimension splicing, one of :data:`SPLICES` (module docstring); ``"paper"`` is eq. 8.
        gate_attention: process ``R_S`` with position + channel attention into ``R_SAM`` (eq. 8); default
            ``use_attention``.

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3, a channel count is not positive, ``features`` is not a
            multiple of 4 (multiscale fusion) and of ``reduction``, or ``splice`` is unknown.

    Example::

        net = SAFNet(in_channels=1, out_channels=20)
        logits = net(torch.randn(1, 1, 18, 256, 128))  # (1, 20, 18, 256, 128)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 20,
        features: int = 128,
        use_aspp: bool = True,
        use_msf: bool = True,
        use_attention: bool = True,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        aspp_rates: Sequence[int | Sequence[int]] = (6, 12, 18),
        msf_dilations: Sequence[int | Sequence[int]] = (2, 4, 8, 16),
        high_dilations: Sequence[int | Sequence[int]] = (2, 4, 8),
        reduction: int = 8,
        max_positions: int = 65536,
        splice: str = "paper",
        gate_attention: bool | None = None,
    ) -> None:
        super().__init__()
        if splice not in SPLICES:
            raise ValueError(f"splice must be one of {SPLICES}, got {splice!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if features < 1 or features % 4 != 0 or features % reduction != 0:
            raise ValueError(f"features must be a positive multiple of 4 and of reduction={reduction}, got {features}.")
        self.spatial_dims = spatial_dims
        self.use_aspp, self.use_msf, self.use_attention = use_aspp, use_msf, use_attention
        self.splice = splice
        self.gate_attention_on = use_attention if gate_attention is None else bool(gate_attention)
        self.interp_mode = "trilinear" if spatial_dims == 3 else "bilinear"
        down: tuple[int, ...] = (1, 2, 2) if spatial_dims == 3 else (2, 2)

        def cbr(cin: int, cout: int, strides: Sequence[int] | int = 1, dilation: Sequence[int] | int = 1) -> nn.Module:
            dil = (dilation,) * spatial_dims if isinstance(dilation, int) else tuple(dilation)
            return Convolution(
                spatial_dims, cin, cout, strides=strides, kernel_size=3, dilation=dil, padding=dil, act=act, norm=norm
            )

        self.stem = nn.Sequential(cbr(in_channels, features), cbr(features, features, strides=down))
        self.low_block = ResidualDown(spatial_dims, features, features, strides=down, act=act, norm=norm)
        self.mid_block = ResidualDown(spatial_dims, features, features, strides=down, act=act, norm=norm)
        high: list[nn.Module] = [
            ResidualDown(spatial_dims, features, features, strides=down, act=act, norm=norm),
            ResidualDown(spatial_dims, features, features, strides=1, act=act, norm=norm),
        ]
        for d in high_dilations:
            dil = ((1, d, d) if spatial_dims == 3 else (d, d)) if isinstance(d, int) else tuple(d)
            high.append(cbr(features, features, dilation=dil))
        self.high_block = nn.Sequential(*high)

        self.aspp: nn.Module = (
            ASPP(spatial_dims, features, features, rates=aspp_rates, norm=norm, act=act) if use_aspp else nn.Identity()
        )
        if use_attention:
            self.attention: nn.Module = nn.Sequential(
                PositionAttention(spatial_dims, features, reduction=reduction, max_positions=max_positions),
                ChannelAttention(spatial_dims, features),
            )
        else:
            self.attention = nn.Identity()
        if use_msf:
            self.msf_low: nn.Module = MultiscaleFusion(spatial_dims, features, msf_dilations, norm=norm, act=act)
            self.msf_mid: nn.Module = MultiscaleFusion(spatial_dims, features, msf_dilations, norm=norm, act=act)
        else:
            self.msf_low, self.msf_mid = nn.Identity(), nn.Identity()
        if self.gate_attention_on:  # R_SAM: the attention modules on the 1 x 1 x 1 response map R_S
            self.gate_attention: nn.Module = nn.Sequential(
                PositionAttention(spatial_dims, features, reduction=reduction, max_positions=1),
                ChannelAttention(spatial_dims, features),
            )
        else:
            self.gate_attention = nn.Identity()
        spliced = (4 if splice == "respectively" else 3) * features
        self.head = nn.Sequential(
            cbr(spliced, features), Conv[Conv.CONV, spatial_dims](features, out_channels, kernel_size=1)
        )

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature extraction network (Fig. 2) only.

        Args:
            x: image ``(B, in_channels, D, H, W)`` (3D) or ``(B, in_channels, H, W)``.

        Returns:
            ``(low, mid, high)`` at 1/4, 1/8 and 1/16 of ``H`` and ``W`` (ceil), full depth, ``features`` channels.
        """
        low = self.low_block(self.stem(x))
        mid = self.mid_block(low)
        high = self.high_block(mid)
        return low, mid, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a volume.

        Args:
            x: image ``(B, in_channels, D, H, W)`` (3D) or ``(B, in_channels, H, W)``; any size (odd sizes are
                handled by ceil-sized strided convolutions and interpolation back to the input size).

        Returns:
            Logits ``(B, out_channels, *x.shape[2:])``.
        """
        low, mid, high = self.forward_features(x)
        high = self.attention(self.aspp(high))
        low = self.msf_low(low)
        mid = self.msf_mid(mid)
        gate = torch.sigmoid(high.flatten(2).mean(dim=2))  # R_S: GAP (eq. 6) + sigmoid (eq. 7), (B, C)
        for _ in range(self.spatial_dims):
            gate = gate.unsqueeze(-1)  # (B, C) -> (B, C, 1, ..., 1)
        gate = self.gate_attention(gate)  # R_SAM (eq. 8)
        size = low.shape[2:]
        mid_up = F.interpolate(mid, size=size, mode=self.interp_mode, align_corners=False)
        if self.splice == "paper":  # F_sh = R_SAM . F_l . F_m (eq. 8), spliced with F_l and F_m
            fused = torch.cat([gate * low * mid_up, low, mid_up], dim=1)
        elif self.splice == "respectively":
            fused = torch.cat([gate * low, gate * mid_up, low, mid_up], dim=1)
        else:  # "gated_high"
            high_up = F.interpolate(high, size=size, mode=self.interp_mode, align_corners=False)
            fused = torch.cat([low * gate, mid_up * gate, high_up], dim=1)
        logits = self.head(fused)
        return F.interpolate(logits, size=x.shape[2:], mode=self.interp_mode, align_corners=False)
