"""Tests of the synthetic sagittal T2 spine MRI phantoms (spine_monai.data.phantoms) and the label helpers."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from spine_monai.data.datalist import load_datalist
from spine_monai.data.labels import DISC_LABELS, MRSPINESEG_LABELS, MRSPINESEG_NAMES, VERTEBRA_LABELS, to_binary
from spine_monai.data.phantom_anatomy import _sample_pathology
from spine_monai.data.phantoms import PATHOLOGIES, _vote, generate_phantom, make_phantom_dataset

SCALE = 0.25


@pytest.fixture(scope="module")
def case():
    return generate_phantom(np.random.default_rng([0, 0]), shape_scale=SCALE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    return Path(make_phantom_dataset(n=3, out=out, seed=7, folds=3, shape_scale=SCALE, progress=False))


def test_geometry_and_affine(case):
    image, label, affine, info = case
    assert image.dtype == np.float32 and label.dtype == np.uint8 and image.shape == label.shape
    nx, ny, nz = image.shape
    assert 12 <= nx <= 16 and ny == nz and 64 <= ny <= 128  # 256-512 px x 0.25
    th, dy, dz = np.diag(affine)[:3]
    assert 3.5 <= th <= 4.5 and dy == dz
    assert 0.5 <= dy * SCALE <= 0.8  # 0.5-0.8 mm at full scale
    assert np.allclose(affine[:3, :3], np.diag([th, dy, dz]))
    centre = affine @ np.r_[(np.array(image.shape) - 1) / 2, 1.0]
    assert np.allclose(centre[:3], 0.0, atol=1e-6)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert info["shape"] == list(image.shape) and np.allclose(info["spacing_mm"], [th, dy, dz])
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() > 0


def test_labels_are_mrspineseg_anatomy(case):
    image, label, _, info = case
    values = set(np.unique(label).tolist())
    assert values <= set(MRSPINESEG_LABELS)
    vertebrae, discs = sorted(values & set(VERTEBRA_LABELS)), sorted(values & set(DISC_LABELS))
    assert 1 in vertebrae and len(vertebrae) >= 4 and len(discs) >= 3
    assert info["labels_present"] == [MRSPINESEG_LABELS[v] for v in sorted(values - {0})]
    # vertebrae (and discs) are stacked from the sacrum upwards along z (superior)
    zc = {v: ndimage.center_of_mass(label == v)[2] for v in values - {0}}
    assert [zc[v] for v in vertebrae] == sorted(zc[v] for v in vertebrae)
    assert [zc[v] for v in discs] == sorted(zc[v] for v in discs)
    # each disc touches the two vertebrae it lies between (e.g. L4/L5 touches L4 and L5)
    for d in discs:
        lower = MRSPINESEG_NAMES[MRSPINESEG_LABELS[d].split("/")[1]]
        upper = MRSPINESEG_NAMES[MRSPINESEG_LABELS[d].split("/")[0]]
        ring = ndimage.binary_dilation(label == d, iterations=1)
        for v in (lower, upper):
            if v in values:
                assert (label[ring] == v).any(), f"disc {MRSPINESEG_LABELS[d]} does not touch {MRSPINESEG_LABELS[v]}"
    # T2 contrast: CSF-bright discs' nuclei and fat vs dark cortex: bone is darker than the brightest tissue
    assert np.median(image[label > 0]) < np.percentile(image, 99)


def test_same_seed_same_bytes_and_cases_differ(case):
    image, label, affine, info = generate_phantom(np.random.default_rng([0, 0]), shape_scale=SCALE)
    assert image.tobytes() == case[0].tobytes() and label.tobytes() == case[1].tobytes()
    assert np.array_equal(affine, case[2]) and json.dumps(info) == json.dumps(case[3])
    other = generate_phantom(np.random.default_rng([0, 1]), shape_scale=SCALE)
    assert other[0].shape != image.shape or not np.array_equal(other[0], image)


def test_pathology_rate_and_types():
    cases = [_sample_pathology(np.random.default_rng([0, i])) for i in range(200)]
    rate = np.mean([bool(c) for c in cases])
    assert 0.25 <= rate <= 0.5
    assert {p["type"] for c in cases for p in c} == set(PATHOLOGIES)


def test_degenerated_disc_is_rendered_thin():
    seed = next(i for i in range(500) if [p["type"] for p in _sample_pathology(np.random.default_rng([0, i]))]
                == ["disc_degeneration"])
    image, label, _, info = generate_phantom(np.random.default_rng([0, seed]), shape_scale=SCALE)
    (path,) = info["pathology"]
    assert path["type"] == "disc_degeneration" and path["in_fov"]
    sick = MRSPINESEG_NAMES[path["level"]]
    others = [int((label == d).sum()) for d in (11, 12, 13, 14) if d != sick and (label == d).any()]
    assert (label == sick).sum() < 0.8 * np.median(others)


def test_dataset_files_and_datalist(dataset):
    data = json.loads(dataset.read_text())
    assert data["folds"] == 3 and data["numTraining"] == 3 and data["labels"] == {"0": "background", "1": "spine"}
    for item in data["training"]:
        assert not Path(item["image"]).is_absolute()
    items = load_datalist(dataset)
    assert sorted(it["fold"] for it in items) == [0, 1, 2]
    for it in items:
        img, lab, multi = (nib.load(it[k]) for k in ("image", "label", "label_multiclass"))
        assert Path(it["label"]).parent.name == "labelsBinTr" and Path(it["label_multiclass"]).parent.name == "labelsTr"
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.allclose(img.header.get_zooms(), np.diag(img.affine)[:3])
        assert img.get_data_dtype() == np.float32 and multi.get_data_dtype() == np.uint8
        assert np.array_equal(np.asanyarray(lab.dataobj), to_binary(np.asanyarray(multi.dataobj)))
        assert set(np.unique(np.asanyarray(lab.dataobj))) == {0, 1}
    info = json.loads((dataset.parent / "phantom_info.json").read_text())
    assert sorted(info) == ["case_000", "case_001", "case_002"]


def test_case_does_not_depend_on_n(dataset, tmp_path):
    path = make_phantom_dataset(n=2, out=tmp_path, seed=7, folds=2, shape_scale=SCALE, binary=False, progress=False)
    item = load_datalist(path)[0]
    assert Path(item["label"]).parent.name == "labelsTr" and "label_binary" in item
    first = nib.load(dataset.parent / "imagesTr" / "case_000.nii.gz").get_fdata()
    assert np.array_equal(nib.load(item["image"]).get_fdata(), first)


@pytest.mark.parametrize("kwargs, match", [({"modality": "pet"}, "only 'mri'"), ({"folds": 1}, "--folds 1"),
                                           ({"n": 2, "folds": 3}, "--folds 3"), ({"shape_scale": 0.0}, "shape_scale"),
                                           ({"n": 0}, "--n 0")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom_dataset(**{"n": 3, "folds": 2, "out": tmp_path, "shape_scale": SCALE, "progress": False, **kwargs})
    assert not (tmp_path / "datalist.json").exists()


def test_generate_bad_scale():
    with pytest.raises(ValueError, match="--shape_scale 1.5"):
        generate_phantom(np.random.default_rng(0), shape_scale=1.5)


def test_vote_majority_and_centre_tie_break():
    subs = np.array([[0, 1, 1, 2, 2], [3, 3, 0, 1, 2], [0, 0, 5, 5, 5], [1, 0, 2, 3, 4], [7, 7, 7, 0, 0]], np.uint8)
    lab = subs[:, :, None, None]  # (X=5, K=5, 1, 1)
    assert _vote(lab)[:, 0, 0].tolist() == [1, 3, 5, 2, 7]


def test_to_binary_numpy_and_torch():
    lab = np.array([[0, 3], [19, 0]], np.uint8)
    assert to_binary(lab).tolist() == [[0, 1], [1, 0]] and to_binary(lab).dtype == np.uint8
    assert to_binary(lab, bool).dtype == bool
    t = torch.tensor([[0.0, 2.0]])
    assert to_binary(t).tolist() == [[0.0, 1.0]] and to_binary(t).dtype == torch.float32
    assert to_binary(t, torch.bool).dtype == torch.bool
    with pytest.raises(TypeError):
        to_binary([0, 1])


def test_moved_names_are_reexported():
    """The split into phantom_anatomy / phantom_paint / visualize keeps every name importable from phantoms."""
    from spine_monai import visualize
    from spine_monai.data import phantom_anatomy, phantom_paint, phantoms

    for mod in (phantom_anatomy, phantom_paint):
        own = [k for k, v in vars(mod).items() if getattr(v, "__module__", None) == mod.__name__ or k.isupper()
               or (k.startswith("_") and k[1:2].isupper())]
        assert own
        for name in own:
            assert getattr(phantoms, name) is getattr(mod, name), name
    for name in ("render_overlay", "_as_ras", "_draw_sagittal"):  # what phantoms held before the split
        assert getattr(phantoms, name) is getattr(visualize, name), name
    assert set(phantoms.__all__) >= {*phantom_anatomy.__all__, *phantom_paint.__all__, "render_overlay"}


@pytest.mark.slow
def test_full_scale_geometry():
    image, label, affine, _ = generate_phantom(np.random.default_rng([0, 5]))
    assert 256 <= image.shape[1] <= 512 and image.shape[1] % 16 == 0
    assert 0.5 <= affine[1, 1] <= 0.8 and 12 <= image.shape[0] <= 16
    assert {1, 2, 3, 4, 11, 12, 13} <= set(np.unique(label).tolist())
