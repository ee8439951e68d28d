"""Folder-of-pairs adapter (used for ../shared/data/real/lumbar_mri)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from spine_monai.data.datalist import load_datalist
from spine_monai.data.folder import find_pairs, folder_datalist


def _pair(folder, case, with_label=True):
    arr = np.zeros((4, 5, 6), np.uint8)
    nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), str(folder / f"{case}_img.nii.gz"))
    if with_label:
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(folder / f"{case}_label.nii.gz"))


def test_pairs_include_and_folds(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for case in ("VB1_01", "VB2_01", "VB2_02", "VB2_03", "IVD_01"):
        _pair(src, case)
    pairs = find_pairs(src, include="VB*")
    assert [p["case"] for p in pairs] == ["VB1_01", "VB2_01", "VB2_02", "VB2_03"]
    path = folder_datalist(src, out=tmp_path / "dl", folds=2, seed=0, include=["VB2_*"])
    d = json.loads(open(path).read())
    assert d["folds"] == 2 and d["binary_labels"] is True and len(d["training"]) == 3
    train, val = load_datalist(path, fold=0, split="train"), load_datalist(path, fold=0, split="val")
    assert len(train) + len(val) == 3 and all(nib.load(x["image"]) for x in train + val)
    # the same seed gives the same folds (every method of a comparison uses the same split)
    d2 = json.loads(open(folder_datalist(src, out=tmp_path / "dl2", folds=2, seed=0, include=["VB2_*"])).read())
    assert {x["case"]: x["fold"] for x in d2["training"]} == {x["case"]: x["fold"] for x in d["training"]}


def test_missing_label_and_empty(tmp_path):
    _pair(tmp_path, "A_01", with_label=False)
    with pytest.raises(FileNotFoundError, match="A_01_img.nii.gz"):
        find_pairs(tmp_path)
    with pytest.raises(FileNotFoundError):
        find_pairs(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no case matches"):
        find_pairs(tmp_path, include="Z*")


def test_real_lumbar_mri_datalist(real_data_dir, tmp_path):
    path = folder_datalist(real_data_dir / "lumbar_mri", out=tmp_path, folds=5, seed=0, include="VB*")
    items = load_datalist(path, split="all")
    assert len(items) == 60 and {x["fold"] for x in items} == set(range(5))
    assert all(x["image"].endswith("_img.nii.gz") and x["label"].endswith("_label.nii.gz") for x in items)


def test_label_map_relabels_into_a_copy(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    for case in ("VB3_01", "VB3_02"):
        lab = np.zeros((4, 5, 6), np.uint8)
        lab[0], lab[1], lab[2] = 1, 2, 7  # 7 is not in the map: kept
        nib.save(nib.Nifti1Image(lab.astype(np.float32), affine), str(src / f"{case}_img.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(src / f"{case}_label.nii.gz"))
    before = (src / "VB3_01_label.nii.gz").read_bytes()
    path = folder_datalist(src, out=tmp_path / "dl", folds=2, label_map="1:6, 2:5", progress=False)
    d = json.loads(open(path).read())
    assert d["label_mapping"] == {"1": 6, "2": 5} and d["label_values"] == [0, 5, 6, 7]
    item = load_datalist(path)[0]
    mapped = nib.load(item["label"])
    assert str(tmp_path / "dl" / "labels_mapped") in item["label"]
    arr = np.asarray(mapped.dataobj)
    assert (arr[0] == 6).all() and (arr[1] == 5).all() and (arr[2] == 7).all() and (arr[3] == 0).all()
    np.testing.assert_allclose(mapped.affine, affine)
    assert (src / "VB3_01_label.nii.gz").read_bytes() == before  # the source is never written
    assert not list((tmp_path / "dl" / "labels_mapped").glob(".*"))  # no temporary file left


@pytest.mark.parametrize("bad, match", [("1-6", "not 'old:new'"), ("1:x", "integers"), ("1:6,1:5", "twice"),
                                        (" , ", "empty"), ("-1:3", "non-negative")])
def test_label_map_errors(tmp_path, bad, match):
    _pair(tmp_path, "A_01")
    with pytest.raises(ValueError, match=match):
        folder_datalist(tmp_path, out=tmp_path / "dl", folds=2, label_map=bad, progress=False)


def test_label_map_refuses_soft_labels_naming_the_file(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), str(tmp_path / "A_img.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 0.5, np.float32), np.eye(4)), str(tmp_path / "A_label.nii.gz"))
    with pytest.raises(ValueError, match="A_label.nii.gz.*non-integer"):
        folder_datalist(tmp_path, out=tmp_path / "dl", folds=2, label_map="1:2", progress=False)
