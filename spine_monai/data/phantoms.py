"""Seeded synthetic sagittal T2-weighted spine MRI phantoms with MRSpineSeg labels (T9..S).

Stand-in for the data of SAU-Net (Zhang, Yuan, Wang and Zhang, 2020, section 4.1: 12-15 sagittal T2 slices of
512-960 px, binary spine labels) and SAFNet (Yilizati-Yilihamu et al., 2023, BMC: MRSpineSeg, 19 structures), so that
bundles, tests and the demo run without the (non-redistributable) data. Labels follow MRSpineSeg
(:mod:`spine_monai.data.labels`; Pang et al., IEEE TMI 2021, doi:10.1109/TMI.2020.3025087).

How a case is made (:func:`generate_phantom`):

* Anatomy is a chain of rigid wedges stacked from the S1 end-plate upwards (disc, vertebra, disc, ... up to T8)
  and downwards (S1..S5 with rudimentary discs). Each wedge has a centre height and a wedge angle; lordosis and
  kyphosis come out of the wedge angles (as in the real spine), the sacral slope sets the start. A fractured
  vertebra is a kyphotic wedge (anterior height loss), so the spine above it tilts, as it does.
  Scoliosis is a lateral (x) drift of the chain with a coronal tilt of each vertebra.
* Each vertebra = body (rounded wedge with concave end-plates, 1 mm cortical rim, textured marrow, basivertebral
  vein) + pedicles, superior and inferior articular processes (facet joint gap between levels), laminae, spinous
  and transverse processes, all with the vertebra's label (MRSpineSeg labels the whole vertebra). Discs: bright
  nucleus (optional intranuclear cleft), dark annulus, bulging rim filling the end-plate concavities. Sacrum
  (label 1): five kyphotic segments with thin rudimentary discs, alae with foramina, posterior wall and crest.
* Soft tissue in spine-aligned coordinates (arc length S and posterior normal offset T to the centre line) near
  the spine: thecal sac with CSF ending at S2, cord ending at the conus (L1/L2 -20..+12 mm), cauda equina
  below, epidural fat, ligamenta flava, exiting roots in fat-filled foramina, paraspinal (striated, fatty
  streaks) and psoas muscle, aorta/iliacs and IVC. The body outline (skin, subcutaneous fat, abdominal wall,
  bowel loops, liver under a diaphragm dome, lung bases) uses the horizontal distance to the centre line.
* Geometry is rendered on ``SUBSLICES`` = 5 sub-slices per thick sagittal slice; the image is the MEAN of the
  sub-slices (real partial-volume averaging) and the label is the MAJORITY VOTE of the sub-slices (ties go to the
  sub-slice nearest the slice centre), i.e. the structure that fills most of the slice thickness. An odd count
  was chosen so that a centre sub-slice exists.
* T2 contrast, a smooth multiplicative bias field (posterior surface-coil fall-off times exp of a random quadric),
  Rician noise (magnitude of complex Gaussian) and a random global intensity scale (x0.5..x3 of
  ``BASE_INTENSITY``), float32, non-negative.

Geometry: voxel axes x = left->right (the slice axis, 12-16 slices of 3.5-4.5 mm), y = posterior->anterior,
z = inferior->superior, in-plane 256-512 px of 0.5-0.8 mm (``shape_scale`` shrinks the pixel count and enlarges
the spacing so the same anatomy fits). The affine is diagonal (the spacing), orientation code RAS, the volume is
centred at the origin. Vertebrae above T9 (T8 and the T8/T9 disc) are drawn but unlabelled, as in MRSpineSeg; the
field of view is cut at most through T9 so they rarely show.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spine_monai.data.datalist import write_datalist
from spine_monai.data.labels import BINARY_LABELS, MRSPINESEG_LABELS, MRSPINESEG_NAMES

__all__ = ["make_phantom_dataset", "generate_phantom", "render_overlay", "SUBSLICES", "BASE_INTENSITY",
           "PATHOLOGIES"]

logger = logging.getLogger(__name__)

SUBSLICES = 5
BASE_INTENSITY = 1000.0
PATHOLOGIES = ("disc_degeneration", "disc_bulge", "wedge_fracture")
_F = np.float32

# vertebra: label, centre height, AP depth, LR width, wedge angle (deg, + = lordotic), canal AP, canal LR,
# spinous length, spinous inclination (deg, downwards), spinous height (all mm)
_VERT = {
    "L5": (2, 27.0, 38.0, 50.0, 4.0, 17.0, 24.0, 24.0, 5.0, 16.0),
    "L4": (3, 27.5, 37.0, 48.0, 2.0, 16.0, 23.0, 28.0, 8.0, 18.0),
    "L3": (4, 27.5, 36.0, 46.0, 0.0, 16.0, 22.0, 30.0, 10.0, 19.0),
    "L2": (5, 26.5, 35.0, 44.0, -1.0, 16.0, 22.0, 30.0, 12.0, 18.0),
    "L1": (6, 25.5, 33.0, 42.0, -2.0, 17.0, 22.0, 30.0, 15.0, 17.0),
    "T12": (7, 24.0, 31.0, 38.0, -3.0, 17.0, 20.0, 32.0, 25.0, 14.0),
    "T11": (8, 23.0, 30.0, 36.0, -3.5, 16.0, 18.0, 34.0, 35.0, 12.0),
    "T10": (9, 22.0, 29.0, 34.0, -3.5, 15.0, 17.0, 36.0, 45.0, 10.0),
    "T9": (10, 21.0, 28.0, 32.0, -3.5, 15.0, 17.0, 37.0, 50.0, 9.0),
    "T8": (0, 20.0, 27.0, 31.0, -3.5, 15.0, 16.0, 38.0, 55.0, 9.0),
}
# disc below each vertebra: name, centre height, wedge angle (deg)
_DISC = {"L5": ("L5/S", 11.0, 12.0), "L4": ("L4/L5", 12.0, 10.0), "L3": ("L3/L4", 11.0, 7.0),
         "L2": ("L2/L3", 10.0, 5.0), "L1": ("L1/L2", 9.0, 3.0), "T12": ("T12/L1", 8.0, 0.0),
         "T11": ("T11/T12", 7.0, -1.0), "T10": ("T10/T11", 6.5, -1.5), "T9": ("T9/T10", 6.0, -1.5),
         "T8": ("T8/T9", 6.0, -1.5)}
# sacral segments S1..S5: height, AP, LR (body), kyphotic angle (deg), canal AP, canal LR, ala half-width
_SACRUM = ((28.0, 38.0, 46.0, 4.0, 14.0, 26.0, 52.0), (23.0, 31.0, 38.0, 8.0, 11.0, 22.0, 46.0),
           (19.0, 25.0, 30.0, 12.0, 8.0, 18.0, 36.0), (15.0, 19.0, 22.0, 12.0, 6.0, 14.0, 0.0),
           (11.0, 14.0, 16.0, 10.0, 5.0, 10.0, 0.0))
# T2 intensities relative to CSF (jittered per case)
_T2 = {"csf": 1.0, "fat": 0.85, "fat_deep": 0.7, "epifat": 0.78, "muscle": 0.26, "cortex": 0.07, "marrow": 0.48,
       "annulus": 0.2, "nucleus": 0.85, "nucleus_deg": 0.2, "cord": 0.45, "root": 0.3, "ligament": 0.1,
       "vessel": 0.07, "ivc": 0.25, "bowel_fluid": 0.9, "bowel_gas": 0.03, "bowel_wall": 0.35, "mesentery": 0.62,
       "liver": 0.22, "lung": 0.03, "skin": 0.35, "sdisc": 0.3}


@dataclass
class _El:
    """One rigid wedge of the chain (vertebral body, disc or sacral segment) in patient millimetres."""

    kind: str  # "vertebra" | "disc" | "sacrum" | "sdisc"
    name: str
    label: int
    c: np.ndarray  # centre (y, z)
    e: np.ndarray  # mid axis (superior), unit
    h: float  # height at the centre
    alpha: float  # wedge angle (rad), > 0 anterior taller
    a_ant: float
    a_post: float
    b: float
    s: float = 0.0  # arc length of the centre along the chain (0 = S1 end-plate)
    xc: float = 0.0
    psi: float = 0.0
    p: dict[str, Any] = field(default_factory=dict)


def _rot(e: np.ndarray, theta: float) -> np.ndarray:
    """Rotate the superior axis ``e`` = (y, z) by ``theta`` (rad) towards posterior (-y)."""
    return math.cos(theta) * e + math.sin(theta) * np.array([-e[1], e[0]])


def _round_box(p: list[np.ndarray], half: list[float], r: float) -> np.ndarray:
    """Signed distance (mm, < 0 inside) of a box with rounded edges; ``p`` local coordinates, ``half`` extents."""
    r = min(r, 0.95 * min(half))
    q = [np.abs(pi) - _F(hi - r) for pi, hi in zip(p, half, strict=True)]
    out = np.sqrt(np.maximum(q[0], 0) ** 2 + np.maximum(q[1], 0) ** 2 + np.maximum(q[2], 0) ** 2)
    return out + np.minimum(np.maximum(np.maximum(q[0], q[1]), q[2]), 0) - _F(r)


def _wedge(s: np.ndarray, t: np.ndarray, u: np.ndarray, el: _El, waist: float, cav_sup: float, cav_inf: float,
           rr: float, p_post: float = 2.6) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance of a wedge (two tilted end-planes) with a superellipse footprint, waist and concavities.

    The footprint is elliptic anteriorly and flatter (exponent ``p_post``) posteriorly; ``waist`` > 0 narrows the
    mid-height (vertebral body), < 0 bulges it (disc); ``cav_*`` > 0 recess the end-plate centres. Edges are
    rounded with radius ``rr`` (round intersection of the end-plate slab and the side wall).

    Returns:
        ``(sdf, d_sup)``: signed distance (< 0 inside, mm) and the distance below the superior end-plate.
    """
    ta, ca = _F(math.tan(el.alpha / 2)), _F(math.cos(el.alpha / 2))
    xi = np.clip(s / _F(el.h / 2), -1, 1)
    wf = 1 - _F(waist) * (1 - xi * xi)
    tn = np.abs(t) / (np.where(t < 0, _F(el.a_ant), _F(el.a_post)) * wf)
    un = np.abs(u) / (_F(el.b) * wf)
    r = np.where(t < 0, np.sqrt(tn * tn + un * un), (tn**p_post + un**p_post) ** _F(1 / p_post))
    d_side = np.sqrt(t * t + u * u) * (1 - r) / np.maximum(r, _F(1e-3))
    cc = 1 - np.minimum(r, 1) ** 2
    d_sup = (_F(el.h / 2) - t * ta - s) * ca - _F(cav_sup) * cc
    d_inf = (s + _F(el.h / 2) - t * ta) * ca - _F(cav_inf) * cc
    f1, f2, rr = -np.minimum(d_sup, d_inf), -d_side, _F(rr)
    sdf = np.minimum(-rr, np.maximum(f1, f2)) + np.sqrt(np.maximum(f1 + rr, 0) ** 2 + np.maximum(f2 + rr, 0) ** 2)
    return sdf, d_sup


class _Canvas:
    """Sub-slice grids (patient mm) with intensity, label and texture-group arrays of shape (X_sub, Y, Z)."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> None:
        self.xs, self.ys, self.zs = xs.astype(_F), ys.astype(_F), zs.astype(_F)
        shape = (len(xs), len(ys), len(zs))
        self.img = np.zeros(shape, _F)
        self.lab = np.zeros(shape, np.uint8)
        self.tex = np.zeros(shape, np.uint8)

    @staticmethod
    def _range(lo: float, hi: float, grid: np.ndarray) -> slice:
        step = float(grid[1] - grid[0])
        i0 = max(int(math.floor((lo - grid[0]) / step)), 0)
        i1 = min(int(math.ceil((hi - grid[0]) / step)) + 1, len(grid))
        return slice(i0, max(i0, i1))

    def local(self, el: _El, s_rng: tuple[float, float], t_rng: tuple[float, float], u_rng: tuple[float, float],
              ) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
        """Grid box around a local box of ``el`` and local coordinates (s, t, u) there; None when outside."""
        et = np.array([-el.e[1], el.e[0]])
        corners = np.array([el.c + s * el.e + t * et for s in s_rng for t in t_rng])
        sy = self._range(corners[:, 0].min() - 1, corners[:, 0].max() + 1, self.ys)
        sz = self._range(corners[:, 1].min() - 1, corners[:, 1].max() + 1, self.zs)
        ext = abs(math.sin(el.psi)) * max(abs(s_rng[0]), abs(s_rng[1]))
        sx = self._range(el.xc + u_rng[0] - ext - 1, el.xc + u_rng[1] + ext + 1, self.xs)
        if sx.stop <= sx.start or sy.stop <= sy.start or sz.stop <= sz.start:
            return None
        dy = self.ys[sy][None, :, None] - _F(el.c[0])
        dz = self.zs[sz][None, None, :] - _F(el.c[1])
        s0 = dy * _F(el.e[0]) + dz * _F(el.e[1])  # along the axis
        t = dz * _F(el.e[0]) - dy * _F(el.e[1])  # posterior offset
        u0 = self.xs[sx][:, None, None] - _F(el.xc)
        cp, sp = _F(math.cos(el.psi)), _F(math.sin(el.psi))  # coronal tilt (scoliosis)
        return (sx, sy, sz), s0 * cp + u0 * sp, t, u0 * cp - s0 * sp

    def paint(self, sl: tuple[slice, ...], mask: np.ndarray, value: float | np.ndarray, label: int | None = None,
              tex: int | None = None) -> None:
        """Write ``value`` (scalar or array broadcastable to the box) where ``mask``; optionally label and texture."""
        img = self.img[sl]
        mask = np.broadcast_to(mask, img.shape)
        img[mask] = np.broadcast_to(value, img.shape)[mask] if np.ndim(value) else value
        if label is not None:
            self.lab[sl][mask] = label
        if tex is not None:
            self.tex[sl][mask] = tex


def _noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma_mm: tuple[float, float, float],
           spacing: tuple[float, float, float]) -> np.ndarray:
    """Smooth Gaussian noise, zero mean, unit std, float32; drawn on a coarse grid and zoomed when sigma is large."""
    step = [max(1.0, sg / sp / 1.5) for sg, sp in zip(sigma_mm, spacing, strict=True)]
    small = tuple(max(2, int(math.ceil(n / c))) for n, c in zip(shape, step, strict=True))
    sig = [sg / (sp * n / m) for sg, sp, n, m in zip(sigma_mm, spacing, shape, small, strict=True)]
    f = ndimage.gaussian_filter(rng.standard_normal(small, dtype=_F), sig, mode="wrap")
    for ax, (n, m) in enumerate(zip(shape, small, strict=True)):
        if n != m:  # separable linear up-sampling (much faster than ndimage.zoom)
            pos = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)
            i0 = np.minimum(pos.astype(int), m - 2)
            w = (pos - i0).astype(_F).reshape([-1 if k == ax else 1 for k in range(3)])
            f = np.take(f, i0, axis=ax) * (1 - w) + np.take(f, i0 + 1, axis=ax) * w
    return ((f - f.mean()) / (f.std() + 1e-6)).astype(_F)


def _sample_pathology(rng: np.random.Generator) -> list[dict[str, Any]]:
    """About 38 % of cases get one (30 % of those two) of: disc degeneration, posterior disc bulge, wedge fracture."""
    if rng.random() >= 0.38:
        return []
    out: list[dict[str, Any]] = []
    for k in sorted(rng.choice(3, size=1 if rng.random() < 0.7 else 2, replace=False, p=[0.4, 0.35, 0.25])):
        kind = PATHOLOGIES[int(k)]
        if kind == "disc_degeneration":
            level = str(rng.choice(["L5/S", "L4/L5", "L3/L4", "L2/L3"], p=[0.4, 0.35, 0.15, 0.1]))
            out.append({"type": kind, "level": level, "height_factor": float(rng.uniform(0.4, 0.65))})
        elif kind == "disc_bulge":
            level = str(rng.choice(["L5/S", "L4/L5", "L3/L4"], p=[0.4, 0.45, 0.15]))
            out.append({"type": kind, "level": level, "depth_mm": float(rng.uniform(3.0, 7.0)),
                        "half_width_mm": float(rng.uniform(6.0, 11.0)), "offset_mm": float(rng.uniform(-5, 5))})
        else:
            level = str(rng.choice(["T11", "T12", "L1", "L2", "L3"], p=[0.15, 0.3, 0.3, 0.15, 0.1]))
            out.append({"type": kind, "level": level, "height_loss": float(rng.uniform(0.2, 0.45))})
    return out


def _build_chain(rng: np.random.Generator, pathology: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the sacrum downwards and discs/vertebrae upwards from the S1 end-plate (at the origin).

    Returns:
        ``{"els": [...], "pts": [(s, point, axis), ...] sorted by s, ...shape values}``.
    """
    path = {(p["type"], p["level"]): p for p in pathology}
    size = float(rng.uniform(0.9, 1.1))
    slope_deg = float(rng.uniform(30.0, 48.0))
    slope = math.radians(slope_deg)
    # lumbar lordosis exceeds the sacral slope by 5-25 deg so the trunk is balanced over the pelvis (the table's
    # lordotic wedges sum to 40 deg)
    lord, kyph = float(np.clip((slope_deg + rng.uniform(5.0, 25.0)) / 40.0, 0.8, 1.7)), float(rng.uniform(0.6, 1.4))
    e0 = np.array([math.sin(slope), math.cos(slope)])
    els: list[_El] = []
    pts: list[tuple[float, np.ndarray, np.ndarray]] = [(0.0, np.zeros(2), e0.copy())]
    P, e, s = np.zeros(2), e0.copy(), 0.0
    for k, (h, ap, lr, gam, cap, clr, ala) in enumerate(_SACRUM):
        h, ap, lr = h * size * rng.uniform(0.93, 1.07), ap * size, lr * size
        if k:  # rudimentary disc between fused segments
            hd = rng.uniform(0.8, 1.6) if k == 1 else rng.uniform(0.5, 0.9)
            prev = els[-1]
            c = P - hd / 2 * e
            els.append(_El("sdisc", f"S{k}/S{k + 1}", 1, c, e.copy(), hd, 0.0, (prev.a_ant + ap / 2) / 2,
                           (prev.a_post + ap / 2) / 2, (prev.b + lr / 2) / 2, s - hd / 2))
            P, s = c - hd / 2 * e, s - hd
        g = math.radians(gam * rng.uniform(0.7, 1.3))
        em = _rot(e, g / 2)
        c = P - h / 2 * em
        els.append(_El("sacrum", f"S{k + 1}", 1, c, em, h, -g, ap / 2, ap / 2, lr / 2, s - h / 2,
                       p={"cap": cap * size, "clr": clr * size, "ala": ala * size, "k": k,
                          "cav": rng.uniform(0.8, 1.8) if k == 0 else 0.3}))
        P, e, s = c - h / 2 * em, _rot(em, g / 2), s - h
        pts.append((s, P.copy(), e.copy()))
    lower = els[0]
    P, e, s = np.zeros(2), e0.copy(), 0.0
    for name, (lab, h, ap, lr, wedge, cap, clr, spl, spi, sph) in _VERT.items():
        dname, dh, dw = _DISC[name]
        dh *= size * rng.uniform(0.9, 1.1)
        dw = dw * (lord if dw > 0 else kyph) + rng.uniform(-1.5, 1.5)
        deg = path.get(("disc_degeneration", dname))
        if deg is not None:
            dh, dw = dh * deg["height_factor"], dw * 0.7
        h, ap, lr = h * size * rng.uniform(0.95, 1.05), ap * size * rng.uniform(0.95, 1.05), lr * size
        cap, clr = cap * rng.uniform(0.92, 1.08), clr * rng.uniform(0.92, 1.08)
        da = math.radians(dw)
        em = _rot(e, da / 2)
        c = P + dh / 2 * em
        if lower.kind == "vertebra":
            lower.p["disc_above"] = dh
        els.append(_El("disc", dname, MRSPINESEG_NAMES.get(dname, 0), c, em, dh, da,
                       (lower.a_ant + ap / 2) / 2 + 0.8, (lower.a_post + ap / 2) / 2 + 0.3,
                       (lower.b + lr / 2) / 2 + 0.8, s + dh / 2,
                       p={"degenerated": deg is not None, "bulge": path.get(("disc_bulge", dname)),
                          "cap": (lower.p["cap"] + cap) / 2, "clr": (lower.p["clr"] + clr) / 2,
                          "cav_lo": lower.p["cav"], "cleft": bool(rng.random() < 0.5)}))
        P, e, s = c + dh / 2 * em, _rot(em, da / 2), s + dh
        pts.append((s, P.copy(), e.copy()))
        wedge = wedge * (lord if wedge > 0 else kyph) + rng.uniform(-1.0, 1.0)
        frac = path.get(("wedge_fracture", name))
        if frac is not None:  # anterior height loss: centre height drops by half of it, kyphotic wedge
            h_full, h = h, h * (1 - frac["height_loss"] / 2)
            wedge -= math.degrees(math.atan(frac["height_loss"] * h_full / ap))
        va = math.radians(wedge)
        em = _rot(e, va / 2)
        c = P + h / 2 * em
        cav = rng.uniform(0.8, 1.8) + (1.5 if frac is not None else 0.0)
        lower = _El("vertebra", name, lab, c, em, h, va, ap / 2 * 1.02, ap / 2 * 0.98, lr / 2, s + h / 2,
                    p={"cap": cap, "clr": clr, "sp_len": spl * size * rng.uniform(0.9, 1.1),
                       "sp_incl": math.radians(spi + rng.uniform(-5, 5)), "sp_h": sph * size * 0.85,
                       "hu": max(3.2, 0.1 * lr),
                       "disc_below": dh, "lumbar": name.startswith("L"), "fracture": frac,
                       "marrow": rng.uniform(0.92, 1.08), "waist": rng.uniform(0.03, 0.08), "cav": cav})
        els[-1].p["cav_up"] = 0.8 * cav
        els.append(lower)
        P, e, s = c + h / 2 * em, _rot(em, va / 2), s + h
        pts.append((s, P.copy(), e.copy()))
    pts.sort(key=lambda q: q[0])
    lumbar = {"L1", "L2", "L3", "L4", "L5", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S"}
    lordosis = sum(math.degrees(el.alpha) for el in els if el.name in lumbar)  # L1 upper to S1 end-plate
    return {"els": els, "pts": pts, "sacral_slope_deg": math.degrees(slope), "size": size,
            "lordosis_deg": lordosis}


def _soft_tissue(rng: np.random.Generator) -> dict[str, Any]:
    """Case-level soft-tissue sizes (mm), landmark offsets and T2 intensities."""
    ant_fat = rng.uniform(8.0, 35.0)
    tis = {k: v * rng.uniform(0.88, 1.12) for k, v in _T2.items()}
    tis["csf"] = 1.0
    tis["marrow"] = rng.uniform(0.3, 0.55)
    tis["nucleus"] = rng.uniform(0.45, 0.95)
    tis["ivc"] = rng.uniform(0.1, 0.45)
    n_roots = 14
    return {
        "tis": tis, "fat_back": rng.uniform(8.0, 40.0), "m_over": rng.uniform(3.0, 12.0),
        "abd_depth": rng.uniform(110.0, 230.0), "ret": rng.uniform(6.0, 20.0), "ant_fat": ant_fat,
        "wall": ant_fat + 2 + rng.uniform(8.0, 14.0), "buttock": rng.uniform(0.0, 0.4),
        "conus": rng.uniform(-20.0, 12.0), "liver": rng.uniform(-15.0, 25.0), "diaph": rng.uniform(-10.0, 15.0),
        "diaph_post": rng.uniform(-10.0, 10.0), "sac_end": rng.uniform(-6.0, 6.0), "bif": rng.uniform(-10.0, 10.0),
        "cord": (rng.uniform(3.2, 4.2), rng.uniform(4.2, 5.4)), "psoas": rng.uniform(14.0, 22.0),
        "roots": np.stack([rng.uniform(0.05, 0.75, n_roots), rng.uniform(-0.75, 0.75, n_roots),
                           rng.uniform(0.7, 1.1, n_roots)], 1),
        "aorta": (rng.uniform(8.5, 12.0), rng.uniform(-16.0, -8.0)), "ivc": (rng.uniform(8.0, 12.0),
                                                                           rng.uniform(12.0, 20.0)),
        "coil_len": rng.uniform(120.0, 260.0),
    }


def _profiles(els: list[_El], soft: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cross-section sizes along the chain (1 mm grid in s) for the soft tissue; offsets T are posterior > 0."""
    els = sorted(els, key=lambda el: el.s)
    s_el = np.array([el.s for el in els])

    def col(fn: Any) -> np.ndarray:
        v = np.array([fn(el) for el in els], float)
        ok = ~np.isnan(v)
        return np.interp(s_el, s_el[ok], v[ok])

    nan = float("nan")
    prof = {
        "a_ant": col(lambda el: el.a_ant), "b": col(lambda el: el.b), "a_post": col(lambda el: el.a_post),
        "cap": col(lambda el: el.p.get("cap", nan)), "clr": col(lambda el: el.p.get("clr", nan)),
        "hu": col(lambda el: el.p.get("hu", nan) if el.kind == "vertebra" else nan),
        "tip": col(lambda el: el.a_post + el.p["cap"] + 2 + el.p["sp_len"] * math.cos(el.p["sp_incl"])
                   if el.kind == "vertebra" else (el.a_post + el.p["cap"] + (11 if el.p["k"] < 3 else 2))
                   if el.kind == "sacrum" else nan),
    }
    s_grid = np.arange(math.floor(s_el[0]) - 60, math.ceil(s_el[-1]) + 60, 1.0)
    out = {k: np.interp(s_grid, s_el, v) for k, v in prof.items()}
    tip = ndimage.gaussian_filter1d(ndimage.maximum_filter1d(out["tip"], 41), 8)
    out["tcc"] = out["a_post"] + out["cap"] / 2
    out["sac_t"], out["sac_a"], out["sac_b"] = out["tcc"] - 0.1 * out["cap"], 0.38 * out["cap"], 0.4 * out["clr"]
    out["tip"] = tip
    s_mid = next(el.s for el in els if el.name == "S3")
    out["skin"] = tip + soft["m_over"] + soft["fat_back"] + np.clip((s_mid - s_grid) * soft["buttock"], 0, 25)
    out["front"] = -(out["a_ant"] + soft["abd_depth"])
    return s_grid, {k: v.astype(_F) for k, v in out.items()}


def _centre_line(pts: list[tuple[float, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The chain's centre line, extended 200 mm at both ends, sampled every 1 mm in s and smoothed (sigma 8 mm)."""
    s_p = np.array([q[0] for q in pts])
    P = np.array([q[1] for q in pts])
    ext = 200.0
    s_p = np.concatenate([[s_p[0] - ext], s_p, [s_p[-1] + ext]])
    P = np.concatenate([[P[0] - ext * pts[0][2]], P, [P[-1] + ext * pts[-1][2]]])
    s_d = np.arange(s_p[0], s_p[-1], 1.0)
    yd = ndimage.gaussian_filter1d(np.interp(s_d, s_p, P[:, 0]), 8, mode="nearest")
    zd = ndimage.gaussian_filter1d(np.interp(s_d, s_p, P[:, 1]), 8, mode="nearest")
    ty, tz = np.gradient(yd), np.gradient(zd)
    nrm = np.hypot(ty, tz)
    return {"s": s_d, "y": yd, "z": zd, "ty": ty / nrm, "tz": tz / nrm}


def _rows(line: dict[str, np.ndarray], zs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image row (uniform ``zs``): centre-line y, arc length s and cosine of the axis tilt (smoothed 15 mm).

    z increases along the chain (no axis tilts by 90 deg), so the centre line is a function of z.
    """
    zsm = np.maximum.accumulate(line["z"])
    sig = 15.0 / float(zs[1] - zs[0])
    y_z = ndimage.gaussian_filter1d(np.interp(zs, zsm, line["y"]), sig, mode="nearest")
    cos_z = np.clip(ndimage.gaussian_filter1d(np.interp(zs, zsm, line["tz"]), sig, mode="nearest"), 0.35, 1.0)
    return y_z, np.interp(zs, zsm, line["s"]), cos_z


def _spine_coords(line: dict[str, np.ndarray], ys: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arc length S and posterior normal offset T (mm) of every in-plane pixel, (Y, Z), w.r.t. the centre line.

    Exact near the spine (used up to the spinous tips); behind a strong lordosis the nearest-point map fans out, so
    the body outline uses the horizontal distance of :func:`_rows` instead.
    """
    # nearest centre-line point on a 2x coarser grid (both maps are smooth at that scale), then bilinear
    yc, zc = np.r_[ys[::2], ys[-1]], np.r_[zs[::2], zs[-1]]
    Yc, Zc = np.meshgrid(yc, zc, indexing="ij")
    _, idx = cKDTree(np.c_[line["y"], line["z"]]).query(np.c_[Yc.ravel(), Zc.ravel()])
    idx = idx.reshape(Yc.shape)
    Sc = line["s"][idx]
    Tc = (Yc - line["y"][idx]) * -line["tz"][idx] + (Zc - line["z"][idx]) * line["ty"][idx]
    gy = np.minimum(np.arange(len(ys)) / 2.0, len(yc) - 1.0)
    gz = np.minimum(np.arange(len(zs)) / 2.0, len(zc) - 1.0)
    gy[-1], gz[-1] = len(yc) - 1.0, len(zc) - 1.0
    coords = np.meshgrid(gy, gz, indexing="ij")
    S, T = (ndimage.map_coordinates(a, coords, order=1).astype(_F) for a in (Sc, Tc))
    return S, T


def _bowel(f: np.ndarray, g: np.ndarray, tis: dict[str, float]) -> np.ndarray:
    """Bowel loops: tubes along the zero set of a smooth field ``f`` (lumen, then wall) in mesenteric fat; the
    lumen holds fluid or gas depending on a second, coarser field ``g``."""
    af = np.abs(f)
    lumen = np.where(g > -0.7, tis["bowel_fluid"] * (0.75 + 0.25 * np.clip(g, -1, 1)), tis["bowel_gas"])
    out = np.where(af < 0.3, lumen, np.where(af < 0.45, tis["bowel_wall"], tis["mesentery"]))
    return out.astype(_F)


def _paint_background(cv: _Canvas, S: np.ndarray, T: np.ndarray, H: np.ndarray, s_z: np.ndarray, XC: np.ndarray,
                      m: dict[str, np.ndarray], mz: dict[str, np.ndarray], fields: dict[str, np.ndarray],
                      soft: dict[str, Any], lv: dict[str, float]) -> None:
    """Soft tissue (label 0): body outline and abdomen for all sub-slices (horizontal distance ``H``, profiles
    ``mz`` per row), then near-spine layers that depend on x per thick slice (normal coordinates ``S``, ``T``)."""
    tis, K = soft["tis"], SUBSLICES
    ant, antz, Sz = -m["a_ant"], -mz["a_ant"], s_z[None, :]
    inside = (H <= mz["skin"]) & (H >= mz["front"])
    wob = fields["wobble"]
    cav = inside & (H < antz - soft["ret"] * (1 + 0.5 * wob)) & (H > mz["front"] + soft["wall"])
    # diaphragm dome (highest mid-abdomen, lowest in the posterior recess), liver edge lower anteriorly
    half = 0.5 * soft["abd_depth"] + 25
    dome = lv["diaph"] + 30 * (1 - ((H + mz["a_ant"] + 0.5 * soft["abd_depth"]) / half) ** 2) + 6 * wob
    liver_low = lv["liver"] + 0.3 * (H - antz) + 8 * wob
    thorax = cav & (Sz > dome)
    liver = cav & (Sz > liver_low) & ~thorax
    bowel = cav & (Sz <= liver_low)
    subq = inside & (H > mz["tip"] - 6)
    skin = inside & ((H > mz["skin"] - 2) | (H < mz["front"] + 2))
    afat = inside & (H >= mz["front"] + 2) & (H < mz["front"] + 2 + soft["ant_fat"])
    rect = inside & (H >= mz["front"] + 2 + soft["ant_fat"]) & (H < mz["front"] + soft["wall"])
    Sf, Tf, XCf, Hf = S.ravel(), T.ravel(), XC.ravel(), H.ravel()
    tipz = np.broadcast_to(mz["tip"], H.shape).ravel()
    mf = {k: v.ravel() for k, v in m.items()}
    grp_a = np.flatnonzero((inside & (T > ant - 2 * soft["aorta"][0] - 8) & (T < m["tcc"] + 15)).ravel())
    grp_p = np.flatnonzero((inside & (T > m["tcc"] - 0.5 * m["cap"] - 1)
                            & ((T < m["tip"] + 3) | (H < mz["tip"] + soft["m_over"] + 3))).ravel())
    ra, ua = soft["aorta"]
    ri, ui = soft["ivc"]
    for i in range(cv.img.shape[0] // K):
        img = cv.img[i * K:(i + 1) * K]
        ff = fields["fat"][i]
        fat = tis["fat"] * (1 + 0.05 * ff)
        muscle = (tis["muscle"] * (1 + 0.12 * fields["muscle"][i])
                  + (tis["fat"] - tis["muscle"]) * 0.7 * np.clip((fields["streak"][i] - 1.2) / 0.8, 0, 1))
        base = np.where(inside, tis["fat_deep"] * (1 + 0.06 * ff), 0)
        base = np.where(bowel, _bowel(fields["bowel"][i], fields["bowel2"][i], tis), base)
        base = np.where(liver, tis["liver"] * (1 + 0.04 * ff), base)
        base = np.where(thorax, tis["lung"] * (1 + 0.5 * ff), base)
        base = np.where(afat | subq, fat, np.where(rect, muscle, base))
        img[:] = np.where(skin, tis["skin"], base)  # the same for the K sub-slices
        flat, X = img.reshape(K, -1), cv.xs[i * K:(i + 1) * K][:, None]
        mus, fatf = muscle.ravel(), fat.ravel()
        # anterior / lateral: psoas, aorta + iliacs, IVC, lung bases
        idx = grp_a
        s, t, u, v = Sf[idx], Tf[idx], X - XCf[idx], flat[:, idx]
        a, b, tcc = -mf["a_ant"][idx], mf["b"][idx], mf["tcc"][idx]
        rp = soft["psoas"] * np.clip((lv["psoas_top"] - s) / (lv["psoas_top"] - lv["psoas_full"]), 0.2, 1)
        in_s = (s < lv["psoas_top"]) & (s > lv["psoas_bot"])
        for sg in (-1, 1):
            q = ((t - 0.1 * a) / (1.15 * rp)) ** 2 + ((u - sg * (b + 0.45 * rp - 3)) / rp) ** 2
            v = np.where(in_s & (q < 1), mus[idx], v)
        q = ((t - (a - ra - 1.5)) / ra) ** 2 + ((u - ua) / ra) ** 2
        v = np.where((s > lv["bif"]) & (q < 1), tis["vessel"], v)
        for sg in (-1, 1):
            d = np.clip(lv["bif"] - s, 0, None)
            q = ((t - (a - 0.6 * ra - 3)) / (0.6 * ra)) ** 2 + ((u - ua - sg * 0.8 * d) / (0.6 * ra)) ** 2
            v = np.where((s <= lv["bif"]) & (d < 80) & (q < 1), tis["vessel"], v)
        q = ((t - (a - ri - 1)) / ri) ** 2 + ((u - ui) / ri) ** 2
        v = np.where((s > lv["ivc_bot"]) & (q < 1), tis["ivc"], v)
        lung = (s > lv["diaph_post"]) & (np.abs(u) > b + 4) & (t > a) & (t < tcc + 12)
        flat[:, idx] = np.where(lung, tis["lung"], v)
        # posterior: paraspinal muscle, canal (epidural fat, flava, thecal sac, cord, cauda equina), interspinous
        idx = grp_p
        s, t, u, v = Sf[idx], Tf[idx], X - XCf[idx], flat[:, idx]
        tcc, cap, clr, hu, tip = (mf[k][idx] for k in ("tcc", "cap", "clr", "hu", "tip"))
        au = np.abs(u)
        hh = Hf[idx] - (tipz[idx] - 5 + soft["m_over"] * np.clip(au / 12, 0, 1))  # behind the muscle if > 0
        upper = s > lv["sacrum_low"] + 10
        v = np.where(upper & (t >= tcc - 0.35 * cap) & (hh <= 0), mus[idx], v)
        v = np.where(upper & (hh > 0) & (hh <= 1.2), 1.5 * tis["ligament"], v)
        above = s > lv["hiatus"]
        q = ((t - tcc) / (0.5 * cap)) ** 2 + (u / (0.5 * clr + 2 * hu + 2)) ** 2
        v = np.where(above & (q <= 1), tis["epifat"], v)
        back = tcc + 0.5 * cap
        v = np.where(above & (t > back - 2.5) & (t < back + 2.5) & (au < 0.5 * clr - 1), tis["ligament"], v)
        isp = (au < 3.5) & (t >= back + 2.5) & (t < tip - 1) & (s > lv["sacrum_top"] - 5)
        v = np.where(isp, 0.75 * fatf[idx], v)  # interspinous fat with ligament
        sac_t, sac_a, sac_b = mf["sac_t"][idx], mf["sac_a"][idx], mf["sac_b"][idx]
        sac = ((t - sac_t) / sac_a) ** 2 + (u / sac_b) ** 2 < np.clip((s - lv["sac_end"]) / 15, 0, 1)
        v = np.where(sac, tis["csf"], v)
        cr = np.clip((s - lv["conus"]) / 18, 0, 1)
        ca, cb = soft["cord"]
        v = np.where(sac & (((t - sac_t - 0.5) / ca) ** 2 + (u / cb) ** 2 < cr * cr), tis["cord"], v)
        sel = np.flatnonzero((sac & (s < lv["conus"] + 2)).any(0))  # cauda equina, only where needed
        if sel.size:
            f = np.clip((lv["conus"] - s[sel]) / 45, 0, 1)
            ts, us, vs = t[sel], u[:, sel], v[:, sel]
            in_sac = sac[:, sel]
            for to, uo, rr in soft["roots"]:
                tc = sac_t[sel] + f * to * sac_a[sel] + 0.5 * (1 - f)
                vs = np.where(in_sac & ((ts - tc) ** 2 + (us - f * uo * sac_b[sel]) ** 2 < rr * rr), tis["root"], vs)
            v[:, sel] = vs
        flat[:, idx] = v


_Part = tuple[tuple[slice, slice, slice], np.ndarray, float, "float | np.ndarray"]


def _paint_bone(cv: _Canvas, parts: list[_Part], label: int, cortex: float) -> None:
    """Two passes so that overlapping parts fuse: cortical shell (dark, labelled) first, then marrow inside."""
    for sl, sdf, _, _ in parts:
        cv.paint(sl, sdf < 0, cortex, label, tex=0)
    for sl, sdf, thick, marrow in parts:
        cv.paint(sl, sdf < -thick, marrow, tex=1)


def _vertebra_parts(cv: _Canvas, el: _El, tis: dict[str, float]) -> list[_Part]:
    """Body, pedicles, superior/inferior articular processes, laminae, spinous and transverse processes.

    The superior articular process rises above the pedicle (anterior), the inferior one descends posteriorly to
    the level of the vertebra below; the facet joint is the 1.5 mm gap between them.
    """
    p, h = el.p, el.h
    cap, clr, hu = p["cap"], p["clr"], p["hu"]
    marrow = tis["marrow"] * p["marrow"]
    parts: list[_Part] = []

    def add(s_rng: tuple[float, float], t_rng: tuple[float, float], u_c: float, u_half: float, r: float,
            shear: float = 0.0) -> None:
        (s0, s1), (t0, t1) = s_rng, t_rng
        g = cv.local(el, (s0 - abs(shear) * (t1 - t0) - 1, s1 + abs(shear) * (t1 - t0) + 1), (t0 - 1, t1 + 1),
                     (u_c - u_half - 1, u_c + u_half + 1))
        if g is not None:
            sl, s, t, u = g
            tm = (t0 + t1) / 2
            sdf = _round_box([s + (t - tm) * shear - (s0 + s1) / 2, t - tm, u - u_c],
                             [(s1 - s0) / 2, (t1 - t0) / 2, u_half], r)
            parts.append((sl, sdf, 1.5, 0.8 * marrow))

    ext = max(el.a_ant, el.a_post) * abs(math.tan(el.alpha / 2)) + 3
    g = cv.local(el, (-h / 2 - ext, h / 2 + ext), (-el.a_ant - 3, el.a_post + 3), (-el.b - 3, el.b + 3))
    if g is not None:
        sl, s, t, u = g
        sdf, d_sup = _wedge(s, t, u, el, p["waist"], p["cav"], 0.8 * p["cav"], 2.5)
        val = marrow * (1 + 0.7 * ((np.abs(s) < 1.8) & (t > el.a_post - 9) & (np.abs(u) < 2.5)))  # basivertebral
        if p["fracture"] is not None:  # marrow oedema under the depressed end-plate
            val = val * (1 + 0.6 * np.clip(1 - d_sup / 8, 0, 1))
        parts.append((sl, sdf, 1.0, val))
    t_lam = el.a_post + cap  # inner surface of the laminae
    s_p, hs_p = 0.18 * h, 0.24 * h
    d_lo, d_up = p["disc_below"], p.get("disc_above", 6.0)
    for sg in (-1, 1):
        uc = sg * (clr / 2 + hu)
        add((s_p - hs_p, s_p + hs_p), (el.a_post - 5, el.a_post + 0.65 * cap), uc, hu, 2.5)  # pedicle
        ua = sg * (clr / 2 + hu + 0.5)
        add((s_p - hs_p, h / 2 + 0.6 * d_up), (el.a_post + 0.45 * cap, t_lam + 2.5), ua, hu + 1, 2.5, 0.2)  # SAP
        add((-h / 2 - d_lo - 2, -0.1 * h), (t_lam + 4, t_lam + 12), ua, hu + 1, 2.5, 0.2)  # IAP
        tt = el.a_post + 0.5 * cap if p["lumbar"] else t_lam + 2
        add((s_p - 4.5, s_p + 4.5), (tt - 3.5, tt + 3.5), sg * (clr / 2 + 2 * hu + 10), 11.0, 2.5)  # transverse
    add((-0.45 * h - 0.2 * d_lo, 0.25 * h), (t_lam - 0.5, t_lam + 5.5), 0.0, clr / 2 + hu, 2.5, 0.25)  # laminae
    # spinous process, inclined downwards
    L, inc, hsp = p["sp_len"], p["sp_incl"], p["sp_h"] / 2
    t0, s0, w = t_lam + 2, -0.15 * h, 3.2 if p["lumbar"] else 2.6
    ci, si = math.cos(inc), math.sin(inc)
    g = cv.local(el, (s0 - L * si - hsp - 3, s0 + hsp + 3), (t0 - hsp - 1, t0 + L * ci + hsp + 1), (-w - 1, w + 1))
    if g is not None:
        sl, s, t, u = g
        along = (t - t0) * ci - (s - s0) * si
        across = (t - t0) * si + (s - s0) * ci
        parts.append((sl, _round_box([along - L / 2, across, u], [L / 2 + 1, hsp, w], 2.5), 1.5, 0.8 * marrow))
    return parts


def _sacrum_parts(cv: _Canvas, el: _El, tis: dict[str, float]) -> list[_Part]:
    """Sacral segment: body, alae with foramina (S1-S3), fused posterior wall and median crest (S1-S3)."""
    p, h = el.p, el.h
    cap, clr, k = p["cap"], p["clr"], p["k"]
    marrow = tis["marrow"] * 1.05
    parts: list[_Part] = []
    ext = max(el.a_ant, el.a_post) * abs(math.tan(el.alpha / 2)) + 3
    g = cv.local(el, (-h / 2 - ext, h / 2 + ext), (-el.a_ant - 3, el.a_post + 3), (-el.b - 3, el.b + 3))
    if g is not None:
        sl, s, t, u = g
        parts.append((sl, _wedge(s, t, u, el, 0.02, p["cav"], 0.3, 1.2)[0], 0.8, marrow))
    t_lam = el.a_post + cap
    if k < 3:
        for sg in (-1, 1):
            u0, u1 = clr / 2 - 0.5, p["ala"]
            uc, t0, t1 = sg * (u0 + u1) / 2, -0.6 * el.a_ant, t_lam + 6
            hw = (u1 - u0) / 2
            g = cv.local(el, (-h / 2 - 4, h / 2 + 4), (t0 - 1, t1 + 1), (uc - hw - 1, uc + hw + 1))
            if g is not None:
                sl, s, t, u = g
                sdf = _round_box([s, t - (t0 + t1) / 2, u - uc], [h / 2 - 0.2, (t1 - t0) / 2, (u1 - u0) / 2], 3.0)
                hole = np.sqrt((s + h / 2) ** 2 + (u - sg * (clr / 2 + 7)) ** 2) - 4.2  # sacral foramen
                parts.append((sl, np.maximum(sdf, -hole), 1.3, marrow))
        hw = clr / 2 + 3
        g = cv.local(el, (-h / 2 - 2, h / 2 + 2), (t_lam - 1, t_lam + 13), (-hw - 1, hw + 1))
        if g is not None:
            sl, s, t, u = g
            parts.append((sl, _round_box([s, t - t_lam - 3, u], [h / 2 + 0.5, 3.0, hw], 2.0), 1.3, marrow))
            parts.append((sl, _round_box([s, t - t_lam - 8, u], [0.3 * h, 4.0, 3.0], 2.0), 1.3, marrow))
    return parts


def _paint_disc(cv: _Canvas, el: _El, tis: dict[str, float]) -> None:
    """Disc: annulus with a bright (or, degenerated, dark) nucleus; an optional posterior bulge into the canal."""
    p, b = el.p, el.p["bulge"]
    dep = b["depth_mm"] if b else 0.0
    ext = max(el.a_ant, el.a_post) * abs(math.tan(el.alpha / 2)) + 4
    g = cv.local(el, (-el.h / 2 - ext, el.h / 2 + ext), (-el.a_ant - 4, el.a_post + dep + 4), (-el.b - 4, el.b + 4))
    if g is None:
        return
    sl, s, t, u = g
    sdf, _ = _wedge(s, t, u, el, -0.06, -(p.get("cav_up", 1.0) + 0.3), -(p["cav_lo"] + 0.3), 1.5)
    hh = np.maximum(el.h / 2 - t * math.tan(el.alpha / 2), 0.5)
    q = np.sqrt(((t - 0.1 * el.a_post) / (0.7 * el.a_post)) ** 2 + (u / (0.7 * el.b)) ** 2 + (s / (0.85 * hh)) ** 2)
    w = np.clip((1 - q) / 0.5, 0, 1) ** 0.7
    nuc = tis["nucleus_deg"] if p["degenerated"] else tis["nucleus"]
    val = tis["annulus"] + (nuc - tis["annulus"]) * w
    if p["cleft"]:  # intranuclear cleft: thin dark band in the mid-plane
        val = val * (1 - 0.45 * np.exp(-((s / 0.7) ** 2)) * w)
    if b:
        tc, rs = el.a_post + dep / 2 - 1.5, max(0.8 * float(np.min(hh)), 2.0)
        rt, ru = dep / 2 + 1.5, b["half_width_mm"]
        qb = np.sqrt((s / rs) ** 2 + ((t - tc) / rt) ** 2 + ((u - b["offset_mm"]) / ru) ** 2)
        sdf = np.minimum(sdf, (qb - 1) * min(rs, rt, ru))
    cv.paint(sl, sdf < 0, val, el.label, tex=0)


def _paint_root(cv: _Canvas, el: _El, tis: dict[str, float]) -> None:
    """Exiting nerve root (dorsal root ganglion) in foraminal fat just below the pedicle."""
    p, h = el.p, el.h
    cap, clr, hu = p["cap"], p["clr"], p["hu"]
    s_r, t_r = 0.18 * h - 0.26 * h - 3.5, el.a_post + 0.35 * cap
    r = 2.4 if p["lumbar"] else 1.6
    for sg in (-1, 1):
        u0, u1 = clr / 2 + 0.5, clr / 2 + 2 * hu + 6
        uc = sg * (u0 + u1) / 2
        hw = (u1 - u0) / 2
        g = cv.local(el, (s_r - r - 4, s_r + r + 4), (t_r - r - 4, t_r + r + 4), (uc - hw, uc + hw))
        if g is None:
            continue
        sl, s, t, u = g
        d = np.sqrt((s - s_r) ** 2 + (t - t_r) ** 2)
        inside_u = np.abs(u - uc) < (u1 - u0) / 2
        cv.paint(sl, (d < r + 2.5) & inside_u, tis["epifat"])
        cv.paint(sl, (d < r) & inside_u, tis["root"])


def _paint_structures(cv: _Canvas, els: list[_El], tis: dict[str, float]) -> None:
    """Roots, discs, sacrum (rudimentary discs, then segments), vertebrae from the bottom up."""
    verts = [el for el in els if el.kind == "vertebra"]
    for el in verts:
        _paint_root(cv, el, tis)
    for el in els:
        if el.kind == "disc":
            _paint_disc(cv, el, tis)
    for el in els:
        if el.kind == "sacrum":
            _paint_bone(cv, _sacrum_parts(cv, el, tis), 1, tis["cortex"])
    for el in els:  # rudimentary discs over the end-plates of the fused segments, inside their outer cortex
        if el.kind == "sdisc":
            g = cv.local(el, (-el.h / 2 - 2, el.h / 2 + 2), (-el.a_ant - 3, el.a_post + 3), (-el.b - 3, el.b + 3))
            if g is not None:
                sl, s, t, u = g
                inner = _El(el.kind, el.name, 1, el.c, el.e, el.h + 1.6, 0.0, el.a_ant - 1.5, el.a_post - 1.5,
                            el.b - 1.5)
                cv.paint(sl, _wedge(s, t, u, inner, 0.0, 0.0, 0.0, 0.5)[0] < 0, tis["sdisc"], 1, tex=0)
    for el in sorted(verts, key=lambda e: e.s):
        _paint_bone(cv, _vertebra_parts(cv, el, tis), el.label, tis["cortex"])


def _vote(lab: np.ndarray) -> np.ndarray:
    """Majority label over the sub-slices, ties to the sub-slice nearest the centre: (X, K, Y, Z) -> (X, Y, Z)."""
    k = lab.shape[1]
    order = sorted(range(k), key=lambda j: (abs(j - (k - 1) / 2), j))
    best = lab[:, order[0]].copy()
    count = (lab == best[:, None]).sum(1, dtype=np.uint8)
    for j in order[1:]:
        cand = lab[:, j]
        c = (lab == cand[:, None]).sum(1, dtype=np.uint8)
        better = c > count
        best[better], count[better] = cand[better], c[better]
    return best


def generate_phantom(rng: np.random.Generator, shape_scale: float = 1.0,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One synthetic sagittal T2 spine MRI volume with its MRSpineSeg label map.

    Args:
        rng: random generator; the same generator state gives byte-identical outputs.
        shape_scale: in (0, 1]; the in-plane pixel count is multiplied by it and the in-plane spacing divided by it
            (same anatomy, coarser grid; 0.25 gives about 64-128 px for fast tests). The slice axis is unchanged.

    Returns:
        ``(image, label, affine, info)``: image (X, Y, Z) float32 >= 0 with X the left-right slice axis; label
        (X, Y, Z) uint8 in 0..19 (MRSpineSeg); affine (4, 4) float64, diagonal spacing, RAS, centred at 0; info a
        JSON-serialisable dict (geometry, landmarks, pathology, intensity scale, noise).

    Raises:
        ValueError: if ``shape_scale`` is not in (0, 1].
    """
    if not 0 < shape_scale <= 1:
        raise ValueError(f"shape_scale={shape_scale!r} must be in (0, 1].")
    pathology = _sample_pathology(rng)
    chain = _build_chain(rng, pathology)
    els: list[_El] = chain["els"]
    by = {el.name: el for el in els}
    # scoliosis: lateral drift of the chain above the pelvis and coronal tilt of each element
    amp = rng.uniform(0.0, 3.0) if rng.random() < 0.45 else rng.uniform(3.0, 14.0)
    wl, ph, tilt, x0 = 2 * math.pi / rng.uniform(250, 500), rng.uniform(0, 2 * math.pi), rng.uniform(-0.03, 0.03), \
        rng.uniform(-5.0, 5.0)

    def xc(s: np.ndarray) -> np.ndarray:
        s = np.maximum(s, 0)
        return x0 + amp * (np.sin(wl * s + ph) - math.sin(ph)) + tilt * s

    for el in els:
        el.xc = float(xc(np.asarray(el.s)))
        el.psi = math.atan(amp * wl * math.cos(wl * el.s + ph) + tilt) if el.s > 0 else 0.0
    soft = _soft_tissue(rng)
    tis = soft["tis"]
    # grid: 256-512 px of 0.5-0.8 mm in-plane, 12-16 slices of 3.5-4.5 mm
    n_base = 16 * int(rng.integers(16, 33))
    sp0 = float(np.clip(rng.uniform(250.0, 380.0) / n_base, 0.5, 0.8))
    fov = sp0 * n_base
    n = max(32, int(round(n_base * shape_scale)))
    sp = fov / n
    nx, th = int(rng.integers(12, 17)), float(rng.uniform(3.5, 4.5))
    prof_s, prof = _profiles(els, soft)
    # field of view: sacrum always in, top cut at most through T9 (T8 is unlabelled in MRSpineSeg)
    z_req = -rng.uniform(60.0, 110.0)
    cap_name = str(rng.choice(["T9", "T10", "T11"], p=[0.6, 0.2, 0.2]))
    cel = by[cap_name]
    z_top = min(float((cel.c + rng.uniform(-0.3, 0.35) * cel.h * cel.e)[1]), z_req + fov)
    z_bot = z_top - fov
    zs = z_bot + (np.arange(n) + 0.5) * sp
    line = _centre_line(chain["pts"])
    y_z, s_z, cos_z = _rows(line, zs)
    # profiles per row as horizontal distances (normal distance / cos(tilt)); the back skin sets the posterior edge
    mz = {k: (np.interp(s_z, prof_s, prof[k]) / cos_z)[None, :].astype(_F) for k in ("skin", "front", "tip", "a_ant")}
    ys = float(np.min(y_z - mz["skin"][0])) - rng.uniform(8.0, 30.0) + (np.arange(n) + 0.5) * sp
    H = (y_z[None, :] - ys[:, None]).astype(_F)
    K = SUBSLICES
    x_thick = (np.arange(nx) - (nx - 1) / 2) * th
    xs = (x_thick[:, None] + ((np.arange(K) + 0.5) / K - 0.5) * th).ravel()
    S, T = _spine_coords(line, ys, zs)
    m = {k: np.interp(S, prof_s, v).astype(_F) for k, v in prof.items()}
    lv = {"liver": by["L1"].s + soft["liver"], "diaph": by["T11"].s + soft["diaph"],
          "diaph_post": by["T12"].s + soft["diaph_post"], "conus": by["L1/L2"].s + soft["conus"],
          "sac_end": by["S2"].s + soft["sac_end"], "hiatus": by["S4"].s, "psoas_top": by["T12"].s,
          "psoas_full": by["L5"].s, "psoas_bot": -20.0, "bif": by["L4"].s + soft["bif"], "ivc_bot": by["L5"].s,
          "sacrum_low": by["S5"].s - by["S5"].h / 2, "sacrum_top": 0.0}
    shape3 = (nx, n, n)
    spacing = (th, sp, sp)
    fields = {"muscle": _noise(rng, shape3, (2.0, 0.8, 5.0), spacing),
              "streak": _noise(rng, shape3, (2.0, 0.6, 4.0), spacing),
              "fat": _noise(rng, shape3, (2.0, 3.0, 3.0), spacing),
              "bowel": _noise(rng, shape3, (3.0, 5.0, 5.0), spacing),
              "bowel2": _noise(rng, shape3, (3.0, 12.0, 12.0), spacing),
              "wobble": _noise(rng, (1, n, n), (1.0, 15.0, 15.0), spacing)[0]}
    cv = _Canvas(xs, ys, zs)
    _paint_background(cv, S, T, H, s_z, xc(S).astype(_F), m, mz, fields, soft, lv)
    _paint_structures(cv, els, tis)
    # textures, partial-volume averaging, majority-vote labels
    img = cv.img.reshape(nx, K, n, n)
    img *= 1 + 0.03 * _noise(rng, shape3, (1.0, 0.5, 0.5), spacing)[:, None]
    img *= np.where(cv.tex.reshape(nx, K, n, n) == 1, 1 + 0.1 * _noise(rng, shape3, (1.0, 0.8, 0.8), spacing)[:, None],
                    _F(1))
    image = img.mean(1)
    label = _vote(cv.lab.reshape(nx, K, n, n))
    # bias field: posterior coil fall-off x exp(random quadric); Rician noise; global scale
    c = rng.normal(0.0, 0.12, 6)
    yn, zn, xn = (np.linspace(-1, 1, k, dtype=_F) for k in (n, n, nx))
    poly = (c[0] * yn[None, :, None] + c[1] * zn[None, None, :] + c[2] * yn[None, :, None] ** 2
            + c[3] * zn[None, None, :] ** 2 + c[4] * yn[None, :, None] * zn[None, None, :] + c[5] * xn[:, None, None])
    coil = 0.4 + 0.6 * np.exp(-np.clip(mz["skin"] - H, 0, None) / soft["coil_len"])
    image *= (np.exp(poly) * coil[None]).astype(_F)
    sigma = float(rng.uniform(0.012, 0.035))
    n1 = rng.standard_normal(shape3, dtype=_F)
    n2 = rng.standard_normal(shape3, dtype=_F)
    image = np.sqrt((image + sigma * n1) ** 2 + (sigma * n2) ** 2)
    scale = float(rng.uniform(0.5, 3.0))
    image = (image * _F(BASE_INTENSITY * scale)).astype(_F)
    affine = np.diag([th, sp, sp, 1.0])
    affine[:3, 3] = -(np.array(shape3) - 1) / 2 * np.array(spacing)
    present = sorted(int(v) for v in np.unique(label) if v)
    for pa in pathology:
        pa["in_fov"] = MRSPINESEG_NAMES[pa["level"]] in present
    info = {"shape": list(shape3), "spacing_mm": [th, sp, sp], "slice_thickness_mm": th, "subslices": K,
            "label_rule": f"majority vote of {K} sub-slices, ties to the sub-slice nearest the slice centre",
            "fov_mm": fov, "shape_scale": shape_scale, "top_cap_level": cap_name,
            "labels_present": [MRSPINESEG_LABELS[v] for v in present], "sacral_slope_deg": chain["sacral_slope_deg"],
            "lumbar_lordosis_deg": chain["lordosis_deg"], "scoliosis_amplitude_mm": amp,
            "conus_level_offset_mm": soft["conus"], "pathology": pathology, "intensity_scale": scale,
            "noise_sigma": sigma * BASE_INTENSITY * scale, "bias_coefficients": [float(v) for v in c]}
    return image, label, affine, info


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def make_phantom_dataset(modality: str = "mri", n: int = 20, out: str | Path = "phantoms", seed: int = 0,
                         folds: int = 5, shape_scale: float = 1.0, binary: bool = True, progress: bool = True) -> str:
    """Write ``n`` seeded phantoms as NIfTI plus a Decathlon-style datalist with ``folds`` folds.

    Layout: ``out/imagesTr/case_XXX.nii.gz`` (float32), ``out/labelsTr/case_XXX.nii.gz`` (uint8, MRSpineSeg
    0..19), ``out/labelsBinTr/case_XXX.nii.gz`` (uint8, 1 where label > 0), ``out/phantom_info.json`` (per-case
    :func:`generate_phantom` info) and ``out/datalist.json``. Case ``i`` uses ``numpy.random.default_rng([seed,
    i])``, so a case does not depend on ``n``.

    Args:
        modality: only ``"mri"`` (sagittal T2) is implemented.
        n: number of cases.
        out: output folder (created).
        seed: seed of the cases and of the folds.
        folds: number of cross-validation folds, ``2 <= folds <= n``.
        shape_scale: see :func:`generate_phantom`.
        binary: if True the datalist ``label`` is the binary view (SAU-Net) and ``label_multiclass`` the
            MRSpineSeg map; if False ``label`` is the MRSpineSeg map and ``label_binary`` the binary view.
        progress: show a tqdm progress bar over cases.

    Returns:
        The datalist path.

    Raises:
        ValueError: for a modality other than ``"mri"``, ``n < 1``, ``folds`` out of range or a bad ``shape_scale``.
    """
    from tqdm.auto import tqdm

    if str(modality).lower() != "mri":
        raise ValueError(f"modality={modality!r}: only 'mri' (sagittal T2-weighted) phantoms are implemented.")
    if int(n) < 1:
        raise ValueError(f"n={n!r} must be at least 1.")
    if not 2 <= int(folds) <= int(n):
        raise ValueError(f"folds={folds!r} must be between 2 and n={n}.")
    if not 0 < shape_scale <= 1:
        raise ValueError(f"shape_scale={shape_scale!r} must be in (0, 1].")
    root = Path(out)
    dirs = {k: root / k for k in ("imagesTr", "labelsTr", "labelsBinTr")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(int(n) - 1)))
    items, infos = [], {}
    for i in tqdm(range(int(n)), desc="phantoms", unit="case", disable=not progress):
        image, label, affine, info = generate_phantom(np.random.default_rng([int(seed), i]), shape_scale)
        cid = f"case_{i:0{width}d}"
        paths = {k: d / f"{cid}.nii.gz" for k, d in dirs.items()}
        _save_nifti(image, affine, paths["imagesTr"])
        _save_nifti(label, affine, paths["labelsTr"])
        _save_nifti((label > 0).astype(np.uint8), affine, paths["labelsBinTr"])
        multi, binl = str(paths["labelsTr"]), str(paths["labelsBinTr"])
        item = {"image": str(paths["imagesTr"]), "label": binl if binary else multi}
        item["label_multiclass" if binary else "label_binary"] = multi if binary else binl
        item.update(case_id=cid, pathology=[f"{p['type']}@{p['level']}" for p in info["pathology"]])
        items.append(item)
        infos[cid] = info
        logger.debug("%s: shape %s, spacing %s, labels %s", cid, info["shape"], info["spacing_mm"],
                     info["labels_present"])
    (root / "phantom_info.json").write_text(json.dumps(infos, indent=1) + "\n")
    labels = BINARY_LABELS if binary else MRSPINESEG_LABELS
    path = write_datalist(
        items, root / "datalist.json", folds=int(folds), seed=int(seed), name="spine_monai_mri_phantoms",
        description="Synthetic sagittal T2-weighted spine MRI phantoms (spine_monai.data.phantoms)",
        modality={"0": "T2w MRI (synthetic)"}, labels={str(k): v for k, v in labels.items()},
        labels_multiclass={str(k): v for k, v in MRSPINESEG_LABELS.items()}, tensorImageSize="3D",
        binary_labels=bool(binary), generator={"seed": int(seed), "shape_scale": shape_scale, "subslices": SUBSLICES})
    logger.info("wrote %d phantoms and %s", n, path)
    return str(path)


def _as_ras(image: Any, label: Any, affine: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """numpy (X, Y, Z) arrays reoriented to RAS (channel dims of size 1 dropped) and the voxel sizes."""
    import nibabel as nib

    def arr(x: Any) -> np.ndarray:
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        while x.ndim > 3 and x.shape[0] == 1:
            x = x[0]
        return x

    img = arr(image)
    lab = None if label is None else arr(label)
    aff = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=float)
    if img.ndim != 3:
        raise ValueError(f"image must be 3D (X, Y, Z), got shape {img.shape}.")
    if lab is not None and lab.shape != img.shape:
        raise ValueError(f"label shape {lab.shape} differs from image shape {img.shape}.")
    if aff.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {aff.shape}.")
    ornt = nib.orientations.io_orientation(aff)
    if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        aff = aff @ nib.orientations.inv_ornt_aff(ornt, img.shape)
        img = nib.orientations.apply_orientation(img, ornt)
        lab = None if lab is None else nib.orientations.apply_orientation(lab, ornt)
    return img, lab, np.sqrt((aff[:3, :3] ** 2).sum(0))


def _draw_sagittal(ax: Any, img: np.ndarray, lab: np.ndarray | None, zooms: np.ndarray, ix: int,
                   overlay: bool = True, title: str | None = None) -> None:
    """Sagittal slice ``ix`` of a RAS volume: superior up, anterior left, physical aspect ratio."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    sl = img[ix].T[::-1, ::-1]  # rows: superior first; columns: anterior first
    lo, hi = np.percentile(sl, [0.5, 99.5])
    ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, aspect=zooms[2] / zooms[1], interpolation="nearest")
    if overlay and lab is not None:
        lb = lab[ix].T[::-1, ::-1].astype(int)
        tab = colormaps["tab20"](np.arange(20))
        colours = ListedColormap(np.concatenate([tab[0::2], tab[1::2]]))  # vertebrae strong, discs pale
        ax.imshow(np.ma.masked_equal(np.where(lb > 0, (lb - 1) % 20 + 1, 0), 0), cmap=colours, vmin=0.5, vmax=20.5,
                  alpha=0.5, aspect=zooms[2] / zooms[1], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("anterior  <->  posterior")
    if title:
        ax.set_title(title, fontsize=9)


def render_overlay(image: Any, label: Any, affine: Any, out_png: str | Path, title: str | None = None,
                   slice_index: int | str = "middle") -> Path:
    """Write a PNG of one sagittal slice: the image and the image with the label map overlaid in colour.

    Args:
        image: 3D volume (X, Y, Z) (a leading channel of size 1 is dropped), numpy or torch; any orientation, it is
            reoriented to RAS with ``affine`` so that x is the sagittal (left-right) axis.
        label: label map of the same shape, or None for the image alone.
        affine: 4x4 voxel-to-world matrix (gives the aspect ratio and orientation).
        out_png: output file (folder created).
        title: figure title.
        slice_index: an x index, ``"middle"``, or ``"foreground"`` (the slice with the most label > 0 voxels).

    Returns:
        The PNG path.

    Raises:
        ValueError: for non-3D input, mismatched shapes, a bad affine, or a bad ``slice_index``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img, lab, zooms = _as_ras(image, label, affine)
    if slice_index == "middle":
        ix = img.shape[0] // 2
    elif slice_index == "foreground":
        if lab is None:
            raise ValueError("slice_index='foreground' needs a label.")
        ix = int(np.argmax((lab > 0).reshape(lab.shape[0], -1).sum(1)))
    elif isinstance(slice_index, (int, np.integer)) and -img.shape[0] <= slice_index < img.shape[0]:
        ix = int(slice_index) % img.shape[0]
    else:
        raise ValueError(f"slice_index={slice_index!r} must be 'middle', 'foreground' or an index < {img.shape[0]}.")
    panels = 1 if lab is None else 2
    fig = Figure(figsize=(4.5 * panels, 5.0))
    FigureCanvasAgg(fig)
    for k in range(panels):
        _draw_sagittal(fig.add_subplot(1, panels, k + 1), img, lab, zooms, ix, overlay=k == 1,
                       title=f"x slice {ix}" + (" + labels" if k else ""))
    if title:
        fig.suptitle(title)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out), dpi=100, bbox_inches="tight")
    return out
