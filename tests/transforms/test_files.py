"""File checks before loading: corrupt gzip (CRC), truncated data, complex data, broken header affines."""

from __future__ import annotations

import re

import numpy as np
import pytest
from monai.transforms import Compose, LoadImaged

from spine_monai.errors import InputError
from spine_monai.transforms import ValidateFiled, ValidateImaged
from spine_monai.transforms.files import check_image_file


def _arr(dtype, shape=(12, 20, 24)):
    return (np.random.default_rng(0).random(shape) * 1000).astype(dtype)


def _pipeline(path):
    return Compose([ValidateFiled(keys="image"), LoadImaged(keys="image", ensure_channel_first=True, image_only=True),
                    ValidateImaged(keys="image")])({"image": path})


def _input_error(excinfo) -> InputError:
    err = excinfo.value
    while err is not None and not isinstance(err, InputError):
        err = err.__cause__
    assert isinstance(err, InputError), excinfo.value
    return err


def test_good_file_passes(tmp_path, nifti):
    out = _pipeline(nifti(tmp_path / "ok.nii.gz", _arr(np.int16)))
    assert out["image"].shape == (1, 12, 20, 24)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("offset, what", [(-6, "CRC"), (-40, "deflate")])
def test_corrupt_gzip_refused(tmp_path, nifti, flip_byte, dtype, offset, what):
    path = flip_byte(nifti(tmp_path / "scan.nii.gz", _arr(dtype)), offset)
    with pytest.raises(Exception) as excinfo:
        _pipeline(path)
    msg = str(_input_error(excinfo))
    assert msg.startswith(f"{path}: corrupt gzip data") and "\n" not in msg


def test_corrupt_gzip_loads_silently_without_the_check(tmp_path, nifti, flip_byte):
    """The reason for the check: MONAI/nibabel read a CRC-damaged int16 file without any error."""
    path = flip_byte(nifti(tmp_path / "scan.nii.gz", _arr(np.int16)), -6)
    img = LoadImaged(keys="image", image_only=True)({"image": path})["image"]
    assert img.shape == (12, 20, 24)


def test_truncated_gzip_and_nii(tmp_path, nifti):
    gz = nifti(tmp_path / "cut.nii.gz", _arr(np.float32))
    data = open(gz, "rb").read()
    open(gz, "wb").write(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt gzip data"):
        check_image_file(gz)
    nii = nifti(tmp_path / "cut.nii", _arr(np.float32))
    data = open(nii, "rb").read()
    open(nii, "wb").write(data[:-100])
    with pytest.raises(InputError, match=r"cut\.nii: truncated image data"):
        check_image_file(nii)


def test_complex_refused(tmp_path, nifti):
    arr = (_arr(np.float32) + 1j * _arr(np.float32)).astype(np.complex64)
    path = nifti(tmp_path / "cplx.nii.gz", arr)
    with pytest.raises(Exception) as excinfo:
        _pipeline(path)
    assert "complex-valued image (complex64)" in str(_input_error(excinfo))


@pytest.mark.parametrize(
    "affine, match",
    [
        (np.diag([np.nan, 1.0, 1.0, 1.0]), "NaN/Inf"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "singular voxel-to-world affine \\(rank 2 of 3"),
        (np.array([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]), "singular"),
        (np.diag([44000.0, 1.0, 1.0, 1.0]), "implausible voxel spacing \\(44000"),
    ],
    ids=["nan", "zero-column", "rank-deficient", "44000mm"],
)
def test_bad_header_affine_refused(tmp_path, nifti, affine, match):
    """MONAI replaces such a sform silently (correct_nifti_header_if_necessary), so the header is checked first."""
    path = nifti(tmp_path / "geom.nii.gz", _arr(np.float32), affine, raw_sform=True)
    with pytest.raises(Exception) as excinfo:
        _pipeline(path)
    msg = str(_input_error(excinfo))
    assert msg.startswith(str(path)) and re.search(match, msg)


def test_non_path_entries_are_skipped():
    import torch

    data = {"image": torch.rand(1, 4, 4, 4)}
    assert ValidateFiled(keys="image")(data)["image"] is data["image"]
