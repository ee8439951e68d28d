"""Structure-enhanced attention module (SEAM): self-attention whose keys are supervised class maps.

Zhao, Huang, Liu, Leung, Ling, Yang, Lee, Lun, Zheng, Lam, "Structure-Enhanced Attentive Learning for Spine
Segmentation from Ultrasound Volume Projection Images", ICASSP 2021, pp. 1195-1199,
DOI 10.1109/ICASSP39728.2021.9414658. Section 2.1, equations (2)-(5) and the residual fusion ``z = rho([z', v])``;
Section 3.2 for the kernel sizes (all 1x1, except ``rho`` which is 3x3 with padding 1).

With ``v`` of shape ``(C, P)`` (``P`` = number of spatial positions):

    q  = phi(v)                    (C', P)   eq. (2), C' < C
    k  = varphi(v)                 (N, P)    eq. (2), N = number of classes, supervised by the losses (Sec. 2.2)
    k' = softmax over the N classes of k      eq. (3), a per-position class distribution
    a' = softmax over N of (q k'^T)  (C', N)  eq. (4)
    z' = theta(a' k')               (C, P)    eq. (5)
    z  = rho([z', v])               (C, P)    residual fusion, channel concatenation

Choices where the paper is silent:
- Softmax axes. ``k'`` is normalised over the classes (eq. 3 acts on the map that L_cls^k trains with a per-pixel
  cross-entropy, so its softmax is the per-pixel class posterior). ``a'`` is normalised over its last axis N: in
  eq. (5) ``a' k'`` sums over N, and eq. (4) says the softmax plays the role of the normaliser S(.) of eq. (1),
  which normalises over the summed index. Each output channel of ``a' k'`` is thus a convex combination of the N
  class probability maps (the "Synthesizer"-like reading of Sec. 2.1).
- Scale of ``q k'^T``. The product sums over all P positions, so its magnitude grows with the image size (training
  patches 512 x 256 and test images 1024 x 256 in the paper would give logits differing by a factor 2, and sums over
  ~10^4 positions saturate the softmax). With ``normalize_positions=True`` (default) it is divided by P, i.e. the
  mean over positions, which makes the attention independent of the input size. ``False`` gives the literal sum.
- ``phi``, ``theta`` and ``rho`` are Conv-Norm-Act units (as OCR's ``f_pixel`` / ``f_up`` / fusion conv); the key
  mapping ``varphi`` is a plain 1x1 convolution with bias, because ``k`` are the logits the losses supervise.
- ``key_channels`` (C') defaults to ``in_channels // 2`` (OCR's ratio); the paper only requires C' < C.

Difference to OCR (openseg.pytorch ``lib/models/modules/spatial_ocr_block.py``, Yuan et al., ECCV 2020): OCR
normalises the class maps over *space* (``softmax(probs, dim=2)`` in ``SpatialGather_Module``) to pool one feature
vector per class, then attends from every *pixel* to those class vectors (P x N affinity, scaled by C'^-1/2) and
reconstructs from pooled features. SEAM normalises over *classes*, builds a C' x N affinity between query channels
and class maps, and re-synthesises features from the class maps themselves (eq. 5), so the output is spanned by the
structure-supervised maps.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

__all__ = ["StructureEnhancedAttention"]


class StructureEnhancedAttention(nn.Module):
    """Structure-enhanced attention module (SEAM), dimension-agnostic.

    Args:
        spatial_dims: number of spatial dimensions (2 for the paper's VPI images; 3 also works).
        in_channels: channels ``C`` of the input feature map ``v`` (and of the output).
        num_classes: number ``N`` of key maps, one per class including background (4 in the paper).
        key_channels: query channels ``C'``; default ``in_channels // 2`` (at least 1).
        norm: normalisation of the ``phi``, ``theta`` and ``rho`` units (MONAI name or ``(name, kwargs)``), or None.
        act: activation of the ``phi``, ``theta`` and ``rho`` units (MONAI name or ``(name, kwargs)``), or None.
        normalize_positions: divide ``q k'^T`` by the number of positions (see the module docstring).

    Raises:
        ValueError: if ``spatial_dims`` is not 1, 2 or 3, or ``in_channels``, ``key_channels`` are not positive,
            or ``num_classes`` < 2.

    Example::

        seam = StructureEnhancedAttention(2, in_channels=128, num_classes=4)
        z, k = seam(torch.randn(2, 128, 64, 32))  # z: (2, 128, 64, 32), k: (2, 4, 64, 32)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        key_channels: int | None = None,
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
        normalize_positions: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (softmax over classes), got {num_classes}.")
        if key_channels is None:
            key_channels = max(in_channels // 2, 1)
        if key_channels < 1:
            raise ValueError(f"key_channels must be positive, got {key_channels}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.key_channels = key_channels
        self.normalize_positions = normalize_positions
        bias = norm is None  # a bias before a normalisation layer is redundant

        # phi: query, C -> C' (1x1)
        self.query = Convolution(spatial_dims, in_channels, key_channels, kernel_size=1, norm=norm, act=act, bias=bias)
        # varphi: key logits, C -> N (1x1, no norm/act: these are the supervised logits)
        self.key = Conv[Conv.CONV, spatial_dims](in_channels, num_classes, kernel_size=1, bias=True)
        # theta: C' -> C (1x1)
        self.theta = Convolution(spatial_dims, key_channels, in_channels, kernel_size=1, norm=norm, act=act, bias=bias)
        # rho: [z', v] (2C) -> C (3x3, padding 1)
        self.rho = Convolution(spatial_dims, 2 * in_channels, in_channels, kernel_size=3, norm=norm, act=act, bias=bias)

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-estimate ``v`` from the structure-enhanced key maps.

        Args:
            v: feature map ``(B, C, *spatial)``, e.g. ``(B, C, H, W)`` or ``(B, C, H, W, D)``.

        Returns:
            ``(z, k)``: the output features ``(B, C, *spatial)`` and the key-map logits ``(B, N, *spatial)`` (before
            the softmax of eq. 3), which ``spine_monai.losses.seam_loss`` supervises.

        Raises:
            ValueError: if the channel count of ``v`` is not ``in_channels``.
        """
        if v.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {v.shape[1]}.")
        batch = v.shape[0]
        spatial = v.shape[2:]
        q = self.query(v).flatten(2)  # eq. 2: (B, C', *S) -> (B, C', P)
        k = self.key(v)  # eq. 2: (B, N, *S)
        k_prob = torch.softmax(k, dim=1).flatten(2)  # eq. 3, over classes: (B, N, *S) -> (B, N, P)
        energy = torch.bmm(q, k_prob.transpose(1, 2))  # q k'^T: (B, C', P) x (B, P, N) -> (B, C', N)
        if self.normalize_positions:
            energy = energy / k_prob.shape[2]  # a symbolic size under torch.export (float() would freeze it)
        attn = torch.softmax(energy, dim=2)  # eq. 4, over the N classes: (B, C', N)
        z = torch.bmm(attn, k_prob)  # a' k': (B, C', N) x (B, N, P) -> (B, C', P)
        z = z.reshape([batch, self.key_channels] + list(spatial))  # (B, C', P) -> (B, C', *S)
        z = self.theta(z)  # eq. 5: (B, C, *S)
        out = self.rho(torch.cat([z, v], dim=1))  # [z', v]: (B, 2C, *S) -> (B, C, *S)
        return out, k
