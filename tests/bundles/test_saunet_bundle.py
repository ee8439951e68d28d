"""End-to-end runs of the SAU-Net bundle with the commands of BUNDLES.md, on small phantoms (CPU)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from contract import REPO, BundleContract, bundle_cmd, bundle_fixtures, overrides, run

BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
SMALL = ["--features", "[4,8,16]", "--pixdim", "[4.0,2.5,2.5]", "--num_workers", "0"]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--patch_size", "[-1,32,32]", "--num_samples", "1", "--roi_size", "[-1,64,64]"]

pytestmark = pytest.mark.slow

workspace, trained = bundle_fixtures(BUNDLE, modality="mri", train_args=TRAIN_SMALL)


class TestContract(BundleContract):
    bundle = BUNDLE
    small = SMALL
    train_args = TRAIN_SMALL
    state_key = "isa.conv_prev"  # the inter-slice attention is part of the model
    record_settings = {"features": [4, 8, 16], "pixdim": [4.0, 2.5, 2.5]}
    images, suffix = "imagesTr", ".nii.gz"
    net_args = ("--any", "20")
    example_shape = (1, 1, 11, 40, 36)

    def check_label(self, label: Path, image: Path) -> None:
        seg, img = nib.load(str(label)), nib.load(str(image))
        assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)


def test_inference_keeps_geometry(workspace, trained, tmp_path):
    w = workspace
    # an anisotropic, non-RAS input: the label must come back on the input's own grid
    src = nib.load(str(sorted((w["data"] / "imagesTr").glob("*.nii.gz"))[0]))
    las = nib.as_closest_canonical(src).slicer[::-1, :, :]
    img_path = tmp_path / "las.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(las.dataobj), las.affine), str(img_path))
    out_dir = tmp_path / "pred"
    run(bundle_cmd("run", "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                   "--dataset_dir", str(img_path), "--output_dir", str(out_dir),
                   "--handlers#0#load_path", str(trained), *SMALL), cwd=tmp_path)
    seg = nib.load(str(out_dir / "las_seg.nii.gz"))
    ref = nib.load(str(img_path))
    assert seg.shape == ref.shape
    assert np.allclose(seg.affine, ref.affine, atol=1e-4)
    assert nib.aff2axcodes(seg.affine) == ("L", "A", "S")
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
    assert sorted(os.listdir(out_dir)) == ["las_seg.nii.gz"]  # no temporary files left


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
