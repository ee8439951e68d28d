"""``spine_monai.export``: TorchScript (``ckpt_export``), ``torch.export`` (.pt2) and ONNX exports of the SAU-Net bundle
match the PyTorch network on preprocessed phantom volumes, at the exported size and at another size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spine_monai.data.phantoms import make_phantom_dataset
from spine_monai.export import export_onnx, export_program, export_torchscript, load_network, load_weights
from spine_monai.networks.nets.saunet import SAUNet

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
TINY = {"features": [4, 8, 16]}  # in-plane size divisor 2 ** 2 = 4
# float32 graphs compute the same operations in other orders: differences are ~1e-7 on logits of size ~1
ATOL, RTOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict:
    """Tiny weights (random, with non-trivial batch-norm statistics) and two phantom patches preprocessed like
    ``inference.json`` (RAS, 4 x 2.5 x 2.5 mm, percentile scaling): ``(1, 1, S, 64, 64)`` with more slices than
    SAU-Net's ``slice_chunk`` (8), so eager PyTorch and TorchScript take the chunked path, and a smaller
    ``(1, 1, 7, 48, 80)`` patch."""
    from monai.bundle import ConfigParser

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(3)
    net = SAUNet(features=(4, 8, 16))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), root / "model.pt")
    make_phantom_dataset(n=2, out=root / "data", seed=2, folds=2, shape_scale=0.25, progress=False)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["pixdim"] = [4.0, 2.5, 2.5]
    image = parser.get_parsed_content("preprocessing")({"image": str(root / "data" / "imagesTr" / "case_000.nii.gz")})
    vol = image["image"].as_tensor()[None]  # (1, 1, X, Y, Z), slices on X
    assert vol.shape[2] > 8 and min(vol.shape[3:]) >= 80
    cy, cz = vol.shape[3] // 2, vol.shape[4] // 2
    patch = vol[:, :, :, cy - 32:cy + 32, cz - 32:cz + 32].contiguous()
    patch2 = vol[:, :, 2:9, cy - 24:cy + 24, cz - 40:cz + 40].contiguous()
    eager = load_network(BUNDLE, root / "model.pt", **TINY)
    with torch.no_grad():
        refs = [eager(patch), eager(patch2)]
    return {"root": root, "ckpt": root / "model.pt", "inputs": [patch, patch2], "refs": refs}


@pytest.fixture(scope="module")
def onnx_file(ws) -> Path:
    return export_onnx(BUNDLE, ws["ckpt"], ws["root"] / "model.onnx", input_shape=(1, 1, 12, 64, 64), **TINY)


def test_reference_is_not_trivial(ws):
    for ref in ws["refs"]:
        assert torch.isfinite(ref).all() and float(ref.std()) > 1e-3


@pytest.mark.slow
def test_onnx_runs_in_onnxruntime_and_matches_at_two_sizes(ws, onnx_file):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "image" and inp.shape[:2] == [1, 1]
    assert all(isinstance(d, str) for d in inp.shape[2:])  # slices and in-plane sizes are symbolic
    for x, ref in zip(ws["inputs"], ws["refs"], strict=True):
        (out,) = sess.run(["pred"], {"image": x.numpy()})
        assert out.shape == tuple(ref.shape)
        np.testing.assert_allclose(out, ref.numpy(), atol=ATOL, rtol=RTOL)
    meta = sess.get_modelmeta().custom_metadata_map
    assert "network_data_format" in json.loads(meta["monai_bundle_metadata"])
    settings = json.loads(meta["spine_monai_export"])
    assert settings["dynamic"] and settings["size_multiple"] == 4
    assert sorted(p.name for p in onnx_file.parent.iterdir() if p.name.startswith(".")) == []  # no temporary files


@pytest.mark.slow
def test_torch_export_program_roundtrip(ws):
    path = ws["root"] / "model.pt2"
    export_program(BUNDLE, ws["ckpt"], path, input_shape=(1, 1, 12, 64, 64), **TINY)
    module = torch.export.load(str(path)).module()
    for x, ref in zip(ws["inputs"], ws["refs"], strict=True):
        with torch.no_grad():
            torch.testing.assert_close(module(x), ref, atol=ATOL, rtol=RTOL)


def test_torchscript_matches_with_chunked_slices(ws):
    path = export_torchscript(BUNDLE, ws["ckpt"], ws["root"] / "model.ts", **TINY)
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"]
    assert "network_def" in json.loads(extra["inference.json"])
    for x, ref in zip(ws["inputs"], ws["refs"], strict=True):
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kwargs, exc, fragment", [
    ({"input_shape": (1, 1, 12, 50, 64)}, ValueError, "multiple of 4"),
    ({"input_shape": (1, 1, 2, 64, 64)}, ValueError, "slice count 2"),
    ({"input_shape": (1, 12, 64, 64)}, ValueError, "5 positive sizes"),
    ({"features": [4, 8, 16, 32]}, ValueError, "do not match the network"),
])
def test_export_bad_arguments(ws, tmp_path, kwargs, exc, fragment):
    kwargs = {**TINY, **kwargs}
    with pytest.raises(exc, match=fragment):
        export_onnx(BUNDLE, ws["ckpt"], tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        export_torchscript(BUNDLE, tmp_path / "none.pt", tmp_path / "m.ts", **TINY)
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        load_weights(tmp_path / "junk.pt")
    torch.save({"model": SAUNet(features=(4, 8, 16)).state_dict(), "epoch": 3}, tmp_path / "nested.pt")
    assert "head.weight" in load_weights(tmp_path / "nested.pt")  # a {"model": state_dict} checkpoint is unwrapped
    assert not (tmp_path / "m.ts").exists()


def test_network_option(tmp_path):
    """``--network localization`` exists only for a bundle that defines ``localization_def`` (the CT bundle); the
    CLI help documents it."""
    from spine_monai.cli import command_help

    with pytest.raises(ValueError, match="--network 'localization': bundle saunet_spine_mri_segmentation has no such "
                                         "network; choose one of model"):
        export_torchscript(BUNDLE, tmp_path / "model.pt", tmp_path / "m.ts", network="localization", **TINY)
    assert list(tmp_path.iterdir()) == []
    text = command_help("export")
    assert "--network VALUE" in text and "localization_def" in text
