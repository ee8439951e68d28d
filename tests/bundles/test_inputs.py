"""Inference inputs: a file, a folder of images, a phantom dataset folder, a DICOM series folder."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from spine_monai.bundle.inputs import list_images


def _img(path):
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), str(path))
    return str(path)


def test_file_folder_and_subfolders(tmp_path):
    a = _img(tmp_path / "a.nii.gz")
    _img(tmp_path / "a_label.nii.gz")
    assert list_images(a) == [{"image": a}]
    assert list_images(tmp_path) == [{"image": a}]  # labels are skipped
    (tmp_path / "imagesTs").mkdir()
    b = _img(tmp_path / "imagesTs" / "b.nii.gz")
    assert list_images(tmp_path) == [{"image": b}]


def test_dicom_folder(tmp_path):
    (tmp_path / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    assert list_images(tmp_path) == [{"image": str(tmp_path)}]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        list_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images found"):
        list_images(tmp_path)
