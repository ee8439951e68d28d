"""The attention-driven CT bundle (Sekuboyina et al., MSKI 2017: 2D localisation net + 2D/3D segmentation net + late
fusion) served by a real MONAI Label 0.8.5 server (monaibundle sample app) as a 3D binary model.

Checked over HTTP on 127.0.0.1: ``/info`` (the contract's test: label ``spine`` from ``channel_def``, dimension 3);
``/infer`` on a CT phantom (4 x 4 x 10 mm) returns a binary label on its grid, with the localisation net loaded from
``models/localization.pt`` beside ``model.pt``; ``/train?run_sync=true`` runs both stages of ``train.json`` (the
localisation net, then the segmentation net, one epoch each) on the datastore's labelled phantoms and rewrites
``localization.pt`` and ``model.pt`` with their records. Only the bundle copy's ``train.json`` gets the small
constants of the bundle test; ``inference.json`` takes them from the records of the initial tiny weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import (
    MONAILABEL_MARKS,
    MonaiLabelContract,
    install_small_bundle,
    overrides,
    phantom_studies,
    serve_monailabel,
    small_networks,
    small_settings,
)
from test_attention_ct_bundle import BUNDLE, TRAIN_SMALL

NAME = BUNDLE.name
SMALL = overrides(TRAIN_SMALL)  # one epoch of each stage (MONAI Label sets the segmentation stage's max_epochs)

pytestmark = MONAILABEL_MARKS


def small_bundle_copy(dst: Path) -> Path:
    """The bundle with the small constants in train.json and tiny untrained weights of both nets with their
    records (``model.pt`` / ``model_config.json`` and ``localization.pt`` / ``localization_config.json``)."""
    torch.manual_seed(0)
    seg, loc = small_networks(BUNDLE, SMALL, "network_def", "localization_def")
    loc_settings = small_settings(BUNDLE, SMALL, "localization_settings")
    return install_small_bundle(BUNDLE, dst, SMALL, seg, small_settings(BUNDLE, SMALL),
                                extra_weights={"localization.pt": (loc, loc_settings)})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    studies = lambda s: phantom_studies(s, modality="ct")  # noqa: E731 - four CT phantoms, binary spine labels
    with serve_monailabel(tmp_path_factory.mktemp("monailabel_ct"), NAME, small_bundle_copy, studies) as srv:
        yield srv


class TestMonaiLabel(MonaiLabelContract):
    name = NAME
    labels = {"spine": 1}
    dimension = 3


def _infer(server, out: Path) -> np.ndarray:
    out.write_bytes(server.infer_bytes("case_000"))
    seg, ref = nib.load(str(out)), nib.load(str(server.studies / "case_000.nii.gz"))
    assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine, atol=1e-4)
    label = np.asarray(seg.dataobj)
    assert set(np.unique(label).tolist()) <= {0, 1}
    return label


def test_infer_and_train_both_stages(server, tmp_path):
    models = server.model_pt.parent
    _infer(server, tmp_path / "before.nii.gz")
    before = {f: torch.load(models / f, weights_only=True) for f in ("model.pt", "localization.pt")}

    server.train_one_epoch()

    for filename, metric in (("localization.pt", "val_mask_dice"), ("model.pt", "val_mean_dice")):
        after = torch.load(models / filename, weights_only=True)  # still a plain state dict
        assert after.keys() == before[filename].keys()
        assert any(not torch.equal(after[k], before[filename][k]) for k in after), filename
        record = json.loads((models / filename.replace(".pt", "_config.json")).read_text())
        assert record["metric"]["name"] == metric, filename
    assert json.loads((models / "model_config.json").read_text())["settings"]["features"] == SMALL["features"]
    assert json.loads((models / "localization_config.json").read_text())["settings"]["slice_step"] == 2
    _infer(server, tmp_path / "after.nii.gz")


def test_infer_after_new_stage_one_uses_it(server, tmp_path):
    """A new ``localization.pt`` / ``localization_config.json`` (as ``/train`` writes them) is used by the next
    ``/infer``: MONAI Label keeps the inferer it built, so the inferer reloads the weights when the file changed, with
    the sigma and threshold recorded beside them (here a threshold no grid holds)."""
    path = server.model_pt.parent / "localization_config.json"
    record = json.loads(path.read_text())
    record["settings"]["attention_threshold"] = 0.37
    path.write_text(json.dumps(record, indent=2))
    weights = server.model_pt.parent / "localization.pt"
    stat = weights.stat()
    os.utime(weights, (stat.st_atime, stat.st_mtime + 10))  # rewritten, as /train does
    _infer(server, tmp_path / "seg.nii.gz")
    assert "threshold 0.37" in server.log_tail(200_000).rsplit("reloaded the localisation net", 1)[-1]
