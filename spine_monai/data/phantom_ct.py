"""Seeded synthetic thoracolumbar CT phantoms in Hounsfield units with VerSe vertebra labels.

Stand-in for the data of the attention-driven pathological spine CT method (Sekuboyina, Kukacka, Kirschke, Menze
and Valentinitsch, 2017, section 3: clinical CT scans of the spine "acquired for various patient examinations",
varying field of view, resolution and scanner calibration (hence HU), healthy and osteoporotic spines with vertebral
fractures, evaluated on the whole spine as one class; stray segmentations of ribs, pelvis and sacrum are removed by
the late fusion with the attention map). Labels follow VerSe (:data:`spine_monai.data.labels.VERSE_LABELS`: 8-19
T1-T12, 20-24 L1-L5, one instance per vertebra, body and posterior elements together; discs, ribs, sternum, sacrum
and pelvis are background), the binary view is ``label > 0``.

The geometry is the one spine model of the MRI phantoms (:mod:`spine_monai.data.phantom_anatomy`: the wedge chain
stacked from the S1 end-plate, here up to T1; the lateral drift; the centre line, cross-section profiles and
spine-aligned coordinates) and the vertebra, sacrum and disc shapes of :mod:`spine_monai.data.phantom_paint`; this
module is the CT painter:

* Pose (:func:`_supine`): the chain is built standing (sacral slope); the CT patient lies supine, so the chain is
  rotated in the sagittal plane until the L4-T6 chord is vertical (+-5 deg); lordosis and kyphosis stay.
* Pathology (:func:`_sample_ct_pathology`): 45 % of cases are osteoporotic (low cancellous HU), 80 % of those have one
  to three osteoporotic fractures at T5..L4 (most often T12/L1, then T7/T8): a wedge fracture (anterior height loss,
  kyphotic wedge) or a crush fracture (uniform collapse with deep biconcave end-plates), Genant grade from the height
  loss (20-50 %), and the fractured body's cancellous bone at 60-85 % of the case's HU. 25 % of cases have a sclerotic
  lesion (bone island or blastic metastasis, 500-1100 HU) in one vertebral body, 30 % a degenerated lumbar disc (thin,
  with a vacuum phenomenon, gas, in half of them).
* Field of view: a spine-targeted reconstruction (as clinical spine CT): 180-200 mm in-plane at 1 mm, centred on the
  spine laterally (the body is cut at the sides) and holding the back skin with 3-25 mm of air behind it (in 70 % of
  cases with the curved patient table there: 1.5 mm skins of 300 HU around foam); 220-300 mm along the spine, centred
  between T9 and L3, so every case holds thoracic levels with ribs and some hold the sacrum and the iliac wings; slices
  of 1, 1.25, 1.5, 2, 2.5 or 3 mm (the usual reconstruction increments).
* Body (rows of 1 mm along z, :func:`_body_rows`): a superellipse cross-section (flatter back) from the back skin (MRI
  profile: spinous tips + muscle + fat) to the front (chest or abdomen depth, switching below the xiphoid), with a
  chest, waist and hip half-width; skin, subcutaneous fat, wall muscle. The rib cage is a superellipse per row through
  the rib angle (behind the transverse processes) and the inner chest wall; inside it the cavity, above a two-domed
  diaphragm the thorax (lungs with vessels, mediastinum, heart in pericardial fat, oesophagus), below it the abdomen
  (rounded liver, spleen, stomach with an air-fluid level, kidneys with enhancing cortex and sinus fat in perirenal fat,
  retroperitoneal fat, bowel with gas behind an irregular peritoneal border). Contrast phase per case: none (45 %),
  portal venous (40 %) or arterial (15 %). Behind the rib-angle line: back muscles with fatty streaks.
* Near the spine, in spine-aligned coordinates (:func:`_paint_spine_soft`): psoas, quadratus lumborum, aorta (left of
  the vertebral bodies in the thorax, in front of them in the abdomen, iliac arteries below the bifurcation at L4, wall
  calcifications), IVC, canal (epidural fat, thecal sac, cord to the conus).
* Distractors that look like bone and are not labelled (cortex 80-90 % of the vertebral cortex HU): 24 ribs
  (:func:`_rib_paths`: head at the body, neck in front of the transverse process, tubercle at its tip, angle, shaft
  along the rib-cage superellipse descending anteriorly, costal cartilage to the sternum for ribs 1-7 and to the costal
  margin for 8-10, floating 11-12), the sternum, the sacrum, the iliac wings and the patient table; the aorta when
  contrast-enhanced.
* Bone (:func:`_paint_ct_bone`): cortical shell 1000-1500 HU (1-1.5 mm, thinner than a voxel shows), cancellous bone
  150-300 HU healthy, 70-140 HU osteoporotic, with an anisotropic trabecular texture (vertical striation), posterior
  elements denser than the body, a basivertebral vein channel. Discs 75-105 HU.
* Image formation: geometry on sub-slices along z (floor(slice spacing / pixel), so sub-slices are no thinner than a
  pixel: 1 for slices up to 1.5 mm, 2 for 2-2.5 mm, 3 for 3 mm); the image is the mean of the sub-slices (the slice
  profile) and the label their majority vote (:func:`spine_monai.data.phantoms._vote`); an in-plane Gaussian point
  spread (sigma 0.45 px); Gaussian noise of 10-20 HU, in-plane correlated in 70 % of cases; stored as int16 HU clipped
  to -1024..3071.

Geometry: voxel axes x = left->right (RAS: +x towards the patient's right, where the liver is), y =
posterior->anterior, z = inferior->superior, as the MRI phantoms; the affine is diagonal (the spacing), orientation
RAS, the volume centred at the origin. ``shape_scale`` shrinks the voxel counts of all three axes (the spacings grow
by 1 / shape_scale) for fast tests.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage

from spine_monai.data.labels import VERSE_LABELS, VERSE_NAMES
from spine_monai.data.phantom_anatomy import (
    _F,
    _build_chain,
    _centre_line,
    _El,
    _lateral_drift,
    _profiles,
    _rows,
    _spine_coords,
)
from spine_monai.data.phantom_paint import _bowel, _Canvas, _noise, _paint_disc, _sacrum_parts, _vertebra_parts

__all__ = ["generate_ct_phantom", "CT_PATHOLOGIES", "SLICE_SPACINGS"]

CT_PATHOLOGIES = ("wedge_fracture", "crush_fracture", "sclerotic_lesion", "disc_degeneration")
#: reconstruction increments (mm) a case's slice spacing is drawn from (at ``shape_scale=1``).
SLICE_SPACINGS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
_CHAIN_TYPES = ("wedge_fracture", "crush_fracture", "disc_degeneration")  # what _build_chain shapes
# osteoporotic fracture levels and their weights: thoracolumbar junction first, mid-thoracic second
_FX_LEVELS = ("T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4")
_FX_P = np.array([0.03, 0.05, 0.08, 0.09, 0.06, 0.06, 0.10, 0.17, 0.17, 0.09, 0.06, 0.04])
_LESION_LEVELS = ("T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
_THORACIC = tuple(f"T{k}" for k in range(1, 13))

# Hounsfield units of the soft tissues (jittered per case); bone values are drawn per case in generate_ct_phantom
_HU = {"air": -1000.0, "lung": -860.0, "fat": -100.0, "skin": 25.0, "muscle": 50.0, "blood": 40.0, "liver": 58.0,
       "spleen": 48.0, "kidney": 32.0, "csf": 8.0, "cord": 35.0, "annulus": 95.0, "nucleus": 78.0,
       "nucleus_deg": 92.0, "cartilage": 130.0, "bowel_fluid": 18.0, "bowel_gas": -990.0, "bowel_wall": 40.0,
       "mesentery": -85.0, "myocardium": 42.0, "oesophagus": 38.0}
# contrast phase: probability and enhancement (HU added) of blood, liver, spleen and kidney cortex
_CONTRAST = {"none": (0.45, 0.0, 0.0, 0.0, 0.0), "portal_venous": (0.4, 140.0, 55.0, 70.0, 120.0),
             "arterial": (0.15, 280.0, 20.0, 90.0, 170.0)}


def _smooth(a: np.ndarray | float) -> np.ndarray:
    """Smoothstep on [0, 1]."""
    a = np.clip(a, 0.0, 1.0)
    return a * a * (3 - 2 * a)


def _tiled(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: tuple[float, float, float],
           spacing: tuple[float, float, float], n: int = 48) -> np.ndarray:
    """:func:`spine_monai.data.phantom_paint._noise` on a periodic tile of ``n`` voxels along the axes where the
    field is fine (sigma < 3 voxels, drawn at full resolution with wrap-around filtering), repeated to ``shape``: a
    full-volume fine texture for a fraction of the cost (a repeat every ``n`` voxels does not show)."""
    tile = tuple(min(k, n) if sg / sp < 3 else k for k, sg, sp in zip(shape, sigma_mm, spacing, strict=True))
    t = _noise(rng, tile, sigma_mm, spacing)
    reps = [-(-k // m) for k, m in zip(shape, tile, strict=True)]
    return np.tile(t, reps)[: shape[0], : shape[1], : shape[2]]


def _sample_ct_pathology(rng: np.random.Generator) -> tuple[bool, list[dict[str, Any]]]:
    """Osteoporosis and the pathology list of a case (see the module docstring for the rates).

    Returns:
        ``(osteoporotic, pathology)``; entries ``{"type", "level", ...}``: fractures with ``height_loss`` (anterior
        for a wedge, central for a crush), ``genant_grade`` (1: < 25 %, 2: 25-40 %, 3: > 40 %) and ``hu_factor``;
        a sclerotic lesion with ``radius_mm``, ``hu`` and the ``offset`` of its centre in units of the body's
        half-sizes (axis, posterior, lateral); a degenerated disc with ``height_factor`` and ``vacuum``.
    """
    osteo = bool(rng.random() < 0.45)
    out: list[dict[str, Any]] = []
    if osteo and rng.random() < 0.8:
        nfx = 1 if rng.random() < 0.6 else 2 if rng.random() < 0.8 else 3
        picks = rng.choice(len(_FX_LEVELS), size=nfx, replace=False, p=_FX_P / _FX_P.sum())
        for k in sorted(int(i) for i in picks):
            kind = "wedge_fracture" if rng.random() < 0.6 else "crush_fracture"
            loss = float(rng.uniform(0.2, 0.5))
            out.append({"type": kind, "level": _FX_LEVELS[k], "height_loss": loss,
                        "genant_grade": 1 if loss < 0.25 else 2 if loss <= 0.4 else 3,
                        "hu_factor": float(rng.uniform(0.6, 0.85))})
    if rng.random() < 0.25:
        broken = {p["level"] for p in out}
        level = str(rng.choice([lv for lv in _LESION_LEVELS if lv not in broken]))
        out.append({"type": "sclerotic_lesion", "level": level, "radius_mm": float(rng.uniform(3.0, 8.0)),
                    "hu": float(rng.uniform(500.0, 1100.0)),
                    "offset": [float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.5, 0.3)),
                               float(rng.uniform(-0.45, 0.45))]})
    if rng.random() < 0.3:
        level = str(rng.choice(["L5/S", "L4/L5", "L3/L4", "L2/L3"], p=[0.35, 0.35, 0.2, 0.1]))
        out.append({"type": "disc_degeneration", "level": level, "height_factor": float(rng.uniform(0.4, 0.7)),
                    "vacuum": bool(rng.random() < 0.5)})
    return osteo, out


def _ct_soft(rng: np.random.Generator) -> dict[str, Any]:
    """Case-level body sizes (mm), landmark offsets, contrast phase and jittered soft-tissue HU."""
    adip = float(rng.uniform(0.0, 1.0))  # adiposity: all fat layers together
    hu = {k: v + (rng.uniform(-0.05, 0.05) * abs(v) if k not in ("air", "bowel_gas") else 0.0) for k, v in _HU.items()}
    names = list(_CONTRAST)
    phase = names[int(rng.choice(len(names), p=[_CONTRAST[k][0] for k in names]))]
    _, blood, liver, spleen, kidney = _CONTRAST[phase]
    hu["blood"] += blood * rng.uniform(0.8, 1.2)
    hu["liver"] += liver
    hu["spleen"] += spleen
    hu["kidney_cortex"] = hu["kidney"] + kidney
    hu["kidney"] += 0.6 * kidney
    return {
        "hu": hu, "phase": phase, "adiposity": adip,
        # MRI profile keys (_profiles): muscle over the spinous tips, back fat, no buttock term, abdomen depth
        "m_over": rng.uniform(3.0, 10.0), "fat_back": 5.0 + 20.0 * adip * rng.uniform(0.8, 1.2), "buttock": 0.0,
        "abd_depth": rng.uniform(110.0, 190.0) + 30.0 * adip,
        "f_lat": 8.0 + 25.0 * adip * rng.uniform(0.8, 1.2), "f_ant": 6.0 + 28.0 * adip * rng.uniform(0.8, 1.2),
        "wall": rng.uniform(8.0, 14.0), "chest_depth": rng.uniform(115.0, 160.0) + 20.0 * adip,
        "w_chest": rng.uniform(125.0, 155.0), "w_waist": rng.uniform(115.0, 145.0) + 15.0 * adip,
        "w_hip": rng.uniform(15.0, 35.0), "xiph": rng.uniform(-15.0, 15.0), "dome": rng.uniform(-15.0, 10.0),
        "dome_left": rng.uniform(10.0, 22.0), "liver": rng.uniform(-15.0, 20.0), "bif": rng.uniform(-10.0, 10.0),
        "conus": rng.uniform(-20.0, 12.0), "sac_end": rng.uniform(-6.0, 6.0),
        "aorta": (rng.uniform(9.0, 14.0), rng.uniform(-16.0, -8.0)), "ivc": (rng.uniform(8.0, 12.0),
                                                                           rng.uniform(15.0, 22.0)),
        "psoas": rng.uniform(14.0, 22.0), "cord": (rng.uniform(3.2, 4.2), rng.uniform(4.2, 5.4)),
        "calcs": int(rng.integers(0, 14)), "kidney_off": rng.uniform(-15.0, 15.0), "sternum_hw": rng.uniform(13., 17.),
        "rib_drop": rng.uniform(0.85, 1.15), "table": bool(rng.random() < 0.7), "crest": rng.uniform(-10.0, 10.0),
    }


def _to_world(el: _El, s: np.ndarray | float, t: np.ndarray | float, u: np.ndarray | float,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient (x, y, z) of local coordinates (s along the axis, t posterior, u lateral) of ``el``; the inverse of
    :meth:`spine_monai.data.phantom_paint._Canvas.local`."""
    cp, sp = math.cos(el.psi), math.sin(el.psi)
    s0, u0 = np.asarray(s) * cp - np.asarray(u) * sp, np.asarray(s) * sp + np.asarray(u) * cp
    ey, ez = el.e
    return el.xc + u0, el.c[0] + s0 * ey - np.asarray(t) * ez, el.c[1] + s0 * ez + np.asarray(t) * ey


def _supine(chain: dict[str, Any], by: dict[str, _El], jitter_deg: float) -> float:
    """Rotate the chain in the sagittal plane (about the S1 end-plate centre) so that the chord from the L4 to the
    T6 body centre is vertical up to ``jitter_deg``: the chain is built in the standing posture (sacral slope), a
    supine patient's thoracolumbar spine lies along the table. Changes ``chain["pts"]`` and each element's centre and
    axis in place.

    Returns:
        The rotation (deg, > 0 tilts the top posteriorly).
    """
    d = by["T6"].c - by["L4"].c
    ang = math.atan2(d[0], d[1]) + math.radians(jitter_deg)  # chord's anterior lean from vertical
    c, s_ = math.cos(ang), math.sin(ang)
    rot = np.array([[c, -s_], [s_, c]])  # (y, z) -> rotated by -ang (anterior lean removed)
    for el in chain["els"]:
        el.c, el.e = rot @ el.c, rot @ el.e
    chain["pts"] = [(s, rot @ P, rot @ e) for s, P, e in chain["pts"]]
    return math.degrees(ang)


def _body_rows(els: list[_El], line: dict[str, np.ndarray], xc: Any, soft: dict[str, Any], zg: np.ndarray,
               ) -> dict[str, np.ndarray]:
    """Per-row (``zg``, uniform) body outline, fat and wall layers, rib-cage ellipse and rib-angle line (mm).

    Rows use horizontal distances to the centre line (normal distances of :func:`_profiles` / cos(tilt), as the
    MRI body outline). The rib cage of a row is a superellipse as the body (exponent 3 behind: the flat posterior
    chest wall with the paravertebral gutters as its deepest part, 2 in front) centred on the body midline, with the
    half-width of the inner wall, through the rib angle (``x_b +- dx_a``, ``y_a``) and the inner chest wall in
    front.
    """
    by = {el.name: el for el in els}
    y_z, s_z, cos_z = _rows(line, zg)
    prof_s, prof = _profiles(els, soft)
    m = {k: np.interp(s_z, prof_s, v) for k, v in prof.items()}
    h = {k: m[k] / cos_z for k in ("skin", "a_ant", "a_post", "cap", "tip")}
    xs = xc(s_z)
    x_b = float(xc(np.asarray(0.0)))
    s_xiph = by["T10"].s + soft["xiph"]
    w_abd = _smooth((s_xiph - s_z) / 40.0)  # 0 in the chest, 1 in the abdomen
    depth = (1 - w_abd) * soft["chest_depth"] + w_abd * soft["abd_depth"]
    yb, yf = y_z - h["skin"], y_z + h["a_ant"] + depth
    lv = [by[k].s for k in ("S3", "L5", "L3", "T12", "T9", "T5")]
    wc, ww = soft["w_chest"], soft["w_waist"]
    W = np.interp(s_z, lv, [ww + soft["w_hip"], ww + 0.6 * soft["w_hip"], ww, 0.5 * (wc + ww), wc, wc - 10])
    lumbar = _smooth((by["T12"].s - s_z) / 30.0)
    t_ang = h["a_post"] + (1 - lumbar) * (h["cap"] + 6) + lumbar * 0.3 * h["cap"]
    y_a = y_z - t_ang - 4  # rib centre at its angle
    dx_a = np.interp(s_z, prof_s, prof["b"]) + 40.0
    f_back, f_lat, f_ant, wall = soft["fat_back"], soft["f_lat"], soft["f_ant"], soft["wall"]
    rx = W - f_lat - wall + 4  # rib centres 4 mm outside the inner wall
    y_fc = yf - f_ant - wall + 4
    k = np.clip(1 - (dx_a / rx) ** 3, 0.05, 1) ** (1 / 3)  # superellipse, p = 3 behind (a flat back)
    ry = (y_fc - y_a) / (1 + k)
    return {"z": zg, "y_z": y_z, "s_z": s_z, "cos_z": cos_z, "xs": xs, "x_b": np.full_like(zg, x_b), "yb": yb,
            "yf": yf, "W": W, "f_back": np.full_like(zg, f_back), "rx": rx, "ry": ry, "cy": y_fc - ry, "y_a": y_a,
            "dx_a": dx_a, "b": np.interp(s_z, prof_s, prof["b"]), "a_ant": h["a_ant"], "w_abd": w_abd}


def _superellipse_in(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``|dx|^p + |dy|^p < 1`` with p = 3 behind (dy < 0, a flatter back) and p = 2 in front (normalised offsets)."""
    ax, ay = np.abs(dx), np.abs(dy)
    return np.where(dy < 0, ax * ax * ax + ay * ay * ay, ax * ax + ay * ay) < 1


def _rib_paths(els: list[_El], rows: dict[str, np.ndarray], soft: dict[str, Any], step: float,
               ) -> list[dict[str, Any]]:
    """Centre lines of the 24 ribs and their costal cartilages with cross-section radii.

    Rib k (both sides) belongs to vertebra Tk: head just lateral to the posterolateral body (at the upper end-plate
    for ribs 2-9, which articulate with the disc above; mid-body for 1 and 10-12), neck in front of the transverse
    process, tubercle under its tip, angle on the rib-angle line, then the shaft along the rib-cage superellipse of each
    row (so it stays inside the body), descending towards the front. Bony rib to the costochondral junction, then
    cartilage: ribs 1-7 to the sternal edge (ascending to the level of T(k+2) for the lower ones), 8-10 rising to
    the costal margin, 11-12 floating (no cartilage).

    Returns:
        ``[{"p": (N, 3) points (x, y, z), "rn": (N,) half-height, "rb": (N,) half-thickness, "cart": (N,) bool,
        "rib": k, "side": +-1}, ...]`` sampled every ``step`` mm.
    """
    by = {el.name: el for el in els}
    zg = rows["z"]

    def row(key: str, z: np.ndarray) -> np.ndarray:
        return np.interp(z, zg, rows[key])

    drops = (25.0, 35.0, 45.0, 55.0, 62.0, 68.0, 72.0, 75.0, 75.0, 70.0, 45.0, 30.0)
    th_cc = (0.70, 0.76, 0.78, 0.78, 0.78, 0.78, 0.78, 0.72, 0.72, 0.66, 0.45, 0.32)
    th_end = (None, None, None, None, None, None, None, 0.86, 0.83, 0.78, None, None)
    x_b = float(rows["x_b"][0])
    out = []
    for k in range(1, 13):
        el = by[f"T{k}"]
        p, h = el.p, el.h
        narrow = (0.6, 0.75, 0.85, 0.93)[k - 1] if k <= 4 else 1.0
        small = 0.75 if k in (1, 11, 12) else 1.0
        for side in (-1, 1):
            s_head = h / 2 - 1.5 if 2 <= k <= 9 else 0.1 * h
            r_head = 4.5 * small
            head = _to_world(el, s_head, 0.45 * el.a_post, side * (0.96 * el.b + r_head + 1.5))
            tub = _to_world(el, 0.18 * h - 2, el.a_post + p["cap"] - 6, side * (p["clr"] / 2 + 2 * p["hu"] + 17))
            z_a = float(tub[2]) - 4
            x_a = x_b + side * float(row("dx_a", np.asarray(z_a)))
            ang = (np.asarray(x_a), row("y_a", np.asarray(z_a)), np.asarray(z_a))
            # shaft: theta from the angle (posterior) towards the front; z drops with theta
            rx0 = float(row("rx", np.asarray(z_a))) * narrow
            th_a = math.asin(min(abs(x_a - x_b) / rx0, 0.98) ** 1.5)  # superellipse parameter of the angle
            th1 = th_cc[k - 1] * math.pi
            cart_end = th_end[k - 1]
            if k <= 7:
                cart_end = math.pi - math.asin(min((soft["sternum_hw"] + 3) / rx0, 0.9))
            drop = drops[k - 1] * soft["rib_drop"]
            n_sh = max(8, int(rx0 * (th1 - th_a) / step))
            th = np.linspace(th_a, th1, n_sh)
            z = z_a - drop * ((th - th_a) / (th1 - th_a)) ** 1.3
            if cart_end is not None:
                n_c = max(4, int(rx0 * (cart_end - th1) / step))
                thc = np.linspace(th1, cart_end, n_c + 1)[1:]
                if k <= 7:
                    z_end = float(np.interp(by[f"T{min(k + 2, 9)}"].s, rows["s_z"], zg)) if k >= 3 else z[-1] - 10
                    z_end = min(z_end, float(z[-1]) + 30)
                else:
                    z_end = float(z[-1]) + 25
                zc = z[-1] + (z_end - z[-1]) * (thc - th1) / (cart_end - th1)
                th, z = np.r_[th, thc], np.r_[z, zc]
            sc = np.where(np.arange(len(th)) < 6, 1.0, narrow)  # narrower upper ribs, but keep the angle
            x = x_b + side * row("rx", z) * sc * np.sin(th) ** np.where(np.cos(th) > 0, 2 / 3, 1.0)
            y = row("cy", z) - row("ry", z) * np.sign(np.cos(th)) * np.abs(np.cos(th)) ** np.where(np.cos(th) > 0,
                                                                                                 2 / 3, 1.0)
            cart = th > th1 + 1e-9
            # medial part: head -> tubercle -> angle, then the shaft; resampled every `step` mm and smoothed
            lead = np.array([[float(head[0]), float(head[1]), float(head[2])],
                             [float(tub[0]), float(tub[1]), float(tub[2])],
                             [float(ang[0]), float(ang[1]), float(ang[2])]])
            pts = np.r_[lead, np.c_[x, y, z][1:]]
            is_cart = np.r_[np.zeros(3, bool), cart[1:]]
            seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
            arc = np.r_[0.0, np.cumsum(seg)]
            ss = np.arange(0.0, arc[-1], step)
            res = np.stack([np.interp(ss, arc, pts[:, i]) for i in range(3)], 1)
            res = ndimage.gaussian_filter1d(res, max(1.0, 4.0 / step), axis=0, mode="nearest")
            c = np.interp(ss, arc, is_cart.astype(float)) > 0.5
            a_tub = arc[1]
            f_head = np.clip(1 - ss / max(a_tub, 1.0), 0, 1)  # 1 at the head, 0 from the tubercle on
            rn = np.where(c, 5.0, 3.6 + (5.6 * small - 3.6) * np.clip((ss - a_tub) / 30, 0, 1))
            rb = np.where(c, 3.8, 3.6 - 0.6 * np.clip((ss - a_tub) / 30, 0, 1))
            rn = np.maximum(rn, r_head * f_head**2)
            rb = np.maximum(rb, r_head * f_head**2)
            out.append({"p": res, "rn": rn, "rb": rb * small ** 0.5, "cart": c, "rib": k, "side": side})
    return out


def _stamp_tubes(cv: _Canvas, paths: list[dict[str, Any]], sdf: np.ndarray, cart_sdf: np.ndarray) -> None:
    """Rasterise tubes with elliptic cross-sections (half-height ``rn`` towards superior, half-thickness ``rb``) as
    unions of oriented ellipsoid beads: ``sdf`` (bone) and ``cart_sdf`` (cartilage) keep the minimum signed distance
    (mm, < 0 inside; approximated as (sqrt(q) - 1) * rb for the normalised quadratic form q)."""
    xs, ys, zs = cv.xs, cv.ys, cv.zs
    lo = np.array([xs[0], ys[0], zs[0]])
    st = np.array([xs[1] - xs[0], ys[1] - ys[0], zs[1] - zs[0]])
    hi = np.array([len(xs), len(ys), len(zs)])
    for path in paths:
        p = path["p"]
        tang = np.gradient(p, axis=0)
        tang /= np.linalg.norm(tang, axis=1, keepdims=True) + 1e-9
        nrm = np.array([0.0, 0.0, 1.0]) - tang[:, 2:3] * tang
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
        bin_ = np.cross(tang, nrm)
        step = float(np.linalg.norm(p[1] - p[0])) if len(p) > 1 else 1.0
        for i in range(len(p)):
            rn, rb = float(path["rn"][i]), float(path["rb"][i])
            r = max(rn, rb) + 1.0
            i0 = np.maximum(np.floor((p[i] - r - lo) / st).astype(int), 0)
            i1 = np.minimum(np.ceil((p[i] + r - lo) / st).astype(int) + 1, hi)
            if np.any(i1 <= i0):
                continue
            sl = (slice(i0[0], i1[0]), slice(i0[1], i1[1]), slice(i0[2], i1[2]))
            dx = xs[sl[0]][:, None, None] - _F(p[i, 0])
            dy = ys[sl[1]][None, :, None] - _F(p[i, 1])
            dz = zs[sl[2]][None, None, :] - _F(p[i, 2])

            def comp(v: np.ndarray, dx: np.ndarray = dx, dy: np.ndarray = dy, dz: np.ndarray = dz) -> np.ndarray:
                return dx * _F(v[0]) + dy * _F(v[1]) + dz * _F(v[2])

            rt = max(rb, 0.8 * step)
            q = (comp(tang[i]) / rt) ** 2 + (comp(nrm[i]) / rn) ** 2 + (comp(bin_[i]) / rb) ** 2
            d = (np.sqrt(q) - 1) * _F(rb)
            tgt = cart_sdf if path["cart"][i] else sdf
            tgt[sl] = np.minimum(tgt[sl], d)


def _paint_ct_bone(cv: _Canvas, parts: list[tuple[Any, np.ndarray, float, Any]], label: int, cortex: float,
                   body: float, posterior: float) -> None:
    """Two passes so that overlapping parts fuse: cortical shell (labelled) first, then cancellous bone inside.

    ``parts`` come from :func:`spine_monai.data.phantom_paint._vertebra_parts` / ``_sacrum_parts`` (their T2 values
    are not used): a part whose value is an array (the vertebral body's marrow map) gets ``body`` HU, the others
    (scalar values: pedicles, processes, laminae, sacral alae) ``posterior`` HU; texture group 1 (trabecular).
    """
    for sl, sdf, _, _ in parts:
        cv.paint(sl, sdf < 0, cortex, label, tex=0)
    for sl, sdf, thick, val in parts:
        cv.paint(sl, sdf < -thick, body if np.ndim(val) else posterior, tex=1)


def _zslab(mask: np.ndarray) -> slice | None:
    """The z-range (last axis) where ``mask`` has a voxel, None when empty."""
    idx = np.flatnonzero(mask.any(axis=(0, 1)))
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else None


def _paint_background(cv: _Canvas, rows: dict[str, np.ndarray], soft: dict[str, Any], lv: dict[str, float],
                      rng: np.random.Generator, spacing: tuple[float, float, float]) -> None:
    """Air, body outline, fat, wall muscle, back muscles, thorax (lungs, mediastinum, heart, oesophagus) and abdomen
    (retroperitoneal fat, bowel, liver, spleen, stomach, kidneys); label 0. Everything as (X, Y, Z) broadcasts of
    the per-row profiles ``rows`` (sampled at ``cv.zs``)."""
    hu = soft["hu"]
    X = cv.xs[:, None, None]
    Y = cv.ys[None, :, None]
    Z = cv.zs[None, None, :]
    r = {k: v[None, None, :].astype(_F) for k, v in rows.items()}
    shape = cv.img.shape
    f_fat = _noise(rng, shape, (4.0, 4.0, 4.0), spacing)
    f_mus = _tiled(rng, shape, (2.0, 2.0, 6.0), spacing)
    f_str = _tiled(rng, shape, (1.2, 1.2, 10.0), spacing)
    x_b = r["x_b"]
    dxb = X - x_b
    # body outline and layers
    yc, A, W = (r["yb"] + r["yf"]) / 2, (r["yf"] - r["yb"]) / 2, r["W"]
    body = _superellipse_in(dxb / W, (Y - yc) / A)
    skin_in = _superellipse_in(dxb / (W - 2), (Y - yc) / (A - 2))
    fb, fl, fa = soft["fat_back"], soft["f_lat"], soft["f_ant"]
    yc1, A1 = yc + (fb - fa) / 2, A - (fb + fa) / 2
    inner = _superellipse_in(dxb / (W - fl), (Y - yc1) / A1)
    img = cv.img
    img[:] = hu["air"]
    img[body] = hu["skin"]
    fat = hu["fat"] + 8 * f_fat
    muscle = hu["muscle"] + 6 * f_mus
    streak = np.clip((f_str - 1.6) / 0.8, 0, 1) * (0.2 + 0.4 * soft["adiposity"])  # fatty infiltration
    muscle_s = muscle + (hu["fat"] - hu["muscle"]) * streak
    np.copyto(img, fat, where=skin_in)
    np.copyto(img, muscle_s, where=inner)
    del f_str, streak, muscle, muscle_s, body, skin_in
    # rib cage and the rib-angle line: cavity inside the cage (5 mm inside the rib centres) and in front of the line
    # from the vertebral body's posterolateral corner to the rib angle
    dxs = np.abs(X - r["xs"])
    cage = _superellipse_in(dxb / (r["rx"] - 5), (Y - r["cy"]) / (r["ry"] - 5))
    w = np.clip((dxs - r["b"] - 3) / (r["dx_a"] - r["b"] - 3), 0, 1)
    front = r["y_z"] - 5 + (r["a_ant"] + 5) * np.sqrt(np.clip(1 - (dxs / (r["b"] + 3)) ** 2, 0, 1))
    y_pb = np.where(dxs < r["b"] + 3, front, (1 - w) * (r["y_z"] - 5) + w * (r["y_a"] + 4))
    cavity = cage & (Y > y_pb) & inner
    # diaphragm: two domes (the right one higher), lower behind (posterior recesses)
    y_d = r["y_z"] + r["a_ant"] + 55
    rx_d = 0.55 * (r["rx"] - 5)
    dome = np.full(np.broadcast_shapes(X.shape, Y.shape, Z.shape), -np.inf, _F)
    for sg, z_ap in ((1, lv["dome_r"]), (-1, lv["dome_l"])):
        ky = np.where(Y < y_d, _F(85.0), _F(40.0))
        dome = np.maximum(dome, z_ap - 40 * ((X - x_b - sg * 0.45 * rx_d) / rx_d) ** 2 - ky * ((Y - y_d) / 90) ** 2)
    thorax = cavity & (Z > dome)
    abdomen = cavity & ~thorax
    del dome, cage, y_pb, w, front, cavity, inner
    # thorax: lungs with vessels, mediastinum in front of the spine, heart in pericardial fat, oesophagus (the work
    # is done on the z-slab that holds thorax, the abdomen's below on its own slab)
    sl = _zslab(thorax)
    if sl is not None:
        th, im, Zs, dx, ff = thorax[..., sl], img[..., sl], Z[..., sl], dxb[..., sl], f_fat[..., sl]
        rs = {k: v[..., sl] for k, v in r.items()}
        yv = rs["y_z"] + rs["a_ant"]  # anterior surface of the vertebral bodies
        f_lung = _tiled(rng, th.shape, (1.2, 1.2, 1.2), spacing)
        lung = hu["lung"] + 25 * ff + np.where(f_lung > 1.9, 700.0 * np.clip(f_lung - 1.9, 0, 1.2), 0.0)
        np.copyto(im, lung.astype(_F), where=th)
        med = th & (((dx + 8) / 30) ** 2 + ((Y - yv - 40) / 52) ** 2 < 1)
        np.copyto(im, (hu["fat"] + 40 + 30 * ff).astype(_F), where=med)
        q = ((dx + 20) / 55) ** 2 + ((Y - yv - 68) / 46) ** 2 + ((Zs - lv["dome_l"] - 40) / 58) ** 2
        heart = th & (q < 1.2)  # in front of the aorta and oesophagus, on the left dome
        np.copyto(im, _F(hu["fat"]), where=heart)
        np.copyto(im, (hu["myocardium"] + 4 * f_mus[..., sl]).astype(_F), where=heart & (q < 1.0))
        np.copyto(im, _F(hu["blood"]), where=heart & (q < 0.55))
        oes = th & (((X - rs["xs"] - 4) / 9) ** 2 + ((Y - yv - 9) / 7) ** 2 < 1)
        np.copyto(im, _F(hu["oesophagus"]), where=oes)
    # abdomen: retroperitoneal fat behind, bowel in front (fluid, gas, walls, mesentery), organs on top
    sl = _zslab(abdomen)
    if sl is not None:
        ab, im, Zs, dx, ff = abdomen[..., sl], img[..., sl], Z[..., sl], dxb[..., sl], f_fat[..., sl]
        rs = {k: v[..., sl] for k, v in r.items()}
        yv = rs["y_z"] + rs["a_ant"]
        fat_s = fat[..., sl]
        np.copyto(im, fat_s, where=ab)
        bw = _bowel(_noise(rng, ab.shape, (5.0, 5.0, 5.0), spacing), _noise(rng, ab.shape, (12.0, 12.0, 12.0), spacing),
                    {"bowel_fluid": hu["bowel_fluid"], "bowel_gas": hu["bowel_gas"], "bowel_wall": hu["bowel_wall"],
                     "mesentery": hu["mesentery"]})
        np.copyto(im, bw, where=ab & (Y > yv + 12 + 8 * ff))  # an irregular posterior peritoneal border
        # lower liver edge: a rounded (paraboloid) surface, lowest under the right lobe (90 mm right of the midline,
        # 25 mm in front of the vertebral bodies), rising all around, faster behind the left lobe
        left = np.maximum(15 - dx, 0)
        liver_low = (lv["liver"] - 25 + 0.006 * (dx - 90) ** 2 + 0.006 * (Y - yv - 25) ** 2
                     + 0.01 * left * left * np.maximum(yv + 20 - Y, 0) / 30)
        np.copyto(im, (hu["liver"] + 5 * ff).astype(_F), where=ab & (Zs > liver_low))
        spl = ab & (((dx + rs["rx"] - 38) / 24) ** 2 + ((Y - rs["y_z"] - 8) / 45) ** 2
                    + ((Zs - lv["spleen"]) / 50) ** 2 < 1)
        np.copyto(im, _F(hu["spleen"]), where=spl)
        qs = ((dx + 48) / 40) ** 2 + ((Y - yv - 70) / 36) ** 2 + ((Zs - lv["dome_l"] + 45) / 48) ** 2
        stom = ab & (qs < 1)  # stomach: wall, then gas in front of the fluid (supine air-fluid level)
        np.copyto(im, _F(hu["bowel_wall"]), where=stom)
        gas = Y > yv + 70 + lv["gas_level"]
        np.copyto(im, np.where(gas, _F(hu["bowel_gas"]), _F(hu["bowel_fluid"])), where=stom & (qs < 0.8))
        for sg, zk in ((1, lv["kidney_r"]), (-1, lv["kidney_l"])):
            qk = ((X - rs["xs"] - sg * (rs["b"] + 48)) / 28) ** 2 + ((Y - rs["y_z"] - 2) / 22) ** 2 \
                + ((Zs - zk) / 55) ** 2
            np.copyto(im, fat_s, where=ab & (qk < 1.7))  # perirenal fat
            kid = ab & (qk < 1)
            np.copyto(im, _F(hu["kidney_cortex"]), where=kid)
            np.copyto(im, _F(hu["kidney"]), where=kid & (qk < 0.55))
            np.copyto(im, _F(hu["fat"]), where=kid & (qk < 0.2))  # renal sinus fat
    # pelvis: gluteal muscles behind and iliacus inside the iliac wings come with the ilium (_paint_ilium)


def _paint_spine_soft(cv: _Canvas, S: np.ndarray, T: np.ndarray, xc: Any, prof_s: np.ndarray,
                      prof: dict[str, np.ndarray], soft: dict[str, Any], lv: dict[str, Any]) -> None:
    """Structures in spine-aligned coordinates (arc length S, posterior offset T, lateral u = x - xc(S)): psoas,
    quadratus lumborum, aorta (+ iliac arteries, wall calcifications), IVC; canal contents (epidural fat, thecal sac,
    cord). Each group works on the (y, z) pixels of its T band and the x range it can reach."""
    hu = soft["hu"]
    ra, ua_abd = soft["aorta"]
    ri, ui = soft["ivc"]
    m = {k: np.interp(S, prof_s, v).astype(_F) for k, v in prof.items()}
    flat = cv.img.reshape(cv.img.shape[0], -1)
    s_all = S.ravel()

    def group(mask: np.ndarray, half_x: float) -> tuple[np.ndarray, slice, dict[str, np.ndarray], np.ndarray]:
        idx = np.flatnonzero(mask.ravel())
        x_c = xc(s_all[idx]).astype(_F)
        sx = cv._range(float(x_c.min(initial=0.0)) - half_x, float(x_c.max(initial=0.0)) + half_x, cv.xs)
        return idx, sx, {k: v.ravel()[idx] for k, v in m.items()}, cv.xs[sx][:, None] - x_c[None, :]

    # in front and beside the bodies: psoas (T12 .. pelvis, growing downwards), quadratus lumborum (T12 .. iliac
    # crest, lateral to the transverse processes), aorta (left of the bodies in the thorax, in front of them below
    # T12; bifurcation; calcified plaques), IVC (right, in front, from L5 to the liver)
    idx, sx, mf, u = group((T > -m["a_ant"] - 2 * ra - 12) & (T < m["tcc"] + 12) & (S > lv["pelvis"] - 90), 110.0)
    if idx.size:
        s, t, v = s_all[idx], T.ravel()[idx], flat[sx][:, idx]
        a, b, cap, clr, hup = -mf["a_ant"], mf["b"], mf["cap"], mf["clr"], mf["hu"]
        rp = soft["psoas"] * np.clip((lv["psoas_top"] - s) / (lv["psoas_top"] - lv["psoas_full"]), 0.2, 1)
        in_s = (s < lv["psoas_top"]) & (s > lv["pelvis"] - 80)
        for sg in (-1, 1):
            q = ((t - 0.1 * a) / (1.15 * rp)) ** 2 + ((u - sg * (b + 0.45 * rp - 3)) / rp) ** 2
            v = np.where(in_s & (q < 1), hu["muscle"], v)
            q = ((t - 0.2 * cap) / 9) ** 2 + ((u - sg * (clr / 2 + 2 * hup + 30)) / 15) ** 2
            v = np.where((s < lv["psoas_top"]) & (s > lv["crest"]) & (q < 1), hu["muscle"], v)
        wa = _smooth((lv["aorta_turn"] - s) / 50)  # 0 thoracic, 1 abdominal
        ua = (1 - wa) * -(b + 0.55 * ra + 2) + wa * ua_abd
        ta = (1 - wa) * (0.35 * a) + wa * (a - ra - 1.5)
        q = ((t - ta) / ra) ** 2 + ((u - ua) / ra) ** 2
        above = s > lv["bif"]
        v = np.where(above & (q < 1), hu["blood"], v)
        d = np.clip(lv["bif"] - s, 0, None)
        for sg in (-1, 1):
            qi = ((t - (a - 0.6 * ra - 3)) / (0.6 * ra)) ** 2 + ((u - ua - sg * 0.8 * d) / (0.6 * ra)) ** 2
            v = np.where(~above & (d < 80) & (qi < 1), hu["blood"], v)
        for s_c, ang, hu_c in lv["calcs"]:
            sel = above & (np.abs(s - s_c) < 3) & (q < 1.15) & (q > 0.7)
            dirn = (t - ta) * math.cos(ang) + (u - ua) * math.sin(ang)
            v = np.where(sel & (dirn > 0.75 * ra), hu_c, v)
        qv = ((t - (a - 0.7 * ri - 1)) / (0.7 * ri)) ** 2 + ((u - ui) / ri) ** 2
        v = np.where((s > lv["ivc_bot"]) & (s < lv["ivc_top"]) & (qv < 1), hu["blood"] - 5, v)
        flat[sx, idx] = v
    # canal: epidural fat, thecal sac (CSF, to S2), cord (to the conus)
    idx, sx, mf, u = group((np.abs(T - m["tcc"]) < 0.5 * m["cap"] + 1) & (S > lv["hiatus"]), 40.0)
    if idx.size:
        s, t, v = s_all[idx], T.ravel()[idx], flat[sx][:, idx]
        tcc, cap, clr, hup = mf["tcc"], mf["cap"], mf["clr"], mf["hu"]
        q = ((t - tcc) / (0.5 * cap)) ** 2 + (u / (0.5 * clr + 2 * hup + 2)) ** 2
        v = np.where(q <= 1, hu["fat"] + 10, v)
        sac = ((t - mf["sac_t"]) / mf["sac_a"]) ** 2 + (u / mf["sac_b"]) ** 2 < np.clip((s - lv["sac_end"]) / 15, 0, 1)
        v = np.where(sac, hu["csf"], v)
        cr = np.clip((s - lv["conus"]) / 18, 0, 1)
        ca, cb = soft["cord"]
        v = np.where(sac & (((t - mf["sac_t"] - 0.5) / ca) ** 2 + (u / cb) ** 2 < cr * cr), hu["cord"], v)
        flat[sx, idx] = v


def _paint_ilium(cv: _Canvas, rows: dict[str, np.ndarray], by: dict[str, _El], lv: dict[str, float],
                 hu_cortex: float, hu_canc: float, hu: dict[str, float]) -> None:
    """Iliac wings (not labelled): per side an elliptic arc in each axial row from the sacroiliac joint (3 mm
    lateral to the sacral ala) bulging posterolaterally to the anterior superior iliac spine, thick behind (12 mm)
    and thin in the wing (4 mm), from the crest (about the L4/L5 disc, arched) down to S3 where it narrows towards
    the acetabulum; gluteal muscle behind it and iliacus inside."""
    zs = cv.zs
    top = lv["crest_z"] + 12
    zi = np.flatnonzero((zs < top) & (zs > lv["ilium_bot_z"]))
    if zi.size == 0:
        return
    sl_z = slice(int(zi[0]), int(zi[-1]) + 1)
    Z = zs[sl_z][None, None, :]
    rz = {k: np.interp(zs[sl_z], rows["z"], rows[k])[None, None, :].astype(_F) for k in ("xs", "y_z", "x_b", "W")}
    s1 = by["S1"]
    ala = s1.p["ala"]
    y_si = float(s1.c[0]) - s1.a_post  # the sacrum's posterior body surface
    X = cv.xs[:, None, None]
    Y = cv.ys[None, :, None]
    img, lab = cv.img[:, :, sl_z], cv.lab[:, :, sl_z]
    frac = np.clip((Z - lv["ilium_bot_z"]) / (lv["crest_z"] - lv["ilium_bot_z"]), 0, 1)
    for sg in (-1, 1):
        cx = rz["xs"] + sg * (ala + 3)
        rx = np.maximum(rz["W"] - 25 - (ala + 3), 20) * (0.55 + 0.45 * frac)
        y_asis = y_si + 75
        ry = y_asis - y_si
        dx, dy = sg * (X - cx), Y - y_asis
        rho = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
        phi = np.arctan2(dx / rx, -dy / ry)  # 0 at the joint (posterior), pi/2 lateral
        in_arc = (dx > -3) & (dy < 5) & (phi > -0.1)
        thick = 4 + 8 * np.clip(1 - phi / 0.6, 0, 1) + 4 * np.clip((Z - lv["crest_z"] + 15) / 15, 0, 1)
        crest = lv["crest_z"] + 12 * np.sin(np.clip(phi, 0, math.pi / 2) * 2)
        dist = (rho - 1) * np.minimum(rx, ry) * 0.9
        sdf = np.maximum(np.abs(dist) - thick / 2, Z - crest)
        sdf = np.where(in_arc, sdf, 99.0)
        inside_body = img > -500
        glut = in_arc & (dist > 0) & (dist < 45) & inside_body & (Z < crest) & (lab == 0)
        np.copyto(img, _F(hu["muscle"]), where=glut)
        ilc = in_arc & (dist < 0) & (dist > -18) & (Z < crest) & inside_body
        np.copyto(img, _F(hu["muscle"] + 5), where=ilc)
        bone = sdf < 0
        img[bone] = hu_cortex
        lab[bone] = 0
        cv.tex[:, :, sl_z][bone] = 0
        canc = sdf < -1.2
        img[canc] = hu_canc
        cv.tex[:, :, sl_z][canc] = 1


def generate_ct_phantom(rng: np.random.Generator, shape_scale: float = 1.0,
                        pathology: list[dict[str, Any]] | None = None,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One synthetic thoracolumbar CT volume in HU with its VerSe vertebra label map.

    Args:
        rng: random generator; the same generator state gives byte-identical outputs.
        shape_scale: in (0, 1]; every voxel count is multiplied by it and every spacing divided by it (same
            anatomy, coarser grid; 0.25 gives about 50 x 50 x 25-75 voxels for fast tests).
        pathology: the case's pathology list instead of a drawn one (entries as :func:`_sample_ct_pathology`
            returns; the case is then osteoporotic when it holds a fracture); ``None`` draws it.

    Returns:
        ``(image, label, affine, info)``: image (X, Y, Z) int16 HU; label (X, Y, Z) uint8 VerSe values (8-19
        T1-T12, 20-24 L1-L5); affine (4, 4) float64, diagonal spacing, RAS, centred at 0; info a JSON-serialisable
        dict (geometry, levels present, fractures, sclerotic lesions, disc degeneration, HU, contrast, noise).

    Raises:
        ValueError: if ``shape_scale`` is not in (0, 1].
    """
    if not 0 < shape_scale <= 1:
        raise ValueError(f"--shape_scale {shape_scale!r} must be in (0, 1].")
    osteo, drawn = _sample_ct_pathology(rng)
    if pathology is not None:
        drawn = [dict(p) for p in pathology]
        osteo = any(p["type"].endswith("fracture") for p in drawn)
    pathology = drawn
    chain = _build_chain(rng, [p for p in pathology if p["type"] in _CHAIN_TYPES], top="T1")
    els: list[_El] = chain["els"]
    by = {el.name: el for el in els}
    supine_deg = _supine(chain, by, float(rng.uniform(-5.0, 5.0)))
    xc, amp = _lateral_drift(rng, els)
    soft = _ct_soft(rng)
    hu = soft["hu"]
    # bone HU: cancellous per case (healthy / osteoporotic), per vertebra jitter, thoracic slightly denser
    canc = float(rng.uniform(70.0, 140.0) if osteo else rng.uniform(150.0, 300.0))
    cortex = float(rng.uniform(1000.0, 1500.0))
    # grid: 180-200 mm in-plane at 1 mm, 220-300 mm along z, slices from SLICE_SPACINGS
    sp = 1.0 / shape_scale
    fov_xy = float(rng.uniform(180.0, 200.0))
    n = max(16, int(round(fov_xy / sp)))
    dz0 = float(rng.choice(SLICE_SPACINGS))
    dz = dz0 / shape_scale
    fov_z = float(rng.uniform(220.0, 300.0))
    nz = max(8, int(round(fov_z / dz)))
    K = max(1, int(dz / sp + 1e-6))  # sub-slices no thinner than the in-plane pixel
    line = _centre_line(chain["pts"])
    s_c = float(rng.uniform(by["L3"].s, by["T9"].s))
    z_c = float(np.interp(s_c, line["s"], line["z"]))
    z_bot = z_c - nz * dz / 2
    zsub = (z_bot + (np.arange(nz * K) + 0.5) * dz / K).astype(np.float64)
    zg = np.arange(math.floor(line["z"].min()) + 50, math.ceil(line["z"].max()) - 50, 1.0)
    rows = _body_rows(els, line, xc, soft, zg)
    rz = {k: np.interp(zsub, zg, v) for k, v in rows.items()}
    x0 = float(xc(np.asarray(s_c))) + float(rng.uniform(-8.0, 8.0))
    xs = x0 + (np.arange(n) - (n - 1) / 2) * sp
    y_back = float(rz["yb"].min())
    table_y = y_back - float(rng.uniform(0.0, 4.0))
    table_th = float(rng.uniform(8.0, 12.0))
    y0 = (table_y - table_th if soft["table"] else y_back) - float(rng.uniform(3.0, 25.0))
    ys = y0 + (np.arange(n) + 0.5) * sp
    cv = _Canvas(xs, ys, zsub)
    spacing_sub = (sp, sp, dz / K)
    z_of = {el.name: float(np.interp(el.s, line["s"], line["z"])) for el in els}
    lv = {"dome_r": z_of["T10"] + soft["dome"], "dome_l": z_of["T10"] + soft["dome"] - soft["dome_left"],
          "liver": z_of["L1"] + soft["liver"], "spleen": z_of["T11"], "kidney_l": z_of["L1"] + 10,
          "kidney_r": z_of["L1"] - 8 + soft["kidney_off"] * 0.3, "gas_level": float(rng.uniform(-5.0, 20.0)),
          "psoas_top": by["T12"].s, "psoas_full": by["L5"].s, "pelvis": by["S2"].s, "crest": by["L5"].s,
          "aorta_turn": by["T12"].s + 25, "bif": by["L4"].s + soft["bif"], "ivc_bot": by["L5"].s,
          "ivc_top": by["T11"].s, "hiatus": by["S4"].s, "sac_end": by["S2"].s + soft["sac_end"],
          "conus": by["L1/L2"].s + soft["conus"],
          "crest_z": z_of["L5"] + by["L5"].h / 2 + soft["crest"], "ilium_bot_z": z_of["S3"]}
    r_a = soft["aorta"][0]
    lv["calcs"] = [(float(rng.uniform(by["L4"].s, by["T5"].s)), float(rng.uniform(0, 2 * math.pi)),
                    float(rng.uniform(350.0, 1000.0))) for _ in range(soft["calcs"])]
    _paint_background(cv, rz, soft, lv, rng, spacing_sub)
    if soft["table"]:  # curved carbon-fibre table: 1.5 mm skins (300 HU) around a foam core
        X, Y = cv.xs[:, None, None], cv.ys[None, :, None]
        top = table_y + 0.0012 * (X - rows["x_b"][0]) ** 2
        d = top - Y
        outside = cv.img == hu["air"]
        np.copyto(cv.img, _F(300.0), where=outside & (d > 0) & (d < table_th))
        np.copyto(cv.img, _F(-900.0), where=outside & (d > 1.5) & (d < table_th - 1.5))
    # spine-aligned soft tissue (psoas, vessels, canal)
    prof_s, prof = _profiles(els, soft)
    S, T = _spine_coords(line, cv.ys, cv.zs)
    _paint_spine_soft(cv, S, T, xc, prof_s, prof, soft, lv)
    # distractor bone: ilium, ribs and cartilage, sternum
    _paint_ilium(cv, rows, by, lv, cortex * 0.85, canc * 1.05, hu)
    step = max(1.0, 0.5 * sp)
    paths = _rib_paths(els, rows, soft, step)
    rsdf = np.full(cv.img.shape, 99.0, _F)
    csdf = np.full(cv.img.shape, 99.0, _F)
    _stamp_tubes(cv, paths, rsdf, csdf)
    cart = (csdf < 0) & (rsdf >= 0)
    cv.img[cart] = hu["cartilage"]
    cv.tex[cart] = 2
    cv.img[rsdf < 0] = cortex * 0.8
    cv.tex[rsdf < 0] = 0
    rin = rsdf < -1.0
    cv.img[rin] = canc * 1.1
    cv.tex[rin] = 1
    del rsdf, csdf
    _paint_sternum(cv, rows, by, soft, line, cortex * 0.8, canc * 1.1)
    # spine: discs (label 0), sacrum (label 0), vertebrae bottom-up with VerSe labels
    path = {(p["type"], p["level"]): p for p in pathology}
    disc_hu = {"annulus": hu["annulus"], "nucleus": hu["nucleus"], "nucleus_deg": hu["nucleus_deg"]}
    for el in els:
        if el.kind == "disc":
            flat_el = replace(el, label=0, p={**el.p, "cleft": False, "bulge": None})
            _paint_disc(cv, flat_el, disc_hu)
            deg = path.get(("disc_degeneration", el.name))
            if deg is not None and deg["vacuum"]:
                g = cv.local(el, (-el.h / 2, el.h / 2), (-el.a_ant, el.a_post), (-el.b, el.b))
                if g is not None:
                    sl, s, t, u = g
                    gas = (np.abs(s) < 0.3 * el.h) & ((t / (0.6 * el.a_ant)) ** 2 + (u / (0.6 * el.b)) ** 2 < 1)
                    cv.paint(sl, gas, -750.0)
    for el in els:
        if el.kind == "sacrum":
            _paint_ct_bone(cv, _sacrum_parts(cv, el, {"marrow": 1.0}), 0, cortex * 0.9, canc, canc * 1.1)
    jitter = {el.name: float(rng.uniform(0.9, 1.1)) for el in els if el.kind == "vertebra"}
    fx_info, lesion_info = [], []
    for el in sorted((e for e in els if e.kind == "vertebra"), key=lambda e: e.s):
        lab = VERSE_NAMES[el.name]
        body = canc * jitter[el.name] * (1.08 if el.name.startswith("T") else 1.0)
        frac = el.p["fracture"]
        if frac is not None:
            body *= frac["hu_factor"]
        _paint_ct_bone(cv, _vertebra_parts(cv, el, {"marrow": 1.0}), lab, cortex, body, 1.3 * body)
        # basivertebral vein channel: posterior centre of the body
        g = cv.local(el, (-3.0, 3.0), (el.a_post - 10, el.a_post), (-3.0, 3.0))
        if g is not None:
            sl, s, t, u = g
            cv.paint(sl, (np.abs(s) < 1.5) & (t > el.a_post - 8) & (np.abs(u) < 2.2) & (cv.lab[sl] == lab), 35.0,
                     tex=0)
        les = path.get(("sclerotic_lesion", el.name))
        if les is not None:
            o = les["offset"]
            r = les["radius_mm"]
            sc_, tc_, uc_ = o[0] * el.h / 2, o[1] * el.a_ant, o[2] * el.b
            g = cv.local(el, (sc_ - r - 1, sc_ + r + 1), (tc_ - r - 1, tc_ + r + 1), (uc_ - r - 1, uc_ + r + 1))
            if g is not None:
                sl, s, t, u = g
                q = ((s - sc_) / (0.8 * r)) ** 2 + ((t - tc_) / r) ** 2 + ((u - uc_) / (1.1 * r)) ** 2
                cv.paint(sl, (q < 1) & (cv.lab[sl] == lab), les["hu"], tex=0)
    # texture: trabecular (anisotropic, vertical striation) on cancellous bone, calcified spots in cartilage
    tile = _noise(rng, (48, 48, 48), (0.6, 0.6, 1.6), (spacing_sub[0], spacing_sub[1], spacing_sub[2]))
    ii = np.nonzero(cv.tex == 1)
    cv.img[ii] *= 1 + 0.22 * tile[ii[0] % 48, ii[1] % 48, ii[2] % 48]
    jj = np.nonzero(cv.tex == 2)
    if soft["calcs"] > 6:  # elderly: calcified costal cartilage
        cv.img[jj] += np.where(tile[jj[0] % 48, jj[1] % 48, jj[2] % 48] > 1.6, 350.0, 0.0).astype(_F)
    # slice profile (mean of sub-slices), majority-vote labels, in-plane blur, noise, int16
    from spine_monai.data.phantoms import _vote

    image = cv.img.reshape(n, n, nz, K).mean(-1)
    label = _vote(cv.lab.reshape(n, n, nz, K).transpose(0, 3, 1, 2))
    del cv
    image = ndimage.gaussian_filter(image, (0.45, 0.45, 0.0), mode="nearest")
    sigma = float(rng.uniform(10.0, 20.0))
    corr = float(rng.uniform(0.4, 0.8)) if rng.random() < 0.7 else 0.0
    noise = rng.standard_normal(image.shape, dtype=_F)
    if corr > 0:
        noise = ndimage.gaussian_filter(noise, (corr, corr, 0.0), mode="wrap")
    noise *= _F(sigma / (float(noise.std()) + 1e-6))
    image = np.clip(np.rint(image + noise), -1024, 3071).astype(np.int16)
    affine = np.diag([sp, sp, dz, 1.0])
    affine[:3, 3] = -(np.array([n, n, nz]) - 1) / 2 * np.array([sp, sp, dz])
    present = sorted(int(v) for v in np.unique(label) if v)
    names = [VERSE_LABELS[v] for v in present]
    for p in pathology:
        lvl = p["level"]
        p["in_fov"] = (VERSE_NAMES.get(lvl, -1) in present) if "/" not in lvl else all(
            VERSE_NAMES.get(k, -1) in present for k in lvl.split("/") if k != "S")
        if p["type"].endswith("fracture"):
            fx_info.append(p)
        elif p["type"] == "sclerotic_lesion":
            lesion_info.append(p)
    info = {"shape": [n, n, nz], "spacing_mm": [sp, sp, dz], "slice_thickness_mm": dz, "subslices": K,
            "label_rule": f"majority vote of {K} sub-slices, ties to the sub-slice nearest the slice centre",
            "fov_mm": [n * sp, n * sp, nz * dz], "shape_scale": shape_scale, "labels_present": names,
            "levels_present": names, "osteoporotic": osteo, "fractures": fx_info, "sclerotic_lesions": lesion_info,
            "disc_degeneration": [p for p in pathology if p["type"] == "disc_degeneration"], "pathology": pathology,
            "cancellous_hu": canc, "cortical_hu": cortex, "contrast_phase": soft["phase"],
            "aortic_calcifications": soft["calcs"], "aorta_radius_mm": r_a, "table": soft["table"],
            "noise_sigma_hu": sigma, "noise_correlation_px": corr, "sacral_slope_deg": chain["sacral_slope_deg"],
            "lumbar_lordosis_deg": chain["lordosis_deg"], "kyphosis_factor": chain["kyphosis_factor"],
            "scoliosis_amplitude_mm": amp, "supine_rotation_deg": supine_deg,
            "adiposity": soft["adiposity"]}
    return image, label, affine, info


def _paint_sternum(cv: _Canvas, rows: dict[str, np.ndarray], by: dict[str, _El], soft: dict[str, Any],
                   line: dict[str, np.ndarray], hu_cortex: float, hu_canc: float) -> None:
    """Sternum (not labelled) under the anterior chest fat: manubrium (T2/T3 .. T4/T5, 26 mm half-width), body (to
    the xiphisternal joint at T9, 13-17 mm) and xiphoid (to T10, narrow, thin, cartilage-like); a rounded plate
    following the chest wall."""
    z_of = {k: float(np.interp(by[k].s, line["s"], line["z"])) for k in ("T3", "T5", "T9", "T10")}
    zs = cv.zs
    zi = np.flatnonzero((zs < z_of["T3"]) & (zs > z_of["T10"]))
    if zi.size == 0:
        return
    sl_z = slice(int(zi[0]), int(zi[-1]) + 1)
    z = zs[sl_z]
    yf, x_b = np.interp(z, rows["z"], rows["yf"]), float(rows["x_b"][0])
    hw = np.interp(z, [z_of["T10"], z_of["T9"] - 1, z_of["T9"], z_of["T5"], z_of["T3"]],
                   [6.0, 8.0, soft["sternum_hw"], soft["sternum_hw"] + 4, 26.0])
    th = np.interp(z, [z_of["T10"], z_of["T9"], z_of["T5"], z_of["T3"]], [3.0, 5.0, 6.0, 7.0])
    yc = yf - soft["f_ant"] - th - 1
    X = cv.xs[:, None, None] - _F(x_b)
    Y = cv.ys[None, :, None] - yc[None, None, :].astype(_F)
    hw3, th3 = hw[None, None, :].astype(_F), th[None, None, :].astype(_F)
    rr = _F(2.5)
    qx, qy = np.abs(X) - (hw3 - rr), np.abs(Y) - (th3 - rr)
    sdf = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0) - rr
    img, tex = cv.img[:, :, sl_z], cv.tex[:, :, sl_z]
    xiph = (z < z_of["T9"])[None, None, :]
    bone = sdf < 0
    np.copyto(img, np.broadcast_to(np.where(xiph, _F(soft["hu"]["cartilage"] + 80), _F(hu_cortex)), img.shape),
              where=bone)
    canc = (sdf < -1.2) & ~xiph
    img[canc] = hu_canc
    tex[canc] = 1
