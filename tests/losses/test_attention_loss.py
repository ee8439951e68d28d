"""AttentionMSELoss: the attention net's MSE against the spine fraction per (n x 16 x 16) block (Sekuboyina 2.1)."""

from __future__ import annotations

import pytest
import torch

from spine_monai.losses import AttentionMSELoss


def test_block_fraction_over_slices_and_pixels():
    label = torch.zeros(1, 1, 8, 32, 32)
    label[:, :, :4, :16, :16] = 1  # half of the slices of block (0, 0) are spine: fraction 0.5
    label[:, :, :, 16:, 16:] = 3  # a VerSe id counts as spine: fraction 1
    loss = AttentionMSELoss()
    exact = torch.tensor([[[[0.5, 0.0], [0.0, 1.0]]]])
    assert float(loss(exact, label)) == 0.0
    assert float(loss(torch.zeros_like(exact), label)) == pytest.approx((0.25 + 1.0) / 4)


def test_2d_label_is_the_per_slice_fraction_and_gradients_flow():
    label = torch.zeros(2, 1, 16, 32)
    label[:, :, :8] = 1  # half of each 16 x 16 block
    pred = torch.full((2, 1, 1, 2), 0.25, requires_grad=True)
    out = AttentionMSELoss()(pred, label)
    assert float(out) == pytest.approx(0.0625)
    out.backward()
    assert pred.grad is not None and torch.all(pred.grad < 0)  # towards the true 0.5


def test_shape_errors():
    loss = AttentionMSELoss()
    with pytest.raises(ValueError, match="does not match"):
        loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="label must be"):
        loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 32))
    with pytest.raises(ValueError, match="factor"):
        AttentionMSELoss(factor=0)
