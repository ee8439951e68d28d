"""Tests for the 3D DeepLabv3 baseline and the MONAI 3D U-Net / ResUNet baselines of the SAFNet paper."""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks.nets import BasicUNet, UNet

from spine_monai.networks.nets.deeplabv3_3d import DeepLabV3_3D, count_parameters

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit")

TINY = {"widths": (4, 8, 8, 8), "blocks": (1, 1, 1, 1), "aspp_channels": 8}

CASES = [
    ({"spatial_dims": 3, "in_channels": 1, "out_channels": 5, **TINY}, (1, 1, 5, 32, 16)),
    ({"spatial_dims": 3, "in_channels": 2, "out_channels": 3, **TINY}, (2, 2, 3, 33, 17)),
    ({"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "in_plane_only": False, **TINY}, (1, 1, 9, 17, 16)),
    ({"spatial_dims": 2, "in_channels": 1, "out_channels": 4, **TINY}, (2, 1, 31, 40)),
]


@pytest.mark.parametrize("kwargs, shape", CASES)
def test_shapes(kwargs, shape):
    net = DeepLabV3_3D(**kwargs).eval()
    with torch.no_grad():
        assert net(torch.randn(shape)).shape == (shape[0], kwargs["out_channels"], *shape[2:])


@pytest.mark.parametrize("in_plane_only, expected", [(True, (8, 4, 2)), (False, (1, 4, 2))])
def test_output_stride_8(in_plane_only, expected):
    net = DeepLabV3_3D(in_plane_only=in_plane_only, **TINY).eval()
    with torch.no_grad():
        feat = net.encoder(net.stem(torch.randn(1, 1, 8, 32, 16)))
    assert feat.shape[2:] == expected
    last_conv = net.encoder[3][0].conv1.conv
    assert last_conv.dilation == ((1, 4, 4) if in_plane_only else (4, 4, 4))
    assert last_conv.stride == (1, 1, 1)


def test_gradients_and_script():
    net = DeepLabV3_3D(out_channels=3, **TINY)
    out = net(torch.randn(2, 1, 3, 32, 16))
    assert not torch.isnan(out).any()
    out.pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
    net.eval()
    x = torch.randn(1, 1, 3, 32, 16)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)
    buf.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buf)(x), net(x))


def test_parameter_count_default():
    # no count in the SAFNet paper; regression value of the default configuration (20 classes)
    assert count_parameters(DeepLabV3_3D()) == 11_564_916


def test_monai_resunet_baseline_parameter_count():
    # ARCHITECTURES.md: MONAI UNet 3D 32-512 with res units 2 (the paper's "3D ResUNet" baseline) has 19.3M
    net = UNet(
        spatial_dims=3, in_channels=1, out_channels=20, channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2),
        num_res_units=2,
    )  # fmt: skip
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 19.3


def test_monai_unet_baseline_runs_on_small_volume():
    # the paper's "3D UNet" baseline comes straight from MONAI
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=20, features=(4, 4, 8, 8, 16, 4)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 32, 16)).shape == (1, 20, 16, 32, 16)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 1},
        {"in_channels": 0},
        {"aspp_channels": 0},
        {"widths": (4, 8, 8)},
        {"blocks": (1, 1, 0, 1)},
    ],
)
def test_bad_args(kwargs):
    with pytest.raises(ValueError):
        DeepLabV3_3D(**kwargs)
