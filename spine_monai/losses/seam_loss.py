"""SEAM learning criteria: key-map cross-entropy, key-map centre regression and the combined objective.

Zhao, Huang, Liu, Leung, Ling, Yang, Lee, Lun, Zheng, Lam, "Structure-Enhanced Attentive Learning for Spine
Segmentation from Ultrasound Volume Projection Images", ICASSP 2021, pp. 1195-1199,
DOI 10.1109/ICASSP39728.2021.9414658. Section 2.2: eq. (6) L_cls^k, eq. (7) L_reg^k, eq. (8) L_seg, eq. (9)
``L = L_seg + lambda (L_cls^k + beta L_reg^k)`` with lambda = 0.4, beta = 0.5 (Sec. 3.2). The ablation "without
structure supervision" (Table 1, "w/o SS") is this loss with ``beta=0``.

Choices where the paper is silent:
- Resolution. The key maps may be smaller than the label (FPNSEAM returns them at the decoder's 1/4 resolution).
  They are bilinearly (trilinearly in 3D) up-sampled to the label size, as the segmentation logits are, rather than
  down-sampling the label, which would erase thin structures such as ribs.
- "Segment" = all pixels of one class in one image (the paper's three foreground attention channels, one per bone
  class). The ground-truth centre ``c`` of class n is the mean normalised position of the label's class-n pixels; the
  estimated centre ``c_hat`` is the soft centroid of the key map, ``sum_p softmax(k)_n(p) p / sum_p softmax(k)_n(p)``
  (differentiable, uses the same class posterior k' as eq. 3). Diffuse probability far from the bone pulls
  ``c_hat`` away, so the term penalises both misplaced and misshapen key maps (Fig. 2).
- Positions ``p(.)`` are normalised per axis to (0, 1) at pixel centres, ``(i + 0.5) / size``, so the value does
  not depend on the resolution at which it is computed.
- Eq. (7) as written: for a foreground pixel at ``p`` with ground-truth class n, ``dc_hat - dc = (p - c_hat_n) -
  (p - c_n) = c_n - c_hat_n``: the pixel position cancels, so the per-pixel average equals the centroid error of each
  class weighted by its pixel count. We compute it in that closed form (exactly equal, no per-pixel tensor).
- Smooth-L1 transition point ``smooth_l1_beta = 1/9`` as in SA-SSD's auxiliary centre loss (He et al., CVPR 2020,
  ``weighted_smoothl1(..., beta=1/9)``), which the paper says it follows; smooth-L1 is summed over the coordinate
  axes and averaged over foreground pixels of the whole batch (M_fg). No foreground pixel: L_reg^k = 0.
- L_seg (eq. 8) is the pixel-wise cross-entropy on the segmentation logits unless another ``seg_loss`` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SEAMLoss",
    "key_centre_regression_loss",
    "key_classification_loss",
    "normalised_coordinates",
    "resize_keys",
]


def _label_index(label: torch.Tensor) -> torch.Tensor:
    """MONAI-style integer label ``(B, 1, *S)`` -> class indices ``(B, *S)`` (long)."""
    if label.dim() < 3 or label.shape[1] != 1:
        raise ValueError(f"label must have shape (B, 1, *spatial), got {list(label.shape)}.")
    return label[:, 0].long()


def resize_keys(keys: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """Up-sample key logits ``(B, N, *s)`` to ``spatial_size`` (bilinear / trilinear; identity if equal)."""
    if list(keys.shape[2:]) == list(spatial_size):
        return keys
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(keys.dim() - 2)
    if mode is None:
        raise ValueError(f"keys must have 1 to 3 spatial dimensions, got shape {list(keys.shape)}.")
    return F.interpolate(keys, size=list(spatial_size), mode=mode, align_corners=False)


def normalised_coordinates(spatial_size: Sequence[int], device=None, dtype=None) -> torch.Tensor:
    """Normalised pixel-centre coordinates ``(i + 0.5) / size`` per axis.

    Args:
        spatial_size: spatial shape ``(H, W[, D])``.
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        Tensor ``(d, P)`` with ``d = len(spatial_size)`` and ``P = prod(spatial_size)`` in the order of ``flatten``.
    """
    axes = [(torch.arange(s, device=device, dtype=dtype) + 0.5) / s for s in spatial_size]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=0)


def key_classification_loss(keys: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Eq. (6): mean cross-entropy between the key logits and the label.

    Args:
        keys: key-map logits ``(B, N, *s)``; up-sampled to the label size if smaller.
        label: integer label ``(B, 1, *S)`` with values in ``[0, N)``.

    Returns:
        Scalar tensor.
    """
    target = _label_index(label)
    return F.cross_entropy(resize_keys(keys, target.shape[1:]), target)


def key_centre_regression_loss(
    keys: torch.Tensor, label: torch.Tensor, smooth_l1_beta: float = 1.0 / 9.0, background: int = 0
) -> torch.Tensor:
    """Eq. (7): smooth-L1 between each foreground pixel's offset to its estimated and its true class centre.

    Args:
        keys: key-map logits ``(B, N, *s)``; up-sampled to the label size if smaller.
        label: integer label ``(B, 1, *S)`` with values in ``[0, N)``.
        smooth_l1_beta: transition point of the smooth-L1 (``torch.nn.functional.smooth_l1_loss`` ``beta``).
        background: class index excluded from the regression.

    Returns:
        Scalar tensor: ``sum_fg-pixels sum_axes smoothL1(c_hat - c) / max(M_fg, 1)`` (0 without foreground).
    """
    target = _label_index(label)
    keys = resize_keys(keys, target.shape[1:])
    num_classes = keys.shape[1]
    coords = normalised_coordinates(target.shape[1:], device=keys.device, dtype=keys.dtype)  # (d, P)
    prob = torch.softmax(keys.float(), dim=1).flatten(2).to(keys.dtype)  # (B, N, *S) -> (B, N, P)
    onehot = F.one_hot(target.flatten(1), num_classes).transpose(1, 2).to(keys.dtype)  # (B, P) -> (B, N, P)

    # centroids (B, N, d): weighted mean of the (d, P) coordinates
    c_hat = torch.einsum("bnp,dp->bnd", prob, coords) / prob.sum(dim=2, keepdim=True).clamp_min(1e-12)
    counts = onehot.sum(dim=2)  # (B, N) ground-truth pixels per class
    c_true = torch.einsum("bnp,dp->bnd", onehot, coords) / counts.unsqueeze(2).clamp_min(1.0)

    # dc_hat - dc = c - c_hat for every pixel of the class: per-class error (B, N), weighted by its pixel count
    err = F.smooth_l1_loss(c_hat, c_true, reduction="none", beta=smooth_l1_beta).sum(dim=2)
    weight = counts.clone()
    weight[:, background] = 0.0
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


class SEAMLoss(nn.Module):
    """Eq. (9): ``L = L_seg + lambda * (L_cls^k + beta * L_reg^k)``.

    Accepts the network output as MONAI's ``SupervisedTrainer`` passes it: ``loss(y_pred, y)`` where ``y_pred`` is
    the ``(logits, keys)`` tuple of ``FPNSEAM(return_keys=True)``; or ``loss(logits, y, keys=keys)``.

    Args:
        lambda_: weight of the key-map terms (0.4 in the paper).
        beta: weight of the centre regression within them (0.5 in the paper; 0 gives the "w/o SS" ablation).
        seg_loss: callable ``(logits (B, N, *S), label (B, 1, *S)) -> scalar`` for L_seg; default pixel-wise
            cross-entropy (eq. 8). E.g. ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)``.
        smooth_l1_beta: smooth-L1 transition point of L_reg^k (see ``key_centre_regression_loss``).
        background: class index excluded from L_reg^k.

    Raises:
        ValueError: if ``lambda_``, ``beta`` or ``smooth_l1_beta`` is negative.
    """

    def __init__(
        self,
        lambda_: float = 0.4,
        beta: float = 0.5,
        seg_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        smooth_l1_beta: float = 1.0 / 9.0,
        background: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("lambda_", lambda_), ("beta", beta), ("smooth_l1_beta", smooth_l1_beta)):
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}.")
        self.lambda_ = lambda_
        self.beta = beta
        self.seg_loss = seg_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.background = background

    def _unpack(
        self, input: torch.Tensor | Sequence[torch.Tensor], keys: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(input, (tuple, list)):
            if len(input) != 2 or keys is not None:
                raise ValueError("pass either input=(logits, keys) or input=logits with keys=...")
            return input[0], input[1]
        if keys is None:
            raise ValueError("SEAMLoss needs the key maps: input=(logits, keys) or keys=...")
        return input, keys

    def components(
        self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor, keys: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The individual terms ``seg``, ``cls``, ``reg`` and the ``total`` (for logging).

        Args:
            input: ``(logits, keys)`` or the logits ``(B, N, *S)``.
            target: integer label ``(B, 1, *S)``.
            keys: key logits ``(B, N, *s)`` when ``input`` is the logits alone.

        Returns:
            Dict of scalar tensors.

        Raises:
            ValueError: if the key maps are missing or passed twice, or shapes disagree.
        """
        logits, k = self._unpack(input, keys)
        if logits.shape[1] != k.shape[1]:
            raise ValueError(f"logits have {logits.shape[1]} channels but keys have {k.shape[1]}.")
        if self.seg_loss is None:
            seg = F.cross_entropy(logits, _label_index(target))
        else:
            seg = self.seg_loss(logits, target)
        cls = key_classification_loss(k, target)
        if self.beta > 0:
            reg = key_centre_regression_loss(k, target, self.smooth_l1_beta, self.background)
        else:
            reg = torch.zeros((), device=logits.device, dtype=logits.dtype)
        total = seg + self.lambda_ * (cls + self.beta * reg)
        return {"seg": seg, "cls": cls, "reg": reg, "total": total}

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor, keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute eq. (9).

        Args:
            input: ``(logits, keys)`` or the logits ``(B, N, *S)``.
            target: integer label ``(B, 1, *S)`` (float dtype holding integers is accepted).
            keys: key logits ``(B, N, *s)`` when ``input`` is the logits alone.

        Returns:
            Scalar tensor.
        """
        return self.components(input, target, keys)["total"]
