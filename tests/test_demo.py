"""The main job runs end to end (tiny settings) and writes every promised output."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_demo_tiny(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "spine_monai", "demo", "--out", str(out), "--n", "4", "--n_test", "2",
           "--shape_scale", "0.25", "--num_workers", "0", "--epochs", "1", "--val_interval", "1",
           "--features", "[4,8,16]", "--pixdim", "[4.0,2.5,2.5]", "--patch_size", "[-1,32,32]",
           "--roi_size", "[-1,64,64]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("segmentation.nii.gz", "overlay.png", "metrics.csv", "metrics.md", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["dice_mean"] <= 1.0
    assert summary["summary"]["1"]["n"] == 2
    seg = nib.load(str(out / "segmentation.nii.gz"))
    img = nib.load(str(sorted((out / "test" / "imagesTr").glob("*.nii.gz"))[0]))
    assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)
    assert "--epochs 1" in (out / "metrics.md").read_text()
    # a second run into the same folder is refused instead of overwriting results
    again = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert again.returncode == 2 and "already holds a demo run" in again.stderr
