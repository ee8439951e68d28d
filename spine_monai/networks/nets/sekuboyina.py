"""Attention-driven spine CT segmentation: 2D attention (localisation) net, 2D-3D segmentation U-Net, late fusion.

Sekuboyina, Kukacka, Kirschke, Menze, Valentinitzsch, "Attention-driven Deep Learning for Pathological Spine
Segmentation", MSKI 2017 (MICCAI workshop, Computational Methods and Clinical Applications in Musculoskeletal
Imaging), Springer LNCS, DOI 10.1007/978-3-319-74113-0_10. Section 2.1 and Fig. 2 (attention net), Section 2.2 and
Fig. 4 (segmentation net), "late fusion" in Section 2.2. Figures 2 and 4 are not in the text we have; every number
below that is not quoted is our choice, fitted to the sizes the text gives.

Axes: the networks take MONAI tensors as they come out of ``LoadImaged`` + ``Orientationd(axcodes="RAS")``, i.e.
``(B, C, LR, AP, SI)``: the first spatial axis runs across sagittal slices (left-right), the sagittal plane is
``AP x SI``. A sagittal slice is ``volume[:, :, r]`` of shape ``(B, C, AP, SI)``. This is the slices-first
convention of the rest of the project (SAFNet). The paper writes its block as "188 x 188 x 12, with the first two
dimensions corresponding to the sagittal view"; in our axis order that is ``(12, 188, 188)``, and the paper's
in-plane ``x, y`` are our ``AP, SI`` while its through-plane ``z`` is our ``LR``.

Attention net (``AttentionLocalisationNet2D``): "10 convolutional layers with stride 1 ... the first 4 conv-layers
are followed by max-pooling", dilated convolutions deeper, each output value in [0, 1] is the fraction of spine
pixels of a 16 x 16 block, MSE loss; "A 2D patch of 160 x 160 (padded to size 720 x 720) predicts a map of size
10 x 10". It works on sagittal slices ``(B, C, AP, SI)``. We use kernels (5, 3, 3, 5) before the four pools, then
five 3x3 convolutions with dilations (1, 1, 2, 4, 8) (Yu & Koltun's context module, the paper's ref. [15]) and a 1x1
output layer, sigmoid output (values are fractions in [0, 1]). With ``padding="valid"`` this reproduces the paper's
geometry exactly: 720 -> 10, i.e. a border of 280 context pixels on each side (receptive field 576). With
``padding="same"`` (default) the output is the input size / 16 and the target is ``attention_target(mask)`` =
``avg_pool2d(mask, 16)``; in valid mode it is ``attention_target(mask, border=net.border)``.

Segmentation net (``SpineSegUNet2D3D``): five levels, "each level consisting of two convolutions with a ReLU
activation and a max-pooling", a symmetric up path with skip connections, 2D (in the sagittal plane) and 3D
convolutions, dropout after the convolutions of the lowest level; input "188 x 188 x 12", "parameterised by the
dimensions of the smallest blob ... x, y >= 4, z >= 3", receptive field "~18.4 x 18.4 x 0.8 cm" at 1 mm. In our
axis order the 2D convolutions have kernel ``(1, 3, 3)`` (across ``AP x SI``, no mixing across ``LR``), the 3D
ones ``(3, 3, 3)``; the in-plane poolings are ``(1, 2, 2)`` and the single through-plane pooling ``(2, 2, 2)``.
These numbers fit an *unpadded* U-Net: in-plane (AP, SI), four poolings and two valid 3x3 convolutions per level
give input = 16 x + 124 and output = 16 x - 60 for a smallest blob x, so x = 4 gives exactly 188 -> 4 (184 voxels
lost = 18.4 cm). Through-plane (LR), 12 -> 4 (8 lost = 0.8 cm) with smallest blob z = 3 is obtained with one 3D
convolution at level 4 and one at the bottom, and one pooling across LR (before the bottom level): input 2 z + 6,
output 2 z - 2. ``padding="valid"`` builds exactly this: ``(12, 188, 188) -> (4, 4, 4)``. The paper also says "The
output is a dense pixel-wise segmentation of dimensions equal to that of the input": ``padding="same"`` (default,
usable with MONAI's sliding-window inference) pads every convolution, zero-pads the input symmetrically to a
multiple of the pooling factors (``(12, 188, 188) -> (12, 192, 192)``) and crops the output back to
``(12, 188, 188)``. Widths (32, 64, 128, 256, 512), transposed-convolution upsampling and dropout 0.5 are our
choices; the paper's Caffe nets mention no normalisation, so ``norm=None`` by default. Parameters with the
defaults: 716,481 (attention net) and 13,592,225 (segmentation net, 1 -> 1).

Late fusion (``late_fusion``): "The thresholded binary attention-map ... is used as a mask over the
segmentation-net's output to clear away the stray segmentations". It works on probabilities (multiplication, as in
the paper) or on logits (masked-out voxels set to a large negative logit), see its docstring. The whole two-stage
inference is :class:`spine_monai.inferers.AttentionFusionInferer`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

__all__ = ["LOGIT_FILL", "AttentionLocalisationNet2D", "SpineSegUNet2D3D", "attention_target", "late_fusion"]


def _check_padding(padding: str) -> str:
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
    return padding


class AttentionLocalisationNet2D(nn.Module):
    """2D attention (spine localisation) net: a 1/16-resolution map of the spine fraction per 16 x 16 block.

    Works on sagittal slices ``(B, C, AP, SI)``, i.e. ``volume[:, :, r]`` of a RAS volume ``(B, C, LR, AP, SI)``.

    Args:
        in_channels: input channels (1 for CT).
        out_channels: output maps (1: spine fraction).
        features: output channels of the first nine conv layers (the tenth gives ``out_channels``).
        kernel_sizes: kernel size of each of the 10 layers.
        dilations: dilation of each of the 10 layers.
        padding: ``"same"`` (output = input / 16) or ``"valid"`` (the paper's 720 -> 10; see ``border``).
        act: activation after layers 1-9 (MONAI name or ``(name, kwargs)``).
        norm: normalisation after layers 1-9, or None (default, as in the paper).
        output_act: ``"sigmoid"`` (values in [0, 1], default) or None (linear output).

    Raises:
        ValueError: on a bad channel count, ``features`` not of length 9, ``kernel_sizes`` / ``dilations`` not of
            length 10 or not positive, or an unknown ``padding`` / ``output_act``.

    Example::

        net = AttentionLocalisationNet2D()
        frac = net(torch.randn(4, 1, 160, 160))  # four sagittal 160 x 160 patches -> (4, 1, 10, 10)
        AttentionLocalisationNet2D(padding="valid")(torch.randn(1, 1, 720, 720)).shape  # (1, 1, 10, 10)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (16, 32, 64, 64, 128, 128, 128, 128, 64),
        kernel_sizes: Sequence[int] = (5, 3, 3, 5, 3, 3, 3, 3, 3, 1),
        dilations: Sequence[int] = (1, 1, 1, 1, 1, 1, 2, 4, 8, 1),
        padding: str = "same",
        act: str | tuple = "relu",
        norm: str | tuple | None = None,
        output_act: str | None = "sigmoid",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if len(features) != 9 or any(f < 1 for f in features):
            raise ValueError(f"features must have 9 positive entries, got {features!r}.")
        if len(kernel_sizes) != 10 or len(dilations) != 10 or any(v < 1 for v in (*kernel_sizes, *dilations)):
            raise ValueError(
                f"kernel_sizes and dilations need 10 positive entries, got {kernel_sizes!r}, {dilations!r}."
            )
        if output_act not in ("sigmoid", None):
            raise ValueError(f"output_act must be 'sigmoid' or None, got {output_act!r}.")
        self.padding = _check_padding(padding)
        self.num_pools = 4
        self.use_sigmoid = output_act == "sigmoid"
        self.kernel_sizes, self.dilations = tuple(kernel_sizes), tuple(dilations)
        chans = [in_channels, *features]
        layers = []
        for i in range(9):
            k, d = kernel_sizes[i], dilations[i]
            pad = d * (k - 1) // 2 if padding == "same" else 0
            layers.append(
                Convolution(2, chans[i], chans[i + 1], kernel_size=k, dilation=d, padding=pad, act=act, norm=norm)
            )
        self.layers = nn.ModuleList(layers)
        k, d = kernel_sizes[9], dilations[9]
        pad = d * (k - 1) // 2 if padding == "same" else 0
        self.out_conv = Conv[Conv.CONV, 2](features[8], out_channels, kernel_size=k, dilation=d, padding=pad)
        # input pixels lost on each side in valid mode: half the total shrink in input units
        shrink, jump = 0, 1
        for i in range(10):
            shrink += (self.kernel_sizes[i] - 1) * self.dilations[i] * jump
            if i < self.num_pools:
                jump *= 2
        self.border = shrink // 2 if padding == "valid" else 0

    def output_size(self, size: int) -> int:
        """Output length for an input length ``size`` along one axis.

        Raises:
            ValueError: if a length before a pooling is odd or a length is not positive.
        """
        for i in range(10):
            if self.padding == "valid":
                size -= (self.kernel_sizes[i] - 1) * self.dilations[i]
            if size < 1 or (i < self.num_pools and size % 2):
                raise ValueError(
                    f"input length incompatible with the attention net (length {size} after layer {i + 1})."
                )
            if i < self.num_pools:
                size //= 2
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict the spine-fraction map.

        Args:
            x: sagittal slices ``(B, in_channels, AP, SI)``; in ``"same"`` mode AP and SI divisible by 16.

        Returns:
            ``(B, out_channels, AP', SI')`` with ``AP' = AP / 16`` ("same") or ``(AP - 2 border) / 16`` ("valid").

        Raises:
            ValueError: if ``x`` is not 4D or a size before a max-pooling is odd (the map would be misaligned).
        """
        if x.dim() != 4:
            raise ValueError(f"expected a 4D sagittal-slice input (B, C, AP, SI), got shape {list(x.shape)}.")
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_pools:
                if x.shape[2] % 2 != 0 or x.shape[3] % 2 != 0:
                    raise ValueError(
                        f"feature size {list(x.shape[2:])} before pooling {i + 1} is odd: use an input size for which "
                        "AttentionLocalisationNet2D.output_size succeeds (multiples of 16 in 'same' mode)."
                    )
                x = F.max_pool2d(x, 2)
        x = self.out_conv(x)
        return torch.sigmoid(x) if self.use_sigmoid else x


def attention_target(mask: torch.Tensor, factor: int | Sequence[int] = 16, border: int = 0) -> torch.Tensor:
    """Training target of the attention net: the fraction of spine voxels in each ``factor`` block.

    Args:
        mask: label map of sagittal slices ``(B, 1, AP, SI)`` or of a RAS volume ``(B, 1, LR, AP, SI)``; every
            value > 0 counts as spine (multi-label VerSe / CTSpine1K masks work as they are).
        factor: block size, an int or one per spatial axis (e.g. ``(8, 16, 16)`` for the paper's volume target,
            "down-sampled by a factor of 16 x 16 x n (n = 8)", in the axis order ``(LR, AP, SI)``).
        border: pixels removed from each side of the last two (in-plane) axes first (``net.border`` in valid mode).

    Returns:
        Float tensor ``(B, 1, AP / f, SI / f)`` or ``(B, 1, LR / f, AP / f, SI / f)`` with values in [0, 1].

    Raises:
        ValueError: if ``mask`` is not 4D/5D, ``factor`` or ``border`` is invalid, or a cropped size is not a
            multiple of its factor.
    """
    if mask.dim() not in (4, 5):
        raise ValueError(f"mask must be (B, 1, AP, SI) or (B, 1, LR, AP, SI), got shape {list(mask.shape)}.")
    nd = mask.dim() - 2
    f = (factor,) * nd if isinstance(factor, int) else tuple(factor)
    if len(f) != nd or any(v < 1 for v in f):
        raise ValueError(f"factor must be a positive int or {nd} positive ints, got {factor!r}.")
    if border < 0:
        raise ValueError(f"border must be non-negative, got {border}.")
    fg = (mask > 0).float()
    if border > 0:
        fg = fg[..., border:-border, border:-border]  # the in-plane axes are the last two in 2D and 3D
    if any(s % v for s, v in zip(fg.shape[2:], f, strict=True)):
        raise ValueError(f"mask size {list(fg.shape[2:])} (after border {border}) is not a multiple of {list(f)}.")
    return F.avg_pool2d(fg, f) if nd == 2 else F.avg_pool3d(fg, f)


#: logit magnitude given to masked-out voxels by ``late_fusion(..., logits=True)``: ``sigmoid(-1e4)`` is exactly 0
#: in float32 and float16, and 1e4 is representable in float16 (AMP), unlike ``inf`` it gives no NaN in a softmax.
LOGIT_FILL: float = 1.0e4


def late_fusion(
    seg_probs: torch.Tensor,
    attention_mask: torch.Tensor,
    threshold: float | None = None,
    background_channel: int | None = None,
    logits: bool = False,
    logit_fill: float = LOGIT_FILL,
) -> torch.Tensor:
    """Mask the segmentation with the binary attention map (the paper's late fusion).

    The paper multiplies the segmentation net's probabilities by the binary mask (``logits=False``). A MONAI bundle
    applies ``Activationsd`` after the inferer, so the inferer fuses logits instead (``logits=True``): inside the
    mask the logits are returned unchanged (bit for bit), outside they are set to ``-logit_fill`` (the background
    channel to ``+logit_fill``), so that after a sigmoid / softmax the result equals the paper's multiplication
    (0 outside, up to ``exp(-logit_fill)``) and a following ``AsDiscrete(threshold=0.5)`` / argmax gives background.
    Multiplying logits by 0 would instead give ``sigmoid(0) = 0.5``, which ``AsDiscrete`` counts as foreground.

    Args:
        seg_probs: segmentation probabilities ``(B, C, *spatial)``, or logits when ``logits=True``.
        attention_mask: ``(B, 1, *spatial)`` or ``(1, 1, *spatial)``; binary, or a smoothed attention map when
            ``threshold`` is given.
        threshold: if given, the mask is ``attention_mask > threshold`` (tuned on validation in the paper).
        background_channel: for multi-channel softmax outputs, the background channel; outside the mask it is set
            to 1 (``+logit_fill`` for logits, and the others to 0 / ``-logit_fill``) so that the channels still sum
            to 1. None: every channel is treated alike (sigmoid outputs).
        logits: fuse logits (see above) instead of multiplying probabilities. Without ``threshold`` every non-zero
            mask value counts as inside.
        logit_fill: magnitude of the logits written outside the mask (``logits=True`` only).

    Returns:
        Fused probabilities (or logits), same shape and dtype as ``seg_probs``.

    Raises:
        ValueError: if the shapes do not match, ``background_channel`` is out of range or ``logit_fill`` is not
            positive.
    """
    if seg_probs.dim() < 3 or attention_mask.dim() != seg_probs.dim():
        raise ValueError(f"shapes {list(seg_probs.shape)} and {list(attention_mask.shape)} do not match.")
    if attention_mask.shape[1] != 1 or attention_mask.shape[2:] != seg_probs.shape[2:]:
        raise ValueError(
            f"attention_mask must be (B, 1, *spatial) with spatial {list(seg_probs.shape[2:])}, "
            f"got {list(attention_mask.shape)}."
        )
    if attention_mask.shape[0] not in (1, seg_probs.shape[0]):
        raise ValueError(f"batch sizes differ: {seg_probs.shape[0]} and {attention_mask.shape[0]}.")
    if background_channel is not None and not 0 <= background_channel < seg_probs.shape[1]:
        raise ValueError(f"background_channel {background_channel} out of range for {seg_probs.shape[1]} channels.")
    if not logit_fill > 0:
        raise ValueError(f"logit_fill must be positive, got {logit_fill}.")
    if logits:
        inside = (attention_mask > threshold) if threshold is not None else (attention_mask != 0)
        outside = torch.full((1, seg_probs.shape[1]) + (1,) * (seg_probs.dim() - 2), -logit_fill,
                             dtype=seg_probs.dtype, device=seg_probs.device)
        if background_channel is not None:
            outside[:, background_channel] = logit_fill
        return torch.where(inside.to(seg_probs.device), seg_probs, outside)
    mask = (attention_mask > threshold) if threshold is not None else attention_mask
    mask = mask.to(seg_probs.dtype)
    fused = seg_probs * mask
    if background_channel is not None:
        fused[:, background_channel : background_channel + 1] += 1.0 - mask
    return fused


class SpineSegUNet2D3D(nn.Module):
    """Five-level U-Net mixing in-plane (1, 3, 3) and 3D (3, 3, 3) convolutions, for RAS ``(LR, AP, SI)`` patches.

    The first spatial axis (LR) runs across sagittal slices; the 2D convolutions and the in-plane poolings act in
    the sagittal plane ``AP x SI`` only, so the 2D-only levels process every sagittal slice independently.

    Args:
        in_channels: input channels.
        out_channels: output channels (1: spine logit).
        features: channels of levels 1-5.
        conv3d_per_level: how many of each level's two convolutions are 3D (the first ones); the up path mirrors
            the down path. Default ``(0, 0, 0, 1, 1)`` (see module docstring).
        z_pool: whether each of the four poolings also halves the through-plane axis (the paper's z, our LR, the
            first spatial axis): pooling ``(2, 2, 2)`` instead of ``(1, 2, 2)``. Default only the last.
        padding: ``"same"`` (output size = input size, any input) or ``"valid"`` (paper's unpadded geometry).
        act: activation (MONAI name or ``(name, kwargs)``).
        norm: normalisation, or None (default, as in the paper).
        dropout: dropout probability after the convolutions of the lowest level.

    Raises:
        ValueError: on bad channel counts, wrong lengths of the per-level arguments, values outside their range,
            or an unknown ``padding``.

    Example::

        net = SpineSegUNet2D3D()
        net(torch.randn(1, 1, 12, 188, 188)).shape  # (1, 1, 12, 188, 188)
        SpineSegUNet2D3D(padding="valid")(torch.randn(1, 1, 12, 188, 188)).shape  # (1, 1, 4, 4, 4)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        conv3d_per_level: Sequence[int] = (0, 0, 0, 1, 1),
        z_pool: Sequence[bool] = (False, False, False, True),
        padding: str = "same",
        act: str | tuple = "relu",
        norm: str | tuple | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if len(features) != 5 or any(f < 1 for f in features):
            raise ValueError(f"features must have 5 positive entries, got {features!r}.")
        if len(conv3d_per_level) != 5 or any(n not in (0, 1, 2) for n in conv3d_per_level):
            raise ValueError(f"conv3d_per_level must have 5 entries in {{0, 1, 2}}, got {conv3d_per_level!r}.")
        if len(z_pool) != 4:
            raise ValueError(f"z_pool must have 4 entries, got {z_pool!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.padding = _check_padding(padding)
        self.conv3d_per_level = tuple(int(n) for n in conv3d_per_level)
        # (LR, AP, SI): in-plane pooling halves AP and SI; a z pooling also halves LR
        self.pool_sizes = [[2, 2, 2] if z else [1, 2, 2] for z in z_pool]
        multiple = [1, 1, 1]
        for p in self.pool_sizes:
            multiple = [m * s for m, s in zip(multiple, p, strict=True)]
        self.multiple = multiple  # "same" mode pads the input to a multiple of this ([2, 16, 16] by default)

        def double_conv(cin: int, cout: int, n3d: int) -> nn.Sequential:
            convs = []
            for j in range(2):
                k = (3, 3, 3) if j < n3d else (1, 3, 3)  # 2D: in the sagittal plane AP x SI, no LR mixing
                pad = tuple((v - 1) // 2 for v in k) if padding == "same" else 0
                convs.append(
                    Convolution(3, cin if j == 0 else cout, cout, kernel_size=k, padding=pad, act=act, norm=norm)
                )
            return nn.Sequential(*convs)

        self.down = nn.ModuleList(
            [
                double_conv(in_channels if i == 0 else features[i - 1], features[i], self.conv3d_per_level[i])
                for i in range(5)
            ]
        )
        self.bottom_dropout = nn.Dropout(dropout)
        # decoder levels in the order of use, deepest first: index j serves level 4 - j
        self.up = nn.ModuleList(
            [
                _UpLevel(
                    nn.ConvTranspose3d(features[i + 1], features[i], self.pool_sizes[i], stride=self.pool_sizes[i]),
                    double_conv(2 * features[i], features[i], self.conv3d_per_level[i]),
                )
                for i in range(3, -1, -1)
            ]
        )
        self.out_conv = nn.Conv3d(features[0], out_channels, kernel_size=1)

    def _conv_loss(self, level: int) -> list[int]:
        """Voxels lost per axis ``(LR, AP, SI)`` by the two valid convolutions of a level."""
        return [2 * self.conv3d_per_level[level], 4, 4]

    def output_size(self, input_size: Sequence[int]) -> tuple[int, int, int]:
        """Spatial output size for an ``(LR, AP, SI)`` input.

        Args:
            input_size: spatial input size ``(LR, AP, SI)``.

        Returns:
            The output size ``(LR, AP, SI)``: the input size in "same" mode; ``(4, 4, 4)`` for ``(12, 188, 188)``
            in "valid" mode with the defaults.

        Raises:
            ValueError: if ``input_size`` has not 3 entries, or in valid mode if a size before a pooling is not
                divisible or a size drops below 1.
        """
        if len(input_size) != 3:
            raise ValueError(f"input_size must have 3 entries (LR, AP, SI), got {input_size!r}.")
        if self.padding == "same":
            return (int(input_size[0]), int(input_size[1]), int(input_size[2]))
        size = [int(v) for v in input_size]
        for i in range(5):
            size = [s - c for s, c in zip(size, self._conv_loss(i), strict=True)]
            if min(size) < 1:
                raise ValueError(f"input {list(input_size)} too small: size {size} at level {i + 1}.")
            if i < 4:
                if any(s % p for s, p in zip(size, self.pool_sizes[i], strict=True)):
                    raise ValueError(
                        f"input {list(input_size)}: size {size} at level {i + 1} is not divisible for pooling."
                    )
                size = [s // p for s, p in zip(size, self.pool_sizes[i], strict=True)]
        for i in range(3, -1, -1):
            size = [s * p for s, p in zip(size, self.pool_sizes[i], strict=True)]
            size = [s - c for s, c in zip(size, self._conv_loss(i), strict=True)]
            if min(size) < 1:
                raise ValueError(f"input {list(input_size)} too small: size {size} on the up path, level {i + 1}.")
        return (size[0], size[1], size[2])

    def valid_input_size(self, smallest: Sequence[int] = (3, 4, 4)) -> tuple[int, int, int]:
        """Valid-mode input size ``(LR, AP, SI)`` whose lowest-level blob (after its convolutions) is ``smallest``.

        Args:
            smallest: the smallest blob ``(z, x, y)`` of the paper in our axis order ``(LR, AP, SI)``; the paper's
                minimum "x, y >= 4, z >= 3" is ``(3, 4, 4)``.

        Returns:
            The input size; ``(3, 4, 4)`` gives ``(12, 188, 188)`` with the defaults.

        Raises:
            ValueError: if ``smallest`` has not 3 positive entries.
        """
        if len(smallest) != 3 or any(int(v) < 1 for v in smallest):
            raise ValueError(f"smallest must have 3 positive entries (LR, AP, SI), got {smallest!r}.")
        size = [int(v) + c for v, c in zip(smallest, self._conv_loss(4), strict=True)]
        for i in range(3, -1, -1):
            size = [s * p for s, p in zip(size, self.pool_sizes[i], strict=True)]
            size = [s + c for s, c in zip(size, self._conv_loss(i), strict=True)]
        return (size[0], size[1], size[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a patch.

        Args:
            x: CT patch ``(B, in_channels, LR, AP, SI)`` (RAS: across sagittal slices first, then the sagittal
                plane ``AP x SI``).

        Returns:
            Logits ``(B, out_channels, LR, AP, SI)`` ("same") or of ``output_size((LR, AP, SI))`` ("valid").

        Raises:
            ValueError: if ``x`` is not 5D, or in valid mode a size before a pooling is not divisible.
        """
        if x.dim() != 5:
            raise ValueError(f"expected a 5D input (B, C, LR, AP, SI), got shape {list(x.shape)}.")
        in_size = [x.shape[2], x.shape[3], x.shape[4]]
        if self.padding == "same":
            pads: list[int] = []
            for ax in range(2, -1, -1):  # F.pad lists the last axis first
                extra = (-in_size[ax]) % self.multiple[ax]  # zero-pad to a multiple of the pooling factors
                pads += [extra // 2, extra - extra // 2]
            x = F.pad(x, pads)
        skips: list[torch.Tensor] = []
        for i, level in enumerate(self.down):
            x = level(x)
            if i < 4:
                pool = self.pool_sizes[i]
                if x.shape[2] % pool[0] != 0 or x.shape[3] % pool[1] != 0 or x.shape[4] % pool[2] != 0:
                    raise ValueError(
                        f"feature size {list(x.shape[2:])} at level {i + 1} is not divisible by the pooling {pool}: "
                        "use SpineSegUNet2D3D.valid_input_size / output_size to choose the patch size."
                    )
                skips.append(x)
                x = F.max_pool3d(x, pool)
        x = self.bottom_dropout(x)
        for j, up in enumerate(self.up):
            x = up(x, skips[3 - j])
        x = self.out_conv(x)
        if self.padding == "same":
            x = _center_crop(x, in_size)
        return x


class _UpLevel(nn.Module):
    """One decoder level: upsample, concatenate the (centre-cropped) skip, two convolutions."""

    def __init__(self, upsample: nn.Module, convs: nn.Module) -> None:
        super().__init__()
        self.upsample = upsample
        self.convs = convs

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        return self.convs(torch.cat([_center_crop(skip, x.shape[2:]), x], dim=1))  # unpadded: crop the skip


def _center_crop(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Crop the centre ``size`` of the three spatial axes of ``x`` (no-op when the sizes match)."""
    o0, o1, o2 = (x.shape[2] - size[0]) // 2, (x.shape[3] - size[1]) // 2, (x.shape[4] - size[2]) // 2
    return x[:, :, o0 : o0 + size[0], o1 : o1 + size[1], o2 : o2 + size[2]]
