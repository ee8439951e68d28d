"""Packaging and export of the attention-driven CT bundle's two networks (Sekuboyina et al., MSKI 2017): the 2D
localisation net (``localization_def``, ``models/localization.pt``) travels with the segmentation net
(``network_def``, ``models/model.pt``) in the zip, is checked like it, and exports to TorchScript and ONNX.

Tiny untrained weights (He init, batch-norm statistics that are not the defaults; no training run), records written
with :func:`spine_monai.bundle.record.write_record`, one tiny CT phantom for the installed zip's inference run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from spine_monai.bundle.package import check_bundle, package_bundle
from spine_monai.bundle.record import sha256_file, write_record
from spine_monai.bundle.zipcheck import install_bundle
from spine_monai.networks.nets.sekuboyina import AttentionLocalisationNet2D, SpineSegUNet2D3D

REPO = Path(__file__).resolve().parents[2]
NAME = "attention_driven_spine_ct_segmentation"
BUNDLE = REPO / "bundles" / NAME
FEATURES = [4, 8, 8, 8, 8]
LOC_FEATURES = [4, 4, 8, 8, 8, 8, 8, 8, 4]
PREPROCESSING = {"pixdim": [4.0, 4.0, 4.0], "hu_window": [-500, 1300], "use_diffusion": False,
                 "diffusion_iterations": 5, "diffusion_conductance": 2.0}
# as training writes them: the segmentation net's settings with model.pt, stage 1's with localization.pt
SETTINGS = {**PREPROCESSING, "use_localization": True, "roi_size": [12, 32, 32], "features": FEATURES,
            "norm": "batch", "dropout": 0.5}
LOC_SETTINGS = {**PREPROCESSING, "slice_step": 2, "loc_patch_size": [32, 32], "loc_features": LOC_FEATURES,
                "loc_norm": "batch", "attention_sigma": [1.0, 2.0, 2.0], "attention_threshold": 0.1,
                "attention_dilation": 0}
ATOL, RTOL = 1e-4, 1e-4
LOC_INPUT = (1, 1, 48, 64)  # one sagittal patch (B, C, AP, SI), other than the exported example (1, 1, 64, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def _non_trivial(net: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics other than the defaults, and He-initialised convolutions: PyTorch's default init shrinks
    the signal through the ten layers of the localisation net until its map is a constant."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


def _write_run(models: Path, settings: dict, localization: bool = True) -> Path:
    """``models/model.pt`` (+ ``localization.pt``) with their records, as a training run leaves them."""
    models.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    seg = SpineSegUNet2D3D(features=FEATURES, norm=settings["norm"])
    torch.save(_non_trivial(seg).state_dict(), models / "model.pt")
    write_record(models / "model.pt", settings, bundle_root=BUNDLE, metric={"name": "val_mean_dice", "value": 0.5})
    if localization:
        loc = AttentionLocalisationNet2D(features=LOC_FEATURES, norm=LOC_SETTINGS["loc_norm"])
        torch.save(_non_trivial(loc).state_dict(), models / "localization.pt")
        write_record(models / "localization.pt", LOC_SETTINGS, bundle_root=BUNDLE,
                     metric={"name": "val_mask_dice", "value": 0.5})
    return models / "model.pt"


@pytest.fixture(scope="module")
def run_models(tmp_path_factory) -> Path:
    """``runs/x/models`` of a (pretend) training run of the full two-stage method."""
    models = tmp_path_factory.mktemp("run") / "models"
    _write_run(models, SETTINGS)
    return models


@pytest.fixture(scope="module")
def packaged(run_models, tmp_path_factory) -> Path:
    """``package --weights runs/x/models/model.pt`` (all checks run)."""
    return Path(package_bundle(str(BUNDLE), out_dir=str(tmp_path_factory.mktemp("dist")),
                               weights=str(run_models / "model.pt")))


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {n.removeprefix(f"{NAME}/"): zf.read(n) for n in zf.namelist() if n.startswith(f"{NAME}/models/")}


def test_zip_holds_both_networks_and_their_records(packaged, run_models):
    models = _members(packaged)
    assert sorted(models) == ["models/localization.pt", "models/localization_config.json", "models/model.pt",
                              "models/model_config.json"]
    for stem in ("model", "localization"):
        assert models[f"models/{stem}.pt"] == (run_models / f"{stem}.pt").read_bytes()
        record = json.loads(models[f"models/{stem}_config.json"])
        assert record["weights"] == f"{stem}.pt" and record["sha256"] == sha256_file(run_models / f"{stem}.pt")
        assert record["settings"] == (SETTINGS if stem == "model" else LOC_SETTINGS)


@pytest.mark.slow
def test_installed_zip_segments_with_both_networks(packaged, tmp_path):
    """``install-bundle`` then ``monai.bundle run`` with the installed ``inference.json`` and no setting: the records
    rebuild both tiny nets, and the inferer loads ``localization.pt`` (strictly: a missing or misfit file stops the
    run)."""
    from spine_monai.data.phantom_ct import generate_ct_phantom

    root = Path(install_bundle(packaged, tmp_path / "bundles"))
    image, _, affine, _ = generate_ct_phantom(np.random.default_rng([0, 0]), shape_scale=0.2)
    img = tmp_path / "data" / "ct.nii.gz"
    img.parent.mkdir()
    nib.save(nib.Nifti1Image(image, affine), str(img))
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(root / "configs" / "inference.json"), "--bundle_root", str(root), "--dataset_dir",
                           str(img), "--output_dir", str(tmp_path / "pred")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    seg = nib.load(str(tmp_path / "pred" / "ct_seg.nii.gz"))
    assert seg.shape == image.shape and np.allclose(seg.affine, affine, atol=1e-4)


def test_missing_localization_weights_is_a_one_line_error(run_models, tmp_path, capsys):
    from spine_monai import cli

    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    for name in ("model.pt", "model_config.json"):
        shutil.copy2(run_models / name, models / name)
    with pytest.raises(ValueError, match=r"'weights'.*localization\.pt: localization weights not found"):
        package_bundle(str(BUNDLE), out_dir=str(tmp_path / "dist"), weights=str(models / "model.pt"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["package", str(BUNDLE), "--out_dir", str(tmp_path / "dist"), "--weights", str(models / "model.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and str(models / "localization.pt") in err[0]
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_segmentation_only_weights_package_without_localization(tmp_path):
    """The seg-only ablation (``use_localization: false``) needs no ``localization.pt``; one lying in the bundle's
    ``models/`` anyway is refused rather than shipped unchecked."""
    model = _write_run(tmp_path / "run" / "models", {**SETTINGS, "use_localization": False}, localization=False)
    shutil.copy2(model, model.with_name("localization.pt"))  # not staged: the model does not use it
    out = package_bundle(str(BUNDLE), out_dir=str(tmp_path / "dist"), weights=str(model))
    assert sorted(_members(Path(out))) == ["models/model.pt", "models/model_config.json"]

    root = tmp_path / "copy" / NAME
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs"))
    shutil.copytree(model.parent, root / "models")
    with pytest.raises(ValueError, match=r"'weights'.*localization\.pt: not used by model\.pt.*use_localization"):
        check_bundle(root)


def _bundle_with(run_models: Path, tmp_path: Path) -> Path:
    root = tmp_path / NAME
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs"))
    shutil.copytree(run_models, root / "models")
    return root


@pytest.mark.parametrize("damage, match", [
    ("other_weights", r"localization_config\.json was written for other weights"),
    ("wider", r"localization\.pt: weights do not match the network.*shape mismatch"),
    ("other_run", r"localization\.pt and model\.pt come from runs with other settings: .*trained with "
                  r"pixdim=\[2\.0,2\.0,2\.0\] \(localization_config\.json\) but this run uses "
                  r"pixdim=\[4\.0,4\.0,4\.0\]"),
    ("module", r"localization\.pt does not load with torch\.load\(weights_only=True\)"),
    ("missing", r"localization\.pt: missing; model\.pt .*needs the localization network's weights"),
])
def test_bundle_models_check_the_localization_weights(run_models, tmp_path, damage, match):
    """The bundle's own ``models/`` (no ``--weights``): ``localization.pt`` gets model.pt's checks."""
    root = _bundle_with(run_models, tmp_path)
    loc = root / "models" / "localization.pt"
    if damage == "other_weights":
        state = torch.load(loc, weights_only=True)
        torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, loc)
    elif damage == "wider":
        torch.save(AttentionLocalisationNet2D(features=[8] * 9, norm="batch").state_dict(), loc)
        write_record(loc, LOC_SETTINGS)
    elif damage == "other_run":  # a localisation net trained on 2 mm voxels beside a segmentation net on 4 mm ones
        write_record(loc, {**LOC_SETTINGS, "pixdim": [2.0, 2.0, 2.0]})
    elif damage == "module":
        torch.save(AttentionLocalisationNet2D(features=LOC_FEATURES), loc)
    else:
        loc.unlink()
    with pytest.raises(ValueError, match=r"failed check 'weights'.*" + match):
        check_bundle(root)


def test_bundle_models_with_both_networks_are_zipped(run_models, tmp_path):
    root = _bundle_with(run_models, tmp_path / "src")
    (root / "models" / "checkpoint_localization.pt").write_bytes(b"training state")  # not a weights file: left out
    out = package_bundle(str(root), out_dir=str(tmp_path / "dist"))
    assert sorted(_members(Path(out))) == ["models/localization.pt", "models/localization_config.json",
                                           "models/model.pt", "models/model_config.json"]


@pytest.fixture(scope="module")
def loc_reference(run_models) -> tuple[torch.Tensor, torch.Tensor]:
    """A sagittal patch and the eager localisation net's map of it (settings from ``localization_config.json``)."""
    from spine_monai.export import load_network

    net = load_network(BUNDLE, run_models / "localization.pt", network="localization")
    assert isinstance(net, AttentionLocalisationNet2D) and not net.training
    x = torch.rand(LOC_INPUT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = net(x)
    assert ref.shape == (1, 1, 3, 4) and float(ref.std()) > 1e-3
    return x, ref


def test_export_localization_torchscript_matches_eager(run_models, loc_reference, tmp_path, capsys):
    """``python -m spine_monai export BUNDLE --network localization --weights .../model.pt``'s sibling, in process."""
    from spine_monai import cli

    cli.main(["export", str(BUNDLE), "--network", "localization", "--weights", str(run_models / "localization.pt"),
              "--out", str(tmp_path / "localization.ts")])
    assert capsys.readouterr().out.strip().endswith("localization.ts")
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(tmp_path / "localization.ts"), _extra_files=extra)
    assert "localization_def" in json.loads(extra["inference.json"])
    x, ref = loc_reference
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), ref, atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_export_localization_onnx_matches_eager(run_models, loc_reference, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from spine_monai.export import export_cli

    for name in ("localization.pt", "localization_config.json"):
        shutil.copy2(run_models / name, tmp_path / name)
    out = export_cli(str(BUNDLE), format="onnx", weights=str(tmp_path / "localization.pt"), network="localization")
    assert Path(out) == tmp_path / "localization.onnx"  # default: beside the weights
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.shape[:2] == [1, 1] and all(isinstance(d, str) for d in inp.shape[2:])  # AP and SI dynamic
    assert json.loads(sess.get_modelmeta().custom_metadata_map["spine_monai_export"])["network"] == "localization"
    x, ref = loc_reference
    (pred,) = sess.run(["pred"], {"image": x.numpy()})
    np.testing.assert_allclose(pred, ref.numpy(), atol=ATOL, rtol=RTOL)


def test_export_default_is_the_segmentation_net(run_models, tmp_path):
    from spine_monai.export import export_cli, load_network

    out = export_cli(str(BUNDLE), weights=str(run_models / "model.pt"), out=str(tmp_path / "model.ts"))
    x = torch.rand(1, 1, 12, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(out)(x), load_network(BUNDLE, run_models / "model.pt")(x),
                                   atol=ATOL, rtol=RTOL)


def test_export_bad_network(run_models, tmp_path):
    from spine_monai.export import export_cli

    with pytest.raises(ValueError, match="--network 'attention'.*choose one of model, localization"):
        export_cli(str(BUNDLE), weights=str(run_models / "localization.pt"), network="attention",
                   out=str(tmp_path / "x.ts"))
    with pytest.raises(ValueError, match=r"input_shape must be 4 positive sizes .*--network localization"):
        export_cli(str(BUNDLE), format="program", weights=str(run_models / "localization.pt"),
                   network="localization", input_shape=(1, 1, 12, 64, 64), out=str(tmp_path / "x.pt2"))
    assert list(tmp_path.iterdir()) == []
