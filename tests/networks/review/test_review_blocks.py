"""Tests for the blocks of the review networks: DenseASPP, reverse attention, partial decoder, AHSP, ResUNet++."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from spine_monai.networks.blocks.ahsp import AHSP
from spine_monai.networks.blocks.dense_aspp import DenseASPP
from spine_monai.networks.blocks.partial_decoder import ParallelPartialDecoder, ReceptiveFieldBlock
from spine_monai.networks.blocks.resunetpp_blocks import ResidualSEUnit, ResUNetPPASPP, ResUNetPPAttention
from spine_monai.networks.blocks.reverse_attention import ReverseAttention, reverse_weight


def _script_roundtrip(module: nn.Module, *inputs: torch.Tensor) -> None:
    module.eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.jit.load(buffer)(*inputs), module(*inputs))


def _assert_all_grads(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ---- DenseASPP -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({"spatial_dims": 2, "in_channels": 8, "growth_channels": 4, "bottleneck_channels": 6}, (2, 8, 9, 11)),
        ({"spatial_dims": 3, "in_channels": 4, "growth_channels": 2, "bottleneck_channels": 4, "dilations": (1, 2)},
         (2, 4, 5, 6, 7)),
    ],
)
def test_dense_aspp_shape(kwargs, shape):
    block = DenseASPP(**kwargs)
    y = block(torch.randn(shape))
    n_branches = len(kwargs.get("dilations", (3, 6, 12, 18, 24)))
    assert block.out_channels == shape[1] + n_branches * kwargs["growth_channels"]
    assert y.shape == (shape[0], block.out_channels, *shape[2:])


def test_dense_aspp_dense_connectivity():
    block = DenseASPP(2, 8, growth_channels=4, bottleneck_channels=6, dilations=(3, 6, 12))
    # branch l sees the input plus all earlier branches; the first has no leading norm (the encoder ends with one)
    first_convs = [next(m for m in b if isinstance(m, Convolution)) for b in block.branches]
    assert [c.conv.in_channels for c in first_convs] == [8, 12, 16]
    assert [isinstance(b[0], nn.BatchNorm2d) for b in block.branches] == [False, True, True]
    assert [b[-1].conv.dilation for b in block.branches] == [(3, 3), (6, 6), (12, 12)]
    x = torch.randn(1, 8, 7, 7)
    torch.testing.assert_close(block.eval()(x)[:, -8:], x)  # the input is carried through unchanged, last
    block.train()
    block(torch.randn(2, 8, 7, 7)).square().mean().backward()
    _assert_all_grads(block)
    _script_roundtrip(block, torch.randn(1, 8, 7, 7))


@pytest.mark.parametrize(
    "kwargs",
    [{"spatial_dims": 1, "in_channels": 4}, {"spatial_dims": 2, "in_channels": 0}, {"spatial_dims": 2,
     "in_channels": 4, "dilations": ()}, {"spatial_dims": 2, "in_channels": 4, "dropout": 1.0}],
)
def test_dense_aspp_bad_args(kwargs):
    with pytest.raises(ValueError):
        DenseASPP(**kwargs)


# ---- reverse attention -----------------------------------------------------------------------------------------


def test_reverse_weight_values():
    binary = torch.tensor([[[[0.0, 2.0]]]])  # (1, 1, 1, 2)
    torch.testing.assert_close(reverse_weight(binary), 1 - torch.sigmoid(binary))
    # 3 classes, pixel 0 certain background, pixel 1 split between classes 1 and 2
    logits = torch.log(torch.tensor([[0.98, 0.01, 0.01], [0.0001, 0.4999, 0.5]])).t().reshape(1, 3, 1, 2)
    fg = reverse_weight(logits, "foreground")
    conf = reverse_weight(logits, "confidence")
    torch.testing.assert_close(fg, torch.tensor([[[[0.98, 0.0001]]]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(conf, torch.tensor([[[[0.02, 0.5]]]]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        reverse_weight(logits, "per_class")


def test_reverse_attention_residual_and_erasing():
    ra = ReverseAttention(2, 8, 3, mid_channels=4, edge_channels=2).eval()
    feat, edge = torch.randn(1, 8, 6, 6), torch.randn(1, 2, 12, 12)
    prior = torch.zeros(1, 3, 3, 3)
    prior[:, 1] = 50.0  # everything confidently foreground: reverse weight ~ 0, features erased
    out = ra(feat, prior, edge)
    assert out.shape == (1, 3, 6, 6)
    erased = ra(torch.zeros_like(feat), prior, edge)  # zero features give the same refinement
    torch.testing.assert_close(out, erased, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        ra(feat, prior, None)


def test_reverse_attention_backward_script_3d():
    ra = ReverseAttention(3, 4, 2, mid_channels=4, edge_channels=2, mode="confidence")
    feat, prior, edge = torch.randn(2, 4, 4, 5, 6), torch.randn(2, 2, 2, 3, 3), torch.randn(2, 2, 4, 5, 6)
    assert ra(feat, prior, edge).shape == (2, 2, 4, 5, 6)
    ra(feat, prior, edge).sum().backward()
    _assert_all_grads(ra)
    ra2 = ReverseAttention(2, 4, 2, mid_channels=4, edge_channels=2)
    _script_roundtrip(ra2, torch.randn(1, 4, 5, 6), torch.randn(1, 2, 3, 3), torch.randn(1, 2, 10, 12))


@pytest.mark.parametrize("kwargs", [{"in_channels": 0}, {"num_convs": 0}, {"mode": "max"}, {"edge_channels": -1}])
def test_reverse_attention_bad_args(kwargs):
    args = {"spatial_dims": 2, "in_channels": 4, "out_channels": 2, **kwargs}
    with pytest.raises(ValueError):
        ReverseAttention(**args)


# ---- RFB and parallel partial decoder -------------------------------------------------------------------------


def test_rfb_and_ppd_shapes_backward_script():
    rfb = ReceptiveFieldBlock(6, 4)
    assert rfb(torch.randn(2, 6, 9, 7)).shape == (2, 4, 9, 7)
    ppd = ParallelPartialDecoder(4, 3)
    x1, x2, x3 = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 5, 6), torch.randn(2, 4, 9, 11)  # odd sizes
    out = ppd(x1, x2, x3)
    assert out.shape == (2, 3, 9, 11)
    (out.sum() + rfb(torch.randn(2, 6, 9, 7)).sum()).backward()
    _assert_all_grads(ppd)
    _assert_all_grads(rfb)
    _script_roundtrip(rfb, torch.randn(1, 6, 9, 7))
    _script_roundtrip(ppd, x1[:1], x2[:1], x3[:1])


@pytest.mark.parametrize("cls,args", [(ReceptiveFieldBlock, (0, 4)), (ParallelPartialDecoder, (4, 0))])
def test_rfb_ppd_bad_args(cls, args):
    with pytest.raises(ValueError):
        cls(*args)


# ---- AHSP ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,shape,expected",
    [
        ({"spatial_dims": 2, "in_channels": 8, "out_channels": 16}, (2, 8, 9, 11), (2, 16, 9, 11)),
        ({"spatial_dims": 2, "in_channels": 8, "out_channels": 24, "stride": 2}, (2, 8, 9, 11), (2, 24, 5, 6)),
        ({"spatial_dims": 3, "in_channels": 4, "out_channels": 8, "stride": 2, "act": "relu"}, (2, 4, 5, 6, 7),
         (2, 8, 3, 3, 4)),
    ],
)
def test_ahsp_shapes(kwargs, shape, expected):
    assert AHSP(**kwargs)(torch.randn(shape)).shape == expected


def test_ahsp_structure_backward_script():
    block = AHSP(2, 8, 16)
    assert [b.conv.dilation for b in block.branches] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert all(b.conv.groups == 4 for b in block.branches)  # depth-wise on the C/4 reduced channels
    assert isinstance(block.act, nn.PReLU) and block.act.num_parameters == 16
    block(torch.randn(2, 8, 9, 11)).sum().backward()
    _assert_all_grads(block)
    _script_roundtrip(block, torch.randn(1, 8, 9, 11))


@pytest.mark.parametrize(
    "kwargs",
    [{"out_channels": 10}, {"out_channels": 0}, {"stride": 3}, {"spatial_dims": 1}, {"dilations": (1, 2, 4)}],
)
def test_ahsp_bad_args(kwargs):
    with pytest.raises(ValueError):
        AHSP(**{"spatial_dims": 2, "in_channels": 4, "out_channels": 8, **kwargs})


# ---- ResUNet++ blocks ---------------------------------------------------------------------------------------------


def test_resunetpp_blocks_shapes_backward_script():
    unit = ResidualSEUnit(2, 4, 16, strides=2)
    stem = ResidualSEUnit(2, 4, 16, preactivation=False)
    aspp = ResUNetPPASPP(2, 16, 8)
    att = ResUNetPPAttention(2, 16, 8)
    x = torch.randn(2, 4, 10, 12)
    assert unit(x).shape == (2, 16, 5, 6)
    assert stem(x).shape == (2, 16, 10, 12)
    assert aspp(unit(x)).shape == (2, 8, 5, 6)
    assert [b.conv.dilation for b in aspp.branches] == [(1, 1), (6, 6), (12, 12), (18, 18)]
    g, d = stem(x), aspp(unit(x))
    out = att(g, d)
    assert out.shape == d.shape
    (out.sum() + unit(x).sum()).backward()
    for module in (unit, stem, aspp, att):
        _assert_all_grads(module)
    _script_roundtrip(att, torch.randn(1, 16, 10, 12), torch.randn(1, 8, 5, 6))
    _script_roundtrip(unit, torch.randn(1, 4, 10, 12))
    assert ResidualSEUnit(3, 2, 8)(torch.randn(1, 2, 4, 5, 6)).shape == (1, 8, 4, 5, 6)


def test_resunetpp_aspp_is_a_sum():
    aspp = ResUNetPPASPP(2, 2, 2, rates=(1, 2), norm="instance").eval()
    x = torch.randn(1, 2, 6, 6)
    manual = aspp.project(aspp.branches[0](x) + aspp.branches[1](x))
    torch.testing.assert_close(aspp(x), manual)


@pytest.mark.parametrize(
    "cls,args",
    [(ResidualSEUnit, (2, 0, 8)), (ResidualSEUnit, (2, 4, 8, 0)), (ResUNetPPASPP, (2, 4, 8, ())),
     (ResUNetPPAttention, (2, 0, 8))],
)
def test_resunetpp_blocks_bad_args(cls, args):
    with pytest.raises(ValueError):
        cls(*args)
