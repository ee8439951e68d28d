"""End-to-end runs of the SAFNet bundle (20-class sagittal MRI) with the commands of BUNDLES.md, on tiny phantoms.

One module-scoped training run (1 epoch, 8 features, 8 x 32 x 64 inputs) serves the contract's checks, inference on
an anisotropic LAS copy, ``segment`` and ``crossval``; each Table 1 baseline, Table 2 ablation and reading overlay
trains and segments in this process. Small so that the bundle's share of the CI run stays within its budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from contract import REPO, Volume3DContract, bundle_fixtures, overrides

BUNDLE = REPO / "bundles" / "safnet_spine_mri_segmentation"
NET = ["--features", "8"]
SMALL = [*NET, "--spatial_size", "[8,32,64]", "--num_workers", "0"]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--batch_size", "2"]
CLASSES = set(range(20))

pytestmark = pytest.mark.slow

workspace, trained = bundle_fixtures(BUNDLE, modality="mri", train_args=TRAIN_SMALL, binary=False)


class TestContract(Volume3DContract):
    bundle = BUNDLE
    small = SMALL
    train_args = TRAIN_SMALL
    state_key = "gate_attention"  # R_SAM: the attention modules on the gate (eq. 8)
    record_settings = {"features": 8, "spatial_size": [8, 32, 64], "splice": "paper", "aspp_rates": [6, 12, 18]}
    images, suffix = "imagesTr", ".nii.gz"
    net_args = NET
    example_shape = (1, 1, 8, 32, 64)
    label_values = CLASSES


def test_datalist_is_multiclass(workspace):
    data = json.loads((workspace["data"] / "datalist.json").read_text())
    assert len(data["labels"]) == 20 and data["training"][0]["label"].endswith(".nii.gz")
    assert "labelsTr" in data["training"][0]["label"]


def test_segment_reports_every_structure(workspace, trained, tmp_path):
    from spine_monai.segment import segment

    img = sorted((workspace["data"] / "imagesTr").glob("*.nii.gz"))[0]
    out = segment("safnet_spine_mri_segmentation", str(img), str(tmp_path / "seg.nii.gz"), weights=str(trained),
                  volumes_json=str(tmp_path / "volumes.json"), progress=False)
    assert nib.load(out).shape == nib.load(str(img)).shape
    report = json.loads((tmp_path / "volumes.json").read_text())
    names = json.dumps(report)
    for name in ("L5", "T12/L1", "T9/T10"):
        assert f'"{name}"' in names, name


@pytest.mark.parametrize("overlay, extra", [
    ("ablation_base.json", []),
    ("ablation_base_aspp.json", []),
    ("ablation_base_msf.json", []),
    ("ablation_base_attention.json", []),
    ("fit_aspp_rates.json", []),
    ("splice_gated_high.json", []),
    ("loss_ce.json", []),
    ("phantom_crop.json", []),
    ("real_lumbar_levels.json", []),
    ("baseline_unet3d.json", ["--unet_features", "[4,4,8,8,16,4]", "--spatial_size", "[16,32,64]"]),  # pools depth 4x
    ("baseline_resunet3d.json", ["--resunet_channels", "[4,8,16]"]),
    ("baseline_deeplabv3.json", ["--deeplab_widths", "[4,8,8,16]"]),
])
def test_overlays_train_and_infer(workspace, tmp_path, overlay, extra):
    """Every Table 1 baseline, Table 2 ablation and reading trains with train.json + its overlay and segments with
    inference.json, which takes the overlay and the settings from the record (in this process: the same configs as
    ``monai.bundle run``, which the contract's tests run as commands)."""
    from spine_monai.bundle.runner import infer_bundle, train_bundle

    models = tmp_path / "models"
    ckpt = train_bundle(BUNDLE, workspace["data"], overlays=[overlay], progress=False, ckpt_dir=str(models),
                        output_dir=str(tmp_path / "eval"), **overrides([*TRAIN_SMALL, *extra]))
    record = json.loads((models / "model_config.json").read_text())
    if overlay.startswith("baseline"):
        assert record["overlays"] == [overlay[: -len(".json")]]
    img = sorted((workspace["data"] / "imagesTr").glob("*.nii.gz"))[0]
    pred = infer_bundle(BUNDLE, img, tmp_path / "pred", ckpt=ckpt, progress=False)
    assert nib.load(str(pred[0])).shape == nib.load(str(img)).shape


def test_crossval_scores_every_class(workspace, tmp_path):
    from spine_monai.evaluation.crossval import crossval

    out = crossval("safnet_spine_mri_segmentation", str(workspace["data"]), folds=2, max_folds=1,
                   out=tmp_path / "cv", progress=False, val_fraction=0.5, **overrides(TRAIN_SMALL))
    summary = json.loads((Path(out) / "summary.json").read_text())
    for key in ("dice", "dice_s", "dice_l5", "dice_l5/s", "dice_t9/t10", "runtime_s", "level_id_rate"):
        assert key in summary["across_folds"], key  # names lower-cased
    assert 0.0 <= summary["across_folds"]["level_id_rate"]["mean"] <= 1.0
    assert "Correctly numbered structures" in (Path(out) / "summary.md").read_text()


@pytest.mark.parametrize("resize_depth", [False, True])
def test_resize_depth_keeps_the_lateral_slices(tmp_path, resize_depth):
    """``real_lumbar_levels.json`` (``resize_depth``): a 1 mm isotropic scan of 40 sagittal slices is resized to the
    network's slices (all of them kept, about 2 mm apart here); the paper's default pads / centre-crops the slice axis,
    which would drop the lateral parts of the vertebral bodies of such a scan."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"spatial_size": [20, 32, 64], "resize_depth": resize_depth, "crop_scale": [1.0, 1.0, 1.0]})
    arr = np.random.default_rng(0).normal(size=(40, 48, 96)).astype(np.float32)
    arr[0] = 100.0  # the outermost (right-most) slice, bright
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    out = parser.get_parsed_content("preprocessing")({"image": str(path)})["image"]
    assert tuple(out.shape[1:]) == (20, 32, 64)
    assert bool((out[0, 0] > 3).all()) is resize_depth  # z-scored: the bright slice is kept only when resized
