"""Tests of the review bundle's slice view (``SagittalSlicesd``) and TorchIO augmentation (``RandTorchIOSliced``)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged
from PIL import Image

from spine_monai.errors import InputError
from spine_monai.transforms.slices import TORCHIO_TRANSFORMS, RandTorchIOSliced, SagittalSlicesd


def _ramp_volume(shape=(6, 20, 30)) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    return 100 * x + 10 * y + z


def _pipeline(size: int) -> Compose:
    return Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                    SagittalSlicesd("image", size=size)])


def test_las_volume_becomes_ras_slices_and_inverts_to_its_grid(tmp_path):
    """A LAS volume (x flipped): after the view axis 0 runs left -> right, slices are resized, the inverse restores
    the input grid exactly for nearest-neighbour labels."""
    arr = _ramp_volume()
    aff = np.diag([-1.5, 0.8, 0.8, 1.0])
    aff[:3, 3] = [10.0, -5.0, 3.0]
    nib.save(nib.Nifti1Image(arr, aff), str(tmp_path / "las.nii.gz"))
    pre = _pipeline(40)
    d = pre({"image": str(tmp_path / "las.nii.gz")})
    img = d["image"]
    assert tuple(img.shape) == (1, 6, 40, 40)
    # RAS: the first slice is the original's last (x was flipped)
    first = img[0, 0].numpy()
    assert first.min() >= 500 - 1e-3  # slice x=5 holds values 500..
    # a "prediction" (the image itself, as channel-first) inverts to the input grid
    d["pred"] = img.clone()
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(d)
    assert tuple(inv["pred"].shape) == (1, 6, 20, 30)
    np.testing.assert_allclose(np.asarray(inv["pred"].affine), aff, atol=1e-5)


def test_png_follows_the_display_convention(tmp_path):
    """A 2D picture (anterior left, superior up) is flipped on both axes to a RAS slice and back."""
    pic = np.zeros((40, 30), np.uint8)  # rows x columns
    pic[:10, :8] = 200  # top-left: superior-anterior corner
    pic[20:, 20:] = 50
    Image.fromarray(pic).save(tmp_path / "slice.png")
    pre = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True),
                   SagittalSlicesd("image", size=30)])
    d = pre({"image": str(tmp_path / "slice.png")})
    img = d["image"]
    assert tuple(img.shape) == (1, 30, 30)
    # after the flips the bright superior-anterior corner is at high A (axis 0) and high S (axis 1)
    assert float(img[0, -3:, -3:].mean()) > 150 and float(img[0, :3, :3].mean()) < 100
    d["pred"] = img.clone()
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(d)
    back = inv["pred"][0].numpy().T  # (X, Y) = (columns, rows) -> rows x columns
    assert back.shape == pic.shape
    assert back[2, 2] > 150 and back[-2, -2] < 100


def test_rgb_png_is_made_grey(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = np.arange(32)[None, :] * 8
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    d = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True),
                 SagittalSlicesd("image", size=32)])({"image": str(tmp_path / "rgb.png")})
    assert tuple(d["image"].shape) == (1, 32, 32)


def test_single_sagittal_slice_is_accepted_single_axial_slice_refused(tmp_path):
    sag = _ramp_volume((1, 20, 30))
    nib.save(nib.Nifti1Image(sag, np.eye(4)), str(tmp_path / "sag.nii.gz"))
    d = _pipeline(16)({"image": str(tmp_path / "sag.nii.gz")})
    assert tuple(d["image"].shape) == (1, 1, 16, 16)
    axial = _ramp_volume((20, 30, 1))
    nib.save(nib.Nifti1Image(axial, np.eye(4)), str(tmp_path / "axial.nii.gz"))
    loaded = LoadImaged("image", image_only=True, ensure_channel_first=True)({"image": str(tmp_path / "axial.nii.gz")})
    with pytest.raises(InputError, match=r"axial\.nii\.gz.*single axial slice"):
        SagittalSlicesd("image", size=16)(loaded)


@pytest.mark.parametrize("bad, match", [("nan", "NaN"), ("constant", "constant"), ("small", "too small")])
def test_bad_2d_images_are_refused_with_the_file_name(tmp_path, bad, match):
    arr = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    if bad == "nan":
        arr[3, 3] = np.nan
    elif bad == "constant":
        arr[:] = 7
    else:
        arr = arr[:8, :8]
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"{bad}.nii.gz"))
    loaded = LoadImaged("image", image_only=True, ensure_channel_first=True)({"image": str(tmp_path / f"{bad}.nii.gz")})
    with pytest.raises(InputError, match=rf"{bad}\.nii\.gz.*{match}"):
        SagittalSlicesd("image", size=32)(loaded)


def test_label_follows_the_image_with_nearest_interpolation():
    img = MetaTensor(torch.rand(1, 3, 10, 12), affine=torch.eye(4))
    lab = MetaTensor(torch.randint(0, 20, (1, 3, 10, 12)).float(), affine=torch.eye(4))
    d = SagittalSlicesd(["image", "label"], size=24, mode=["bilinear", "nearest"])({"image": img, "label": lab})
    assert tuple(d["label"].shape) == (1, 3, 24, 24)
    assert set(torch.unique(d["label"]).tolist()) <= set(torch.unique(lab).tolist())


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        SagittalSlicesd("image", size=0)
    with pytest.raises(ValueError, match="mode"):
        SagittalSlicesd(["image", "label"], size=8, mode=["bilinear"])
    with pytest.raises(ValueError, match="unknown TorchIO"):
        RandTorchIOSliced("image", transforms=["elastic"])
    with pytest.raises(ValueError, match="prob"):
        RandTorchIOSliced("image", prob=1.5)


def test_torchio_augmentation_changes_images_only_and_keeps_meta():
    torch.manual_seed(0)
    img = MetaTensor(torch.rand(1, 32, 32), affine=torch.eye(4))
    lab = torch.randint(0, 3, (1, 32, 32)).float()
    t = RandTorchIOSliced("image", prob=1.0)
    out = t({"image": img, "label": lab})
    assert tuple(out["image"].shape) == (1, 32, 32) and isinstance(out["image"], MetaTensor)
    assert not torch.allclose(out["image"], img)
    assert out["label"] is lab
    # each of the four alone changes the image
    for name in TORCHIO_TRANSFORMS:
        one = RandTorchIOSliced("image", prob=1.0, transforms=[name])({"image": img})["image"]
        assert not torch.allclose(one, img), name
    # probability 0: identity
    same = RandTorchIOSliced("image", prob=0.0)({"image": img})["image"]
    torch.testing.assert_close(same.as_tensor(), img.as_tensor())
    with pytest.raises(ValueError, match="2D slices"):
        t({"image": torch.rand(1, 4, 8, 8)})
