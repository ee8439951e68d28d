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
    mask = torch.ones(2, 1, 16, 32, 48)  # RAS (LR, AP, SI); the paper's 16 x 16 x n block is (8, 16, 16) here
    assert attention_target(mask, factor=(8, 16, 16)).shape == (2, 1, 2, 2, 3)
    m2 = torch.zeros(1, 1, 36, 36)
    m2[..., 2:-2, 2:-2] = 1  # only the centre 32 x 32 is spine; border 2 crops exactly the zero frame
    torch.testing.assert_close(attention_target(m2, border=2), torch.ones(1, 1, 2, 2))
    m3 = torch.zeros(1, 1, 3, 36, 36)
    m3[..., 2:-2, 2:-2] = 1  # in 3D the border crops the in-plane axes (AP, SI), never LR
    torch.testing.assert_close(attention_target(m3, factor=(1, 16, 16), border=2), torch.ones(1, 1, 3, 2, 2))


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
    seg = torch.zeros(1, 1, 4, 8, 8)  # RAS (LR, AP, SI)
    seg[..., 1:3, 1:3] = 0.9  # spine
    seg[..., 6:8, 6:8] = 0.8  # stray rib blob
    attention = torch.zeros(1, 1, 4, 8, 8)
    attention[..., :4, :4] = 0.7  # smoothed attention map around the spine
    fused = late_fusion(seg, attention, threshold=0.5)
    assert fused[..., 6:8, 6:8].sum() == 0
    torch.testing.assert_close(fused[..., 1:3, 1:3], seg[..., 1:3, 1:3])


def test_late_fusion_logits_stay_valid_for_sigmoid_and_threshold():
    logits = torch.randn(2, 1, 3, 8, 8)
    mask = torch.zeros(1, 1, 3, 8, 8)
    mask[..., :4, :] = 1
    fused = late_fusion(logits, mask, logits=True)
    assert torch.equal(fused[..., :4, :], logits[..., :4, :])  # bit for bit inside
    probs = torch.sigmoid(fused)
    assert (probs[..., 4:, :] == 0).all() and not (probs >= 0.5)[..., 4:, :].any()  # AsDiscrete(0.5): background
    torch.testing.assert_close(probs, late_fusion(torch.sigmoid(logits), mask))  # = the paper's multiplication
    half = late_fusion(logits.half(), mask, logits=True)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    soft = late_fusion(torch.randn(1, 3, 3, 8, 8), mask, logits=True, background_channel=0)
    assert (soft.argmax(1)[..., 4:, :] == 0).all()
    torch.testing.assert_close(torch.softmax(soft, 1).sum(1), torch.ones(1, 3, 8, 8))
    with pytest.raises(ValueError, match="logit_fill"):
        late_fusion(logits, mask, logits=True, logit_fill=0.0)


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
# Axis convention: RAS tensors (B, C, LR, AP, SI), sagittal slices on the first spatial axis (LR).
def test_seg_net_same_padding_keeps_12x188x188():
    # "same": input zero-padded to (12, 192, 192) internally, output cropped back to the input size
    net = SpineSegUNet2D3D(**TINY_SEG).eval()
    assert net.multiple == [2, 16, 16]
    with torch.no_grad():
        assert net(torch.randn(1, 1, 12, 188, 188)).shape == (1, 1, 12, 188, 188)


def test_seg_net_valid_geometry_matches_paper():
    # "valid": in-plane (AP, SI) 188 = 16 * 4 + 124 -> 16 * 4 - 60 = 4, through-plane (LR) 12 -> 4;
    # 188 - 4 = 184 voxels lost (the paper's ~18.4 cm at 1 mm) and 12 - 4 = 8 (0.8 cm)
    net = SpineSegUNet2D3D(padding="valid", **TINY_SEG).eval()
    assert net.valid_input_size() == (12, 188, 188)
    assert net.valid_input_size((3, 4, 4)) == (12, 188, 188)
    assert net.output_size((12, 188, 188)) == (4, 4, 4)
    assert net.valid_input_size((4, 5, 6)) == (14, 204, 220)
    assert net.output_size((14, 204, 220)) == (6, 20, 36)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 12, 188, 188)).shape == (1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="not divisible"):
        net(torch.randn(1, 1, 12, 190, 188))
    with pytest.raises(ValueError):
        net.output_size((12, 190, 188))
    with pytest.raises(ValueError):
        net.output_size((13, 188, 188))  # odd LR before the through-plane pooling
    with pytest.raises(ValueError):
        net.valid_input_size((0, 4, 4))
    assert SpineSegUNet2D3D(**TINY_SEG).output_size((5, 37, 29)) == (5, 37, 29)


def test_seg_net_same_odd_sizes_and_channels():
    net = SpineSegUNet2D3D(in_channels=2, out_channels=3, **TINY_SEG).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 2, 5, 37, 29)).shape == (2, 3, 5, 37, 29)


def test_seg_net_kernel_mix_and_dropout_only_at_bottom():
    net = SpineSegUNet2D3D(**TINY_SEG)
    kernels = [m.kernel_size for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size != (1, 1, 1)]
    assert kernels.count((3, 3, 3)) == 3  # level 4 down + up, bottom; the other 15 are in the sagittal plane
    assert kernels.count((1, 3, 3)) == 15
    ups = [m.stride for m in net.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert sorted(ups) == [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]  # one through-plane (LR) pooling
    assert net.pool_sizes == [[1, 2, 2], [1, 2, 2], [1, 2, 2], [2, 2, 2]]
    dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert dropouts == [net.bottom_dropout]
    x = torch.randn(1, 1, 4, 32, 32)
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
        net.eval()
        assert torch.equal(net(x), net(x))


def _lr_profile_of_impulse_response(module: nn.Module, x: torch.Tensor, r: int) -> torch.Tensor:
    """Per-LR-slice L1 change of ``module``'s output when an impulse (random values) is added to LR slice ``r``."""
    impulse = torch.zeros_like(x)
    impulse[:, :, r] = 5.0 * torch.randn_like(x[:, :, r])
    with torch.no_grad():
        diff = module(x + impulse) - module(x)
    return diff.abs().sum(dim=(0, 1, 3, 4))  # (LR,)


def _encoder(net: SpineSegUNet2D3D, levels: int) -> nn.Module:
    """The first ``levels`` levels of the down path, with the poolings between them."""

    class Part(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i in range(levels):
                x = net.down[i](x)
                if i < levels - 1:
                    x = torch.nn.functional.max_pool3d(x, net.pool_sizes[i])
            return x

    return Part()


def test_seg_net_axis_convention_2d_levels_do_not_mix_lr():
    # A RAS tensor (B, C, LR, AP, SI) with a structure elongated along SI and thin along LR, as a spine seen on
    # a sagittal slice. The 2D convolutions must act in the sagittal plane AP x SI: an impulse in one LR slice
    # stays in that slice through the 2D-only levels 1-3 (and their in-plane poolings), and level 4's single 3D
    # convolution spreads it to exactly one neighbouring slice on each side. With the old (X, Y, Z) convention
    # (kernels (3, 3, 1) on these axes) the impulse would spread across LR at level 1 and the test would fail.
    x = torch.zeros(1, 1, 8, 32, 48)  # LR 8, AP 32, SI 48: every axis distinct
    x[:, :, 3:5, 12:20, 4:44] = 1.0  # rod along SI, 2 slices thick along LR
    x = x + 0.1 * torch.randn_like(x)
    net = SpineSegUNet2D3D(**TINY_SEG, dropout=0.0).eval()
    for levels in (1, 2, 3):
        profile = _lr_profile_of_impulse_response(_encoder(net, levels), x, r=3)
        assert profile.nonzero().flatten().tolist() == [3], (levels, profile)  # no LR mixing in the 2D part
    profile = _lr_profile_of_impulse_response(_encoder(net, 4), x, r=3)
    assert profile.nonzero().flatten().tolist() == [2, 3, 4], profile  # one (3, 3, 3) conv: +-1 slice
    # a net without 3D convolutions and LR pooling segments every sagittal slice independently
    net2d = SpineSegUNet2D3D(**TINY_SEG, conv3d_per_level=(0,) * 5, z_pool=(False,) * 4, dropout=0.0).eval()
    with torch.no_grad():
        whole = net2d(x)
        per_slice = torch.cat([net2d(x[:, :, r : r + 1]) for r in range(x.shape[2])], dim=2)
    torch.testing.assert_close(whole, per_slice)


def test_seg_net_axis_convention_valid_shapes_follow_ras():
    # the through-plane axis (the paper's z = 12) is the first spatial axis: (12, 188, 188), not (188, 188, 12)
    net = SpineSegUNet2D3D(padding="valid", **TINY_SEG)
    with pytest.raises(ValueError):
        net.output_size((188, 188, 12))
    assert net.output_size((12, 188, 188)) == (4, 4, 4)


def test_seg_net_parameter_count_default():
    # no count in the paper; regression value of the default widths (32, 64, 128, 256, 512); the kernels are
    # (1, 3, 3) / (3, 3, 3) in the RAS axis order, the same number of weights as the former (3, 3, 1)
    assert sum(p.numel() for p in SpineSegUNet2D3D().parameters()) == 13_592_225


@pytest.mark.parametrize(
    "padding, shape",
    [("same", (2, 1, 4, 32, 16)), pytest.param("valid", (1, 1, 12, 188, 188), marks=pytest.mark.slow)],
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
