"""The configuration record beside trained weights (spine_monai.bundle.record) and its use by the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spine_monai.bundle.record import (
    FORMAT,
    check_settings,
    inference_overrides,
    read_record,
    read_settings,
    record_path,
    sha256_file,
    write_record,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
SETTINGS = {"pixdim": [4.0, 2.5, 2.5], "roi_size": [-1, 64, 64], "features": [4, 8, 16], "use_isa": True}


def _weights(tmp_path: Path, settings: dict | None = None, overlays: tuple[str, ...] = ()) -> Path:
    """Random SAU-Net weights of the given settings, with their record."""
    from spine_monai.networks.nets.saunet import SAUNet

    s = settings or SETTINGS
    net = SAUNet(spatial_dims=3, in_channels=1, out_channels=1, features=s["features"], use_isa=s["use_isa"],
                 slice_dim=0)
    path = tmp_path / "run" / "models" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    write_record(path, s, overlays, BUNDLE, metric={"name": "val_mean_dice", "value": 0.5, "epoch": 1})
    return path


def test_record_round_trip(tmp_path):
    path = _weights(tmp_path)
    assert record_path(path).name == "model_config.json"
    rec = read_record(path)
    assert rec["format"] == FORMAT and rec["bundle"] == BUNDLE.name and rec["sha256"] == sha256_file(path)
    assert rec["settings"] == SETTINGS and read_settings(path) == SETTINGS
    assert read_settings(tmp_path / "none.pt") == {}


def test_check_settings_names_the_setting(tmp_path):
    path = _weights(tmp_path)
    assert check_settings(path, {**SETTINGS, "roi_size": [-1, 128, 128]})  # free setting
    with pytest.raises(ValueError, match=r"trained with features=\[4,8,16\].*uses features=\[8,16,32\].*--features"):
        check_settings(path, {**SETTINGS, "features": [8, 16, 32]})
    with pytest.raises(ValueError, match="use_isa"):
        check_settings(path, {**SETTINGS, "use_isa": False})
    assert check_settings(path, {**SETTINGS, "pixdim": (4, 2.5, 2.5)})  # tuples and ints compare by value


def test_check_settings_overlays(tmp_path):
    path = _weights(tmp_path, overlays=("baseline_unet3d",))
    with pytest.raises(ValueError, match="overlay baseline_unet3d"):
        check_settings(path, SETTINGS, overlays=[])
    assert check_settings(path, SETTINGS, overlays=["baseline_unet3d"])
    names, over = inference_overrides(path, ["x"], {"device": "cpu"})
    assert names == ["baseline_unet3d", "x"] and over["features"] == [4, 8, 16] and over["ckpt_path"] == str(path)


def test_corrupt_record_is_one_line(tmp_path):
    path = _weights(tmp_path)
    record_path(path).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable model record") as err:
        read_record(path)
    assert "\n" not in str(err.value)
    record_path(path).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a spine_monai.model_config/1 record"):
        read_record(path)


def test_load_network_uses_record(tmp_path):
    """export/segment build the network from the record: no override needed, a contradicting one is refused."""
    from spine_monai.export import load_network

    path = _weights(tmp_path)
    net = load_network(BUNDLE, path)
    assert not net.training  # built with the recorded features=[4, 8, 16]: the strict load succeeded
    with pytest.raises(ValueError, match="features"):
        load_network(BUNDLE, path, features=[16, 32, 64, 128, 256])
    record_path(path).unlink()  # without the record the defaults do not fit: the old one-line error
    with pytest.raises(ValueError, match="weights do not match the network"):
        load_network(BUNDLE, path)


def test_inference_json_reads_record(tmp_path):
    """inference.json takes its settings from the record of its ckpt_path (MONAI Label, monai.bundle run, zips)."""
    from monai.bundle import ConfigParser

    path = _weights(tmp_path)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["ckpt_path"] = str(path)
    assert parser.get_parsed_content("features") == [4, 8, 16]
    assert parser.get_parsed_content("pixdim") == [4.0, 2.5, 2.5]
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(path, weights_only=True))


def test_package_trained_run(tmp_path):
    """package --weights zips the bundle with the run's weights and record; the record must belong to them."""
    import zipfile

    from spine_monai.bundle.package import package_bundle

    path = _weights(tmp_path)
    zpath = Path(package_bundle(str(BUNDLE), out_dir=str(tmp_path / "dist"), weights=str(path)))
    with zipfile.ZipFile(zpath) as zf:
        names = zf.namelist()
        rec = json.loads(zf.read(f"{BUNDLE.name}/models/model_config.json"))
    assert f"{BUNDLE.name}/models/model.pt" in names and rec["settings"] == SETTINGS and rec["weights"] == "model.pt"
    # a record of other weights is refused in one line
    other = _weights(tmp_path / "b")
    record_path(path).write_text(record_path(other).read_text().replace(sha256_file(other), "0" * 64))
    with pytest.raises(ValueError, match="was written for other weights") as err:
        package_bundle(str(BUNDLE), out_dir=str(tmp_path / "dist2"), weights=str(path))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "dist2").exists() or not list((tmp_path / "dist2").glob("*.zip"))


def test_as_bool_reads_command_line_spellings():
    from spine_monai.bundle.record import as_bool

    assert as_bool("true") and as_bool("True") and as_bool(True) and as_bool(1) and as_bool("yes")
    assert not as_bool("false") and not as_bool("False") and not as_bool(False) and not as_bool("0")
    with pytest.raises(ValueError, match="--resume 'maybe': expected true or false"):
        as_bool("maybe", "resume")


def test_train_handlers_are_dicts_and_share_one_checkpoint_manager():
    """MONAI Label reads train#handlers as dicts; the trainer and the evaluator must get the same manager."""
    from monai.bundle import ConfigParser

    config = json.loads((BUNDLE / "configs" / "train.json").read_text())
    for section in ("train", "validate"):
        assert all(isinstance(h, dict) for h in config[section]["handlers"])
        shared = [h for h in config[section]["handlers"] if h["_target_"] == "spine_monai.handlers.shared_handler"]
        assert shared == [{"_target_": "spine_monai.handlers.shared_handler", "manager": "@checkpoint_manager"}]
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["network_def"] = {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 1, "kernel_size": 1}
    manager = parser.get_parsed_content("checkpoint_manager")
    from spine_monai.handlers import shared_handler

    assert shared_handler(manager) is manager and manager.settings["features"] == [16, 32, 64, 128, 256]
