"""Dataset-layout adapters (``datalist --format NAME``) on tiny synthetic replicas of each public layout."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine_monai.data import adapters
from spine_monai.data.adapters import FORMATS, SPIDER_TO_MRSPINESEG, VERSE_LABELS
from spine_monai.data.datalist import load_datalist
from spine_monai.data.folder import folder_datalist
from spine_monai.data.labels import MRSPINESEG_LABELS

SHAPE = (8, 8, 6)
#: a non-trivial affine (oblique, anisotropic, shifted) to check that geometry is kept.
AFFINE = np.array([[0.0, 0.0, -3.0, 12.5], [0.8, 0.1, 0.0, -40.0], [0.0, 0.9, 0.0, 7.25], [0, 0, 0, 1]])


def _nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _image(path: Path, seed: int = 0) -> Path:
    return _nii(path, np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32))


def _mask(path: Path, values=(1,), shape=SHAPE, affine: np.ndarray = AFFINE) -> Path:
    data = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        data[i % shape[0], :, i % shape[2]] = v
    return _nii(path, data, affine)


def _read(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _datalist(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ mrspineseg


def _mrspineseg(root: Path, cases=(1, 2, 3, 4), under_train=True, ext=".nii.gz") -> Path:
    base = root / "train" if under_train else root
    for n in cases:
        _image(base / "MR" / f"Case{n}{ext}", n)
        _mask(base / "Mask" / f"mask_case{n}{ext}", (n, 11, 19))
    return root


def test_mrspineseg_pairs_folds_labels(tmp_path, caplog):
    src = _mrspineseg(tmp_path / "MRSpineSeg")
    _mask(src / "train" / "Mask" / "mask_case9.nii.gz")  # a mask without image: warned, left out
    with caplog.at_level(logging.INFO, logger="spine_monai"):
        path = folder_datalist(src, out=tmp_path / "dl", folds=2, seed=0, format="mrspineseg")
    assert "mask_case9.nii.gz" in caplog.text and "without an image" in caplog.text
    assert "label convention MRSpineSeg" in caplog.text and "identity" in caplog.text
    d = _datalist(path)
    assert d["format"] == "mrspineseg" and d["label_convention"] == "MRSpineSeg"
    assert d["labels"] == {str(k): v for k, v in MRSPINESEG_LABELS.items()}
    assert d["label_values"] == [0, 1, 2, 3, 4, 11, 19]
    items = load_datalist(path, split="all")
    assert [x["case_id"] for x in items] == ["Case1", "Case2", "Case3", "Case4"]
    for x in items:
        assert Path(x["label"]).name == f"mask_{x['case_id'].lower()}.nii.gz"
        assert Path(x["image"]).name == f"{x['case_id']}.nii.gz"
    assert sorted(x["fold"] for x in items) == [0, 0, 1, 1]
    # the same seed gives the same folds
    again = load_datalist(folder_datalist(src, out=tmp_path / "dl2", folds=2, seed=0, format="mrspineseg"), split="all")
    assert [x["fold"] for x in again] == [x["fold"] for x in items]
    # --include
    sel = load_datalist(folder_datalist(src, out=tmp_path / "dl3", folds=2, include=["Case1", "Case3"],
                                        format="mrspineseg"), split="all")
    assert [x["case_id"] for x in sel] == ["Case1", "Case3"]


def test_mrspineseg_flat_nii_and_errors(tmp_path):
    flat = _mrspineseg(tmp_path / "flat", cases=(7, 8), under_train=False, ext=".nii")
    items = FORMATS["mrspineseg"](flat).items
    assert [(x["case_id"], Path(x["label"]).name) for x in items] == [("Case7", "mask_case7.nii"),
                                                                    ("Case8", "mask_case8.nii")]
    (flat / "Mask" / "mask_case8.nii").unlink()
    with pytest.raises(FileNotFoundError, match=r"Case8\.nii: no mask mask_case8"):
        folder_datalist(flat, out=tmp_path / "o", folds=2, format="mrspineseg")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        folder_datalist(tmp_path / "absent", out=tmp_path / "o", format="mrspineseg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no MRSpineSeg folders"):
        folder_datalist(tmp_path / "empty", out=tmp_path / "o", format="mrspineseg")
    (tmp_path / "empty" / "MR").mkdir()
    (tmp_path / "empty" / "Mask").mkdir()
    with pytest.raises(FileNotFoundError, match="no mrspineseg case found"):
        folder_datalist(tmp_path / "empty", out=tmp_path / "o", format="mrspineseg")
    with pytest.raises(FileNotFoundError, match=r"no mrspineseg case matches include=\['Z\*'\]"):
        folder_datalist(flat, out=tmp_path / "o", include="Z*", format="mrspineseg")
    # an unreadable file is named
    bad = _mrspineseg(tmp_path / "bad", cases=(1, 2))
    (bad / "train" / "Mask" / "mask_case2.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match=r"mask_case2\.nii\.gz: cannot read"):
        folder_datalist(bad, out=tmp_path / "o", folds=2, format="mrspineseg")


def test_unknown_format_and_pairs_options(tmp_path):
    src = _mrspineseg(tmp_path / "m", cases=(1, 2))
    with pytest.raises(ValueError, match="--format 'nnunet' is not one of pairs, mrspineseg"):
        folder_datalist(src, out=tmp_path / "o", format="nnunet")
    with pytest.raises(ValueError, match="--pattern and --label_suffix apply to --format pairs only"):
        folder_datalist(src, out=tmp_path / "o", format="mrspineseg", pattern="*.nii.gz")
    assert set(FORMATS) == {"mrspineseg", "spider", "verse", "ctspine1k", "totalsegmentator"}


# ---------------------------------------------------------------------------------------------------- SPIDER

SPACING = (0.6, 0.55, 3.3)  # x, y, z (ITK order)
ORIGIN = (-12.0, 30.5, 4.0)
DIRECTION = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # sagittal-like, LPS


def _mha(path: Path, data_zyx: np.ndarray) -> Path:
    """Write an ``.mha`` with SimpleITK when installed, else itk (array in ITK order z, y, x)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if adapters._itk_backend() == "sitk":
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(data_zyx)
        img.SetSpacing(SPACING)
        img.SetOrigin(ORIGIN)
        img.SetDirection(DIRECTION.ravel().tolist())
        sitk.WriteImage(img, str(path))
    else:  # pragma: no cover - without SimpleITK
        import itk

        img = itk.image_from_array(np.ascontiguousarray(data_zyx))
        img.SetSpacing(SPACING)
        img.SetOrigin(ORIGIN)
        img.SetDirection(itk.matrix_from_array(DIRECTION))
        itk.imwrite(img, str(path))
    return path


def _ras_affine() -> np.ndarray:
    """NIfTI (RAS) affine of an ITK (LPS) image with SPACING / ORIGIN / DIRECTION."""
    lps = np.eye(4)
    lps[:3, :3] = DIRECTION @ np.diag(SPACING)
    lps[:3, 3] = ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


#: SPIDER mask values written into the constructed mask and the MRSpineSeg value each must become.
SPIDER_EXPECTED = {1: 2, 2: 3, 9: 10, 10: 0, 25: 0, 100: 0, 105: 6, 201: 11, 202: 12, 209: 19, 210: 0, 225: 0}


def _spider(root: Path, series=("1_t1", "1_t2", "2_t1", "2_t2", "3_t2")) -> Path:
    zyx = SHAPE[::-1]
    for i, name in enumerate(series):
        _mha(root / "images" / f"{name}.mha", np.random.default_rng(i).integers(0, 500, zyx).astype(np.int16))
        mask = np.zeros(zyx, np.uint8)
        for j, value in enumerate(SPIDER_EXPECTED):
            mask.flat[j * 7 + i] = value
        _mha(root / "masks" / f"{name}.mha", mask)
    return root


def test_spider_mapping_geometry_subject_folds(tmp_path, caplog):
    src = _spider(tmp_path / "SPIDER")
    rows = ["new_file_name,subset,sex"] + [f"{n}.mha,{'validation' if n.startswith('3') else 'training'},F"
                                           for n in ("1_t1", "1_t2", "2_t1", "2_t2", "3_t2")]
    (src / "overview.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    _mha(src / "masks" / "9_t1.mha", np.zeros(SHAPE[::-1], np.uint8))  # mask without image: warned
    out = tmp_path / "dl"
    with caplog.at_level(logging.INFO, logger="spine_monai"):
        path = folder_datalist(src, out=out, folds=2, seed=3, format="spider", progress=False)
    assert "9_t1.mha" in caplog.text and "numbered from the bottom" in caplog.text
    assert "201=L5/S1 -> 11" in caplog.text
    d = _datalist(path)
    assert d["labels"] == {str(k): v for k, v in MRSPINESEG_LABELS.items()} and d["label_convention"] == "MRSpineSeg"
    assert d["label_values"] == sorted({0, *SPIDER_EXPECTED.values()})
    assert d["overview"].endswith("overview.csv")
    items = load_datalist(path, split="all")
    assert [x["case_id"] for x in items] == ["1_t1", "1_t2", "2_t1", "2_t2", "3_t2"]
    assert [x["subset"] for x in items] == ["training"] * 4 + ["validation"]
    # the series of one patient share a fold; both folds are used
    fold = {x["case_id"]: x["fold"] for x in items}
    assert fold["1_t1"] == fold["1_t2"] and fold["2_t1"] == fold["2_t2"] and set(fold.values()) == {0, 1}
    for i, x in enumerate(items):
        assert Path(x["image"]).suffix == ".mha" and Path(x["source_label"]).parent.name == "masks"
        assert Path(x["label"]) == (out / "labels_mrspineseg" / f"{x['case_id']}.nii.gz").resolve()
        label = nib.load(x["label"])
        np.testing.assert_allclose(label.affine, _ras_affine(), atol=1e-4)
        mapped = np.asarray(label.dataobj)
        assert mapped.dtype == np.uint8 and mapped.shape == SHAPE
        # voxel by voxel: ITK order (z, y, x) of the mask == NIfTI order (x, y, z) transposed
        zyx = mapped.transpose(2, 1, 0)
        expected = np.zeros(SHAPE[::-1], np.uint8)
        for j, value in enumerate(SPIDER_EXPECTED.values()):
            expected.flat[j * 7 + i] = value
        np.testing.assert_array_equal(zyx, expected)
    assert not list((out / "labels_mrspineseg").glob(".*"))  # no temporary file left
    # --include
    sel = folder_datalist(src, out=tmp_path / "t2", folds=2, include="*_t2", format="spider", progress=False)
    assert [x["case_id"] for x in load_datalist(sel, split="all")] == ["1_t2", "2_t2", "3_t2"]
    assert sorted(p.name for p in (tmp_path / "t2" / "labels_mrspineseg").iterdir()) == [
        "1_t2.nii.gz", "2_t2.nii.gz", "3_t2.nii.gz"]


def test_spider_table():
    """The documented SPIDER -> MRSpineSeg table."""
    assert {k: SPIDER_TO_MRSPINESEG[k] for k in (1, 2, 9, 101, 201, 202, 209)} == {
        1: 2, 2: 3, 9: 10, 101: 2, 201: 11, 202: 12, 209: 19}
    assert adapters.spider_to_mrspineseg(np.array([[1, 2, 100, 201], [10, 210, 255, -1]])).tolist() == [
        [2, 3, 0, 11], [0, 0, 0, 0]]
    assert MRSPINESEG_LABELS[2] == "L5" and MRSPINESEG_LABELS[11] == "L5/S" and MRSPINESEG_LABELS[19] == "T9/T10"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # itk's SWIG, MONAI's codecs
def test_spider_monai_reads_the_pair(tmp_path):
    """MONAI reads the .mha image (ITKReader, as the bundles) and the written NIfTI label with the same shape and
    affine (about 10 s: importing MONAI and itk)."""
    src = _spider(tmp_path / "S", series=("4_t2", "5_t2"))
    item = FORMATS["spider"](src, tmp_path / "o", progress=False).items[0]
    from monai.transforms import LoadImage

    image = LoadImage(image_only=True, reader="ITKReader")(item["image"])
    label = LoadImage(image_only=True)(item["label"])
    assert tuple(image.shape) == tuple(label.shape) == SHAPE
    np.testing.assert_allclose(np.asarray(image.affine), np.asarray(label.affine), atol=1e-4)
    np.testing.assert_allclose(np.asarray(label.affine), _ras_affine(), atol=1e-4)


def test_spider_errors(tmp_path):
    src = _spider(tmp_path / "S", series=("1_t1", "2_t1"))
    (src / "masks" / "2_t1.mha").unlink()
    with pytest.raises(FileNotFoundError, match=r"2_t1\.mha: no mask 2_t1\.mha"):
        folder_datalist(src, out=tmp_path / "o", folds=2, format="spider", progress=False)
    (src / "masks" / "2_t1.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n")
    with pytest.raises(ValueError, match=r"2_t1\.mha: cannot read"):
        folder_datalist(src, out=tmp_path / "o", folds=2, format="spider", progress=False)
    (tmp_path / "E").mkdir()
    with pytest.raises(FileNotFoundError, match="no SPIDER folder images/"):
        folder_datalist(tmp_path / "E", out=tmp_path / "o", format="spider")
    for sub in ("images", "masks"):
        (tmp_path / "E" / sub).mkdir()
    with pytest.raises(FileNotFoundError, match="no spider case found"):
        folder_datalist(tmp_path / "E", out=tmp_path / "o", format="spider")
    with pytest.raises(ValueError, match="more than the 2 subjects"):
        folder_datalist(_spider(tmp_path / "S3", series=("1_t1", "1_t2", "2_t1")), out=tmp_path / "o3", folds=3,
                        format="spider", progress=False)


# ----------------------------------------------------------------------------------------------------- VerSe


def _verse(root: Path) -> Path:
    raw, der = root / "rawdata", root / "derivatives"
    _image(raw / "sub-verse001" / "sub-verse001_ct.nii.gz")
    _mask(der / "sub-verse001" / "sub-verse001_seg-vert_msk.nii.gz", (20, 21, 28))
    (der / "sub-verse001" / "sub-verse001_seg-subreg_ctd.json").write_text(
        json.dumps([{"direction": ["P", "I", "R"]}, {"label": 20, "X": 1.0, "Y": 2.0, "Z": 3.0}]), encoding="utf-8")
    _image(raw / "sub-gl002" / "ses-01" / "sub-gl002_ses-01_dir-ax_ct.nii.gz")
    _mask(der / "sub-gl002" / "ses-01" / "sub-gl002_ses-01_dir-ax_seg-vert_msk.nii.gz", (8, 19))
    for split in ("verse010", "verse011"):  # one subject, two series
        _image(raw / "sub-verse003" / f"sub-verse003_split-{split}_ct.nii.gz")
        _mask(der / "sub-verse003" / f"sub-verse003_split-{split}_seg-vert_msk.nii.gz", (1, 7))
    _image(raw / "sub-verse004" / "sub-verse004_dir-iso_ct.nii.gz")  # mask without the dir entity
    _mask(der / "sub-verse004" / "sub-verse004_seg-vert_msk.nii.gz", (24, 25))
    _image(raw / "sub-verse005" / "sub-verse005_ct.nii.gz")
    _mask(der / "sub-verse005" / "sub-verse005_seg-vert_msk.nii.gz", (22,))
    return root


def test_verse_pairing_centroids_subject_folds(tmp_path):
    src = _verse(tmp_path / "verse20")
    _mask(src / "derivatives" / "sub-verse009" / "sub-verse009_seg-vert_msk.nii.gz")  # orphan: warned
    path = folder_datalist(src, out=tmp_path / "dl", folds=2, seed=1, format="verse")
    d = _datalist(path)
    assert d["labels"] == {str(k): v for k, v in VERSE_LABELS.items()} and d["label_convention"] == "VerSe"
    assert d["labels"]["20"] == "L1" and d["labels"]["28"] == "T13" and d["labels"]["8"] == "T1"
    assert d["label_values"] == [0, 1, 7, 8, 19, 20, 21, 22, 24, 25, 28]
    items = load_datalist(path, split="all")
    assert [x["case_id"] for x in items] == ["sub-gl002_ses-01_dir-ax", "sub-verse001", "sub-verse003_split-verse010",
                                             "sub-verse003_split-verse011", "sub-verse004_dir-iso", "sub-verse005"]
    for x in items:
        assert Path(x["image"]).name == f"{x['case_id']}_ct.nii.gz"
        assert "derivatives" in Path(x["label"]).parts and Path(x["label"]).name.endswith("_seg-vert_msk.nii.gz")
        assert Path(x["label"]).name.startswith(f"sub-{x['subject']}")
    by_id = {x["case_id"]: x for x in items}
    assert by_id["sub-verse004_dir-iso"]["label"].endswith("sub-verse004_seg-vert_msk.nii.gz")
    assert by_id["sub-verse001"]["centroids"].endswith("sub-verse001_seg-subreg_ctd.json")
    assert sum("centroids" in x for x in items) == 1
    assert by_id["sub-verse003_split-verse010"]["fold"] == by_id["sub-verse003_split-verse011"]["fold"]
    # identity: the label files are the dataset's own
    np.testing.assert_array_equal(_read(by_id["sub-verse005"]["label"]),
                                  _read(src / "derivatives" / "sub-verse005" / "sub-verse005_seg-vert_msk.nii.gz"))
    sel = folder_datalist(src, out=tmp_path / "sel", folds=2, include="sub-verse00[13]*", format="verse")
    assert [x["case_id"] for x in load_datalist(sel, split="all")] == [
        "sub-verse001", "sub-verse003_split-verse010", "sub-verse003_split-verse011"]


def test_verse_errors(tmp_path):
    src = _verse(tmp_path / "v")
    (src / "derivatives" / "sub-gl002" / "ses-01" / "sub-gl002_ses-01_dir-ax_seg-vert_msk.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"sub-gl002_ses-01_dir-ax_ct\.nii\.gz: no mask "
                                                r"sub-gl002_ses-01_dir-ax_seg-vert_msk"):
        folder_datalist(src, out=tmp_path / "o", folds=2, format="verse")
    (tmp_path / "e").mkdir()
    with pytest.raises(FileNotFoundError, match="no verse case found"):
        folder_datalist(tmp_path / "e", out=tmp_path / "o", format="verse")
    shape = _verse(tmp_path / "w")
    _mask(shape / "derivatives" / "sub-verse005" / "sub-verse005_seg-vert_msk.nii.gz", shape=(8, 8, 5))
    with pytest.raises(ValueError, match=r"sub-verse005_seg-vert_msk\.nii\.gz: shape \(8, 8, 5\) differs"):
        folder_datalist(shape, out=tmp_path / "o", folds=2, format="verse")


# ------------------------------------------------------------------------------------------------- CTSpine1K


def test_ctspine1k_beside_and_volumes_tree(tmp_path, caplog):
    src = tmp_path / "CTSpine1K"
    _image(src / "verse506_CT-iso.nii.gz")
    _mask(src / "verse506_CT-iso_seg.nii.gz", (20, 24))
    _image(src / "1.3.6.1.4.1.9328.50.4.0004.nii.gz")
    _mask(src / "1.3.6.1.4.1.9328.50.4.0004_seg.nii.gz", (25,))
    _image(src / "volumes" / "liver" / "liver_1.nii.gz")
    _mask(src / "labels" / "liver" / "liver_1_seg.nii.gz", (19, 20))
    _image(src / "volumes" / "liver" / "liver_2.nii.gz")
    _mask(src / "labels" / "liver" / "liver_2_seg.nii.gz", (21,))
    _mask(src / "labels" / "liver" / "liver_7_seg.nii.gz")  # orphan: warned
    with caplog.at_level(logging.WARNING, logger="spine_monai"):
        path = folder_datalist(src, out=tmp_path / "dl", folds=2, format="ctspine1k")
    assert "liver_7_seg.nii.gz" in caplog.text
    d = _datalist(path)
    assert d["labels"] == {str(k): v for k, v in VERSE_LABELS.items()} and d["label_values"] == [0, 19, 20, 21, 24, 25]
    items = load_datalist(path, split="all")
    assert [x["case_id"] for x in items] == ["1.3.6.1.4.1.9328.50.4.0004", "liver_1", "liver_2", "verse506_CT-iso"]
    assert all(Path(x["label"]).name == f"{x['case_id']}_seg.nii.gz" for x in items)
    assert Path(items[1]["label"]).parent.parent.name == "labels"
    assert sorted(x["fold"] for x in items) == [0, 0, 1, 1]
    sel = folder_datalist(src, out=tmp_path / "sel", folds=2, include="liver_*", format="ctspine1k")
    assert [x["case_id"] for x in load_datalist(sel, split="all")] == ["liver_1", "liver_2"]
    (src / "labels" / "liver" / "liver_2_seg.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"liver_2\.nii\.gz: no label liver_2_seg\.nii\.gz"):
        folder_datalist(src, out=tmp_path / "o", folds=2, format="ctspine1k")
    (tmp_path / "e").mkdir()
    with pytest.raises(FileNotFoundError, match="no ctspine1k case found"):
        folder_datalist(tmp_path / "e", out=tmp_path / "o", format="ctspine1k")


# ------------------------------------------------------------------------------------------ TotalSegmentator

#: TotalSegmentator mask -> the VerSe value it must become (spinal_cord is not a vertebra: ignored).
TOTALSEG_EXPECTED = {"vertebrae_C1": 1, "vertebrae_T12": 19, "vertebrae_L4": 23, "vertebrae_L5": 24, "sacrum": 26,
                     "spinal_cord": 0}


def _totalseg_case(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    _image(folder / "ct.nii.gz", seed)
    masks = {}
    for i, name in enumerate(TOTALSEG_EXPECTED):
        m = np.zeros(SHAPE, np.uint8)
        m[i, seed % 8, :] = 1
        _nii(folder / "segmentations" / f"{name}.nii.gz", m)
        masks[name] = m
    return masks


def test_totalsegmentator_combine(tmp_path):
    src = tmp_path / "Totalsegmentator_dataset"
    masks = {case: _totalseg_case(src / case, seed) for seed, case in enumerate(("s0001", "s0002", "s0003"))}
    (src / "s0009" / "segmentations").mkdir(parents=True)  # masks without an image: warned, left out
    _mask(src / "s0009" / "segmentations" / "vertebrae_L1.nii.gz")
    out = tmp_path / "dl"
    path = folder_datalist(src, out=out, folds=3, format="totalsegmentator", progress=False)
    d = _datalist(path)
    assert d["labels"] == {str(k): v for k, v in VERSE_LABELS.items()} and d["labels"]["26"] == "sacrum"
    assert d["label_values"] == [0, 1, 19, 23, 24, 26]
    items = load_datalist(path, split="all")
    assert [x["case_id"] for x in items] == ["s0001", "s0002", "s0003"]
    assert sorted(x["fold"] for x in items) == [0, 1, 2]
    for x in items:
        assert Path(x["image"]).name == "ct.nii.gz" and Path(x["image"]).parent.name == x["case_id"]
        assert Path(x["label"]) == (out / "labels_verse" / f"{x['case_id']}.nii.gz").resolve()
        label = nib.load(x["label"])
        np.testing.assert_allclose(label.affine, AFFINE, atol=1e-4)
        expected = np.zeros(SHAPE, np.uint8)
        for name, m in masks[x["case_id"]].items():
            expected[m > 0] = TOTALSEG_EXPECTED[name]
        np.testing.assert_array_equal(np.asarray(label.dataobj), expected)
    sel = folder_datalist(src, out=tmp_path / "sel", folds=2, include=["s0001", "s0003"], format="totalsegmentator")
    assert [x["case_id"] for x in load_datalist(sel, split="all")] == ["s0001", "s0003"]
    # one case folder given directly
    one = FORMATS["totalsegmentator"](src / "s0002", tmp_path / "one", progress=False)
    assert [x["case_id"] for x in one.items] == ["s0002"]


def test_totalsegmentator_errors(tmp_path):
    src = tmp_path / "ts"
    _totalseg_case(src / "s0001")
    _totalseg_case(src / "s0002")
    _mask(src / "s0002" / "segmentations" / "vertebrae_L1.nii.gz", shape=(8, 8, 7))
    with pytest.raises(ValueError, match=r"vertebrae_L1\.nii\.gz: shape \(8, 8, 7\) / affine differ from"):
        folder_datalist(src, out=tmp_path / "o", folds=2, format="totalsegmentator", progress=False)
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.0
    _mask(src / "s0002" / "segmentations" / "vertebrae_L1.nii.gz", affine=shifted)
    with pytest.raises(ValueError, match=r"vertebrae_L1\.nii\.gz: shape \(8, 8, 6\) / affine differ from"):
        folder_datalist(src, out=tmp_path / "o", folds=2, format="totalsegmentator", progress=False)
    assert not (tmp_path / "o" / "labels_verse" / "s0002.nii.gz").exists()
    (src / "s0002" / "segmentations" / "vertebrae_L1.nii.gz").unlink()
    _image(src / "s0003" / "ct.nii.gz")  # image without masks
    with pytest.raises(FileNotFoundError, match=r"s0003/ct\.nii\.gz: no mask .*vertebrae_\*\.nii\.gz"):
        folder_datalist(src, out=tmp_path / "o", folds=2, format="totalsegmentator", progress=False)
    (tmp_path / "e").mkdir()
    with pytest.raises(FileNotFoundError, match="no totalsegmentator case found"):
        folder_datalist(tmp_path / "e", out=tmp_path / "o", format="totalsegmentator")


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_format_mrspineseg(tmp_path):
    src = _mrspineseg(tmp_path / "MRSpineSeg", cases=(1, 2, 3))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spine_monai", "datalist", str(src), "--format", "mrspineseg", "--out", str(out),
           "--folds", "3"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    d = _datalist(out / "datalist.json")
    assert d["format"] == "mrspineseg" and d["numTraining"] == 3
    assert sorted(x["fold"] for x in d["training"]) == [0, 1, 2]
    assert d["training"][0]["label"] == "../MRSpineSeg/train/Mask/mask_case1.nii.gz"
    bad = subprocess.run(cmd[:6] + ["nope", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error: --format 'nope' is not one of" in bad.stderr


# ------------------------------------------------------------------------------------------ real (optional)


@pytest.mark.real
def test_real_bids_naming(real_data_dir):
    """TPTBox's CT sample (``sub-ct_label-22_ct`` + ``sub-ct_seg-vert_label-22_msk``) pairs by entities; VerSe's
    mask-only sample is refused naming the mask."""
    tpt = real_data_dir / "tptbox"
    if not tpt.is_dir():
        pytest.skip("tptbox sample absent")
    items = FORMATS["verse"](tpt).items
    assert [(x["case_id"], Path(x["label"]).name) for x in items] == [
        ("sub-ct_label-22", "sub-ct_seg-vert_label-22_msk.nii.gz")]
    assert set(np.unique(_read(items[0]["label"]))) <= set(VERSE_LABELS)
    if (real_data_dir / "verse_mask_only").is_dir():
        with pytest.raises(FileNotFoundError, match=r"without image, e\.g\. sub-verse004_seg-vert_msk\.nii\.gz"):
            FORMATS["verse"](real_data_dir / "verse_mask_only")
