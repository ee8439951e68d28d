"""Seeded synthetic coronal spinal-ultrasound volume-projection images (VPI) with rib / thoracic / lumbar labels.

Stand-in for the data of SEAM (Zhao, Huang, Liu, Leung, Ling, Yang, Lee, Lun, Zheng and Lam, "Structure-Enhanced
Attentive Learning for Spine Segmentation from Ultrasound Volume Projection Images", ICASSP 2021,
doi:10.1109/ICASSP39728.2021.9414658, section 3.1: 109 Scolioscan-type VPI images of subjects with different degrees
of spine deformity, rescaled to 1024 x 256, four classes background / rib / thoracic / lumbar), so that the SEAM bundle,
its tests and the Cobb-angle measure (:mod:`spine_monai.measures`) run without the (non-redistributable) data. The
look follows a real VPI of the SA2Net repository (``shared/data/real/sa2net_us_vpi``).

How a case is made (:func:`generate_us_phantom`):

* Anatomy: the vertebral levels T1 (or T2) .. L5 are stacked along a curved centre line x(y) (coronal plane, row y
  superior -> inferior, column x left -> right). Level heights are the body heights plus the disc below, in mm, from
  :data:`spine_monai.data.phantom_anatomy._VERT` / ``_DISC`` for T8..L5 and from :data:`_T_UPPER` (this module,
  thoracic vertebrae getting smaller upwards) for T1..T7; the pixel size follows from fitting the arc length of the
  stack into the image. The centre line is a sum of Gaussians in the normalised row (one = C curve, two of opposite
  sign = S curve, a tiny one = nearly straight) plus a global tilt, its amplitude solved for a sampled target Cobb
  angle and capped so that the spine's lateral range stays within half the width (Cobb angles about 0-60 deg). Each
  vertebra is rotated to the local tangent. Lateral sizes (lamina offsets and sizes, rib length and thickness,
  butterfly width, band width) are fractions of the nominal width H / 4, measured on the real VPI; the body band
  follows the (smoothed) spine, as the probe follows the back.
* Labels: 2 (thoracic) = a pair of round lamina / transverse-process blobs left and right of the midline at each of
  T1..T12; 1 (rib) = a short rib segment from each blob's lateral side, running laterally and upwards, clipped to
  the body band; 3 (lumbar) = one "butterfly" (bat-shaped) lamina region per L1..L5, centred on the midline. Ribs are
  painted first, blobs and butterflies over them, so labels never overlap; rib pieces under 6 px left over by that are
  dropped from the label. A rib's radius is at least 1.6 px (ribs are about 5 px thick at ``shape_scale`` 0.25).
* Appearance: a bright body band (about 55-62 % of the width, wavy edges, dark outside) with soft-tissue texture; a
  dark midline (spinous-process shadow); bone surfaces as a bright echo rim over a dark acoustic shadow (ribs and
  lumbar laminae darker, thoracic blobs mid-grey), unlabelled bright facet echoes medial to the blobs; multiplicative
  Rayleigh speckle, a smooth gain field, a vertical (depth) gain drift and a lateral fall-off, occasional bands of
  horizontal streak lines, and a random gain / gamma with saturation. Intensities vary per structure and per case,
  so a label is not a constant grey value.

Geometry: pixels are square; ``shape_scale`` 1 gives H 960-1152 rows and W = H/4 +- 10 % (about 1024 x 256), 0.25
about 256 x 64. The true Cobb angle (:func:`generate_us_phantom`, ``info["cobb_deg"]``) uses the same definition as
:func:`spine_monai.measures.cobb_angle`: the largest minus the smallest tangent inclination of the centre line (degrees
from vertical) over the labelled levels, here sampled at the vertebral centres (the tilt of each rigid vertebra, i.e.
of its end plates). This is beyond the SEAM paper, which only segments.

:func:`spine_monai.data.phantoms.make_phantom_dataset` (``python -m spine_monai phantoms --modality us``) writes
PNGs and a datalist; :func:`render_us_overlay` draws image | image with label colours (rib blue, thoracic red, lumbar
green, as the real overlay preview); :func:`cobb_of_line` is the shared definition on a sampled line.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from spine_monai.data.phantom_anatomy import _DISC, _VERT

__all__ = ["generate_us_phantom", "render_us_overlay", "cobb_of_line", "US_LABELS", "US_COLOURS", "LEVELS",
           "LEVEL_HEIGHTS_MM"]

logger = logging.getLogger(__name__)
_F = np.float32

#: class index -> name (SEAM, section 3.1; SA2Net's ``scoliosis3`` classes).
US_LABELS: dict[int, str] = {0: "background", 1: "rib", 2: "thoracic", 3: "lumbar"}
#: overlay colours (RGB 0..255) of the classes, as in the real overlay preview.
US_COLOURS: dict[int, tuple[int, int, int]] = {1: (40, 80, 255), 2: (255, 40, 40), 3: (40, 220, 40)}
THORACIC = tuple(f"T{i}" for i in range(1, 13))
LUMBAR = ("L1", "L2", "L3", "L4", "L5")
LEVELS = THORACIC + LUMBAR

# T1..T7 (not in phantom_anatomy._VERT, which starts at T8): vertebral-body height, LR width and height of the disc
# below (mm). Adult averages rounded (upper thoracic bodies are 14-19 mm high, discs 4-6 mm), continuing the trend of
# _VERT/_DISC (T8: 20 mm body, 6 mm disc).
_T_UPPER: dict[str, tuple[float, float, float]] = {
    "T1": (14.5, 30.0, 4.0), "T2": (15.5, 28.0, 4.0), "T3": (16.5, 27.0, 4.5), "T4": (17.0, 27.0, 4.5),
    "T5": (17.5, 28.0, 5.0), "T6": (18.5, 29.0, 5.5), "T7": (19.0, 30.0, 5.5)}


def _level_table(first: str) -> list[tuple[str, float, float]]:
    """``[(name, body height, disc below), ...]`` in mm from ``first`` down to L5 (no disc below L5 is drawn)."""
    out = []
    for name in LEVELS[LEVELS.index(first):]:
        if name in _VERT:
            h, disc = _VERT[name][1], _DISC[name][1]
        else:
            h, _, disc = _T_UPPER[name]
        out.append((name, float(h), 0.0 if name == "L5" else float(disc)))
    return out


#: body height plus the disc below, per level (mm); the stack drawn ends at L5's inferior end plate (no L5/S disc).
LEVEL_HEIGHTS_MM: dict[str, float] = {
    name: (_VERT[name][1] + _DISC[name][1]) if name in _VERT else (_T_UPPER[name][0] + _T_UPPER[name][2])
    for name in LEVELS}


def cobb_of_line(rows: np.ndarray, cols: np.ndarray) -> tuple[float, int, int]:
    """Cobb angle of a sampled centre line: the largest minus the smallest inclination to the vertical (degrees).

    The definition shared by the phantoms' truth and :func:`spine_monai.measures.cobb_angle`; the inclination is
    ``atan(d col / d row)`` (positive when the line runs to larger columns going down), from finite differences.

    Args:
        rows: increasing row coordinates (superior -> inferior), at least 2.
        cols: column of the line at each row.

    Returns:
        ``(angle_deg, index_of_max, index_of_min)`` of the inclinations.
    """
    slope = np.gradient(np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64))
    incl = np.degrees(np.arctan(slope))
    i_max, i_min = int(np.argmax(incl)), int(np.argmin(incl))
    return float(incl[i_max] - incl[i_min]), i_max, i_min


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...] | float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation; large ``sigma`` (pixels) is made on a coarse grid
    and zoomed (bilinear), so the cost does not grow with it."""
    sig = np.broadcast_to(np.asarray(sigma, float), (len(shape),))
    f = np.maximum(1.0, sig / 2.0)
    small = tuple(int(math.ceil(n / fi)) + 3 for n, fi in zip(shape, f, strict=True))
    z = ndimage.gaussian_filter(rng.standard_normal(small).astype(_F), sig / f, mode="wrap")
    if np.any(f > 1):
        z = ndimage.zoom(z, [n / (m - 3) for n, m in zip(shape, small, strict=True)], order=1, grid_mode=True,
                         mode="nearest")
        z = z[tuple(slice(0, n) for n in shape)]
        if z.shape != tuple(shape):  # zoom can round one short: pad by edge values
            z = np.pad(z, [(0, n - m) for n, m in zip(shape, z.shape, strict=True)], mode="edge")
    else:
        z = z[tuple(slice(0, n) for n in shape)]
    return ((z - z.mean()) / max(float(z.std()), 1e-6)).astype(_F)


class _Curve:
    """Lateral centre line x(y) = x0 + A * sum_k a_k exp(-(t - c_k)^2 / (2 s_k^2)) + g0 * (y - y_top), t the row
    normalised to the spine span [y_top, y_bot]; analytic slope dx/dy."""

    def __init__(self, comps: list[tuple[float, float, float]], y_top: float, y_bot: float) -> None:
        self.comps, self.y_top, self.span = comps, y_top, y_bot - y_top
        self.amp, self.x0, self.g0 = 0.0, 0.0, 0.0

    def shape(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit-amplitude shape f(y) and its derivative df/dy."""
        t = (np.asarray(y, float) - self.y_top) / self.span
        f, df = np.zeros_like(t), np.zeros_like(t)
        for a, c, s in self.comps:
            g = a * np.exp(-((t - c) ** 2) / (2 * s * s))
            f += g
            df += -g * (t - c) / (s * s) / self.span
        return f, df

    def x(self, y: np.ndarray) -> np.ndarray:
        return self.x0 + self.amp * self.shape(y)[0] + self.g0 * (np.asarray(y, float) - self.y_top)

    def slope(self, y: np.ndarray) -> np.ndarray:
        return self.amp * self.shape(y)[1] + self.g0


def _tilt_range_deg(slope: np.ndarray) -> float:
    """Cobb angle of a set of slopes dx/dy: max minus min of their inclination from vertical (degrees)."""
    ang = np.degrees(np.arctan(slope))
    return float(ang.max() - ang.min())


def _sample_curve(rng: np.random.Generator, y_top: float, y_bot: float, lateral_limit: float,
                  ) -> tuple[_Curve, str]:
    """A C, S or nearly straight centre line whose tangent range is a sampled target (0-62 deg), capped so that the
    lateral excursion over the span stays below ``lateral_limit`` pixels."""
    kind = str(rng.choice(["straight", "C", "S"], p=[0.2, 0.35, 0.45]))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "straight":
        target = float(rng.uniform(0.0, 5.0))
        comps = [(sign, float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.15, 0.3)))]
    elif kind == "C":
        target = float(rng.uniform(8.0, 55.0))
        sig = float(rng.uniform(0.12, 0.3 - 0.0025 * target))
        comps = [(sign, float(rng.uniform(0.3, 0.65)), sig)]
    else:
        target = float(rng.uniform(10.0, 66.0))
        comps = [(sign, float(rng.uniform(0.22, 0.42)), float(rng.uniform(0.09, 0.17))),
                 (-sign * float(rng.uniform(0.6, 1.3)), float(rng.uniform(0.6, 0.8)), float(rng.uniform(0.09, 0.17)))]
    curve = _Curve(comps, y_top, y_bot)
    curve.g0 = float(rng.uniform(-0.03, 0.03))
    ys = np.linspace(y_top, y_bot, 257)
    f, df = curve.shape(ys)
    base = curve.g0 * (ys - y_top)

    def solve(fun: Any, goal: float) -> float:  # largest amplitude with fun(amp) <= goal (monotone enough here)
        lo, hi = 0.0, 4.0 * curve.span
        if fun(hi) <= goal:
            return hi
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if fun(mid) <= goal else (lo, mid)
        return lo

    a_target = solve(lambda a: _tilt_range_deg(a * df + curve.g0), target)
    a_limit = solve(lambda a: float(np.ptp(a * f + base)), lateral_limit)
    curve.amp = min(a_target, a_limit)
    return curve, kind


def _local(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along the spine (v, inferior +) and across it (u, towards larger columns) of a frame at (cy, cx)
    rotated by the tangent inclination ``theta`` (rad from vertical)."""
    dy, dx = yy - _F(cy), xx - _F(cx)
    c, s = _F(math.cos(theta)), _F(math.sin(theta))
    return dy * c + dx * s, -dy * s + dx * c


class _Painter:
    """Label map, multiplicative appearance map and per-shape windows of one image."""

    def __init__(self, h: int, w: int, soft: float) -> None:
        self.h, self.w, self.soft = h, w, _F(soft)
        self.label = np.zeros((h, w), np.uint8)
        self.mult = np.ones((h, w), _F)

    def window(self, cy: float, cx: float, radius: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        r0, r1 = max(0, int(cy - radius)), min(self.h, int(cy + radius) + 2)
        c0, c1 = max(0, int(cx - radius)), min(self.w, int(cx + radius) + 2)
        if r0 >= r1 or c0 >= c1:
            return None
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(_F)
        return (slice(r0, r1), slice(c0, c1)), yy + _F(0.5), xx + _F(0.5)

    def paint(self, win: tuple[slice, slice], sd: np.ndarray, cls: int, core: float, rim: float, rim_w: float,
              rim_side: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        """Label ``cls`` where the signed distance ``sd`` (px, > 0 inside) is positive (and ``mask``); appearance
        factor: soft step to ``core`` inside plus a bright rim of width ``rim_w`` (weighted by ``rim_side``)."""
        inside = sd > 0
        if mask is not None:
            inside &= mask
        if cls:
            self.label[win][inside] = cls
        step = 0.5 * (1 + np.tanh(sd / (2 * self.soft)))
        ring = np.exp(-((sd - _F(0.3 * rim_w)) / _F(rim_w)) ** 2)
        if rim_side is not None:
            ring = ring * rim_side
        self.mult[win] *= (1 + _F(core - 1) * step + _F(rim) * ring).astype(_F)


def _blob_sd(u: np.ndarray, v: np.ndarray, a: float, b: float, harm: np.ndarray) -> np.ndarray:
    """Signed distance (px, approximate) of an ellipse with semi-axes ``a`` (across) and ``b`` (along) whose radius is
    modulated by two low harmonics ``harm`` = (e2, p2, e3, p3)."""
    rho = np.sqrt((u / _F(a)) ** 2 + (v / _F(b)) ** 2)
    phi = np.arctan2(v / _F(b), u / _F(a))
    r = 1 + _F(harm[0]) * np.cos(2 * phi + _F(harm[1])) + _F(harm[2]) * np.cos(3 * phi + _F(harm[3]))
    return (r - rho) * _F(min(a, b))


def _capsule_sd(u: np.ndarray, v: np.ndarray, length: float, r0: float, r1: float, ang: float) -> np.ndarray:
    """Signed distance of a tapered capsule from the origin along direction ``ang`` (rad from +u towards -v, i.e.
    laterally and upwards for ang > 0), radius ``r0`` at the root and ``r1`` at the tip."""
    du, dv = math.cos(ang), -math.sin(ang)
    p = np.clip(u * _F(du) + v * _F(dv), 0, _F(length))
    d = np.sqrt((u - p * _F(du)) ** 2 + (v - p * _F(dv)) ** 2)
    return _F(r0) + (_F(r1 - r0) / _F(length)) * p - d


def _butterfly_sd(u: np.ndarray, v: np.ndarray, a: float, b: float, shp: np.ndarray) -> np.ndarray:
    """Signed distance (px, approximate) of the bat-shaped lumbar lamina region: a domed top edge (spinous-process
    base) falling to lateral wings, a bottom edge notched upwards in the middle and drooping at the wing tips;
    half-width ``a``, half-height ``b``; ``shp`` = (dome, notch, droop, wing) shape factors."""
    un, vn = u / _F(a), v / _F(b)
    top = -1 + _F(shp[0]) * (1 - np.exp(-(un / _F(0.42)) ** 2)) + _F(0.15) * un * un
    bot = _F(0.75 + shp[2] * 0.5) - _F(shp[1]) * np.exp(-(un / _F(0.3)) ** 2) + _F(shp[2]) * un * un
    side = 1 - np.abs(un) - _F(shp[3]) * np.clip(vn - top, 0, None) ** 2
    return np.minimum(np.minimum((vn - top) * _F(b), (bot - vn) * _F(b)), side * _F(a))


def generate_us_phantom(rng: np.random.Generator, shape_scale: float = 1.0,
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One synthetic coronal spinal-ultrasound VPI with its rib / thoracic / lumbar label map.

    The true Cobb angle ``info["cobb_deg"]`` (Cobb 1948) is the largest minus the smallest tilt of the labelled
    vertebrae, the tilt of a vertebra being the inclination (degrees from vertical, positive when the line runs to
    larger columns going down) of the analytic centre line's tangent at its centre; each vertebra is rigid and drawn
    along that tangent, so this is the angle between the end plates of the most tilted upper and lower vertebrae.
    :func:`spine_monai.measures.cobb_angle` uses the same definition on the centre line of a segmentation.

    Args:
        rng: random generator; the same generator state gives byte-identical outputs.
        shape_scale: in (0, 1]; both image sides are multiplied by it (1: about 1024 x 256, H 960-1152 and
            W = H/4 +- 10 %; 0.25: about 256 x 64), at least 32 px each. The anatomy is the same, on a coarser grid.

    Returns:
        ``(image, label, info)``: image (H, W) uint8 grey; label (H, W) uint8 in 0..3 (:data:`US_LABELS`); info a
        JSON-serialisable dict: ``shape``, ``cobb_deg``, ``curve`` ("C" | "S" | "straight"), ``levels``,
        ``upper_level``/``lower_level`` (most tilted), ``level_tilt_deg``, ``centre_line`` (64 [row, col] samples
        from the first vertebra's top to L5's bottom), ``labels_present``, ``px_per_mm`` and the sampled appearance
        parameters.

    Raises:
        ValueError: if ``shape_scale`` is not in (0, 1].
    """
    if not 0 < shape_scale <= 1:
        raise ValueError(f"--shape_scale {shape_scale!r} must be in (0, 1].")
    h0 = int(rng.integers(960, 1153))
    w0 = int(round(h0 / 4 * rng.uniform(0.9, 1.1)))
    h, w = max(32, int(round(h0 * shape_scale))), max(32, int(round(w0 * shape_scale)))
    first = "T1" if rng.random() < 0.5 else "T2"
    table = _level_table(first)
    y_top, y_bot = float(rng.uniform(0.015, 0.05) * h), float(rng.uniform(0.91, 0.96) * h)
    curve, kind = _sample_curve(rng, y_top, y_bot, lateral_limit=0.5 * w)
    # centre the spine's lateral range near the middle of the image
    yf = np.linspace(0.0, h, 4 * h + 1)
    x_rel = curve.x(yf)
    span_sel = (yf >= y_top) & (yf <= y_bot)
    curve.x0 = float(0.5 * w + rng.uniform(-0.03, 0.03) * w - 0.5 * (x_rel[span_sel].max() + x_rel[span_sel].min()))
    # arc length along the centre line -> pixel size (the stack of levels fills [y_top, y_bot] exactly)
    ds = np.sqrt(1 + curve.slope(yf) ** 2)
    arc = np.concatenate([[0.0], np.cumsum(0.5 * (ds[1:] + ds[:-1]) * np.diff(yf))])
    s_top, s_bot = np.interp([y_top, y_bot], yf, arc)
    total_mm = sum(hh + dd for _, hh, dd in table)
    ppm = float((s_bot - s_top) / total_mm)  # pixels per mm
    levels = []
    s = s_top
    for name, hh, dd in table:
        sc = s + 0.5 * hh * ppm
        yc = float(np.interp(sc, arc, yf))
        levels.append({"name": name, "y": yc, "x": float(curve.x(np.array(yc))), "pitch": (hh + dd) * ppm,
                       "height": hh * ppm, "theta": float(np.arctan(curve.slope(np.array(yc))))})
        s += (hh + dd) * ppm
    tilts = np.degrees([lv["theta"] for lv in levels])
    cobb = float(tilts.max() - tilts.min())
    i_max, i_min = int(np.argmax(tilts)), int(np.argmin(tilts))
    upper, lower = sorted((i_max, i_min))

    wn = 0.25 * h  # lateral unit: the nominal width H / 4 (lateral sizes are fractions of it, from the real VPI)
    # ---- body band: follows the spine (the probe follows the back), wavy edges, slanted top, faded bottom
    rows = np.arange(h) + 0.5
    x_sp = curve.x(rows)
    xb = ndimage.gaussian_filter1d(x_sp, 0.08 * h, mode="nearest") * 0.85 + 0.15 * (0.5 * w)
    xb = xb + 0.015 * w * _smooth_noise(rng, (h,), 0.1 * h)
    hw = (rng.uniform(0.285, 0.325) * wn) * (1 + 0.03 * _smooth_noise(rng, (h,), 0.05 * h))
    hw = hw + max(0.4, 0.6 * shape_scale) * _smooth_noise(rng, (h,), 1.5 * shape_scale + 0.5)
    hw = np.maximum(hw, np.abs(x_sp - xb) + 0.3 * wn)  # the laminae stay inside the body
    hw = np.minimum(hw, np.minimum(xb, w - xb) - 1.0)  # the band stays inside the image
    band_top = rng.uniform(0.0, 0.035) * h
    band_bot = rng.uniform(0.965, 1.0) * h
    top_slope = rng.uniform(-0.08, 0.08)
    cols = np.arange(w) + 0.5
    yy, xx = rows[:, None].astype(_F), cols[None, :].astype(_F)
    lat = (xx - xb[:, None].astype(_F))
    sd_band = np.minimum(np.minimum(hw[:, None].astype(_F) - np.abs(lat), yy - _F(band_top) - _F(top_slope) * lat),
                         _F(band_bot) - yy)
    in_band = sd_band > 1.0

    # ---- structures
    soft = max(0.5, 1.2 * ppm)
    pt = _Painter(h, w, soft)
    case_core = {"rib": rng.uniform(0.2, 0.4), "thoracic": rng.uniform(0.6, 0.85), "lumbar": rng.uniform(0.2, 0.4)}
    n_th = sum(1 for lv in levels if lv["name"].startswith("T"))
    blobs, ribs = [], []
    for lv in levels:
        if not lv["name"].startswith("T"):
            continue
        k = LEVELS.index(lv["name"]) / 11.0  # 0 at T1, 1 at T12
        d = (0.185 - 0.045 * k) * wn * rng.uniform(0.94, 1.06)
        a = max(2.5, 0.06 * wn * rng.uniform(0.9, 1.1))
        b = max(2.5, 0.35 * lv["pitch"] * rng.uniform(0.9, 1.1))
        for side in (-1.0, 1.0):
            du, dv = side * d + rng.normal(0, 0.5) * ppm, rng.normal(0, 0.5) * ppm
            blobs.append((lv, du, dv, a, b, rng.normal(0, [0.07, 3.0, 0.05, 3.0])))
            ang = math.radians(rng.uniform(5.0, 30.0))
            ribs.append((lv, side, du + side * 0.4 * a, dv - 0.15 * b, 0.16 * wn * rng.uniform(0.8, 1.25),
                         max(1.6, 0.038 * wn * rng.uniform(0.85, 1.15)), ang))
    for lv, side, ru, rv, length, r0, ang in ribs:  # ribs first: blobs and butterflies paint over them
        cu, cv = ru + side * 0.5 * length * math.cos(ang), rv - 0.5 * length * math.sin(ang)
        cy = lv["y"] + cv * math.cos(lv["theta"]) - cu * math.sin(lv["theta"])
        cx = lv["x"] + cv * math.sin(lv["theta"]) + cu * math.cos(lv["theta"])
        got = pt.window(cy, cx, 0.5 * length + r0 + 4 * soft)
        if got is None:
            continue
        win, wy, wx = got
        v, u = _local(wy, wx, lv["y"], lv["x"], lv["theta"])
        sd = _capsule_sd(side * (u - _F(ru)), v - _F(rv), length, r0, 0.85 * r0, ang)
        rim_side = np.clip(0.5 - (v - _F(rv)) / _F(2 * r0), 0, 1)  # echo on the superior surface
        lateral_of_blob = side * u >= _F(abs(ru))  # no rib label medial to its root (slivers around the blob)
        pt.paint(win, sd, 1, case_core["rib"] * rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.8), max(0.7, 1.2 * ppm),
                 rim_side, in_band[win] & lateral_of_blob)
    for lv, du, dv, a, b, harm in blobs:
        cy = lv["y"] + dv * math.cos(lv["theta"]) - du * math.sin(lv["theta"])
        cx = lv["x"] + dv * math.sin(lv["theta"]) + du * math.cos(lv["theta"])
        got = pt.window(cy, cx, 1.3 * max(a, b) + 4 * soft)
        if got is None:
            continue
        win, wy, wx = got
        v, u = _local(wy, wx, cy, cx, lv["theta"])
        sd = _blob_sd(u, v, a, b, harm)
        pt.paint(win, sd, 2, case_core["thoracic"] * rng.uniform(0.85, 1.15), rng.uniform(0.2, 0.6),
                 max(0.7, 1.5 * ppm))
        # unlabelled bright facet / lamina echo medial and inferior of the blob
        fu, fv = -np.sign(du) * 1.15 * a, 0.5 * b
        sd_f = _blob_sd(u - _F(fu), v - _F(fv), 0.6 * a, 0.5 * b, harm)
        pt.paint(win, sd_f, 0, rng.uniform(1.1, 1.35), 0.0, 1.0)
    for lv in levels:
        if lv["name"].startswith("L"):
            k = LUMBAR.index(lv["name"]) / 4.0
            a = (0.2 + 0.03 * k) * wn * rng.uniform(0.92, 1.08)
            b = max(3.0, 0.42 * lv["pitch"] * rng.uniform(0.9, 1.1))
            shp = np.array([rng.uniform(0.55, 0.85), rng.uniform(0.15, 0.4), rng.uniform(0.05, 0.3),
                            rng.uniform(0.1, 0.3)])
            got = pt.window(lv["y"], lv["x"], 1.2 * a + 4 * soft)
            if got is None:
                continue
            win, wy, wx = got
            v, u = _local(wy, wx, lv["y"], lv["x"] + rng.normal(0, 0.3) * ppm, lv["theta"])
            v = v - _F(0.05 * b)
            sd = _butterfly_sd(u, v, a, b, shp)
            rim_side = np.clip(0.6 - v / _F(1.5 * b), 0, 1)
            pt.paint(win, sd, 3, case_core["lumbar"] * rng.uniform(0.8, 1.2), rng.uniform(0.4, 0.9),
                     max(0.7, 1.8 * ppm), rim_side, in_band[win])
    # spinous processes: dark spots on the midline below each level centre (unlabelled)
    for lv in levels:
        sp_y = lv["y"] + 0.35 * lv["pitch"] * math.cos(lv["theta"])
        sp_x = lv["x"] + 0.35 * lv["pitch"] * math.sin(lv["theta"])
        r = 0.22 * lv["pitch"] * rng.uniform(0.7, 1.3)
        got = pt.window(sp_y, sp_x, 2 * r + 4 * soft)
        if got is not None:
            win, wy, wx = got
            v, u = _local(wy, wx, sp_y, sp_x, lv["theta"])
            pt.paint(win, _blob_sd(u, v, 0.45 * r, r, np.zeros(4)), 0, rng.uniform(0.45, 0.8), 0.0, 1.0)

    # ---- appearance
    # soft tissue: blotchy (horizontally elongated) texture, fine horizontal scan-line texture
    tissue = np.exp(0.22 * _smooth_noise(rng, (h, w), (4 * ppm, 7 * ppm))
                    + 0.12 * _smooth_noise(rng, (h, w), (1.2 * ppm, 3 * ppm))).astype(_F)
    tissue *= (1 + 0.1 * _smooth_noise(rng, (h, w), 15 * ppm)).astype(_F)
    tissue *= (1 + 0.05 * _smooth_noise(rng, (h, 1), (max(0.5, 0.7 * shape_scale), 1.0)))
    # dark midline (spinous-process shadow), depth and width varying along the spine
    u_mid = ((xx - x_sp[:, None].astype(_F)) * np.cos(np.arctan(curve.slope(rows)))[:, None].astype(_F))
    mid_w = rng.uniform(0.022, 0.032) * wn * (1 + 0.25 * _smooth_noise(rng, (h,), 0.05 * h))
    mid_d = np.clip(rng.uniform(0.55, 0.85) + 0.12 * _smooth_noise(rng, (h,), 0.04 * h), 0.2, 0.95)
    lumbar_rows = rows > levels[n_th]["y"] - 0.5 * levels[n_th]["pitch"] if n_th < len(levels) else rows > h
    mid_w = np.where(lumbar_rows, mid_w * rng.uniform(1.2, 1.8), mid_w)
    midline = 1 - (mid_d[:, None] * np.exp(-0.5 * (u_mid / mid_w[:, None].astype(_F)) ** 2)).astype(_F)
    mult = ndimage.gaussian_filter(pt.mult, max(0.6, 1.6 * ppm))
    # speckle: magnitude of low-pass complex Gaussian (Rayleigh), horizontally elongated like the VPI texture
    sig = (max(0.4, 1.0 * shape_scale), max(0.6, 3.0 * shape_scale))
    re, im = (ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(_F), sig) for _ in range(2))
    ray = np.sqrt(re * re + im * im)
    ray /= ray.mean()
    k_speckle = rng.uniform(0.1, 0.25)
    speckle = (1 - k_speckle) + k_speckle * ray
    # gain: smooth field, depth drift down the image, lateral fall-off towards the band edges
    gain_field = np.exp(0.18 * _smooth_noise(rng, (h, w), 0.15 * h)).astype(_F)
    drift = rng.uniform(-0.25, 0.8)
    depth = np.exp(-drift * (rows / h))[:, None].astype(_F)
    lat_fall = rng.uniform(0.0, 0.45)
    lateral = 1 - _F(lat_fall) * np.clip(np.abs(lat) / hw[:, None].astype(_F), 0, 1) ** 4
    img = tissue * midline * mult * speckle * gain_field * depth * lateral
    # horizontal streak artefact bands: row-wise gain jumps and dashed lines
    n_streaks = int(min(3, rng.poisson(1.0)))
    streaks = []
    for _ in range(n_streaks):
        yc, half = rng.uniform(0.05, 0.95) * h, max(2.0, rng.uniform(3.0, 14.0) * ppm)
        r0, r1 = max(0, int(yc - half)), min(h, int(yc + half) + 1)
        n_r = r1 - r0
        row_gain = 1 + rng.uniform(0.1, 0.3) * rng.standard_normal(n_r)
        period = rng.uniform(3.0, 9.0)
        dash = (np.sin(2 * np.pi * cols[None, :] / period + rng.uniform(0, 2 * np.pi, (n_r, 1))) > 0.5)
        dash &= rng.random((n_r, 1)) < rng.uniform(0.15, 0.45)
        img[r0:r1] *= (row_gain[:, None] * (1 - rng.uniform(0.4, 0.8) * dash)).astype(_F)
        streaks.append([float(yc), float(half)])
    # band edges (soft), bottom fade, outside dark
    edge = 0.5 * (1 + np.tanh(sd_band / _F(max(0.8, 1.6 * shape_scale))))
    fade = np.clip((_F(band_bot) - yy) / _F(rng.uniform(0.02, 0.06) * h), 0, 1)
    img = ndimage.gaussian_filter(img, max(0.3, 0.6 * shape_scale)) * edge * (0.3 + 0.7 * fade)
    # global gain, gamma, saturation to uint8
    ref = float(np.median(img[in_band])) or 1.0
    gamma, level = float(rng.uniform(0.9, 1.6)), float(rng.uniform(0.42, 0.6))
    x = level * (np.clip(img, 0, None) / ref) ** gamma
    out = 255.0 * x / (1 + x**6) ** (1 / 6)  # soft saturation
    out += np.abs(rng.normal(0.0, 0.6, (h, w))) * (sd_band < 0)
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    label = np.where(in_band, pt.label, 0).astype(np.uint8)
    # rib pieces left over by the blobs painted on top (a few pixels) are dropped from the label (not from the image)
    pieces, n_pieces = ndimage.label(label == 1)
    if n_pieces:
        size = np.bincount(pieces.ravel())
        small = size < max(6, 0.15 * float(np.median(size[1:])))
        small[0] = False
        label[small[pieces]] = 0

    samp = np.linspace(y_top, y_bot, 64)
    present = sorted(int(v) for v in np.unique(label) if v)
    info = {"shape": [h, w], "shape_scale": shape_scale, "cobb_deg": cobb, "curve": kind,
            "cobb_definition": "max - min tangent inclination (deg from vertical) of the centre line at the "
                               "vertebral centres of the labelled levels",
            "levels": [lv["name"] for lv in levels], "level_tilt_deg": [float(t) for t in tilts],
            "level_centre": [[lv["y"], lv["x"]] for lv in levels],
            "upper_level": levels[upper]["name"], "lower_level": levels[lower]["name"],
            "centre_line": [[float(y), float(x)] for y, x in zip(samp, curve.x(samp), strict=True)],
            "labels_present": [US_LABELS[v] for v in present], "px_per_mm": ppm,
            "curve_params": {"components": [list(c) for c in curve.comps], "amplitude_px": curve.amp,
                             "tilt_slope": curve.g0, "y_top": y_top, "y_bot": y_bot},
            "appearance": {"gamma": gamma, "level": level, "speckle": float(k_speckle), "depth_drift": float(drift),
                           "lateral_falloff": float(lat_fall), "streak_bands": streaks,
                           "core": {k: float(v) for k, v in case_core.items()}}}
    return image, label, info


def render_us_overlay(image: Any, label: Any, out_png: str | Path, title: str | None = None,
                      alpha: float = 0.55) -> str:
    """Write a side-by-side PNG: the grey image | the image with label colours (rib blue, thoracic red, lumbar green).

    Args:
        image: (H, W) grey image (numpy or torch; a leading channel of size 1 is dropped), any numeric range (scaled
            to 0..255 by its min and max unless uint8).
        label: (H, W) label map in 0..3 (:data:`US_LABELS`).
        out_png: the PNG to write (its folder is created).
        title: optional text drawn on top.
        alpha: opacity of the label colours.

    Returns:
        The written path.

    Raises:
        ValueError: if the shapes are not 2D or differ.
    """
    from PIL import Image, ImageDraw

    def arr(x: Any) -> np.ndarray:
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        return x[0] if x.ndim == 3 and x.shape[0] == 1 else x

    img, lab = arr(image), arr(label)
    if img.ndim != 2 or lab.shape != img.shape:
        raise ValueError(f"image {img.shape} and label {lab.shape} must be the same (H, W).")
    if img.dtype != np.uint8:
        lo, hi = float(np.min(img)), float(np.max(img))
        img = np.clip((img - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    grey = np.repeat(img[..., None], 3, -1).astype(np.float32)
    col = grey.copy()
    for v, rgb in US_COLOURS.items():
        m = lab == v
        col[m] = (1 - alpha) * col[m] + alpha * np.asarray(rgb, np.float32)
    gap = np.zeros((img.shape[0], max(2, img.shape[1] // 32), 3), np.float32)
    both = np.concatenate([grey, gap, col], 1).astype(np.uint8)
    pil = Image.fromarray(both)
    if title:
        pad = Image.new("RGB", (pil.width, 14), (255, 255, 255))
        ImageDraw.Draw(pad).text((2, 1), str(title), fill=(0, 0, 0))
        canvas = Image.new("RGB", (pil.width, pil.height + 14), (255, 255, 255))
        canvas.paste(pad, (0, 0))
        canvas.paste(pil, (0, 14))
        pil = canvas
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    pil.save(out)
    return str(out)
