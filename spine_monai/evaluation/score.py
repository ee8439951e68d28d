"""Score a written segmentation against a reference label: ``python -m spine_monai score PRED LABEL``.

For checks on scans outside a datalist (a real CT next to its reference, a ``segment`` output): both files are read
with nibabel (NIfTI) and must share the voxel grid (shape and affine, as ``segment`` writes its labels in the input's
geometry; the same grid with flipped or reordered axes, e.g. LPS beside LAS, is reoriented first). A reference with
other values than the prediction's (VerSe ids 20-25 for the lumbar vertebrae, the TotalSegmentator ids of its
``vertebrae_*`` structures) is scored as one spine class with ``foreground``: the listed reference values are spine,
every other value background, and every non-zero predicted voxel is spine. Metrics are those of
:func:`spine_monai.metrics.segmentation.case_metrics` (Dice, Jaccard, precision, recall in [0, 1], surface distances
in mm from the label's header).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine_monai.errors import InputError

__all__ = ["score", "parse_values"]

logger = logging.getLogger(__name__)


def parse_values(values: str | int | Sequence[int] | None) -> list[int] | None:
    """``"21,22,23"``, ``"27-33"``, ``"21-23,26"``, an int or a list -> sorted list of ints (None stays None).

    Raises:
        ValueError: for a value that is not an integer or a range ``a-b`` with ``a <= b``.
    """
    if values is None:
        return None
    if isinstance(values, int):
        return [values]
    if isinstance(values, str):
        out: set[int] = set()
        for part in values.replace(" ", "").split(","):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            try:
                a, b = int(lo), int(hi) if sep else int(lo)
            except ValueError:
                raise ValueError(f"foreground: {part!r} is not an integer or a range a-b.") from None
            if b < a:
                raise ValueError(f"foreground: empty range {part!r}.")
            out.update(range(a, b + 1))
        return sorted(out)
    return sorted(int(v) for v in values)


def _load(path: str | os.PathLike, what: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} not found.")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same to the user
        raise InputError(f"{p}: cannot be read as NIfTI ({type(err).__name__}: {err}).") from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{p}: expected a 3D label map, got shape {data.shape}.")
    if not np.all(np.isfinite(data)) or np.any(np.round(data) != data):
        raise InputError(f"{p}: a label map holds integer values; this one holds non-integer or non-finite values.")
    return data.astype(np.int64), img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


def _reoriented(data: np.ndarray, affine: np.ndarray, target: np.ndarray, atol: float) -> tuple[np.ndarray, np.ndarray]:
    """``data`` flipped / transposed to the axis order of ``target`` when that makes the voxel grids coincide (a label
    written LPS beside a reference written LAS on the same DICOM grid); otherwise unchanged."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(affine), nio.io_orientation(target))
    moved = nio.apply_orientation(data, transform)
    moved_aff = affine @ nio.inv_ornt_aff(transform, data.shape)
    if np.allclose(moved_aff, target, atol=atol):
        logger.info("the prediction's axes were flipped / reordered to the reference's orientation (%s -> %s); "
                    "same voxel grid", "".join(nio.aff2axcodes(affine)), "".join(nio.aff2axcodes(target)))
        return np.ascontiguousarray(moved), moved_aff
    return data, affine


def score(pred: str, label: str, foreground: str | Sequence[int] | None = None, classes: str | None = None,
          out: str | None = None, atol: float = 1e-3) -> dict[str, Any]:
    """Score ``pred`` against ``label`` and print (and optionally write) the metrics.

    Args:
        pred: predicted label map (NIfTI).
        label: reference label map (NIfTI), on the same voxel grid.
        foreground: reference values that count as spine, e.g. ``"21-23"`` (VerSe L2-L4) or ``"27-33"``
            (TotalSegmentator L5-T11); binary scoring. Default: the values are compared as they are, per class.
        classes: with ``foreground`` unset, the class values to score (``"1,2,3"``); default all non-zero values of
            either map.
        out: optional JSON file for the result.
        atol: tolerance (mm) of the affine comparison.

    Returns:
        ``{"pred", "label", "foreground", "classes": {class: metrics}, "mean": {metric: mean over classes}}``.

    Raises:
        InputError: naming the file, for a missing or unreadable file, a non-integer map, or grids that differ.
        ValueError: for a malformed ``foreground`` / ``classes``.
    """
    from spine_monai.metrics.segmentation import METRICS, case_metrics

    p, p_aff, _ = _load(pred, "prediction")
    t, t_aff, spacing = _load(label, "reference label")
    if not np.allclose(p_aff, t_aff, atol=atol):
        p, p_aff = _reoriented(p, p_aff, t_aff, atol)
    if p.shape != t.shape:
        raise InputError(f"{pred}: shape {p.shape} differs from the reference {label} {t.shape}; score a label "
                         "written in the reference's geometry.")
    if not np.allclose(p_aff, t_aff, atol=atol):
        raise InputError(f"{pred}: its affine differs from the reference {label}'s (max difference "
                         f"{float(np.abs(p_aff - t_aff).max()):.4g} mm); score a label written in the reference's "
                         "geometry.")
    fg = parse_values(foreground)
    if fg is not None:
        missing = sorted(set(fg) - set(np.unique(t).tolist()))
        if len(missing) == len(fg):
            raise InputError(f"{label}: none of the foreground values {fg} occurs in the reference (its values: "
                             f"{np.unique(t).tolist()[:20]}).")
        t = np.isin(t, fg).astype(np.int64)
        p = (p > 0).astype(np.int64)
        labels = [1]
    else:
        labels = parse_values(classes)
    per_class = case_metrics(p, t, spacing, labels=labels)
    mean = {m: float(np.mean([v[m] for v in per_class.values()])) for m in METRICS}
    result = {"pred": str(pred), "label": str(label), "foreground": fg,
              "classes": {str(c): {k: float(v) for k, v in m.items()} for c, m in per_class.items()}, "mean": mean}
    for c, m in per_class.items():
        logger.info("%s vs %s, class %s: Dice %.2f %%, Jaccard %.2f %%, precision %.2f %%, recall %.2f %%, "
                    "HD95 %.2f mm", Path(pred).name, Path(label).name, c, 100 * m["dice"], 100 * m["jaccard"],
                    100 * m["precision"], 100 * m["recall"], m["hd95"])
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
