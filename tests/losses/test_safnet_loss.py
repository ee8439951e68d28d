"""SAFNet's eq. 9 (per-class binary cross-entropy over voxels and classes) and the categorical option, on
constructed cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from spine_monai.losses import SAFNetLoss


def _eq9_by_hand(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The printed formula, term by term: - sum [Y log P + (1 - Y) log(1 - P)] / (voxels x C), batch mean."""
    b, c = logits.shape[:2]
    total, count = 0.0, 0
    for n in range(b):
        for idx in range(logits[n, 0].numel()):
            label = int(target[n].flatten()[idx])
            for k in range(c):
                p = 1.0 / (1.0 + math.exp(-float(logits[n, k].flatten()[idx])))
                y = 1.0 if k == label else 0.0
                total -= y * math.log(p) + (1.0 - y) * math.log(1.0 - p)
                count += 1
    return total / count


def test_bce_is_eq9():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 2, 2)
    target = torch.randint(0, 4, (2, 1, 3, 2, 2)).float()
    got = SAFNetLoss(num_classes=4)(logits, target)
    assert got.item() == pytest.approx(_eq9_by_hand(logits, target[:, 0]), rel=1e-5)


def test_constructed_values():
    # logits 0 everywhere: P = 1/2 for every class, so every term is log 2 whatever the label
    logits = torch.zeros(1, 3, 2, 2)
    target = torch.tensor([[[0, 1], [2, 1]]])
    assert SAFNetLoss(3)(logits, target).item() == pytest.approx(math.log(2))
    # categorical cross-entropy of uniform logits: log C
    assert SAFNetLoss(3, mode="ce")(logits, target).item() == pytest.approx(math.log(3))
    # a confident correct prediction costs almost nothing in both modes
    good = torch.full((1, 3, 2, 2), -20.0)
    good.scatter_(1, target[:, None], 20.0)
    assert SAFNetLoss(3)(good, target).item() < 1e-6
    assert SAFNetLoss(3, mode="ce")(good, target).item() < 1e-6


def test_gradient_flows():
    logits = torch.randn(1, 5, 4, 4, requires_grad=True)
    SAFNetLoss(5)(logits, torch.randint(0, 5, (1, 1, 4, 4))).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, logits, target, match", [
    ({"num_classes": 3, "mode": "dice"}, None, None, "mode must be"),
    ({"num_classes": 1}, None, None, "at least 2"),
    ({"num_classes": 3}, (1, 4, 2, 2), (1, 1, 2, 2), "4 channels"),
    ({"num_classes": 3}, (1, 3, 2, 2), (1, 2, 2, 2), "one channel"),
    ({"num_classes": 3}, (1, 3, 2, 2), (1, 1, 2, 3), "does not match"),
])
def test_bad_input(kwargs, logits, target, match):
    with pytest.raises(ValueError, match=match):
        loss = SAFNetLoss(**kwargs)
        loss(torch.zeros(logits), torch.zeros(target))


def test_label_outside_classes():
    with pytest.raises(ValueError, match=r"in 0\.\.2, got 0\.\.7"):
        SAFNetLoss(3)(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 7], [1, 2]]]))
