"""SAFNet's pixel-wise loss, eq. 9 of Yilizati-Yilihamu et al., "A spine segmentation method based on scene aware
fusion network", BMC Neuroscience 2023, DOI 10.1186/s12868-023-00818-z (section "Loss function").

Eq. 9 as printed::

    L = - sum_{i,j,k,c} [ Y(i,j,k,c) log P(i,j,k,c) + (1 - Y(i,j,k,c)) log(1 - P(i,j,k,c)) ] / (H W D C)

with ``Y`` the one-hot label (0 or 1 per class) and ``P`` "the predicted probability of the class". The text calls
it "pixel-wise cross-entropy", but the formula is the binary cross-entropy of every class channel, averaged over the
voxels and the ``C`` classes: it has the ``(1 - Y) log(1 - P)`` term that the categorical cross-entropy lacks, and
the division by ``C``. The paper does not say how ``P`` is obtained; for the binary form to be a proper likelihood
per class, ``P`` is taken as the per-class sigmoid of the logits, so ``mode="bce"`` (the default, eq. 9) is
``BCEWithLogits(logits, one_hot(Y))`` with mean reduction, which divides by ``B x H x W x D x C`` (the batch mean
of eq. 9). Prediction is the arg-max over the logits either way (the sigmoid is monotonic).

``mode="ce"`` is the categorical cross-entropy (softmax over classes, PyTorch's ``CrossEntropyLoss``), which the
paper names for its baselines ("loss function is CrossEntroLoss") and which "pixel-wise cross-entropy" also
describes: the option for those who read the text over the formula.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SAFNetLoss", "SAFNET_LOSS_MODES"]

SAFNET_LOSS_MODES = ("bce", "ce")


class SAFNetLoss(nn.Module):
    """Eq. 9 of SAFNet (``mode="bce"``) or the categorical cross-entropy (``mode="ce"``); module docstring.

    Args:
        num_classes: ``C``, including the background (20 for MRSpineSeg).
        mode: ``"bce"`` (eq. 9: per-class binary cross-entropy of the sigmoid, mean over voxels and classes) or
            ``"ce"`` (softmax cross-entropy, mean over voxels).

    Inputs: ``logits`` ``(B, C, *spatial)`` and ``target`` ``(B, 1, *spatial)`` or ``(B, *spatial)`` holding class
    indices ``0..C-1`` (a float tensor of whole numbers is accepted, as MONAI's loaders give labels).

    Raises:
        ValueError: for an unknown mode, ``num_classes < 2``, a logits channel count other than ``num_classes``,
            a target whose shape does not match, or target values outside ``0..C-1``.
    """

    def __init__(self, num_classes: int, mode: str = "bce") -> None:
        super().__init__()
        if mode not in SAFNET_LOSS_MODES:
            raise ValueError(f"mode must be one of {SAFNET_LOSS_MODES}, got {mode!r}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one class), got {num_classes}.")
        self.num_classes = int(num_classes)
        self.mode = mode

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, the loss was built for {self.num_classes}.")
        if target.dim() == logits.dim():
            if target.shape[1] != 1:
                raise ValueError(f"target must have one channel of class indices, got shape {list(target.shape)}.")
            target = target[:, 0]
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(f"target shape {list(target.shape)} does not match logits {list(logits.shape)}.")
        index = target.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_classes):
            raise ValueError(f"target values must be in 0..{self.num_classes - 1}, got {int(index.min())}.."
                             f"{int(index.max())}.")
        if self.mode == "ce":
            return F.cross_entropy(logits, index)
        one_hot = F.one_hot(index, self.num_classes).movedim(-1, 1).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, one_hot)
