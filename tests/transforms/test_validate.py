"""Bad input gets one clear error naming the file and the problem; outputs are written atomically."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, LoadImaged, Spacingd

from spine_monai.transforms import AtomicNibabelWriter, InputError, SafeSpacingd, ValidateImaged


def _write(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _load_validate(data):
    keys = [k for k in ("image", "label") if k in data]
    return Compose([LoadImaged(keys=keys, ensure_channel_first=True, image_only=True),
                    ValidateImaged(keys="image", label_key="label")])(data)


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    return _write(tmp_path / "good.nii.gz", rng.random((6, 10, 12)).astype(np.float32))


def test_good_volume_passes(good, tmp_path):
    lab = _write(tmp_path / "lab.nii.gz", np.zeros((6, 10, 12), np.uint8))
    out = _load_validate({"image": good, "label": lab})
    assert out["image"].shape == (1, 6, 10, 12)


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.random.default_rng(0).random((10, 12)).astype(np.float32), "2D image"),
        (np.random.default_rng(0).random((6, 10, 12, 3)).astype(np.float32), "4D image"),
        (np.full((6, 10, 12), 7.0, np.float32), "constant"),
        (np.where(np.eye(12)[None, :10, :] > 0, np.nan, 1.0).repeat(6, 0).astype(np.float32), "NaN"),
    ],
    ids=["2d", "4d", "constant", "nan"],
)
def test_bad_images(tmp_path, arr, match):
    path = _write(tmp_path / "bad.nii.gz", arr)
    with pytest.raises(Exception) as err:
        _load_validate({"image": path})
    cause = err.value if isinstance(err.value, InputError) else err.value.__cause__
    assert isinstance(cause, InputError)
    assert match in str(cause) and "bad.nii.gz" in str(cause)


def test_label_shape_mismatch(good, tmp_path):
    lab = _write(tmp_path / "lab.nii.gz", np.zeros((6, 10, 11), np.uint8))
    with pytest.raises(Exception) as err:
        _load_validate({"image": good, "label": lab})
    msg = str(err.value.__cause__)
    assert "lab.nii.gz" in msg and "good.nii.gz" in msg and "shape" in msg


def test_label_affine_mismatch(good, tmp_path):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    lab = _write(tmp_path / "lab.nii.gz", np.zeros((6, 10, 12), np.uint8), aff)
    with pytest.raises(Exception) as err:
        _load_validate({"image": good, "label": lab})
    assert "affine" in str(err.value.__cause__) and "lab.nii.gz" in str(err.value.__cause__)


def test_in_memory_tensor_message():
    with pytest.raises(InputError, match="expected a 3D volume"):
        ValidateImaged(keys="image")({"image": torch.rand(1, 4, 4)})


def test_safe_spacingd_ignores_string_entries(good):
    data = LoadImaged(keys="image", ensure_channel_first=True, image_only=True)({"image": good})
    expected = Spacingd(keys="image", pixdim=(2.0, 2.0, 2.0))(dict(data))["image"]
    data["image_path"] = good  # what MONAI Label puts into the dict
    with pytest.raises(AttributeError):  # the monai 1.6.1 breakage SafeSpacingd exists for
        Spacingd(keys="image", pixdim=(2.0, 2.0, 2.0))(dict(data))
    out = SafeSpacingd(keys="image", pixdim=(2.0, 2.0, 2.0))(data)
    assert out["image_path"] == good
    assert out["image"].shape == expected.shape
    torch.testing.assert_close(out["image"].as_tensor(), expected.as_tensor())


def test_atomic_writer_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out" / "seg.nii.gz"
    writer = AtomicNibabelWriter()
    writer.set_data_array(torch.zeros(1, 4, 4, 4), channel_dim=0)
    writer.set_metadata({"affine": np.eye(4)})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError):
        writer.write(str(target))
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_atomic_writer_writes(tmp_path):
    target = tmp_path / "seg.nii.gz"
    writer = AtomicNibabelWriter()
    writer.set_data_array(torch.ones(1, 4, 5, 6), channel_dim=0)
    writer.set_metadata({"affine": np.diag([2.0, 2.0, 3.0, 1.0])})
    writer.write(str(target))
    img = nib.load(str(target))
    assert img.shape == (4, 5, 6) and np.allclose(img.header.get_zooms(), (2, 2, 3))
    assert sorted(os.listdir(tmp_path)) == ["seg.nii.gz"]


def test_single_slice_is_refused_when_a_volume_is_needed():
    """The CT bundle sets ``min_size=4``: a one-slice scan is refused as a single slice, naming the file."""
    from monai.data import MetaTensor

    img = MetaTensor(torch.rand(1, 64, 64, 1) * 1000, meta={"filename_or_obj": "/x/one_slice.nii.gz"})
    with pytest.raises(InputError, match=r"one_slice\.nii\.gz: a single slice .* at least 4 voxels"):
        ValidateImaged(keys="image", min_size=4)({"image": img})
    with pytest.raises(InputError, match="too small image"):
        ValidateImaged(keys="image", min_size=4)({"image": MetaTensor(torch.rand(1, 64, 3, 64))})
    ValidateImaged(keys="image")({"image": img})  # default: any extent >= 1
