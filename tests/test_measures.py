"""Tests for the Cobb angle measure of spine_monai.measures on constructed label maps and on US phantoms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spine_monai.data.phantom_us import cobb_of_line, generate_us_phantom
from spine_monai.measures import cobb_angle, spine_centre_line


def _band(h: int, w: int, col_of_row, half: float = 6.0, value: int = 2) -> np.ndarray:
    rows, cols = np.mgrid[0:h, 0:w]
    return (np.abs(cols - col_of_row(rows)) < half).astype(np.uint8) * value


def test_straight_band_is_zero():
    lab = _band(400, 100, lambda r: 50 + 0 * r)
    assert cobb_angle(lab)["cobb_deg"] == pytest.approx(0.0, abs=0.5)


def test_tilted_straight_band_is_zero():
    lab = _band(400, 200, lambda r: 40 + 0.3 * r)  # tilted but not curved: no Cobb angle
    assert cobb_angle(lab)["cobb_deg"] == pytest.approx(0.0, abs=1.0)


def test_circular_arc_gives_its_tangent_change():
    """A band along a circular arc spanning +-20 degrees of tangent: Cobb angle 40 degrees."""
    radius, half_angle = 600.0, math.radians(20)
    h = int(2 * radius * math.sin(half_angle)) + 40
    centre_row = h / 2

    def col(rows):
        y = (rows - centre_row) / radius
        return 60 + radius * (1 - np.sqrt(np.clip(1 - y**2, 0, None)))

    lab = _band(h, 200, col)
    lab[:20] = 0
    lab[-20:] = 0
    got = cobb_angle(lab, smoothing=1.0)["cobb_deg"]
    assert got == pytest.approx(40.0, abs=2.0)
    # the same line through the phantoms' ground-truth definition
    rows = np.linspace(20, h - 20, 400)
    assert cobb_of_line(rows, col(rows))[0] == pytest.approx(40.0, abs=1.0)


def test_accepts_tensor_channel_first_and_spacing():
    lab = _band(300, 80, lambda r: 40 + 0 * r)
    t = torch.from_numpy(lab)[None]
    assert cobb_angle(t)["cobb_deg"] == pytest.approx(0.0, abs=0.5)
    line = spine_centre_line(lab, spacing=(2.0, 0.5))
    assert line["fit_rows"].max() == pytest.approx(2.0 * 299, rel=1e-6)
    assert np.allclose(line["fit_cols"], 0.5 * 40.0, atol=0.1)


def test_empty_label_raises():
    with pytest.raises(ValueError, match="too few rows"):
        cobb_angle(np.zeros((100, 30), dtype=np.uint8))
    with pytest.raises(ValueError, match="2D label"):
        cobb_angle(np.zeros((2, 3, 4, 5)))


def test_measure_on_true_phantom_labels_matches_truth():
    """On the phantoms' own labels the measure agrees with the analytic Cobb angle (MAE below 4 degrees)."""
    errors = []
    for i in range(6):
        _, label, info = generate_us_phantom(np.random.default_rng([7, i]))
        errors.append(abs(cobb_angle(label)["cobb_deg"] - info["cobb_deg"]))
    assert float(np.mean(errors)) < 4.0, errors
