"""End-to-end runs of the attention-driven CT bundle (localisation net + 2D/3D segmentation net + late fusion) with
the commands of BUNDLES.md, on tiny CT phantoms.

One module-scoped training run (both stages, 1 epoch each, 4 mm voxels, tiny widths) serves the contract's checks
(record, evaluate overlay with the full two-stage method, metadata, TorchScript export of the segmentation net,
2-process gloo training of both stages, inference keeping an LAS scan's geometry). Small so that the bundle's share
of the CI run stays within its budget.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import REPO, Volume3DContract, bundle_cmd, bundle_fixtures, run

BUNDLE = REPO / "bundles" / "attention_driven_spine_ct_segmentation"
NET = ["--features", "[4,8,16,32,64]", "--loc_features", "[4,4,8,8,8,8,8,8,4]"]
SMALL = [*NET, "--pixdim", "[4.0,4.0,4.0]", "--patch_size", "[12,32,32]", "--roi_size", "[12,32,32]",
         "--loc_patch_size", "[32,32]", "--slice_step", "2", "--attention_sigma", "[1.0,2.0,2.0]", "--num_workers", "0"]
SIGMA_GRID = [[0.5, 1.0, 1.0], [1.0, 2.0, 2.0]]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--loc_epochs", "1", "--val_interval", "1", "--num_samples", "1",
               "--attention_sigma_grid", json.dumps(SIGMA_GRID)]

pytestmark = pytest.mark.slow

workspace, trained = bundle_fixtures(BUNDLE, modality="ct", train_args=TRAIN_SMALL)


class TestContract(Volume3DContract):
    bundle = BUNDLE
    small = SMALL
    train_args = TRAIN_SMALL
    state_key = "down"  # the segmentation net's contracting path
    record_settings = {"features": [4, 8, 16, 32, 64], "use_localization": True,
                       "pixdim": [4.0, 4.0, 4.0], "hu_window": [-500, 1300]}
    images, suffix = "imagesTr", ".nii.gz"
    net_args = NET
    example_shape = (1, 1, 12, 32, 32)
    label_values = {0, 1}


def test_both_stages_write_weights_and_records(trained):
    """train.json trains the localisation net first (``localization.pt`` + its record, chosen on the validation
    mask Dice), then the segmentation net (``model.pt``)."""
    models = trained.parent
    loc = torch.load(models / "localization.pt", weights_only=True)
    assert any(k.startswith("layers.") for k in loc)
    record = json.loads((models / "localization_config.json").read_text())
    assert record["metric"]["name"] == "val_mask_dice" and record["settings"]["slice_step"] == 2
    # the mask's sigma and threshold were chosen on the validation volumes from the grids of train.json
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert record["settings"]["attention_threshold"] in train["attention_threshold_grid"]
    assert record["settings"]["attention_sigma"] in SIGMA_GRID
    # stage-1 settings live in the localisation record only, so retraining stage 1 alone cannot leave stale ones
    seg = json.loads((models / "model_config.json").read_text())["settings"]
    assert "attention_threshold" not in seg and "slice_step" not in seg and seg["use_localization"] is True


def test_train_localization_overlay_trains_stage_one_only(workspace, tmp_path):
    models = tmp_path / "models"
    configs = json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "train_localization.json")])
    run(bundle_cmd("run", "--config_file", configs, "--bundle_root", str(BUNDLE), "--dataset_dir",
                   str(workspace["data"]), "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "eval"),
                   *TRAIN_SMALL), cwd=tmp_path)
    assert (models / "localization.pt").is_file() and not (models / "model.pt").exists()


def test_segmentation_only_ablation_needs_no_localization(workspace, tmp_path):
    """``ablation_seg_only.json`` (Table 1's segmentation net alone): stage 1 is neither trained nor needed at
    inference; the record carries ``use_localization: false``, so inference needs no flag."""
    from contract import overrides

    from spine_monai.bundle.runner import infer_bundle, train_bundle

    models = tmp_path / "models"
    ckpt = train_bundle(BUNDLE, workspace["data"], overlays=["ablation_seg_only"], progress=False,
                        ckpt_dir=str(models), output_dir=str(tmp_path / "eval"), **overrides(TRAIN_SMALL))
    assert not (models / "localization.pt").exists()
    assert json.loads((models / "model_config.json").read_text())["settings"]["use_localization"] is False
    img = sorted((workspace["data"] / "imagesTr").glob("*.nii.gz"))[0]
    pred = infer_bundle(BUNDLE, img, tmp_path / "pred", ckpt=ckpt, progress=False)
    assert nib.load(str(pred[0])).shape == nib.load(str(img)).shape


def test_non_ct_input_is_refused_in_one_line(workspace, trained, tmp_path):
    """An MRI-like image (non-negative magnitudes) given to the CT bundle stops with one line naming the file, and
    no output is written."""
    src = nib.load(str(sorted((workspace["data"] / "imagesTr").glob("*.nii.gz"))[0]))
    mri = tmp_path / "t2.nii.gz"
    nib.save(nib.Nifti1Image(np.abs(np.asarray(src.dataobj, np.float32)) + 10.0, src.affine), str(mri))
    out = tmp_path / "pred"
    proc = run(bundle_cmd("run", "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root",
                          str(BUNDLE), "--dataset_dir", str(mri), "--output_dir", str(out), "--ckpt_path",
                          str(trained)), cwd=tmp_path, ok=False)
    assert proc.returncode != 0
    assert "does not look like a CT in Hounsfield units" in proc.stderr and "t2.nii.gz" in proc.stderr
    assert not out.exists() or not list(out.glob("*.nii.gz"))
