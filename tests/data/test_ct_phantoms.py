"""Tests of the synthetic thoracolumbar CT phantoms (spine_monai.data.phantom_ct) and the shared anatomy they reuse."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from spine_monai.data.datalist import load_datalist
from spine_monai.data.labels import VERSE_LABELS, VERSE_NAMES
from spine_monai.data.phantom_anatomy import _VERT, _build_chain
from spine_monai.data.phantom_ct import (
    _FX_LEVELS,
    CT_PATHOLOGIES,
    SLICE_SPACINGS,
    _sample_ct_pathology,
    generate_ct_phantom,
)
from spine_monai.data.phantoms import generate_phantom, make_phantom_dataset

SCALE = 0.5  # 2 mm pixels: ribs (6-12 mm) and vertebral bodies still resolve; about 1 s a case
TINY = 0.2
THORACIC = set(range(8, 20))
# a case with a crush fracture of L1 (T12 and L2 in view) and a sclerotic lesion in T11; seed picked so that all of
# T10..L2 are in the field of view at SCALE
FX_SEED = [1, 6]
FX_PATHOLOGY = [{"type": "crush_fracture", "level": "L1", "height_loss": 0.4, "genant_grade": 3, "hu_factor": 0.7},
                {"type": "sclerotic_lesion", "level": "T11", "radius_mm": 7.0, "hu": 1000.0,
                 "offset": [0.0, -0.1, 0.0]}]
# sha256 of generate_phantom(default_rng([0, 0]), shape_scale=0.25) (MRI: image float32 bytes, label bytes), computed
# before the CT phantoms were added: the CT extensions of the anatomy must leave the MRI phantoms byte-identical
#: mean, std, 5/50/95/99.9th percentiles and 12 voxels of the MRI phantom image (seed [0, 0], shape_scale 0.25)
MRI_IMAGE_STATS = [892.9453303827362, 674.2629205104315, 38.60509490966797, 869.6298828125, 2301.806640625,
                   2825.119140625]
MRI_IMAGE_VOXELS = [1271.3738, 272.7585, 632.5816, 1775.2799, 46.1625, 2644.8254, 1356.1273, 1089.3359, 667.3707,
                    1128.153, 1232.6292, 584.5627]
MRI_LABEL_SHA = "a30799773d10cf1ff377d9bee8fafe5050e14730621b8f78d2ca0567352954fe"


@pytest.fixture(scope="module")
def case():
    return generate_ct_phantom(np.random.default_rng([0, 0]), shape_scale=SCALE)


@pytest.fixture(scope="module")
def fx_case():
    return generate_ct_phantom(np.random.default_rng(FX_SEED), shape_scale=SCALE, pathology=FX_PATHOLOGY)


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory):
    """``python -m spine_monai phantoms --modality ct`` with a tiny shape_scale, as a user runs it."""
    out = tmp_path_factory.mktemp("ct") / "ds"
    cmd = [sys.executable, "-m", "spine_monai", "phantoms", "--modality", "ct", "--n", "2", "--folds", "2",
           "--shape_scale", str(TINY), "--seed", "0", "--out", str(out), "--noprogress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "datalist.json")
    return out


def _spine_x(label: np.ndarray) -> np.ndarray:
    """Per z row, the x index of the labelled voxels' centre (nan where a row has none)."""
    cnt = (label > 0).sum((0, 1))
    xs = ((label > 0) * np.arange(label.shape[0])[:, None, None]).sum((0, 1))
    return np.where(cnt > 0, xs / np.maximum(cnt, 1), np.nan)


def test_geometry_dtype_affine_and_spacing(case):
    image, label, affine, info = case
    assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == label.shape
    nx, ny, nz = image.shape
    sx, sy, sz = np.diag(affine)[:3]
    assert nx == ny and 180 * SCALE - 1 <= nx <= 200 * SCALE + 1  # 180-200 mm at 1 mm x SCALE
    assert sx == sy == pytest.approx(1 / SCALE)
    assert min(abs(sz * SCALE - s) for s in SLICE_SPACINGS) < 1e-9  # a reconstruction increment of 1-3 mm
    assert 220 - sz <= nz * sz <= 300 + sz
    assert np.allclose(affine[:3, :3], np.diag([sx, sy, sz])) and nib.aff2axcodes(affine) == ("R", "A", "S")
    assert np.allclose((affine @ np.r_[(np.array(image.shape) - 1) / 2, 1.0])[:3], 0.0)
    assert info["shape"] == list(image.shape) and np.allclose(info["spacing_mm"], [sx, sy, sz])
    # at shape_scale 1: at most about 200 x 200 x 300 voxels (1 mm in-plane, slices >= 1 mm over <= 300 mm)
    assert round(info["fov_mm"][0]) <= 201 and round(info["fov_mm"][2] / (sz * SCALE)) <= 301


def test_hounsfield_ranges(case):
    image, label, _, _ = case
    img = image.astype(np.float32)
    air = img[:, 0, :]  # the posterior margin behind the back (and the table)
    assert -1050 < np.median(air) < -950
    bone = img[label > 0]
    assert 150 < np.median(bone) < 900 and np.percentile(bone, 99) > 500  # cancellous bone and cortex
    body = (img > -300) & (label == 0)
    soft = np.median(img[body])
    assert -130 < soft < 90  # fat and muscle
    assert np.median(bone) > soft + 100


def test_verse_labels_in_superior_inferior_order(case):
    image, label, _, info = case
    values = sorted(set(np.unique(label).tolist()) - {0})
    assert set(values) <= set(range(8, 25)) and len(values) >= 6
    assert values == list(range(values[0], values[-1] + 1))  # contiguous levels
    assert info["levels_present"] == [VERSE_LABELS[v] for v in values]
    zc = [ndimage.center_of_mass(label == v)[2] for v in values]
    assert zc == sorted(zc, reverse=True)  # T1 (8) at the top, L5 (24) at the bottom
    assert any(v in THORACIC for v in values)


def test_ribs_are_bright_unlabelled_and_lateral(case):
    image, label, affine, _ = case
    sp = affine[0, 0]
    xc = _spine_x(label)
    rows = np.flatnonzero(np.isin(label, list(THORACIC)).any((0, 1)))
    dx = (np.arange(label.shape[0])[:, None] - xc[None, rows]) * sp  # (X, rows) mm from the spine
    lab, img = label[:, :, rows], image[:, :, rows]
    bright = (img > 300) & (lab == 0)
    for side in (-1, 1):
        lateral = ((side * dx > 45) & (side * dx < 95))[:, None, :]
        assert (bright & lateral).sum() > 20, side  # ribs on both sides
    assert not (lab[np.broadcast_to((np.abs(dx) > 50)[:, None, :], lab.shape)] > 0).any()  # and never labelled


def test_fracture_is_lower_and_less_dense_and_lesion_bright(fx_case):
    image, label, affine, info = fx_case
    (fx,) = info["fractures"]
    (les,) = info["sclerotic_lesions"]
    assert fx["level"] == "L1" and fx["in_fov"] and les["level"] == "T11" and les["in_fov"]
    assert info["osteoporotic"]

    def body_height(v: int) -> float:  # median z extent of the anterior 40 % (the body) of the vertebra
        m = label == v
        m[:, : int(np.percentile(np.nonzero(m)[1], 60))] = False
        cols = m.sum(2)
        return float(np.median(cols[cols > 0]) * affine[2, 2])

    def interior(v: int) -> np.ndarray:
        return image[ndimage.binary_erosion(label == v)].astype(np.float32)

    f, up, lo = VERSE_NAMES["L1"], VERSE_NAMES["T12"], VERSE_NAMES["L2"]
    assert body_height(f) < 0.8 * min(body_height(up), body_height(lo))
    assert interior(f).mean() < min(interior(up).mean(), interior(lo).mean())
    t10, t11, t12 = (VERSE_NAMES[k] for k in ("T10", "T11", "T12"))
    assert (interior(t11) > 600).sum() > 2 * max((interior(t10) > 600).sum(), (interior(t12) > 600).sum())


def test_same_seed_same_bytes_and_cases_differ():
    a = generate_ct_phantom(np.random.default_rng([3, 1]), TINY)
    b = generate_ct_phantom(np.random.default_rng([3, 1]), TINY)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and np.array_equal(a[2], b[2])
    assert json.dumps(a[3]) == json.dumps(b[3])
    c = generate_ct_phantom(np.random.default_rng([3, 2]), TINY)
    assert c[0].shape != a[0].shape or not np.array_equal(c[0], a[0])


def test_mri_phantoms_unchanged():
    """The CT work left the MRI phantoms as they were: the label map byte for byte; the float image to 1e-5 (its last
    bits depend on the CPU's SIMD kernels: the byte hash pinned on an AVX512 Xeon differed on an AVX2 EPYC)."""
    image, label, _, _ = generate_phantom(np.random.default_rng([0, 0]), shape_scale=0.25)
    assert hashlib.sha256(label.tobytes()).hexdigest() == MRI_LABEL_SHA
    assert image.shape == (15, 92, 92)
    stats = [image.astype(np.float64).mean(), image.astype(np.float64).std(), *np.percentile(image, (5, 50, 95, 99.9))]
    np.testing.assert_allclose(stats, MRI_IMAGE_STATS, rtol=1e-5)
    rng = np.random.default_rng(7)
    at = [tuple(int(rng.integers(0, n)) for n in image.shape) for _ in range(12)]
    np.testing.assert_allclose([image[i] for i in at], MRI_IMAGE_VOXELS, rtol=1e-5)


def test_upper_levels_do_not_change_the_lower_chain():
    """Stacking T7..T1 draws after T8: the chain up to T8 is the same with or without them."""
    lo = _build_chain(np.random.default_rng(5), [])
    hi = _build_chain(np.random.default_rng(5), [], top="T1")
    names = [el.name for el in lo["els"]]
    assert [el.name for el in hi["els"]][: len(names)] == names and len(hi["els"]) == len(names) + 14
    for a, b in zip(lo["els"], hi["els"], strict=False):
        assert np.array_equal(a.c, b.c) and a.h == b.h and a.alpha == b.alpha
    assert {el.name for el in hi["els"] if el.kind == "vertebra"} == {*_VERT, *(f"T{k}" for k in range(1, 8))}
    with pytest.raises(ValueError, match="top"):
        _build_chain(np.random.default_rng(5), [], top="C7")


def test_crush_fracture_collapses_the_body():
    plain = {el.name: el for el in _build_chain(np.random.default_rng(2), [])["els"]}
    crush = {el.name: el for el in _build_chain(np.random.default_rng(2), [
        {"type": "crush_fracture", "level": "L1", "height_loss": 0.4}])["els"]}
    assert crush["L1"].h == pytest.approx(plain["L1"].h * 0.72)
    assert crush["L1"].p["cav"] > plain["L1"].p["cav"] and crush["L1"].alpha == plain["L1"].alpha
    assert crush["L1"].p["fracture"]["type"] == "crush_fracture" and plain["L1"].p["fracture"] is None


def test_pathology_sampling():
    draws = [_sample_ct_pathology(np.random.default_rng([0, i])) for i in range(400)]
    assert 0.35 < np.mean([o for o, _ in draws]) < 0.55
    entries = [p for _, ps in draws for p in ps]
    assert {p["type"] for p in entries} == set(CT_PATHOLOGIES)
    for osteo, ps in draws:
        fx = [p for p in ps if p["type"].endswith("fracture")]
        assert osteo or not fx  # osteoporotic fractures only in osteoporotic spines
        assert len({p["level"] for p in ps if p["type"] != "disc_degeneration"}) == len(
            [p for p in ps if p["type"] != "disc_degeneration"])  # one finding per vertebra
        for p in fx:
            assert p["level"] in _FX_LEVELS and 0.2 <= p["height_loss"] <= 0.5 and 0.6 <= p["hu_factor"] <= 0.85
            assert p["genant_grade"] == (1 if p["height_loss"] < 0.25 else 2 if p["height_loss"] <= 0.4 else 3)


def test_cli_dataset_files_datalist_and_binary_view(cli_dataset):
    data = json.loads((cli_dataset / "datalist.json").read_text())
    assert data["folds"] == 2 and data["labels"] == {"0": "background", "1": "spine"}
    assert data["labels_multiclass"]["20"] == "L1" and data["modality"] == {"0": "CT (synthetic, HU)"}
    info = json.loads((cli_dataset / "phantom_info.json").read_text())
    assert sorted(info) == ["case_000", "case_001"]
    for it in load_datalist(cli_dataset / "datalist.json"):
        img, binl, multi = (nib.load(it[k]) for k in ("image", "label", "label_multiclass"))
        assert Path(it["label"]).parent.name == "labelsBinTr" and Path(it["label_multiclass"]).parent.name == "labelsTr"
        assert img.get_data_dtype() == np.int16 and multi.get_data_dtype() == np.uint8
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.allclose(img.header.get_zooms(), info[it["case_id"]]["spacing_mm"])
        m = np.asanyarray(multi.dataobj)
        assert np.array_equal(np.asanyarray(binl.dataobj), (m > 0).astype(np.uint8))
        assert set(np.unique(m).tolist()) <= {0, *range(8, 25)}
        keys = {"levels_present", "fractures", "sclerotic_lesions", "spacing_mm"}
        assert keys <= set(info[it["case_id"]])


def test_nobinary_swaps_the_labels(cli_dataset, tmp_path):
    path = make_phantom_dataset("ct", n=2, out=tmp_path, seed=0, folds=2, shape_scale=TINY, binary=False,
                                progress=False)
    item = load_datalist(path)[0]
    assert Path(item["label"]).parent.name == "labelsTr" and Path(item["label_binary"]).parent.name == "labelsBinTr"
    assert json.loads(Path(path).read_text())["labels"]["24"] == "L5"
    first = nib.load(cli_dataset / "imagesTr" / "case_000.nii.gz").get_fdata()
    assert np.array_equal(nib.load(item["image"]).get_fdata(), first)  # the same case for the same seed


@pytest.mark.parametrize("kwargs, match", [({"folds": 3}, "--folds 3"), ({"shape_scale": 0.0}, "shape_scale"),
                                           ({"n": 0}, "--n 0")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom_dataset(**{"modality": "ct", "n": 2, "folds": 2, "out": tmp_path, "shape_scale": TINY,
                                "progress": False, **kwargs})
    with pytest.raises(ValueError, match="--shape_scale 1.5"):
        generate_ct_phantom(np.random.default_rng(0), shape_scale=1.5)
