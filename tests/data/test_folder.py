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
