"""Cross-validation: folds written once and reused, per-fold results, resume, summary (SAU-Net bundle, tiny run)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine_monai.data.datalist import write_datalist
from spine_monai.evaluation.crossval import (
    _group_statistics,
    bundle_classes,
    case_group,
    crossval,
    dataset_classes,
    fold_statistics,
    group_metrics,
    identification_rates,
    inner_split,
    parse_overlays,
    prepare_folds,
    split_overrides,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
TINY = {"features": [4, 8, 16], "pixdim": [4.0, 2.5, 2.5], "num_workers": 0, "patch_size": [-1, 32, 32],
        "num_samples": 1, "roi_size": [-1, 64, 64], "epochs": 1}


def _pairs(folder: Path, n: int = 4) -> Path:
    """``<case>_img`` / ``<case>_label`` pairs of 4 x 8 x 8 voxels."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = np.zeros((4, 8, 8), np.uint8)
        lab[1:3, 2:6, 2:5] = 1
        nib.save(nib.Nifti1Image(lab.astype(np.float32) * 100, np.eye(4)), str(folder / f"c{i}_img.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(folder / f"c{i}_label.nii.gz"))
    return folder


def test_inner_split_is_seeded_disjoint_and_bounded():
    items = [{"image": f"c{i}.nii.gz", "case": f"c{i}"} for i in range(20)]
    train, val = inner_split(items, 0.1, seed=3)
    assert len(val) == 2 and len(train) == 18
    assert {it["case"] for it in train} | {it["case"] for it in val} == {it["case"] for it in items}
    assert not {it["case"] for it in train} & {it["case"] for it in val}
    assert inner_split(items, 0.1, seed=3) == (train, val)  # same seed, same split
    assert inner_split(items, 0.1, seed=4)[1] != val
    assert [it["case"] for it in train] == sorted((it["case"] for it in train), key=lambda c: int(c[1:]))
    assert len(inner_split(items[:3], 0.1, seed=0)[1]) == 1  # at least one case
    assert len(inner_split(items[:2], 0.9, seed=0)[0]) == 1  # at least one training case
    with pytest.raises(ValueError, match="at least 2"):
        inner_split(items[:1], 0.1, seed=0)


def test_crossval_rejects_bad_val_fraction(tmp_path):
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="val_fraction"):
            crossval(str(BUNDLE), str(tmp_path), folds=2, val_fraction=bad)


def test_parse_overlays():
    assert parse_overlays(None) == ()
    assert parse_overlays("a, b") == ("a", "b")
    assert parse_overlays(["baseline_unet3d"]) == ("baseline_unet3d",)


def test_fold_statistics_sample_std():
    stats = fold_statistics([{"dice": 0.8}, {"dice": 0.9}, {"dice": 1.0}], ("dice",))
    assert stats["dice"]["mean"] == pytest.approx(0.9)
    assert stats["dice"]["std"] == pytest.approx(0.1)  # ddof=1
    assert fold_statistics([{"dice": 0.5}], ("dice",))["dice"] == {"mean": 0.5, "std": 0.0, "n": 1}


def test_bundle_is_binary():
    assert bundle_classes(BUNDLE) is None


def test_dataset_classes_keeps_the_labelled_ones(tmp_path):
    safnet = bundle_classes(REPO / "bundles" / "safnet_spine_mri_segmentation")
    assert safnet == list(range(1, 20))
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"folds": 5, "label_values": [0, 2, 3, 4, 5, 6], "training": []}))
    assert dataset_classes(safnet, folds) == [2, 3, 4, 5, 6]  # the five lumbar levels of the VB3 cases
    folds.write_text(json.dumps({"folds": 5, "training": []}))
    assert dataset_classes(safnet, folds) == safnet  # no label set recorded: every class
    assert dataset_classes(None, folds) is None  # binary bundle


def test_identification_rates():
    rows = [{"class": 2, "label_voxels": 10, "identified": 1.0, "missed": 0.0},
            {"class": 3, "label_voxels": 10, "identified": 0.0, "missed": 0.0},
            {"class": 4, "label_voxels": 10, "identified": 0.0, "missed": 1.0},
            {"class": 5, "label_voxels": 10, "identified": 1.0, "missed": 0.0},
            {"class": 6, "label_voxels": 0}]
    assert identification_rates(rows) == {"level_id_rate": 0.5, "level_missed_rate": 0.25}
    assert identification_rates([{"class": 1, "label_voxels": 5}]) == {}


def test_case_groups_healthy_vs_fractured():
    assert case_group({"pathology": ["wedge_fracture@T10", "disc_degeneration@L4/L5"]}) == "fractured"
    assert case_group({"pathology": ["crush_fracture@L3"]}) == "fractured"
    assert case_group({"pathology": ["sclerotic_lesion@L2", "disc_degeneration@L3/L4"]}) == "healthy"
    assert case_group({"pathology": []}) == "healthy"
    assert case_group({"group": "fx", "pathology": []}) == "fx"
    assert case_group({"image": "a.nii.gz"}) is None
    from spine_monai.metrics.segmentation import METRICS

    def row(case, dice):
        return {**{m: 1.0 for m in METRICS}, "case": case, "class": 1, "dice": dice, "jaccard": dice - 0.1}

    rows = [row("a", 0.9), row("b", 0.5), row("c", 0.7), row("d", 0.1)]
    by = group_metrics(rows, {"a": "healthy", "b": "fractured", "c": "fractured", "d": None})
    assert by["dice_healthy"] == pytest.approx(0.9) and by["dice_fractured"] == pytest.approx(0.6)
    assert by["jaccard_fractured"] == pytest.approx(0.5) and "dice_None" not in by
    # across folds: over the folds that tested the group
    results = [{"metrics": {"dice_healthy": 0.9}, "group_metrics": ["dice_healthy"]},
               {"metrics": {"dice_healthy": 0.7, "dice_fractured": 0.5},
                "group_metrics": ["dice_fractured", "dice_healthy"]}]
    stats = _group_statistics(results)
    assert stats["dice_healthy"]["mean"] == pytest.approx(0.8) and stats["dice_healthy"]["n"] == 2
    assert stats["dice_fractured"] == {"mean": 0.5, "std": 0.0, "n": 1}


def test_split_overrides_routes_and_rejects():
    train, infer = split_overrides(BUNDLE, (), {"epochs": 2, "features": [4, 8]})
    assert train == {"epochs": 2, "features": [4, 8]} and infer == {"features": [4, 8]}
    train, infer = split_overrides(BUNDLE, ("baseline_unet3d",), {"unet3d_features": [4] * 6})
    assert "unet3d_features" in train and "unet3d_features" in infer
    with pytest.raises(ValueError, match="epoch"):
        split_overrides(BUNDLE, (), {"epoch": 1})
    with pytest.raises(ValueError, match="fold"):
        split_overrides(BUNDLE, (), {"fold": 1})


def test_prepare_folds_from_pairs_is_fixed_and_reused(tmp_path):
    data = _pairs(tmp_path / "pairs")
    first = prepare_folds(data, tmp_path / "a" / "folds.json", folds=2, seed=5)
    again = prepare_folds(data, tmp_path / "b" / "folds.json", folds=2, seed=5)
    folds_a = {it["case"]: it["fold"] for it in json.loads(first.read_text())["training"]}
    folds_b = {it["case"]: it["fold"] for it in json.loads(again.read_text())["training"]}
    assert folds_a == folds_b and sorted(folds_a.values()) == [0, 0, 1, 1]
    assert prepare_folds(data, first, folds=2) == first  # an existing file is reused as it is
    with pytest.raises(ValueError, match="folds"):
        prepare_folds(data, first, folds=3)


def test_prepare_folds_keeps_datalist_folds_or_reassigns(tmp_path):
    data = _pairs(tmp_path / "pairs")
    items = [{"image": str(data / f"c{i}_img.nii.gz"), "label": str(data / f"c{i}_label.nii.gz"), "fold": i % 2}
             for i in range(4)]
    write_datalist(items, data / "datalist.json", folds=2, seed=0)
    kept = json.loads(prepare_folds(data, tmp_path / "k.json", folds=2).read_text())
    assert [it["fold"] for it in kept["training"]] == [0, 1, 0, 1]
    assert Path(tmp_path / kept["training"][0]["image"]).resolve() == (data / "c0_img.nii.gz").resolve()
    other = json.loads(prepare_folds(data, tmp_path / "r.json", folds=4).read_text())
    assert sorted(it["fold"] for it in other["training"]) == [0, 1, 2, 3]


def test_prepare_folds_without_data_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare_folds(tmp_path, tmp_path / "f.json", folds=2)


@pytest.mark.slow
def test_crossval_two_folds_files_and_resume(tmp_path):
    from spine_monai.data.phantoms import make_phantom_dataset

    data = Path(make_phantom_dataset(n=4, out=tmp_path / "data", seed=3, folds=2, shape_scale=0.25,
                                     progress=False)).parent
    out = tmp_path / "cv"
    folder = Path(crossval(str(BUNDLE), str(data), folds=2, out=out, device="cpu", progress=False, **TINY))
    assert folder == out
    # the dataset's own folds are used
    given = {Path(it["image"]).name: it["fold"] for it in json.loads((data / "datalist.json").read_text())["training"]}
    used = {Path(it["image"]).name: it["fold"] for it in json.loads((out / "folds.json").read_text())["training"]}
    assert used == given
    for k in (0, 1):
        result = json.loads((out / f"fold_{k}" / "result.json").read_text())
        # the 2 training cases: 1 trains, 1 chooses the checkpoint; the test fold is in neither
        assert result["n_test"] == 2 and result["n_train"] == 1 and result["n_inner_val"] == 1
        split = json.loads((out / f"fold_{k}" / "split.json").read_text())
        assert len(split["train"]) == 1 and len(split["inner_val"]) == 1 and len(split["test"]) == 2
        assert not set(split["test"]) & (set(split["train"]) | set(split["inner_val"]))
        assert not set(split["train"]) & set(split["inner_val"])
        assert result["train_s"] > 0 and result["infer_s_per_volume"] > 0 and len(result["infer_s_volumes"]) == 2
        assert result["device"] == "cpu" and result["params"] > 0 and result["weights_mb"] > 0
        assert 0.0 <= result["metrics"]["dice"] <= 1.0
        assert len(list((out / f"fold_{k}" / "pred").glob("*_seg.nii.gz"))) == 2
        with open(out / f"fold_{k}" / "metrics.csv") as f:
            assert len(list(csv.DictReader(f))) == 2
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["fold"] for r in rows) == ["0", "0", "1", "1"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds_run"] == [0, 1] and summary["binary"] is True
    assert summary["across_folds"]["dice"]["n"] == 2
    assert summary["across_folds"]["dice"]["mean"] == pytest.approx(
        np.mean([p["metrics"]["dice"] for p in summary["per_fold"]]))
    assert "mean ± std" in (out / "summary.md").read_text()
    # resume: both folds are skipped, nothing is recomputed
    stamp = (out / "fold_0" / "result.json").stat().st_mtime_ns
    crossval(str(BUNDLE), str(data), folds=2, out=out, device="cpu", progress=False, **TINY)
    assert (out / "fold_0" / "result.json").stat().st_mtime_ns == stamp
    # other settings in the same folder are refused
    with pytest.raises(ValueError, match="other settings"):
        crossval(str(BUNDLE), str(data), folds=2, out=out, device="cpu", progress=False, **{**TINY, "epochs": 2})


@pytest.mark.slow
def test_crossval_killed_mid_fold_resumes_that_fold(tmp_path):
    """SIGKILL during a fold's training; the same command resumes it from its checkpoint, epochs counted once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from spine_monai.data.phantoms import make_phantom_dataset

    data = Path(make_phantom_dataset(n=6, out=tmp_path / "data", seed=3, folds=2, shape_scale=0.25,
                                     progress=False)).parent
    out = tmp_path / "cv"
    epochs = 5
    cmd = [sys.executable, "-m", "spine_monai", "crossval", str(BUNDLE), "--dataset_dir", str(data), "--folds", "2",
           "--max_folds", "1", "--out", str(out), "--device", "cpu", "--noprogress",
           *[a for k, v in {**TINY, "epochs": epochs, "val_interval": 1}.items()
             for a in (f"--{k}", json.dumps(v, separators=(",", ":")))]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ckpt = out / "fold_0" / "models" / "checkpoint.pt"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.is_file() and torch.load(ckpt, weights_only=True)["epoch"] >= 2:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["epoch"]
    assert 2 <= killed_at < epochs and not (out / "fold_0" / "result.json").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {ckpt} after epoch {killed_at}" in again.stdout + again.stderr
    final = torch.load(ckpt, weights_only=True)
    assert final["history"] == list(range(1, epochs + 1))
    assert (out / "fold_0" / "result.json").is_file()
    assert (out / "fold_0" / "models" / "model_config.json").is_file()
    # the killed attempt's training up to its last checkpoint counts in the fold's training time
    result = json.loads((out / "fold_0" / "result.json").read_text())
    attempts = json.loads((out / "fold_0" / "train_time.json").read_text())["attempts"]
    assert result["train_attempts"] == len(attempts) == 2 and attempts[0]["kept_s"] > 0
    assert result["train_s"] == pytest.approx(sum(a["kept_s"] for a in attempts))


def test_train_attempts_count_up_to_the_last_checkpoint(tmp_path):
    """A killed attempt counts from its start to its last checkpoint.pt; without resume, or with no checkpoint to
    resume from, the earlier attempts are dropped."""
    import os
    import time

    from spine_monai.evaluation.crossval import _train_attempts

    fold = tmp_path / "fold_0"
    (fold / "models").mkdir(parents=True)
    start = time.time() - 100.0
    (fold / "train_time.json").write_text(json.dumps({"attempts": [{"start": start - 50.0, "kept_s": 7.0},
                                                                   {"start": start}]}))
    assert [len(a) for a in _train_attempts(fold, resume=True)] == [1]  # no checkpoint: started over
    (fold / "train_time.json").write_text(json.dumps({"attempts": [{"start": start - 50.0, "kept_s": 7.0},
                                                                   {"start": start}]}))
    ckpt = fold / "models" / "checkpoint.pt"
    ckpt.write_bytes(b"")
    os.utime(ckpt, (start + 40.0, start + 40.0))
    attempts = _train_attempts(fold, resume=True)
    assert [a.get("kept_s") for a in attempts] == [7.0, pytest.approx(40.0), None]
    assert json.loads((fold / "train_time.json").read_text())["attempts"] == attempts
    assert len(_train_attempts(fold, resume=False)) == 1
