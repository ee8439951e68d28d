"""Appearance of the synthetic spine phantoms: T2 intensities painted on sub-slice grids, textures, noise fields.

Part of :mod:`spine_monai.data.phantoms`, which assembles a case (sub-slice averaging, majority-vote labels, bias
field, Rician noise, global scale) from the geometry of :mod:`spine_monai.data.phantom_anatomy` and what is here:

* :class:`_Canvas`: intensity, label and texture-group arrays on ``SUBSLICES`` sub-slices per thick slice, the local
  coordinates of a chain element on them and a masked ``paint``.
* Relative T2 intensities (``_T2``, CSF = 1) and the case-level soft-tissue sizes, landmark offsets and jittered
  intensities (:func:`_soft_tissue`).
* :func:`_noise`: smooth zero-mean Gaussian fields (muscle striation, fatty streaks, fat, bowel, textures).
* Soft tissue, label 0 (:func:`_paint_background`: body outline, abdomen, bowel, liver, lungs, psoas, vessels,
  paraspinal muscle, canal contents), then the labelled structures (:func:`_paint_structures`: exiting roots, discs,
  sacrum, vertebrae with cortical shell and marrow).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from spine_monai.data.phantom_anatomy import _F, _El, _round_box, _wedge

__all__ = ["SUBSLICES"]

SUBSLICES = 5

# T2 intensities relative to CSF (jittered per case)
_T2 = {"csf": 1.0, "fat": 0.85, "fat_deep": 0.7, "epifat": 0.78, "muscle": 0.26, "cortex": 0.07, "marrow": 0.48,
       "annulus": 0.2, "nucleus": 0.85, "nucleus_deg": 0.2, "cord": 0.45, "root": 0.3, "ligament": 0.1,
       "vessel": 0.07, "ivc": 0.25, "bowel_fluid": 0.9, "bowel_gas": 0.03, "bowel_wall": 0.35, "mesentery": 0.62,
       "liver": 0.22, "lung": 0.03, "skin": 0.35, "sdisc": 0.3}


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
