"""The SAFNet bundle folder served by a real MONAI Label 0.8.5 server (monaibundle sample app) as a 3D model with
the 19 MRSpineSeg structure names.

Checked over HTTP on 127.0.0.1: ``/info`` (the contract's test: labels from ``channel_def``, dimension 3);
``/infer`` returns a label map 0..19 on the input's grid; ``/train?run_sync=true`` trains one epoch on the
datastore's labelled phantoms and rewrites ``models/model.pt`` with its record. Only the bundle copy's ``train.json``
gets small constants; ``inference.json`` takes them from the record beside the initial weights.
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

NAME = "safnet_spine_mri_segmentation"
BUNDLE = REPO / "bundles" / NAME
SMALL = {"features": 8, "spatial_size": [8, 32, 64], "batch_size": 2, "num_workers": 0, "epochs": 1}

pytestmark = MONAILABEL_MARKS


def small_bundle_copy(dst: Path) -> Path:
    """The bundle with small constants in train.json and an initial model with its record."""
    from spine_monai.networks.nets.safnet import SAFNet

    config = json.loads((BUNDLE / "configs" / "train.json").read_text())
    settings = {k: SMALL.get(k, config[k]) for k in ("spatial_size", "crop_scale", "features", "use_aspp", "use_msf",
                                                     "use_attention", "aspp_rates", "splice", "gate_attention")}
    torch.manual_seed(0)
    return install_small_bundle(BUNDLE, dst, SMALL, SAFNet(out_channels=20, features=SMALL["features"]), settings)


def _studies(studies: Path) -> None:
    """Datastore: four multi-class MRI phantoms with their MRSpineSeg labels."""
    phantom_studies(studies, labels="labelsTr", binary=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_monailabel(tmp_path_factory.mktemp("monailabel_safnet"), NAME, small_bundle_copy, _studies) as srv:
        yield srv


class TestMonaiLabel(MonaiLabelContract):
    name = NAME
    # MONAI Label lower-cases the channel_def names (S -> s, L5/S -> l5/s)
    labels = {name.lower(): value for value, name in MRSPINESEG_LABELS.items() if value}
    dimension = 3


def test_infer_and_train(server, tmp_path):
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(server.infer_bytes("case_000"))
    seg, ref = nib.load(str(out)), nib.load(str(server.studies / "case_000.nii.gz"))
    assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= set(range(20))
    before = torch.load(server.model_pt, weights_only=True)
    server.train_one_epoch()
    after = torch.load(server.model_pt, weights_only=True)
    assert after.keys() == before.keys()
    assert not torch.equal(after["head.1.weight"], before["head.1.weight"])
    record = json.loads((server.model_pt.parent / "model_config.json").read_text())
    assert record["settings"]["features"] == SMALL["features"] and record["metric"]["name"] == "val_mean_dice"
