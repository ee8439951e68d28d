"""Contract tests for SAU-Net and its parts (Dense U-Net, inter-slice attention, slice-wise wrapper)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from spine_monai.networks.blocks.inter_slice_attention import InterSliceAttention
from spine_monai.networks.nets.dense_unet import DenseUNet2D
from spine_monai.networks.nets.saunet import SAUNet
from spine_monai.networks.nets.slicewise import SliceWiseNet

SMALL = {"features": (4, 8, 16), "slice_chunk": 3}


def _grads_ok(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"


class TestInterSliceAttention:
    def test_matches_paper_equation(self):
        """F_i' = F_i + F_i*sig(conv_prev(F_{i-1})) + F_i*sig(conv_next(F_{i+1})), one neighbour at the ends."""
        isa = InterSliceAttention(3)
        x = torch.randn(2, 3, 5, 4, 6)
        y = isa(x, slice_dim=2)

        def mask(conv, f):
            return torch.sigmoid(conv(f.unsqueeze(2))).squeeze(2)

        for i in range(5):
            f = x[:, :, i]
            expected = f.clone()
            if i > 0:
                expected = expected + f * mask(isa.conv_prev, x[:, :, i - 1])
            if i < 4:
                expected = expected + f * mask(isa.conv_next, x[:, :, i + 1])
            torch.testing.assert_close(y[:, :, i], expected)

    def test_masks_come_from_neighbours_not_the_slice(self):
        isa = InterSliceAttention(2)
        x = torch.randn(1, 2, 3, 5, 5)
        x2 = x.clone()
        x2[:, :, 0] = 0.0  # changing slice 0 must not change slice 2, which is not its neighbour
        torch.testing.assert_close(isa(x)[:, :, 2], isa(x2)[:, :, 2])
        assert not torch.allclose(isa(x)[:, :, 1], isa(x2)[:, :, 1])

    @pytest.mark.parametrize("slice_dim", [2, 3, 4])
    def test_slice_dim(self, slice_dim):
        isa = InterSliceAttention(2)
        x = torch.randn(1, 2, 4, 5, 6)
        ref = isa(x.movedim(slice_dim, 2), slice_dim=2).movedim(2, slice_dim)
        torch.testing.assert_close(isa(x, slice_dim=slice_dim), ref)

    def test_single_slice_is_identity(self):
        isa = InterSliceAttention(2)
        x = torch.randn(1, 2, 1, 5, 6)
        torch.testing.assert_close(isa(x), x)

    @pytest.mark.parametrize("kwargs", [{"channels": 0}])
    def test_bad_args(self, kwargs):
        with pytest.raises(ValueError):
            InterSliceAttention(**kwargs)

    def test_bad_input(self):
        isa = InterSliceAttention(2)
        with pytest.raises(ValueError, match="5D"):
            isa(torch.randn(1, 2, 4, 4))
        with pytest.raises(ValueError, match="slice_dim"):
            isa(torch.randn(1, 2, 4, 4, 4), slice_dim=1)


class TestDenseUNet2D:
    @pytest.mark.parametrize("shape", [(2, 1, 32, 32), (1, 1, 33, 47), (1, 1, 5, 7)])
    def test_shapes(self, shape):
        net = DenseUNet2D(1, 3, features=(4, 8, 16))
        assert net(torch.randn(shape)).shape == (shape[0], 3, *shape[2:])

    def test_features_without_head(self):
        net = DenseUNet2D(2, None, features=(6, 8))
        assert net(torch.randn(1, 2, 9, 9)).shape == (1, 6, 9, 9)

    def test_dense_connections(self):
        """Each dense block's output concatenates its input and every unit's output."""
        net = DenseUNet2D(1, None, features=(4, 8), growth_rate=3, dense_layers=2)
        dense = net.down[0][0]
        assert dense(torch.randn(1, 1, 8, 8)).shape[1] == 1 + 2 * 3

    @pytest.mark.parametrize("kwargs", [{"features": (4,)}, {"in_channels": 0}, {"growth_rate": (2, 2, 2)},
                                        {"dense_layers": 0}, {"out_channels": 0}])
    def test_bad_args(self, kwargs):
        with pytest.raises(ValueError):
            DenseUNet2D(**{"features": (4, 8), **kwargs})


class TestSAUNet:
    @pytest.mark.parametrize("shape", [(1, 1, 7, 33, 47), (2, 1, 1, 16, 16), (1, 1, 4, 21, 19), (1, 1, 12, 8, 8)])
    @pytest.mark.parametrize("use_isa", [True, False])
    def test_shapes_any_slices_odd_sizes(self, shape, use_isa):
        net = SAUNet(in_channels=1, out_channels=2, use_isa=use_isa, **SMALL).eval()
        with torch.no_grad():
            assert net(torch.randn(shape)).shape == (shape[0], 2, *shape[2:])

    @pytest.mark.parametrize("slice_dim", [0, 1, 2])
    def test_slice_dim_is_respected(self, slice_dim):
        net = SAUNet(slice_dim=slice_dim, **SMALL).eval()
        x = torch.randn(1, 1, 5, 6, 7)
        ref = SAUNet(slice_dim=0, **SMALL).eval()
        ref.load_state_dict(net.state_dict())
        with torch.no_grad():
            expected = ref(x.movedim(2 + slice_dim, 2)).movedim(2, 2 + slice_dim)
            torch.testing.assert_close(net(x), expected)

    @pytest.mark.parametrize("chunk", [1, 2, 3, 4, 100])
    def test_chunked_equals_unchunked(self, chunk):
        net = SAUNet(**{**SMALL, "slice_chunk": 100}).eval()
        x = torch.randn(1, 1, 9, 17, 15)
        with torch.no_grad():
            full = net(x)
            net.slice_chunk = chunk
            torch.testing.assert_close(net(x), full, atol=1e-5, rtol=1e-4)

    def test_isa_changes_output_and_slices_interact(self):
        net = SAUNet(**SMALL).eval()
        x = torch.randn(1, 1, 5, 16, 16)
        x2 = x.clone()
        x2[:, :, 0] += 1.0
        with torch.no_grad():
            y, y2 = net(x), net(x2)
        assert not torch.allclose(y[:, :, 1], y2[:, :, 1])  # neighbour of slice 0 changes through ISA
        torch.testing.assert_close(y[:, :, 3], y2[:, :, 3])  # slices 2 apart do not interact (one ISA step)
        no_isa = SAUNet(use_isa=False, **SMALL).eval()
        with torch.no_grad():
            torch.testing.assert_close(no_isa(x)[:, :, 1], no_isa(x2)[:, :, 1])

    def test_backward_every_parameter(self):
        net = SAUNet(**SMALL).train()
        out = net(torch.randn(2, 1, 4, 16, 16))
        out.mean().backward()
        _grads_ok(net)
        assert torch.isfinite(out).all()

    def test_torchscript_round_trip(self, tmp_path):
        net = SAUNet(**SMALL).eval()
        x = torch.randn(1, 1, 7, 20, 18)
        scripted = torch.jit.script(net)
        path = tmp_path / "saunet.ts"
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x))

    @pytest.mark.parametrize("kwargs", [{"spatial_dims": 2}, {"slice_dim": 3}, {"slice_chunk": 0},
                                        {"in_channels": 0}, {"features": (4,)}])
    def test_bad_args(self, kwargs):
        with pytest.raises(ValueError):
            SAUNet(**{**SMALL, **kwargs})

    @pytest.mark.parametrize("shape", [(1, 1, 16, 16), (1, 2, 4, 16, 16), (1, 1, 2, 4, 16, 16)])
    def test_bad_input(self, shape):
        with pytest.raises(ValueError):
            SAUNet(**SMALL)(torch.randn(shape))

    def test_default_configuration_size(self):
        """The bundle's default SAU-Net stays light (the efficiency claim of the paper)."""
        n = sum(p.numel() for p in SAUNet().parameters())
        assert 1_000_000 < n < 2_000_000


class TestSliceWiseNet:
    def test_basic_unet_per_slice(self):
        inner = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
        net = SliceWiseNet(inner, slice_dim=0, slice_chunk=2).eval()
        x = torch.randn(1, 1, 5, 19, 23)
        with torch.no_grad():
            y = net(x)
            assert y.shape == (1, 2, 5, 19, 23)
            x2 = x.clone()
            x2[:, :, 0] += 1
            torch.testing.assert_close(net(x2)[:, :, 1:], y[:, :, 1:])  # slices are independent

    def test_torchscript(self):
        inner = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4), norm="batch")
        net = SliceWiseNet(inner).eval()
        x = torch.randn(1, 1, 3, 20, 18)
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(net)(x), net(x))

    @pytest.mark.parametrize("kwargs", [{"slice_dim": -1}, {"slice_chunk": 0}, {"pad_multiple": 0}])
    def test_bad_args(self, kwargs):
        with pytest.raises(ValueError):
            SliceWiseNet(torch.nn.Identity(), **kwargs)
