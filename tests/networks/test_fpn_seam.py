"""Tests for FPNSEAM, its ablations and the FPN attention baselines of the SEAM paper."""

from __future__ import annotations

import io

import pytest
import segmentation_models_pytorch as smp
import torch

from spine_monai.losses.seam_loss import SEAMLoss
from spine_monai.networks.blocks.em_attention import EMAttention
from spine_monai.networks.blocks.seam import StructureEnhancedAttention
from spine_monai.networks.nets.fpn_seam import FPNSEAM, SEAM_ABLATIONS, fpn_baseline

# a light ResNet (timm resnet10t) keeps CPU tests fast; the resnet50 configuration is checked in a slow test
LIGHT = {"encoder_name": "tu-resnet10t"}


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 96, 64)])
def test_fpnseam_shapes(shape):
    net = FPNSEAM(in_channels=1, out_channels=4, **LIGHT)
    logits, keys = net(torch.randn(shape))
    assert logits.shape == (shape[0], 4, shape[2], shape[3])
    assert keys.shape == (shape[0], 4, shape[2] // 4, shape[3] // 4)  # decoder resolution


def test_fpnseam_return_logits_only():
    net = FPNSEAM(in_channels=3, out_channels=5, return_keys=False, **LIGHT)
    out = net(torch.randn(1, 3, 64, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 5, 64, 32)


def test_fpnseam_state_dict_matches_smp_fpn():
    """Encoder / decoder / head keep smp's names, so an smp FPN checkpoint loads into FPNSEAM's FPN part."""
    fpn = smp.FPN(**LIGHT, encoder_weights=None, in_channels=1, classes=4)
    net = FPNSEAM(**LIGHT)
    missing, unexpected = net.load_state_dict(fpn.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith("seam.") for k in missing)


def test_fpnseam_backward_every_parameter():
    net = FPNSEAM(**LIGHT)
    label = torch.randint(0, 4, (2, 1, 64, 64))
    loss = SEAMLoss()(net(torch.randn(2, 1, 64, 64)), label)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for name, p in net.seam.named_parameters():
        assert p.grad.abs().sum() > 0, name


def test_ablation_without_attentive_learning():
    net_kwargs, loss_kwargs = SEAM_ABLATIONS["wo_al"]
    net = FPNSEAM(**LIGHT, **net_kwargs)
    assert not any(isinstance(m, StructureEnhancedAttention) for m in net.modules())
    # only the key mapping varphi (1x1, 128 -> 4, bias) is added to the FPN
    fpn = smp.FPN(**LIGHT, encoder_weights=None, in_channels=1, classes=4)
    assert _n_params(net) - _n_params(fpn) == 128 * 4 + 4
    x = torch.randn(1, 1, 64, 64)
    logits, keys = net(x)
    assert keys.shape == (1, 4, 16, 16)
    SEAMLoss(**loss_kwargs)((logits, keys), torch.randint(0, 4, (1, 1, 64, 64))).backward()
    assert net.seam.key.weight.grad.abs().sum() > 0


def test_ablation_without_structure_supervision_is_beta_zero():
    net_kwargs, loss_kwargs = SEAM_ABLATIONS["wo_ss"]
    assert net_kwargs == {"attentive": True} and loss_kwargs == {"beta": 0.0}
    assert SEAM_ABLATIONS["seam"][1] == {"beta": 0.5}


@pytest.mark.parametrize("return_keys", [False, True])
def test_fpnseam_torchscript_round_trip(return_keys):
    net = FPNSEAM(return_keys=return_keys, **LIGHT).eval()
    x = torch.randn(1, 1, 64, 32)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    expected, got = net(x), loaded(x)
    if return_keys:
        assert isinstance(got, tuple) and len(got) == 2
        for a, b in zip(expected, got, strict=True):
            torch.testing.assert_close(a, b)
    else:
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(expected, got)


@pytest.mark.slow
def test_fpnseam_torch_export():
    net = FPNSEAM(return_keys=False, **LIGHT).eval()
    x = torch.randn(1, 1, 64, 32)
    exported = torch.export.export(net, (x,))
    torch.testing.assert_close(exported.module()(x), net(x))


@pytest.mark.parametrize("variant", ["fpn", "nonlocal", "danet", "em"])
def test_baselines_shapes_and_backward(variant):
    net = fpn_baseline(variant, in_channels=1, out_channels=4, **LIGHT)
    x = torch.randn(2, 1, 64, 32)
    out = net(x)
    assert out.shape == (2, 4, 64, 32)
    out.square().mean().backward()
    for name, p in net.named_parameters():
        if not p.requires_grad:  # EMAttention.conv_in: before the gradient-free EM steps
            assert variant == "em" and ".conv_in." in name, name
            continue
        # Non-local and DANet zero-initialise their residual gains, so some branch gradients are exactly 0 at init
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_baseline_blocks():
    assert isinstance(fpn_baseline("fpn", **LIGHT), smp.FPN)
    assert isinstance(fpn_baseline("em", **LIGHT).block, EMAttention)
    from timm.layers import NonLocalAttn

    assert isinstance(fpn_baseline("nonlocal", **LIGHT).block, NonLocalAttn)
    from spine_monai.networks.blocks.danet_head import DANetHead

    danet = fpn_baseline("danet", out_channels=4, **LIGHT)
    assert isinstance(danet.block, DANetHead)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.out_channels == 4 for m in danet.segmentation_head.modules())


@pytest.mark.parametrize("variant", ["nonlocal", "em"])
def test_baseline_torchscript_round_trip(variant):
    net = fpn_baseline(variant, **LIGHT).eval()
    x = torch.randn(1, 1, 64, 32)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.jit.load(buffer)(x), net(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        fpn_baseline("psp", **LIGHT)
    with pytest.raises(ValueError, match="out_channels"):
        FPNSEAM(out_channels=1, **LIGHT)
    with pytest.raises(ValueError, match="in_channels"):
        FPNSEAM(in_channels=0, **LIGHT)
    with pytest.raises(ValueError, match="divisible by 32"):
        FPNSEAM(**LIGHT)(torch.randn(1, 1, 64, 48))


@pytest.mark.slow
def test_parameter_counts_resnet50():
    """smp FPN resnet50 at 20 classes is 26.1M (ARCHITECTURES.md); FPNSEAM adds exactly one SEAM."""
    fpn20 = smp.FPN(encoder_name="resnet50", encoder_weights=None, in_channels=1, classes=20)
    assert abs(_n_params(fpn20) / 1e6 - 26.1) / 26.1 < 0.02
    net = FPNSEAM(in_channels=1, out_channels=4, encoder_name="resnet50")
    fpn4 = smp.FPN(encoder_name="resnet50", encoder_weights=None, in_channels=1, classes=4)
    seam = StructureEnhancedAttention(2, 128, 4)
    # phi 128*64 + BN 2*64; varphi 128*4 + 4; theta 64*128 + BN 2*128; rho 3*3*256*128 + BN 2*128
    assert _n_params(seam) == 8320 + 516 + 8448 + 295168
    assert _n_params(net) == _n_params(fpn4) + _n_params(seam)
    net.eval()
    with torch.no_grad():
        logits, keys = net(torch.randn(1, 1, 512, 256))
    assert logits.shape == (1, 4, 512, 256) and keys.shape == (1, 4, 128, 64)


def test_training_smoke_reduces_seam_loss():
    """~30 Adam steps on a tiny constructed batch (class squares with distinct intensities) reduce SEAMLoss."""
    torch.manual_seed(0)
    net = FPNSEAM(**LIGHT, decoder_pyramid_channels=32, decoder_segmentation_channels=32, decoder_dropout=0.0)
    label = torch.zeros(2, 1, 64, 64, dtype=torch.long)
    label[0, 0, 8:24, 16:40] = 1
    label[0, 0, 40:56, 8:20] = 2
    label[1, 0, 20:36, 30:50] = 3
    label[1, 0, 4:12, 4:60] = 1
    x = torch.randn(2, 1, 64, 64) + 2.0 * label.float()
    criterion = SEAMLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = criterion(net(x), label)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
