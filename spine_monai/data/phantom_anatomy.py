"""Anatomy of the synthetic spine phantoms: the chain of vertebrae, discs and sacral segments and its geometry.

Part of :mod:`spine_monai.data.phantoms`, which assembles a case (its docstring describes the model as a whole).
Lengths in patient millimetres; in-plane coordinates (y, z) = (posterior->anterior, inferior->superior).

* Size tables of the vertebrae T8..L5 (``_VERT``), of the discs below them (``_DISC``) and of the sacral segments
  S1..S5 (``_SACRUM``); the upper thoracic vertebrae T7..T1 and their discs (``_VERT_UPPER``, ``_DISC_UPPER``) are
  stacked only on request (``top``; the CT phantoms, whose field of view and ribs reach higher).
* :func:`_sample_pathology` (disc degeneration, posterior disc bulge, wedge fracture) and :func:`_build_chain`, which
  stacks the rigid wedges (:class:`_El`) down (sacrum) and up (discs, vertebrae) from the S1 end-plate. The chain
  also takes a ``crush_fracture`` (CT phantoms: uniform collapse with deep biconcave end-plates), which
  :func:`_sample_pathology` never draws.
* :func:`_lateral_drift`: scoliosis as a lateral (x) drift of the chain above the pelvis with a coronal tilt of each
  element.
* Signed distance functions of the shapes: :func:`_round_box` and :func:`_wedge` (end-plates, waist, concavities).
* The smoothed centre line of the chain (:func:`_centre_line`), soft-tissue cross-section profiles along it
  (:func:`_profiles`), per-row values (:func:`_rows`) and the spine-aligned coordinates of every pixel, arc length S
  and posterior normal offset T (:func:`_spine_coords`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spine_monai.data.labels import MRSPINESEG_NAMES

__all__ = ["PATHOLOGIES"]

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
# upper thoracic vertebrae, stacked above T8 only when _build_chain(top=...) asks for them (same columns as _VERT;
# label 0: not in MRSpineSeg). Kyphotic wedges of 1.5-3.5 deg (with the discs' 0-1.5 deg the T1..T12 kyphosis is
# about 50 deg times the case's kyphosis factor 0.6-1.4); steep spinous processes at T4..T8, flatter at T1..T3.
_VERT_UPPER = {
    "T7": (0, 19.5, 26.0, 30.0, -3.5, 15.0, 16.0, 40.0, 60.0, 8.0),
    "T6": (0, 19.0, 25.0, 29.0, -3.5, 15.0, 16.0, 40.0, 62.0, 8.0),
    "T5": (0, 18.5, 24.0, 28.0, -3.0, 15.0, 16.0, 40.0, 60.0, 8.0),
    "T4": (0, 18.0, 23.0, 27.5, -3.0, 15.0, 16.0, 38.0, 55.0, 8.0),
    "T3": (0, 17.5, 22.0, 27.5, -2.5, 15.0, 16.5, 36.0, 45.0, 8.0),
    "T2": (0, 17.0, 21.0, 28.0, -2.0, 15.0, 17.0, 36.0, 35.0, 8.0),
    "T1": (0, 16.5, 19.0, 30.0, -1.5, 15.0, 19.0, 40.0, 25.0, 9.0),
}
_DISC_UPPER = {"T7": ("T7/T8", 5.5, -1.5), "T6": ("T6/T7", 5.0, -1.5), "T5": ("T5/T6", 5.0, -1.5),
               "T4": ("T4/T5", 4.5, -1.0), "T3": ("T3/T4", 4.5, -1.0), "T2": ("T2/T3", 4.5, -0.5),
               "T1": ("T1/T2", 5.0, 0.0)}
# sacral segments S1..S5: height, AP, LR (body), kyphotic angle (deg), canal AP, canal LR, ala half-width
_SACRUM = ((28.0, 38.0, 46.0, 4.0, 14.0, 26.0, 52.0), (23.0, 31.0, 38.0, 8.0, 11.0, 22.0, 46.0),
           (19.0, 25.0, 30.0, 12.0, 8.0, 18.0, 36.0), (15.0, 19.0, 22.0, 12.0, 6.0, 14.0, 0.0),
           (11.0, 14.0, 16.0, 10.0, 5.0, 10.0, 0.0))


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


def _build_chain(rng: np.random.Generator, pathology: list[dict[str, Any]], top: str = "T8") -> dict[str, Any]:
    """Stack the sacrum downwards and discs/vertebrae upwards from the S1 end-plate (at the origin).

    ``top`` (``"T8"`` .. ``"T1"``) is the highest vertebra: the levels above T8 come from ``_VERT_UPPER`` and draw
    from ``rng`` only after every draw of T8 and below, so a chain up to T8 is the same with or without them.
    Pathology keys: ``("wedge_fracture", level)`` (anterior height loss, kyphotic wedge), ``("crush_fracture",
    level)`` (the centre height drops by ``height_loss``: 70 % as a uniform collapse, 30 % as deeper end-plate
    concavities), ``("disc_degeneration", disc)`` and ``("disc_bulge", disc)``.

    Returns:
        ``{"els": [...], "pts": [(s, point, axis), ...] sorted by s, ...shape values}`` (shape values include the
        lordosis and kyphosis factors that scale the table's wedge angles).
    """
    levels = list(_VERT.items())
    if top != "T8":
        if top not in _VERT_UPPER:
            raise ValueError(f"top {top!r} must be one of T8, {', '.join(_VERT_UPPER)}.")
        names = list(_VERT_UPPER)
        levels += [(k, _VERT_UPPER[k]) for k in names[:names.index(top) + 1]]
    discs = {**_DISC, **_DISC_UPPER}
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
    for name, (lab, h, ap, lr, wedge, cap, clr, spl, spi, sph) in levels:
        dname, dh, dw = discs[name]
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
        crush = path.get(("crush_fracture", name))
        if crush is not None:  # uniform collapse; the rest of the central loss deepens both end-plate concavities
            h_full, h = h, h * (1 - 0.7 * crush["height_loss"])
        va = math.radians(wedge)
        em = _rot(e, va / 2)
        c = P + h / 2 * em
        cav = rng.uniform(0.8, 1.8) + (1.5 if frac is not None else 0.0)
        if crush is not None:
            cav += 0.3 * crush["height_loss"] * h_full / 1.8  # superior concavity cav, inferior 0.8 cav
        lower = _El("vertebra", name, lab, c, em, h, va, ap / 2 * 1.02, ap / 2 * 0.98, lr / 2, s + h / 2,
                    p={"cap": cap, "clr": clr, "sp_len": spl * size * rng.uniform(0.9, 1.1),
                       "sp_incl": math.radians(spi + rng.uniform(-5, 5)), "sp_h": sph * size * 0.85,
                       "hu": max(3.2, 0.1 * lr),
                       "disc_below": dh, "lumbar": name.startswith("L"), "fracture": frac if crush is None else crush,
                       "marrow": rng.uniform(0.92, 1.08), "waist": rng.uniform(0.03, 0.08), "cav": cav})
        els[-1].p["cav_up"] = 0.8 * cav
        els.append(lower)
        P, e, s = c + h / 2 * em, _rot(em, va / 2), s + h
        pts.append((s, P.copy(), e.copy()))
    pts.sort(key=lambda q: q[0])
    lumbar = {"L1", "L2", "L3", "L4", "L5", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S"}
    lordosis = sum(math.degrees(el.alpha) for el in els if el.name in lumbar)  # L1 upper to S1 end-plate
    return {"els": els, "pts": pts, "sacral_slope_deg": math.degrees(slope), "size": size,
            "lordosis_deg": lordosis, "lordosis_factor": lord, "kyphosis_factor": kyph}


def _lateral_drift(rng: np.random.Generator, els: list[_El]) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """Scoliosis: lateral (x) drift of the chain above the pelvis and a coronal tilt of each element.

    The drift is ``x0 + amp (sin(2 pi s / wavelength + phase) - sin(phase)) + tilt s`` for arc length s > 0 (the
    sacrum stays at ``x0``); 45 % of cases are nearly straight (amplitude 0-3 mm), the others curved (3-14 mm) with a
    wavelength of 250-500 mm. Sets ``el.xc`` (lateral centre) and ``el.psi`` (coronal tilt, the drift's slope) of
    every element.

    Returns:
        ``(xc, amp)``: the drift as a function of arc length (mm -> mm) and its amplitude (mm).
    """
    amp = rng.uniform(0.0, 3.0) if rng.random() < 0.45 else rng.uniform(3.0, 14.0)
    wl, ph, tilt, x0 = 2 * math.pi / rng.uniform(250, 500), rng.uniform(0, 2 * math.pi), rng.uniform(-0.03, 0.03), \
        rng.uniform(-5.0, 5.0)

    def xc(s: np.ndarray) -> np.ndarray:
        s = np.maximum(s, 0)
        return x0 + amp * (np.sin(wl * s + ph) - math.sin(ph)) + tilt * s

    for el in els:
        el.xc = float(xc(np.asarray(el.s)))
        el.psi = math.atan(amp * wl * math.cos(wl * el.s + ph) + tilt) if el.s > 0 else 0.0
    return xc, float(amp)


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
