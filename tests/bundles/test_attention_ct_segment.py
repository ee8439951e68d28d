"""``python -m spine_monai segment`` with the attention-driven CT bundle (Sekuboyina et al., MSKI 2017): two networks,
the 2D localisation net (``localization.pt``) and the 2D/3D segmentation net (``model.pt``), found beside ``--weights``.

Tiny untrained weights for both nets (the bundle test's small settings, built from the bundle's own ``network_def``
and ``localization_def``) with their records; the input is an anisotropic (4 x 4 x 10 mm) LAS copy of a CT phantom.
The label must come back on the input's grid (shape, affine, orientation). A missing ``localization.pt`` is refused
in one line before anything runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import overrides, small_networks, small_settings, write_small_weights
from test_attention_ct_bundle import BUNDLE, TRAIN_SMALL

SMALL = overrides(TRAIN_SMALL)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    """A LAS CT phantom and ``models/`` with both tiny nets: the segmentation head's bias puts the threshold at the
    median logit of the scan (a label with both values), the localisation net attends everywhere (sigmoid(0) = 0.5,
    above the 0.1 threshold), so the fused label is the segmentation net's."""
    from spine_monai.data.phantoms import make_phantom_dataset

    root = tmp_path_factory.mktemp("ct_segment")
    make_phantom_dataset(modality="ct", n=2, out=root / "data", seed=5, folds=2, shape_scale=0.25, progress=False)
    src = nib.as_closest_canonical(nib.load(str(root / "data" / "imagesTr" / "case_000.nii.gz")))
    las = src.slicer[::-1, :, :]
    image = root / "scan_las.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(las.dataobj), las.affine), str(image))

    seg, loc = small_networks(BUNDLE, SMALL, "network_def", "localization_def")
    seg.eval()
    hu = np.asarray(src.dataobj, dtype=np.float32)
    x = torch.as_tensor(np.clip((hu + 500.0) / 1800.0, 0.0, 1.0))[None, None]  # the bundle's HU window
    c = [(s - r) // 2 for s, r in zip(x.shape[2:], SMALL["roi_size"], strict=True)]
    patch = x[:, :, c[0]:c[0] + 12, c[1]:c[1] + 32, c[2]:c[2] + 32]  # one window of roi_size (12, 32, 32)
    with torch.no_grad():
        seg.out_conv.bias -= seg(patch).median()
        loc.out_conv.weight.zero_()
        loc.out_conv.bias.zero_()
    models = write_small_weights(root / "models", {
        "model.pt": (seg, small_settings(BUNDLE, SMALL)),
        "localization.pt": (loc, small_settings(BUNDLE, SMALL, "localization_settings"))}, BUNDLE)
    return {"root": root, "image": image, "models": models}


def test_segment_cli_writes_label_in_input_geometry(ws):
    out = ws["root"] / "out" / "seg.nii.gz"
    cmd = [sys.executable, "-m", "spine_monai", "segment", str(BUNDLE), "-i", str(ws["image"]), "-o", str(out),
           "--weights", str(ws["models"] / "model.pt"), "--device", "cpu", "--noprogress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    seg, img = nib.load(str(out)), nib.load(str(ws["image"]))
    assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)
    assert nib.aff2axcodes(seg.affine) == ("L", "A", "S")
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) == {0, 1}
    assert "found no spine" not in proc.stderr  # stage 1 ran with localization.pt and kept the whole volume
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.nii.gz"]


def test_missing_localization_weights_refused_in_one_line(ws, tmp_path):
    from spine_monai.segment import segment

    models = tmp_path / "models"
    models.mkdir()
    for name in ("model.pt", "model_config.json"):
        shutil.copy(ws["models"] / name, models / name)
    with pytest.raises(FileNotFoundError, match=r"localization\.pt: the localization network's weights are missing"):
        segment(str(BUNDLE), str(ws["image"]), str(tmp_path / "seg.nii.gz"), weights=str(models / "model.pt"),
                device="cpu", progress=False)
    assert not (tmp_path / "seg.nii.gz").exists()
