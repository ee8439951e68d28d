"""The review bundle folder (twelve 2D networks on sagittal slices, Zhou et al., ICMR 2022) served by a real MONAI
Label 0.8.5 server (monaibundle sample app) with the 19 MRSpineSeg structure names.

Checked over HTTP on 127.0.0.1: ``/info`` (the contract's test: labels from ``channel_def``; dimension 2, from the
two sizes of ``inputs.image.spatial_shape``: the network sees sagittal slices); ``/infer`` on a 3D phantom of the
datastore returns a label map 0..19 on the volume's grid (the bundle's ``SagittalSliceInferer`` runs the 2D network
over every sagittal slice); ``/train?run_sync=true`` trains one epoch on the datastore's labelled phantoms and
rewrites ``models/model.pt`` with its record. Only the bundle copy's ``train.json`` gets small constants (``unet``,
``cpu`` preset, 32 x 32 slices); ``inference.json`` takes them from the record beside the initial weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import MONAILABEL_MARKS, REPO, MonaiLabelContract, install_small_bundle, phantom_studies, serve_monailabel

from spine_monai.data.labels import MRSPINESEG_LABELS

NAME = "review_spine_mri_segmentation"
BUNDLE = REPO / "bundles" / NAME
SETTINGS = {"network_name": "unet", "network_preset": "cpu", "network_options": {}, "img_size": 32}
SMALL = {**SETTINGS, "batch_size": 2, "num_samples": 2, "num_workers": 0, "epochs": 1, "val_interval": 1}

pytestmark = MONAILABEL_MARKS


def small_bundle_copy(dst: Path) -> Path:
    """The bundle with small constants in train.json and an initial model with its record."""
    from spine_monai.networks.registry import get_network

    torch.manual_seed(0)
    net = get_network("unet", 1, 20, preset="cpu", img_size=SETTINGS["img_size"])
    return install_small_bundle(BUNDLE, dst, SMALL, net, SETTINGS)


def _studies(studies: Path) -> None:
    """Datastore: four multi-class MRI phantoms (3D) with their MRSpineSeg labels."""
    phantom_studies(studies, labels="labelsTr", binary=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_monailabel(tmp_path_factory.mktemp("monailabel_review"), NAME, small_bundle_copy, _studies) as srv:
        yield srv


class TestMonaiLabel(MonaiLabelContract):
    name = NAME
    # MONAI Label lower-cases the channel_def names (S -> s, L5/S -> l5/s)
    labels = {name.lower(): value for value, name in MRSPINESEG_LABELS.items() if value}
    dimension = 2


def test_infer_3d_and_train(server, tmp_path):
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(server.infer_bytes("case_000"))
    seg, ref = nib.load(str(out)), nib.load(str(server.studies / "case_000.nii.gz"))
    assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= set(range(20))
    before = torch.load(server.model_pt, weights_only=True)
    server.train_one_epoch()
    after = torch.load(server.model_pt, weights_only=True)
    assert after.keys() == before.keys()
    assert not torch.equal(after["final_conv.weight"], before["final_conv.weight"])
    record = json.loads((server.model_pt.parent / "model_config.json").read_text())
    assert record["settings"] == SETTINGS and record["metric"]["name"] == "val_mean_dice"
    out.write_bytes(server.infer_bytes("case_001"))  # the retrained weights, rebuilt from their record
    assert nib.load(str(out)).shape == nib.load(str(server.studies / "case_001.nii.gz")).shape
