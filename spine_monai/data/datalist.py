"""Decathlon-style datalists with fixed k-fold assignments.

Every paper reproduced here reports k-fold cross-validation (SAU-Net: Zhang et al., 2020, section 4.2, "5 fixed
folds"; SAFNet: Yilizati-Yilihamu et al., 2023, BMC, section "Dataset", five-fold), so the folds are written into
the datalist once, from a seed, and every tool (bundles, cross-validation, the real-data adapter) reads the same
split.

Layout written by :func:`write_datalist`::

    {"name": ..., "folds": k, "seed": s, "numTraining": n,
     "training": [{"image": "imagesTr/case_000.nii.gz", "label": "...", "fold": 2, ...}, ...],
     ...extra top-level keys}

Paths are stored relative to the datalist's folder so the dataset folder can be moved; :func:`load_datalist`
returns absolute paths.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_folds", "write_datalist", "load_datalist", "PATH_KEYS", "SPLITS"]

#: item keys that always hold file paths (other string values are treated as paths when such a file exists).
PATH_KEYS: tuple[str, ...] = ("image", "label", "label_multiclass", "label_binary")
#: item keys that are never paths.
_ID_KEYS: tuple[str, ...] = ("case", "case_id", "name")
#: values of ``split`` accepted by :func:`load_datalist`.
SPLITS: tuple[str, ...] = ("train", "val", "all")

_NII_EXT = re.compile(r"(\.nii\.gz|\.nii|\.nrrd|\.mha|\.mhd|\.npy|\.npz|\.png)$", re.IGNORECASE)


def make_folds(case_ids: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Assign cases to ``folds`` folds: a seeded shuffle of the sorted ids, then round-robin.

    Sorting first makes the assignment independent of the order the ids are given in; round-robin makes the fold
    sizes differ by at most one.

    Args:
        case_ids: unique case identifiers.
        folds: number of folds, ``2 <= folds <= len(case_ids)``.
        seed: seed of the shuffle (``numpy.random.default_rng``).

    Returns:
        ``{case_id: fold}`` with folds in ``0 .. folds - 1``.

    Raises:
        ValueError: if ``folds`` is out of range or the ids are not unique.
    """
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        dup = sorted({c for c in ids if ids.count(c) > 1})
        raise ValueError(f"case ids must be unique, duplicated: {dup}.")
    if not isinstance(folds, (int, np.integer)) or folds < 2 or folds > len(ids):
        raise ValueError(f"--folds {folds!r} must be an integer between 2 and the number of cases ({len(ids)}).")
    order = np.random.default_rng(seed).permutation(len(ids))
    ordered = sorted(ids)
    return {ordered[int(j)]: i % int(folds) for i, j in enumerate(order)}


def _case_id(item: dict[str, Any], index: int) -> str:
    """Case id of an item: ``case_id``, else ``case``, else the image file name without extension."""
    for key in ("case_id", "case"):
        if key in item:
            return str(item[key])
    image = item.get("image")
    if isinstance(image, (list, tuple)):
        image = image[0] if image else None
    if image is None:
        raise ValueError(f"item {index} has no 'case_id', 'case' or 'image' to identify it: {item}.")
    return _NII_EXT.sub("", Path(str(image)).name)


def _to_relative(value: Any, key: str, base: Path) -> Any:
    """Path(s) ``value`` relative to ``base`` (posix separators) when ``key`` holds paths, else unchanged."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [_to_relative(v, key, base) for v in value]
    if not isinstance(value, (str, os.PathLike)):
        return value
    path = Path(value)
    if key not in PATH_KEYS and (key in _ID_KEYS or not path.is_file()):
        return value
    rel = os.path.relpath(path.resolve(), base.resolve())
    return Path(rel).as_posix()


def write_datalist(items: list[dict], out_path: str | os.PathLike, folds: int, seed: int, **extra: Any) -> Path:
    """Write a Decathlon-style datalist JSON with a ``fold`` per training item.

    Args:
        items: ``[{"image": path, "label": path, ...}, ...]``; paths absolute or relative to the current directory.
            The case id (used for the folds) is ``case_id``, else ``case``, else the image file name. If every item
            already has an integer ``fold`` those are kept (e.g. patient-grouped folds); otherwise folds come from
            :func:`make_folds`.
        out_path: the JSON file to write (its folder is created).
        folds: number of folds.
        seed: fold seed.
        **extra: extra top-level keys (``name`` sets the dataset name; e.g. ``labels``, ``modality``,
            ``description``). Must be JSON-serialisable.

    Returns:
        The written path.

    Raises:
        ValueError: if ``items`` is empty, ``folds`` is out of range, only some items carry a fold, or an extra key
            would overwrite ``training``, ``folds`` or ``seed``.
    """
    if not items:
        raise ValueError("items is empty: a datalist needs at least one case.")
    clash = {"training", "folds", "seed", "numTraining"} & set(extra)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} are reserved.")
    out = Path(out_path)
    base = out.parent
    ids = [_case_id(item, i) for i, item in enumerate(items)]
    given = ["fold" in item for item in items]
    if all(given):
        if folds < 2:
            raise ValueError(f"--folds {folds!r} must be at least 2.")
        bad = [item["fold"] for item in items if not isinstance(item["fold"], (int, np.integer))
               or not 0 <= item["fold"] < folds]
        if bad:
            raise ValueError(f"given folds {bad} are not integers in 0..{folds - 1}.")
        fold_of = [int(item["fold"]) for item in items]
    elif any(given):
        raise ValueError("either every item or no item may carry a 'fold'.")
    else:
        assignment = make_folds(ids, folds, seed)
        fold_of = [assignment[cid] for cid in ids]
    training = []
    for item, fold in zip(items, fold_of, strict=True):
        entry = {key: _to_relative(value, key, base) for key, value in item.items() if key != "fold"}
        entry["fold"] = fold
        training.append(entry)
    name = extra.pop("name", base.resolve().name)
    data = {"name": name, "folds": int(folds), "seed": int(seed), "numTraining": len(training), **extra,
            "training": training}
    base.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return out


def _to_absolute(value: Any, key: str, base: Path) -> Any:
    """Inverse of :func:`_to_relative`: join path values with ``base``."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [_to_absolute(v, key, base) for v in value]
    if not isinstance(value, str):
        return value
    path = Path(value) if Path(value).is_absolute() else base / value
    if key not in PATH_KEYS and (key in _ID_KEYS or not path.is_file()):
        return value
    return os.path.normpath(str(path))


def load_datalist(path: str | os.PathLike, fold: int | None = None, split: str = "train") -> list[dict]:
    """Read a datalist written by :func:`write_datalist` and select a split.

    Args:
        path: the datalist JSON.
        fold: the held-out fold; ``None`` returns every item whatever ``split`` is.
        split: ``"train"`` (every fold except ``fold``), ``"val"`` (only ``fold``) or ``"all"``.

    Returns:
        The selected ``training`` items with absolute paths (``image``, ``label`` and any other value that names an
        existing file; ``case``/``case_id`` are never touched).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``split`` is unknown, ``fold`` is out of range, the file has no ``training`` list, or a
            fold is requested from items without folds.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: datalist not found.")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}.")
    data = json.loads(p.read_text(encoding="utf-8"))
    items = data.get("training")
    if not isinstance(items, list):
        raise ValueError(f"{p}: no 'training' list.")
    n_folds = data.get("folds")
    if fold is not None and split != "all":
        if n_folds is None or any("fold" not in item for item in items):
            raise ValueError(f"{p}: fold={fold} requested but the items carry no 'fold'.")
        if not 0 <= int(fold) < int(n_folds):
            raise ValueError(f"fold={fold!r} must be in 0..{int(n_folds) - 1} for {p}.")
    base = p.parent.resolve()
    selected = []
    for item in items:
        if fold is not None and split == "train" and item["fold"] == int(fold):
            continue
        if fold is not None and split == "val" and item["fold"] != int(fold):
            continue
        selected.append({key: _to_absolute(value, key, base) for key, value in item.items()})
    return selected


def label_values(path: str | os.PathLike, default: Sequence[int] = (0, 1)) -> list[int]:
    """The label values a training datalist declares, for ``ValidateLabeld`` in ``train.json``.

    Order: the datalist's ``label_values`` (written by ``python -m spine_monai datalist`` from the label files it
    found), else the integer keys of its ``labels`` map (the phantoms: ``{0, 1}``, or the 20 MRSpineSeg ids with
    ``binary=False``), else ``default``. A missing datalist (MONAI Label passes its own data) gives ``default``.
    """
    p = Path(path)
    if not p.is_file():
        return [int(v) for v in default]
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [int(v) for v in default]
    values = data.get("label_values")
    if isinstance(values, list) and values and all(isinstance(v, int) for v in values):
        return sorted({0, *values})
    labels = data.get("labels")
    if isinstance(labels, dict):
        keys = [int(k) for k in labels if str(k).lstrip("-").isdigit()]
        if keys:
            return sorted({0, *keys})
    return [int(v) for v in default]
