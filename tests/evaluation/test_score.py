"""``python -m spine_monai score``: a written label against a reference on the same grid."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from spine_monai.errors import InputError
from spine_monai.evaluation.score import parse_values, score


def _write(tmp_path, affine=None):
    ref = np.zeros((10, 10, 10), np.int16)
    ref[2:6, 2:6, 2:6] = 22  # a VerSe L3: 64 voxels
    ref[6:8, 2:6, 2:6] = 26  # S1, not spine for this check
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 3:6] = 1  # 48 of the 64, nothing else
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(ref, aff), str(tmp_path / "ref.nii.gz"))
    nib.save(nib.Nifti1Image(pred, aff if affine is None else affine), str(tmp_path / "pred.nii.gz"))
    return tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz"


def test_parse_values():
    assert parse_values("21-23,26") == [21, 22, 23, 26]
    assert parse_values((22, 21)) == [21, 22] and parse_values(5) == [5] and parse_values(None) is None
    with pytest.raises(ValueError, match="range"):
        parse_values("a")
    with pytest.raises(ValueError, match="empty range"):
        parse_values("23-21")


def test_foreground_values_are_one_spine_class(tmp_path):
    pred, ref = _write(tmp_path)
    res = score(str(pred), str(ref), foreground="21-25", out=str(tmp_path / "s.json"))
    m = res["classes"]["1"]
    assert m["dice"] == pytest.approx(2 * 48 / (48 + 64)) and m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.75) and m["label_voxels"] == 64
    assert json.loads((tmp_path / "s.json").read_text())["mean"]["dice"] == pytest.approx(m["dice"])
    # S1 counted as spine too: 32 more reference voxels, none predicted
    assert score(str(pred), str(ref), foreground="21-26")["classes"]["1"]["recall"] == pytest.approx(48 / 96)


def test_mismatched_grid_and_absent_values_are_refused(tmp_path):
    pred, ref = _write(tmp_path, affine=np.diag([2.0, 2.0, 3.0, 1.0]))
    with pytest.raises(InputError, match="affine differs"):
        score(str(pred), str(ref), foreground="22")
    pred, ref = _write(tmp_path)
    with pytest.raises(InputError, match="none of the foreground values"):
        score(str(pred), str(ref), foreground="1-7")
    with pytest.raises(InputError, match="not found"):
        score(str(tmp_path / "nope.nii.gz"), str(ref))


def test_same_grid_with_a_flipped_axis_is_reoriented(tmp_path):
    """A label written LPS beside a reference written LAS on the same DICOM grid scores as the same voxels."""
    pred, ref = _write(tmp_path)
    img = nib.load(str(pred))
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flip[1, 3] = 9.0  # index j -> 9 - j
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, ::-1].copy(), img.affine @ flip), str(tmp_path / "lps.nii.gz"))
    assert score(str(tmp_path / "lps.nii.gz"), str(ref), foreground="22")["classes"]["1"]["dice"] == pytest.approx(
        2 * 48 / (48 + 64))


def test_cli(tmp_path):
    pred, ref = _write(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "spine_monai", "score", str(pred), str(ref), "--foreground", "21-23",
                           "--out", str(tmp_path / "o.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "o.json").read_text())["foreground"] == [21, 22, 23]
