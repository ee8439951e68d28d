"""End-to-end runs of the SEAM ultrasound VPI bundle with the commands of BUNDLES.md, on tiny US phantoms (CPU).

One module-scoped training run (1 epoch, ResNet-18 FPN of 32 channels, 64 x 256 inputs) serves the checks of
evaluate, inference (PNG and 2D NIfTI, geometry kept), ``segment``, exports and the overlays; kept small so that the
bundle's share of the CI run stays within its budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "seam_spine_us_segmentation"
SCHEMA = REPO / "spine_monai" / "schemas" / "meta_schema.json"
NET = ["--encoder_name", "resnet18", "--pyramid_channels", "32", "--segmentation_channels", "32"]
SMALL = [*NET, "--spatial_size", "[64,256]", "--num_workers", "0"]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--patch_size", "[64,128]", "--batch_size", "2", "--val_interval", "1"]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600,
         ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"{' '.join(args)}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    return proc


def _bundle(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", *args]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    from spine_monai.data.phantoms import make_phantom_dataset

    root = tmp_path_factory.mktemp("seam")
    data = Path(make_phantom_dataset(modality="us", n=4, out=root / "data", seed=3, folds=2, shape_scale=0.25,
                                     progress=False)).parent
    return {"root": root, "data": data, "models": root / "models", "eval": root / "eval"}


@pytest.fixture(scope="module")
def trained(workspace) -> Path:
    """One epoch with train.json, run from another working directory."""
    w = workspace
    _run(_bundle("run", "--config_file", str(BUNDLE / "configs" / "train.json"), "--bundle_root", str(BUNDLE),
                 "--dataset_dir", str(w["data"]), "--ckpt_dir", str(w["models"]), "--output_dir", str(w["eval"]),
                 *TRAIN_SMALL), cwd=w["root"])
    ckpt = w["models"] / "model.pt"
    assert ckpt.is_file()
    return ckpt


def _images(w: dict[str, Path]) -> list[Path]:
    return sorted((w["data"] / "images").glob("*.png"))


def test_train_writes_state_dict_and_record(trained):
    state = torch.load(trained, weights_only=True)
    assert any(k.startswith("seam.key") for k in state)  # the SEAM key mapping varphi is part of the model
    record = json.loads((trained.parent / "model_config.json").read_text())
    assert record["settings"]["encoder_name"] == "resnet18" and record["settings"]["spatial_size"] == [64, 256]


def test_evaluate_overlay_writes_png_labels(workspace, trained):
    w = workspace
    configs = json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "evaluate.json")])
    _run(_bundle("run", "--config_file", configs, "--bundle_root", str(BUNDLE), "--dataset_dir", str(w["data"]),
                 "--ckpt_dir", str(w["models"]), "--output_dir", str(w["eval"]), *SMALL), cwd=w["root"])
    raw = (w["eval"] / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(raw) == 1 + 2  # header + the two cases of fold 0
    preds = sorted((w["eval"] / "pred").glob("*_seg.png"))
    assert len(preds) == 2
    src = Image.open(w["data"] / "images" / preds[0].name.replace("_seg", ""))
    seg = np.asarray(Image.open(preds[0]))
    assert seg.shape == (src.height, src.width) and set(np.unique(seg)) <= {0, 1, 2, 3}


def test_inference_png_and_2d_nifti_keep_geometry(workspace, trained, tmp_path):
    """Without overrides: the network settings come from model_config.json beside the weights."""
    w = workspace
    png = _images(w)[0]
    arr = np.asarray(Image.open(png)).T.astype(np.float32)  # (X, Y) = (columns, rows), as MONAI reads a PNG
    aff = np.diag([0.3, 0.4, 1.0, 1.0])
    aff[:3, 3] = [5.0, -7.0, 0.0]
    nii = tmp_path / "vpi.nii.gz"
    nib.save(nib.Nifti1Image(arr, aff), str(nii))
    out = tmp_path / "pred"
    for src in (png, nii):
        _run(_bundle("run", "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                     "--dataset_dir", str(src), "--output_dir", str(out), "--ckpt_path", str(trained)), cwd=tmp_path)
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


def test_verify_metadata_and_net_in_out(tmp_path):
    _run(_bundle("verify_metadata", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                 "--filepath", str(SCHEMA)), cwd=tmp_path)
    _run(_bundle("verify_net_in_out", "network_def", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                 "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                 "--device", "cpu", *NET), cwd=tmp_path)


def test_exports_match_eager(trained, tmp_path):
    """TorchScript (MONAI ckpt_export) and ONNX agree with the eager network on a VPI-shaped input."""
    import onnxruntime as ort

    from spine_monai.export import load_network

    ts = tmp_path / "model.ts"
    _run(_bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(trained),
                 "--ckpt_path", str(trained), "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                 "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE)),
         cwd=tmp_path)
    onnx_path = tmp_path / "model.onnx"
    _run([sys.executable, "-m", "spine_monai", "export", str(BUNDLE), "--format", "onnx", "--weights", str(trained),
          "--out", str(onnx_path)], cwd=tmp_path)
    net = load_network(BUNDLE, trained).eval()
    x = torch.rand(1, 1, 64, 256)
    with torch.no_grad():
        ref = net(x)
        torch.testing.assert_close(torch.jit.load(str(ts))(x), ref, atol=1e-4, rtol=1e-4)
    x2 = torch.rand(1, 1, 96, 320)  # another size: the ONNX graph is dynamic in multiples of 32
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
    w = workspace
    extra = ["--unet_features", "[4,4,8,8,16,4]"] if overlay == "baseline_unet.json" else []
    configs = json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / overlay)])
    models = tmp_path / "models"
    _run(_bundle("run", "--config_file", configs, "--bundle_root", str(BUNDLE), "--dataset_dir", str(w["data"]),
                 "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "eval"), *TRAIN_SMALL, *extra),
         cwd=tmp_path)
    record = json.loads((models / "model_config.json").read_text())
    from spine_monai.segment import segment

    png = _images(w)[0]
    out = segment("seam_spine_us_segmentation", str(png), str(tmp_path / "seg.png"),
                  weights=str(models / "model.pt"), progress=False)
    assert np.asarray(Image.open(out)).shape == np.asarray(Image.open(png)).shape
    if overlay.startswith("baseline"):
        assert record["overlays"] == [overlay[: -len(".json")]]


def test_two_process_gloo_training(workspace, tmp_path):
    w = workspace
    configs = json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "multi_gpu_train.json")])
    models = tmp_path / "models"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
          "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(BUNDLE),
          "--dataset_dir", str(w["data"]), "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "eval"),
          *TRAIN_SMALL], cwd=tmp_path, env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert (models / "model.pt").is_file()


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
