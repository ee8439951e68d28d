"""Tests for the ultrasound VPI phantoms (spine_monai.data.phantom_us) and their dataset writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from spine_monai.data.phantom_us import LEVEL_HEIGHTS_MM, LEVELS, generate_us_phantom
from spine_monai.data.phantoms import make_phantom_dataset


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_shapes_labels_and_aspect(scale):
    image, label, info = generate_us_phantom(np.random.default_rng([0, 1]), scale)
    assert image.dtype == np.uint8 and label.dtype == np.uint8 and image.shape == label.shape
    h, w = image.shape
    assert 3.4 < h / w < 4.6 and h >= 64
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert 0.0 <= info["cobb_deg"] < 90.0 and info["shape"] == [h, w]
    # the label is not given away by the intensity: each class spans a wide intensity range
    for v in (1, 2, 3):
        vals = image[label == v]
        assert vals.std() > 5


def test_deterministic_and_seed_dependent():
    a = generate_us_phantom(np.random.default_rng([0, 2]), 0.25)
    b = generate_us_phantom(np.random.default_rng([0, 2]), 0.25)
    c = generate_us_phantom(np.random.default_rng([1, 2]), 0.25)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_levels_and_heights():
    assert LEVELS[0] == "T1" and LEVELS[-1] == "L5" and len(LEVELS) == 17
    assert LEVEL_HEIGHTS_MM["L3"] > LEVEL_HEIGHTS_MM["T8"] > LEVEL_HEIGHTS_MM["T1"]


def test_dataset_writer(tmp_path):
    path = make_phantom_dataset(modality="us", n=4, out=tmp_path / "us", seed=0, folds=2, shape_scale=0.25,
                                progress=False)
    data = json.loads(open(path).read())
    assert data["tensorImageSize"] == "2D" and data["labels"]["1"] == "rib"
    assert len(data["training"]) == 4 and {it["fold"] for it in data["training"]} == {0, 1}
    item = data["training"][0]
    img = np.asarray(Image.open(tmp_path / "us" / item["image"]))
    lab = np.asarray(Image.open(tmp_path / "us" / item["label"]))
    assert img.shape == lab.shape and img.ndim == 2
    info = json.loads((tmp_path / "us" / "phantom_info.json").read_text())
    assert info[item["case_id"]]["cobb_deg"] == pytest.approx(item["cobb_deg"])
    with pytest.raises(ValueError, match="'us'"):
        make_phantom_dataset(modality="ct", n=2, out=tmp_path / "ct", progress=False)
