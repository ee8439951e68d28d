"""Seeded synthetic spine ultrasound volume-projection images (VPI) with rib / thoracic / lumbar labels.

Stand-in for the data of SEAM (Zhao et al., "Structure-Enhanced Attentive Learning for Spine Segmentation from
Ultrasound Volume Projection Images", ICASSP 2021, DOI 10.1109/ICASSP39728.2021.9414658, Section 3.1: 109 coronal
VPI images of the whole spine from a Scolioscan-type 3D ultrasound system, three bone classes), which are not public.
The look follows the one real VPI of this project (``../shared/data/real/sa2net_us_vpi``, SA2Net, Xie et al., CMIG
2025): a tall bright band of the back, dark outside the body, a dark midline (the shadow of the spinous processes),
pairs of lamina / transverse-process echoes left and right of the midline at each thoracic level, short rib echoes
at their lateral ends, and wide butterfly-shaped lamina echoes of the lumbar levels centred on the midline.
Labels follow the real VPI: 0 background, 1 rib, 2 thoracic, 3 lumbar (the paper lists lumbar, thoracic, rib).

How a case is made (:func:`generate_us_phantom`):

* Anatomy: the levels T1..T12 and L1..L5 are stacked along the spine's centre line with heights from
  :data:`LEVEL_HEIGHTS_MM` (T8..L5 from the MRI phantoms' table :data:`spine_monai.data.phantom_anatomy._VERT` plus
  the disc below each level, T1..T7 continued downwards from T8 by 0.6 mm per level), scaled to the image height.
* Scoliosis: the centre line's lateral deviation is a sum of one (C curve) or two (S curve, opposite signs)
  Gaussian bumps along the spine, or zero (straight, about one case in five); every level's echoes are rotated to
  the local tangent. The body band follows half the deviation.
* Cobb angle (the ground truth saved in the info): the largest difference of the centre line's inclination to the
  vertical over the labelled levels (top of T1 to bottom of L5), in degrees, in the image's own pixel geometry (square
  pixels). :func:`spine_monai.measures.cobb_angle` measures the same quantity from a label map.
* Appearance: echoes of bone are bright with a darker core (acoustic shadowing below the bone surface), the
  inter-laminar gaps and the midline are dark, soft tissue is textured; multiplicative Rayleigh speckle smoothed to
  a few pixels, a smooth gain field with a vertical drift (depth / coupling changes), a random gamma and occasional
  bands of horizontal streaks (the real VPI's motion artefacts). uint8.

Choices: the image is made at its final size (no resampling of labels); H about 1024 x ``shape_scale`` with W = H / 4
+- 10 %, so the bundle's resize to 1024 x 256 is exercised. Thin structures (ribs) are at least 2 px thick at
``shape_scale`` 0.25.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from spine_monai.data.phantom_anatomy import _DISC, _VERT

__all__ = ["generate_us_phantom", "render_us_overlay", "US_LABELS", "LEVELS", "LEVEL_HEIGHTS_MM", "cobb_of_line"]

#: label value -> name, as in the real VPI of ../shared/data/real/sa2net_us_vpi.
US_LABELS: dict[int, str] = {0: "background", 1: "rib", 2: "thoracic", 3: "lumbar"}
LEVELS: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6))


def _level_heights() -> dict[str, float]:
    """Vertebra + disc height (mm) of each level: T8..L5 from the MRI phantom tables, T1..T7 continued."""
    out = {name: _VERT[name][1] + _DISC[name][1] for name in ("T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4",
                                                              "L5")}
    for i in range(7, 0, -1):  # T7 .. T1: 0.6 mm less per level upwards
        out[f"T{i}"] = out["T8"] - 0.6 * (8 - i)
    return {name: out[name] for name in LEVELS}


#: vertebra + disc height per level (mm).
LEVEL_HEIGHTS_MM: dict[str, float] = _level_heights()


def cobb_of_line(rows: np.ndarray, cols: np.ndarray) -> tuple[float, int, int]:
    """Cobb angle of a sampled centre line: max - min of the inclination to the vertical (degrees).

    Args:
        rows: increasing row coordinates (superior -> inferior).
        cols: column of the line at each row.

    Returns:
        ``(angle_deg, index_of_max, index_of_min)`` of the inclinations.
    """
    slope = np.gradient(np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64))
    incl = np.degrees(np.arctan(slope))
    i_max, i_min = int(np.argmax(incl)), int(np.argmin(incl))
    return float(incl[i_max] - incl[i_min]), i_max, i_min


def _ellipse(rr: np.ndarray, cc: np.ndarray, r0: float, c0: float, ry: float, rx: float, theta: float) -> np.ndarray:
    """Normalised radius^2 of an ellipse rotated by ``theta`` (rad, clockwise in the image) at each pixel."""
    dr, dc = rr - r0, cc - c0
    ct, st = math.cos(theta), math.sin(theta)
    u = dc * ct - dr * st  # along the (rotated) horizontal
    v = dc * st + dr * ct  # along the (rotated) vertical
    return (u / rx) ** 2 + (v / ry) ** 2


def generate_us_phantom(rng: np.random.Generator, shape_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic coronal spine VPI and its label.

    Args:
        rng: random generator (e.g. ``numpy.random.default_rng([seed, i])``).
        shape_scale: image size factor in (0, 1]; 1 gives about 1024 x 256 pixels.

    Returns:
        ``(image, label, info)``: uint8 ``(H, W)`` image (rows top -> bottom), uint8 ``(H, W)`` label (0..3) and a
        JSON-able dict (``shape``, ``cobb_deg``, ``curve``, ``levels``, ``centre_line``, ``labels_present``, ...).

    Raises:
        ValueError: if ``shape_scale`` is not in (0, 1].
    """
    if not 0 < shape_scale <= 1:
        raise ValueError(f"shape_scale must be in (0, 1], got {shape_scale}.")
    h = max(64, int(round(rng.uniform(960, 1152) * shape_scale)))
    w = max(32, int(round(h / 4 * rng.uniform(0.9, 1.1))))
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)

    # spine extent and levels (rows), heights proportional to the table
    top, bottom = rng.uniform(0.02, 0.05) * h, (1 - rng.uniform(0.04, 0.08)) * h
    heights = np.array([LEVEL_HEIGHTS_MM[n] for n in LEVELS])
    edges = top + np.concatenate([[0], np.cumsum(heights)]) / heights.sum() * (bottom - top)
    centres = 0.5 * (edges[:-1] + edges[1:])

    # scoliosis: lateral deviation of the centre line along t = (row - top) / (bottom - top)
    kind = rng.choice(["straight", "C", "S"], p=[0.2, 0.4, 0.4])
    bumps = []
    if kind == "C":
        bumps = [(rng.choice([-1, 1]) * rng.uniform(0.05, 0.2), rng.uniform(0.3, 0.7), rng.uniform(0.12, 0.3))]
    elif kind == "S":
        sign = rng.choice([-1, 1])
        bumps = [(sign * rng.uniform(0.05, 0.16), rng.uniform(0.2, 0.4), rng.uniform(0.1, 0.2)),
                 (-sign * rng.uniform(0.05, 0.16), rng.uniform(0.6, 0.8), rng.uniform(0.1, 0.2))]
    centre_col = w / 2 + rng.uniform(-0.03, 0.03) * w

    def dev(row: np.ndarray) -> np.ndarray:
        t = (np.asarray(row, dtype=np.float64) - top) / (bottom - top)
        return sum(a * w * np.exp(-(((t - m) / s) ** 2)) for a, m, s in bumps) + 0.0 * t

    def line(row: np.ndarray) -> np.ndarray:
        return centre_col + dev(row)

    def tangent(row: float) -> float:
        eps = 1.0
        return math.atan((line(np.array([row + eps]))[0] - line(np.array([row - eps]))[0]) / (2 * eps))

    dense = np.linspace(edges[0], edges[-1], 512)
    cobb, i_max, i_min = cobb_of_line(dense, line(dense))

    # body band (follows half the deviation), wavy edges
    rows1 = np.arange(h, dtype=np.float64)
    wave = ndimage.gaussian_filter1d(rng.normal(0, 1, h), sigma=h / 40) * w * 0.15
    band_c = centre_col + 0.5 * dev(rows1)
    half = w * rng.uniform(0.3, 0.36) + wave
    band = np.abs(cc - band_c[:, None]) < half[:, None]
    band &= (rr > top * 0.5) & (rr < h - (h - bottom) * 0.3)

    label = np.zeros((h, w), dtype=np.uint8)
    bone = np.zeros((h, w), dtype=np.float32)  # echo strength
    gap = np.zeros((h, w), dtype=np.float32)  # dark inter-laminar / shadow regions
    for i, name in enumerate(LEVELS):
        r0 = float(centres[i])
        lh = float(edges[i + 1] - edges[i])
        c0 = float(line(np.array([r0]))[0])
        th = tangent(r0)
        jitter = rng.uniform(0.9, 1.1)
        if name.startswith("T"):
            d = w * 0.14 * jitter
            for side in (-1, 1):
                cl, rl = c0 + side * d * math.cos(th), r0 - side * d * math.sin(th)
                q = _ellipse(rr, cc, rl, cl, 0.36 * lh, 0.05 * w * jitter, th)
                label[(q < 1) & (label == 0)] = 2
                bone += np.exp(-q) * 1.0
                # rib: from the blob's lateral end outwards, rising laterally by 8-20 degrees
                rise = math.radians(rng.uniform(8, 20))
                length = w * rng.uniform(0.11, 0.15)
                start = d + 0.045 * w
                cr = c0 + side * (start + length / 2) * math.cos(th)
                rrib = r0 - side * (start + length / 2) * math.sin(th) - math.tan(rise) * length / 2 + 0.1 * lh
                q = _ellipse(rr, cc, rrib, cr, max(0.17 * lh, 1.2), length / 2, th - side * rise)
                m = (q < 1) & (label == 0) & band
                label[m] = 1
                bone += 0.8 * np.exp(-q)
            gap += np.exp(-_ellipse(rr, cc, edges[i + 1], c0, 0.18 * lh, 0.25 * w, th))
        else:
            body = _ellipse(rr, cc, r0 + 0.05 * lh, c0, 0.2 * lh, 0.1 * w * jitter, th)
            wing_l = _ellipse(rr, cc, r0 - 0.08 * lh, c0 - 0.1 * w * math.cos(th), 0.22 * lh, 0.11 * w * jitter,
                              th + 0.35)
            wing_r = _ellipse(rr, cc, r0 - 0.08 * lh + 0.1 * w * math.sin(th), c0 + 0.1 * w * math.cos(th),
                              0.22 * lh, 0.11 * w * jitter, th - 0.35)
            q = np.minimum(body, np.minimum(wing_l, wing_r))
            label[(q < 1) & (label == 0)] = 3
            bone += 0.9 * np.exp(-q)
            gap += 1.2 * np.exp(-_ellipse(rr, cc, edges[i + 1], c0, 0.2 * lh, 0.2 * w, th))

    # intensities: tissue texture, bright echoes with darker cores, dark gaps and midline
    tissue = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), sigma=max(1.0, w / 40)).astype(np.float32)
    img = np.where(band, rng.uniform(0.45, 0.6) + 0.12 * tissue, 0.03).astype(np.float32)
    rim = bone - 0.7 * ndimage.gaussian_filter(bone, sigma=max(1.0, w / 60))
    img += band * (rng.uniform(0.35, 0.55) * np.clip(bone, 0, 1.5) + 0.3 * rim)
    img -= band * rng.uniform(0.2, 0.35) * np.clip(gap, 0, 1)
    mid = np.exp(-(((cc - line(rows1)[:, None]) / (0.028 * w)) ** 2))
    img -= band * rng.uniform(0.25, 0.4) * mid.astype(np.float32)
    # speckle, gain, streaks, gamma
    speckle = rng.rayleigh(1.0, (h, w)).astype(np.float32)
    speckle = ndimage.gaussian_filter(speckle, sigma=max(0.6, w / 128)) / 1.2533
    gain = 1.0 + 0.25 * ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), sigma=w / 4) * 4
    gain *= np.linspace(rng.uniform(0.85, 1.1), rng.uniform(0.85, 1.1), h)[:, None]
    img = np.clip(img, 0, None) * speckle * gain.astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):
        r = int(rng.uniform(0.1, 0.9) * h)
        thick = max(2, int(0.012 * h))
        lines = (np.arange(thick) % 2 == 0)[:, None] * rng.uniform(0.2, 0.5)
        img[r:r + thick] *= (1 - lines[: max(0, min(thick, h - r))]) * band[r:r + thick]
    img = np.clip(img / max(float(np.percentile(img, 99.7)), 1e-6), 0, 1) ** rng.uniform(0.7, 1.4)
    image = np.round(img * rng.uniform(200, 255)).astype(np.uint8)

    samples = np.linspace(edges[0], edges[-1], 64)
    info: dict[str, Any] = {
        "shape": [h, w], "cobb_deg": cobb, "curve": str(kind), "levels": list(LEVELS),
        "cobb_rows": [float(dense[i_max]), float(dense[i_min])],
        "centre_line": [[float(r), float(c)] for r, c in zip(samples, line(samples), strict=True)],
        "level_rows": [float(e) for e in edges], "bumps": [[float(x) for x in b] for b in bumps],
        "labels_present": sorted(int(v) for v in np.unique(label)),
    }
    return image, label, info


def render_us_overlay(image: np.ndarray, label: np.ndarray, out_png: str, title: str | None = None) -> str:
    """Side-by-side PNG: the image, and the image with rib (blue), thoracic (red), lumbar (green) overlaid.

    Args:
        image: ``(H, W)`` grey image.
        label: ``(H, W)`` label 0..3.
        out_png: output path.
        title: optional title.

    Returns:
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grey = np.asarray(image, dtype=np.float64)
    grey = (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    over = rgb.copy()
    for value, colour in ((1, (0.1, 0.2, 1.0)), (2, (1.0, 0.15, 0.15)), (3, (0.1, 0.85, 0.2))):
        m = np.asarray(label) == value
        over[m] = 0.45 * over[m] + 0.55 * np.asarray(colour)
    h, w = grey.shape
    fig, axes = plt.subplots(1, 2, figsize=(4.0, 4.0 * h / (2 * w) + 0.4), dpi=120)
    for ax, pic in zip(axes, (rgb, over), strict=True):
        ax.imshow(pic, interpolation="nearest")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=7)
    fig.savefig(out_png, bbox_inches="tight")
    plt.close(fig)
    return str(out_png)
