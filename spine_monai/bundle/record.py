"""The configuration record a trained model carries: what is needed to rebuild its network and pre-processing.

Not tied to a paper: this is the project's answer to "a model trained with overrides cannot be used without retyping
them". Every checkpoint that training writes (``models/model.pt``) gets a small readable JSON file beside it,
``models/model_config.json`` (for ``foo.pt``: ``foo_config.json``), written by
:class:`spine_monai.handlers.CheckpointManager`:

.. code-block:: json

    {"format": "spine_monai.model_config/1", "bundle": "saunet_spine_mri_segmentation", "bundle_version": "0.3.0",
     "weights": "model.pt", "sha256": "...", "overlays": [],
     "settings": {"pixdim": [4.0, 2.0, 2.0], "features": [8, 16, 32, 64, 128], "use_isa": true, "roi_size": [...]},
     "metric": {"name": "val_mean_dice", "value": 0.83, "epoch": 40}, "written": "2026-12-02T08:10:00+00:00"}

- ``settings`` holds the resolved values of the ids a bundle lists in its ``model_settings`` config entry (the
  network's hyper-parameters and the pre-processing geometry: the same ids in ``train.json`` and ``inference.json``),
  whatever set them: the defaults, an overlay such as ``real_lumbar_mri.json``, or command-line overrides.
- ``overlays`` lists the overlays that replace a component (an overlay that swaps ``network_def`` appends its name to
  the ``overlays`` list with MONAI's ``"+overlays"`` merge key); overlays that only change constants need no entry,
  because their values are in ``settings``.

Who reads it:

- ``inference.json`` reads the record of its ``ckpt_path`` (``models/model.pt`` by default) in its ``model_config``
  entry and takes each setting from it, with its own default where there is no record
  (``"$@model_config.get('features', [16, 32, 64, 128, 256])"``); so ``monai.bundle run``, MONAI Label and a zip
  installed elsewhere rebuild the trained network with no flag. Its ``initialize`` calls :func:`check_settings`, so an
  override that contradicts the record stops the run with one line naming the setting.
- The Python commands (``segment``, ``export``, ``package``, ``crossval``/``compare``) call :func:`inference_overrides`,
  which also applies the recorded overlays.

A file without a record (weights from elsewhere, older runs) is used with the config's defaults plus the user's
overrides, as before; a state dict that then does not fit gives the one-line error of
:func:`spine_monai.export.load_network`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spine_monai.errors import InputError

__all__ = [
    "FORMAT",
    "FREE_SETTINGS",
    "record_path",
    "read_record",
    "read_settings",
    "write_record",
    "check_settings",
    "inference_overrides",
    "sha256_file",
    "as_bool",
]

logger = logging.getLogger(__name__)

FORMAT = "spine_monai.model_config/1"
#: settings that may differ between training and inference without changing what the weights compute: window sizes,
#: and the attention mask's smoothing, threshold and dilation (chosen on validation cases by training and recorded
#: with the localisation weights, but a user may set them for a scan).
FREE_SETTINGS = frozenset({"roi_size", "sw_batch_size", "slice_chunk", "attention_sigma", "attention_threshold",
                           "attention_dilation"})


def as_bool(value: Any, name: str = "flag") -> bool:
    """A boolean from a config or command-line value: ``fire`` passes ``--resume true`` as the string ``"true"``.

    Raises:
        ValueError: for anything but a bool, 0/1, or true/false/yes/no/1/0 (any case).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise InputError(f"--{name} {value!r}: expected true or false.")


def record_path(weights: str | os.PathLike) -> Path:
    """The record beside a weights file: ``model.pt`` -> ``model_config.json``."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}_config.json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_record(weights: str | os.PathLike) -> dict[str, Any] | None:
    """The record of ``weights`` (``None`` when there is none).

    Raises:
        ValueError: one line naming the file, if the record exists but is not a readable record.
    """
    path = record_path(weights)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable model record ({type(err).__name__}: {err}).") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("settings"), dict):
        raise InputError(f"{path}: not a {FORMAT} record (delete it to use the config's defaults).")
    if not isinstance(record.get("overlays", []), list):
        raise InputError(f"{path}: 'overlays' must be a list.")
    return record


def read_settings(weights: str | os.PathLike) -> dict[str, Any]:
    """The recorded ``settings`` of ``weights`` (``{}`` without a record); used by ``inference.json``."""
    record = read_record(weights)
    return dict(record["settings"]) if record else {}


def _plain(value: Any) -> Any:
    """A JSON-compatible copy (tuples -> lists, tensors/arrays -> lists, numpy scalars -> Python)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise InputError(f"setting value {value!r} ({type(value).__name__}) cannot be recorded; use JSON values.")


def _bundle_meta(bundle_root: str | os.PathLike | None) -> tuple[str | None, str | None]:
    if bundle_root is None:
        return None, None
    root = Path(bundle_root)
    try:
        meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return root.name, None
    return root.name, meta.get("version")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_record(weights: str | os.PathLike, settings: Mapping[str, Any], overlays: Sequence[str] = (),
                 bundle_root: str | os.PathLike | None = None, metric: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write the record of ``weights`` atomically (temporary file, fsync, rename) and return its path."""
    weights = Path(weights)
    name, version = _bundle_meta(bundle_root)
    record = {
        "format": FORMAT,
        "bundle": name,
        "bundle_version": version,
        "weights": weights.name,
        "sha256": sha256_file(weights) if weights.is_file() else None,
        "overlays": [str(o) for o in overlays],
        "settings": _plain(dict(settings)),
        "metric": _plain(dict(metric)) if metric else None,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(_plain(dict(extra)) if extra else {}),
    }
    path = record_path(weights)
    _atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _fmt(value: Any) -> str:
    return json.dumps(_plain(value), separators=(",", ":"))


def check_settings(weights: str | os.PathLike, settings: Mapping[str, Any],
                   overlays: Sequence[str] | None = None) -> bool:
    """Refuse a run whose settings differ from those the weights were trained with.

    Called from ``inference.json``'s ``initialize`` (and by :func:`inference_overrides`). Settings in
    :data:`FREE_SETTINGS` may differ.

    Args:
        weights: the weights file the run loads.
        settings: the run's resolved ``model_settings``.
        overlays: the run's resolved ``overlays`` list (``None``: not checked).

    Returns:
        ``True`` when a record was found and matches, ``False`` when there is no record.

    Raises:
        ValueError: one line naming the first differing setting (or the missing overlay) and both values.
    """
    record = read_record(weights)
    if record is None:
        return False
    rec_path = record_path(weights)
    for key, trained in record["settings"].items():
        if key in FREE_SETTINGS or key not in settings:
            continue
        if not _same(trained, settings[key]):
            raise InputError(
                f"{weights}: trained with {key}={_fmt(trained)} ({rec_path.name}) but this run uses "
                f"{key}={_fmt(settings[key])}; drop --{key} or pass the trained value."
            )
    if overlays is not None:
        missing = [o for o in record.get("overlays", []) if o not in set(overlays)]
        if missing:
            raise InputError(
                f"{weights}: trained with overlay {missing[0]} ({rec_path.name}); add configs/{missing[0]}.json "
                "after inference.json (the spine_monai commands do this themselves)."
            )
    return True


def inference_overrides(weights: str | os.PathLike, overlays: Sequence[str] = (),
                        overrides: Mapping[str, Any] | None = None) -> tuple[list[str], dict[str, Any]]:
    """Overlays and overrides that rebuild the trained network for ``inference.json`` (Python commands).

    Args:
        weights: the weights file.
        overlays: overlays the user asked for.
        overrides: the user's overrides; one that contradicts a recorded setting is refused.

    Returns:
        ``(overlays, overrides)``: the user's overlays plus the recorded ones (in the recorded order, first), and the
        recorded settings, then the user's overrides, plus ``ckpt_path``.

    Raises:
        ValueError: for an override that differs from a recorded setting (one line naming it).
    """
    user = dict(overrides or {})
    record = read_record(weights)
    if record is None:
        return list(overlays), {**user, "ckpt_path": str(weights)}
    check_settings(weights, user)
    names = [o for o in record.get("overlays", []) if o not in overlays] + list(overlays)
    return names, {**record["settings"], **user, "ckpt_path": str(weights)}
