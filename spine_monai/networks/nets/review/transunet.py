"""TransUNet: hybrid ResNet-50 + ViT-B/16 encoder (timm) with the cascaded up-sampler (CUP) decoder (2D).

Chen, Lu, Yu, Luo, Adeli, Wang, Lu, Yuille, Zhou, "TransUNet: Transformers Make Strong Encoders for Medical Image
Segmentation", arXiv:2102.04306 (2021), Section 3.2-3.3 (Fig. 1). Compared in Zhou et al., "Review of Deep
Learning Models for Spine Segmentation", ICMR 2022, https://doi.org/10.1145/3512527.3531356, Section 2.2 (3).
Reference code: Beckschen/TransUNet ``networks/vit_seg_modeling.py`` (``DecoderCup``, ``DecoderBlock``,
``SegmentationHead``) with the ``R50-ViT-B_16`` config (skip channels 512, 256, 64; decoder 256, 128, 64, 16).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["TransUNet"]


class _CupBlock(nn.Module):
    """Bilinear x2 up-sampling (``align_corners=True``), optional skip concatenation, two conv3x3-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = Convolution(2, in_channels + skip_channels, out_channels, act="relu", norm="batch", bias=False)
        self.conv2 = Convolution(2, out_channels, out_channels, act="relu", norm="batch", bias=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class TransUNet(nn.Module):
    """TransUNet (R50-ViT-B/16); returns logits at the input size.

    Encoder: timm ``vit_name`` (default ``vit_base_r50_s16_224``, ``pretrained=False``, no class token, final
    LayerNorm kept): the ResNetV2 stem gives the 1/2 skip (64 ch, before the max-pool), stages 1 and 2 the 1/4
    (256) and 1/8 (512) skips, stage 3 (1/16, 1024 ch) is projected to 768-d tokens, position embeddings are
    added and 12 transformer layers run. Decoder (CUP): tokens -> ``(B, 768, H/16, W/16)`` -> conv3x3-BN-ReLU to
    512 -> four blocks (up x2, concat skip, two conv-BN-ReLU) to 256, 128, 64, 16 -> conv3x3 to the classes.

    Choices and deviations: the input must be a multiple of 16 for the patch grid, so other sizes are zero-padded
    (bottom / right) and the logits cropped back. The position embeddings are sized for ``img_size`` (they are
    parameters: 880 x 880 gives 3025 tokens, +2.2M parameters over 224); another input size resamples them
    bicubically. Dropout 0.1 after the position embedding and in the MLP / projection (the reference applies
    0.1 to embeddings and MLP, 0.0 to attention). Input channels go to the stem directly (the reference repeats a
    grey image to 3 channels). timm's stem max-pool uses "same" padding (the reference pads the stage output).

    Args:
        in_channels: input channels.
        out_channels: number of classes.
        img_size: training input size (int or ``(H, W)``), multiple of 16, sets the position-embedding grid.
        vit_name: timm hybrid ViT name with a ResNetV2 backbone of three stages.
        decoder_channels: CUP widths (four values).
        head_channels: width of the first decoder conv.
        n_skip: number of skips used (3 in the reference; 0 to 3).
        dropout: dropout of the transformer (position embedding, MLP and projection).
        vit_kwargs: extra ``timm.create_model`` arguments for the transformer (e.g. ``depth``, ``embed_dim``,
            ``num_heads`` for a small test model; the ResNet backbone is unchanged).

    Raises:
        ValueError: on bad channel counts, ``img_size`` not a multiple of 16, or bad decoder arguments.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: int | tuple[int, int] = 224,
        vit_name: str = "vit_base_r50_s16_224",
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        head_channels: int = 512,
        n_skip: int = 3,
        dropout: float = 0.1,
        vit_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if len(size) != 2 or any(s < 16 or s % 16 for s in size):
            raise ValueError(f"img_size must be a multiple of 16 (int or pair), got {img_size}.")
        if len(decoder_channels) != 4 or any(c < 1 for c in decoder_channels) or not 0 <= n_skip <= 3:
            raise ValueError(f"need four positive decoder_channels and 0 <= n_skip <= 3, got {decoder_channels}, "
                             f"{n_skip}.")
        self.vit = timm.create_model(
            vit_name, pretrained=False, num_classes=0, global_pool="", class_token=False, in_chans=in_channels,
            img_size=size, pos_drop_rate=dropout, proj_drop_rate=dropout, **(vit_kwargs or {}),
        )
        self.grid = (size[0] // 16, size[1] // 16)
        self.n_skip = n_skip
        backbone = self.vit.patch_embed.backbone
        skip_channels = [backbone.stages[1].blocks[-1].conv3.out_channels,
                         backbone.stages[0].blocks[-1].conv3.out_channels,
                         backbone.stem.conv.out_channels, 0]
        skip_channels = [c if i < n_skip else 0 for i, c in enumerate(skip_channels)]
        self.conv_more = Convolution(2, self.vit.embed_dim, head_channels, act="relu", norm="batch", bias=False)
        ins = [head_channels] + list(decoder_channels[:-1])
        triples = zip(ins, skip_channels, decoder_channels, strict=True)
        self.blocks = nn.ModuleList(_CupBlock(i, s, o) for i, s, o in triples)
        self.head = Convolution(2, decoder_channels[-1], out_channels, kernel_size=3, conv_only=True)

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.vit.pos_embed  # (1, N, D)
        if gh == self.grid[0] and gw == self.grid[1]:
            return pos
        dim = pos.shape[2]
        # (1, N, D) -> (1, D, gh0, gw0) -> resized -> (1, gh * gw, D)
        grid = pos.transpose(1, 2).reshape(1, dim, self.grid[0], self.grid[1])
        grid = F.interpolate(grid, size=[gh, gw], mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            Logits ``(B, out_channels, H, W)``.
        """
        height, width = x.shape[2], x.shape[3]
        x = F.pad(x, [0, (16 - width % 16) % 16, 0, (16 - height % 16) % 16])
        backbone = self.vit.patch_embed.backbone
        s1 = backbone.stem.norm(backbone.stem.conv(x))  # (B, 64, H/2, W/2)
        s2 = backbone.stages[0](backbone.stem.pool(s1))  # (B, 256, H/4, W/4)
        s3 = backbone.stages[1](s2)  # (B, 512, H/8, W/8)
        y = self.vit.patch_embed.proj(backbone.norm(backbone.stages[2](s3)))  # (B, 768, H/16, W/16)
        batch, dim, gh, gw = y.shape
        tokens = y.flatten(2).transpose(1, 2)  # (B, D, N) -> (B, N, D)
        tokens = self.vit.pos_drop(tokens + self._pos_embed(gh, gw))
        tokens = self.vit.norm(self.vit.blocks(self.vit.norm_pre(tokens)))
        y = self.conv_more(tokens.transpose(1, 2).reshape(batch, dim, gh, gw))  # (B, N, D) -> (B, D, gh, gw)
        skips: list[torch.Tensor] = [s3, s2, s1]
        i = 0
        for block in self.blocks:
            if i < self.n_skip:
                y = block(y, skips[i])
            else:
                y = block(y, None)
            i += 1
        return self.head(y)[:, :, :height, :width]
