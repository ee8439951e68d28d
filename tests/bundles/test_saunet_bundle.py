"""End-to-end runs of the SAU-Net bundle with the commands of BUNDLES.md, on small phantoms (CPU)."""

from __future__ import annotations

import json

import nibabel as nib
import pytest
from contract import REPO, Volume3DContract, bundle_fixtures, overrides

BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
SMALL = ["--features", "[4,8,16]", "--pixdim", "[4.0,2.5,2.5]", "--num_workers", "0"]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--patch_size", "[-1,32,32]", "--num_samples", "1", "--roi_size", "[-1,64,64]"]

pytestmark = pytest.mark.slow

workspace, trained = bundle_fixtures(BUNDLE, modality="mri", train_args=TRAIN_SMALL)


class TestContract(Volume3DContract):
    bundle = BUNDLE
    small = SMALL
    train_args = TRAIN_SMALL
    state_key = "isa.conv_prev"  # the inter-slice attention is part of the model
    record_settings = {"features": [4, 8, 16], "pixdim": [4.0, 2.5, 2.5]}
    images, suffix = "imagesTr", ".nii.gz"
    net_args = ("--any", "20")
    example_shape = (1, 1, 11, 40, 36)
    label_values = {0, 1}


@pytest.mark.parametrize("overlay, extra", [
    ("ablation_no_isa.json", []),
    ("baseline_unet2d.json", ["--unet2d_features", "[4,4,8,8,16,4]"]),
    ("baseline_unet3d.json", ["--unet3d_features", "[4,4,8,8,16,4]", "--patch_size", "[16,32,32]"]),
])
def test_overlays_train_and_infer(workspace, tmp_path, overlay, extra):
    """Each overlay trains with train.json + the overlay and segments with inference.json, which takes the overlay
    and the widths from the record; in this process (the same configs as ``monai.bundle run``, which the contract's
    tests run as commands)."""
    from spine_monai.bundle.runner import infer_bundle, train_bundle

    w = workspace
    models = tmp_path / "models"
    ckpt = train_bundle(BUNDLE, w["data"], overlays=[overlay], progress=False, ckpt_dir=str(models),
                        output_dir=str(tmp_path / "eval"), **overrides([*TRAIN_SMALL, *extra]))
    record = json.loads((models / "model_config.json").read_text())
    if overlay.startswith("baseline"):
        assert record["overlays"] == [overlay[: -len(".json")]]
    else:
        assert record["settings"]["use_isa"] is False
    img = sorted((w["data"] / "imagesTr").glob("*.nii.gz"))[0]
    pred = infer_bundle(BUNDLE, img, tmp_path / "pred", ckpt=ckpt, progress=False)
    assert [p.name for p in pred] == [img.name.replace(".nii.gz", "_seg.nii.gz")]
    assert nib.load(str(pred[0])).shape == nib.load(str(img)).shape
