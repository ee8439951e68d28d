"""Tests of the Cobb angle measure (spine_monai.measures) on constructed label maps and on the US phantoms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spine_monai.data.phantom_us import cobb_of_line, generate_us_phantom
from spine_monai.measures import METHOD, cobb_angle, spine_centre_line


def _band(h: int, w: int, col_of_row, half: float = 6.0, value: int = 2) -> np.ndarray:
    """A band of pixels (index coordinates) with ``|col - col_of_row(row)| <= half``."""
    rows, cols = np.mgrid[0:h, 0:w]
    return (np.abs(cols - col_of_row(rows)) <= half).astype(np.uint8) * value


def _arc(radius: float, half_angle_deg: float, width: int = 260, half: float = 8.0) -> np.ndarray:
    """A band along a circular arc (an annulus sector, ends cut along the radius like end plates) whose tangent turns
    by ``2 * half_angle_deg``; the circle's centre is right of the band, so the band bulges left."""
    a = math.radians(half_angle_deg)
    h = int(2 * (radius + half) * math.sin(a)) + 40
    rows, cols = np.mgrid[0:h, 0:width]
    cy, cx = h / 2, 40 + radius
    dist = np.hypot(rows - cy, cols - cx)
    phi = np.arctan2(rows - cy, cx - cols)  # angle from the band's apex, seen from the centre
    return ((np.abs(dist - radius) <= half) & (np.abs(phi) <= a)).astype(np.uint8) * 3


def test_straight_band_is_zero():
    out = cobb_angle(_band(400, 100, lambda r: 50 + 0 * r))
    assert out["cobb_deg"] == pytest.approx(0.0, abs=0.5) and out["method"] == METHOD
    assert 0 <= out["upper_row"] <= out["lower_row"] <= 399 and len(out["centre_line"]) <= 64


def test_tilted_straight_band_is_zero():
    out = cobb_angle(_band(400, 200, lambda r: 40 + 0.3 * r))  # tilted but not curved: no Cobb angle
    assert out["cobb_deg"] == pytest.approx(0.0, abs=1.0)
    assert out["upper_tilt_deg"] == pytest.approx(math.degrees(math.atan(0.3)), abs=1.0)


@pytest.mark.parametrize("radius, half_angle", [(600.0, 20.0), (900.0, 8.0), (1500.0, 12.0)])
def test_circular_arc_gives_its_tangent_change(radius, half_angle):
    lab = _arc(radius, half_angle)
    out = cobb_angle(lab)
    assert out["cobb_deg"] == pytest.approx(2 * half_angle, abs=2.0)
    assert out["upper_tilt_deg"] == pytest.approx(-half_angle, abs=2.0)  # the top runs to smaller columns going down
    # the fitted line is the arc's mid circle
    line = spine_centre_line(lab)
    cy, cx = lab.shape[0] / 2, 40 + radius
    assert np.abs(np.hypot(line[:, 0] - cy, line[:, 1] - cx) - radius).max() < 1.5
    # the phantoms' truth definition on the sampled arc
    t = np.linspace(-math.radians(half_angle), math.radians(half_angle), 200)
    assert cobb_of_line(cy + radius * np.sin(t), cx - radius * np.cos(t))[0] == pytest.approx(2 * half_angle, abs=0.5)


def test_pairs_of_blobs_average_to_the_midline():
    """Left/right blob pairs along a tilted line (as thoracic laminae, turned with the line), +-40 px along the
    normal: in a row at the top or bottom of a pair only one blob is present."""
    lab = np.zeros((600, 340), np.uint8)
    rows, cols = np.mgrid[0:600, 0:340]
    g = 0.25
    t = np.array([1.0, g]) / math.hypot(1.0, g)  # tangent (row, col) of the line col = 100 + g * row
    for r0 in range(40, 560, 50):
        c0 = 100 + g * r0
        for side in (-1, 1):
            rr, cc = r0 - side * 40 * t[1], c0 + side * 40 * t[0]
            along, across = (rows - rr) * t[0] + (cols - cc) * t[1], -(rows - rr) * t[1] + (cols - cc) * t[0]
            lab[(across / 8) ** 2 + (along / 12) ** 2 < 1] = 2
    out = cobb_angle(lab)
    assert out["cobb_deg"] < 2.0
    assert (out["upper_tilt_deg"] + out["lower_tilt_deg"]) / 2 == pytest.approx(math.degrees(math.atan(g)), abs=1.0)
    line = spine_centre_line(lab)
    assert np.abs(line[:, 1] - (100 + g * line[:, 0])).max() < 2.0


def test_tensor_channel_first_single_class_and_spacing():
    lab = _band(300, 80, lambda r: 40 + 0 * r, value=3)  # only the lumbar class present
    assert cobb_angle(torch.from_numpy(lab)[None])["cobb_deg"] == pytest.approx(0.0, abs=0.5)
    line = spine_centre_line(lab, spacing=(2.0, 0.5))
    assert line[:, 0].max() == pytest.approx(299) and np.allclose(line[:, 1], 40.0, atol=0.2)
    # anisotropic pixels: the slope is measured in physical units
    tilted = _band(400, 200, lambda r: 40 + 0.3 * r)
    out = cobb_angle(tilted, spacing=(2.0, 1.0))
    assert out["upper_tilt_deg"] == pytest.approx(math.degrees(math.atan(0.15)), abs=1.0)


def test_empty_label_and_bad_arguments():
    with pytest.raises(ValueError, match="no centre line"):
        cobb_angle(np.zeros((100, 30), dtype=np.uint8))
    with pytest.raises(ValueError, match="no centre line"):
        cobb_angle(np.ones((100, 30), dtype=np.uint8))  # ribs only
    with pytest.raises(ValueError, match="2D label"):
        cobb_angle(np.zeros((2, 3, 4, 5)))
    lab = _band(100, 30, lambda r: 15 + 0 * r)
    with pytest.raises(ValueError, match="spacing"):
        cobb_angle(lab, spacing=(0.0, 1.0))
    with pytest.raises(ValueError, match="smoothing 0"):
        cobb_angle(lab, smoothing=0)


def test_measure_on_true_phantom_labels_matches_truth():
    """On the phantoms' own labels (full size) the measure agrees with the analytic Cobb angle."""
    errors = []
    for i in range(5):
        _, label, info = generate_us_phantom(np.random.default_rng([7, i]))
        out = cobb_angle(label)
        errors.append(abs(out["cobb_deg"] - info["cobb_deg"]))
    assert float(np.mean(errors)) < 2.0 and max(errors) < 4.0, errors
