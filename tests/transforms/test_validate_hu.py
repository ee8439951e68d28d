"""ValidateHUd: a CT bundle refuses what is not a CT in Hounsfield units, naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from spine_monai.errors import InputError
from spine_monai.transforms import ValidateHUd


def _img(arr: np.ndarray, name: str = "scan.nii.gz") -> MetaTensor:
    return MetaTensor(torch.from_numpy(arr.astype(np.float32))[None], meta={"filename_or_obj": name})


def _ct() -> np.ndarray:
    rng = np.random.default_rng(0)
    arr = rng.normal(40, 15, (32, 32, 32))  # soft tissue
    arr[:, :4] = -1000  # air behind the back
    arr[10:20, 10:20, :] = 700  # bone
    return arr


def test_ct_passes_unchanged():
    img = _img(_ct())
    out = ValidateHUd("image")({"image": img})
    assert out["image"] is img


@pytest.mark.parametrize("make, match", [
    (lambda a: np.abs(a) * 3 + 5, "1th percentile"),  # an MRI: non-negative magnitudes
    (lambda a: (a + 1024) / 4095, "1th percentile"),  # rescaled to [0, 1]
    (lambda a: a + 1024, "rescale intercept"),  # raw stored values without the intercept
    (lambda a: np.clip(a, -1000, 100), "bone is above"),  # no bone (soft-tissue-only range)
])
def test_non_ct_is_refused_naming_the_file(make, match):
    with pytest.raises(InputError, match=match) as err:
        ValidateHUd("image")({"image": _img(make(_ct()), "/data/mri_t2.nii.gz")})
    assert "/data/mri_t2.nii.gz" in str(err.value) and "\n" not in str(err.value)
