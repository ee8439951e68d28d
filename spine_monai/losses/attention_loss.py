"""Training loss of the attention (localisation) net of Sekuboyina et al., "Attention-driven Deep Learning for
Pathological Spine Segmentation", MSKI 2017, Section 2.1 ("Training and Inference").

"Every volume is down-sampled by a factor of 16 x 16 x n (n = 8, in our experiments), each voxel representing the
ratio of spine-voxels to total-voxels in its corresponding 16 x 16 region. The network is trained to minimise the
mean-squared error between predicted map and ground truth."

The net sees one sagittal slice (2D); its target is the spine fraction of a block of 16 x 16 pixels in-plane and ``n``
slices across left-right, centred on that slice. So the training sample is a RAS label patch of ``n`` slices
``(B, 1, n, AP, SI)`` with the image's middle slice ``(B, 1, AP, SI)`` as the net's input (the bundle's
``train_localization`` transforms crop ``n`` slices and keep the image's middle one); :class:`AttentionMSELoss`
average-pools the label over ``(n, 16, 16)`` blocks (:func:`spine_monai.networks.nets.sekuboyina.attention_target`)
and takes the mean squared error against the net's ``(B, 1, AP / 16, SI / 16)`` map. A 2D label ``(B, 1, AP, SI)``
(``n = 1``) gives the per-slice fraction, the "16 x 16 region" reading of the same sentence.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spine_monai.networks.nets.sekuboyina import attention_target

__all__ = ["AttentionMSELoss"]


class AttentionMSELoss(nn.Module):
    """Mean squared error between the attention net's map and the spine fraction per ``slices x factor x factor``
    block of the label.

    Args:
        factor: in-plane block size (the net's down-sampling, 16).

    Raises:
        ValueError (in ``forward``): if the label is not ``(B, 1, AP, SI)`` / ``(B, 1, n, AP, SI)``, or the pooled
            label does not match the prediction's shape.

    Example::

        loss = AttentionMSELoss()
        pred = torch.rand(2, 1, 10, 10)  # the net's map of two 160 x 160 slices
        label = (torch.rand(2, 1, 8, 160, 160) > 0.5).float()  # 8 slices around each
        loss(pred, label)
    """

    def __init__(self, factor: int = 16) -> None:
        super().__init__()
        if int(factor) < 1:
            raise ValueError(f"factor must be a positive int, got {factor!r}.")
        self.factor = int(factor)

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if label.dim() == 5:
            target = attention_target(label, (label.shape[2], self.factor, self.factor))[:, :, 0]
        elif label.dim() == 4:
            target = attention_target(label, self.factor)
        else:
            raise ValueError(f"label must be (B, 1, AP, SI) or (B, 1, n, AP, SI), got shape {list(label.shape)}.")
        if pred.shape != target.shape:
            raise ValueError(f"the attention map {list(pred.shape)} does not match the label pooled by {self.factor} "
                             f"({list(target.shape)}); in-plane sizes must be multiples of {self.factor}.")
        return F.mse_loss(pred.float(), target.to(pred.device, torch.float32))
