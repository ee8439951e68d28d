"""Geometry checks: NaN/singular affines, implausible spacing, complex images, resampled size before resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Spacing

from spine_monai.errors import InputError
from spine_monai.transforms import SafeSpacingd, ValidateImaged
from spine_monai.transforms.geometry import check_affine, resampled_shape


def _meta(shape=(1, 6, 8, 10), affine=None, dtype=torch.float32, name="scan.nii.gz"):
    t = torch.rand(shape).to(dtype) if not dtype.is_complex else torch.complex(torch.rand(shape), torch.rand(shape))
    img = MetaTensor(t, affine=torch.as_tensor(np.eye(4) if affine is None else affine, dtype=torch.float64))
    img.meta["filename_or_obj"] = name
    return img


@pytest.mark.parametrize(
    "affine, match",
    [
        (np.diag([np.inf, 1.0, 1.0, 1.0]), r"NaN/Inf entries \(at \[0, 0\]\)"),
        (np.diag([1.0, 0.0, 1.0, 1.0]), r"singular voxel-to-world affine \(rank 2 of 3"),
        (np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "rank 2 of 3"),
        (np.diag([44000.0, 1.0, 1.0, 1.0]), r"implausible voxel spacing \(44000, 1, 1\) mm"),
        (np.diag([1e-5, 1.0, 1.0, 1.0]), "implausible voxel spacing"),
    ],
    ids=["inf", "zero-axis", "rank-deficient", "44000mm", "1e-5mm"],
)
def test_validate_imaged_refuses_bad_geometry(affine, match):
    with pytest.raises(InputError, match=match) as err:
        ValidateImaged(keys="image")({"image": _meta(affine=affine)})
    assert str(err.value).startswith("scan.nii.gz: ")


def test_good_oblique_affine_passes():
    c, s = np.cos(0.3), np.sin(0.3)
    aff = np.array([[4 * c, -0.8 * s, 0, 1], [4 * s, 0.8 * c, 0, 2], [0, 0, 0.8, 3], [0, 0, 0, 1]])
    check_affine(aff, "x")
    assert ValidateImaged(keys="image")({"image": _meta(affine=aff)})["image"].shape == (1, 6, 8, 10)


def test_complex_tensor_refused():
    with pytest.raises(InputError, match=r"scan.nii.gz: complex-valued image \(complex64\)"):
        ValidateImaged(keys="image")({"image": _meta(dtype=torch.complex64)})


@pytest.mark.parametrize(
    "shape, affine, pixdim",
    [
        ((15, 37, 41), np.diag([4.4, 0.8, 0.8, 1]), (4.0, 1.0, 1.0)),
        ((9, 20, 20), np.diag([-3.0, 0.5, 1.5, 1]), (4.0, 1.0, 1.0)),
        ((9, 20, 20), np.diag([3.0, 0.5, 1.5, 1]), (-1, 2.0)),
        ((7, 11, 13), np.array([[0, 0, 2.0, 5], [0, 1.3, 0, 0], [0.7, 0, 0, 1], [0, 0, 0, 1]]), (1.0,)),
    ],
)
def test_resampled_shape_matches_spacing(shape, affine, pixdim):
    img = MetaTensor(torch.zeros(1, *shape), affine=torch.as_tensor(affine, dtype=torch.float64))
    assert resampled_shape(shape, affine, pixdim) == tuple(Spacing(pixdim=pixdim)(img).shape[1:])


def test_safe_spacingd_refuses_absurd_output_before_allocating(monkeypatch):
    img = _meta(shape=(1, 4, 512, 512), affine=np.diag([4400.0, 1.0, 1.0, 1.0]))  # 3 gaps of 4400 mm at 1 mm
    called = []
    monkeypatch.setattr(Spacing, "__call__", lambda *a, **k: called.append(1))
    with pytest.raises(InputError) as err:
        SafeSpacingd(keys="image", pixdim=(1.0, 1.0, 1.0))({"image": img})
    msg = str(err.value)
    assert msg.startswith("scan.nii.gz: resampling 4 x 512 x 512 voxels of (4400, 1, 1) mm to pixdim (1, 1, 1) mm")
    assert "13201 x 512 x 512" in msg and f"max_voxels={2**28}" in msg
    assert called == []


def test_safe_spacingd_limit_argument():
    img = _meta(shape=(1, 8, 8, 8))
    out = SafeSpacingd(keys="image", pixdim=(1.0, 1.0, 1.0), max_voxels=512)({"image": img})
    assert out["image"].shape == (1, 8, 8, 8)
    with pytest.raises(InputError, match="more than max_voxels=511"):
        SafeSpacingd(keys="image", pixdim=(1.0, 1.0, 1.0), max_voxels=511)({"image": img})
    assert SafeSpacingd(keys="image", pixdim=(0.5, 0.5, 0.5), max_voxels=None)({"image": img})["image"].shape[1] == 15
    with pytest.raises(ValueError, match="max_voxels=0"):
        SafeSpacingd(keys="image", pixdim=1.0, max_voxels=0)


@pytest.mark.parametrize(
    "shape, spacing, pixdim",
    [((512, 512, 200), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)), ((15, 960, 960), (4.0, 0.3, 0.3), (4.0, 1.0, 1.0)),
     ((15, 960, 960), (4.0, 1.0, 1.0), (4.0, 1.0, 1.0))],
    ids=["ct-512x512x200-1mm", "mri-960x960x15-0.3mm", "mri-960x960x15-1mm"],
)
def test_default_limit_passes_normal_scans(shape, spacing, pixdim):
    n = np.prod(resampled_shape(shape, np.diag([*spacing, 1.0]), pixdim))
    assert n <= SafeSpacingd(keys="image", pixdim=pixdim).max_voxels == 2**28
