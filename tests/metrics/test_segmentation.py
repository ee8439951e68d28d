"""Tests of spine_monai.metrics.segmentation against values computed by hand on tiny constructed masks."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou

from spine_monai.metrics.segmentation import (
    MEAN_OVER_CLASSES,
    METRICS,
    aggregate,
    case_metrics,
    evaluate_pairs,
    level_identification,
    metrics_markdown_table,
    write_metrics_csv,
)

TOL = 1e-6

# 2D hand case, spacing (rows 1.0, cols 2.0).
#   pred        label       TP = 4  {(0,1),(0,2),(1,1),(1,2)}
#   1 1 1 0     0 1 1 0     FP = 2  {(0,0),(1,0)}
#   1 1 1 0     0 1 1 0     FN = 4  {(2,1),(2,2),(3,1),(3,2)}
#   0 0 0 0     0 1 1 0     TN = 16 - 10 = 6
#   0 0 0 0     0 1 1 0
# dice = 2*4 / (6 + 8) = 4/7, jaccard = 4 / 10, precision = 4/6, recall = 4/8, fnr = 4/8, fpr = 2 / (2 + 6).
# Both masks are two voxels wide, so every voxel is an edge voxel.
# pred -> label: (0,0),(1,0) are one column (2 mm) from label, the rest 0      -> [0, 0, 0, 0, 2, 2]
# label -> pred: (2,1),(2,2) one row (1 mm), (3,1),(3,2) two rows (2 mm) away  -> [0, 0, 0, 0, 1, 1, 2, 2]
# hd = 2; msd = (2 + 2 + 1 + 1 + 2 + 2) / 14 = 10/14;
# hd95 = max(q95 of 6 values = 2, q95 of 8 values (pos 6.65 between 2 and 2) = 2) = 2.
PRED_2D = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
LABEL_2D = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]])
EXPECTED_2D = {
    "dice": 4 / 7,
    "jaccard": 0.4,
    "precision": 2 / 3,
    "recall": 0.5,
    "fnr": 0.5,
    "fpr": 0.25,
    "hd": 2.0,
    "hd95": 2.0,
    "msd": 10 / 14,
    "label_voxels": 8.0,
    "pred_voxels": 6.0,
}


def _check(got: dict[str, float], expected: dict[str, float]) -> None:
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=TOL), k


def _cube(shape: tuple[int, ...], start: tuple[int, ...], size: int, value: int = 1) -> np.ndarray:
    x = np.zeros(shape, dtype=np.int64)
    x[tuple(slice(s, s + size) for s in start)] = value
    return x


def test_2d_hand_computed():
    _check(case_metrics(PRED_2D, LABEL_2D, spacing=(1.0, 2.0))[1], EXPECTED_2D)


def test_2d_agrees_with_monai_dice_iou():
    p, g = torch.from_numpy(PRED_2D)[None, None].float(), torch.from_numpy(LABEL_2D)[None, None].float()
    got = case_metrics(PRED_2D, LABEL_2D, spacing=(1.0, 2.0))[1]
    assert got["dice"] == pytest.approx(float(compute_dice(p, g)), abs=TOL)
    assert got["jaccard"] == pytest.approx(float(compute_iou(p, g)), abs=TOL)


@pytest.mark.parametrize(
    "shift, expected_hd, expected_dice",
    [
        # 3x3x3 cubes; label at [2:5]^3. Shift along the 3 mm axis by one slice: the far faces are 3 mm apart,
        # overlap 3*3*2 = 18 -> dice 36/54.
        ((0, 0, 1), 3.0, 2 / 3),
        # Shift along a 1 mm axis by two voxels: far faces 2 mm apart, overlap 9 -> dice 18/54.
        ((2, 0, 0), 2.0, 1 / 3),
    ],
)
def test_3d_offset_cubes_anisotropic(shift, expected_hd, expected_dice):
    label = _cube((12, 12, 10), (2, 2, 2), 3)
    pred = _cube((12, 12, 10), tuple(2 + s for s in shift), 3)
    got = case_metrics(pred, label, spacing=(1.0, 1.0, 3.0))[1]
    assert got["hd"] == pytest.approx(expected_hd, abs=TOL)
    assert got["hd95"] == pytest.approx(expected_hd, abs=TOL)
    assert got["dice"] == pytest.approx(expected_dice, abs=TOL)
    assert got["jaccard"] == pytest.approx(expected_dice / (2 - expected_dice), abs=TOL)


def test_3d_single_voxels_hd_hd95_msd():
    # label = voxels (0,0,0) and (0,0,4); pred = (0,0,0); spacing (1, 1, 3).
    # pred -> label: [0]; label -> pred: [0, 4 * 3 = 12].
    # hd = 12; hd95 = max(0, 0 + 0.95 * 12) = 11.4 (linear interpolation, as MONAI); msd = (0 + 0 + 12) / 3 = 4.
    pred, label = np.zeros((4, 4, 8), int), np.zeros((4, 4, 8), int)
    pred[0, 0, 0] = label[0, 0, 0] = label[0, 0, 4] = 1
    got = case_metrics(pred, label, spacing=(1, 1, 3))[1]
    _check(got, {"hd": 12.0, "hd95": 11.4, "msd": 4.0, "dice": 2 / 3, "precision": 1.0, "recall": 0.5})
    # A diagonal offset: (0,0,0) vs (3,4,0) -> sqrt(3^2 + 4^2) = 5 mm; vs (0,0,2) -> 6 mm (anisotropic z).
    far = np.zeros((4, 5, 8), int)
    near = far.copy()
    near[0, 0, 0], far[3, 4, 0] = 1, 1
    assert case_metrics(near, far, (1, 1, 3))[1]["hd"] == pytest.approx(5.0, abs=TOL)
    far = np.zeros((4, 5, 8), int)
    far[0, 0, 2] = 1
    assert case_metrics(near, far, (1, 1, 3))[1]["hd"] == pytest.approx(6.0, abs=TOL)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_distances_match_monai_compute_functions():
    rng = np.random.default_rng(0)
    pred, label = (rng.random((16, 16, 8)) > 0.7).astype(int), (rng.random((16, 16, 8)) > 0.6).astype(int)
    spacing = [0.5, 0.8, 3.0]
    got = case_metrics(pred, label, spacing)[1]
    p, g = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(label)[None, None].float()
    kw = {"include_background": True, "spacing": spacing}
    assert got["hd"] == pytest.approx(float(compute_hausdorff_distance(p, g, **kw)), rel=1e-5)
    assert got["hd95"] == pytest.approx(float(compute_hausdorff_distance(p, g, percentile=95, **kw)), rel=1e-5)
    assert got["msd"] == pytest.approx(float(compute_average_surface_distance(p, g, symmetric=True, **kw)), rel=1e-5)


def test_both_empty_is_perfect():
    z = np.zeros((8, 8, 4), int)
    got = case_metrics(z, z, (1, 1, 3), labels=[1])[1]
    _check(
        got, {"dice": 1, "jaccard": 1, "precision": 1, "recall": 1, "fnr": 0, "fpr": 0, "hd": 0, "hd95": 0, "msd": 0}
    )


def test_one_empty_gets_worst_values_and_diagonal_penalty():
    diag = math.sqrt(8**2 + 8**2 + (4 * 3) ** 2)  # physical image diagonal, sqrt(272) mm
    z, obj = np.zeros((8, 8, 4), int), _cube((8, 8, 4), (1, 1, 1), 2)  # 8 voxels of 256
    missed = case_metrics(z, obj, (1, 1, 3), labels=[1])[1]
    _check(missed, {"dice": 0, "jaccard": 0, "precision": 0, "recall": 0, "fnr": 1, "fpr": 0})
    _check(missed, {"hd": diag, "hd95": diag, "msd": diag})
    hallucinated = case_metrics(obj, z, (1, 1, 3), labels=[1])[1]
    _check(hallucinated, {"dice": 0, "jaccard": 0, "precision": 0, "recall": 0, "fnr": 1, "fpr": 8 / 256})
    _check(hallucinated, {"hd": diag, "msd": diag})
    assert not any(math.isnan(v) for v in list(missed.values()) + list(hallucinated.values()))


def test_multiclass_label_map_defaults_and_labels():
    label = _cube((10, 10, 6), (1, 1, 1), 3, 1) + _cube((10, 10, 6), (6, 6, 2), 2, 2)
    pred = label.copy()
    pred[pred == 2] = 0  # class 2 missed entirely
    pred[0, 0, 0] = 3  # class 3 hallucinated
    got = case_metrics(pred, label, (1, 1, 1))
    assert sorted(got) == [1, 2, 3]  # background left out by default
    assert got[1]["dice"] == pytest.approx(1.0) and got[1]["hd"] == pytest.approx(0.0)
    assert got[2]["dice"] == 0.0 and got[3]["dice"] == 0.0
    assert sorted(case_metrics(pred, label, (1, 1, 1), include_background=True)) == [0, 1, 2, 3]
    explicit = case_metrics(pred, label, (1, 1, 1), labels=[1, 7])
    assert sorted(explicit) == [1, 7] and explicit[7]["dice"] == 1.0  # 7 absent from both: perfect


def test_one_hot_torch_and_channel_first_match_label_map():
    label = _cube((10, 10, 6), (1, 1, 1), 3, 1) + _cube((10, 10, 6), (5, 5, 2), 3, 2)
    pred = np.roll(label, 1, axis=2)
    ref = case_metrics(pred, label, (1, 1, 2))
    one_hot = lambda x: torch.nn.functional.one_hot(torch.from_numpy(x), 3).permute(3, 0, 1, 2)  # noqa: E731
    for got in (
        case_metrics(one_hot(pred), one_hot(label), (1, 1, 2)),
        case_metrics(torch.from_numpy(pred)[None], torch.from_numpy(label)[None], (1, 1, 2)),
        case_metrics(pred.astype(np.float32), label.astype(np.float32), (1, 1, 2)),
    ):
        assert sorted(got) == [1, 2]
        for c in (1, 2):
            _check(got[c], ref[c])


@pytest.mark.parametrize(
    "pred, label, spacing, kwargs, match",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), (1, 1), {}, "same shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1, 1), {}, "spatial dims"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1, 0), {}, "positive"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1,), {}, "2 or 3"),
        (np.full((4, 4), 0.5), np.zeros((4, 4)), (1, 1), {}, "integer label map"),
        (np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), (1, 1), {"labels": [3]}, "channel"),
        (np.full((3, 4, 4), 2), np.zeros((3, 4, 4)), (1, 1), {}, "0 and 1"),
    ],
)
def test_bad_inputs_raise(pred, label, spacing, kwargs, match):
    with pytest.raises(ValueError, match=match):
        case_metrics(pred, label, spacing, **kwargs)


def _row(case: str, cls: int, value: float) -> dict:
    return {"case": case, "class": cls, **dict.fromkeys(METRICS, value)}


def test_aggregate_hand_values():
    rows = [_row("a", 1, 0.5), _row("a", 2, 1.0), _row("b", 1, 1.0)]
    s = aggregate(rows)
    assert s["1"]["dice_mean"] == pytest.approx(0.75) and s["1"]["n"] == 2
    assert s["1"]["dice_std"] == pytest.approx(math.sqrt(0.125))  # sample std of (0.5, 1.0)
    assert s["2"]["hd_mean"] == pytest.approx(1.0) and s["2"]["hd_std"] == 0.0 and s["2"]["n"] == 1
    # per case first: a -> 0.75, b -> 1.0; then over cases
    assert s[MEAN_OVER_CLASSES]["dice_mean"] == pytest.approx(0.875) and s[MEAN_OVER_CLASSES]["n"] == 2
    # case_metrics() results are accepted too
    from_cases = aggregate([case_metrics(PRED_2D, LABEL_2D, (1.0, 2.0)), case_metrics(LABEL_2D, LABEL_2D, (1.0, 2.0))])
    assert from_cases["1"]["dice_mean"] == pytest.approx((4 / 7 + 1) / 2) and from_cases["1"]["n"] == 2


def test_aggregate_rejects_nan_and_unknown_layout():
    with pytest.raises(ValueError, match="NaN"):
        aggregate([_row("a", 1, float("nan"))])
    with pytest.raises(ValueError, match="neither"):
        aggregate([{"dice": 1.0}])


def test_csv_and_markdown(tmp_path):
    rows = [_row("a", 1, 0.5), _row("b", 1, 1.0)]
    path = write_metrics_csv(rows, tmp_path / "sub" / "metrics.csv")
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0])[:3] == ["case", "class", "dice"] and len(read) == 2
    assert float(read[0]["hd95"]) == 0.5 and read[1]["case"] == "b"
    table = metrics_markdown_table(aggregate(rows), metrics=("dice", "hd95"), class_names={1: "L1"})
    lines = table.strip().splitlines()
    assert lines[0] == "| class | n | dice (%) | hd95 (mm) |"
    assert lines[2] == "| L1 | 2 | 75.00 ± 35.36 | 0.75 ± 0.35 |"
    with pytest.raises(ValueError, match="unknown"):
        metrics_markdown_table(aggregate(rows), metrics=("dsc",))


def _save(array: np.ndarray, affine: np.ndarray, path) -> str:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


def test_evaluate_pairs_nifti(tmp_path):
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    label = _cube((12, 12, 10), (2, 2, 2), 3).astype(np.uint8)
    pred = _cube((12, 12, 10), (2, 2, 3), 3).astype(np.float32)  # float on disk, integral values
    pairs = [(_save(pred, affine, tmp_path / "p.nii.gz"), _save(label, affine, tmp_path / "case7.nii.gz"))]
    rows = evaluate_pairs(pairs, labels=[1, 2], progress=False)
    assert [(r["case"], r["class"]) for r in rows] == [("case7", 1), ("case7", 2)]
    assert rows[0]["hd"] == pytest.approx(3.0) and rows[0]["dice"] == pytest.approx(2 / 3)  # z spacing 3 mm
    assert rows[1]["dice"] == 1.0  # class 2 absent from both


def test_evaluate_pairs_mismatch_errors(tmp_path):
    lab = _save(np.zeros((6, 6, 4), np.uint8), np.eye(4), tmp_path / "lab.nii.gz")
    shape = _save(np.zeros((6, 6, 5), np.uint8), np.eye(4), tmp_path / "shape.nii.gz")
    aff = _save(np.zeros((6, 6, 4), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "aff.nii.gz")
    frac = _save(np.full((6, 6, 4), 0.5, np.float32), np.eye(4), tmp_path / "frac.nii.gz")
    for pred, match in ((shape, "shape mismatch"), (aff, "affine mismatch"), (frac, "integer label map")):
        with pytest.raises(ValueError, match=match) as err:
            evaluate_pairs([(pred, lab)], progress=False)
        assert pred in str(err.value)
        if match != "integer label map":
            assert lab in str(err.value)


def test_level_identification_counts_numbering_not_overlap():
    """Three vertebrae 2, 3, 4: 2 found right, 3 segmented perfectly but numbered 4, 4 missed."""
    label = np.zeros((4, 12), np.int64)
    label[:, 0:3], label[:, 4:7], label[:, 8:11] = 2, 3, 4
    pred = np.zeros_like(label)
    pred[:, 0:3] = 2
    pred[:, 4:7] = 4
    pred[0, 4] = 3  # a minority of the right value inside structure 3
    got = level_identification(pred, label)
    assert got[2] == {"identified": 1.0, "missed": 0.0, "assigned": 2.0, "assigned_share": 1.0}
    assert got[3]["identified"] == 0.0 and got[3]["assigned"] == 4.0
    assert got[3]["assigned_share"] == pytest.approx(11 / 12)
    assert got[4] == {"identified": 0.0, "missed": 1.0, "assigned": 0.0, "assigned_share": 0.0}
    # binary overlap of structure 3 is perfect: its Dice as "any foreground" would be 1, yet it is not identified
    assert case_metrics(pred > 0, label == 3, (1.0, 1.0), labels=[1])[1]["recall"] == 1.0
    # background inside a structure does not count; ties go to the smaller value
    tie = np.zeros_like(label)
    tie[:2, 0:3], tie[2:, 0:3] = 5, 2
    assert level_identification(tie, label, labels=[2, 7])[2]["assigned"] == 2.0
    assert list(level_identification(tie, label, labels=[2, 7])) == [2]  # 7 is not in the label: not scored
    with pytest.raises(ValueError, match="shape"):
        level_identification(pred[:, :5], label)


def test_evaluate_pairs_adds_identification_to_multiclass_rows(tmp_path):
    label = np.zeros((8, 8, 6), np.uint8)
    label[1:3], label[4:6] = 2, 3
    pred = np.zeros_like(label)
    pred[1:3], pred[4:6] = 3, 3  # level 2 numbered 3
    pairs = [(_save(pred, np.eye(4), tmp_path / "p.nii.gz"), _save(label, np.eye(4), tmp_path / "c.nii.gz"))]
    rows = {r["class"]: r for r in evaluate_pairs(pairs, labels=[2, 3, 4], progress=False)}
    assert rows[2]["identified"] == 0.0 and rows[2]["assigned"] == 3.0 and rows[3]["identified"] == 1.0
    assert "identified" not in rows[4]  # absent from the label
    binary = evaluate_pairs(pairs, progress=False, binarize=True)
    assert "identified" not in binary[0]
