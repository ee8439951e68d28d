"""Checks on a DICOM series folder before it is read: slices without pixel data, missing or irregular slices.

Not tied to a paper. ITK's GDCM series reader (what MONAI's ``LoadImage`` uses for a folder) silently drops a file
that has no pixel data and, for a series with a missing slice, only warns ("Non uniform sampling or missing slices
detected") and returns a volume with the spacing of the first two slices: 11 slices of a 12-slice series, placed
with a wrong spacing, so the label map is geometrically wrong. :func:`check_dicom_series` refuses both with one line.

How: the folder's files are read with pydicom (element values over 1 KB, i.e. the pixel data, are not loaded) and
grouped by ``SeriesInstanceUID``. The series checked is the one the reader will use: with several series, ITK's
first one (``GDCMSeriesFileNames`` with the same settings as MONAI's ``ITKReader``) when ITK is installed, else the
largest. For that series: every slice must have pixel data, all slices the same ``ImageOrientationPatient`` (within
``1e-4``) and the slice positions (``ImagePositionPatient`` projected on the slice normal) must be evenly spaced:
each gap within ``rtol`` (default 5 %, a generous margin for rounded positions) of the median gap, and no two slices
at the same position. Series without position tags, multi-frame files and single files are not position-checked.
Without pydicom the check is skipped (logged).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from spine_monai.errors import InputError

__all__ = ["check_dicom_series", "slice_positions"]

logger = logging.getLogger(__name__)

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _read_headers(folder: Path) -> list[tuple[Path, Any]]:
    import pydicom

    out = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(str(f), defer_size="1 KB")
        except Exception:  # noqa: BLE001 - not a DICOM file (the reader ignores it too)
            continue
        if "SeriesInstanceUID" in ds:
            out.append((f, ds))
    return out


def _itk_first_series(folder: Path) -> str | None:
    """ITK's first series identifier for ``folder`` (as MONAI's ``ITKReader`` picks it), or ``None``."""
    try:
        import itk

        gen = itk.GDCMSeriesFileNames.New()
        gen.SetUseSeriesDetails(True)
        gen.AddSeriesRestriction("0008|0021")
        gen.SetGlobalWarningDisplay(False)
        gen.SetDirectory(str(folder))
        uids = list(gen.GetSeriesUIDs())
    except Exception:  # noqa: BLE001 - no ITK, or GDCM cannot scan: fall back to the largest series
        return None
    return str(uids[0]) if uids else None


def slice_positions(datasets: list[Any]) -> np.ndarray | None:
    """Positions (mm) of the slices along the slice normal, or ``None`` when a slice lacks the position tags.

    Raises:
        InputError: (without a file name: the caller adds it) if the slices have different orientations.
    """
    if not all("ImageOrientationPatient" in ds and "ImagePositionPatient" in ds for ds in datasets):
        return None
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if not np.allclose(iops, iops[0], atol=1e-4):
        raise InputError("slices with different orientations (ImageOrientationPatient) in one series")
    normal = np.cross(iops[0][:3], iops[0][3:])
    return np.array([float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for ds in datasets])


def check_dicom_series(folder: str | os.PathLike, rtol: float = 0.05) -> None:
    """Refuse a DICOM series with a slice lacking pixel data, mixed orientations, or missing / irregular slices.

    Args:
        folder: the series folder.
        rtol: allowed relative deviation of each slice gap from the median gap.

    Raises:
        InputError: naming the folder (and the file, or the expected and found spacings).
    """
    folder = Path(folder)
    try:
        import pydicom  # noqa: F401
    except ImportError:
        logger.info("%s: pydicom is not installed; the DICOM series is not checked for missing slices.", folder)
        return
    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for f, ds in _read_headers(folder):
        series[str(ds.SeriesInstanceUID)].append((f, ds))
    if not series:
        return  # no DICOM here: the reader gives its own error
    first = _itk_first_series(folder) if len(series) > 1 else None
    uid = next((u for u in sorted(series, key=len, reverse=True) if first and first.startswith(u)), None)
    uid = uid or max(series, key=lambda u: len(series[u]))
    items = series[uid]
    label = f"{folder} (series {uid})" if len(series) > 1 else str(folder)
    for f, ds in items:
        if not any(tag in ds for tag in _PIXEL_TAGS):
            raise InputError(f"{label}: slice {f.name} has no pixel data; the series is incomplete.")
    if len(items) < 3 or any(int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 for _, ds in items):
        return
    try:
        pos = slice_positions([ds for _, ds in items])
    except InputError as err:
        raise InputError(f"{label}: {err}; give a folder with one series.") from None
    if pos is None:
        return
    order = np.argsort(pos)
    gaps = np.diff(pos[order])
    expected = float(np.median(gaps))
    if np.min(gaps) <= 1e-3 * max(expected, 1e-3):
        i = int(np.argmin(gaps))
        raise InputError(f"{label}: two slices at the same position {pos[order][i]:.3f} mm "
                         f"({items[order[i]][0].name}, {items[order[i + 1]][0].name}); duplicate or mixed series.")
    bad = np.abs(gaps - expected) > rtol * expected
    if bad.any():
        i = int(np.argmax(np.abs(gaps - expected)))
        found = sorted({round(float(g), 3) for g in gaps[bad]})
        raise InputError(
            f"{label}: missing slices or non-uniform slice positions: expected a spacing of {expected:.3g} mm, "
            f"found gaps of {', '.join(f'{g:g}' for g in found[:4])} mm (between {items[order[i]][0].name} and "
            f"{items[order[i + 1]][0].name}; {len(items)} slices)."
        )
