"""Tests of the ultrasound VPI phantoms (spine_monai.data.phantom_us) and of their dataset writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from spine_monai.data.datalist import load_datalist
from spine_monai.data.phantom_us import (
    LEVEL_HEIGHTS_MM,
    LEVELS,
    US_LABELS,
    cobb_of_line,
    generate_us_phantom,
    render_us_overlay,
)
from spine_monai.data.phantoms import make_phantom_dataset


@pytest.fixture(scope="module")
def small():
    return generate_us_phantom(np.random.default_rng([0, 1]), 0.25)


@pytest.mark.parametrize("scale, lo, hi", [(1.0, 960, 1152), (0.25, 240, 288)])
def test_shapes_dtypes_and_all_classes(scale, lo, hi):
    image, label, info = generate_us_phantom(np.random.default_rng([0, 3]), scale)
    assert image.dtype == np.uint8 and label.dtype == np.uint8 and image.shape == label.shape
    h, w = image.shape
    assert lo <= h <= hi and 0.9 * h / 4 - 1 <= w <= 1.1 * h / 4 + 1 and min(h, w) >= 32
    assert set(np.unique(label).tolist()) == {0, 1, 2, 3}
    assert info["shape"] == [h, w] and info["labels_present"] == ["rib", "thoracic", "lumbar"]
    assert 0.0 <= info["cobb_deg"] < 90.0 and info["curve"] in ("C", "S", "straight")
    assert info["levels"][-1] == "L5" and info["levels"][0] in ("T1", "T2") and len(info["centre_line"]) == 64
    json.dumps(info)  # JSON-serialisable


def test_anatomy_of_the_labels(small):
    image, label, info = small
    # one thoracic blob pair per level, one lumbar butterfly per level, ribs at the thoracic levels
    n_thoracic = sum(1 for name in info["levels"] if name.startswith("T"))
    _, n2 = ndimage.label(label == 2)
    _, n3 = ndimage.label(label == 3)
    _, n1 = ndimage.label(label == 1)
    assert n2 == 2 * n_thoracic and n3 == 5 and n_thoracic <= n1 <= 2 * n_thoracic + 2
    # thoracic above lumbar; blobs left and right of the centre line, butterflies on it, ribs lateral of the blobs
    rows2, cols2 = np.nonzero(label == 2)
    rows3, cols3 = np.nonzero(label == 3)
    assert np.percentile(rows2, 95) < np.percentile(rows3, 5) + 0.05 * label.shape[0]
    line = np.array(info["centre_line"])
    mid2 = np.interp(rows2, line[:, 0], line[:, 1])
    assert np.mean(cols2 < mid2) == pytest.approx(0.5, abs=0.1)
    assert np.abs(cols3 - np.interp(rows3, line[:, 0], line[:, 1])).mean() < 0.15 * label.shape[1]
    rows1, cols1 = np.nonzero(label == 1)
    off1 = np.abs(cols1 - np.interp(rows1, line[:, 0], line[:, 1]))
    assert np.median(off1) > np.median(np.abs(cols2 - mid2))
    # thin structures survive at scale 0.25: every rib piece is at least a few pixels
    pieces, n = ndimage.label(label == 1)
    assert np.bincount(pieces.ravel())[1:].min() >= 6


def test_image_does_not_give_the_label_away(small):
    image, label, _ = small
    body = image > 10
    for v in (1, 2, 3):
        vals = image[label == v].astype(float)
        assert vals.std() > 5, US_LABELS[v]
        # the class's intensities overlap those of the unlabelled body
        lo, hi = np.percentile(vals, [10, 90])
        assert ((image[body & (label == 0)] >= lo) & (image[body & (label == 0)] <= hi)).mean() > 0.05
    # dark outside the body band, brighter inside
    assert image[:, 0].mean() < 10 and image[label > 0].mean() > 40


def test_deterministic_and_seed_dependent(small):
    again = generate_us_phantom(np.random.default_rng([0, 1]), 0.25)
    assert again[0].tobytes() == small[0].tobytes() and again[1].tobytes() == small[1].tobytes()
    assert json.dumps(again[2]) == json.dumps(small[2])
    other = generate_us_phantom(np.random.default_rng([0, 2]), 0.25)
    assert other[0].shape != small[0].shape or not np.array_equal(other[0], small[0])


def test_cobb_angles_cover_the_range():
    cobb = [generate_us_phantom(np.random.default_rng([0, i]), 0.25)[2]["cobb_deg"] for i in range(30)]
    assert min(cobb) < 5 and max(cobb) > 40 and max(cobb) < 90


def test_truth_is_the_tilt_range_of_the_levels(small):
    info = small[2]
    tilts = info["level_tilt_deg"]
    assert info["cobb_deg"] == pytest.approx(max(tilts) - min(tilts))
    assert {info["upper_level"], info["lower_level"]} <= set(info["levels"])
    assert info["levels"].index(info["upper_level"]) <= info["levels"].index(info["lower_level"])
    # the sampled centre line agrees (it also holds the tangent between the level centres)
    line = np.array(info["centre_line"])
    assert cobb_of_line(line[:, 0], line[:, 1])[0] == pytest.approx(info["cobb_deg"], abs=3.0)


def test_level_table():
    assert LEVELS[0] == "T1" and LEVELS[-1] == "L5" and len(LEVELS) == 17
    assert LEVEL_HEIGHTS_MM["L3"] > LEVEL_HEIGHTS_MM["T8"] > LEVEL_HEIGHTS_MM["T4"] > LEVEL_HEIGHTS_MM["T1"]


def test_bad_scale():
    with pytest.raises(ValueError, match="--shape_scale 0"):
        generate_us_phantom(np.random.default_rng(0), 0)


def test_overlay_png(small, tmp_path):
    image, label, _ = small
    path = Path(render_us_overlay(image, label, tmp_path / "o" / "ov.png", title="case"))
    pic = np.asarray(Image.open(path).convert("RGB"))
    assert pic.shape[1] > 2 * image.shape[1] and pic.shape[0] >= image.shape[0]
    right = pic[-image.shape[0]:, -image.shape[1]:].astype(int)
    red = right[..., 0] - right[..., 2]
    assert (red[label == 2] > 40).mean() > 0.9 and (right[..., 1] - right[..., 0])[label == 3].mean() > 40
    with pytest.raises(ValueError, match="same"):
        render_us_overlay(image, label[:-1], tmp_path / "bad.png")


def test_dataset_writer(tmp_path):
    out = tmp_path / "us"
    path = Path(make_phantom_dataset(modality="us", n=4, out=out, seed=3, folds=2, shape_scale=0.25, progress=False))
    data = json.loads(path.read_text())
    assert data["name"] == "spine_monai_us_phantoms" and data["tensorImageSize"] == "2D"
    assert data["labels"] == {"0": "background", "1": "rib", "2": "thoracic", "3": "lumbar"}
    assert data["modality"] == {"0": "US VPI (synthetic)"} and data["folds"] == 2
    assert sorted(it["fold"] for it in data["training"]) == [0, 0, 1, 1]
    info = json.loads((out / "phantom_info.json").read_text())
    assert sorted(info) == ["case_000", "case_001", "case_002", "case_003"]
    for item in load_datalist(path):
        img, lab = (np.asarray(Image.open(item[k])) for k in ("image", "label"))
        assert Path(item["image"]).parent.name == "images" and Path(item["label"]).parent.name == "labels"
        assert img.dtype == np.uint8 and lab.dtype == np.uint8 and img.shape == lab.shape and img.ndim == 2
        assert set(np.unique(lab).tolist()) <= {0, 1, 2, 3}
        assert info[item["case_id"]]["cobb_deg"] == pytest.approx(item["cobb_deg"])
        assert list(img.shape) == info[item["case_id"]]["shape"]
    # case i is default_rng([seed, i]): the same bytes as a direct call
    image, label, _ = generate_us_phantom(np.random.default_rng([3, 2]), 0.25)
    assert np.array_equal(np.asarray(Image.open(out / "images" / "case_002.png")), image)
    assert np.array_equal(np.asarray(Image.open(out / "labels" / "case_002.png")), label)


@pytest.mark.parametrize("kwargs, match", [({"modality": "pet"}, "'us'"), ({"folds": 5}, "--folds 5"),
                                           ({"shape_scale": 1.5}, "shape_scale"), ({"n": 0}, "--n 0")])
def test_dataset_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom_dataset(**{"modality": "us", "n": 3, "folds": 2, "out": tmp_path, "shape_scale": 0.25,
                                "progress": False, **kwargs})
    assert not (tmp_path / "datalist.json").exists()
