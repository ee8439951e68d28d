"""End-to-end runs of the SAU-Net bundle with the commands of BUNDLES.md, on small phantoms (CPU)."""

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

from spine_monai.data.phantoms import make_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
SCHEMA = REPO / "spine_monai" / "schemas" / "meta_schema.json"
SMALL = ["--features", "[4,8,16]", "--pixdim", "[4.0,2.5,2.5]", "--num_workers", "0"]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--patch_size", "[-1,32,32]", "--num_samples", "1", "--roi_size", "[-1,64,64]"]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    return proc


def _bundle(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", *args]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saunet")
    data = Path(make_phantom_dataset(n=4, out=root / "data", seed=3, folds=2, shape_scale=0.25, progress=False)).parent
    return {"root": root, "data": data, "models": root / "models", "eval": root / "eval"}


@pytest.fixture(scope="module")
def trained(workspace) -> Path:
    """Train one epoch with train.json, run from another working directory (configs must not rely on the cwd)."""
    w = workspace
    _run(_bundle("run", "--config_file", str(BUNDLE / "configs" / "train.json"), "--bundle_root", str(BUNDLE),
                 "--dataset_dir", str(w["data"]), "--ckpt_dir", str(w["models"]), "--output_dir", str(w["eval"]),
                 *TRAIN_SMALL), cwd=w["root"])
    ckpt = w["models"] / "model.pt"
    assert ckpt.is_file()
    return ckpt


def test_train_writes_plain_state_dict(trained):
    state = torch.load(trained, weights_only=True)
    assert any(k.startswith("isa.conv_prev") for k in state)


def test_evaluate_overlay(workspace, trained):
    w = workspace
    configs = json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "evaluate.json")])
    _run(_bundle("run", "--config_file", configs, "--bundle_root", str(BUNDLE), "--dataset_dir", str(w["data"]),
                 "--ckpt_dir", str(w["models"]), "--output_dir", str(w["eval"]), *SMALL), cwd=w["root"])
    raw = (w["eval"] / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(raw) == 1 + 2  # header + the two cases of fold 0
    preds = sorted((w["eval"] / "pred").glob("*_seg.nii.gz"))
    assert len(preds) == 2
    img = nib.load(str(w["data"] / "imagesTr" / preds[0].name.replace("_seg", "")))
    seg = nib.load(str(preds[0]))
    assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)


def test_inference_keeps_geometry(workspace, trained, tmp_path):
    w = workspace
    # an anisotropic, non-RAS input: the label must come back on the input's own grid
    src = nib.load(str(sorted((w["data"] / "imagesTr").glob("*.nii.gz"))[0]))
    las = nib.as_closest_canonical(src).slicer[::-1, :, :]
    img_path = tmp_path / "las.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(las.dataobj), las.affine), str(img_path))
    out_dir = tmp_path / "pred"
    _run(_bundle("run", "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                 "--dataset_dir", str(img_path), "--output_dir", str(out_dir),
                 "--handlers#0#load_path", str(trained), *SMALL), cwd=tmp_path)
    seg = nib.load(str(out_dir / "las_seg.nii.gz"))
    ref = nib.load(str(img_path))
    assert seg.shape == ref.shape
    assert np.allclose(seg.affine, ref.affine, atol=1e-4)
    assert nib.aff2axcodes(seg.affine) == ("L", "A", "S")
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
    assert sorted(os.listdir(out_dir)) == ["las_seg.nii.gz"]  # no temporary files left


def test_verify_metadata_and_net_in_out(tmp_path):
    _run(_bundle("verify_metadata", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                 "--filepath", str(SCHEMA)), cwd=tmp_path)
    _run(_bundle("verify_net_in_out", "network_def", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                 "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                 "--device", "cpu", "--any", "20"), cwd=tmp_path)


def test_ckpt_export_torchscript_matches(workspace, trained, tmp_path):
    ts = tmp_path / "model.ts"
    _run(_bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(trained),
                 "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                 "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                 "--features", "[4,8,16]"), cwd=tmp_path)
    from spine_monai.networks.nets.saunet import SAUNet

    net = SAUNet(features=(4, 8, 16)).eval()
    net.load_state_dict(torch.load(trained, weights_only=True))
    scripted = torch.jit.load(str(ts))
    x = torch.rand(1, 1, 11, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-4)


def test_two_process_gloo_training(workspace, tmp_path):
    w = workspace
    configs = json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "multi_gpu_train.json")])
    models = tmp_path / "models"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
          "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(BUNDLE),
          "--dataset_dir", str(w["data"]), "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "eval"),
          *TRAIN_SMALL], cwd=tmp_path, env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert (models / "model.pt").is_file()


@pytest.mark.parametrize("overlay, extra", [
    ("ablation_no_isa.json", []),
    ("baseline_unet2d.json", ["--unet2d_features", "[4,4,8,8,16,4]"]),
    ("baseline_unet3d.json", ["--unet3d_features", "[4,4,8,8,16,4]", "--patch_size", "[16,32,32]"]),
])
def test_overlays_train_and_infer(workspace, tmp_path, overlay, extra):
    w = workspace
    configs = json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / overlay)])
    models = tmp_path / "models"
    args = [*TRAIN_SMALL, *extra]
    _run(_bundle("run", "--config_file", configs, "--bundle_root", str(BUNDLE), "--dataset_dir", str(w["data"]),
                 "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "eval"), *args), cwd=tmp_path)
    configs = json.dumps([str(BUNDLE / "configs" / "inference.json"), str(BUNDLE / "configs" / overlay)])
    img = sorted((w["data"] / "imagesTr").glob("*.nii.gz"))[0]
    _run(_bundle("run", "--config_file", configs, "--bundle_root", str(BUNDLE), "--dataset_dir", str(img),
                 "--output_dir", str(tmp_path / "pred"), "--handlers#0#load_path", str(models / "model.pt"),
                 *SMALL, *extra), cwd=tmp_path)
    assert nib.load(str(next((tmp_path / "pred").glob("*_seg.nii.gz")))).shape == nib.load(str(img)).shape
