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

Other modalities from the same spine geometry: thoracolumbar CT in Hounsfield units with VerSe labels
(:mod:`spine_monai.data.phantom_ct`, ``make_phantom_dataset(modality="ct")``) and coronal ultrasound VPI
(:mod:`spine_monai.data.phantom_us`, ``modality="us"``).

Code: the anatomy (size tables, wedge chain, pathology, shapes, spine-aligned coordinates) is in
:mod:`spine_monai.data.phantom_anatomy`, the appearance (T2 intensities, soft tissue, bone, discs, noise fields) in
:mod:`spine_monai.data.phantom_paint` and :func:`render_overlay` in :mod:`spine_monai.visualize`; this module
assembles a case and writes datasets, and re-exports their names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spine_monai.data.datalist import write_datalist
from spine_monai.data.labels import BINARY_LABELS, MRSPINESEG_LABELS, MRSPINESEG_NAMES, VERSE_LABELS
from spine_monai.data.phantom_anatomy import (  # noqa: F401 (re-exported)
    _DISC,
    _DISC_UPPER,
    _F,
    _SACRUM,
    _VERT,
    _VERT_UPPER,
    PATHOLOGIES,
    _build_chain,
    _centre_line,
    _El,
    _lateral_drift,
    _profiles,
    _rot,
    _round_box,
    _rows,
    _sample_pathology,
    _spine_coords,
    _wedge,
)
from spine_monai.data.phantom_paint import (  # noqa: F401 (re-exported)
    _T2,
    SUBSLICES,
    _bowel,
    _Canvas,
    _noise,
    _paint_background,
    _paint_bone,
    _paint_disc,
    _paint_root,
    _paint_structures,
    _Part,
    _sacrum_parts,
    _soft_tissue,
    _vertebra_parts,
)
from spine_monai.visualize import _as_ras, _draw_sagittal, render_overlay  # noqa: F401 (re-exported)

__all__ = ["make_phantom_dataset", "generate_phantom", "render_overlay", "SUBSLICES", "BASE_INTENSITY",
           "PATHOLOGIES"]

logger = logging.getLogger(__name__)

BASE_INTENSITY = 1000.0


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
        raise ValueError(f"--shape_scale {shape_scale!r} must be in (0, 1].")
    pathology = _sample_pathology(rng)
    chain = _build_chain(rng, pathology)
    els: list[_El] = chain["els"]
    by = {el.name: el for el in els}
    xc, amp = _lateral_drift(rng, els)  # scoliosis
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

    ``modality="ct"``: thoracolumbar CT phantoms (:mod:`spine_monai.data.phantom_ct`) in the same layout: images
    int16 Hounsfield units, ``labelsTr`` the VerSe vertebra labels (uint8, 8-19 T1-T12, 20-24 L1-L5; ribs, sacrum,
    pelvis, sternum and discs are background), ``labelsBinTr`` the binary spine view, ``phantom_info.json`` with
    the levels present, fractures (level, type, height loss, Genant grade), sclerotic lesions and spacing per case.

    ``modality="us"``: coronal spine ultrasound VPI phantoms (:mod:`spine_monai.data.phantom_us`) as
    ``out/images/case_XXX.png`` (uint8 grey), ``out/labels/case_XXX.png`` (uint8: 0 background, 1 rib, 2 thoracic,
    3 lumbar), ``out/phantom_info.json`` (with each case's true Cobb angle, ``cobb_deg``) and ``out/datalist.json``
    (items ``image``, ``label``, ``case_id``, ``cobb_deg``, ``curve``); ``binary`` does not apply (four classes).

    Args:
        modality: ``"mri"`` (sagittal T2), ``"ct"`` (thoracolumbar CT in HU) or ``"us"`` (ultrasound VPI).
        n: number of cases.
        out: output folder (created).
        seed: seed of the cases and of the folds.
        folds: number of cross-validation folds, ``2 <= folds <= n``.
        shape_scale: see :func:`generate_phantom` (``"ct"``: :func:`spine_monai.data.phantom_ct.generate_ct_phantom`,
            ``"us"``: :func:`spine_monai.data.phantom_us.generate_us_phantom`).
        binary: MRI and CT; if True the datalist ``label`` is the binary view (SAU-Net, the attention-driven CT
            method) and ``label_multiclass`` the MRSpineSeg (CT: VerSe) map; if False ``label`` is the multi-class
            map and ``label_binary`` the binary view.
        progress: show a tqdm progress bar over cases.

    Returns:
        The datalist path.

    Raises:
        ValueError: for a modality other than ``"mri"`` / ``"ct"`` / ``"us"``, ``n < 1``, ``folds`` out of range or
            a bad ``shape_scale``.
    """
    if str(modality).lower() == "us":
        return _make_us_dataset(int(n), Path(out), int(seed), int(folds), shape_scale, progress)
    if str(modality).lower() == "ct":
        return _make_ct_dataset(int(n), Path(out), int(seed), int(folds), shape_scale, bool(binary), progress)
    if str(modality).lower() != "mri":
        raise ValueError(f"--modality {modality!r}: only 'mri' (sagittal T2-weighted), 'ct' (thoracolumbar CT) and "
                         "'us' (coronal ultrasound VPI) phantoms are implemented.")
    _check_counts(int(n), int(folds), shape_scale)
    root = Path(out)
    items = _write_volume_cases(lambda rng: generate_phantom(rng, shape_scale), int(n), root, int(seed), binary,
                                progress, "labels_present")
    labels = BINARY_LABELS if binary else MRSPINESEG_LABELS
    path = write_datalist(
        items, root / "datalist.json", folds=int(folds), seed=int(seed), name="spine_monai_mri_phantoms",
        description="Synthetic sagittal T2-weighted spine MRI phantoms (spine_monai.data.phantoms)",
        modality={"0": "T2w MRI (synthetic)"}, labels={str(k): v for k, v in labels.items()},
        labels_multiclass={str(k): v for k, v in MRSPINESEG_LABELS.items()}, tensorImageSize="3D",
        binary_labels=bool(binary), generator={"seed": int(seed), "shape_scale": shape_scale, "subslices": SUBSLICES})
    logger.info("wrote %d phantoms and %s", n, path)
    return str(path)



def _write_volume_cases(generate: Any, n: int, root: Path, seed: int, binary: bool, progress: bool,
                        present_key: str) -> list[dict[str, Any]]:
    """Write ``n`` cases of a 3D phantom generator (``generate(rng) -> image, label, affine, info``; case ``i`` uses
    ``numpy.random.default_rng([seed, i])``) as ``imagesTr`` / ``labelsTr`` / ``labelsBinTr`` NIfTI plus
    ``phantom_info.json``, and return the datalist items (``label`` the binary view when ``binary``, else the
    multi-class map)."""
    from tqdm.auto import tqdm

    dirs = {k: root / k for k in ("imagesTr", "labelsTr", "labelsBinTr")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n - 1)))
    items, infos = [], {}
    for i in tqdm(range(n), desc="phantoms", unit="case", disable=not progress):
        image, label, affine, info = generate(np.random.default_rng([seed, i]))
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
        logger.debug("%s: shape %s, spacing %s, %s %s", cid, info["shape"], info["spacing_mm"], present_key,
                     info[present_key])
    (root / "phantom_info.json").write_text(json.dumps(infos, indent=1) + "\n", encoding="utf-8")
    return items


def _check_counts(n: int, folds: int, shape_scale: float) -> None:
    """ValueError naming the flag: fewer than 1 case, folds outside ``2..n``, a ``shape_scale`` outside (0, 1]."""
    if n < 1:
        raise ValueError(f"--n {n!r} must be at least 1.")
    if not 2 <= folds <= n:
        raise ValueError(f"--folds {folds!r} must be between 2 and --n {n}.")
    if not 0 < shape_scale <= 1:
        raise ValueError(f"--shape_scale {shape_scale!r} must be in (0, 1].")


def _make_ct_dataset(n: int, root: Path, seed: int, folds: int, shape_scale: float, binary: bool,
                     progress: bool) -> str:
    """The ``modality="ct"`` branch of :func:`make_phantom_dataset` (NIfTI layout of the MRI phantoms)."""
    from spine_monai.data.phantom_ct import SLICE_SPACINGS, generate_ct_phantom

    _check_counts(n, folds, shape_scale)
    items = _write_volume_cases(lambda rng: generate_ct_phantom(rng, shape_scale), n, root, seed, binary, progress,
                                "levels_present")
    labels = BINARY_LABELS if binary else VERSE_LABELS
    path = write_datalist(
        items, root / "datalist.json", folds=folds, seed=seed, name="spine_monai_ct_phantoms",
        description="Synthetic thoracolumbar CT phantoms in HU with VerSe vertebra labels "
                    "(spine_monai.data.phantom_ct)",
        modality={"0": "CT (synthetic, HU)"}, labels={str(k): v for k, v in labels.items()},
        labels_multiclass={str(k): v for k, v in VERSE_LABELS.items()}, tensorImageSize="3D",
        binary_labels=binary, generator={"seed": seed, "shape_scale": shape_scale,
                                         "slice_spacings_mm": list(SLICE_SPACINGS)})
    logger.info("wrote %d CT phantoms and %s", n, path)
    return str(path)


def _make_us_dataset(n: int, root: Path, seed: int, folds: int, shape_scale: float, progress: bool) -> str:
    """The ``modality="us"`` branch of :func:`make_phantom_dataset`."""
    from PIL import Image
    from tqdm.auto import tqdm

    from spine_monai.data.phantom_us import US_LABELS, generate_us_phantom

    _check_counts(n, folds, shape_scale)
    dirs = {k: root / k for k in ("images", "labels")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n - 1)))
    items, infos = [], {}
    for i in tqdm(range(n), desc="phantoms", unit="case", disable=not progress):
        image, label, info = generate_us_phantom(np.random.default_rng([seed, i]), shape_scale)
        cid = f"case_{i:0{width}d}"
        paths = {k: d / f"{cid}.png" for k, d in dirs.items()}
        Image.fromarray(image).save(paths["images"])
        Image.fromarray(label).save(paths["labels"])
        items.append({"image": str(paths["images"]), "label": str(paths["labels"]), "case_id": cid,
                      "cobb_deg": info["cobb_deg"], "curve": info["curve"]})
        infos[cid] = info
    (root / "phantom_info.json").write_text(json.dumps(infos, indent=1) + "\n", encoding="utf-8")
    path = write_datalist(
        items, root / "datalist.json", folds=folds, seed=seed, name="spine_monai_us_phantoms",
        description="Synthetic coronal spine ultrasound VPI phantoms (spine_monai.data.phantom_us)",
        modality={"0": "US VPI (synthetic)"}, labels={str(k): v for k, v in US_LABELS.items()},
        tensorImageSize="2D", generator={"seed": seed, "shape_scale": shape_scale})
    logger.info("wrote %d ultrasound VPI phantoms and %s", n, path)
    return str(path)
