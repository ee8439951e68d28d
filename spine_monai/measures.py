"""Curvature of the spine from a coronal segmentation: the spine's centre line and its Cobb angle.

Beyond the SEAM paper (Zhao et al., ICASSP 2021, doi:10.1109/ICASSP39728.2021.9414658), which stops at the
segmentation: ultrasound VPI exists to assess scoliosis without X-rays (Cheung et al., IEEE TMI 34(8), 2015), and the
clinical number is the Cobb angle (Cobb, "Outline for the study of scoliosis", AAOS Instr Course Lect 5, 1948): the
angle between the end plates of the most tilted vertebrae above and below the apex of a curve.

Definition used here (and by the phantoms' truth, :func:`spine_monai.data.phantom_us.generate_us_phantom`): the
largest minus the smallest inclination of the tangent of the spine's centre line to the vertical (degrees,
``atan(d col / d row)`` in physical units), over the labelled extent, with the rows where the two extremes occur (the
end vertebrae). For a single (C) curve this is its Cobb angle; for an S curve it is the major curve's angle when the
two extremes bound one curve, otherwise the tilt range across both curves (a stated simplification: no apex or
curve segmentation is done).

Method (:func:`spine_centre_line`, :func:`cobb_angle`), in physical units (``spacing``):

1. Pixels of the spine classes (thoracic and lumbar by default); rows with fewer than ``min_pixels`` are dropped.
2. First line: the row sums of pixel counts and columns, smoothed over rows (Gaussian, sigma 3 % of the extent, about
   half a thoracic level), divided: a level's left and right thoracic echoes average to the midline.
3. Refinement (4 passes): each pixel is projected along the current line's normal onto it (the row of its foot
   point, so the two echoes of a TILTED level, which lie in different rows, share a foot row) and assigned to the
   left or right of the line; per foot row the centroid of the left pixels and that of the right pixels are taken,
   and their midpoint is a point of the centre line (rows with pixels on one side only, e.g. where one thoracic echo
   is taller than its partner, are skipped, so a lone echo does not pull the line sideways; a butterfly-shaped
   lumbar echo straddles the line and gives its own midpoint). If no row has both sides, the plain centroids are used.
4. Smoothing: for each of at most 300 evaluation rows, a locally weighted LINEAR regression (LOESS, tricube kernel
   of half-width ``smoothing`` % of the spine's row extent, at least 4 points, weights sqrt of the pixel support, 2
   bisquare robustness passes against stray pixels) of the midpoints' offset across the current line on their
   position along it, i.e. in the line's own tangent frame; the evaluation point moves by the fitted offset and turns
   by the fitted slope. The first three passes use at least a 10 % window (they only feed the projection's tilt).
   In the last pass the one-sided slope at the two ends is corrected with the curvature of a local quadratic of
   three times the window (a local linear slope at an end is off by ``skew * curvature / 2``). Choices: local linear,
   unlike a moving average, is unbiased for a tilted line; the tangent frame makes the fit of an arc independent of
   its tilt; higher degrees follow the per-level ripple of the echoes (a 1-2 px offset per level is a large slope
   over one level) and were worse on the phantoms; the default 10 % (about 2 thoracic levels) balances that ripple
   against the flattening of sharp curves (on the phantoms' true labels: mean absolute error about 1.4 deg over 30
   cases; on circular arcs the angle is within 2 deg, a few degrees low for very tight arcs whose extreme tilts are
   at their ends).
5. The Cobb angle: max - min of the inclination ``atan(slope)`` over the rows where the fitted line has midpoints
   (no extrapolation).

Limits: VPI shows posterior elements, so the line of lamina echoes is a proxy of the vertebral-body line and axial
rotation of the vertebrae is ignored; tangent inclinations stand in for end-plate tilts; a gap in the segmentation (a
missed level) is bridged by the fit and can hide or invent curvature, and so can too little or too much smoothing;
the ends of the labelled extent are fitted one-sidedly. Angles change under anisotropic resizing, so the measure must
be applied in the original image geometry (``spacing`` gives the pixel size when it is not square), never to a label
resized anisotropically (e.g. the bundles' 1024 x 256 network grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["spine_centre_line", "cobb_angle", "METHOD"]

METHOD = ("max - min tangent inclination (deg from vertical) of a robust local-linear fit, in the line's tangent "
          "frame, of the left/right midpoints of the spine labels along the line's normal")


def _as_2d(label: Any) -> np.ndarray:
    """(H, W) numpy view of a numpy / torch label; a leading channel of size 1 is dropped."""
    arr = label.detach().cpu().numpy() if hasattr(label, "detach") else np.asarray(label)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2D label map (rows, cols) or (1, rows, cols), got shape {arr.shape}.")
    return arr


def _local_fit(u: np.ndarray, v: np.ndarray, wt: np.ndarray, half: float, degree: int = 1,
               robust: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Locally weighted polynomial fits ``v(u)``, one per evaluation point (row of ``u``, ``v``: (E, N) coordinates
    of the N data points in the frame of each of the E evaluation points, which sits at u = 0).

    Tricube kernel of half-width ``half`` in ``|u|`` (widened where fewer than ``2 * degree + 2`` points fall inside),
    data weights ``wt`` (N,), ``robust`` bisquare reweighting passes on each point's residual to the fit of the
    evaluation point nearest to it (Cleveland 1979).

    Returns:
        ``(value, slope, curvature, skew)`` at u = 0 (E,): the fit, its first and (``degree >= 2``, else 0) second
        derivative, and for ``degree == 1`` the design's curvature sensitivity
        ``sum k (u - m) u^2 / sum k (u - m)^2`` (0 for a symmetric window; a local linear slope is off by
        ``skew * v'' / 2``, which matters at the ends).
    """
    d = np.abs(u)
    kk = min(2 * degree + 1, d.shape[1] - 1)
    hh = np.maximum(half, 1.05 * np.partition(d, kk, axis=1)[:, kk])[:, None]
    kern = np.clip(1 - (d / hh) ** 3, 0, None) ** 3
    du = u / hh  # scaled to [-1, 1] for conditioning
    powers = [np.ones_like(du)]
    for _ in range(2 * degree + 1):
        powers.append(powers[-1] * du)
    nearest = np.argmin(d, axis=0)  # the evaluation point each data point is closest to
    rw = np.ones(u.shape[1])
    zero = np.zeros(u.shape[0])
    value = slope = curv = skew = zero
    for it in range(robust + 1):
        k = kern * (wt * rw)[None, :]
        m = [np.sum(k * p, axis=1) for p in powers]
        t = [np.sum(k * powers[p] * v, axis=1) for p in range(degree + 1)]
        a = np.stack([np.stack([m[r + c] for c in range(degree + 1)], -1) for r in range(degree + 1)], -2)
        a += 1e-9 * (m[0][:, None, None] + 1e-12) * np.eye(degree + 1)
        coef = np.linalg.solve(a, np.stack(t, -1)[..., None])[..., 0]
        value, slope = coef[:, 0], coef[:, 1] / hh[:, 0]
        if it == robust:
            if degree >= 2:
                curv = 2 * coef[:, 2] / hh[:, 0] ** 2
            if degree == 1:
                mu = m[1] / np.maximum(m[0], 1e-12)
                skew = (m[3] - mu * m[2]) / np.maximum(m[2] - mu * m[1], 1e-12) * hh[:, 0]
            break
        fit = sum(coef[:, p, None] * powers[p] for p in range(degree + 1))
        res = (v - fit)[nearest, np.arange(u.shape[1])]
        s = 6 * max(float(np.median(np.abs(res))), 1e-6)
        rw = np.clip(1 - (res / s) ** 2, 0, None) ** 2
    return value, slope, curv, skew


def _fit(label: Any, classes: Sequence[int], min_pixels: int, smoothing: float,
         spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (px) of the fitted line, its columns (px) and its slope d col / d row in physical units."""
    from scipy.ndimage import gaussian_filter1d

    arr = _as_2d(label)
    if len(spacing) != 2 or min(float(s) for s in spacing) <= 0:
        raise ValueError(f"spacing {tuple(spacing)!r} must be two positive pixel sizes (row, col).")
    if not 0 < float(smoothing) <= 50:
        raise ValueError(f"smoothing {smoothing!r} must be in (0, 50] (% of the spine's extent).")
    sr, sc = float(spacing[0]), float(spacing[1])
    mask = np.isin(arr, np.asarray(list(classes)))
    counts = mask.sum(1)
    mask &= (counts >= max(1, int(min_pixels)))[:, None]
    r_pix, c_pix = np.nonzero(mask)
    if r_pix.size == 0 or np.unique(r_pix).size < 3:
        raise ValueError(f"no centre line: the label has {np.unique(r_pix).size} rows with at least {min_pixels} "
                         f"pixels of the spine classes {list(classes)} (need 3).")
    y, x = (r_pix + 0.5) * sr, (c_pix + 0.5) * sc  # physical coordinates of the pixel centres
    r_lo, r_hi = int(r_pix.min()), int(r_pix.max())
    n_bins = r_hi - r_lo + 1
    rows = np.arange(r_lo, r_hi + 1)
    ye = (rows + 0.5) * sr
    half = float(smoothing) / 100.0 * n_bins * sr
    # step 2: first line from the row-smoothed column sums and pixel counts (sigma ~ half a thoracic level)
    sig = max(1.0, 0.03 * n_bins)
    den = gaussian_filter1d(np.bincount(r_pix - r_lo, minlength=n_bins).astype(float), sig, mode="constant")
    num = gaussian_filter1d(np.bincount(r_pix - r_lo, weights=x, minlength=n_bins), sig, mode="constant")
    xe = num / np.maximum(den, 1e-12)
    slope = np.gradient(xe, ye) if n_bins > 1 else np.zeros(1)
    for it in range(4):
        # step 3: foot point of each pixel on the line along its normal, row ~ y + (x - x_line(y)) g / (1 + g^2),
        # and its side; per foot row the centroid of the left and of the right pixels, the midpoint of the two
        g = np.clip(np.interp(y, ye, slope), -1.0, 1.0)
        off = x - np.interp(y, ye, xe)
        b = np.floor((y + off * g / (1 + g * g)) / sr - r_lo).astype(int)
        ok = (b >= 0) & (b < n_bins)  # feet beyond the first / last row are dropped, not piled into the end bins
        b = np.where(ok, b, 0)
        w_right = np.clip(0.5 + off / sc, 0, 1) * ok  # a pixel on the line counts half to each side
        stats = []
        for ws in (ok - w_right, w_right):
            cnt = np.bincount(b, weights=ws, minlength=n_bins)
            stats.append((cnt, np.bincount(b, weights=ws * y, minlength=n_bins),
                          np.bincount(b, weights=ws * x, minlength=n_bins)))
        both = (stats[0][0] > 0.25) & (stats[1][0] > 0.25)
        if both.sum() >= 3:
            py = 0.5 * sum(st[1][both] / st[0][both] for st in stats)
            px = 0.5 * sum(st[2][both] / st[0][both] for st in stats)
            pw = np.sqrt(np.minimum(stats[0][0][both], stats[1][0][both]))
        else:  # no foot row with pixels on both sides: plain centroids
            cnt = stats[0][0] + stats[1][0]
            keep = cnt > 0
            py = (stats[0][1] + stats[1][1])[keep] / cnt[keep]
            px = (stats[0][2] + stats[1][2])[keep] / cnt[keep]
            pw = np.sqrt(cnt[keep])
        order = np.argsort(py)
        py, px, pw = py[order], px[order], pw[order]
        # step 4: robust local linear fit in the tangent frame of the current line at (at most 300) grid rows: the
        # points' coordinates along (u) and across (v) the line, v(u) fitted, the grid point moved to v(0) and turned
        # by atan(v'(0)); in that frame a circle has no third derivative, so the fit is not biased by steep tilts.
        # The first passes only feed the projection's tilt and use at least a 10 % window; the last one corrects the
        # one-sided slope at the ends with the curvature of a wider local quadratic.
        lo, hi = max(ye[0], py[0]), min(ye[-1], py[-1])  # no extrapolation beyond the midpoints
        gy = np.linspace(lo, hi, int(min(300, max(2, round((hi - lo) / sr) + 1))))
        th = np.arctan(np.interp(gy, ye, slope))
        cos, sin = np.cos(th)[:, None], np.sin(th)[:, None]
        dy, dx = py[None, :] - gy[:, None], px[None, :] - np.interp(gy, ye, xe)[:, None]
        u, v = dy * cos + dx * sin, -dy * sin + dx * cos
        v0, d1, _, skew = _local_fit(u, v, pw, half if it == 3 else max(half, 0.1 * n_bins * sr))
        if it == 3:
            d1 = d1 - 0.5 * skew * _local_fit(u, v, pw, 3 * half, degree=2)[2]
        ny, nx = gy - v0 * sin[:, 0], np.interp(gy, ye, xe) + v0 * cos[:, 0]
        order = np.argsort(ny)
        xe = np.interp(ye, ny[order], nx[order])
        slope = np.interp(ye, ny[order], np.tan(np.clip(th + np.arctan(d1), -1.5, 1.5))[order])
    inside = (ye >= py[0] - 0.5 * sr) & (ye <= py[-1] + 0.5 * sr)  # where the midpoints are (no extrapolation)
    if inside.sum() < 2:
        inside[:] = True
    return rows[inside].astype(float), xe[inside] / sc - 0.5, slope[inside]


def spine_centre_line(label: Any, classes: Sequence[int] = (2, 3), min_pixels: int = 2, smoothing: float = 10.0,
                      spacing: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """The smoothed centre line of the spine classes of a coronal label map (module docstring: method).

    Args:
        label: label map ``(H, W)`` (rows superior -> inferior), numpy or torch; ``(1, H, W)`` accepted.
        classes: label values forming the spine (thoracic and lumbar in the VPI convention).
        min_pixels: rows with fewer spine pixels are ignored (stray pixels).
        smoothing: half-window of the local linear fit, in % of the spine's row extent, in (0, 50] (10: about 2
            thoracic levels of a whole-spine VPI).
        spacing: pixel size ``(row, col)``, e.g. mm; the fit is done in these units.

    Returns:
        ``(K, 2)`` float array of ``[row, col]`` in pixels, one per row from the first to the last spine row.

    Raises:
        ValueError: for a label that is not 2D, bad ``spacing`` / ``smoothing``, or fewer than 3 spine rows.
    """
    rows, cols, _ = _fit(label, classes, min_pixels, smoothing, spacing)
    return np.stack([rows, cols], 1)


def cobb_angle(label: Any, classes: Sequence[int] = (2, 3), min_pixels: int = 2, smoothing: float = 10.0,
               spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, Any]:
    """Cobb angle (degrees) of the spine in a coronal label map: the largest minus the smallest inclination of the
    centre line's tangent to the vertical over the labelled rows (the definition of the phantoms' truth).

    Apply it in the original image geometry: angles change under anisotropic resizing (give ``spacing`` when pixels
    are not square).

    Args:
        label: label map ``(H, W)``, rows superior -> inferior; numpy or torch, ``(1, H, W)`` accepted.
        classes: spine label values (a label holding only one of them works too).
        min_pixels: see :func:`spine_centre_line`.
        smoothing: see :func:`spine_centre_line`.
        spacing: pixel size ``(row, col)``.

    Returns:
        ``{"cobb_deg", "upper_row", "lower_row", "upper_tilt_deg", "lower_tilt_deg", "centre_line": [[row, col],
        ...] (at most 64 samples, pixels), "method"}``; ``upper_row`` / ``lower_row`` (pixels) are the rows of the
        two extreme inclinations, the upper one first.

    Raises:
        ValueError: when no centre line can be found (no or too few spine pixels) or for bad arguments.
    """
    rows, cols, slope = _fit(label, classes, min_pixels, smoothing, spacing)
    incl = np.degrees(np.arctan(slope))
    i_max, i_min = int(np.argmax(incl)), int(np.argmin(incl))
    upper, lower = sorted((i_max, i_min))
    pick = np.unique(np.linspace(0, rows.size - 1, min(64, rows.size)).round().astype(int))
    return {"cobb_deg": float(incl[i_max] - incl[i_min]), "upper_row": float(rows[upper]),
            "lower_row": float(rows[lower]), "upper_tilt_deg": float(incl[upper]),
            "lower_tilt_deg": float(incl[lower]),
            "centre_line": [[float(rows[i]), float(cols[i])] for i in pick], "method": METHOD}
