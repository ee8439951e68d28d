"""The contract every bundle passes, written once: the commands of BUNDLES.md run on tiny phantoms, and a real MONAI
Label server. Not a test module itself (no ``test_`` prefix); a bundle's test module uses it in three lines::

    from contract import BundleContract, bundle_fixtures
    workspace, trained = bundle_fixtures(BUNDLE, modality="us", train_args=TRAIN_SMALL)

    class TestContract(BundleContract):
        bundle, small, train_args, ... = ...

``bundle_fixtures`` makes the module-scoped fixtures ``workspace`` (tiny phantoms of the bundle's modality) and
``trained`` (one epoch with ``train.json``, run from another working directory: configs must not rely on the cwd),
shared by the contract's tests and the bundle's own. :func:`serve_monailabel` starts the monaibundle sample app of
MONAI Label 0.8.5 on 127.0.0.1 with a bundle copy and a datastore, and :class:`MonaiLabelContract` checks its
``/info``. Each bundle module keeps only what is its own: geometry of its inputs, its overlays, its bad inputs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "spine_monai" / "schemas" / "meta_schema.json"
START_TIMEOUT_S = 240

#: ``pytestmark`` of the MONAI Label server tests: slow, and skipped where the optional monailabel is not installed.
MONAILABEL_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("monailabel") is None,
                       reason="monailabel is not installed (optional; install recipe in docs/monailabel.md)"),
]
REQUEST_TIMEOUT_S = 300

__all__ = ["run", "bundle_cmd", "overrides", "bundle_fixtures", "BundleContract", "Volume3DContract", "Server",
           "serve_monailabel", "install_small_bundle", "small_networks", "small_settings", "write_small_weights",
           "phantom_studies", "MONAILABEL_MARKS", "MonaiLabelContract", "REPO", "SCHEMA"]


def run(args: Sequence[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600,
        ok: bool = True) -> subprocess.CompletedProcess:
    """Run a command with one torch thread; with ``ok``, fail with its output unless it exits 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"{' '.join(args)}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    return proc


def bundle_cmd(*args: str) -> list[str]:
    """``python -m monai.bundle <args>``."""
    return [sys.executable, "-m", "monai.bundle", *args]


def overrides(args: Sequence[str]) -> dict[str, Any]:
    """``["--key", "value", ...]`` as keyword overrides (values parsed as JSON where they are JSON)."""
    out: dict[str, Any] = {}
    for key, value in zip(args[::2], args[1::2], strict=True):
        try:
            out[key.lstrip("-")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.lstrip("-")] = value
    return out


def bundle_fixtures(bundle: Path, modality: str, train_args: Sequence[str], **phantom_args: Any) -> tuple[Any, Any]:
    """The module-scoped fixtures ``workspace`` and ``trained`` of a bundle's test module (assign both names);
    ``phantom_args`` go to :func:`spine_monai.data.phantoms.make_phantom_dataset` (``binary=False`` for the
    multi-class MRI labels)."""

    @pytest.fixture(scope="module")
    def workspace(tmp_path_factory) -> dict[str, Path]:
        from spine_monai.data.phantoms import make_phantom_dataset

        root = tmp_path_factory.mktemp(bundle.name)
        data = Path(make_phantom_dataset(modality=modality, n=4, out=root / "data", seed=3, folds=2,
                                         shape_scale=0.25, progress=False, **phantom_args)).parent
        return {"root": root, "data": data, "models": root / "models", "eval": root / "eval"}

    @pytest.fixture(scope="module")
    def trained(workspace) -> Path:
        w = workspace
        run(bundle_cmd("run", "--config_file", str(bundle / "configs" / "train.json"), "--bundle_root", str(bundle),
                       "--dataset_dir", str(w["data"]), "--ckpt_dir", str(w["models"]), "--output_dir",
                       str(w["eval"]), *train_args), cwd=w["root"])
        ckpt = w["models"] / "model.pt"
        assert ckpt.is_file()
        return ckpt

    return workspace, trained


class BundleContract:
    """BUNDLES.md's commands on one bundle: train (state dict + record), the evaluate overlay, metadata and
    network checks, TorchScript export against eager, and 2-process gloo training. Subclass as ``Test...`` in the
    bundle's module (which defines ``workspace`` and ``trained`` with :func:`bundle_fixtures`) and set:"""

    bundle: ClassVar[Path]
    small: ClassVar[Sequence[str]]  # overrides that size evaluate / network checks
    train_args: ClassVar[Sequence[str]]  # ``small`` plus the training ones (1 epoch, ...)
    state_key: ClassVar[str]  # a state-dict key prefix of the method's own block
    record_settings: ClassVar[dict[str, Any]]  # settings the record must hold after training with train_args
    images: ClassVar[str]  # image folder of the phantom dataset
    suffix: ClassVar[str]  # image / label file suffix
    net_args: ClassVar[Sequence[str]] = ()  # extra arguments of verify_net_in_out
    example_shape: ClassVar[tuple[int, ...]]  # an input for the TorchScript check (batch, channel, spatial...)

    def test_train_writes_state_dict_and_record(self, trained):
        state = torch.load(trained, weights_only=True)
        assert any(k.startswith(self.state_key) for k in state), sorted(state)[:10]
        record = json.loads((trained.parent / "model_config.json").read_text())
        for key, value in self.record_settings.items():
            assert record["settings"][key] == value, key
        assert record["metric"]["name"] == "val_mean_dice"

    def test_evaluate_overlay_writes_labels(self, workspace, trained):
        w = workspace
        configs = json.dumps([str(self.bundle / "configs" / "train.json"),
                              str(self.bundle / "configs" / "evaluate.json")])
        run(bundle_cmd("run", "--config_file", configs, "--bundle_root", str(self.bundle), "--dataset_dir",
                       str(w["data"]), "--ckpt_dir", str(w["models"]), "--output_dir", str(w["eval"]), *self.small),
            cwd=w["root"])
        raw = (w["eval"] / "val_mean_dice_raw.csv").read_text().splitlines()
        assert len(raw) == 1 + 2  # header + the two cases of fold 0
        preds = sorted((w["eval"] / "pred").glob(f"*_seg{self.suffix}"))
        assert len(preds) == 2
        self.check_label(preds[0], w["data"] / self.images / preds[0].name.replace("_seg", ""))

    def check_label(self, label: Path, image: Path) -> None:
        """The label is on the image's grid (overridden per dimension)."""
        raise NotImplementedError

    def test_verify_metadata_and_net_in_out(self, tmp_path):
        meta = str(self.bundle / "configs" / "metadata.json")
        run(bundle_cmd("verify_metadata", "--meta_file", meta, "--filepath", str(SCHEMA)), cwd=tmp_path)
        run(bundle_cmd("verify_net_in_out", "network_def", "--meta_file", meta, "--config_file",
                       str(self.bundle / "configs" / "inference.json"), "--bundle_root", str(self.bundle),
                       "--device", "cpu", *self.net_args), cwd=tmp_path)

    def test_ckpt_export_torchscript_matches_eager(self, trained, tmp_path):
        """MONAI's ``ckpt_export`` with ``--ckpt_path`` (so inference.json reads the weights' record) agrees with
        the eager network that :func:`spine_monai.export.load_network` builds from the same record."""
        from spine_monai.export import load_network

        ts = tmp_path / "model.ts"
        run(bundle_cmd("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(trained),
                       "--ckpt_path", str(trained), "--meta_file", str(self.bundle / "configs" / "metadata.json"),
                       "--config_file", str(self.bundle / "configs" / "inference.json"), "--bundle_root",
                       str(self.bundle)), cwd=tmp_path)
        net = load_network(self.bundle, trained).eval()
        x = torch.rand(*self.example_shape)
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.load(str(ts))(x), net(x), atol=1e-4, rtol=1e-4)

    def test_two_process_gloo_training(self, workspace, tmp_path):
        w = workspace
        configs = json.dumps([str(self.bundle / "configs" / "train.json"),
                              str(self.bundle / "configs" / "multi_gpu_train.json")])
        models = tmp_path / "models"
        run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
             "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(self.bundle),
             "--dataset_dir", str(w["data"]), "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "eval"),
             *self.train_args], cwd=tmp_path, env_extra={"CUDA_VISIBLE_DEVICES": ""})
        assert (models / "model.pt").is_file()


class Volume3DContract(BundleContract):
    """A 3D bundle's contract, plus: inference on an anisotropic LAS copy of a phantom returns the label on the
    input's own grid (orientation, affine, shape), with the settings from the record alone, leaving no temporary
    file. ``label_values``: the values a label may hold."""

    label_values: ClassVar[set[int]]

    def check_label(self, label: Path, image: Path) -> None:
        import nibabel as nib
        import numpy as np

        seg, img = nib.load(str(label)), nib.load(str(image))
        assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= self.label_values

    def test_inference_keeps_geometry(self, workspace, trained, tmp_path):
        import nibabel as nib
        import numpy as np

        src = nib.load(str(sorted((workspace["data"] / self.images).glob(f"*{self.suffix}"))[0]))
        las = nib.as_closest_canonical(src).slicer[::-1, :, :]
        img_path = tmp_path / "las.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(las.dataobj), las.affine), str(img_path))
        out_dir = tmp_path / "pred"
        run(bundle_cmd("run", "--config_file", str(self.bundle / "configs" / "inference.json"), "--bundle_root",
                       str(self.bundle), "--dataset_dir", str(img_path), "--output_dir", str(out_dir),
                       "--ckpt_path", str(trained)), cwd=tmp_path)
        assert nib.aff2axcodes(nib.load(str(out_dir / "las_seg.nii.gz")).affine) == ("L", "A", "S")
        self.check_label(out_dir / "las_seg.nii.gz", img_path)
        assert sorted(os.listdir(out_dir)) == ["las_seg.nii.gz"]  # no temporary files left


# --- MONAI Label ------------------------------------------------------------------------------------------------


def _small_parser(bundle: Path, small: Mapping[str, Any]) -> Any:
    """MONAI's parser over the bundle's train.json with the ``small`` constants (nothing instantiated yet)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(bundle), **{k: v for k, v in small.items() if k in parser.config}})
    return parser


def small_networks(bundle: Path, small: Mapping[str, Any], *ids: str) -> list[torch.nn.Module]:
    """The networks ``ids`` (e.g. ``"network_def"``, ``"localization_def"``) of the bundle's train.json with the
    ``small`` constants, built by MONAI's parser from the bundle's own definitions (so their weights fit it)."""
    parser = _small_parser(bundle, small)
    return [parser.get_parsed_content(i, instantiate=True) for i in ids]


def small_settings(bundle: Path, small: Mapping[str, Any], key: str = "model_settings") -> dict[str, Any]:
    """The settings entry ``key`` of the bundle's train.json with the ``small`` constants: what training records
    (``model_settings`` for ``model.pt``; a second network's own entry, e.g. ``localization_settings``)."""
    return dict(_small_parser(bundle, small).get_parsed_content(key))


def write_small_weights(models: Path, weights: Mapping[str, tuple[torch.nn.Module, Mapping[str, Any]]],
                        bundle_root: Path | None = None) -> Path:
    """Each ``weights[file] = (net, settings)`` as ``models/<file>`` (state dict) with its record of ``settings``
    (a two-network bundle needs both, e.g. ``model.pt`` and ``localization.pt``); returns the folder."""
    from spine_monai.bundle.record import write_record

    models.mkdir(parents=True, exist_ok=True)
    for filename, (net, settings) in weights.items():
        torch.save(net.state_dict(), models / filename)
        write_record(models / filename, settings, (), bundle_root)
    return models


def install_small_bundle(bundle: Path, dst: Path, small: dict[str, Any], net: torch.nn.Module,
                         settings: dict[str, Any],
                         extra_weights: Mapping[str, tuple[torch.nn.Module, Mapping[str, Any]]] | None = None) -> Path:
    """Copy ``bundle`` to ``dst`` with the ``small`` constants in its train.json (inference.json stays as shipped:
    it reads the record) and ``net``'s weights as ``models/model.pt`` with their record of ``settings``;
    ``extra_weights`` (``{file: (net, settings)}``, e.g. a localisation net's ``localization.pt``) are written beside
    it with their own records."""
    import shutil

    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("eval", "runs", "__pycache__", "model.*", "model_*"))
    path = dst / "configs" / "train.json"
    config = json.loads(path.read_text())
    config.update({k: v for k, v in small.items() if k in config})
    path.write_text(json.dumps(config, indent=4))
    write_small_weights(dst / "models", {"model.pt": (net, settings), **(extra_weights or {})}, dst)
    return dst


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, method: str = "GET", body: dict | None = None, timeout: float = REQUEST_TIMEOUT_S) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        assert resp.status == 200, f"{method} {url}: HTTP {resp.status}"
        return resp.read()


class Server:
    """A MONAI Label server process in its own process group, with its log file."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path, app: Path, studies: Path, name: str):
        self.proc, self.url, self.log, self.app, self.studies, self.name = proc, url, log, app, studies, name

    @property
    def model_pt(self) -> Path:
        return self.app / "model" / self.name / "models" / "model.pt"

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def call(self, path: str, method: str = "GET", body: dict | None = None) -> bytes:
        try:
            return request(self.url + path, method, body)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}\n{self.log_tail()}") from e

    def infer_bytes(self, image_id: str) -> bytes:
        return self.call(f"/infer/{self.name}?image={image_id}&output=image", "POST")

    def train_one_epoch(self) -> None:
        self.call(f"/train/{self.name}?run_sync=true", "POST",
                  {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False})


def stop(proc: subprocess.Popen) -> None:
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


def phantom_studies(studies: Path, modality: str = "mri", images: str = "imagesTr", labels: str = "labelsBinTr",
                    pattern: str = "*.nii.gz", **phantom_args: Any) -> None:
    """Fill a MONAI Label datastore with four tiny phantoms: images in ``studies``, their labels (the dataset's
    ``labels`` folder) in ``studies/labels/final`` under the same names."""
    import shutil

    from spine_monai.data.phantoms import make_phantom_dataset

    data = Path(make_phantom_dataset(modality=modality, n=4, out=studies.parent / "data", seed=0, folds=2,
                                     shape_scale=0.25, progress=False, **phantom_args)).parent
    for img in sorted((data / images).glob(pattern)):
        shutil.copy(img, studies / img.name)
        shutil.copy(data / labels / img.name, studies / "labels" / "final" / img.name)


@contextmanager
def serve_monailabel(root: Path, name: str, install_bundle: Callable[[Path], Any],
                     fill_studies: Callable[[Path], Any]) -> Iterator[Server]:
    """A running MONAI Label server (monaibundle app, ``--conf models <name>``) on 127.0.0.1.

    ``install_bundle(dst)`` writes the bundle folder into the app's ``model/<name>``; ``fill_studies(studies)``
    writes the datastore (images in the folder, labels in ``labels/final/`` under the same names).
    """
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
           "MONAI_LABEL_SESSION_PATH": str(root / "sessions")}  # not ~/.cache/monailabel
    # the monaibundle sample app ships in the wheel (<prefix>/monailabel/sample-apps); "apps --download" copies it
    subprocess.run([sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle",
                    "--output", str(root)], cwd=root, env=env, check=True, capture_output=True, timeout=120)
    app = root / "monaibundle"
    install_bundle(app / "model" / name)
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    fill_studies(studies)
    log = root / "server.log"
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port),
           "--conf", "models", name, "--conf", "zoo_source", "github", "--conf", "sam2", "false"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    srv = Server(proc, f"http://127.0.0.1:{port}", log, app, studies, name)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"MONAI Label server exited with {proc.returncode} during start:\n{srv.log_tail()}")
            try:
                request(srv.url + "/info/", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"MONAI Label server not ready after {START_TIMEOUT_S} s:\n{srv.log_tail()}")
                time.sleep(1)
        yield srv
    finally:
        stop(proc)


class MonaiLabelContract:
    """What MONAI Label must show of every bundle. The module defines a ``server`` fixture with
    :func:`serve_monailabel`; the subclass sets the label names and the dimension."""

    name: ClassVar[str]
    labels: ClassVar[dict[str, int]]  # from metadata channel_def, background dropped
    dimension: ClassVar[int]

    def test_info_lists_bundle(self, server):
        info = json.loads(server.call("/info/"))
        model = info["models"][self.name]
        assert model["type"] == "segmentation"
        assert model["labels"] == self.labels, model["labels"]
        assert model["dimension"] == self.dimension
        assert self.name in info["trainers"]
        assert "sam_2d" not in info["models"]  # --conf sam2 false
        assert f"Uvicorn running on {server.url}" in server.log_tail(200_000)  # bound to the loopback address only
