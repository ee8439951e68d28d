"""Tests for SAFNet and its ablation variants."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

from spine_monai.networks.blocks.aspp import ASPP
from spine_monai.networks.blocks.multiscale_fusion import MultiscaleFusion
from spine_monai.networks.nets.safnet import SAFNET_VARIANTS, SAFNet, count_parameters, safnet_variant

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit")


def test_variant_names():
    assert safnet_variant("Base") == {"use_aspp": False, "use_msf": False, "use_attention": False}
    assert safnet_variant("base+ASPP") == {"use_aspp": True, "use_msf": False, "use_attention": False}
    assert safnet_variant("base+msf") == safnet_variant("base + multiscale_fusion")
    assert safnet_variant("base+attention") == {"use_aspp": False, "use_msf": False, "use_attention": True}
    assert (
        safnet_variant("full") == safnet_variant("safnet") == {"use_aspp": True, "use_msf": True, "use_attention": True}
    )
    safnet_variant("base")["use_aspp"] = True  # a copy: the table is unchanged
    assert SAFNET_VARIANTS["base"]["use_aspp"] is False
    with pytest.raises(ValueError, match="unknown SAFNet variant"):
        safnet_variant("base+crf")


@pytest.mark.parametrize("variant", sorted(SAFNET_VARIANTS))
@pytest.mark.parametrize("shape", [(1, 1, 4, 32, 16), (2, 1, 3, 33, 19)])
def test_variants_forward_shape(variant, shape):
    net = SAFNet(in_channels=1, out_channels=5, features=8, **safnet_variant(variant)).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 5, *shape[2:])
    assert isinstance(net.aspp, ASPP) == SAFNET_VARIANTS[variant]["use_aspp"]
    assert isinstance(net.msf_low, MultiscaleFusion) == SAFNET_VARIANTS[variant]["use_msf"]
    assert isinstance(net.attention, nn.Sequential) == SAFNET_VARIANTS[variant]["use_attention"]


def test_2d_forward_shape():
    net = SAFNet(spatial_dims=2, in_channels=2, out_channels=3, features=8).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 2, 33, 20)).shape == (1, 3, 33, 20)


def test_feature_sizes_match_paper():
    # paper: 128x18x64x32, 128x18x32x16, 128x18x16x8 for an 18x256x128 input (spatial sizes do not depend on width)
    net = SAFNet(features=8).eval()
    with torch.no_grad():
        low, mid, high = net.forward_features(torch.randn(1, 1, 18, 256, 128))
    assert low.shape[2:] == (18, 64, 32)
    assert mid.shape[2:] == (18, 32, 16)
    assert high.shape[2:] == (18, 16, 8)


@pytest.mark.slow
def test_paper_configuration_full_size():
    net = SAFNet().eval()  # features=128, 20 classes
    x = torch.randn(1, 1, 18, 256, 128)
    with torch.no_grad():
        low, mid, high = net.forward_features(x)
        assert (low.shape, mid.shape, high.shape) == (
            (1, 128, 18, 64, 32),
            (1, 128, 18, 32, 16),
            (1, 128, 18, 16, 8),
        )
        assert net(x).shape == (1, 20, 18, 256, 128)


def test_parameter_count_paper_configuration():
    # no count in the paper; regression values of this implementation at features=128, 20 classes
    full = count_parameters(SAFNet())
    assert full == 7_312_728  # eq. 8 splicing with R_SAM (the attention modules on R_S: 20,642 parameters)
    assert count_parameters(SAFNet(splice="gated_high", gate_attention=False)) == 7_292_086  # the earlier reading
    base = count_parameters(SAFNet(**safnet_variant("base")))
    for row in ("base+aspp", "base+multiscale_fusion", "base+self_attention"):
        assert base < count_parameters(SAFNet(**safnet_variant(row))) < full


def test_gated_high_splice_gates_low_and_mid():
    # the earlier reading (splice="gated_high"): with the high-level features forced to a huge negative value the
    # sigmoid gate is ~0, so low/mid vanish and
    # only the (constant) high-level path reaches the head: the output no longer depends on the input
    net = SAFNet(out_channels=3, features=8, splice="gated_high", **safnet_variant("base")).eval()

    def _const(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return torch.full_like(output, -1e4)

    net.high_block.register_forward_hook(_const)
    with torch.no_grad():
        a = net(torch.randn(1, 1, 3, 32, 16))
        b = net(torch.randn(1, 1, 3, 32, 16))
    torch.testing.assert_close(a, b)


def test_gradients_reach_every_parameter():
    net = SAFNet(out_channels=3, features=8)
    # the PAM/CAM gammas are 0 at init, so their convs would get zero gradient: set them nonzero first
    with torch.no_grad():
        for attention in (net.attention, net.gate_attention):
            attention[0].gamma.fill_(0.5)
            attention[1].gamma.fill_(0.5)
    out = net(torch.randn(2, 1, 3, 32, 16))
    assert not torch.isnan(out).any()
    out.pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.startswith(("gate_attention.0.query_conv", "gate_attention.0.key_conv")):
            # documented: on the one position of R_S the softmax over positions is 1, so the query and key
            # projections of the gate's position attention cannot matter (module docstring)
            assert p.grad.abs().sum() == 0, name
            continue
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_torchscript_round_trip():
    net = SAFNet(out_channels=3, features=8).eval()
    x = torch.randn(1, 1, 3, 32, 16)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)
    buf.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buf)(x), net(x))


def test_position_attention_guard_propagates():
    net = SAFNet(features=8, max_positions=10).eval()
    with pytest.raises(ValueError, match="max_positions"):
        net(torch.randn(1, 1, 3, 64, 32))  # high level 3 x 4 x 2 = 24 positions > 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 1},
        {"features": 6},  # not a multiple of 4
        {"features": 12},  # not a multiple of reduction 8
        {"in_channels": 0},
        {"out_channels": 0},
        {"splice": "sum"},
    ],
)
def test_bad_args(kwargs):
    with pytest.raises(ValueError):
        SAFNet(**kwargs)


def _head_input(net: SAFNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors of the splicing: low, mid, high after their modules, the gate R_SAM and the head's input."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        net.msf_low.register_forward_hook(lambda m, i, o: seen.__setitem__("low", o)),
        net.msf_mid.register_forward_hook(lambda m, i, o: seen.__setitem__("mid", o)),
        net.attention.register_forward_hook(lambda m, i, o: seen.__setitem__("high", o)),
        net.gate_attention.register_forward_hook(lambda m, i, o: seen.update(r_s=i[0], r_sam=o)),
        net.head.register_forward_pre_hook(lambda m, i: seen.__setitem__("fused", i[0])),
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def test_paper_splice_is_eq8_and_the_abstract():
    """F_sh = R_SAM . F_l . up(F_m) (eq. 8), concatenated with F_l and up(F_m) (abstract); R_S = sigmoid(GAP(F_h))."""
    torch.manual_seed(0)
    net = SAFNet(out_channels=3, features=8).eval()
    with torch.no_grad():  # a non-trivial R_SAM
        net.gate_attention[0].gamma.fill_(0.7)
        net.gate_attention[1].gamma.fill_(0.3)
    t = _head_input(net, torch.randn(2, 1, 3, 32, 16))
    torch.testing.assert_close(t["r_s"], torch.sigmoid(t["high"].mean(dim=(2, 3, 4), keepdim=True)))
    assert not torch.allclose(t["r_sam"], t["r_s"])  # the attention module processes R_S
    mid_up = torch.nn.functional.interpolate(t["mid"], size=t["low"].shape[2:], mode="trilinear",
                                             align_corners=False)
    c = 8
    fused = t["fused"]
    assert fused.shape[1] == 3 * c
    torch.testing.assert_close(fused[:, :c], t["r_sam"] * t["low"] * mid_up)
    torch.testing.assert_close(fused[:, c:2 * c], t["low"])
    torch.testing.assert_close(fused[:, 2 * c:], mid_up)


def test_respectively_splice_and_gate_switch():
    net = SAFNet(out_channels=3, features=8, splice="respectively", gate_attention=False).eval()
    assert isinstance(net.gate_attention, nn.Identity)
    t = _head_input(net, torch.randn(1, 1, 3, 32, 16))
    torch.testing.assert_close(t["r_sam"], t["r_s"])  # no attention module: R_SAM = R_S
    c = 8
    assert t["fused"].shape[1] == 4 * c
    torch.testing.assert_close(t["fused"][:, :c], t["r_s"] * t["low"])
    torch.testing.assert_close(t["fused"][:, 2 * c:3 * c], t["low"])
    # the gate attention follows use_attention unless set (Table 2 rows switch the whole self-attention component)
    assert isinstance(SAFNet(features=8, use_attention=False).gate_attention, nn.Identity)
    assert isinstance(SAFNet(features=8, use_attention=False, gate_attention=True).gate_attention, nn.Sequential)


def test_paper_aspp_rates_degenerate_on_the_paper_map():
    """At the 18 x 16 x 8 high-level map of the paper's 18 x 256 x 128 input, the rate-18 ASPP branch equals a 1x1x1
    convolution with its centre weights (every other tap reads zero padding); the fitted rates do not."""
    from spine_monai.networks.nets.safnet import FIT_ASPP_RATES

    torch.manual_seed(0)
    x = torch.randn(1, 4, 18, 16, 8)

    def branch_conv(rates):
        aspp = ASPP(3, 4, 4, rates=rates).eval()
        return aspp.branches[-1].conv  # the largest rate; Convolution's conv layer

    conv = branch_conv((6, 12, 18))
    centre = torch.nn.functional.conv3d(x, conv.weight[..., 1:2, 1:2, 1:2], conv.bias)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), centre)
        fitted = branch_conv(FIT_ASPP_RATES)
        assert not torch.allclose(fitted(x), torch.nn.functional.conv3d(x, fitted.weight[..., 1:2, 1:2, 1:2],
                                                                         fitted.bias), atol=1e-3)
