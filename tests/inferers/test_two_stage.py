"""Tests for the attention-driven two-stage inferer (localisation on sagittal slices, segmentation, late fusion)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor, decollate_batch, list_data_collate
from monai.inferers import SlidingWindowInferer
from monai.transforms import (
    Activations,
    Activationsd,
    AsDiscrete,
    AsDiscreted,
    Compose,
    Invertd,
    Orientationd,
    Spacingd,
)

from spine_monai.inferers import AttentionFusionInferer, load_localization_weights, sagittal_slice_indices
from spine_monai.networks.nets.sekuboyina import LOGIT_FILL, AttentionLocalisationNet2D, SpineSegUNet2D3D

TINY_ATT = {"features": (2, 2, 4, 4, 4, 4, 4, 4, 4)}
TINY_SEG = {"features": (2, 4, 4, 4, 4), "dropout": 0.0}
# exact geometry: every slice, no smoothing, whole slice (16 x 16 blocks aligned with the volume origin)
EXACT = {"slice_step": 1, "sigma": 0.0, "threshold": 0.0, "localization_roi_size": None}


class BrightBlockLocaliser(nn.Module):
    """Stub localisation net: the fraction of bright (> 0.5) pixels of each 16 x 16 block, i.e. 1 in the bright
    region and 0 elsewhere at block resolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d((x[:, :1] > 0.5).float(), 16)


class SliceValueLocaliser(nn.Module):
    """Stub that records the slices it sees and answers each slice's mean value everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, tuple[int, ...]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += [(round(float(s.mean()), 4), tuple(s.shape[1:])) for s in x]
        return x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand(-1, 1, x.shape[2] // 16, x.shape[3] // 16)


class ExplodingLocaliser(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("stage 1 must not run")


class ZeroLocaliser(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 1, x.shape[2] // 16, x.shape[3] // 16)


def _seg_net(out_channels: int = 1) -> nn.Module:
    return SpineSegUNet2D3D(out_channels=out_channels, **TINY_SEG).eval()


def _bright_box_volume(batch: int = 1) -> torch.Tensor:
    """RAS volume (B, 1, LR 10, AP 48, SI 64), noise below 0.5 with a bright box at LR 3:7, AP 16:32, SI 20:44."""
    x = 0.4 * torch.rand(batch, 1, 10, 48, 64)
    x[:, :, 3:7, 16:32, 20:44] = 1.0
    return x


def _plain(inf: AttentionFusionInferer, x: torch.Tensor, net: nn.Module) -> torch.Tensor:
    return SlidingWindowInferer(inf.roi_size, inf.sw_batch_size, inf.overlap, mode=inf.mode)(x, net)


# ---------------------------------------------------------------- slice selection
@pytest.mark.parametrize(
    "n, step, expected",
    [(20, 8, [1, 9, 17]), (17, 8, [0, 8, 16]), (16, 8, [3, 11]), (5, 8, [2]), (8, 8, [3]), (1, 8, [0]),
     (4, 1, [0, 1, 2, 3])],
)
def test_sagittal_slice_indices(n, step, expected):
    assert sagittal_slice_indices(n, step) == expected
    with pytest.raises(ValueError):
        sagittal_slice_indices(n, 0)


def test_slices_are_taken_along_lr_and_interpolated():
    # LR 20, AP 32, SI 48 (all distinct); slice r holds the value r / 20 so the stub reports which slices it saw
    x = (torch.arange(20, dtype=torch.float32) / 20).view(1, 1, 20, 1, 1).expand(1, 1, 20, 32, 48).contiguous()
    stub = SliceValueLocaliser()
    inf = AttentionFusionInferer(stub, slice_step=8, sigma=0.0, localization_roi_size=None, output="attention")
    att = inf(x, _seg_net())
    assert att.shape == (1, 1, 20, 32, 48)
    assert stub.seen == [(0.05, (32, 48)), (0.45, (32, 48)), (0.85, (32, 48))]  # slices 1, 9, 17 of axis 2
    expected = torch.arange(20, dtype=torch.float32).clamp(1, 17) / 20  # linear between them, constant beyond
    torch.testing.assert_close(att[0, 0, :, 5, 7], expected)
    assert (att == att[:, :, :, :1, :1]).all()  # constant within each sagittal slice
    # fewer slices than slice_step: the middle slice alone
    stub.seen.clear()
    att = inf(x[:, :, :5], _seg_net())
    assert stub.seen == [(0.1, (32, 48))] and torch.allclose(att, torch.full_like(att, 0.1))


# ---------------------------------------------------------------- fused output
@pytest.mark.parametrize("out_channels, batch", [(1, 1), (3, 2)])
def test_output_matches_plain_sliding_window_shape_type_and_meta(out_channels, batch):
    net = _seg_net(out_channels)
    affine = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))
    x = MetaTensor(torch.randn(batch, 1, 6, 40, 52), affine=affine)
    inf = AttentionFusionInferer(AttentionLocalisationNet2D(**TINY_ATT), roi_size=(4, 32, 32),
                                 localization_roi_size=(32, 32), slice_step=2, threshold=-1.0)
    with torch.no_grad():
        fused, plain = inf(x, net), _plain(inf, x, net)
    assert fused.shape == plain.shape == (batch, out_channels, 6, 40, 52)
    assert type(fused) is type(plain) is MetaTensor and fused.dtype == plain.dtype
    torch.testing.assert_close(fused.affine, plain.affine)
    assert torch.equal(fused.as_tensor(), plain.as_tensor())  # threshold below every attention value: all inside


def test_bundle_postprocessing_is_unchanged():
    # preprocessing with an inverse, collate, inferer, decollate, Activationsd + AsDiscreted + Invertd: as a bundle
    pre = Compose([Orientationd(keys="image", axcodes="RAS"), Spacingd(keys="image", pixdim=(1.5, 1.0, 1.0))])
    affine = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))  # LPS-like x axis: Orientationd flips it
    img = MetaTensor(torch.rand(1, 8, 40, 50), affine=affine, meta={"filename_or_obj": "a.nii.gz"})
    batch = list_data_collate([pre({"image": img})])
    inf = AttentionFusionInferer(AttentionLocalisationNet2D(**TINY_ATT), roi_size=(4, 32, 32),
                                 localization_roi_size=(32, 32), threshold=-1.0)
    with torch.no_grad():
        batch["pred"] = inf(batch["image"], _seg_net())
    post = Compose([Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5),
                    Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)])
    out = post(decollate_batch(batch)[0])["pred"]
    assert out.shape == img.shape
    torch.testing.assert_close(out.affine, img.affine.to(out.affine.dtype))


@pytest.mark.parametrize("kwargs", [{"use_fusion": False}, {"use_localization": False}])
def test_without_fusion_equals_monai_sliding_window_exactly(kwargs):
    net = _seg_net()
    x = torch.randn(1, 1, 7, 30, 44)
    loc = None if kwargs.get("use_localization") is False else ExplodingLocaliser()  # stage 1 is never run
    inf = AttentionFusionInferer(loc, roi_size=(4, 16, 32), overlap=0.5, sw_batch_size=3, mode="gaussian", **kwargs)
    with torch.no_grad():
        out = inf(x, net)
        ref = SlidingWindowInferer((4, 16, 32), sw_batch_size=3, overlap=0.5, mode="gaussian")(x, net)
    assert torch.equal(out, ref)


def test_fusion_clears_outside_the_mask_and_keeps_inside():
    net = _seg_net()
    x = _bright_box_volume()
    inf = AttentionFusionInferer(BrightBlockLocaliser(), roi_size=(4, 32, 32), **EXACT)
    with torch.no_grad():
        fused, plain = inf(x, net), _plain(inf, x, net)
    # the mask: LR slices 3:7 (every slice used), in-plane the 16 x 16 blocks touching the box: AP 16:32, SI 16:48
    inside = torch.zeros_like(plain, dtype=torch.bool)
    inside[:, :, 3:7, 16:32, 16:48] = True
    assert torch.equal(fused[inside], plain[inside])  # unchanged logits inside, bit for bit
    assert (fused[~inside] == -LOGIT_FILL).all()
    # fusion on logits: the bundle's Activationsd(sigmoid) + AsDiscreted(threshold=0.5) give the paper's product
    label = AsDiscrete(threshold=0.5)(Activations(sigmoid=True)(fused[0]))
    assert label[~inside[0]].sum() == 0
    assert torch.equal(label[inside[0]], AsDiscrete(threshold=0.5)(torch.sigmoid(plain[0]))[inside[0]])
    # stage-1 mask mode gives exactly this region
    mask = AttentionFusionInferer(BrightBlockLocaliser(), output="mask", **EXACT)(x, net)
    assert mask.dtype == torch.float32 and mask.shape == (1, 1, 10, 48, 64)
    assert torch.equal(mask.bool(), inside)


def test_dilation_and_smoothing_grow_the_mask_as_documented():
    x = _bright_box_volume()
    dilated = AttentionFusionInferer(BrightBlockLocaliser(), output="mask", **{**EXACT, "dilation": (1, 2, 3)})(
        x, _seg_net()
    )
    expected = torch.zeros_like(dilated)
    expected[:, :, 2:8, 14:34, 13:51] = 1.0  # LR 3:7 +- 1, AP 16:32 +- 2, SI 16:48 +- 3
    assert torch.equal(dilated, expected)
    # every 2nd slice (0, 2, 4, 6, 8) and smoothing with sigma (1, 2, 2) voxels: before smoothing the attention is
    # non-zero on LR 3:8 (slices 3 and 7 interpolated with the empty slices 2 and 8), AP 16:32, SI 16:48; the
    # Gaussian (truncated at 4 sigma) widens this by (4, 8, 8) voxels, clipped at the volume border
    inf = AttentionFusionInferer(BrightBlockLocaliser(), output="attention", slice_step=2, sigma=(1.0, 2.0, 2.0),
                                 localization_roi_size=None)
    att = inf(x, _seg_net())
    assert ((att >= 0) & (att <= 1)).all()
    support = torch.zeros_like(att, dtype=torch.bool)
    support[:, :, 0:10, 8:40, 8:56] = True
    assert torch.equal(att > 0, support)
    assert (att[:, :, 4:7, 16:32, 20:44] > 0.1).all()  # the default threshold keeps the box


def test_softmax_output_with_background_channel():
    net = _seg_net(out_channels=3)
    x = _bright_box_volume()
    inf = AttentionFusionInferer(BrightBlockLocaliser(), roi_size=(4, 32, 32), background_channel=0, **EXACT)
    with torch.no_grad():
        fused = inf(x, net)
    labels = fused.argmax(dim=1)
    outside = torch.ones_like(labels, dtype=torch.bool)
    outside[:, 3:7, 16:32, 16:48] = False
    assert (labels[outside] == 0).all()
    torch.testing.assert_close(torch.softmax(fused, 1).sum(1), torch.ones_like(labels, dtype=torch.float32))


def test_small_volume_is_padded():
    # smaller than both the segmentation window (12, 188, 188) and the localisation patch (160, 160)
    x = torch.randn(1, 1, 3, 20, 24)
    inf = AttentionFusionInferer(AttentionLocalisationNet2D(**TINY_ATT), threshold=-1.0, progress=True)
    with torch.no_grad():
        assert inf(x, _seg_net()).shape == (1, 1, 3, 20, 24)


def test_empty_mask_warns_and_returns_background(caplog):
    net = _seg_net()
    x = MetaTensor(_bright_box_volume(batch=2), meta={"filename_or_obj": ["a.nii.gz", "b.nii.gz"]})
    inf = AttentionFusionInferer(ZeroLocaliser(), roi_size=(4, 32, 32), slice_batch_size=3, **{**EXACT, "sigma": 1.0})
    with caplog.at_level(logging.WARNING, logger="spine_monai.inferers.two_stage"), torch.no_grad():
        out = inf(x, net)
    assert "a.nii.gz: stage 1 (localisation) found no spine" in caplog.text and "b.nii.gz" in caplog.text
    assert out.shape == (2, 1, 10, 48, 64) and (out == -LOGIT_FILL).all()
    assert AsDiscrete(threshold=0.5)(Activations(sigmoid=True)(out[0])).sum() == 0


# ---------------------------------------------------------------- checkpoint
@pytest.mark.parametrize("wrap", [None, "model", "network"])
def test_checkpoint_loading_weights_only(tmp_path, wrap):
    trained = AttentionLocalisationNet2D(**TINY_ATT)
    state = trained.state_dict()
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, tmp_path / "loc.pt")
    fresh = AttentionLocalisationNet2D(**TINY_ATT)
    inf = AttentionFusionInferer(fresh, localization_ckpt=tmp_path / "loc.pt")
    assert inf.localization_net is fresh
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_new_weights_on_disk_are_reloaded_with_their_recorded_threshold(tmp_path):
    """A server keeps its inferer while training rewrites localization.pt and its record: the next call uses them."""
    import os

    from spine_monai.bundle.record import write_record

    first = AttentionLocalisationNet2D(**TINY_ATT)
    path = tmp_path / "localization.pt"
    torch.save(first.state_dict(), path)
    net = AttentionLocalisationNet2D(**TINY_ATT)
    inf = AttentionFusionInferer(net, localization_ckpt=path, threshold=0.1, sigma=1.0, localization_roi_size=None)
    assert not inf.reload_if_changed()  # unchanged file: nothing to do
    second = AttentionLocalisationNet2D(**TINY_ATT)
    torch.save(second.state_dict(), path)
    write_record(path, {"attention_threshold": 0.37, "attention_sigma": [1.0, 2.0, 2.0]})
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    inf.attention(torch.rand(1, 1, 4, 32, 32))  # every inference checks the file
    assert inf.threshold == 0.37 and inf.sigma == (1.0, 2.0, 2.0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, second.state_dict()[k]), k


class _NotATensor:
    pass


def test_checkpoint_errors(tmp_path):
    net = AttentionLocalisationNet2D(**TINY_ATT)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_localization_weights(net, tmp_path / "missing.pt")
    torch.save({"model": net.state_dict(), "extra": _NotATensor()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_localization_weights(net, tmp_path / "pickled.pt")
    torch.save(AttentionLocalisationNet2D(features=(4,) * 9).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_localization_weights(net, tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state dict"):
        load_localization_weights(net, tmp_path / "list.pt")


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs",
    [
        {"output": "probabilities"},
        {"localization_net": None},
        {"localization_net": None, "use_localization": False, "output": "mask"},
        {"localization_net": None, "use_localization": False, "localization_ckpt": "x.pt"},
        {"localization_roi_size": (160, 150)},
        {"localization_roi_size": (160,)},
        {"localization_overlap": 1.0},
        {"slice_step": 0},
        {"slice_batch_size": 1.5},
        {"sigma": -1.0},
        {"sigma": (1.0, 2.0)},
        {"dilation": 0.5},
        {"logit_fill": 0.0},
    ],
)
def test_bad_args(kwargs):
    with pytest.raises(ValueError):
        AttentionFusionInferer(**{"localization_net": BrightBlockLocaliser(), **kwargs})


def test_bad_inputs():
    inf = AttentionFusionInferer(nn.Identity(), **EXACT)  # full-resolution "map": not the 1/16 of a patch
    with pytest.raises(ValueError, match="1/16"):
        inf(torch.rand(1, 1, 2, 32, 32), _seg_net())
    with pytest.raises(ValueError, match="RAS volume"):
        inf(torch.rand(1, 1, 32, 32), _seg_net())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_input_device():
    x = _bright_box_volume().cuda()
    loc = AttentionLocalisationNet2D(**TINY_ATT)  # on the CPU: moved to the input's device
    inf = AttentionFusionInferer(loc, roi_size=(4, 32, 32), localization_roi_size=(32, 32), threshold=-1.0)
    with torch.no_grad(), torch.autocast("cuda"):
        out = inf(x, _seg_net().cuda())
    assert out.device == x.device and next(loc.parameters()).device == x.device
    with torch.no_grad():
        cpu = AttentionFusionInferer(loc.cpu(), roi_size=(4, 32, 32), localization_roi_size=(32, 32), threshold=-1.0)
        torch.testing.assert_close(out.float().cpu(), cpu(x.cpu(), _seg_net().cpu()), atol=0.05, rtol=0.05)
