"""End-to-end runs of the SEAM ultrasound VPI bundle with the commands of BUNDLES.md, on tiny US phantoms (CPU).

One module-scoped training run (1 epoch, ResNet-18 FPN of 32 channels, 64 x 256 inputs) serves the checks of
evaluate, inference (PNG and 2D NIfTI, geometry kept), ``segment``, exports and the overlays; kept small so that the
bundle's share of the CI run stays within its budget.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import REPO, BundleContract, bundle_cmd, bundle_fixtures, overrides, run
from PIL import Image

BUNDLE = REPO / "bundles" / "seam_spine_us_segmentation"
NET = ["--encoder_name", "resnet18", "--pyramid_channels", "32", "--segmentation_channels", "32"]
SMALL = [*NET, "--spatial_size", "[64,256]", "--num_workers", "0"]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--patch_size", "[64,128]", "--batch_size", "2", "--val_interval", "1"]

pytestmark = pytest.mark.slow

workspace, trained = bundle_fixtures(BUNDLE, modality="us", train_args=TRAIN_SMALL)


class TestContract(BundleContract):
    bundle = BUNDLE
    small = SMALL
    train_args = TRAIN_SMALL
    state_key = "seam.key"  # the SEAM key mapping varphi is part of the model
    record_settings = {"encoder_name": "resnet18", "spatial_size": [64, 256]}
    images, suffix = "images", ".png"
    net_args = NET
    example_shape = (1, 1, 64, 256)

    def check_label(self, label: Path, image: Path) -> None:
        src = Image.open(image)
        seg = np.asarray(Image.open(label))
        assert seg.shape == (src.height, src.width) and set(np.unique(seg)) <= {0, 1, 2, 3}


def _images(w: dict[str, Path]) -> list[Path]:
    return sorted((w["data"] / "images").glob("*.png"))


def test_inference_png_and_2d_nifti_keep_geometry(workspace, trained, tmp_path):
    """Without overrides: the network settings come from model_config.json beside the weights."""
    w = workspace
    png = _images(w)[0]
    arr = np.asarray(Image.open(png)).T.astype(np.float32)  # (X, Y) = (columns, rows), as MONAI reads a PNG
    aff = np.diag([0.3, 0.4, 1.0, 1.0])
    aff[:3, 3] = [5.0, -7.0, 0.0]
    inputs = tmp_path / "inputs"  # one run over a folder holding both formats
    inputs.mkdir()
    shutil.copy(png, inputs / png.name)
    nib.save(nib.Nifti1Image(arr, aff), str(inputs / "vpi.nii.gz"))
    out = tmp_path / "pred"
    run(bundle_cmd("run", "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                   "--dataset_dir", str(inputs), "--output_dir", str(out), "--ckpt_path", str(trained)), cwd=tmp_path)
    seg_png = np.asarray(Image.open(out / f"{png.stem}_seg.png"))
    assert seg_png.shape == np.asarray(Image.open(png)).shape
    seg_nii = nib.load(str(out / "vpi_seg.nii.gz"))
    assert seg_nii.shape == arr.shape and np.allclose(seg_nii.affine, aff, atol=1e-4)
    # the same pixels through both formats give the same labels (NIfTI array is the transposed PNG)
    np.testing.assert_array_equal(np.asarray(seg_nii.dataobj).T, seg_png)
    assert sorted(os.listdir(out)) == sorted([f"{png.stem}_seg.png", "vpi_seg.nii.gz"])  # no temporary files


def test_segment_png_with_report(workspace, trained, tmp_path):
    from spine_monai.segment import segment

    png = _images(workspace)[0]
    out = segment("seam_spine_us_segmentation", str(png), str(tmp_path / "seg.png"), weights=str(trained),
                  overlay=str(tmp_path / "overlay.png"), volumes_json=str(tmp_path / "report.json"), progress=False)
    assert np.asarray(Image.open(out)).shape == np.asarray(Image.open(png)).shape
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["pixels"]) == {"rib", "thoracic", "lumbar"}
    assert "cobb_deg" in report["curvature"]
    assert Image.open(tmp_path / "overlay.png").size[0] > 0
    with pytest.raises(ValueError, match="must end with .png"):
        segment("seam_spine_us_segmentation", str(png), str(tmp_path / "seg.nii.gz"), weights=str(trained))


def _write_png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("case, match", [
    ("wide", "height / width"),
    ("tiny", "too small"),
    ("volume", "3D volume"),
    ("constant", "constant"),
])
def test_segment_bad_inputs(trained, tmp_path, case, match):
    from spine_monai.segment import segment

    rng = np.random.default_rng(0)
    if case == "wide":
        src = _write_png(tmp_path / "wide.png", rng.integers(0, 255, (256, 1024), dtype=np.uint8))
    elif case == "tiny":
        src = _write_png(tmp_path / "tiny.png", rng.integers(0, 255, (24, 8), dtype=np.uint8))
    elif case == "constant":
        src = _write_png(tmp_path / "flat.png", np.full((512, 128), 7, dtype=np.uint8))
    else:
        src = tmp_path / "vol.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((64, 256, 12)).astype(np.float32), np.eye(4)), str(src))
    out = tmp_path / ("seg.nii.gz" if case == "volume" else "seg.png")
    with pytest.raises(ValueError, match=match):
        segment("seam_spine_us_segmentation", str(src), str(out), weights=str(trained), progress=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_segment_converts_rgb_and_16bit(workspace, trained, tmp_path):
    """Documented conversions: an RGB PNG of a grey image and a 16-bit PNG give the grey 8-bit image's labels."""
    from spine_monai.segment import segment

    png = _images(workspace)[0]
    grey = np.asarray(Image.open(png))
    ref = np.asarray(Image.open(segment("seam_spine_us_segmentation", str(png), str(tmp_path / "ref.png"),
                                        weights=str(trained), progress=False)))
    rgb = _write_png(tmp_path / "rgb.png", np.repeat(grey[..., None], 3, axis=2))
    wide = tmp_path / "g16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(wide)  # 0..65535, same contrast
    for src in (rgb, wide):
        got = np.asarray(Image.open(segment("seam_spine_us_segmentation", str(src), str(tmp_path / f"{src.stem}_s.png"),
                                            weights=str(trained), progress=False)))
        assert (got == ref).mean() > 0.99


def test_onnx_export_is_dynamic(trained, tmp_path):
    """ONNX (``python -m spine_monai export``) agrees with the eager network at another size than the export's (the
    SEAM division by the number of positions is symbolic); TorchScript is the contract's test."""
    import onnxruntime as ort

    from spine_monai.export import export_cli, load_network

    onnx_path = tmp_path / "model.onnx"
    export_cli(str(BUNDLE), format="onnx", weights=str(trained), out=str(onnx_path))
    net = load_network(BUNDLE, trained).eval()
    x2 = torch.rand(1, 1, 96, 320)  # the ONNX graph is dynamic in multiples of 32
    with torch.no_grad():
        ref2 = net(x2)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x2.numpy()})[0]
    np.testing.assert_allclose(got, ref2.numpy(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("overlay", ["baseline_fpn.json", "baseline_unet.json", "baseline_danet.json",
                                     "baseline_emanet.json", "baseline_nonlocal.json", "ablation_wo_al.json",
                                     "ablation_wo_ss.json"])
def test_overlays_train_and_infer(workspace, tmp_path, overlay):
    """Every Table 1 row trains with train.json + its overlay and segments with inference.json + the record."""
    from spine_monai.bundle.runner import train_bundle
    from spine_monai.segment import segment

    w = workspace
    extra = ["--unet_features", "[4,4,8,8,16,4]"] if overlay == "baseline_unet.json" else []
    models = tmp_path / "models"
    # in this process (the same configs as monai.bundle run, which the contract's tests run as a command)
    train_bundle(BUNDLE, w["data"], overlays=[overlay], progress=False, ckpt_dir=str(models),
                 output_dir=str(tmp_path / "eval"), **overrides([*TRAIN_SMALL, *extra]))
    record = json.loads((models / "model_config.json").read_text())

    png = _images(w)[0]
    out = segment("seam_spine_us_segmentation", str(png), str(tmp_path / "seg.png"),
                  weights=str(models / "model.pt"), progress=False)
    assert np.asarray(Image.open(out)).shape == np.asarray(Image.open(png)).shape
    if overlay.startswith("baseline"):
        assert record["overlays"] == [overlay[: -len(".json")]]


def test_crossval_scores_per_class(workspace, tmp_path):
    """crossval on PNG labels: per-class Dice/Jaccard and the runtime per image reach the summary."""
    from spine_monai.evaluation.crossval import crossval

    out = crossval("seam_spine_us_segmentation", str(workspace["data"]), folds=2, max_folds=1, out=tmp_path / "cv",
                   progress=False, val_fraction=0.5, epochs=1, encoder_name="resnet18", pyramid_channels=32,
                   segmentation_channels=32, spatial_size=[64, 256], patch_size=[64, 128], batch_size=2,
                   num_workers=0)
    summary = json.loads((Path(out) / "summary.json").read_text())
    for key in ("dice", "dice_rib", "dice_thoracic", "dice_lumbar", "jaccard_lumbar", "runtime_s"):
        assert key in summary["across_folds"], key
    assert 0.0 <= summary["across_folds"]["dice_rib"]["mean"] <= 1.0
