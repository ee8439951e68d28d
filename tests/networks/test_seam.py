"""Tests for the structure-enhanced attention module (SEAM, Zhao et al. ICASSP 2021, eqs. 2-5)."""

from __future__ import annotations

import io

import pytest
import torch

from spine_monai.networks.blocks.seam import StructureEnhancedAttention

SHAPE_CASES = [
    # (kwargs, input_shape, expected_output_shape, expected_key_shape)
    ({"spatial_dims": 2, "in_channels": 16, "num_classes": 4}, (2, 16, 9, 7), (2, 16, 9, 7), (2, 4, 9, 7)),
    (
        {"spatial_dims": 2, "in_channels": 8, "num_classes": 3, "key_channels": 5},
        (1, 8, 16, 11),
        (1, 8, 16, 11),
        (1, 3, 16, 11),
    ),
    ({"spatial_dims": 3, "in_channels": 8, "num_classes": 4}, (2, 8, 5, 6, 7), (2, 8, 5, 6, 7), (2, 4, 5, 6, 7)),
    (
        {"spatial_dims": 3, "in_channels": 6, "num_classes": 2, "norm": "instance", "act": "prelu"},
        (2, 6, 3, 4, 5),
        (2, 6, 3, 4, 5),
        (2, 2, 3, 4, 5),
    ),
    (
        {"spatial_dims": 2, "in_channels": 4, "num_classes": 4, "norm": None, "act": None},
        (2, 4, 5, 3),
        (2, 4, 5, 3),
        (2, 4, 5, 3),
    ),
]


@pytest.mark.parametrize("kwargs,input_shape,out_shape,key_shape", SHAPE_CASES)
def test_shapes(kwargs, input_shape, out_shape, key_shape):
    net = StructureEnhancedAttention(**kwargs)
    z, k = net(torch.randn(input_shape))
    assert z.shape == out_shape
    assert k.shape == key_shape


def test_default_key_channels_and_kernel_sizes():
    net = StructureEnhancedAttention(2, 128, 4)
    assert net.key_channels == 64
    # Sec. 3.2: all 1x1 except rho, which is 3x3 with padding 1
    assert net.query.conv.kernel_size == (1, 1)
    assert net.key.kernel_size == (1, 1)
    assert net.theta.conv.kernel_size == (1, 1)
    assert net.rho.conv.kernel_size == (3, 3) and net.rho.conv.padding == (1, 1)
    assert net.rho.conv.in_channels == 256 and net.rho.conv.out_channels == 128


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 8, 7, 5)), (3, (2, 8, 3, 5, 4))])
def test_backward_every_parameter(spatial_dims, shape):
    net = StructureEnhancedAttention(spatial_dims, 8, 4, key_channels=4)
    x = torch.randn(shape, requires_grad=True)
    z, k = net(x)
    assert torch.isfinite(z).all() and torch.isfinite(k).all()
    (z.square().mean() + k.square().mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_keys_receive_gradient_through_attention_only():
    """The key conv is trained by the attention path even without a loss on the keys."""
    net = StructureEnhancedAttention(2, 8, 4)
    z, _ = net(torch.randn(2, 8, 6, 6))
    z.sum().backward()
    assert net.key.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("normalize_positions", [True, False])
def test_matches_equations(normalize_positions):
    """Reference computation of eqs. 2-5 written with einsum on unflattened maps."""
    torch.manual_seed(1)
    net = StructureEnhancedAttention(2, 6, 3, key_channels=4, normalize_positions=normalize_positions).eval()
    v = torch.randn(2, 6, 5, 4)
    z, k = net(v)
    q = net.query(v)  # (B, C', H, W)
    k_ref = net.key(v)  # (B, N, H, W)
    k_prime = torch.softmax(k_ref, dim=1)  # eq. 3: over classes
    energy = torch.einsum("bchw,bnhw->bcn", q, k_prime)
    if normalize_positions:
        energy = energy / (5 * 4)
    a_prime = torch.softmax(energy, dim=2)  # eq. 4: (B, C', N), over N
    z_prime = net.theta(torch.einsum("bcn,bnhw->bchw", a_prime, k_prime))  # eq. 5
    expected = net.rho(torch.cat([z_prime, v], dim=1))
    torch.testing.assert_close(k, k_ref)
    torch.testing.assert_close(z, expected)


def test_uniform_keys_give_constant_reconstruction():
    """With equal key logits k' = 1/N everywhere; since every row of a' sums to 1 over N, a' k' = 1/N everywhere.

    (An OCR-style softmax over space would not give this.)
    """
    net = StructureEnhancedAttention(2, 8, 4).eval()
    torch.nn.init.zeros_(net.key.weight)
    torch.nn.init.zeros_(net.key.bias)
    captured: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        captured["z"] = inputs[0]

    net.theta.register_forward_hook(hook)
    net(torch.randn(2, 8, 6, 5))
    torch.testing.assert_close(captured["z"], torch.full((2, net.key_channels, 6, 5), 0.25))


def test_attention_is_size_invariant_with_position_normalisation():
    """Tiling the input changes P but, with the mean over positions, not the attention: output tiles too."""
    net = StructureEnhancedAttention(2, 4, 3, norm=None).eval()
    v = torch.randn(1, 4, 6, 6)
    z_small, _ = net(v)
    z_big, _ = net(v.repeat(1, 1, 2, 1))  # same statistics, twice the positions
    # the 3x3 rho conv sees a different border only at the seam rows 5/6 and 11
    torch.testing.assert_close(z_big[..., :5, :], z_small[..., :5, :])


def test_torchscript_round_trip():
    net = StructureEnhancedAttention(2, 8, 4).eval()
    x = torch.randn(1, 8, 7, 9)
    scripted = torch.jit.script(net)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for a, b in zip(net(x), loaded(x), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 4, "in_channels": 8, "num_classes": 4},
        {"spatial_dims": 2, "in_channels": 0, "num_classes": 4},
        {"spatial_dims": 2, "in_channels": 8, "num_classes": 1},
        {"spatial_dims": 2, "in_channels": 8, "num_classes": 4, "key_channels": 0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        StructureEnhancedAttention(**kwargs)


def test_bad_input_channels():
    net = StructureEnhancedAttention(2, 8, 4)
    with pytest.raises(ValueError, match="8 input channels"):
        net(torch.randn(1, 7, 4, 4))
