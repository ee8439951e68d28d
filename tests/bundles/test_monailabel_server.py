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

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
NAME = "saunet_spine_mri_segmentation"
BUNDLE = REPO / "bundles" / NAME
SMALL = {"features": [4, 8, 16], "pixdim": [4.0, 2.5, 2.5], "num_workers": 0, "patch_size": [-1, 32, 32],
         "num_samples": 1, "roi_size": [-1, 64, 64], "epochs": 1}
START_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 300

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("monailabel") is None,
                       reason="monailabel is not installed (optional; install recipe in docs/monailabel.md)"),
]


def small_bundle_copy(dst: Path) -> Path:
    """Copy the bundle to ``dst`` with small constants and a network whose head is zero (logits 0 everywhere)."""
    from spine_monai.bundle.record import write_record
    from spine_monai.networks.nets.saunet import SAUNet

    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("eval", "runs", "__pycache__", "model.*", "model_*"))
    path = dst / "configs" / "train.json"  # inference.json stays as shipped: it reads models/model_config.json
    config = json.loads(path.read_text())
    config.update({k: v for k, v in SMALL.items() if k in config})
    path.write_text(json.dumps(config, indent=4))
    torch.manual_seed(0)
    net = SAUNet(features=tuple(SMALL["features"]))
    with torch.no_grad():  # sigmoid(0) = 0.5 -> every voxel 1 after the threshold, until training moves the head
        net.head.weight.zero_()
        net.head.bias.zero_()
    (dst / "models").mkdir(exist_ok=True)
    torch.save(net.state_dict(), dst / "models" / "model.pt")
    write_record(dst / "models" / "model.pt", {k: SMALL[k] for k in ("pixdim", "roi_size", "features")}, (), dst)
    return dst


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, method: str = "GET", body: dict | None = None, timeout: float = REQUEST_TIMEOUT_S) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        assert resp.status == 200, f"{method} {url}: HTTP {resp.status}"
        return resp.read()


class Server:
    """A MONAI Label server process in its own process group, with its log file."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path, app: Path, studies: Path):
        self.proc, self.url, self.log, self.app, self.studies = proc, url, log, app, studies

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def call(self, path: str, method: str = "GET", body: dict | None = None) -> bytes:
        try:
            return _request(self.url + path, method, body)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}\n{self.log_tail()}") from e

    def infer(self, image_id: str, out: Path) -> nib.Nifti1Image:
        out.write_bytes(self.call(f"/infer/{NAME}?image={image_id}&output=image", "POST"))
        return nib.load(str(out))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group, SIGKILL it if it has not exited after 20 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the server we started (start_new_session=True)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    from spine_monai.data.phantoms import make_phantom_dataset

    root = tmp_path_factory.mktemp("monailabel")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
           "MONAI_LABEL_SESSION_PATH": str(root / "sessions")}  # not ~/.cache/monailabel
    # the monaibundle sample app ships in the wheel (<prefix>/monailabel/sample-apps); "apps --download" copies it
    subprocess.run([sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle",
                    "--output", str(root)], cwd=root, env=env, check=True, capture_output=True, timeout=120)
    app = root / "monaibundle"
    small_bundle_copy(app / "model" / NAME)

    # datastore layout of MONAI Label: images in the studies folder, labels in labels/final/ under the same name
    data = Path(make_phantom_dataset(n=4, out=root / "data", seed=0, folds=2, shape_scale=0.25,
                                     progress=False)).parent
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for img in sorted((data / "imagesTr").glob("*.nii.gz")):
        shutil.copy(img, studies / img.name)
        shutil.copy(data / "labelsBinTr" / img.name, studies / "labels" / "final" / img.name)
    src = nib.load(str(studies / "case_001.nii.gz"))  # anisotropic (about 3.7 x 3.2 x 3.2 mm), RAS
    las = nib.as_closest_canonical(src).slicer[::-1, :, :]  # LAS, unlabelled: inference only
    nib.save(nib.Nifti1Image(np.asarray(las.dataobj), las.affine), str(studies / "scan_las.nii.gz"))

    log = root / "server.log"
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port),
           "--conf", "models", NAME, "--conf", "zoo_source", "github", "--conf", "sam2", "false"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    srv = Server(proc, url, log, app, studies)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"MONAI Label server exited with {proc.returncode} during start:\n{srv.log_tail()}")
            try:
                _request(srv.url + "/info/", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"MONAI Label server not ready after {START_TIMEOUT_S} s:\n{srv.log_tail()}")
                time.sleep(1)
        yield srv
    finally:
        _stop(proc)


def test_info_lists_bundle(server):
    info = json.loads(server.call("/info/"))
    model = info["models"][NAME]
    assert model["type"] == "segmentation"
    assert model["labels"] == {"spine": 1}  # from metadata channel_def, background dropped
    assert model["dimension"] == 3
    assert NAME in info["trainers"]
    assert "sam_2d" not in info["models"]  # --conf sam2 false
    assert f"Uvicorn running on {server.url}" in server.log_tail(200_000)  # bound to the loopback address only


@pytest.mark.parametrize("image_id", ["case_000", "scan_las"])
def test_infer_returns_label_in_input_geometry(server, tmp_path, image_id):
    seg = server.infer(image_id, tmp_path / "seg.nii.gz")
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
    before = np.asarray(server.infer("case_000", tmp_path / "before.nii.gz").dataobj)
    assert before.min() == 1  # zero head: logits 0, sigmoid 0.5, threshold 0.5 -> all 1

    server.call(f"/train/{NAME}?run_sync=true", "POST",
                {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False})

    assert model_pt.stat().st_mtime_ns != before_mtime
    after_state = torch.load(model_pt, weights_only=True)  # still a plain state dict
    assert after_state.keys() == before_state.keys()
    assert not torch.equal(after_state["head.weight"], before_state["head.weight"])

    seg = server.infer("case_000", tmp_path / "after.nii.gz")
    after = np.asarray(seg.dataobj)
    assert after.shape == before.shape
    assert not np.array_equal(after, before)
    assert "Reload model from cache" in server.log_tail(200_000)
    record = json.loads((model_pt.parent / "model_config.json").read_text())  # training wrote the new record
    assert record["settings"]["features"] == SMALL["features"] and record["metric"]["name"] == "val_mean_dice"
