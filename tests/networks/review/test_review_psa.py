"""Tests for the pure-PyTorch ``psa_mask`` and the point-wise spatial attention block (PSANet)."""

from __future__ import annotations

import io

import pytest
import torch

from spine_monai.networks.blocks.psa import PointwiseSpatialAttention, psa_mask


def _naive_psa_mask(x: torch.Tensor, psa_type: int, mask_h: int, mask_w: int) -> torch.Tensor:
    """Loop port of the reference CPU kernel (hszhao/semseg lib/psa/src/cpu/psamask.cpp)."""
    num, _, height, width = x.shape
    half_h, half_w = (mask_h - 1) // 2, (mask_w - 1) // 2
    buf = torch.zeros(num, height * width, height * width, dtype=x.dtype)
    for n in range(num):
        for h in range(height):
            for w in range(width):
                for hidx in range(max(0, half_h - h), min(mask_h, height + half_h - h)):
                    for widx in range(max(0, half_w - w), min(mask_w, width + half_w - w)):
                        neighbour = (hidx + h - half_h) * width + (widx + w - half_w)
                        centre = h * width + w
                        value = x[n, hidx * mask_w + widx, h, w]
                        if psa_type == 0:  # collect
                            buf[n, neighbour, centre] = value
                        else:  # distribute
                            buf[n, centre, neighbour] = value
    return buf.view(num, height * width, height, width)


@pytest.mark.parametrize("psa_type,mode", [(0, "collect"), (1, "distribute")])
@pytest.mark.parametrize(
    "height,width,mask_h,mask_w",
    [(3, 4, 3, 5), (3, 4, 5, 7), (4, 5, 7, 9), (2, 3, 1, 1), (3, 3, 9, 9)],  # local, full (2n-1), larger than needed
)
def test_psa_mask_matches_naive_loop(psa_type, mode, height, width, mask_h, mask_w):
    x = torch.randn(2, mask_h * mask_w, height, width)
    torch.testing.assert_close(psa_mask(x, mode, mask_h, mask_w), _naive_psa_mask(x, psa_type, mask_h, mask_w),
                               rtol=0, atol=0)


def test_psa_mask_constructed_values():
    # 1 x 3 map, 3 x 3 mask, every mask entry = its own channel index + 1
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 9, 1, 1).expand(1, 9, 1, 3).contiguous()
    out = psa_mask(x, "collect", 3, 3).view(3, 3)  # [neighbour, centre]
    # centre 0 sees itself through the mask centre (index 4 -> value 5), neighbour 1 at dx=+1 (index 5 -> 6)
    expected = torch.tensor([[5.0, 4.0, 0.0], [6.0, 5.0, 4.0], [0.0, 6.0, 5.0]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(psa_mask(x, "distribute", 3, 3).view(3, 3), expected.t())


def test_psa_mask_gradcheck():
    x = torch.randn(1, 9, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: psa_mask(t, "collect", 3, 3), (x,))
    assert torch.autograd.gradcheck(lambda t: psa_mask(t, "distribute", 3, 3), (x,))


@pytest.mark.parametrize(
    "args",
    [
        (torch.randn(1, 9, 2, 2), "both", 3, 3),  # bad mode
        (torch.randn(1, 12, 2, 2), "collect", 3, 4),  # even mask
        (torch.randn(1, 8, 2, 2), "collect", 3, 3),  # wrong channel count
    ],
)
def test_psa_mask_bad_args(args):
    with pytest.raises(ValueError):
        psa_mask(*args)


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({"in_channels": 8, "mid_channels": 4, "mask_size": 5, "shrink_factor": 2}, (2, 8, 9, 10)),
        ({"in_channels": 8, "mid_channels": 4, "mask_size": (3, 7), "shrink_factor": 1}, (1, 8, 5, 6)),
        ({"in_channels": 4, "mid_channels": 4, "mask_size": 11, "shrink_factor": 2}, (2, 4, 7, 7)),
    ],
)
def test_block_shape_and_concat(kwargs, shape):
    block = PointwiseSpatialAttention(**kwargs).eval()
    x = torch.randn(shape)
    y = block(x)
    assert y.shape == (shape[0], 2 * shape[1], *shape[2:])
    torch.testing.assert_close(y[:, : shape[1]], x)  # the input is concatenated first


def test_block_backward_and_torchscript():
    block = PointwiseSpatialAttention(8, 4, mask_size=5)
    y = block(torch.randn(2, 8, 9, 10))
    y.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    block.eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(block), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(1, 8, 9, 10)
    torch.testing.assert_close(loaded(x), block(x))


@pytest.mark.parametrize(
    "kwargs",
    [{"in_channels": 0}, {"in_channels": 4, "mask_size": 4}, {"in_channels": 4, "mask_size": (3, 3, 3)},
     {"in_channels": 4, "shrink_factor": 0}],
)
def test_block_bad_args(kwargs):
    with pytest.raises(ValueError):
        PointwiseSpatialAttention(**kwargs)
