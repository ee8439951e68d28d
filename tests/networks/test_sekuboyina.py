"""Tests for the attention-driven CT pipeline: attention net, 2D-3D segmentation U-Net, targets and late fusion."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

from spine_monai.networks.nets.sekuboyina import (
    AttentionLocalisationNet2D,
    SpineSegUNet2D3D,
    attention_target,
    late_fusion,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit")

TINY_ATT = {"features": (2, 2, 4, 4, 4, 4, 4, 4, 4)}
TINY_SEG = {"features": (2, 4, 4, 4, 4)}


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
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


# ---------------------------------------------------------------- attention net
@pytest.mark.parametrize("shape, expected", [((2, 1, 64, 48), (2, 1, 4, 3)), ((1, 2, 160, 160), (1, 1, 10, 10))])
def test_attention_net_same_shapes(shape, expected):
    net = AttentionLocalisationNet2D(in_channels=shape[1], **TINY_ATT).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == expected
    assert net.border == 0
    assert ((out >= 0) & (out <= 1)).all()  # sigmoid: spine fractions


def test_attention_net_valid_reproduces_paper_geometry():
    # paper: "A 2D patch of 160 x 160 (padded to size 720 x 720) predicts a map of size 10 x 10"
    net = AttentionLocalisationNet2D(padding="valid", **TINY_ATT).eval()
    assert net.border == 280 and net.output_size(720) == 10
    with torch.no_grad():
        out = net(torch.randn(1, 1, 720, 720))
    assert out.shape == (1, 1, 10, 10)
    mask = torch.zeros(1, 1, 720, 720)
    assert attention_target(mask, border=net.border).shape == out.shape


def test_attention_net_structure():
    net = AttentionLocalisationNet2D()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and all(c.stride == (1, 1) for c in convs)
    assert [c.dilation[0] for c in convs] == [1, 1, 1, 1, 1, 1, 2, 4, 8, 1]  # dilated deeper
    assert net.num_pools == 4
    assert sum(p.numel() for p in net.parameters()) == 716_481


def test_attention_net_linear_output():
    sig = AttentionLocalisationNet2D(**TINY_ATT).eval()
    lin = AttentionLocalisationNet2D(output_act=None, **TINY_ATT).eval()
    lin.load_state_dict(sig.state_dict())
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(lin(x)), sig(x))


def test_attention_net_rejects_misaligned_sizes():
    with pytest.raises(ValueError, match="odd"):
        AttentionLocalisationNet2D(**TINY_ATT)(torch.randn(1, 1, 40, 32))  # 40 / 16 is not an integer
    with pytest.raises(ValueError):
        AttentionLocalisationNet2D(padding="valid").output_size(719)
    with pytest.raises(ValueError, match="4D"):
        AttentionLocalisationNet2D()(torch.randn(1, 1, 32, 32, 4))


def test_attention_net_gradients_and_script():
    net = AttentionLocalisationNet2D(output_act=None, **TINY_ATT)
    _assert_all_grads(net, net(torch.randn(2, 1, 32, 48)))
    _script_round_trip(net, torch.randn(1, 1, 32, 48))
    _script_round_trip(AttentionLocalisationNet2D(padding="valid", **TINY_ATT), torch.randn(1, 1, 592, 592))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0},
        {"features": (4,) * 8},
        {"kernel_sizes": (3,) * 9},
        {"dilations": (1,) * 9 + (0,)},
        {"padding": "reflect"},
        {"output_act": "relu"},
    ],
)
def test_attention_net_bad_args(kwargs):
    with pytest.raises(ValueError):
        AttentionLocalisationNet2D(**kwargs)


# ---------------------------------------------------------------- attention target
def test_attention_target_values():
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    mask[0, 0, :8, :16] = 20  # multi-label values count as spine: top-left block half full
    mask[0, 0, 16:, 16:] = 1  # bottom-right block full
    target = attention_target(mask)
    torch.testing.assert_close(target, torch.tensor([[[[0.5, 0.0], [0.0, 1.0]]]]))
    assert target.dtype == torch.float32


def test_attention_target_3d_and_border():
    mask = torch.ones(2, 1, 32, 32, 16)
    assert attention_target(mask, factor=(16, 16, 8)).shape == (2, 1, 2, 2, 2)
    m2 = torch.zeros(1, 1, 36, 36)
    m2[..., 2:-2, 2:-2] = 1  # only the centre 32 x 32 is spine; border 2 crops exactly the zero frame
    torch.testing.assert_close(attention_target(m2, border=2), torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize(
    "mask, kwargs",
    [
        (torch.zeros(1, 1, 40, 32), {}),  # not a multiple of 16
        (torch.zeros(1, 32, 32), {}),  # 3D tensor
        (torch.zeros(1, 1, 32, 32), {"factor": (16, 16, 16)}),
        (torch.zeros(1, 1, 32, 32), {"factor": 0}),
        (torch.zeros(1, 1, 32, 32), {"border": -1}),
    ],
)
def test_attention_target_bad_args(mask, kwargs):
    with pytest.raises(ValueError):
        attention_target(mask, **kwargs)


# ---------------------------------------------------------------- late fusion
def test_late_fusion_removes_stray_segmentation():
    seg = torch.zeros(1, 1, 8, 8, 4)
    seg[..., 1:3, 1:3, :] = 0.9  # spine
    seg[..., 6:8, 6:8, :] = 0.8  # stray rib blob
    attention = torch.zeros(1, 1, 8, 8, 4)
    attention[..., :4, :4, :] = 0.7  # smoothed attention map around the spine
    fused = late_fusion(seg, attention, threshold=0.5)
    assert fused[..., 6:8, 6:8, :].sum() == 0
    torch.testing.assert_close(fused[..., 1:3, 1:3, :], seg[..., 1:3, 1:3, :])


def test_late_fusion_softmax_background():
    probs = torch.softmax(torch.randn(2, 3, 4, 5), dim=1)
    mask = torch.zeros(1, 1, 4, 5)
    mask[..., :2, :] = 1
    fused = late_fusion(probs, mask, background_channel=0)
    torch.testing.assert_close(fused.sum(dim=1), torch.ones(2, 4, 5))
    torch.testing.assert_close(fused[:, :, :2], probs[:, :, :2])
    assert (fused[:, 0, 2:] == 1).all() and (fused[:, 1:, 2:] == 0).all()


@pytest.mark.parametrize(
    "seg_shape, mask_shape, kwargs",
    [
        ((1, 2, 4, 4), (1, 1, 4, 5), {}),
        ((1, 2, 4, 4), (1, 2, 4, 4), {}),
        ((2, 2, 4, 4), (3, 1, 4, 4), {}),
        ((1, 2, 4, 4), (1, 1, 4, 4, 1), {}),
        ((1, 2, 4, 4), (1, 1, 4, 4), {"background_channel": 2}),
    ],
)
def test_late_fusion_bad_args(seg_shape, mask_shape, kwargs):
    with pytest.raises(ValueError):
        late_fusion(torch.rand(seg_shape), torch.ones(mask_shape), **kwargs)


# ---------------------------------------------------------------- segmentation net
def test_seg_net_same_padding_keeps_188x188x12():
    # "same": input zero-padded to 192 x 192 x 12 internally, output cropped back to the input size
    net = SpineSegUNet2D3D(**TINY_SEG).eval()
    assert net.multiple == [16, 16, 2]
    with torch.no_grad():
        assert net(torch.randn(1, 1, 188, 188, 12)).shape == (1, 1, 188, 188, 12)


def test_seg_net_valid_geometry_matches_paper():
    # "valid": 188 = 16 * 4 + 124 -> 16 * 4 - 60 = 4 in-plane, 12 -> 4 through-plane; 188 - 4 = 184 voxels lost
    # (the paper's ~18.4 cm at 1 mm) and 12 - 4 = 8 (0.8 cm)
    net = SpineSegUNet2D3D(padding="valid", **TINY_SEG).eval()
    assert net.valid_input_size((4, 4, 3)) == (188, 188, 12)
    assert net.output_size((188, 188, 12)) == (4, 4, 4)
    assert net.valid_input_size((5, 6, 4)) == (204, 220, 14)
    assert net.output_size((204, 220, 14)) == (20, 36, 6)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 188, 188, 12)).shape == (1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="not divisible"):
        net(torch.randn(1, 1, 190, 188, 12))
    with pytest.raises(ValueError):
        net.output_size((190, 188, 12))
    assert SpineSegUNet2D3D(**TINY_SEG).output_size((37, 29, 5)) == (37, 29, 5)


def test_seg_net_same_odd_sizes_and_channels():
    net = SpineSegUNet2D3D(in_channels=2, out_channels=3, **TINY_SEG).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 2, 37, 29, 5)).shape == (2, 3, 37, 29, 5)


def test_seg_net_kernel_mix_and_dropout_only_at_bottom():
    net = SpineSegUNet2D3D(**TINY_SEG)
    kernels = [m.kernel_size for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size != (1, 1, 1)]
    assert kernels.count((3, 3, 3)) == 3  # level 4 down + up, bottom; the other 15 are in-plane
    assert kernels.count((3, 3, 1)) == 15
    dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert dropouts == [net.bottom_dropout]
    x = torch.randn(1, 1, 32, 32, 4)
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
        net.eval()
        assert torch.equal(net(x), net(x))


def test_seg_net_parameter_count_default():
    # no count in the paper; regression value of the default widths (32, 64, 128, 256, 512)
    assert sum(p.numel() for p in SpineSegUNet2D3D().parameters()) == 13_592_225


@pytest.mark.parametrize(
    "padding, shape",
    [("same", (2, 1, 32, 16, 4)), pytest.param("valid", (1, 1, 188, 188, 12), marks=pytest.mark.slow)],
)
def test_seg_net_gradients_and_script(padding, shape):
    net = SpineSegUNet2D3D(padding=padding, dropout=0.0, **TINY_SEG)
    _assert_all_grads(net, net(torch.randn(shape)))
    _script_round_trip(net, torch.randn(shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0},
        {"features": (4, 4, 4, 4)},
        {"conv3d_per_level": (0, 0, 0, 3, 1)},
        {"z_pool": (False, True)},
        {"padding": "full"},
        {"dropout": 1.0},
    ],
)
def test_seg_net_bad_args(kwargs):
    with pytest.raises(ValueError):
        SpineSegUNet2D3D(**kwargs)


def test_seg_net_rejects_4d_input():
    with pytest.raises(ValueError, match="5D"):
        SpineSegUNet2D3D(**TINY_SEG)(torch.randn(1, 1, 32, 32))
