"""Tests for the SEAM losses (Zhao et al. ICASSP 2021, eqs. 6-9) on constructed masks with known centres."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spine_monai.losses.seam_loss import (
    SEAMLoss,
    key_centre_regression_loss,
    key_classification_loss,
    normalised_coordinates,
)

SIZE = 32
SHARP = 60.0  # logit margin: softmax of SHARP * one-hot is one-hot to ~1e-26


def _square_label(row: int, col: int, side: int = 8, cls: int = 1, num: int = 1) -> torch.Tensor:
    label = torch.zeros(num, 1, SIZE, SIZE, dtype=torch.long)
    label[:, 0, row : row + side, col : col + side] = cls
    return label


def _keys_from_label(label: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """Key logits that are a (numerically) perfect prediction of ``label``."""
    return SHARP * F.one_hot(label[:, 0], num_classes).movedim(-1, 1).float()


def test_normalised_coordinates():
    coords = normalised_coordinates((4, 2))
    assert coords.shape == (2, 8)
    torch.testing.assert_close(coords[0], torch.tensor([0.125, 0.125, 0.375, 0.375, 0.625, 0.625, 0.875, 0.875]))
    torch.testing.assert_close(coords[1], torch.tensor([0.25, 0.75] * 4))


def test_perfect_prediction_has_zero_regression():
    label = _square_label(4, 8)
    loss = key_centre_regression_loss(_keys_from_label(label), label)
    assert loss.abs() < 1e-6


@pytest.mark.parametrize("smooth_l1_beta,expected", [(1.0 / 9.0, 0.125 - 0.5 / 9.0), (1.0, 0.5 * 0.125**2)])
def test_shifted_prediction_hand_computed(smooth_l1_beta, expected):
    """Square of class 1 at rows 4-11, predicted at rows 8-15: centres 0.25 vs 0.375 (rows), equal columns.

    Every foreground pixel has dc_hat - dc = c - c_hat = (-0.125, 0), so the loss is smoothL1(0.125):
    0.125 - beta/2 in the linear regime (beta = 1/9), 0.5 * 0.125^2 / beta in the quadratic one (beta = 1).
    """
    label = _square_label(4, 8)
    keys = _keys_from_label(_square_label(8, 8))
    loss = key_centre_regression_loss(keys, label, smooth_l1_beta=smooth_l1_beta)
    torch.testing.assert_close(loss, torch.tensor(expected), atol=1e-6, rtol=1e-5)


def test_two_classes_weighted_by_pixel_count():
    """Class 1: 8x8 square shifted by 4 rows (error 0.125); class 2: 4x4 square in place (error 0).

    Averaged over the 64 + 16 foreground pixels: 64 * smoothL1(0.125) / 80.
    """
    label = _square_label(4, 8)
    label[0, 0, 20:24, 20:24] = 2
    pred = _square_label(8, 8)
    pred[0, 0, 20:24, 20:24] = 2
    loss = key_centre_regression_loss(_keys_from_label(pred), label)
    torch.testing.assert_close(loss, torch.tensor(64 * (0.125 - 0.5 / 9.0) / 80), atol=1e-6, rtol=1e-5)


def test_closed_form_equals_per_pixel_definition():
    """Eq. 7 written literally per pixel (offsets of each foreground pixel) equals the implementation."""
    torch.manual_seed(2)
    keys = torch.randn(2, 3, 12, 10)
    label = torch.randint(0, 3, (2, 1, 12, 10))
    coords = normalised_coordinates((12, 10))  # (2, P)
    prob = torch.softmax(keys, 1).flatten(2)
    total, count = 0.0, 0
    for b in range(2):
        lab = label[b, 0].flatten()
        for n in (1, 2):
            mask = lab == n
            c_true = coords[:, mask].mean(1)
            c_hat = (prob[b, n] * coords).sum(1) / prob[b, n].sum()
            p = coords[:, mask].T  # positions of the foreground pixels (M, 2)
            d_hat, d_true = p - c_hat, p - c_true
            total = total + F.smooth_l1_loss(d_hat, d_true, reduction="none", beta=1 / 9).sum()
            count += int(mask.sum())
    torch.testing.assert_close(key_centre_regression_loss(keys, label), total / count, atol=1e-6, rtol=1e-5)


def test_regression_3d_cube():
    label = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    label[0, 0, 0:4, 0:4, 0:4] = 1
    pred = torch.zeros_like(label)
    pred[0, 0, 0:4, 0:4, 2:6] = 1  # shifted by 2/8 = 0.25 along the last axis
    loss = key_centre_regression_loss(_keys_from_label(pred, 2), label)
    torch.testing.assert_close(loss, torch.tensor(0.25 - 0.5 / 9.0), atol=1e-6, rtol=1e-5)


def test_empty_foreground_gives_zero_and_finite_gradient():
    keys = torch.randn(2, 4, SIZE, SIZE, requires_grad=True)
    label = torch.zeros(2, 1, SIZE, SIZE, dtype=torch.long)
    loss = key_centre_regression_loss(keys, label)
    assert loss.item() == 0.0
    total = SEAMLoss()((torch.randn(2, 4, SIZE, SIZE), keys), label)
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(keys.grad).all()


def test_classification_matches_torch_cross_entropy():
    torch.manual_seed(0)
    keys = torch.randn(2, 4, 6, 5)
    label = torch.randint(0, 4, (2, 1, 6, 5))
    torch.testing.assert_close(key_classification_loss(keys, label), F.cross_entropy(keys, label[:, 0]))
    # float labels from MONAI loaders are accepted
    torch.testing.assert_close(key_classification_loss(keys, label.float()), F.cross_entropy(keys, label[:, 0]))


def test_low_resolution_keys_are_upsampled():
    label = _square_label(8, 8)
    keys = torch.randn(1, 4, SIZE // 4, SIZE // 4, requires_grad=True)
    up = F.interpolate(keys, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    torch.testing.assert_close(key_classification_loss(keys, label), F.cross_entropy(up, label[:, 0]))
    torch.testing.assert_close(key_centre_regression_loss(keys, label), key_centre_regression_loss(up, label))


def test_regression_gradient_moves_centre_towards_truth():
    """One gradient step on the key logits reduces the centre error."""
    label = _square_label(4, 8)
    keys = (_keys_from_label(_square_label(8, 8)) / SHARP * 4.0).requires_grad_(True)
    loss = key_centre_regression_loss(keys, label)
    loss.backward()
    assert keys.grad is not None and keys.grad.abs().sum() > 0
    with torch.no_grad():
        assert key_centre_regression_loss(keys - 5.0 * keys.grad, label) < loss


def test_total_loss_composition_and_inputs():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    keys = torch.randn(2, 4, 4, 4, requires_grad=True)
    label = torch.randint(0, 4, (2, 1, 16, 16))
    crit = SEAMLoss(lambda_=0.4, beta=0.5)
    parts = crit.components((logits, keys), label)
    expected = F.cross_entropy(logits, label[:, 0]) + 0.4 * (
        key_classification_loss(keys, label) + 0.5 * key_centre_regression_loss(keys, label)
    )
    torch.testing.assert_close(parts["total"], expected)
    torch.testing.assert_close(crit((logits, keys), label), expected)
    torch.testing.assert_close(crit(logits, label, keys=keys), expected)
    crit((logits, keys), label).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.isfinite(keys.grad).all() and keys.grad.abs().sum() > 0


def test_beta_zero_is_without_structure_supervision():
    torch.manual_seed(0)
    logits, keys = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    label = torch.randint(0, 4, (1, 1, 8, 8))
    parts = SEAMLoss(beta=0.0).components((logits, keys), label)
    assert parts["reg"].item() == 0.0
    torch.testing.assert_close(parts["total"], parts["seg"] + 0.4 * parts["cls"])


def test_custom_segmentation_loss():
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits, keys = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    label = torch.randint(0, 4, (1, 1, 8, 8))
    seg = DiceCELoss(to_onehot_y=True, softmax=True)
    parts = SEAMLoss(seg_loss=seg).components((logits, keys), label)
    torch.testing.assert_close(parts["seg"], seg(logits, label))


def test_bad_arguments():
    with pytest.raises(ValueError, match="lambda_"):
        SEAMLoss(lambda_=-1.0)
    with pytest.raises(ValueError, match="beta"):
        SEAMLoss(beta=-0.5)
    crit = SEAMLoss()
    logits, keys = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    label = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="key maps"):
        crit(logits, label)
    with pytest.raises(ValueError, match="either"):
        crit((logits, keys), label, keys=keys)
    with pytest.raises(ValueError, match="channels"):
        crit((logits, keys[:, :3]), label)
    with pytest.raises(ValueError, match="label"):
        crit((logits, keys), label[:, 0])
