"""DICOM series checks: a slice without pixel data, missing slices, mixed orientations; ``read_scan`` refuses them."""

from __future__ import annotations

import pytest
from monai.transforms import LoadImage

from spine_monai.errors import InputError
from spine_monai.segment import read_scan
from spine_monai.transforms.dicom import check_dicom_series


@pytest.mark.slow  # ITK import
def test_read_scan_complete_series(tmp_path, dicom_series):
    img = read_scan(dicom_series(tmp_path / "ok"))
    assert img.shape == (1, 12, 10, 8)


@pytest.mark.slow  # ITK import
def test_read_scan_refuses_missing_slice(tmp_path, dicom_series):
    folder = dicom_series(tmp_path / "gap", drop=(4,))
    img = LoadImage(image_only=True, ensure_channel_first=True)(str(folder))  # what happened before: 7 slices
    assert img.shape[-1] == 7 and float(img.pixdim[-1]) != 2.5
    with pytest.raises(InputError, match="missing slices"):
        read_scan(folder)


def test_complete_series_passes(tmp_path, dicom_series):
    check_dicom_series(dicom_series(tmp_path / "ok"))


def test_missing_slice_refused(tmp_path, dicom_series):
    folder = dicom_series(tmp_path / "gap", drop=(4,))
    with pytest.raises(InputError) as err:
        check_dicom_series(folder)
    msg = str(err.value)
    assert msg.startswith(f"{folder}: missing slices") and "expected a spacing of 2.5 mm" in msg
    assert "gaps of 5 mm" in msg and "IM0003.dcm" in msg and "IM0005.dcm" in msg and "\n" not in msg


def test_slice_without_pixel_data_refused(tmp_path, dicom_series):
    folder = dicom_series(tmp_path / "nopix", no_pixels=(3,))
    with pytest.raises(InputError, match=r"slice IM0003\.dcm has no pixel data"):
        check_dicom_series(folder)


def test_mixed_orientations_refused(tmp_path, dicom_series):
    folder = dicom_series(tmp_path / "tilt", tilt=(2,))
    with pytest.raises(InputError, match="different orientations"):
        check_dicom_series(folder)


def test_irregular_spacing_within_tolerance_passes(tmp_path, dicom_series):
    folder = dicom_series(tmp_path / "ok", spacing=2.5)
    check_dicom_series(folder, rtol=0.05)
    dicom_series(tmp_path / "gap", drop=(4,))
    with pytest.raises(InputError):
        check_dicom_series(tmp_path / "gap", rtol=0.5)
    check_dicom_series(tmp_path / "gap", rtol=1.5)  # a gap of 2 x the median is within 150 %
