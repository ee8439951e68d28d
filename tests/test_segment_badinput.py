"""Bad inputs of issue 14 (part 4): one-line errors naming the file, exit status 2, nothing left behind; through
``read_scan`` / ``segment`` and through ``python -m monai.bundle run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from spine_monai.errors import InputError
from spine_monai.segment import read_scan, segment

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
SMALL = {"features": [4, 8, 16], "pixdim": [4.0, 5.0, 5.0], "roi_size": [-1, 80, 80]}


def _save(path: Path, arr: np.ndarray, affine: np.ndarray | None = None, raw_sform: bool = False) -> Path:
    if raw_sform:  # the affine as it is in the header (nibabel would not decompose a NaN or singular one)
        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(arr.dtype)
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[0], affine[1], affine[2]
        hdr["sform_code"], hdr["qform_code"] = 1, 0
        nib.save(nib.Nifti1Image(arr, None, hdr), str(path))
    else:
        nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


def _vol(dtype=np.float32, shape=(10, 24, 24)) -> np.ndarray:
    return (np.random.default_rng(0).random(shape) * 1000).astype(dtype)


def _crc_broken(path: Path, dtype) -> Path:
    _save(path, _vol(dtype))
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # in the gzip trailer's CRC32
    path.write_bytes(bytes(data))
    return path


CASES = {
    "crc-int16": (lambda p: _crc_broken(p, np.int16), "corrupt gzip data"),
    "crc-float32": (lambda p: _crc_broken(p, np.float32), "corrupt gzip data"),
    "nan-affine": (lambda p: _save(p, _vol(), np.diag([1.0, np.nan, 1.0, 1.0]), True), "NaN/Inf entries"),
    "singular-affine": (lambda p: _save(p, _vol(), np.diag([1.0, 1.0, 0.0, 1.0]), True), "singular"),
    "44000mm": (lambda p: _save(p, _vol(), np.diag([44000.0, 1.0, 1.0, 1.0])), "implausible voxel spacing"),
    "complex": (lambda p: _save(p, (_vol() + 1j * _vol()).astype(np.complex64)), "complex-valued image"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_read_scan_refuses(tmp_path, case):
    make, match = CASES[case]
    path = make(tmp_path / "scan.nii.gz")
    with pytest.raises(InputError) as err:
        read_scan(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and match in msg and "\n" not in msg


def test_segment_refuses_a_scan_too_large_for_memory(tmp_path, monkeypatch):
    src = _save(tmp_path / "big.nii.gz", _vol(shape=(4, 64, 64)))
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not read: the memory check comes first")
    out = tmp_path / "out" / "seg.nii.gz"
    monkeypatch.setenv("SPINE_MONAI_MAX_MEMORY_GB", "0.5")  # below the interpreter's own 1.3 GiB
    with pytest.raises(InputError) as err:
        segment(str(BUNDLE), str(src), str(out), weights=str(weights), device="cpu", progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{src}: segmenting this 4 x 64 x 64 scan") and "limit of 0.5 GiB" in msg
    assert not out.parent.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["big.nii.gz", "model.pt"]


def _tiny_weights(path: Path) -> Path:
    from spine_monai.networks.nets.saunet import SAUNet

    torch.manual_seed(1)
    torch.save(SAUNet(features=(4, 8, 16)).state_dict(), path)
    return path


def _bundle_run(dataset: Path, out_dir: Path, weights: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
           "--bundle_root", str(BUNDLE), "--dataset_dir", str(dataset), "--output_dir", str(out_dir),
           "--ckpt_path", str(weights), "--features", "[4, 8, 16]", "--pixdim", "[4.0, 5.0, 5.0]",
           "--roi_size", "[-1, 80, 80]"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(REPO), env=env)


@pytest.mark.slow
def test_monai_bundle_run_reports_one_line(tmp_path):
    weights = _tiny_weights(tmp_path / "tiny.pt")
    bad = _crc_broken(tmp_path / "bad.nii.gz", np.int16)
    proc = _bundle_run(bad, tmp_path / "out", weights)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bad}: corrupt gzip data (CRC check failed") and last.endswith("copy it again.")
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert not (tmp_path / "out").exists()

    good = _save(tmp_path / "good.nii.gz", _vol(shape=(8, 40, 40)))
    proc = _bundle_run(good, Path("/sys/no/such/out"), weights)  # /sys refuses new files even to root
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: /sys/no/such/out: output folder is not writable (nearest existing folder /sys)")
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_cli_exit_status(tmp_path):
    bad = _crc_broken(tmp_path / "bad.nii.gz", np.float32)
    weights = _tiny_weights(tmp_path / "tiny.pt")
    cmd = [sys.executable, "-m", "spine_monai", "segment", str(BUNDLE), "-i", str(bad), "-o",
           str(tmp_path / "s.nii.gz"), "--weights", str(weights), "--device", "cpu", "--progress", "False"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: corrupt gzip data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz", "tiny.pt"]
