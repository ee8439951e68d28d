"""Tests for the DANet position attention, channel attention and head."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn as nn

from spine_monai.networks.blocks.channel_attention import ChannelAttention
from spine_monai.networks.blocks.danet_head import DANetHead
from spine_monai.networks.blocks.position_attention import PositionAttention

# TorchScript is deprecated in recent torch but still what ckpt_export / MONAI Label load
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit")


def _script_round_trip(module: nn.Module, x: torch.Tensor) -> None:
    module.eval()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x))


def _assert_all_grads(module: nn.Module, out: torch.Tensor) -> None:
    out.float().pow(2).mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def _pam_reference(pam: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """Independent einsum form of DANet's PAM."""
    q = pam.query_conv(x).flatten(2)
    k = pam.key_conv(x).flatten(2)
    v = pam.value_conv(x).flatten(2)
    attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k), dim=-1)
    return pam.gamma * torch.einsum("bcj,bij->bci", v, attn).reshape(x.shape) + x


PAM_CASES = [
    (2, 16, (2, 16, 7, 9)),
    (2, 8, (1, 8, 1, 13)),
    (3, 16, (1, 16, 5, 4, 3)),
    (3, 32, (2, 32, 3, 6, 5)),
]


@pytest.mark.parametrize("spatial_dims, channels, shape", PAM_CASES)
def test_pam_shape_and_reference(spatial_dims, channels, shape):
    pam = PositionAttention(spatial_dims, channels)
    x = torch.randn(shape)
    torch.testing.assert_close(pam(x), x)  # gamma = 0 at init: identity
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    out = pam(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _pam_reference(pam, x))


def test_pam_uniform_attention_gives_mean():
    # zero query/key -> energy 0 -> uniform attention; identity value conv: out = gamma * mean_N(x) + x
    pam = PositionAttention(2, 8)
    with torch.no_grad():
        for conv in (pam.query_conv, pam.key_conv):
            conv.weight.zero_()
            conv.bias.zero_()
        pam.value_conv.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))
        pam.value_conv.bias.zero_()
        pam.gamma.fill_(1.0)
    x = torch.randn(2, 8, 3, 5)
    expected = x + x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(pam(x), expected)


def test_pam_gradients():
    pam = PositionAttention(3, 16)
    # gamma is 0 at init, so the convs would get zero gradient through gamma * out: set it nonzero first.
    with torch.no_grad():
        pam.gamma.fill_(0.5)
    out = pam(torch.randn(2, 16, 3, 4, 5))
    assert not torch.isnan(out).any()
    _assert_all_grads(pam, out)


def test_pam_memory_guard_before_allocation():
    pam = PositionAttention(2, 8, max_positions=100)

    class _Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("projection ran before the guard")

    pam.query_conv = _Boom()
    with pytest.raises(ValueError, match=r"N = 110 .*max_positions = 100.*MiB"):
        pam(torch.randn(1, 8, 11, 10))


def test_pam_memory_guard_full_resolution_safnet_input():
    # the full 18 x 256 x 128 SAFNet input: N = 589824 -> about 2.6 TiB for energy + softmax
    pam = PositionAttention(3, 8)
    n = 18 * 256 * 128
    mib = 2 * n * n * 4 // 2**20
    with pytest.raises(ValueError, match=rf"N = {n} .*about {mib} MiB"):
        pam(torch.zeros(1, 8, 18, 256, 128))


def test_pam_script():
    _script_round_trip(PositionAttention(3, 16), torch.randn(1, 16, 3, 4, 5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 4, "in_channels": 16},
        {"spatial_dims": 2, "in_channels": 0},
        {"spatial_dims": 2, "in_channels": 4},  # 4 // 8 == 0 key channels
        {"spatial_dims": 2, "in_channels": 16, "reduction": 0},
        {"spatial_dims": 2, "in_channels": 16, "max_positions": 0},
    ],
)
def test_pam_bad_args(kwargs):
    with pytest.raises(ValueError):
        PositionAttention(**kwargs)


def test_pam_bad_input():
    pam = PositionAttention(2, 16)
    with pytest.raises(ValueError, match="channels"):
        pam(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="4D"):
        pam(torch.randn(1, 16, 4, 4, 4))


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 6, 7, 9)), (3, (1, 5, 3, 4, 5)), (1, (2, 3, 11))])
def test_cam_shape_and_reference(spatial_dims, shape):
    cam = ChannelAttention(spatial_dims, shape[1])
    x = torch.randn(shape)
    torch.testing.assert_close(cam(x), x)  # gamma = 0 at init
    with torch.no_grad():
        cam.gamma.fill_(0.3)
    flat = x.flatten(2)
    energy = torch.einsum("bin,bjn->bij", flat, flat)
    attn = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
    expected = 0.3 * torch.einsum("bij,bjn->bin", attn, flat).reshape(x.shape) + x
    out = cam(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)


def test_cam_constructed_case():
    # orthogonal unit channels: energy = I, max - energy = [[0, 1], [1, 0]] -> each channel takes weight
    # e / (1 + e) from the other channel (the official code favours dissimilar channels)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    cam = ChannelAttention(2, 2)
    with torch.no_grad():
        cam.gamma.fill_(1.0)
    a, b = 1 / (1 + math.e), math.e / (1 + math.e)
    expected = torch.tensor([[1 + a, b], [b, 1 + a]]).reshape(1, 2, 1, 2)
    torch.testing.assert_close(cam(x), expected)


def test_cam_gradients_and_script():
    cam = ChannelAttention(3, 4)
    with torch.no_grad():
        cam.gamma.fill_(0.5)  # gamma 0 would still pass x through, but set it so gamma's own grad path is exercised
    x = torch.randn(2, 4, 3, 4, 5, requires_grad=True)
    out = cam(x)
    assert not torch.isnan(out).any()
    _assert_all_grads(cam, out)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    _script_round_trip(cam, torch.randn(1, 4, 3, 4, 5))


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 0, "in_channels": 4}, {"spatial_dims": 2, "in_channels": 0}])
def test_cam_bad_args(kwargs):
    with pytest.raises(ValueError):
        ChannelAttention(**kwargs)


HEAD_CASES = [
    ({"spatial_dims": 2, "in_channels": 64, "out_channels": 5}, (2, 64, 9, 7), (2, 5, 9, 7)),
    ({"spatial_dims": 3, "in_channels": 32, "out_channels": 3}, (1, 32, 3, 5, 4), (1, 3, 3, 5, 4)),
    (
        {"spatial_dims": 2, "in_channels": 32, "out_channels": 2, "norm": "instance", "act": "prelu"},
        (1, 32, 5, 5),
        (1, 2, 5, 5),
    ),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", HEAD_CASES)
def test_danet_head_shapes(kwargs, in_shape, out_shape):
    head = DANetHead(**kwargs).eval()
    assert head.inter_channels == kwargs["in_channels"] // 4
    with torch.no_grad():
        assert head(torch.randn(in_shape)).shape == out_shape


def test_danet_head_is_sum_of_branches():
    head = DANetHead(2, 32, 4).eval()
    x = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        pam_feat, cam_feat = head.forward_branches(x)
        torch.testing.assert_close(head(x), head.classifier(pam_feat + cam_feat))


def test_danet_head_parameter_count_resnet101_config():
    # DANet on ResNet-101: in 2048, inter 512, 20 classes. Analytic count of the official head (without aux convs).
    head = DANetHead(2, 2048, 20)
    cna_in = 2048 * 512 * 9 + 2 * 512
    cna_mid = 512 * 512 * 9 + 2 * 512
    pam = 2 * (512 * 64 + 64) + 512 * 512 + 512 + 1
    expected = 2 * cna_in + 2 * cna_mid + pam + 1 + 512 * 20 + 20
    assert sum(p.numel() for p in head.parameters()) == expected
    # with ResNet-101's 42.5M trunk this is the "about 66.5M" of ARCHITECTURES.md
    assert abs((expected + 42.5e6) / 1e6 - 66.5) < 0.3


def test_danet_head_gradients_and_script():
    head = DANetHead(3, 32, 3)
    # both gammas are 0 at init; set them so the attention convs receive gradient
    with torch.no_grad():
        head.pam.gamma.fill_(0.5)
        head.cam.gamma.fill_(0.5)
    out = head(torch.randn(2, 32, 3, 4, 5))
    assert not torch.isnan(out).any()
    _assert_all_grads(head, out)
    _script_round_trip(head, torch.randn(1, 32, 3, 4, 5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 1, "in_channels": 32, "out_channels": 2},
        {"spatial_dims": 2, "in_channels": 3, "out_channels": 2},
        {"spatial_dims": 2, "in_channels": 32, "out_channels": 0},
        {"spatial_dims": 2, "in_channels": 32, "out_channels": 2, "dropout": 1.0},
    ],
)
def test_danet_head_bad_args(kwargs):
    with pytest.raises(ValueError):
        DANetHead(**kwargs)
