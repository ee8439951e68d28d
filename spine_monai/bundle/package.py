"""Check a bundle folder and write it as a model-zoo style zip, ``<out_dir>/<name>_v<version>.zip``.

Not tied to a paper: this implements the sharing conventions of the MONAI Model Zoo (Project-MONAI/model-zoo: one
top-level folder ``<name>/`` per zip, file name ``<name>_v<version>.zip``) and the project's bundle guide
(BUNDLES.md, "Layout" and "Sharing as a zip"). The reverse direction, installing a zip from someone else, is
:mod:`spine_monai.bundle.zipcheck`.

Checks run before anything is written (``run_checks=True``); each failure is a ``ValueError`` that names the check:

- ``required-files``: the files of the BUNDLES.md layout (:data:`REQUIRED_FILES`) exist;
- ``metadata``: ``configs/metadata.json`` validates against ``spine_monai/schemas/meta_schema.json`` (jsonschema, the
  schema :func:`monai.bundle.verify_metadata` would be given with ``--filepath``) and its ``changelog`` holds its
  ``version``;
- ``configs``: every ``configs/*.json|yaml`` parses; ``train.json`` and ``inference.json`` resolve every ``@``/``%``
  reference on their own, and every other config (an overlay) resolves them merged onto ``train.json`` or onto
  ``inference.json``. Only references are resolved here: no ``$`` expression and no component is run;
- ``net-in-out``: :func:`monai.bundle.verify_net_in_out` on ``network_def`` of ``inference.json`` (in process, on the
  CPU, ``"*"`` dimensions set to ``any_size``): output channels and dtype match ``network_data_format``;
- ``weights``: ``models/model.pt``, when present, loads with ``torch.load(weights_only=True)`` as a plain state dict
  into ``network_def`` of ``inference.json`` (which applies the record ``models/model_config.json``) with every key
  and shape matching; the record's sha256 must be that of ``model.pt`` and it must name no network overlay. A bundle
  with a second network (:data:`NETWORKS`: the attention-driven CT bundle's localisation net, ``localization_def``
  with ``models/localization.pt`` and its record ``localization_config.json``) gets the same check for that file
  against its config id, and its record must agree with ``<name>_settings`` of ``inference.json`` where the bundle
  defines it (the pre-processing the two networks share: two records of different runs are refused, as the zip's
  ``inference.json`` would refuse them). The model's record decides whether the second network is used (its setting
  ``use_localization``; true when absent, as in ``inference.json``): a used one must be present next to
  ``model.pt``, an unused one must not be shipped.

Both ``net-in-out`` and ``weights`` instantiate the bundle's network, i.e. run its configs' Python: package only
bundles you trust (:data:`spine_monai.bundle.zipcheck.SECURITY_WARNING`).

What goes into the zip: every regular file of the bundle except hidden files, ``__pycache__``/``*.pyc``, run outputs
(:data:`EXCLUDED_DIRS`: ``eval/``, ``runs/``, ``logs/``, ``mlruns/``) and, under ``models/``, anything but
:data:`WEIGHT_FILES` and, for a bundle whose ``inference.json`` defines a second network of :data:`NETWORKS`, that
network's files (``localization.pt``, ``.ts``, ``.onnx`` and ``localization_config.json``; training leaves other
checkpoints there). Members are deflated, carry no extra field, the fixed
date 1980-01-01 and mode 0644/0755, and come in sorted order, so the same bundle gives a byte-identical zip.
A symbolic link inside the bundle is refused (a zip member cannot safely be one). The zip is written to a temporary
file next to the target and renamed into place, so an interrupted run never leaves a partial zip.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "REQUIRED_FILES",
    "WEIGHT_FILES",
    "NETWORKS",
    "EXCLUDED_DIRS",
    "bundle_networks",
    "check_bundle",
    "bundle_files",
    "package_bundle",
]

logger = logging.getLogger(__name__)

REQUIRED_FILES = (
    "LICENSE",
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
)
WEIGHT_FILES = ("model.pt", "model.ts", "model.onnx", "model_config.json")
#: the networks a bundle may hold: name -> (config id in ``configs/inference.json``, weights file in ``models/``).
#: ``model`` (``network_def``) is every bundle's; a bundle has another one when its ``inference.json`` defines the id,
#: and that network is used unless the model's record sets ``use_<name>`` to false.
NETWORKS = {"model": ("network_def", "model.pt"), "localization": ("localization_def", "localization.pt")}
EXCLUDED_DIRS = frozenset({"eval", "runs", "logs", "mlruns", "__pycache__"})
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "meta_schema.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+\-]*$")


def _fail(check: str, root: Path, why: str) -> ValueError:
    return ValueError(f"bundle {root} failed check {check!r}: {why}")


def _check_required(root: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise _fail("required-files", root, f"missing {', '.join(missing)}")


def _check_metadata(root: Path) -> dict[str, Any]:
    import jsonschema

    path = root / "configs" / "metadata.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _fail("metadata", root, f"{path} is not valid UTF-8 JSON ({e})") from e
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    try:
        jsonschema.validate(meta, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        raise _fail("metadata", root, f"{path} does not match {SCHEMA.name} at {where}: {e.message}") from e
    if meta["version"] not in meta["changelog"]:
        raise _fail("metadata", root, f"changelog of {path} has no entry for version {meta['version']!r}")
    return meta


def _missing_refs(files: list[Path], root: Path) -> list[str]:
    """Reference ids (``@x``, ``$@x``, ``%x``) that do not resolve in the merged ``files``; nothing is executed."""
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    parser = ConfigParser()
    try:
        parser.read_config([str(f) for f in files])  # an overlay's "a#b" key needs "a" in the base
        parser["bundle_root"] = str(root)
        parser.parse(reset=True)  # resolves "%" macros and relative ids; raises KeyError for a missing macro target
    except (KeyError, ValueError) as e:
        return [str(e)]
    refs = ReferenceResolver.find_refs_in_config(parser.get(""), id="")
    return sorted(r for r in refs if r not in parser)


def _check_configs(root: Path) -> None:
    from monai.bundle import ConfigParser

    configs = sorted(p for p in (root / "configs").iterdir() if p.suffix in _CONFIG_SUFFIXES and p.is_file())
    for cfg in configs:
        try:
            content = ConfigParser.load_config_file(str(cfg))
        except Exception as e:  # json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError, ...
            raise _fail("configs", root, f"{cfg} does not parse ({type(e).__name__}: {e})") from e
        if not isinstance(content, dict):
            raise _fail("configs", root, f"{cfg} holds a {type(content).__name__}, not an object")
    bases = [root / "configs" / "train.json", root / "configs" / "inference.json"]
    for base in bases:
        missing = _missing_refs([base], root)
        if missing:
            raise _fail("configs", root, f"{base.name}: unresolved references {missing}")
    for cfg in configs:
        if cfg in bases or cfg.name == "metadata.json":
            continue
        tries = {base.name: _missing_refs([base, cfg], root) for base in bases}
        if all(tries.values()):
            detail = "; ".join(f"onto {b}: {m}" for b, m in tries.items())
            raise _fail("configs", root, f"overlay {cfg.name} has unresolved references ({detail})")


def _inference_parser(root: Path) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    parser["device"] = "cpu"
    return parser


def _check_net_in_out(root: Path, any_size: int) -> None:
    from monai.bundle import verify_net_in_out

    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(root / "configs" / "metadata.json"),
            config_file=str(root / "configs" / "inference.json"),
            device="cpu",
            any=any_size,
            bundle_root=str(root),
        )
    except Exception as e:  # ValueError on a mismatch, anything the network raises on the fake input
        raise _fail("net-in-out", root, f"verify_net_in_out on inference.json failed ({type(e).__name__}: {e})") from e


def _inference_ids(root: Path) -> frozenset[str]:
    """The top-level ids of a bundle folder's ``configs/inference.json`` (read as JSON, nothing is run; empty when
    it cannot be read)."""
    try:
        config = json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return frozenset()
    return frozenset(config) if isinstance(config, dict) else frozenset()


def bundle_networks(root: Path) -> list[str]:
    """Names of the :data:`NETWORKS` a bundle folder holds: ``model`` and each other one whose config id is defined
    in its ``configs/inference.json``."""
    ids = _inference_ids(root)
    return ["model", *(name for name, (net_id, _) in NETWORKS.items() if name != "model" and net_id in ids)]


def _weight_files(root: Path) -> frozenset[str]:
    """The files of ``models/`` that go into the zip: :data:`WEIGHT_FILES` plus those of the bundle's other networks
    (``<stem>.pt``, ``.ts``, ``.onnx`` and the record ``<stem>_config.json``)."""
    files = set(WEIGHT_FILES)
    for name in bundle_networks(root)[1:]:
        stem = Path(NETWORKS[name][1]).stem
        files.update({f"{stem}.pt", f"{stem}.ts", f"{stem}.onnx", f"{stem}_config.json"})
    return frozenset(files)


def _uses(root: Path, model: Path, name: str) -> bool:
    """Whether the weights ``model`` need the bundle's network ``name``: their record's ``use_<name>`` (true when
    there is no record or no such setting, as ``inference.json`` reads it)."""
    from spine_monai.bundle.record import as_bool, read_record

    try:
        record = read_record(model)
    except ValueError as e:
        raise _fail("weights", root, str(e)) from None
    value = (record or {}).get("settings", {}).get(f"use_{name}", True)
    try:
        return as_bool(value, f"use_{name}")
    except ValueError as e:
        raise _fail("weights", root, f"record of {model.name}: {e}") from None


def _check_weights_file(root: Path, path: Path, net_id: str, settings_id: str | None = None) -> None:
    """``path`` loads with ``weights_only=True`` as a plain state dict, its record matches it and names no network
    overlay, it fits ``net_id`` of ``inference.json`` (which applies the records itself) and, with ``settings_id``,
    its record agrees with those settings as ``inference.json`` resolves them (for a second network: the
    pre-processing it shares with ``model.pt``, whose record sets it; :func:`spine_monai.bundle.record.check_settings`,
    which the zip's inference would run first)."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for anything but tensors and plain containers
        raise _fail("weights", root, f"{path} does not load with torch.load(weights_only=True) ({e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail("weights", root, f"{path} is not a plain state dict of tensors")
    from spine_monai.bundle.record import read_record, record_path, sha256_file
    from spine_monai.export import _check_fits

    try:
        record = read_record(path)
    except ValueError as e:
        raise _fail("weights", root, str(e)) from None
    if record is not None:
        if record.get("sha256") and record["sha256"] != sha256_file(path):
            raise _fail("weights", root, f"{record_path(path).name} was written for other weights (sha256 differs "
                                         f"from {path.name}); retrain or copy the matching pair")
        if record.get("overlays"):
            raise _fail("weights", root, f"{path.name} was trained with overlay(s) {record['overlays']}, which "
                                         "inference.json alone cannot rebuild; package the weights of a run without "
                                         "network overlays")
    parser = _inference_parser(root)
    net = parser.get_parsed_content(net_id)
    try:
        _check_fits(net, state, path, root.name)
    except ValueError as e:
        raise _fail("weights", root, str(e)) from None
    if settings_id is not None and record is not None:
        from spine_monai.bundle.record import check_settings

        try:
            check_settings(path, parser.get_parsed_content(settings_id))
        except ValueError as e:
            why = str(e).partition("; drop --")[0]  # the hint for a run's override does not apply here
            raise _fail("weights", root, f"{path.name} and model.pt come from runs with other settings: {why}; "
                                         f"package the {path.name} of model.pt's run") from None


def _check_weights(root: Path) -> None:
    model = root / "models" / "model.pt"
    if model.is_file():
        _check_weights_file(root, model, "network_def")
    ids = _inference_ids(root)
    for name in bundle_networks(root)[1:]:
        net_id, file_name = NETWORKS[name]
        path = root / "models" / file_name
        used = not model.is_file() or _uses(root, model, name)  # a stage trained alone (no model.pt yet) is checked
        if model.is_file() and used and not path.is_file():
            raise _fail("weights", root, f"{path}: missing; model.pt (use_{name} true or not recorded) needs the "
                                         f"{name} network's weights beside it")
        if path.is_file() and not used:
            raise _fail("weights", root, f"{path}: not used by model.pt (its record sets use_{name} false); remove "
                                         "it, so the zip does not ship weights nothing checks or loads")
        if path.is_file():
            _check_weights_file(root, path, net_id, f"{name}_settings" if f"{name}_settings" in ids else None)


def check_bundle(bundle: str | os.PathLike, any_size: int = 16) -> dict[str, Any]:
    """Run every packaging check on a bundle folder (see the module docstring) and return its metadata.

    Args:
        bundle: bundle folder or name (resolved by :func:`spine_monai.bundle.runner.resolve_bundle`).
        any_size: size of each ``"*"`` dimension of the fake input of the ``net-in-out`` check.

    Returns:
        The parsed ``configs/metadata.json``.

    Raises:
        ValueError: ``bundle ... failed check '<check>': <why>`` for the first failed check.
        FileNotFoundError: if no bundle folder is found.
    """
    from spine_monai.bundle.runner import resolve_bundle

    if not isinstance(any_size, int) or isinstance(any_size, bool) or any_size < 1:
        raise ValueError(f"any_size must be a positive int, got {any_size!r}.")
    root = resolve_bundle(bundle)
    _check_required(root)
    meta = _check_metadata(root)
    _check_configs(root)
    _check_net_in_out(root, any_size)
    _check_weights(root)
    return meta


def bundle_files(root: Path, include_weights: bool = True) -> Iterator[Path]:
    """The files of a bundle folder that belong in its zip, sorted, relative to ``root``.

    Raises:
        ValueError: for a symbolic link or a special file inside the bundle.
    """
    weight_files = _weight_files(root)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        for d in list(dirnames):
            if (here / d).is_symlink():
                raise _fail("files", root, f"{rel_dir / d} is a symbolic link")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in EXCLUDED_DIRS)
        for name in sorted(filenames):
            rel = rel_dir / name
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            mode = os.lstat(here / name).st_mode
            if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
                raise _fail("files", root, f"{rel} is a symbolic link or not a regular file")
            if rel.parts[0] == "models" and (not include_weights or len(rel.parts) != 2 or name not in weight_files):
                continue
            yield rel


def _write_zip(root: Path, files: list[Path], name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel in files:
                src = root / rel
                info = zipfile.ZipInfo(f"{name}/{rel.as_posix()}", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                perm = 0o755 if os.access(src, os.X_OK) else 0o644
                info.external_attr = (stat.S_IFREG | perm) << 16
                with src.open("rb") as data, zf.open(info, "w", force_zip64=src.stat().st_size > 2**31) as out:
                    while chunk := data.read(1024**2):
                        out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stage_file(weights: Path, dest: Path, name: str) -> None:
    """Copy ``weights`` to ``dest`` with its record (``weights`` field set to ``name``), or warn that it has none."""
    import shutil

    from spine_monai.bundle.record import record_path

    shutil.copyfile(weights, dest)
    rec = record_path(weights)
    if rec.is_file():
        data = json.loads(rec.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data["weights"] = name
        record_path(dest).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        logger.warning("%s has no configuration record (%s); packaging it with the bundle's default settings",
                       weights, rec.name)


def _stage_with_weights(root: Path, weights: Path, work: Path) -> Path:
    """A copy of the bundle ``root`` in ``work/<name>`` whose ``models/`` holds only ``weights`` and its record, and,
    for a bundle with a second network that the weights use (:func:`_uses`), that network's weights file found next
    to ``weights`` (e.g. ``localization.pt``) with its record."""
    import shutil

    if not weights.is_file():
        raise _fail("weights", root, f"{weights}: weights file not found")
    others = []
    for name in bundle_networks(root)[1:]:
        file_name = NETWORKS[name][1]
        if _uses(root, weights, name):
            other = weights.with_name(file_name)
            if not other.is_file():
                raise _fail("weights", root, f"{other}: {name} weights not found; {weights.name} was trained with "
                                             f"use_{name} true (or has no record) and needs them next to it")
            others.append((other, file_name))
    staged = work / root.name
    for rel in bundle_files(root, include_weights=False):
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, staged / rel)
    (staged / "models").mkdir(parents=True, exist_ok=True)
    _stage_file(weights, staged / "models" / "model.pt", "model.pt")
    for other, file_name in others:
        _stage_file(other, staged / "models" / file_name, file_name)
    return staged


def package_bundle(bundle: str, out_dir: str = "dist", run_checks: bool = True, include_weights: bool = True,
                   any_size: int = 16, weights: str | None = None) -> str:
    """Check a bundle and write ``<out_dir>/<name>_v<version>.zip`` holding the folder ``<name>/``.

    Args:
        bundle: bundle folder or name (``bundles/<name>`` or ``<name>``).
        out_dir: folder that receives the zip (created when missing); an existing zip of the same name is replaced.
        run_checks: run :func:`check_bundle` first (only the metadata is read when ``False``).
        include_weights: add ``models/model.pt`` with its record ``model_config.json``, ``model.ts`` and
            ``model.onnx`` when present (and the same files of a second network, e.g. ``localization.pt``).
        any_size: see :func:`check_bundle`.
        weights: package a trained run instead of the bundle's own ``models/``: this weights file (e.g.
            ``runs/x/models/model.pt``) becomes ``models/model.pt`` of the zip, with its configuration record
            ``model_config.json``, so the installed zip segments with the run's settings and no flag. For a bundle
            with a second network (:data:`NETWORKS`) that these weights use, its weights next to them
            (``runs/x/models/localization.pt`` and ``localization_config.json``) are packaged too. The checks run on
            exactly what is zipped.

    Returns:
        Path of the written zip.

    Raises:
        ValueError: naming the failed check (see the module docstring; a second network's weights that ``weights``
            need but that are not next to them fail ``weights``, naming the file), or a bundle folder name that is
            not a plain name (the zip's top-level folder).
        FileNotFoundError: if no bundle folder is found.
    """
    from spine_monai.bundle.runner import resolve_bundle
    from spine_monai.bundle.zipcheck import _BUNDLE_NAME

    root = resolve_bundle(bundle)
    if weights is not None:
        with tempfile.TemporaryDirectory(prefix=".spine_monai-package-") as work:
            staged = _stage_with_weights(root, Path(weights).expanduser().resolve(), Path(work))
            return package_bundle(str(staged), out_dir=out_dir, run_checks=run_checks, include_weights=True,
                                  any_size=any_size)
    name = root.name
    if not _BUNDLE_NAME.match(name):
        raise ValueError(f"bundle folder name {name!r} is not a plain bundle name (letters, digits, '_', '.', '-').")
    meta = check_bundle(root, any_size=any_size) if run_checks else _check_metadata_light(root)
    if not _VERSION.match(meta["version"]):
        raise _fail("metadata", root, f"version {meta['version']!r} cannot be part of a zip file name")
    target = Path(out_dir) / f"{name}_v{meta['version']}.zip"
    out = target.parent.resolve()
    # an out_dir inside the bundle (e.g. <bundle>/dist) must not pack earlier zips into the new one
    files = [f for f in bundle_files(root, include_weights) if not (root / f).resolve().is_relative_to(out)]
    _write_zip(root, files, name, target)
    logger.info("packaged %s v%s (%d files) into %s", name, meta["version"], len(files), target)
    return str(target)


def _check_metadata_light(root: Path) -> dict[str, Any]:
    """Just the metadata fields the zip name needs (``run_checks=False``)."""
    path = root / "configs" / "metadata.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _fail("metadata", root, f"{path} is not valid UTF-8 JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("version"), str) or not meta["version"]:
        raise _fail("metadata", root, f"{path} has no 'version' string")
    return meta
