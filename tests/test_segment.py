"""``spine_monai.segment`` / ``python -m spine_monai segment``: inputs (NIfTI, .mha, .nrrd, DICOM), geometry, outputs,
and one-line errors that leave no output behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from spine_monai.data.phantoms import make_phantom_dataset
from spine_monai.networks.nets.saunet import SAUNet
from spine_monai.segment import label_volumes, segment

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
# tiny network, coarse grid and one sliding window per volume: these tests check formats, geometry and errors
SMALL = {"features": [4, 8, 16], "pixdim": [4.0, 5.0, 5.0], "roi_size": [-1, 80, 80]}
MRI = {**SMALL, "pixdim": [8.0, 5.0, 5.0]}  # real lumbar MRI 76 x 381 x 381 at 1 mm -> 10 x 77 x 77
CT = {**SMALL, "pixdim": [16.0, 8.0, 8.0], "roi_size": [-1, 64, 8]}  # 512 x 512 x 20 CT slab -> 32 x 63 x 5


def _tiny_weights(image: np.ndarray, path: Path) -> Path:
    """Random tiny SAU-Net whose head bias puts the threshold at the median logit of ``image`` (a non-trivial map)."""
    torch.manual_seed(1)
    net = SAUNet(features=(4, 8, 16)).eval()
    lo, hi = np.percentile(image, [0.5, 99.5])
    x = torch.as_tensor(np.clip((image - lo) / (hi - lo), 0, 1), dtype=torch.float32)[None, None]
    with torch.no_grad():
        net.head.bias -= net(x).median()
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segment")
    make_phantom_dataset(n=2, out=root / "data", seed=5, folds=2, shape_scale=0.25, progress=False)
    image = root / "data" / "imagesTr" / "case_000.nii.gz"
    weights = _tiny_weights(np.asarray(nib.load(str(image)).dataobj, dtype=np.float32), root / "tiny.pt")
    return {"root": root, "image": image, "weights": weights}


@pytest.fixture(scope="module")
def reference(ws) -> dict:
    """One NIfTI run with overlay and volumes; other formats are compared with its label."""
    out = ws["root"] / "ref" / "seg.nii.gz"
    segment(str(BUNDLE), str(ws["image"]), str(out), weights=str(ws["weights"]), device="cpu",
            overlay=str(out.parent / "figs" / "seg.png"), volumes_json=str(out.parent / "vol.json"), progress=False,
            **SMALL)  # the overlay's folder does not exist yet
    return {"out": out, "label": np.asarray(nib.load(str(out)).dataobj)}


def _nifti(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def _ras_affine_from_itk(path: Path) -> np.ndarray:
    """The RAS voxel-to-world matrix ITK reads for ``path`` (index order i, j, k = numpy axes of MONAI/nibabel)."""
    import itk

    img = itk.imread(str(path))
    direction = itk.array_from_matrix(img.GetDirection())
    aff = np.eye(4)
    aff[:3, :3] = direction @ np.diag(np.asarray(itk.spacing(img), dtype=float))
    aff[:3, 3] = np.asarray(itk.origin(img), dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff  # LPS -> RAS


def _write_dicom_series(nifti: Path, folder: Path) -> Path:
    """Write a NIfTI volume as a sagittal DICOM MR series (int16, one file per x slice) with ITK/GDCM."""
    import itk

    src = nib.as_closest_canonical(nib.load(str(nifti)))
    vol = np.asarray(src.dataobj, dtype=np.float32)
    aff = src.affine
    sx, sy, sz = np.abs(np.diag(aff)[:3])
    _, ny, nz = vol.shape
    # DICOM index (k, row j, column i): i runs posterior, j inferior, k to the right (= +x in RAS)
    scale = 30000.0 / float(np.abs(vol).max())  # int16 range; the bundle rescales intensities by percentiles
    arr = np.round(vol[:, ::-1, ::-1].transpose(0, 2, 1) * scale).astype(np.int16)
    origin_ras = aff @ np.array([0.0, ny - 1, nz - 1, 1.0])
    origin_lps = np.array([-origin_ras[0], -origin_ras[1], origin_ras[2]])
    normal_lps = np.array([-1.0, 0.0, 0.0])
    folder.mkdir(parents=True)
    for k in range(arr.shape[0]):
        sl = itk.image_from_array(np.ascontiguousarray(arr[k]))
        sl.SetSpacing([float(sy), float(sz)])
        md = sl.GetMetaDataDictionary()
        md["0020|0032"] = "\\".join(f"{v:.6f}" for v in origin_lps + normal_lps * sx * k)
        md["0020|0037"] = "0\\1\\0\\0\\0\\-1"
        md["0028|0030"] = f"{sz:.6f}\\{sy:.6f}"
        md["0018|0050"] = f"{sx:.6f}"
        md["0020|0013"] = str(k + 1)
        md["0008|0060"] = "MR"
        md["0020|000d"] = "1.2.826.0.1.3680043.2.1125.1.99.2"
        md["0020|000e"] = "1.2.826.0.1.3680043.2.1125.1.99.1"
        md["0008|0018"] = f"1.2.826.0.1.3680043.2.1125.1.99.1.{k + 1}"
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        itk.ImageFileWriter[type(sl)].New(Input=sl, FileName=str(folder / f"IM{k:04d}.dcm"), ImageIO=io).Update()
    return folder


def _assert_one_line(err: BaseException, *fragments: str) -> None:
    msg = str(err)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


# ---------------------------------------------------------------- bad inputs: one line, no output (no bundle run)

def _make_bad(case: str, d: Path) -> Path:
    rng = np.random.default_rng(0)
    if case == "missing":
        return d / "nothere.nii.gz"
    if case == "empty_file":
        (d / "empty.nii.gz").write_bytes(b"")
        return d / "empty.nii.gz"
    if case == "corrupt":
        (d / "corrupt.nii.gz").write_bytes(rng.bytes(2048))
        return d / "corrupt.nii.gz"
    if case == "corrupt_mha":
        (d / "corrupt.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_FLOAT\n")
        return d / "corrupt.mha"
    if case == "2d":
        return _nifti(d / "flat.nii.gz", rng.random((32, 32), dtype=np.float32))
    if case == "single_slice":
        return _nifti(d / "slice.nii.gz", rng.random((32, 32, 1), dtype=np.float32))
    if case == "4d":
        return _nifti(d / "series.nii.gz", rng.random((16, 16, 8, 3), dtype=np.float32))
    if case == "constant":
        return _nifti(d / "const.nii.gz", np.full((16, 16, 8), 7.0, dtype=np.float32))
    if case == "nan":
        arr = rng.random((16, 16, 8), dtype=np.float32)
        arr[3, 4, 5] = np.nan
        return _nifti(d / "nan.nii.gz", arr)
    if case == "empty_folder":
        (d / "dicom").mkdir()
        return d / "dicom"
    if case == "folder_of_niftis":
        (d / "imgs").mkdir()
        _nifti(d / "imgs" / "a.nii.gz", rng.random((16, 16, 8), dtype=np.float32))
        return d / "imgs"
    if case == "not_dicom_folder":
        (d / "junk").mkdir()
        (d / "junk" / "IM0001").write_bytes(rng.bytes(512))
        return d / "junk"
    raise AssertionError(case)


@pytest.mark.parametrize("case, exc, fragment", [
    ("missing", FileNotFoundError, "input not found"),
    ("empty_file", ValueError, "empty file"),
    ("corrupt", ValueError, "cannot be read as an image"),
    ("corrupt_mha", ValueError, "cannot be read as an image"),
    ("2d", ValueError, "2D image"),
    ("single_slice", ValueError, "single 2D slice"),
    ("4d", ValueError, "4D image"),
    ("constant", ValueError, "constant"),
    ("nan", ValueError, "NaN"),
    ("empty_folder", ValueError, "empty folder"),
    ("folder_of_niftis", ValueError, "not a DICOM series"),
    ("not_dicom_folder", ValueError, "cannot be read as an image"),
])
def test_bad_input_one_line_error_and_no_output(ws, tmp_path, case, exc, fragment):
    bad = _make_bad(case, tmp_path)
    out = tmp_path / "out" / "seg.nii.gz"
    with pytest.raises(exc) as err:
        segment(str(BUNDLE), str(bad), str(out), weights=str(ws["weights"]), device="cpu",
                overlay=str(tmp_path / "out" / "o.png"), volumes_json=str(tmp_path / "out" / "v.json"),
                progress=False, **SMALL)
    _assert_one_line(err.value, str(bad), fragment)
    assert not (tmp_path / "out").exists()


def _bundle_without_weights(tmp_path: Path) -> Path:
    copy = tmp_path / "bundle_copy"
    shutil.copytree(BUNDLE / "configs", copy / "configs")
    return copy


@pytest.mark.parametrize("case, exc, fragment", [
    ("unknown_bundle", FileNotFoundError, "not found"),
    ("no_model_pt", FileNotFoundError, "has no trained weights"),
    ("weights_missing", FileNotFoundError, "weights file not found"),
    ("weights_mismatch", ValueError, "do not match the network"),
    ("weights_corrupt", ValueError, "not a readable PyTorch weights file"),
    ("weights_not_state_dict", ValueError, "does not hold a state dict"),
    ("output_exists", ValueError, "already exists"),
    ("output_parent_is_file", ValueError, "is a file, not a folder"),
    ("output_not_writable", ValueError, "not writable"),
    ("output_suffix", ValueError, "must end with .nii.gz or .nii"),
    ("output_is_input", ValueError, "is the input scan"),
    ("device_unknown", ValueError, "--device "),
    ("device_cuda_99", ValueError, "cuda:99"),
])
def test_bad_setup_one_line_error(ws, tmp_path, case, exc, fragment):
    bundle, weights = str(BUNDLE), str(ws["weights"])
    image = tmp_path / "scan.nii.gz"
    shutil.copy(ws["image"], image)
    out = tmp_path / "out" / "seg.nii.gz"
    kwargs: dict = {"device": "cpu"}
    named = str(out)
    if case == "unknown_bundle":
        bundle = named = "no_such_bundle"
    elif case == "no_model_pt":
        bundle, weights = str(_bundle_without_weights(tmp_path)), None
        named = "train.json"
    elif case == "weights_missing":
        weights = named = str(tmp_path / "nope.pt")
    elif case == "weights_mismatch":
        torch.save(SAUNet(features=(4, 8)).state_dict(), tmp_path / "other.pt")
        weights = named = str(tmp_path / "other.pt")
    elif case == "weights_corrupt":
        (tmp_path / "bad.pt").write_bytes(b"not a zip or pickle" * 10)
        weights = named = str(tmp_path / "bad.pt")
    elif case == "weights_not_state_dict":
        torch.save([1, 2, 3], tmp_path / "list.pt")
        weights = named = str(tmp_path / "list.pt")
    elif case == "output_exists":
        out.parent.mkdir()
        out.write_bytes(b"keep me")
    elif case == "output_parent_is_file":
        (tmp_path / "out").write_text("a file")
    elif case == "output_not_writable":
        if os.geteuid() == 0:  # root ignores permission bits: use a folder that cannot be created
            if not Path("/proc/self").exists():
                pytest.skip("needs /proc when running as root")
            out = Path("/proc/spine_monai_segment_test/seg.nii.gz")
        else:
            (tmp_path / "ro").mkdir(mode=0o500)
            out = tmp_path / "ro" / "seg.nii.gz"
        named = str(out)
    elif case == "output_suffix":
        out = tmp_path / "out" / "seg.png"
        named = str(out)
    elif case == "output_is_input":
        out = image
        named = str(image)
        kwargs["overwrite"] = True
    elif case == "device_unknown":
        kwargs["device"] = named = "tpu"
    elif case == "device_cuda_99":
        kwargs["device"] = named = "cuda:99"
    with pytest.raises(exc) as err:
        segment(bundle, str(image), str(out), weights=weights, progress=False, **kwargs, **SMALL)
    _assert_one_line(err.value, named, fragment)
    if case == "output_exists":
        assert out.read_bytes() == b"keep me"
    elif case not in ("output_parent_is_file", "output_is_input", "output_not_writable"):
        assert not out.parent.exists()


def test_label_volumes_counts_times_voxel_volume():
    lab = np.zeros((4, 5, 6), dtype=np.uint8)
    lab[0, :2, :3] = 1
    lab[1, 0, 0] = 7
    aff = np.array([[0, 2.0, 0, 5], [1.5, 0, 0, 0], [0, 0, -3.0, 1], [0, 0, 0, 1]])  # det = 9 mm^3
    vols = label_volumes(lab, aff, {0: "background", 1: "spine", 2: "disc"})
    assert vols["voxel_volume_ml"] == pytest.approx(0.009)
    assert vols["voxels"] == {"spine": 6, "disc": 0, "label_7": 1}
    assert vols["volumes_ml"]["spine"] == pytest.approx(6 * 0.009)
    assert vols["values"] == {"spine": 1, "disc": 2, "label_7": 7}


# ---------------------------------------------------------------- real runs of the bundle (slow)

@pytest.mark.slow
def test_nifti_in_nifti_out_with_overlay_and_volumes(ws, reference):
    out = reference["out"]
    src, seg = nib.load(str(ws["image"])), nib.load(str(out))
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    assert seg.get_data_dtype() == np.uint8
    label = reference["label"]
    assert set(np.unique(label)) == {0, 1}  # the tuned tiny weights give a non-trivial map
    assert (out.parent / "figs" / "seg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out.parent / "vol.json").read_text())
    voxel_ml = abs(np.linalg.det(src.affine[:3, :3])) / 1000
    assert report["voxels"]["spine"] == int((label == 1).sum())
    assert report["volumes_ml"]["spine"] == pytest.approx(int((label == 1).sum()) * voxel_ml, rel=1e-6)
    assert sorted(os.listdir(out.parent)) == ["figs", "seg.nii.gz", "vol.json"]  # no temporary files left
    assert os.listdir(out.parent / "figs") == ["seg.png"]


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats_keep_geometry(ws, reference, tmp_path, suffix):
    import itk

    scan = tmp_path / f"scan{suffix}"
    itk.imwrite(itk.imread(str(ws["image"])), str(scan))
    out = Path(segment(str(BUNDLE), str(scan), str(tmp_path / "seg.nii.gz"), weights=str(ws["weights"]),
                       device="cpu", progress=False, **SMALL))
    seg = nib.load(str(out))
    np.testing.assert_allclose(seg.affine, _ras_affine_from_itk(scan), atol=1e-4)
    np.testing.assert_allclose(seg.affine, nib.load(str(ws["image"])).affine, atol=1e-4)
    assert np.mean(np.asarray(seg.dataobj) == reference["label"]) > 0.99


@pytest.mark.slow
def test_dicom_series_phantom(ws, reference, tmp_path):
    series = _write_dicom_series(ws["image"], tmp_path / "dicom")
    out = Path(segment(str(BUNDLE), str(series), str(tmp_path / "seg.nii"), weights=str(ws["weights"]),
                       device="cpu", volumes_json=str(tmp_path / "vol.json"), progress=False, **SMALL))
    assert out.read_bytes()[344:348] == b"n+1\x00"  # an uncompressed NIfTI-1 file, as the name says
    seg = nib.load(str(out))
    assert seg.shape[2] == len(list(series.iterdir()))  # one DICOM file per slice, slices on the last axis
    np.testing.assert_allclose(seg.affine, _ras_affine_from_itk(series), atol=1e-3)
    # the same physical grid as the phantom the series was written from, and the same segmentation
    canon = nib.as_closest_canonical(seg)
    np.testing.assert_allclose(canon.affine, nib.load(str(ws["image"])).affine, atol=1e-3)
    assert np.mean(np.asarray(canon.dataobj) == reference["label"]) > 0.98
    report = json.loads((tmp_path / "vol.json").read_text())
    assert report["voxels"]["spine"] == int((np.asarray(seg.dataobj) == 1).sum())


@pytest.mark.slow
@pytest.mark.real
def test_real_dicom_ct_slab(ws, real_data_dir, tmp_path):
    series = real_data_dir / "totalseg" / "example_ct_dicom"
    out = Path(segment(str(BUNDLE), str(series), str(tmp_path / "ct_seg.nii.gz"), weights=str(ws["weights"]),
                       progress=False, **CT))
    seg = nib.load(str(out))
    assert seg.shape == (512, 512, 20)
    np.testing.assert_allclose(seg.affine, _ras_affine_from_itk(series), atol=1e-3)
    # TotalSegmentator's label for this series (dicom2nifti, other axis order) covers the same physical grid
    ref = nib.as_closest_canonical(nib.load(str(real_data_dir / "totalseg" / "example_seg_dicom.nii.gz")))
    np.testing.assert_allclose(nib.as_closest_canonical(seg).affine, ref.affine, atol=1e-3)


@pytest.mark.slow
@pytest.mark.real
def test_real_lumbar_mri_nifti(ws, real_data_dir, tmp_path):
    scan = real_data_dir / "lumbar_mri" / "VB2_02_img.nii.gz"
    out = Path(segment(str(BUNDLE), str(scan), str(tmp_path / "seg.nii.gz"), weights=str(ws["weights"]),
                       overlay=str(tmp_path / "seg.png"), progress=False, **MRI))
    seg, src = nib.load(str(out)), nib.load(str(scan))
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
    assert (tmp_path / "seg.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.gpu
def test_auto_device_uses_cuda(ws, reference, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from spine_monai.segment import resolve_device

    assert resolve_device("auto").type == "cuda"
    out = Path(segment(str(BUNDLE), str(ws["image"]), str(tmp_path / "seg.nii.gz"), weights=str(ws["weights"]),
                       progress=False, **SMALL))  # device="auto": CUDA with AMP
    seg = nib.load(str(out))
    np.testing.assert_allclose(seg.affine, nib.load(str(ws["image"])).affine, atol=1e-4)
    assert np.mean(np.asarray(seg.dataobj) == reference["label"]) > 0.9  # fp16 moves voxels near the threshold


# ---------------------------------------------------------------- the command line

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "spine_monai", "segment", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)


@pytest.mark.slow
def test_cli_bad_input_exit_2_one_error_line(ws, tmp_path):
    bad = _make_bad("4d", tmp_path)
    out = tmp_path / "out" / "seg.nii.gz"
    proc = _cli(str(BUNDLE), "-i", str(bad), "-o", str(out), "--weights", str(ws["weights"]), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "4D" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not out.parent.exists()


@pytest.mark.slow
def test_cli_segments_and_overwrites(ws, reference, tmp_path):
    out = tmp_path / "cli_seg.nii.gz"
    out.write_bytes(b"stale")
    proc = _cli(str(BUNDLE), "-i", str(ws["image"]), "-o", str(out), "--weights", str(ws["weights"]),
                "--device", "cpu", "--progress", "False", "--overwrite",
                *(arg for key, value in SMALL.items() for arg in (f"--{key}", json.dumps(value))), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out) in proc.stdout
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), reference["label"])
    assert sorted(os.listdir(tmp_path)) == ["cli_seg.nii.gz"]  # no temporary files left
