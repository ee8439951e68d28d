"""Peak-memory estimate of ``segment`` and the refusal of scans that would not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from spine_monai.errors import InputError
from spine_monai.transforms import CheckMemoryd
from spine_monai.transforms import memory as mem
from spine_monai.transforms.memory import GIB, check_bundle_memory, check_segment_memory, estimate_segment_bytes

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "saunet_spine_mri_segmentation"


def _header_only(shape, spacing):
    """A MetaTensor that looks like a big scan without allocating it (a zero-stride view)."""
    t = torch.zeros(1).expand(1, *shape)
    img = MetaTensor(t, affine=torch.as_tensor(np.diag([*spacing, 1.0]), dtype=torch.float64))
    img.meta["filename_or_obj"] = "big.nii.gz"
    return img


def test_estimate_grows_with_input_and_matches_measured_scale():
    small = estimate_segment_bytes((15, 368, 368), (4.4, 0.8, 0.8))["bytes"]
    big = estimate_segment_bytes((15, 1104, 1104), (4.4, 0.2667, 0.2667))["bytes"]
    # measured peaks: 1.38 GiB and 2.33 GiB; the estimate errs on the large side, not by much
    assert 1.38 * GIB <= small <= 1.4 * 1.38 * GIB
    assert 2.33 * GIB <= big <= 1.2 * 2.33 * GIB
    huge = estimate_segment_bytes((40, 2000, 2000), (4.0, 0.25, 0.25))
    assert huge["bytes"] > 8 * GIB and huge["resampled_shape"] == (40, 501, 501)


def test_estimate_uses_the_ras_order_and_window():
    # a volume stored as (Z, Y, X) with its slice axis last: Orientationd makes it (X, Y, Z)
    affine = np.array([[0, 0, 4.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    est = estimate_segment_bytes((300, 300, 20), affine=affine)
    assert est["resampled_shape"] == (20, 300, 300) and est["window_shape"] == (20, 256, 256)
    wide = estimate_segment_bytes((300, 300, 20), affine=affine, features=[32, 64])
    assert wide["bytes"] > est["bytes"]


def test_refused_above_the_limit_with_one_line(monkeypatch):
    img = _header_only((40, 2000, 2000), (4.0, 0.25, 0.25))
    with pytest.raises(InputError) as err:
        check_segment_memory(img, "big.nii.gz", max_memory_gb=8)
    msg = str(err.value)
    assert msg.startswith("big.nii.gz: segmenting this 40 x 2000 x 2000 scan (resampled to 40 x 501 x 501) needs")
    assert "the limit of 8.0 GiB" in msg and "\n" not in msg
    monkeypatch.setenv(mem.MEMORY_ENV, "8")
    with pytest.raises(InputError, match="limit of 8.0 GiB"):
        CheckMemoryd(keys="image")({"image": img})
    monkeypatch.setenv(mem.MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match="not a number"):
        check_segment_memory(img, "big.nii.gz")


def test_available_memory_is_the_default_limit(monkeypatch):
    class _VM:
        available = 4 * GIB

    monkeypatch.delenv(mem.MEMORY_ENV, raising=False)
    monkeypatch.setattr("psutil.virtual_memory", lambda: _VM())
    img = _header_only((40, 2000, 2000), (4.0, 0.25, 0.25))
    with pytest.raises(InputError, match="GiB this machine has available"):
        check_segment_memory(img, "big.nii.gz")
    assert check_segment_memory(_header_only((15, 368, 368), (4.4, 0.8, 0.8)), "ok.nii.gz") < 2 * GIB


def test_bundle_settings_are_read(monkeypatch):
    img = _header_only((15, 368, 368), (4.4, 0.8, 0.8))
    default = check_bundle_memory(img, "x", BUNDLE, max_memory_gb=100)
    finer = check_bundle_memory(img, "x", BUNDLE, {"pixdim": [1.0, 0.5, 0.5]}, max_memory_gb=100)
    assert finer > default == check_segment_memory(img, "x", max_memory_gb=100)
    with pytest.raises(ValueError, match="max_memory_gb=0"):
        CheckMemoryd(keys="image", max_memory_gb=0)
