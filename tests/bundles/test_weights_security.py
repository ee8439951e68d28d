"""A malicious pickle in ``models/model.pt`` must never run: every loader of the project uses ``weights_only=True``."""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from spine_monai.bundle.package import _check_weights
from spine_monai.export import load_weights

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())
CONFIGS = sorted(p for b in BUNDLES for p in (b / "configs").glob("*.json"))


class _Evil:
    """Unpickles into ``open(marker, "w")``: creating the marker file is the proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.marker, "w")


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """``(weights file, marker)``: a state dict that also holds the malicious object."""
    marker = tmp_path / "pwned"
    path = tmp_path / "bundle" / "models" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save({"weight": torch.zeros(2), "evil": _Evil(marker)}, path)
    return path, marker


def test_the_pickle_is_really_malicious(evil):
    path, marker = evil
    loaded = torch.load(path, weights_only=False)  # what an unsafe loader would do
    loaded["evil"].close()
    assert marker.exists()


def test_export_load_weights_refuses(evil):
    path, marker = evil
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        load_weights(path)
    assert not marker.exists()


def test_package_weights_check_refuses(evil):
    path, marker = evil
    with pytest.raises(ValueError, match="weights_only=True"):
        _check_weights(path.parents[1])
    assert not marker.exists()


def _checkpoint_loaders(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if str(node.get("_target_", "")).rsplit(".", 1)[-1] == "CheckpointLoader":
            yield node
        for value in node.values():
            yield from _checkpoint_loaders(value)
    elif isinstance(node, list):
        for value in node:
            yield from _checkpoint_loaders(value)


def test_config_checkpoint_loaders_refuse(evil):
    # Each CheckpointLoader entry of the bundles' configs, with its literal arguments, on the malicious file.
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    path, marker = evil
    entries = [e for p in CONFIGS for e in _checkpoint_loaders(json.loads(p.read_text()))]
    assert entries, "the bundles load their weights with monai.handlers.CheckpointLoader"
    for entry in entries:
        literal = {k: v for k, v in entry.items() if not k.startswith("_") and not str(v).startswith(("@", "$"))}
        args = {**literal, "load_path": str(path), "load_dict": {"model": torch.nn.Linear(2, 2)}, "map_location": "cpu"}
        with pytest.raises(pickle.UnpicklingError):
            CheckpointLoader(**args)(Engine(lambda engine, batch: None))
        assert not marker.exists()


@pytest.mark.slow
def test_inference_config_checkpoint_loader_refuses(evil, tmp_path):
    # End to end: the bundle's own inference.json, parsed as `monai.bundle run` would, with bundle_root holding the
    # malicious models/model.pt.
    from ignite.engine import Engine
    from monai.bundle import ConfigParser

    path, marker = evil
    bundle = BUNDLES[0]
    root = path.parents[1]
    shutil.copytree(bundle / "configs", root / "configs")
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    parser["device"] = "$torch.device('cpu')"
    index = next(i for i, h in enumerate(parser["handlers"]) if h.get("_target_") == "CheckpointLoader")
    loader = parser.get_parsed_content(f"handlers#{index}")
    with pytest.raises(pickle.UnpicklingError):
        loader(Engine(lambda engine, batch: None))
    assert not marker.exists()


def _torch_load_calls() -> Iterator[tuple[Path, ast.Call]]:
    for path in sorted((REPO / "spine_monai").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == "load" and ast.unparse(func.value) == "torch":
                yield path, node


def test_every_torch_load_in_the_package_is_weights_only():
    calls = list(_torch_load_calls())
    assert calls  # export.load_weights, package._check_weights, ...
    for path, call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        assert ok, f"{path.relative_to(REPO)}:{call.lineno}: torch.load without weights_only=True"
