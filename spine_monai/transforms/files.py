"""Checks on an image FILE before it is loaded: corrupt gzip data, complex data, a broken NIfTI header geometry.

Not tied to a paper. What the readers let through silently (nibabel 5.4, MONAI 1.6.1):

- a ``.nii.gz`` whose gzip CRC fails, or whose deflate stream is damaged near its end, is read without error (the
  data are decompressed only as far as needed, the trailer is never checked): the scan is segmented as if it were
  fine. :func:`check_gzip` decompresses the whole file once (in 16 MiB chunks) and refuses it on any zlib, EOF or
  CRC/length error, or when it holds fewer bytes than the header's image needs;
- a truncated ``.nii`` (fewer bytes than ``vox_offset`` + the image) is refused the same way;
- complex NIfTI data are cast to float32 by MONAI's readers, dropping the imaginary part: refused (see
  :mod:`spine_monai.transforms.validate` for the choice);
- a NaN/Inf, singular or implausible header affine is replaced by MONAI (``correct_nifti_header_if_necessary``) with
  one rebuilt from pixdim, so the check is made on the header nibabel reads, before MONAI touches it;
- a DICOM series folder is checked by :func:`spine_monai.transforms.dicom.check_dicom_series` (a slice without pixel
  data, missing slices).

:class:`ValidateFiled` runs these checks in a bundle config, placed before ``LoadImaged``; ``segment`` runs
:func:`check_image_file` in ``read_scan``. Cost: one extra decompression of each ``.nii.gz`` (about 0.3 s per
100 MB of image data).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from spine_monai.errors import InputError
from spine_monai.transforms.geometry import SPACING_RANGE_MM, check_affine

__all__ = ["check_image_file", "check_gzip", "check_nifti_header", "ValidateFiled"]

_CHUNK = 16 * 1024 * 1024


def check_gzip(path: str | os.PathLike, min_bytes: int = 0) -> int:
    """Decompress a gzip file completely (CRC and length checked); return its uncompressed size.

    Raises:
        InputError: if the data are corrupt or truncated, or hold fewer than ``min_bytes`` bytes.
    """
    total = 0
    try:
        with gzip.open(str(path), "rb") as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile (CRC, length) is an OSError
        reason = str(err) or type(err).__name__
        raise InputError(f"{path}: corrupt gzip data ({reason}); the file is damaged, copy it again.") from None
    if total < min_bytes:
        raise InputError(f"{path}: truncated image data ({total} bytes after decompression, the header needs "
                         f"{min_bytes}); the file is damaged, copy it again.")
    return total


def check_nifti_header(path: str | os.PathLike,
                       spacing_range: tuple[float, float] | None = SPACING_RANGE_MM) -> Any:
    """Check a NIfTI file's header (dtype, affine, pixdim) and the size of its data; return the nibabel image.

    Raises:
        InputError: for an unreadable header, complex data, a bad affine or pixdim, corrupt or truncated data.
    """
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(str(path))
    except Exception as err:  # noqa: BLE001 - any nibabel failure means "not a readable NIfTI"
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise InputError(f"{path}: cannot be read as an image (not a valid NIfTI file; {type(err).__name__}: "
                         f"{first}).") from None
    hdr = img.header
    dtype = hdr.get_data_dtype()
    if dtype.kind == "c":
        raise InputError(f"{path}: complex-valued image ({dtype.name}); give a real image, e.g. the magnitude "
                         "(numpy.abs) of the reconstruction.")
    zooms = np.asarray(hdr.get_zooms()[:3], dtype=np.float64)
    if not np.isfinite(zooms).all():
        raise InputError(f"{path}: the header's voxel size (pixdim) has NaN/Inf values {zooms.tolist()}.")
    if len(img.shape) >= 3:
        check_affine(img.affine, str(path), spacing_range)
    offset = max(int(hdr["vox_offset"]), int(hdr["sizeof_hdr"]))  # a single-file NIfTI has its data after these
    need = offset + int(np.prod(img.shape, dtype=np.int64)) * dtype.itemsize
    if str(path).lower().endswith(".gz"):
        check_gzip(path, min_bytes=need)
    elif os.path.getsize(path) < need:
        raise InputError(f"{path}: truncated image data ({os.path.getsize(path)} bytes, the header needs {need}); "
                         "the file is damaged, copy it again.")
    return img


def check_image_file(path: str | os.PathLike,
                     spacing_range: tuple[float, float] | None = SPACING_RANGE_MM) -> None:
    """Check an input before loading it: a NIfTI file (header, data integrity), any other ``.gz`` file (gzip
    integrity) or a DICOM series folder (:func:`spine_monai.transforms.dicom.check_dicom_series`). Other files (e.g.
    ``.mha``, ``.nrrd``) are left to the reader and :func:`spine_monai.transforms.validate.check_volume_array`.

    Raises:
        InputError: naming ``path`` and the problem.
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        from spine_monai.transforms.dicom import check_dicom_series

        check_dicom_series(p)
    elif name.endswith((".nii", ".nii.gz")):
        check_nifti_header(p, spacing_range)
    elif name.endswith(".gz") and p.is_file():
        check_gzip(p)


class ValidateFiled(MapTransform):
    """Run :func:`check_image_file` on the file path(s) under ``keys``; place it before ``LoadImaged``.

    Entries that are not paths (already loaded arrays) are skipped, so the transform is harmless where data come
    in memory (e.g. from MONAI Label, which passes paths for files it has stored).

    Args:
        keys: the keys holding paths (e.g. ``["image", "label"]``).
        spacing_range: plausible voxel spacing (mm); ``None`` skips that check.
        allow_missing_keys: skip absent keys.

    Raises:
        InputError: naming the file and the problem.
    """

    def __init__(self, keys: KeysCollection = "image",
                 spacing_range: tuple[float, float] | None = SPACING_RANGE_MM,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_range = None if spacing_range is None else (float(spacing_range[0]), float(spacing_range[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, (str, os.PathLike)):
                check_image_file(value, self.spacing_range)
        return d
