"""The SEAM bundle folder served by a real MONAI Label 0.8.5 server as a 2D model (monaibundle sample app).

Checked over HTTP on 127.0.0.1: ``/info`` lists the bundle with its three label names and dimension 2 (from
``len(inputs.image.spatial_shape)`` of the metadata); ``/infer`` on a PNG phantom in the datastore returns a label of
the image's size with values in 0..3; ``/train?run_sync=true`` trains one epoch on the datastore's labelled PNGs and
rewrites ``models/model.pt`` with its record. The server and the ``/info`` checks are the contract's
(``tests/bundles/contract.py``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from contract import MONAILABEL_MARKS, REPO, MonaiLabelContract, install_small_bundle, phantom_studies, serve_monailabel
from PIL import Image

NAME = "seam_spine_us_segmentation"
BUNDLE = REPO / "bundles" / NAME
SMALL = {"encoder_name": "resnet18", "pyramid_channels": 32, "segmentation_channels": 32, "spatial_size": [64, 256],
         "patch_size": [64, 128], "batch_size": 2, "num_workers": 0, "epochs": 1}

pytestmark = MONAILABEL_MARKS


def small_bundle_copy(dst: Path) -> Path:
    """The bundle with small constants in train.json and an initial model with its record."""
    from spine_monai.networks.nets.fpn_seam import FPNSEAM

    torch.manual_seed(0)
    net = FPNSEAM(1, 4, encoder_name="resnet18", decoder_pyramid_channels=32, decoder_segmentation_channels=32)
    settings = {k: SMALL[k] for k in ("spatial_size", "encoder_name", "pyramid_channels", "segmentation_channels")}
    return install_small_bundle(BUNDLE, dst, SMALL, net, {**settings, "attentive": True})


def _studies(studies: Path) -> None:
    """Datastore: four PNG phantoms with their PNG labels."""
    phantom_studies(studies, modality="us", images="images", labels="labels", pattern="*.png")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_monailabel(tmp_path_factory.mktemp("monailabel_seam"), NAME, small_bundle_copy, _studies) as srv:
        yield srv


class TestMonaiLabel(MonaiLabelContract):
    name = NAME
    labels = {"rib": 1, "thoracic": 2, "lumbar": 3}
    dimension = 2


def _infer(server, image_id: str) -> np.ndarray:
    raw = server.infer_bytes(image_id)
    try:
        return np.asarray(Image.open(io.BytesIO(raw)))
    except Exception:  # noqa: BLE001 - MONAI Label may answer a 2D label as NIfTI
        import nibabel as nib

        tmp = server.app.parent / f"{image_id}_seg.nii.gz"
        tmp.write_bytes(raw)
        return np.asarray(nib.load(str(tmp)).dataobj).squeeze().T


def test_infer_and_train(server):
    ref = np.asarray(Image.open(server.studies / "case_000.png"))
    seg = _infer(server, "case_000")
    assert seg.shape == ref.shape and set(np.unique(seg)) <= {0, 1, 2, 3}
    model_pt = server.app / "model" / NAME / "models" / "model.pt"
    before = torch.load(model_pt, weights_only=True)
    server.train_one_epoch()
    after = torch.load(model_pt, weights_only=True)
    assert after.keys() == before.keys()
    assert not torch.equal(after["seam.key.weight"], before["seam.key.weight"])
    record = json.loads((model_pt.parent / "model_config.json").read_text())
    assert record["settings"]["encoder_name"] == "resnet18" and record["metric"]["name"] == "val_mean_dice"
    assert _infer(server, "case_000").shape == ref.shape
