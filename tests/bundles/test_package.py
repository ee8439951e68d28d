"""``package_bundle``: checks, model-zoo zip layout, offline install with ``monai.bundle download`` and refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import pytest
import torch

from spine_monai.bundle.package import REQUIRED_FILES, check_bundle, package_bundle
from spine_monai.bundle.zipcheck import validate_bundle_zip
from spine_monai.networks.nets.saunet import SAUNet

REPO = Path(__file__).resolve().parents[2]
NAME = "saunet_spine_mri_segmentation"
BUNDLE = REPO / "bundles" / NAME
SMALL = {"features": [4, 8, 16], "pixdim": [4.0, 2.5, 2.5], "num_workers": 0, "roi_size": [-1, 64, 64]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def _rewrite(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=4))


@pytest.fixture()
def bundle(tmp_path) -> Path:
    """A copy of the bundle with small constants, small random weights and run outputs that must not be packaged."""
    root = tmp_path / "src" / NAME
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("eval", "runs", "__pycache__", "model.*"))
    for f in REQUIRED_FILES:  # docs written elsewhere may still be missing; test_repository_bundle_passes checks them
        if not (root / f).exists():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            (root / f).write_text("placeholder\n")
    for cfg in ("train.json", "inference.json"):
        _rewrite(root / "configs" / cfg, **{k: v for k, v in SMALL.items() if k in json.loads(
            (root / "configs" / cfg).read_text())})
    (root / "models").mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(SAUNet(features=tuple(SMALL["features"])).state_dict(), root / "models" / "model.pt")
    # things a run leaves behind
    for junk in ("eval/metrics.csv", "runs/events.out", "configs/__pycache__/x.pyc", "models/model_key_metric=0.5.pt",
                 ".DS_Store", "docs/.notes.swp"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    return root


def _expected_members(root: Path) -> set[str]:
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    junk = {"eval/metrics.csv", "runs/events.out", "configs/__pycache__/x.pyc", "models/model_key_metric=0.5.pt",
            ".DS_Store", "docs/.notes.swp"}
    hidden = {f for f in files if any(part.startswith(".") for part in f.split("/"))}  # e.g. models/.gitkeep
    return {f"{NAME}/{f}" for f in files - junk - hidden}


def test_zip_layout(bundle, tmp_path):
    out = package_bundle(str(bundle), out_dir=str(tmp_path / "dist"))
    assert Path(out) == tmp_path / "dist" / f"{NAME}_v0.1.0.zip"
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
        assert names == _expected_members(bundle)
        assert f"{NAME}/models/model.pt" in names and f"{NAME}/configs/inference.json" in names
        for info in infos:
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.extra == b""
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert (info.external_attr >> 16) & 0o170000 == 0o100000  # regular file
        assert zf.read(f"{NAME}/configs/train.json") == (bundle / "configs" / "train.json").read_bytes()
        assert zf.testzip() is None
    name, members = validate_bundle_zip(out)
    assert name == NAME and len(members) == len(names)
    assert not list((tmp_path / "dist").glob(".*partial"))


def test_zip_is_reproducible_and_weights_optional(bundle, tmp_path):
    a = package_bundle(str(bundle), out_dir=str(tmp_path / "a"))
    b = package_bundle(str(bundle), out_dir=str(tmp_path / "b"), run_checks=False)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    c = package_bundle(str(bundle), out_dir=str(tmp_path / "c"), run_checks=False, include_weights=False)
    with zipfile.ZipFile(c) as zf:
        names = zf.namelist()
    assert not [n for n in names if "/models/" in n]
    assert f"{NAME}/configs/metadata.json" in names


def test_out_dir_inside_bundle_is_not_packed(bundle):
    first = package_bundle(str(bundle), out_dir=str(bundle / "dist"), run_checks=False)
    second = package_bundle(str(bundle), out_dir=str(bundle / "dist"), run_checks=False)
    assert first == second
    with zipfile.ZipFile(second) as zf:
        assert not [n for n in zf.namelist() if "/dist/" in n]


def test_refuses_missing_file(bundle, tmp_path):
    (bundle / "configs" / "inference.json").unlink()
    with pytest.raises(ValueError, match="required-files.*configs/inference.json"):
        package_bundle(str(bundle), out_dir=str(tmp_path / "dist"))
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


@pytest.mark.parametrize("change, match", [
    ({"version": "one"}, "metadata.*version"),
    ({"authors": ""}, "metadata.*authors"),
    ({"changelog": {"0.0.9": "older"}}, "metadata.*changelog"),
])
def test_refuses_bad_metadata(bundle, tmp_path, change, match):
    _rewrite(bundle / "configs" / "metadata.json", **change)
    with pytest.raises(ValueError, match=match):
        package_bundle(str(bundle), out_dir=str(tmp_path / "dist"))


def test_refuses_metadata_without_required_key(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'metadata'.*network_data_format"):
        check_bundle(str(bundle))


def test_refuses_weights_that_do_not_match(bundle, tmp_path):
    torch.save(SAUNet(features=(4, 8, 32)).state_dict(), bundle / "models" / "model.pt")
    with pytest.raises(ValueError, match="'weights'.*weights do not match the network.*shape mismatch"):
        package_bundle(str(bundle), out_dir=str(tmp_path / "dist"))


def test_refuses_pickled_module_as_weights(bundle):
    torch.save(SAUNet(features=(4, 8, 16)), bundle / "models" / "model.pt")  # a whole module, not a state dict
    with pytest.raises(ValueError, match="'weights'.*weights_only=True"):
        check_bundle(str(bundle))


def test_refuses_unresolved_reference_and_bad_json(bundle):
    (bundle / "configs" / "broken_overlay.json").write_text(json.dumps({"network_def#features": "@no_such_id"}))
    with pytest.raises(ValueError, match="'configs'.*broken_overlay.json.*no_such_id"):
        check_bundle(str(bundle))
    (bundle / "configs" / "broken_overlay.json").write_text("{not json")
    with pytest.raises(ValueError, match="'configs'.*broken_overlay.json does not parse"):
        check_bundle(str(bundle))


def test_refuses_net_in_out_mismatch(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'net-in-out'.*output channel"):
        check_bundle(str(bundle))


def test_refuses_symlink(bundle, tmp_path):
    os.symlink("/etc/hostname", bundle / "docs" / "link.txt")
    with pytest.raises(ValueError, match="'files'.*link.txt"):
        package_bundle(str(bundle), out_dir=str(tmp_path / "dist"), run_checks=False)


def test_bad_argument(bundle):
    with pytest.raises(ValueError, match="any_size"):
        check_bundle(str(bundle), any_size=0)


def test_repository_bundle_passes():
    """The bundle in bundles/ itself (all required files written, configs and metadata consistent)."""
    meta = check_bundle(str(BUNDLE), any_size=16)
    assert meta["version"] in meta["changelog"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.slow
def test_cli_then_monai_download_load_and_infer(bundle, tmp_path):
    from monai.bundle import load

    from spine_monai.data.phantoms import make_phantom_dataset

    work = tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "spine_monai", "package", str(bundle), "--out_dir", str(tmp_path / "dist")], cwd=work)
    zip_path = tmp_path / "dist" / f"{NAME}_v0.1.0.zip"
    assert zip_path.is_file()

    # offline install from a file:// URL, as a user of the zip would do
    installed = tmp_path / "installed"
    _run([sys.executable, "-m", "monai.bundle", "download", "--name", NAME, "--url", zip_path.resolve().as_uri(),
          "--bundle_dir", str(installed)], cwd=work)
    root = installed / NAME
    assert (root / "models" / "model.pt").is_file() and (root / "configs" / "metadata.json").is_file()

    net = load(NAME, bundle_dir=str(installed), workflow_type="inference", device="cpu", progress=False,
               args_file={"bundle_root": str(root)})
    assert isinstance(net, SAUNet)
    expected = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(v, expected[k]) for k, v in net.state_dict().items())

    data = Path(make_phantom_dataset(n=2, out=tmp_path / "data", seed=1, folds=2, shape_scale=0.25,
                                     progress=False)).parent
    img = sorted((data / "imagesTr").glob("*.nii.gz"))[0]
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs" / "inference.json"),
          "--bundle_root", str(root), "--dataset_dir", str(img), "--output_dir", str(tmp_path / "pred")], cwd=work)
    seg = nib.load(str(next((tmp_path / "pred").glob("*_seg.nii.gz"))))
    assert seg.shape == nib.load(str(img)).shape


def test_bundle_without_a_second_network_ignores_localization_files(bundle, tmp_path):
    """Only a bundle whose inference.json defines ``localization_def`` ships or needs ``localization.pt``: for
    SAU-Net, such files in ``models/`` or beside ``--weights`` are left out, as any other file there, and unchecked."""
    for folder in (bundle / "models", tmp_path / "run"):
        folder.mkdir(exist_ok=True)
        for name in ("localization.pt", "localization_config.json"):
            (folder / name).write_text("not a weights file")
    shutil.copy2(bundle / "models" / "model.pt", tmp_path / "run" / "model.pt")
    for weights in (None, str(tmp_path / "run" / "model.pt")):
        out = package_bundle(str(bundle), out_dir=str(tmp_path / "dist"), weights=weights)
        with zipfile.ZipFile(out) as zf:
            assert sorted(n for n in zf.namelist() if "/models/" in n) == [f"{NAME}/models/model.pt"]
