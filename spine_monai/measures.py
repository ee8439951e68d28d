"""Curvature of the spine from a coronal segmentation: the spine's centre line and its Cobb angle.

Beyond the SEAM paper (Zhao et al., ICASSP 2021, DOI 10.1109/ICASSP39728.2021.9414658), which stops at the
segmentation: ultrasound VPI exists to assess scoliosis without X-rays (Cheung et al., IEEE TMI 34(8), 2015), and the
clinical number is the Cobb angle (Cobb, "Outline for the study of scoliosis", AAOS Instr Course Lect 5, 1948): the
angle between the most tilted vertebrae above and below the apex of a curve.

Method (:func:`cobb_angle`):

1. Centre line: for every image row holding at least ``min_pixels`` pixels of the spine classes (thoracic and lumbar
   by default; the left and right thoracic lamina echoes average to the midline), the mean column of those pixels.
2. Smoothing: a local linear regression of the row centroids on the row, with Gaussian weights (sigma =
   ``smoothing`` % of the spine's row extent, about half a level height by default) times the pixel counts; it
   bridges the gaps between levels, averages rows where only the left or right echo of a level is present (each
   alone is off the midline), and, unlike a moving average, is unbiased for a tilted line up to the ends. Its local
   slope gives the inclination.
3. Cobb angle: the inclination of the smoothed line to the vertical, ``atan(d col / d row)``, on a dense grid of rows
   between the first and last spine row; the angle is the largest minus the smallest inclination (degrees), with the
   rows where they occur (the end vertebrae). For a single (C) curve this is the Cobb angle; for an S curve it is the
   largest of the two (the major curve) only where the two curves' end tilts are the extremes, otherwise it is the
   sum of tilts across both curves: a stated simplification.

The phantoms' ground truth (:func:`spine_monai.data.phantom_us.cobb_of_line`) uses the same definition on the
analytic centre line, so the error measured on phantoms is the segmentation's and this method's error together.

Limits: VPI shows posterior elements, so the line of lamina echoes is a proxy for the vertebral-body line, and axial
rotation of the vertebrae is ignored; tangent inclinations stand in for end-plate tilts; a gap in the segmentation
(a missed level) is bridged by the spline and can hide or invent curvature; angles depend on the pixel aspect, so the
measure is applied to the label in the original image geometry (``spacing`` gives the pixel size when it is not
square), never to a label resized anisotropically (the bundles' 1024 x 256 network grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["spine_centre_line", "cobb_angle"]


def _as_rows_cols(label: Any) -> np.ndarray:
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2D label map (rows, cols) or (1, rows, cols), got shape {arr.shape}.")
    return arr


def spine_centre_line(label: Any, classes: Sequence[int] = (2, 3), min_pixels: int = 2, smoothing: float = 3.0,
                      spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, np.ndarray]:
    """The smoothed centre line of the spine classes of a coronal label map.

    Args:
        label: label map ``(rows, cols)`` (rows superior -> inferior), numpy or torch; ``(1, rows, cols)`` accepted.
        classes: label values forming the spine (thoracic and lumbar in the VPI convention).
        min_pixels: rows with fewer spine pixels are ignored.
        smoothing: width of the Gaussian smoothing over rows, in % of the spine's row extent (sigma).
        spacing: pixel size ``(row, col)``; the line is returned in these units.

    Returns:
        ``{"rows": raw rows, "cols": raw centroids, "fit_rows": every row of the spine's extent, "fit_cols": the
        smoothed line, "slope": its d col / d row}`` (units of ``spacing``).

    Raises:
        ValueError: if the label holds fewer than 8 rows with spine pixels (no line can be fitted).
    """
    from scipy.ndimage import gaussian_filter1d

    arr = _as_rows_cols(label)
    mask = np.isin(arr, np.asarray(list(classes)))
    counts = mask.sum(axis=1).astype(np.float64)
    counts[counts < max(1, int(min_pixels))] = 0.0
    rows = np.nonzero(counts)[0]
    if rows.size < 8:
        raise ValueError(f"too few rows with spine pixels (classes {list(classes)}): {rows.size}; no centre line.")
    cols_idx = np.arange(arr.shape[1], dtype=np.float64)
    sums = (mask * cols_idx).sum(axis=1) * (counts > 0)
    cents = sums[rows] / counts[rows]
    # local linear regression of the centroid on the row, Gaussian- and pixel-count-weighted: bridges the gaps
    # between levels, averages rows where only the left or right echo is present, and has no bias at the ends
    sigma = max(1.0, float(smoothing) * (rows[-1] - rows[0]) / 100.0)
    ridx = np.arange(arr.shape[0], dtype=np.float64)

    def g(x: np.ndarray) -> np.ndarray:
        return gaussian_filter1d(x, sigma, mode="constant")

    s0, s1, s2 = g(counts), g(counts * ridx), g(counts * ridx**2)
    t0, t1 = g(sums), g(sums * ridx)
    span = np.arange(rows[0], rows[-1] + 1)
    det = np.maximum(s0 * s2 - s1**2, 1e-12)
    slope = (s0 * t1 - s1 * t0) / det
    inter = (t0 - slope * s1) / np.maximum(s0, 1e-12)
    fit = (inter + slope * ridx)[span]
    sr, sc = float(spacing[0]), float(spacing[1])
    r, c = rows.astype(np.float64) * sr, cents * sc
    fit_rows = span.astype(np.float64) * sr
    return {"rows": r, "cols": c, "fit_rows": fit_rows, "fit_cols": fit * sc, "slope": slope[span] * sc / sr}


def cobb_angle(label: Any, classes: Sequence[int] = (2, 3), min_pixels: int = 2, smoothing: float = 3.0,
               spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, Any]:
    """Cobb angle (degrees) of the spine in a coronal label map (module docstring: method and limits).

    Args:
        label: label map ``(rows, cols)``, rows superior -> inferior.
        classes: spine label values.
        min_pixels: see :func:`spine_centre_line`.
        smoothing: see :func:`spine_centre_line`.
        spacing: pixel size ``(row, col)``.

    Returns:
        ``{"cobb_deg", "upper_row", "lower_row", "centre_line": [[row, col], ...] (32 samples), "method"}``; rows
        in pixels.

    Raises:
        ValueError: when no centre line can be found (no or too few spine pixels).
    """
    line = spine_centre_line(label, classes, min_pixels, smoothing, spacing)
    fr, fc = line["fit_rows"], line["fit_cols"]
    incl = np.degrees(np.arctan(line["slope"]))
    i_max, i_min = int(np.argmax(incl)), int(np.argmin(incl))
    upper, lower = sorted((i_max, i_min))
    pick = np.linspace(0, fr.size - 1, 32).round().astype(int)
    sr = float(spacing[0])
    return {"cobb_deg": float(incl[i_max] - incl[i_min]), "upper_row": float(fr[upper] / sr),
            "lower_row": float(fr[lower] / sr),
            "centre_line": [[float(fr[i] / sr), float(fc[i] / float(spacing[1]))] for i in pick],
            "method": ("max - min inclination of a Gaussian-weighted local linear fit of the row centroids of the "
                       "spine labels")}
