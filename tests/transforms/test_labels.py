"""Training labels with values the bundle does not expect are refused, naming the file and the values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, LoadImaged

from spine_monai.errors import InputError
from spine_monai.transforms import ValidateImaged, ValidateLabeld
from spine_monai.transforms.labels import check_label_values

TRAIN = Path(__file__).resolve().parents[2] / "bundles" / "saunet_spine_mri_segmentation" / "configs" / "train.json"
SHAPE = (6, 10, 12)


def _lab(values, dtype=np.uint8):
    """Background with each value in 3 voxels."""
    flat = np.zeros(int(np.prod(SHAPE)), dtype=dtype)
    for i, v in enumerate(values):
        flat[10 + 3 * i:13 + 3 * i] = v
    return flat.reshape(SHAPE)


@pytest.fixture
def image(tmp_path, nifti):
    return nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).random(SHAPE).astype(np.float32))


def _run(image, label, values=tuple(range(20))):
    return Compose([LoadImaged(keys=["image", "label"], ensure_channel_first=True, image_only=True),
                    ValidateImaged(keys="image", label_key="label"),
                    ValidateLabeld(keys="label", values=values)])({"image": image, "label": label})


def _message(excinfo) -> str:
    err = excinfo.value
    while not isinstance(err, InputError):
        err = err.__cause__
    return str(err)


@pytest.mark.parametrize(
    "arr, match",
    [
        (_lab([255]), r"label values 255 \(3 voxels\) are not expected .* \(a 0/255 mask\? store it as 0/1\)"),
        (_lab([-1, 1], np.int16), r"label values -1 \(3 voxels\)"),
        (_lab([0.4, 1.0], np.float32), r"non-integer \(soft\) values 0\.4 in 3 voxels"),
        (_lab([25, 30, 21, 40, 50, 99]), r"label values 21 .* and 1 more"),
    ],
    ids=["0-255", "minus-one", "soft", "many"],
)
def test_unexpected_values_refused(tmp_path, nifti, image, arr, match):
    label = nifti(tmp_path / "lab.nii.gz", arr)
    with pytest.raises(Exception) as excinfo:
        _run(image, label)
    msg = _message(excinfo)
    assert msg.startswith(f"{label}: ") and "\n" not in msg
    assert re.search(match, msg), msg


def test_binary_values_refuse_seven(tmp_path, nifti, image):
    label = nifti(tmp_path / "lab.nii.gz", _lab([7, 1]))
    with pytest.raises(Exception) as excinfo:
        _run(image, label, values=(0, 1))
    assert "label values 7 (3 voxels) are not expected by this bundle (allowed: 0, 1)" in _message(excinfo)
    assert _run(image, label)["label"].shape == (1, *SHAPE)  # an id of the shipped 0..19 convention


def test_image_as_label_refused(tmp_path, nifti, image):
    with pytest.raises(Exception) as excinfo:
        _run(image, image)
    assert "the label is the image file itself" in _message(excinfo)
    copy = nifti(tmp_path / "copy.nii.gz", np.asarray(nib.load(image).dataobj))
    with pytest.raises(Exception) as excinfo:
        _run(image, copy)
    assert _message(excinfo).startswith(f"{copy}: the label is identical to the image")
    uint8 = np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.uint8)  # an 8-bit image given as label
    with pytest.raises(InputError, match=r"label values 20 \(.*and \d+ more"):
        check_label_values(uint8, "img8.nii.gz", range(20))


@pytest.mark.parametrize("arr", [_lab([1, 1]), _lab(range(1, 10)), _lab(range(1, 20)), _lab([1.0], np.float32)],
                         ids=["binary", "lumbar-instances", "mrspineseg", "float-binary"])
def test_shipped_label_conventions_pass(tmp_path, nifti, image, arr):
    out = _run(image, nifti(tmp_path / "lab.nii.gz", arr))
    assert out["label"].shape == (1, *SHAPE)


def test_train_config_checks_labels_before_the_threshold():
    steps = json.loads(TRAIN.read_text())["train"]["deterministic_transforms"]
    targets = [s["_target_"] for s in steps]
    i = targets.index("spine_monai.transforms.ValidateLabeld")
    assert targets.index("LoadImaged") < i < targets.index("AsDiscreted")
    assert steps[i]["values"] == "@label_values" and steps[i]["keys"] == "label"


def test_label_values_come_from_the_datalist(tmp_path):
    """A binary dataset refuses a 7; a dataset whose label files hold instance ids accepts exactly those."""
    import nibabel as nib
    import numpy as np

    from spine_monai.data.datalist import label_values
    from spine_monai.data.folder import folder_datalist
    from spine_monai.data.phantoms import make_phantom_dataset

    assert label_values(tmp_path / "missing.json") == [0, 1]
    binary = make_phantom_dataset(n=2, out=tmp_path / "ph", seed=0, folds=2, shape_scale=0.25, progress=False)
    assert label_values(binary) == [0, 1]
    with pytest.raises(InputError, match="7"):
        check_label_values(torch.tensor([[[[0, 1, 7]]]]), "lab.nii.gz", label_values(binary))
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for i, ids in enumerate(([0, 3, 5], [0, 1, 9])):
        lab = np.array(ids * 4, np.uint8).reshape(2, 2, 3)
        nib.save(nib.Nifti1Image(lab.astype(np.float32) * 10 + 1, np.eye(4)), str(pairs / f"c{i}_img.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(pairs / f"c{i}_label.nii.gz"))
    instances = folder_datalist(pairs, out=tmp_path / "dl", folds=2)
    assert label_values(instances) == [0, 1, 3, 5, 9]
    check_label_values(torch.tensor([[[[0, 3, 9]]]]), "lab.nii.gz", label_values(instances))
    with pytest.raises(InputError, match="7"):
        check_label_values(torch.tensor([[[[0, 7]]]]), "lab.nii.gz", label_values(instances))


def test_bad_arguments():
    with pytest.raises(ValueError, match="values is empty"):
        ValidateLabeld(keys="label", values=[])
