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
