"""Tests of the overlay PNGs (spine_monai.visualize) on a small phantom."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spine_monai.data.phantoms import generate_phantom
from spine_monai.visualize import render_overlay


@pytest.fixture(scope="module")
def case():
    return generate_phantom(np.random.default_rng([0, 0]), shape_scale=0.25)


def test_render_overlay(case, tmp_path):
    import matplotlib.image as mpimg

    image, label, affine, _ = case
    a = render_overlay(image, label, affine, tmp_path / "a.png", slice_index="foreground")
    # the same volume stored anterior->posterior and with a channel axis renders identically
    flip = affine @ np.array([[1, 0, 0, 0], [0, -1, 0, image.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    b = render_overlay(torch.from_numpy(image[None, :, ::-1].copy()), label[:, ::-1], flip, tmp_path / "b.png",
                       slice_index="foreground")
    assert np.array_equal(mpimg.imread(a), mpimg.imread(b))
    assert render_overlay(image, None, affine, tmp_path / "c.png", title="image only").is_file()
    with pytest.raises(ValueError, match="slice_index"):
        render_overlay(image, label, affine, tmp_path / "d.png", slice_index=99)
    with pytest.raises(ValueError, match="needs a label"):
        render_overlay(image, None, affine, tmp_path / "d.png", slice_index="foreground")


def test_error_map_and_dice():
    from spine_monai.visualize import _dice, _error_map

    truth = np.array([0, 1, 1, 2, 2, 0, 0])
    pred = np.array([0, 1, 0, 2, 1, 1, 0])
    masks = _error_map(pred, truth)
    assert {k: int(v.sum()) for k, v in masks.items()} == {"TP": 2, "FP": 1, "FN": 1, "wrong class": 1}
    assert not np.logical_and.reduce([masks[k] for k in masks]).any()  # each pixel is at most one kind
    assert _dice(pred, truth) == pytest.approx(2 * 3 / (4 + 4))
    assert _dice(np.zeros(3), np.zeros(3)) == 1.0


def test_render_overlay_with_ground_truth(case, tmp_path):
    import matplotlib.image as mpimg

    image, label, affine, _ = case
    truth = (label > 0).astype(np.uint8)
    pred = np.zeros_like(truth)
    pred[:, :, : truth.shape[2] // 2] = truth[:, :, : truth.shape[2] // 2]  # half the spine found
    three = mpimg.imread(render_overlay(image, pred, affine, tmp_path / "three.png", slice_index="foreground",
                                        label_truth=torch.from_numpy(truth)))
    assert three.shape[1] > 2.0 * three.shape[0]  # three panels side by side (two are ~1.8 times as wide as high)
    # an empty prediction still shows the spine: the slice is chosen from the truth
    assert render_overlay(image, np.zeros_like(truth), affine, tmp_path / "empty.png", slice_index="foreground",
                          label_truth=truth).is_file()
    with pytest.raises(ValueError, match="label_truth needs a label"):
        render_overlay(image, None, affine, tmp_path / "x.png", label_truth=truth)
    with pytest.raises(ValueError, match="label shape"):
        render_overlay(image, pred, affine, tmp_path / "x.png", label_truth=truth[:-1])
