"""The main job runs end to end (tiny settings), writes every promised output, and repeats bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine_monai.demo import _flags, run_demo

TINY = ["--n", "4", "--n_test", "2", "--shape_scale", "0.25", "--num_workers", "0", "--epochs", "1",
        "--val_interval", "1", "--features", "[4,8,16]", "--pixdim", "[4.0,2.5,2.5]", "--patch_size", "[-1,32,32]",
        "--roi_size", "[-1,64,64]"]


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "spine_monai", "demo", "--out", str(out), *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)


@pytest.mark.slow
def test_demo_tiny(tmp_path):
    out = tmp_path / "demo"
    proc = _demo(out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("README.md", "segmentation.nii.gz", "overlay.png", "metrics.csv", "metrics.md", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["dice_mean"] <= 1.0
    assert summary["summary"]["1"]["n"] == 2
    env = summary["environment"]
    for key in ("torch", "monai", "cpu", "cpu_capability", "cpu_threads", "device", "git_commit"):
        assert key in env, key
    seg = nib.load(str(out / "segmentation.nii.gz"))
    img = nib.load(str(sorted((out / "test" / "imagesTr").glob("*.nii.gz"))[0]))
    assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)
    assert "--epochs 1" in (out / "metrics.md").read_text()
    readme = (out / "README.md").read_text()
    assert f"--threads {env['cpu_threads']}" in readme  # the repeat command pins the thread count it ran with
    assert "python -m monai.bundle run --config_file $B/configs/train.json" in readme
    assert "--epochs 1" in readme and summary["fingerprints"]["weights"] in readme
    assert f"{100 * summary['dice_mean']:.2f} %" in readme
    # each log line in one format; a dependency's warning once, although three configs were parsed
    lines = [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if " WARNING " in ln or " INFO " in ln]
    assert sum("Orientationd" in ln for ln in lines) <= 1
    assert not any(ln.startswith("20") and " - INFO - " in ln for ln in proc.stderr.splitlines())  # MONAI's format
    # a second run into the same folder is refused instead of overwriting results
    again = _demo(out)
    assert again.returncode == 2 and "already holds a demo run" in again.stderr
    # the same command elsewhere repeats the run bit for bit (same environment)
    other = tmp_path / "demo2"
    assert _demo(other, "--threads", str(env["cpu_threads"])).returncode == 0
    repeat = json.loads((other / "summary.json").read_text())
    assert repeat["fingerprints"] == summary["fingerprints"]
    assert repeat["dice_mean"] == summary["dice_mean"]


def test_bad_arguments_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--n >= 2"):
        run_demo(tmp_path / "a", n=1)
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        run_demo(tmp_path / "b", threads=0)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="pass --overwrite"):
        run_demo(tmp_path / "c")


def test_repeat_commands_survive_bash(tmp_path):
    out = tmp_path / "demo out"
    values = {"device": "$torch.device('cpu')", "features": [8, 16], "ckpt_dir": str(out / "models"), "lr": 0.001,
              "name": "a b", "roi": [-1, 256, 256]}
    line = _flags(values, out)
    proc = subprocess.run(["bash", "-c", f'printf "%s\\n" {line}'], capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out)}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    expected = []
    for k, v in values.items():
        expected += [f"--{k}", v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))]
    assert proc.stdout.splitlines() == expected


SEAM_TINY = ["--bundle", "seam_spine_us_segmentation", "--n", "4", "--n_test", "2", "--shape_scale", "0.25",
             "--num_workers", "0", "--epochs", "1", "--val_interval", "1", "--pyramid_channels", "32",
             "--segmentation_channels", "32", "--spatial_size", "[64,256]", "--patch_size", "[64,128]"]


@pytest.mark.slow
def test_demo_seam_tiny(tmp_path):
    """The SEAM bundle's demo: US phantoms, the cpu_small overlay, per-class metrics, the Cobb-angle error, a PNG
    label of the test image's size and the 2D overlay; the repeat commands name the overlay."""
    from PIL import Image

    out = tmp_path / "seam"
    proc = subprocess.run([sys.executable, "-m", "spine_monai", "demo", "--out", str(out), *SEAM_TINY],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bundle"] == "seam_spine_us_segmentation" and summary["overlays"] == ["cpu_small"]
    assert set(summary["summary"]) == {"1", "2", "3", "mean over classes"}
    assert summary["dice_mean"] == summary["summary"]["mean over classes"]["dice_mean"]
    cobb = summary["cobb"]
    assert cobb["n"] == 2 and len(cobb["cases"]) == 2
    info = json.loads((out / "test" / "phantom_info.json").read_text())
    assert [r["true_deg"] for r in cobb["cases"]] == [info[c]["cobb_deg"] for c in sorted(info)]
    assert cobb["mae_truth_deg"] < 5.0  # the measure on the true labels recovers the phantoms' angles
    image = Image.open(sorted((out / "test" / "images").glob("*.png"))[0])
    seg = np.asarray(Image.open(out / "segmentation.png"))
    assert seg.shape == (image.height, image.width) and set(np.unique(seg)) <= {0, 1, 2, 3}
    assert Image.open(out / "overlay.png").size[0] > 0
    assert (out / "cobb.csv").read_text().splitlines()[0] == "case,true_deg,pred_deg,truth_label_deg"
    readme = (out / "README.md").read_text()
    assert "phantoms --modality us" in readme and "configs/cpu_small.json" in readme
    assert "rib" in readme and "mean absolute error" in readme and "(px)" in readme


SAFNET_TINY = ["--bundle", "safnet_spine_mri_segmentation", "--n", "4", "--n_test", "2", "--shape_scale", "0.25",
               "--num_workers", "0", "--epochs", "1", "--val_interval", "1", "--features", "8",
               "--spatial_size", "[8,32,64]"]


@pytest.mark.slow
def test_demo_safnet_tiny(tmp_path):
    """The SAFNet bundle's demo: multi-class MRI phantoms (MRSpineSeg labels), its CPU overlays, a metric row per
    structure, a label map in the test phantom's geometry; the repeat commands write the multi-class phantoms."""
    out = tmp_path / "safnet"
    proc = subprocess.run([sys.executable, "-m", "spine_monai", "demo", "--out", str(out), *SAFNET_TINY],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overlays"] == ["cpu_small", "phantom_crop", "loss_ce"]
    assert set(summary["summary"]) == {str(c) for c in range(1, 20)} | {"mean over classes"}
    data = json.loads((out / "data" / "datalist.json").read_text())
    assert "labelsTr" in data["training"][0]["label"]  # the MRSpineSeg map, not the binary view
    image = sorted((out / "test" / "imagesTr").glob("*.nii.gz"))[0]
    seg = nib.load(str(out / "segmentation.nii.gz"))
    assert seg.shape == nib.load(str(image)).shape and np.allclose(seg.affine, nib.load(str(image)).affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= set(range(20))
    readme = (out / "README.md").read_text()
    assert "--nobinary" in readme and "configs/loss_ce.json" in readme and "T9/T10" in readme


CT_TINY = ["--bundle", "attention_driven_spine_ct_segmentation", "--n", "4", "--n_test", "2", "--shape_scale", "0.25",
           "--num_workers", "0", "--epochs", "1", "--loc_epochs", "1", "--val_interval", "1", "--num_samples", "1",
           "--features", "[4,8,16,32,64]", "--loc_features", "[4,4,8,8,8,8,8,8,4]", "--pixdim", "[4.0,4.0,4.0]",
           "--patch_size", "[12,32,32]", "--roi_size", "[12,32,32]", "--loc_patch_size", "[32,32]", "--slice_step", "2",
           "--attention_sigma_grid", "[[1.0,2.0,2.0]]"]


@pytest.mark.slow
def test_demo_attention_ct_tiny(tmp_path):
    """The attention-driven CT bundle's demo: CT phantoms, its cpu_small overlay, both stages trained (localisation
    net, then segmentation net), held-out phantoms segmented with the two-network inference and scored with the
    spine Dice; the README's repeat commands write CT phantoms and the outputs name both weights files."""
    out = tmp_path / "ct"
    proc = subprocess.run([sys.executable, "-m", "spine_monai", "demo", "--out", str(out), *CT_TINY],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bundle"] == "attention_driven_spine_ct_segmentation" and summary["overlays"] == ["cpu_small"]
    assert summary["summary"]["1"]["n"] == 2  # the spine Dice of both held-out phantoms
    assert 0.0 <= summary["dice_mean"] <= 1.0
    for name in ("localization.pt", "localization_config.json", "model.pt", "model_config.json"):
        assert (out / "models" / name).is_file(), name
    assert set(summary["fingerprints"]) == {"train_data", "test_data", "weights", "localization_weights"}
    image = sorted((out / "test" / "imagesTr").glob("*.nii.gz"))[0]
    seg = nib.load(str(out / "segmentation.nii.gz"))
    assert seg.shape == nib.load(str(image)).shape and np.allclose(seg.affine, nib.load(str(image)).affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
    readme = (out / "README.md").read_text()
    assert "phantoms --modality ct" in readme and "configs/cpu_small.json" in readme and "--loc_epochs 1" in readme
    assert "`models/localization.pt`" in readme and summary["fingerprints"]["localization_weights"] in readme


REVIEW_TINY = ["--bundle", "review_spine_mri_segmentation", "--n", "4", "--n_test", "2", "--shape_scale", "0.25",
               "--num_workers", "0", "--epochs", "1", "--val_interval", "1", "--num_samples", "2", "--img_size", "32"]


@pytest.mark.slow
def test_demo_review_tiny(tmp_path):
    """The review bundle's demo: multi-class MRI phantoms, its cpu_small overlay with the default network (DeepLabv3+,
    ResNet-18 at the cpu preset; here on 32 x 32 slices), a metric row per structure, a label map in the test
    phantom's geometry (segmented slice by slice); the README's repeat commands write the multi-class phantoms."""
    out = tmp_path / "review"
    proc = subprocess.run([sys.executable, "-m", "spine_monai", "demo", "--out", str(out), *REVIEW_TINY],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bundle"] == "review_spine_mri_segmentation" and summary["overlays"] == ["cpu_small"]
    assert set(summary["summary"]) == {str(c) for c in range(1, 20)} | {"mean over classes"}
    record = json.loads((out / "models" / "model_config.json").read_text())
    assert record["settings"]["network_name"] == "deeplabv3plus" and record["settings"]["network_preset"] == "cpu"
    image = sorted((out / "test" / "imagesTr").glob("*.nii.gz"))[0]
    seg = nib.load(str(out / "segmentation.nii.gz"))
    assert seg.shape == nib.load(str(image)).shape and np.allclose(seg.affine, nib.load(str(image)).affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= set(range(20))
    readme = (out / "README.md").read_text()
    assert "--nobinary" in readme and "configs/cpu_small.json" in readme and "T9/T10" in readme


def test_unknown_bundle_is_refused(tmp_path):
    with pytest.raises(ValueError, match="the demo runs saunet_spine_mri_segmentation"):
        run_demo(tmp_path / "x", bundle="nope")
