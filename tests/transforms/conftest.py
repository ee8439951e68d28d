"""Writers of small bad inputs: NIfTI files with a raw header affine, corrupted gzip data, DICOM series."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_nifti(path: Path, arr: np.ndarray, affine: np.ndarray | None = None, raw_sform: bool = False) -> str:
    """Save ``arr``; with ``raw_sform`` the affine goes into the header's sform as it is (NaN, singular...),
    bypassing nibabel's decomposition, with qform_code 0 and unit pixdim."""
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    if raw_sform:
        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(arr.dtype)
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[0], affine[1], affine[2]
        hdr["sform_code"], hdr["qform_code"] = 1, 0
        img = nib.Nifti1Image(arr, None, hdr)
    else:
        img = nib.Nifti1Image(arr, affine)
    nib.save(img, str(path))
    return str(path)


def corrupt(path: str | Path, offset: int) -> str:
    """Flip the byte at ``offset`` (negative: from the end) of a file."""
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    return str(path)


def write_dicom_series(folder: Path, n: int = 8, rows: int = 10, cols: int = 12, spacing: float = 2.5,
                       drop: Sequence[int] = (), no_pixels: Sequence[int] = (), tilt: Sequence[int] = (),
                       seed: int = 0) -> Path:
    """A sagittal MR series of ``n`` slices (positions ``i * spacing`` along x), minus ``drop``; slices in
    ``no_pixels`` lack PixelData, slices in ``tilt`` have another orientation."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for i in range(n):
        if i in drop:
            continue
        meta = FileMetaDataset()
        sop = generate_uid()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.is_little_endian, ds.is_implicit_VR = meta, True, False
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, sop, "MR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.SeriesNumber, ds.InstanceNumber = "Phantom", "0", 1, i + 1
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0.2, -0.98] if i in tilt else [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [i * spacing, 0, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], spacing
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if i not in no_pixels:
            ds.PixelData = (rng.random((rows, cols)) * 1000).astype(np.int16).tobytes()
        ds.save_as(str(folder / f"IM{i:04d}.dcm"), write_like_original=False)
    return folder


@pytest.fixture
def dicom_series() -> Callable[..., Path]:
    pytest.importorskip("pydicom")
    return write_dicom_series


@pytest.fixture
def nifti() -> Callable[..., str]:
    return write_nifti


@pytest.fixture
def flip_byte() -> Callable[..., str]:
    return corrupt
