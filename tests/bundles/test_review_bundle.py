"""End-to-end runs of the review bundle (Zhou et al., ICMR 2022: twelve 2D networks on sagittal slices of 20-class
spine MRI) with the commands of BUNDLES.md, on tiny multi-class phantoms (CPU).

One module-scoped training run (1 epoch, ``network_name unet`` with ``network_preset cpu``, 32 x 32 slices) serves
the contract's checks (evaluate, metadata, TorchScript, two-process gloo training, inference on an anisotropic LAS
copy with the settings from the record alone) and this module's: one inference run over a folder holding every input
kind the bundle takes (a non-RAS volume, a volume of one sagittal slice, a PNG, an RGB PNG and a 2D NIfTI of the same
slice, which must get the same labels), the refusals (one axial slice, training labels outside 0..19, a
``--network_name`` other than the recorded one), ``segment``, ``package`` and ``export`` (ONNX; TorchScript of the
default network). Kept small so that the bundle's share of the CI run stays within its budget.
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
from contract import REPO, Volume3DContract, bundle_fixtures, write_small_weights
from PIL import Image

BUNDLE = REPO / "bundles" / "review_spine_mri_segmentation"
NAME = BUNDLE.name
NET = ["--network_name", "unet", "--network_preset", "cpu", "--img_size", "32"]
SMALL = [*NET, "--num_workers", "0"]
TRAIN_SMALL = [*SMALL, "--epochs", "1", "--val_interval", "1", "--batch_size", "2", "--num_samples", "2"]
SETTINGS = {"network_name": "unet", "network_preset": "cpu", "network_options": {}, "img_size": 32}
CLASSES = set(range(20))

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

workspace, trained = bundle_fixtures(BUNDLE, modality="mri", train_args=TRAIN_SMALL, binary=False)


class TestContract(Volume3DContract):
    bundle = BUNDLE
    small = SMALL
    train_args = TRAIN_SMALL
    state_key = "final_conv"  # MONAI BasicUNet, the review's U-Net (network_name unet)
    record_settings = SETTINGS
    images, suffix = "imagesTr", ".nii.gz"
    net_args = NET
    example_shape = (2, 1, 32, 48)  # a batch of slices, not square
    label_values = CLASSES


def _image(w: dict[str, Path]) -> Path:
    return sorted((w["data"] / "imagesTr").glob("*.nii.gz"))[0]


def _random_weights(folder: Path, name: str = "unet", **settings) -> Path:
    """Seeded random weights of the review network ``name`` (cpu preset, 32 x 32) with their record: unlike one
    epoch of training, they give labels that vary over the image, so label maps can be compared."""
    from spine_monai.networks.registry import get_network

    torch.manual_seed(0)
    net = get_network(name, 1, 20, preset="cpu", img_size=32)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return write_small_weights(folder, {"model.pt": (net, {**SETTINGS, "network_name": name, **settings})},
                               BUNDLE) / "model.pt"


def _sagittal(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The volume in RAS order and its middle sagittal slice ``(A, S)``."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    vol = np.asarray(img.dataobj, dtype=np.float32)
    return vol, vol[vol.shape[0] // 2]


def _display(slice_as: np.ndarray) -> np.ndarray:
    """A sagittal slice ``(A, S)`` as a picture ``(rows, columns)`` with anterior on the left and superior at the top
    (the bundle's convention for 2D inputs)."""
    return np.ascontiguousarray(slice_as[::-1, ::-1].T)


@pytest.fixture(scope="module")
def inputs(workspace) -> dict[str, Path]:
    """One folder of every input kind, all cut from the first phantom (anisotropic 4.2 x 2.8 x 2.8 mm voxels)."""
    folder = workspace["root"] / "inputs"
    folder.mkdir()
    vol, mid = _sagittal(_image(workspace))
    ras = nib.as_closest_canonical(nib.load(str(_image(workspace))))
    # PSR: the axes permuted and flipped (i: anterior -> posterior, j: inferior -> superior, k: left -> right)
    a, n_a, m = ras.affine, vol.shape[1], vol.shape[0] // 2
    aff = a.copy()
    aff[:3, :3] = a[:3, [1, 2, 0]] * np.array([-1.0, 1.0, 1.0])
    aff[:3, 3] = a[:3, 3] + a[:3, 1] * (n_a - 1)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.transpose(vol, (1, 2, 0))[::-1]), aff), str(folder / "psr.nii.gz"))
    aff = a.copy()
    aff[:3, 3] = a[:3, 3] + a[:3, 0] * m  # the middle sagittal slice, where it lies in the volume
    nib.save(nib.Nifti1Image(vol[m:m + 1], aff), str(folder / "one_sagittal.nii.gz"))
    grey = _display(mid)
    grey = np.round(255 * (grey - grey.min()) / np.ptp(grey)).astype(np.uint8)
    Image.fromarray(grey).save(folder / "slice.png")
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(folder / "slice_rgb.png")
    # a 2D NIfTI holds (X, Y) = (columns, rows) of the picture, as MONAI reads a PNG
    nib.save(nib.Nifti1Image(np.ascontiguousarray(_display(mid).T), np.diag([0.5, 0.7, 1.0, 1.0])),
             str(folder / "slice2d.nii.gz"))
    return {"folder": folder, "psr": folder / "psr.nii.gz", "one": folder / "one_sagittal.nii.gz",
            "png": folder / "slice.png", "rgb": folder / "slice_rgb.png", "nii2d": folder / "slice2d.nii.gz"}


@pytest.fixture(scope="module")
def random_model(workspace) -> Path:
    return _random_weights(workspace["root"] / "random")


@pytest.fixture(scope="module")
def every_kind(inputs, random_model, workspace) -> Path:
    """One run of inference.json over the folder of every input kind (random weights with their record), in this
    process (the contract's test runs it as ``monai.bundle run``)."""
    from spine_monai.bundle.runner import infer_bundle

    out = workspace["root"] / "every_kind"
    infer_bundle(BUNDLE, inputs["folder"], out, ckpt=random_model, progress=False)
    return out


def test_inference_every_input_kind_keeps_its_geometry(inputs, every_kind):
    """Each label in its input's format, shape and affine (a non-RAS volume and a 2D NIfTI included), nothing else
    written; the RGB PNG was converted to grey (SagittalSlicesd, documented in its module), not refused."""
    assert sorted(os.listdir(every_kind)) == sorted(["psr_seg.nii.gz", "one_sagittal_seg.nii.gz", "slice_seg.png",
                                                     "slice_rgb_seg.png", "slice2d_seg.nii.gz"])
    for key in ("psr", "one", "nii2d"):
        img = nib.load(str(inputs[key]))
        seg = nib.load(str(every_kind / inputs[key].name.replace(".nii.gz", "_seg.nii.gz")))
        assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4), key
        assert nib.aff2axcodes(seg.affine) == nib.aff2axcodes(img.affine)
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= CLASSES
    assert nib.aff2axcodes(nib.load(str(inputs["psr"])).affine) == ("P", "S", "R")
    for key in ("png", "rgb"):
        seg = np.asarray(Image.open(every_kind / inputs[key].name.replace(".png", "_seg.png")))
        assert seg.shape == np.asarray(Image.open(inputs["png"])).shape and seg.dtype == np.uint8


def test_one_slice_gets_the_same_labels_in_every_form(inputs, every_kind):
    """A volume of one sagittal slice, that slice as a 2D NIfTI and as a PNG (grey and RGB), taken as a sagittal
    picture (anterior left, superior up), are the same image to the network: the labels agree pixel for pixel
    (the PNGs up to their 8-bit rounding)."""
    vol = np.asarray(nib.load(str(every_kind / "one_sagittal_seg.nii.gz")).dataobj)[0]  # (A, S)
    assert len(np.unique(vol)) > 1  # the random network's labels vary over the slice
    as_picture = _display(vol)
    nii2d = np.asarray(nib.load(str(every_kind / "slice2d_seg.nii.gz")).dataobj).T
    np.testing.assert_array_equal(nii2d, as_picture)
    for name in ("slice_seg.png", "slice_rgb_seg.png"):
        assert (np.asarray(Image.open(every_kind / name)) == as_picture).mean() > 0.97, name


def test_single_axial_slice_is_refused_naming_the_file(workspace, trained, tmp_path):
    from spine_monai.bundle.runner import infer_bundle
    from spine_monai.errors import find_input_error

    src = nib.load(str(_image(workspace)))
    path = tmp_path / "axial.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[:, :, 40:41], src.affine), str(path))
    with pytest.raises(Exception) as err:
        infer_bundle(BUNDLE, path, tmp_path / "pred", ckpt=trained, progress=False)
    found = find_input_error(err.value)
    assert found is not None and str(found).startswith(f"{path}: a single axial slice"), err.value
    assert not (tmp_path / "pred").exists() or not list((tmp_path / "pred").iterdir())


def test_training_label_outside_the_classes_is_refused(workspace, tmp_path):
    """``ValidateLabeld`` (values from the datalist's 20 labels) names the label file and the stray value."""
    from spine_monai.bundle.runner import train_bundle
    from spine_monai.errors import find_input_error

    data = tmp_path / "data"
    shutil.copytree(workspace["data"], data)
    train = [e for e in json.loads((data / "datalist.json").read_text())["training"] if e["fold"] != 0]
    label = data / train[0]["label"]
    img = nib.load(str(label))
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 3] = 25
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(label))
    with pytest.raises(Exception) as err:
        train_bundle(BUNDLE, data, progress=False, ckpt_dir=str(tmp_path / "models"),
                     output_dir=str(tmp_path / "eval"), epochs=1, num_workers=0, network_name="unet",
                     network_preset="cpu", img_size=32)
    found = find_input_error(err.value)
    assert found is not None and str(found).startswith(f"{label.resolve()}: label values 25"), err.value
    assert not (tmp_path / "models" / "model.pt").exists()


def test_record_rebuilds_the_trained_network_and_refuses_another(workspace, trained, tmp_path):
    """inference.json without flags builds the recorded network (unet, cpu preset) and loads the weights strictly;
    ``--network_name deeplabv3plus`` against weights trained as unet stops in ``initialize`` with one line
    (:func:`spine_monai.bundle.record.check_settings`), and so does ``segment``."""
    from monai.bundle import ConfigParser
    from monai.networks.nets import BasicUNet

    from spine_monai.bundle.runner import make_workflow
    from spine_monai.errors import find_input_error
    from spine_monai.segment import segment

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "ckpt_path": str(trained)})
    assert parser.get_parsed_content("model_settings") == SETTINGS
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, BasicUNet)
    net.load_state_dict(torch.load(trained, weights_only=True))  # strict

    wf = make_workflow(BUNDLE, ["inference"], "infer", dataset_dir=str(_image(workspace)),
                       output_dir=str(tmp_path / "pred"), ckpt_path=str(trained), network_name="deeplabv3plus")
    with pytest.raises(Exception) as err:  # MONAI's parser wraps it in a RuntimeError; the excepthook finds it
        wf.initialize()
    found = find_input_error(err.value)
    assert found is not None and 'trained with network_name="unet" (model_config.json) but this run uses ' \
        'network_name="deeplabv3plus"' in str(found), err.value
    with pytest.raises(ValueError, match='trained with network_name="unet"') as err:
        segment(NAME, str(_image(workspace)), str(tmp_path / "seg.nii.gz"), weights=str(trained), progress=False,
                network_name="deeplabv3plus")
    assert "\n" not in str(err.value) and not (tmp_path / "seg.nii.gz").exists()


def test_segment_cli_volume_and_png(workspace, trained, inputs, tmp_path, capsys):
    """``python -m spine_monai segment review_spine_mri_segmentation -i ... -o ... --weights ...`` on a 3D NIfTI
    (volumes of the 19 structures by name) and on a PNG (a PNG label of its size, with an overlay)."""
    from spine_monai import cli

    img = _image(workspace)
    cli.main(["segment", NAME, "-i", str(img), "-o", str(tmp_path / "seg.nii.gz"), "--weights", str(trained),
              "--volumes_json", str(tmp_path / "volumes.json"), "--progress", "False"])
    seg, ref = nib.load(str(tmp_path / "seg.nii.gz")), nib.load(str(img))
    assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine, atol=1e-4)
    report = json.loads((tmp_path / "volumes.json").read_text())
    assert set(report["volumes_ml"]) == {"S", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "L5/S",
                                         "L4/L5", "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12", "T10/T11",
                                         "T9/T10"}
    cli.main(["segment", NAME, "-i", str(inputs["png"]), "-o", str(tmp_path / "slice_seg.png"), "--weights",
              str(trained), "--overlay", str(tmp_path / "overlay.png"), "--progress", "False"])
    assert np.asarray(Image.open(tmp_path / "slice_seg.png")).shape == np.asarray(Image.open(inputs["png"])).shape
    assert Image.open(tmp_path / "overlay.png").size[0] > 0
    assert str(tmp_path / "slice_seg.png") in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["overlay.png", "seg.nii.gz", "slice_seg.png", "volumes.json"]


def test_segment_one_sagittal_slice_and_refusals(inputs, trained, workspace, tmp_path):
    """``segment`` takes what inference.json takes: a volume of one sagittal slice is segmented; a volume of one
    axial slice and a PNG given a NIfTI output name are refused in one line, before the network runs."""
    from spine_monai.segment import segment

    out = segment(NAME, str(inputs["one"]), str(tmp_path / "one.nii.gz"), weights=str(trained), progress=False)
    assert nib.load(out).shape == nib.load(str(inputs["one"])).shape
    src = nib.load(str(_image(workspace)))
    axial = tmp_path / "axial.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[:, :, 40:41], src.affine), str(axial))
    with pytest.raises(ValueError, match=f"{axial}: a single axial slice"):
        segment(NAME, str(axial), str(tmp_path / "axial_seg.nii.gz"), weights=str(trained), progress=False)
    with pytest.raises(ValueError, match="must end with .png"):
        segment(NAME, str(inputs["png"]), str(tmp_path / "png_seg.nii.gz"), weights=str(trained), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["axial.nii.gz", "one.nii.gz"]


def test_package_installs_and_segments_with_the_record(trained, workspace, tmp_path):
    """``package --weights`` (every check on what is zipped: files, metadata, configs, net in/out, the weights with
    their record), ``install-bundle``, then the installed inference.json segments a volume with no network flag."""
    from spine_monai.bundle.package import package_bundle
    from spine_monai.bundle.runner import infer_bundle
    from spine_monai.bundle.zipcheck import install_bundle

    zip_path = Path(package_bundle(str(BUNDLE), out_dir=str(tmp_path / "dist"), weights=str(trained)))
    assert zip_path.name == f"{NAME}_v0.1.0.zip"
    installed = Path(install_bundle(zip_path, tmp_path / "bundles"))
    record = json.loads((installed / "models" / "model_config.json").read_text())
    assert record["settings"] == SETTINGS and record["weights"] == "model.pt"
    img = _image(workspace)
    pred = infer_bundle(installed, img, tmp_path / "pred", ckpt=installed / "models" / "model.pt", progress=False)
    assert nib.load(str(pred[0])).shape == nib.load(str(img)).shape


def test_onnx_export_matches_eager(trained, tmp_path):
    """BUNDLES.md's ``monai.bundle onnx_export`` (called in this process with the arguments of its command line; the
    record beside the weights rebuilds the network) agrees with the eager network in onnxruntime."""
    import onnxruntime as ort
    from monai.bundle import onnx_export

    from spine_monai.export import load_network

    path = tmp_path / "model.onnx"
    onnx_export(net_id="network_def", filepath=str(path), ckpt_file=str(trained), ckpt_path=str(trained),
                meta_file=str(BUNDLE / "configs" / "metadata.json"),
                config_file=str(BUNDLE / "configs" / "inference.json"), bundle_root=str(BUNDLE),
                input_shape=[1, 1, 32, 32])
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        ref = load_network(BUNDLE, trained)(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], ref, atol=1e-4,
                               rtol=1e-4)


def test_export_torchscript_of_the_default_network(tmp_path):
    """The default network (DeepLabv3+, here its cpu preset) goes through ``ckpt_export`` (``spine_monai export``)
    and matches the eager network built from its record."""
    from spine_monai.export import export_cli, load_network

    weights = _random_weights(tmp_path / "models", "deeplabv3plus")
    ts = export_cli(NAME, weights=str(weights), out=str(tmp_path / "model.ts"))
    extra = {"inference.json": ""}
    scripted = torch.jit.load(ts, _extra_files=extra)
    assert json.loads(extra["inference.json"])["inferer"]["_target_"].endswith("SagittalSliceInferer")
    net = load_network(BUNDLE, weights)
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-4, rtol=1e-4)


def test_real_png_slices_smoke(trained, real_data_dir, tmp_path):
    """The 20 real sagittal lumbar T2 PNG slices of ../shared/data/real/vesal_mri_png (skipped without ../shared):
    inference.json over the folder writes one PNG label per slice, of the slice's size, with MRSpineSeg values. A
    smoke test of the 2D path on real pictures (the tiny model's labels are not scored here; the docs report the
    scores of trained models)."""
    from contract import bundle_cmd, run

    images = real_data_dir / "vesal_mri_png" / "images"
    if not images.is_dir():
        pytest.skip("vesal_mri_png is absent")
    out = tmp_path / "pred"
    run(bundle_cmd("run", "--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                   "--dataset_dir", str(images), "--ckpt_path", str(trained), "--output_dir", str(out)), cwd=tmp_path)
    pngs = sorted(images.glob("*.png"))
    assert len(pngs) == 20
    for png in pngs:
        seg = np.asarray(Image.open(out / f"{png.stem}_seg.png"))
        assert seg.shape == np.asarray(Image.open(png)).shape[:2]
        assert set(np.unique(seg).tolist()) <= CLASSES
