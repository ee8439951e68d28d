"""Tests for ASPP, SAFNet's multiscale fusion and residual downsampling unit."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

from spine_monai.networks.blocks.aspp import ASPP
from spine_monai.networks.blocks.multiscale_fusion import MultiscaleFusion
from spine_monai.networks.blocks.residual_down import ResidualDown

# TorchScript is deprecated in recent torch but still what ckpt_export / MONAI Label load
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit")


def _script_round_trip(module: nn.Module, x: torch.Tensor) -> None:
    module.eval()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    buf.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buf)(x), module(x))


def _assert_all_grads(module: nn.Module, out: torch.Tensor) -> None:
    assert not torch.isnan(out).any()
    out.pow(2).mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


# ---------------------------------------------------------------- ASPP
ASPP_CASES = [
    ({"spatial_dims": 2, "in_channels": 8, "out_channels": 4}, (2, 8, 9, 11), (2, 4, 9, 11)),
    ({"spatial_dims": 2, "in_channels": 8, "out_channels": 6, "rates": (1, 2)}, (1, 8, 5, 7), (1, 6, 5, 7)),
    ({"spatial_dims": 3, "in_channels": 8, "out_channels": 4}, (2, 8, 5, 6, 7), (2, 4, 5, 6, 7)),
    (
        {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "rates": ((1, 2, 2), 3, (2, 1, 4))},
        (1, 4, 3, 8, 5),
        (1, 4, 3, 8, 5),
    ),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", ASPP_CASES)
def test_aspp_shapes(kwargs, in_shape, out_shape):
    aspp = ASPP(**kwargs)  # train mode with batch 1: the pooling branch has no norm, so this must work
    out = aspp(torch.randn(in_shape))
    assert out.shape == out_shape
    n_rates = len(kwargs.get("rates", (6, 12, 18)))
    assert len(aspp.branches) == n_rates + 1  # 1x1 + one per rate (+ image pooling = 5 for 3 rates)
    assert aspp.project.conv.in_channels == (n_rates + 2) * kwargs["out_channels"]


def test_aspp_anisotropic_dilation():
    aspp = ASPP(3, 4, 4, rates=((1, 6, 6), 12))
    conv_aniso, conv_iso = aspp.branches[1].conv, aspp.branches[2].conv
    assert conv_aniso.dilation == (1, 6, 6) and conv_aniso.padding == (1, 6, 6)
    assert conv_iso.dilation == (12, 12, 12) and conv_iso.padding == (12, 12, 12)


def test_aspp_image_pooling_is_global():
    # with rate 1 only, the conv branches see 3x3; a change at (0, 0) reaches (39, 39) only via image pooling
    aspp = ASPP(2, 2, 4, rates=(1,)).eval()
    x = torch.randn(1, 2, 40, 40)
    x2 = x.clone()
    x2[..., 0, 0] += 100.0
    with torch.no_grad():
        d = (aspp(x2) - aspp(x)).abs()
    assert d[..., 39, 39].sum() > 0
    aspp.pool_conv.weight.data.zero_()  # cut the pooling branch: the far corner no longer changes
    with torch.no_grad():
        d = (aspp(x2) - aspp(x)).abs()
    assert d[..., 39, 39].sum() == 0


def test_aspp_gradients_and_script():
    aspp = ASPP(3, 4, 4, rates=(1, 2), dropout=0.1)
    _assert_all_grads(aspp, aspp(torch.randn(2, 4, 3, 5, 4)))
    _script_round_trip(aspp, torch.randn(1, 4, 3, 5, 4))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 1, "in_channels": 4, "out_channels": 4},
        {"spatial_dims": 2, "in_channels": 0, "out_channels": 4},
        {"spatial_dims": 2, "in_channels": 4, "out_channels": 4, "rates": ()},
        {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "rates": ((1, 2),)},
        {"spatial_dims": 2, "in_channels": 4, "out_channels": 4, "rates": (0,)},
        {"spatial_dims": 2, "in_channels": 4, "out_channels": 4, "dropout": 1.5},
    ],
)
def test_aspp_bad_args(kwargs):
    with pytest.raises(ValueError):
        ASPP(**kwargs)


# ---------------------------------------------------------------- multiscale fusion
MSF_CASES = [
    ({"spatial_dims": 3, "in_channels": 8}, (1, 8, 3, 9, 7)),
    ({"spatial_dims": 3, "in_channels": 8, "residual": True}, (2, 8, 4, 6, 5)),
    ({"spatial_dims": 2, "in_channels": 12, "dilations": (1, 2, 3)}, (2, 12, 11, 6)),
    ({"spatial_dims": 2, "in_channels": 4}, (1, 4, 17, 16)),
]


@pytest.mark.parametrize("kwargs, shape", MSF_CASES)
def test_msf_shapes(kwargs, shape):
    msf = MultiscaleFusion(**kwargs)
    assert msf(torch.randn(shape)).shape == shape


def test_msf_dilation_reading():
    msf3 = MultiscaleFusion(3, 8)
    assert [b.conv.dilation for b in msf3.branches] == [(1, 2, 2), (1, 4, 4), (1, 8, 8), (1, 16, 16)]
    assert [b.conv.padding for b in msf3.branches] == [(1, 2, 2), (1, 4, 4), (1, 8, 8), (1, 16, 16)]
    assert all(b.conv.out_channels == 2 for b in msf3.branches)  # reduction to 1/4
    msf2 = MultiscaleFusion(2, 8)
    assert [b.conv.dilation for b in msf2.branches] == [(2, 2), (4, 4), (8, 8), (16, 16)]
    assert MultiscaleFusion(3, 8, depth_dilation=2).branches[0].conv.dilation == (2, 2, 2)
    assert MultiscaleFusion(3, 8, dilations=((1, 2, 3), 4)).branches[0].conv.dilation == (1, 2, 3)


@pytest.mark.parametrize("residual", [False, True])
def test_msf_hierarchical_addition_then_concat(residual):
    msf = MultiscaleFusion(3, 8, residual=residual).eval()
    x = torch.randn(1, 8, 3, 9, 7)
    with torch.no_grad():
        out = msf(x)
        b = [branch(x) for branch in msf.branches]
    expected = torch.cat([b[0], b[0] + b[1], b[0] + b[1] + b[2], b[0] + b[1] + b[2] + b[3]], dim=1)
    torch.testing.assert_close(out, expected + x if residual else expected)


def test_msf_gradients_and_script():
    msf = MultiscaleFusion(3, 8)
    _assert_all_grads(msf, msf(torch.randn(2, 8, 3, 5, 4)))
    _script_round_trip(msf, torch.randn(1, 8, 3, 5, 4))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 3, "in_channels": 6},  # not divisible by 4 branches
        {"spatial_dims": 1, "in_channels": 8},
        {"spatial_dims": 3, "in_channels": 8, "dilations": ()},
        {"spatial_dims": 3, "in_channels": 8, "dilations": ((1, 2), 4, 8, 16)},
        {"spatial_dims": 3, "in_channels": 8, "dilations": (0, 4, 8, 16)},
        {"spatial_dims": 3, "in_channels": 8, "depth_dilation": 0},
        {"spatial_dims": 3, "in_channels": 8, "kernel_size": 2},
    ],
)
def test_msf_bad_args(kwargs):
    with pytest.raises(ValueError):
        MultiscaleFusion(**kwargs)


# ---------------------------------------------------------------- residual down
RD_CASES = [
    ({"spatial_dims": 3, "in_channels": 4, "out_channels": 6}, (1, 4, 5, 9, 8), (1, 6, 5, 5, 4)),
    ({"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "strides": 1}, (2, 4, 3, 7, 5), (2, 4, 3, 7, 5)),
    ({"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "strides": (2, 2, 2)}, (1, 4, 5, 6, 7), (1, 4, 3, 3, 4)),
    ({"spatial_dims": 2, "in_channels": 3, "out_channels": 5, "num_convs": 2}, (2, 3, 11, 10), (2, 5, 6, 5)),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", RD_CASES)
def test_residual_down_shapes(kwargs, in_shape, out_shape):
    assert ResidualDown(**kwargs)(torch.randn(in_shape)).shape == out_shape


def test_residual_down_is_sum_of_branches():
    rd = ResidualDown(3, 4, 4).eval()
    assert rd.strides == (1, 2, 2)
    assert rd.deep[0].conv.kernel_size == (3, 3, 3) and rd.shortcut.conv.kernel_size == (1, 1, 1)
    assert rd.deep[0].conv.stride == (1, 2, 2) and rd.shortcut.conv.stride == (1, 2, 2)
    x = torch.randn(1, 4, 3, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(rd(x), rd.deep(x) + rd.shortcut(x))


def test_residual_down_gradients_and_script():
    rd = ResidualDown(3, 4, 4, num_convs=2)
    _assert_all_grads(rd, rd(torch.randn(2, 4, 3, 6, 5)))
    _script_round_trip(rd, torch.randn(1, 4, 3, 6, 5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "strides": (1, 2)},
        {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "strides": 0},
        {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "kernel_size": 2},
        {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "num_convs": 0},
        {"spatial_dims": 3, "in_channels": 0, "out_channels": 4},
        {"spatial_dims": 4, "in_channels": 4, "out_channels": 4},
    ],
)
def test_residual_down_bad_args(kwargs):
    with pytest.raises(ValueError):
        ResidualDown(**kwargs)
