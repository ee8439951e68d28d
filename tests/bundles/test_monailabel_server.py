"""The SAU-Net bundle folder, unchanged, served by a real MONAI Label 0.8.5 server (monaibundle sample app).

What is checked, over HTTP on 127.0.0.1 (BUNDLES.md, "MONAI Label"): ``/info`` lists the bundle with its label names
and dimension 3; ``/infer/<bundle>?image=<id>`` returns a label map on the input's own grid (a phantom, and an
anisotropic LAS copy of one); ``/train/<bundle>?run_sync=true`` trains one epoch on the datastore's labelled images
and rewrites ``models/model.pt``; the next ``/infer`` reloads it and gives another label map.

Only the copy of the bundle in ``tmp_path`` gets small constants (features, pixdim, patch and ROI size, one worker) in
its ``train.json``; its ``inference.json`` is unchanged and takes them from the record ``models/model_config.json``
beside the initial weights, as it does for any trained model. The full-size defaults would take minutes on a CPU.
Install recipe: docs/monailabel.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import MONAILABEL_MARKS, REPO, MonaiLabelContract, install_small_bundle, phantom_studies, serve_monailabel

NAME = "saunet_spine_mri_segmentation"
BUNDLE = REPO / "bundles" / NAME
SMALL = {"features": [4, 8, 16], "pixdim": [4.0, 2.5, 2.5], "num_workers": 0, "patch_size": [-1, 32, 32],
         "num_samples": 1, "roi_size": [-1, 64, 64], "epochs": 1}

pytestmark = MONAILABEL_MARKS


def small_bundle_copy(dst: Path) -> Path:
    """The bundle with small constants and a network whose head is zero (logits 0 everywhere)."""
    from spine_monai.networks.nets.saunet import SAUNet

    torch.manual_seed(0)
    net = SAUNet(features=tuple(SMALL["features"]))
    with torch.no_grad():  # sigmoid(0) = 0.5 -> every voxel 1 after the threshold, until training moves the head
        net.head.weight.zero_()
        net.head.bias.zero_()
    return install_small_bundle(BUNDLE, dst, SMALL, net, {k: SMALL[k] for k in ("pixdim", "roi_size", "features")})


def _studies(studies: Path) -> None:
    """Datastore: four phantoms with labels, and an unlabelled LAS copy of one (inference only)."""
    phantom_studies(studies)
    src = nib.load(str(studies / "case_001.nii.gz"))  # anisotropic (about 3.7 x 3.2 x 3.2 mm), RAS
    las = nib.as_closest_canonical(src).slicer[::-1, :, :]
    nib.save(nib.Nifti1Image(np.asarray(las.dataobj), las.affine), str(studies / "scan_las.nii.gz"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_monailabel(tmp_path_factory.mktemp("monailabel"), NAME, small_bundle_copy, _studies) as srv:
        yield srv


def _infer(server, image_id: str, out: Path) -> nib.Nifti1Image:
    out.write_bytes(server.infer_bytes(image_id))
    return nib.load(str(out))


class TestMonaiLabel(MonaiLabelContract):
    name = NAME
    labels = {"spine": 1}
    dimension = 3


@pytest.mark.parametrize("image_id", ["case_000", "scan_las"])
def test_infer_returns_label_in_input_geometry(server, tmp_path, image_id):
    seg = _infer(server, image_id, tmp_path / "seg.nii.gz")
    ref = nib.load(str(server.studies / f"{image_id}.nii.gz"))
    assert seg.shape == ref.shape
    assert np.allclose(seg.affine, ref.affine, atol=1e-4)
    assert nib.aff2axcodes(seg.affine) == nib.aff2axcodes(ref.affine)
    values = np.asarray(seg.dataobj)
    assert set(np.unique(values)) <= {0, 1}


def test_train_rewrites_model_and_next_infer_uses_it(server, tmp_path):
    model_pt = server.app / "model" / NAME / "models" / "model.pt"
    before_state = torch.load(model_pt, weights_only=True)
    before_mtime = model_pt.stat().st_mtime_ns
    before = np.asarray(_infer(server, "case_000", tmp_path / "before.nii.gz").dataobj)
    assert before.min() == 1  # zero head: logits 0, sigmoid 0.5, threshold 0.5 -> all 1

    server.train_one_epoch()

    assert model_pt.stat().st_mtime_ns != before_mtime
    after_state = torch.load(model_pt, weights_only=True)  # still a plain state dict
    assert after_state.keys() == before_state.keys()
    assert not torch.equal(after_state["head.weight"], before_state["head.weight"])

    seg = _infer(server, "case_000", tmp_path / "after.nii.gz")
    after = np.asarray(seg.dataobj)
    assert after.shape == before.shape
    assert not np.array_equal(after, before)
    assert "Reload model from cache" in server.log_tail(200_000)
    record = json.loads((model_pt.parent / "model_config.json").read_text())  # training wrote the new record
    assert record["settings"]["features"] == SMALL["features"] and record["metric"]["name"] == "val_mean_dice"
