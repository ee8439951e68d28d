"""Tests for the EM attention unit (EMANet, Li et al. ICCV 2019)."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from spine_monai.networks.blocks.em_attention import EMAttention

SHAPE_CASES = [
    ({"spatial_dims": 2, "in_channels": 8, "num_bases": 4}, (2, 8, 9, 7)),
    ({"spatial_dims": 2, "in_channels": 16}, (1, 16, 5, 11)),
    ({"spatial_dims": 3, "in_channels": 8, "num_bases": 6, "num_iters": 1}, (2, 8, 5, 6, 7)),
    ({"spatial_dims": 3, "in_channels": 4, "num_bases": 3, "norm": "instance"}, (2, 4, 3, 4, 5)),
    ({"spatial_dims": 1, "in_channels": 4, "num_bases": 3, "norm": None}, (2, 4, 13)),
]


@pytest.mark.parametrize("kwargs,shape", SHAPE_CASES)
def test_shapes(kwargs, shape):
    net = EMAttention(**kwargs)
    y = net(torch.randn(shape))
    assert y.shape == shape
    assert (y >= 0).all()  # final ReLU


def _reference_emau(net: EMAttention, v: torch.Tensor) -> torch.Tensor:
    """The official EMAU forward (XiaLiPKU/EMANet network.py) written for (B, C, H, W)."""
    b, c, h, w = v.shape
    x = net.conv_in(v).view(b, c, h * w)
    mu = net.bases.repeat(b, 1, 1)
    for _ in range(net.num_iters):
        z = F.softmax(torch.bmm(x.permute(0, 2, 1), mu), dim=2)
        z_ = z / (1e-6 + z.sum(dim=1, keepdim=True))
        mu = torch.bmm(x, z_)
        mu = mu / (1e-6 + mu.norm(dim=1, keepdim=True))
    x = F.relu(mu.matmul(z.permute(0, 2, 1)).view(b, c, h, w))
    x = net.norm(net.conv_out(x))
    return F.relu(x + v)


def test_matches_official_algorithm():
    net = EMAttention(2, 8, num_bases=5, num_iters=3).eval()
    v = torch.randn(2, 8, 6, 7)
    torch.testing.assert_close(net(v), _reference_emau(net, v))


def test_bases_buffer_initialisation():
    net = EMAttention(2, 8, num_bases=5)
    assert "bases" in dict(net.named_buffers())
    assert "bases" not in dict(net.named_parameters())
    assert net.bases.shape == (1, 8, 5)
    torch.testing.assert_close(net.bases.norm(dim=1), torch.ones(1, 5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 8, 7, 5)), (3, (2, 8, 3, 5, 4))])
def test_backward_every_trainable_parameter(spatial_dims, shape):
    """EM steps have no gradient: conv_in (before them) is frozen, every other parameter gets a gradient."""
    net = EMAttention(spatial_dims, 8, num_bases=4)
    x = torch.randn(shape, requires_grad=True)
    y = net(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in net.named_parameters():
        if name.startswith("conv_in."):
            assert not p.requires_grad and p.grad is None, name
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_em_steps_carry_no_gradient():
    """Even if conv_in is made trainable, nothing reaches it: the EM iterations and the reconstruction are detached."""
    net = EMAttention(2, 8, num_bases=4)
    for p in net.conv_in.parameters():
        p.requires_grad_(True)
    net(torch.randn(2, 8, 5, 5)).sum().backward()
    assert all(p.grad is None for p in net.conv_in.parameters())


def test_moving_average_in_training_only():
    torch.manual_seed(3)
    net = EMAttention(2, 8, num_bases=4, momentum=0.9)
    v = torch.randn(3, 8, 6, 6)
    before = net.bases.clone()
    net.eval()
    net(v)
    torch.testing.assert_close(net.bases, before)  # eval: unchanged

    # expected update: 0.9 * old + 0.1 * l2norm(mean over batch of the final bases)
    b, c = v.shape[:2]
    with torch.no_grad():
        x = net.conv_in(v).flatten(2)
        mu = before.repeat(b, 1, 1)
        for _ in range(net.num_iters):
            z = F.softmax(torch.bmm(x.transpose(1, 2), mu), dim=2)
            mu = torch.bmm(x, z / (1e-6 + z.sum(dim=1, keepdim=True)))
            mu = mu / (1e-6 + mu.norm(dim=1, keepdim=True))
        new = mu.mean(0, keepdim=True)
        new = new / (1e-6 + new.norm(dim=1, keepdim=True))
    net.train()
    net(v)
    torch.testing.assert_close(net.bases, 0.9 * before + 0.1 * new)


def test_momentum_one_freezes_bases():
    net = EMAttention(2, 4, num_bases=3, momentum=1.0).train()
    before = net.bases.clone()
    net(torch.randn(2, 4, 5, 5))
    torch.testing.assert_close(net.bases, before)


def test_torchscript_round_trip():
    net = EMAttention(2, 8, num_bases=4).eval()
    x = torch.randn(1, 8, 7, 9)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    torch.testing.assert_close(net(x), loaded(x))
    # the scripted module also trains (bases update without torch.distributed)
    loaded.train()
    before = loaded.bases.clone()
    loaded(torch.randn(2, 8, 7, 9))
    assert not torch.equal(loaded.bases, before)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 0, "in_channels": 8},
        {"spatial_dims": 2, "in_channels": 0},
        {"spatial_dims": 2, "in_channels": 8, "num_bases": 0},
        {"spatial_dims": 2, "in_channels": 8, "num_iters": 0},
        {"spatial_dims": 2, "in_channels": 8, "momentum": 1.5},
        {"spatial_dims": 2, "in_channels": 8, "momentum": -0.1},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        EMAttention(**kwargs)


def test_bad_input_channels():
    with pytest.raises(ValueError, match="8 input channels"):
        EMAttention(2, 8)(torch.randn(1, 4, 5, 5))
