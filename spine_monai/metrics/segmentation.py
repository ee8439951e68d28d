"""Per-case, per-class segmentation metrics (overlap, error rates, surface distances in mm) and their aggregation.

Metric definitions follow the papers this project implements:
- Zhou, Wen, Liu, Wang, Wang et al., "Review of Deep Learning Models for Spine Segmentation", ICMR 2022,
  DOI 10.1145/3512527.3531356, Section 4.3, Eq. (2) Dice, (3) IoU, (4) FNR = FN / (FN + TP),
  (5) FPR = FP / (FP + TN), (6) recall = TP / (TP + FN). FPR is the standard fall-out: its denominator holds all
  ground-truth negatives (TN + FP), so on a large image it is small (the paper's Table 1 reports 0.1-2.7 %).
- Zhang et al., "SAU-Net: Efficient 3D Spine MRI Segmentation Using Inter-Slice Attention", MIDL 2020, Section 4.1:
  Dice, Jaccard, Hausdorff distance (mm), precision, recall.
- Yilizati-Yilihamu et al., "A spine segmentation method based on scene aware fusion network", BMC Neuroscience
  2023: mean surface distance (MSD).

All computations are delegated to MONAI: counts from ``monai.metrics.get_confusion_matrix`` and ratios from
``compute_confusion_matrix_metric`` (Dice = "f1 score", Jaccard = "threat score", identical to ``compute_dice`` /
``compute_iou``), surface distances from ``monai.metrics.utils.get_edge_surface_distance`` (called once per class,
symmetric, with the voxel spacing) reduced exactly as ``compute_hausdorff_distance`` (``hd``: maximum; ``hd95``:
the larger of the two directed 95th percentiles) and ``compute_average_surface_distance(symmetric=True)`` (``msd``:
mean over the edge voxels of both surfaces) do. Distances are in the unit of ``spacing`` (mm for NIfTI headers).

Empty masks (documented convention, applied before MONAI so no NaN/inf ever reaches a mean):
- Both prediction and ground truth empty for a class: dice = jaccard = precision = recall = 1, fnr = 0, fpr = 0 and
  hd = hd95 = msd = 0 (a perfect answer).
- Exactly one of them empty: dice = jaccard = 0; every ratio whose denominator is 0 gets its worst value
  (precision 0 when nothing is predicted, recall 0 and fnr 1 when the ground truth is empty), so fnr = 1 - recall
  always holds; hd = hd95 = msd = the physical diagonal of the image, ``sqrt(sum((n_i * s_i) ** 2))``, which is
  larger than any distance between two voxels of the image, so a missed or hallucinated structure always scores
  worse than any real prediction. The penalty is finite, so :func:`aggregate` averages it like any other value.
- fpr with no ground-truth negative (the label covers the whole image) is 0: no voxel could be a false positive.
The per-case rows carry ``label_voxels`` and ``pred_voxels`` so that penalised cases are visible in the CSV.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix
from monai.metrics.utils import get_edge_surface_distance
from monai.utils import optional_import

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = [
    "METRICS",
    "OVERLAP_METRICS",
    "DISTANCE_METRICS",
    "case_metrics",
    "level_identification",
    "aggregate",
    "evaluate_pairs",
    "write_metrics_csv",
    "metrics_markdown_table",
]

logger = logging.getLogger(__name__)

OVERLAP_METRICS: tuple[str, ...] = ("dice", "jaccard", "precision", "recall", "fnr", "fpr")
DISTANCE_METRICS: tuple[str, ...] = ("hd", "hd95", "msd")
METRICS: tuple[str, ...] = OVERLAP_METRICS + DISTANCE_METRICS
MEAN_OVER_CLASSES = "mean over classes"
# MONAI confusion-matrix metric name -> (our name, value when the denominator is 0 and both masks are empty,
# value when the denominator is 0 and exactly one mask is empty).
_CM_METRICS = {
    "f1 score": ("dice", 1.0, 0.0),
    "threat score": ("jaccard", 1.0, 0.0),
    "precision": ("precision", 1.0, 0.0),
    "recall": ("recall", 1.0, 0.0),
    "miss rate": ("fnr", 0.0, 1.0),
    "fall out": ("fpr", 0.0, 0.0),
}


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_label_map(x: np.ndarray, what: str) -> np.ndarray:
    """Integer label map from an integer, boolean or integral floating array; ValueError otherwise."""
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
        return x.astype(np.int64, copy=False)
    if np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and np.array_equal(x, np.round(x)):
        return x.astype(np.int64)
    raise ValueError(f"{what} must be an integer label map (or one-hot of 0/1), got non-integral values of {x.dtype}.")


def _class_masks(
    pred: np.ndarray, label: np.ndarray, n_spatial: int, labels: Sequence[int] | None, include_background: bool
) -> tuple[list[int], Any, Any]:
    """Return the class ids and two callables ``cls -> bool mask`` for prediction and label."""
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got {pred.shape} and {label.shape}.")
    one_hot = pred.ndim == n_spatial + 1 and pred.shape[0] > 1
    if pred.ndim == n_spatial + 1 and pred.shape[0] == 1:  # (1, H, W[, D]): a channel-first label map
        pred, label = pred[0], label[0]
    elif pred.ndim not in (n_spatial, n_spatial + 1):
        raise ValueError(f"inputs of shape {pred.shape} do not match {n_spatial} spatial dims given by spacing.")
    pred, label = _as_label_map(pred, "pred"), _as_label_map(label, "label")
    if one_hot:
        n_ch = pred.shape[0]
        if pred.min() < 0 or pred.max() > 1 or label.min() < 0 or label.max() > 1:
            raise ValueError("one-hot inputs (C, ...) must hold only 0 and 1.")
        default = list(range(0 if include_background else 1, n_ch))
        classes = default if labels is None else [int(c) for c in labels]
        bad = [c for c in classes if not 0 <= c < n_ch]
        if bad:
            raise ValueError(f"labels {bad} are not channel indices of one-hot inputs with {n_ch} channels.")
        return classes, lambda c: pred[c] > 0, lambda c: label[c] > 0
    if labels is None:
        present = np.union1d(np.unique(pred), np.unique(label))
        classes = [int(c) for c in present if include_background or c != 0]
    else:
        classes = [int(c) for c in labels]
    return classes, lambda c: pred == c, lambda c: label == c


def _surface_distances(p: np.ndarray, g: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    """(hd, hd95, msd) of two non-empty boolean masks, reduced as MONAI's compute_* functions do."""
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        _, dists, _ = get_edge_surface_distance(
            torch.from_numpy(p), torch.from_numpy(g), spacing=list(spacing), symmetric=True, warn_empty=False
        )
    hd = max(float(d.max()) for d in dists)
    hd95 = max(float(torch.quantile(d.float(), 0.95)) for d in dists)
    msd = float(torch.cat(dists).float().mean())
    return hd, hd95, msd


def case_metrics(
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    labels: Sequence[int] | None = None,
    include_background: bool = False,
) -> dict[int, dict[str, float]]:
    """Metrics of one case, per class (see the module docstring for definitions and empty-mask values).

    Args:
        pred: predicted integer label map ``(H, W[, D])`` (also ``(1, H, W[, D])``) or one-hot ``(C, H, W[, D])``.
        label: ground truth of the same shape and kind as ``pred``.
        spacing: physical voxel size per spatial axis, e.g. ``(0.5, 0.5, 3.0)`` mm; its length sets the number of
            spatial dims (2 or 3). Anisotropic spacing is honoured by all distances.
        labels: class values (label maps) or channel indices (one-hot) to score. Default: for label maps the
            values present in either input, for one-hot all channels; class 0 (background) is left out unless
            ``include_background``. Pass the full class list when scoring a dataset so that a class absent from
            both masks of a case is scored (as a perfect both-empty case) instead of being skipped.
        include_background: keep class 0 in the default class list (ignored when ``labels`` is given).

    Returns:
        ``{class: {metric: value}}`` with the metrics of :data:`METRICS` plus ``label_voxels`` and ``pred_voxels``.

    Raises:
        ValueError: on mismatched shapes, a spacing of wrong length or non-positive values, non-integer label maps,
            one-hot inputs not in {0, 1}, or ``labels`` outside the channels of a one-hot input.
    """
    spacing = [float(s) for s in spacing]
    if len(spacing) not in (2, 3) or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must hold 2 or 3 positive values, got {spacing}.")
    classes, pred_mask, label_mask = _class_masks(
        _to_numpy(pred), _to_numpy(label), len(spacing), labels, include_background
    )
    out: dict[int, dict[str, float]] = {}
    for c in classes:
        p, g = pred_mask(c), label_mask(c)
        n_p, n_g = int(p.sum()), int(g.sum())
        empty_rule = 1 if n_p == n_g == 0 else (2 if n_p == 0 or n_g == 0 else 0)  # 0: none, 1: both, 2: one
        # (1, 1, H, W[, D]) one-hot tensors -> confusion matrix (1, 1, 4): tp, fp, tn, fn.
        # float64: float32 sums are inexact above 2**24 voxels (a 512 x 512 x 64 volume).
        cm = get_confusion_matrix(torch.from_numpy(p)[None, None].double(), torch.from_numpy(g)[None, None].double())
        row: dict[str, float] = {}
        for monai_name, (name, both_empty, one_empty) in _CM_METRICS.items():
            value = float(compute_confusion_matrix_metric(monai_name, cm).reshape(-1)[0])
            if math.isnan(value):  # 0 / 0: the documented convention
                value = {0: 0.0, 1: both_empty, 2: one_empty}[empty_rule] if name != "fpr" else 0.0
            row[name] = value
        if empty_rule == 1:
            hd = hd95 = msd = 0.0
        elif empty_rule == 2:
            hd = hd95 = msd = math.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, spacing, strict=True)))
        else:
            hd, hd95, msd = _surface_distances(p, g, spacing)
        row.update(hd=hd, hd95=hd95, msd=msd, label_voxels=float(n_g), pred_voxels=float(n_p))
        out[c] = row
    return out


def level_identification(
    pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, labels: Sequence[int] | None = None
) -> dict[int, dict[str, float]]:
    """Whether each labelled structure of a multi-class label map is found *with its own number*.

    For every class ``c`` present in ``label`` (or listed in ``labels`` and present), the predicted values inside
    the ground-truth structure are counted, background left out; the structure is ``identified`` when the most
    frequent predicted foreground value is ``c`` (ties go to the smaller value), ``missed`` when no voxel of it is
    predicted as foreground. A vertebra segmented well but numbered L3 instead of L4 thus counts as not identified
    although its binary overlap is perfect: this is the failure a multi-class spine model must avoid.

    Args:
        pred: predicted integer label map, same shape as ``label`` (a leading channel of 1 is dropped).
        label: ground-truth integer label map.
        labels: classes to check; default every non-zero value of ``label``.

    Returns:
        ``{c: {"identified": 0/1, "missed": 0/1, "assigned": majority predicted value (0 when missed),
        "assigned_share": share of the structure's predicted-foreground voxels holding that value}}`` for each class
        present in ``label``.

    Raises:
        ValueError: on mismatched shapes or non-integer label maps.
    """
    p = _as_label_map(_to_numpy(pred), "pred")
    g = _as_label_map(_to_numpy(label), "label")
    if p.shape[0] == 1 and p.ndim == g.ndim + 1:
        p = p[0]
    if g.shape[0] == 1 and g.ndim == p.ndim + 1:
        g = g[0]
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} != label shape {g.shape}.")
    present = [int(v) for v in np.unique(g) if v != 0]
    classes = present if labels is None else [int(c) for c in labels if int(c) in present]
    out: dict[int, dict[str, float]] = {}
    for c in classes:
        inside = p[g == c]
        inside = inside[inside != 0]
        if inside.size == 0:
            out[c] = {"identified": 0.0, "missed": 1.0, "assigned": 0.0, "assigned_share": 0.0}
            continue
        values, counts = np.unique(inside, return_counts=True)
        best = int(values[int(np.argmax(counts))])  # np.unique sorts: argmax takes the smaller value on ties
        out[c] = {"identified": float(best == c), "missed": 0.0, "assigned": float(best),
                  "assigned_share": float(counts.max() / inside.size)}
    return out


def _rows(per_case: Sequence[Mapping[Any, Any]]) -> list[Mapping[str, Any]]:
    """Accept flat rows ({"case", "class", metric...}) or case_metrics() outputs ({class: {metric...}})."""
    rows: list[Mapping[str, Any]] = []
    for i, item in enumerate(per_case):
        if "class" in item:
            rows.append(item)
        elif all(isinstance(k, (int, np.integer)) and isinstance(v, Mapping) for k, v in item.items()):
            rows.extend({"case": str(i), "class": int(k), **v} for k, v in item.items())
        else:
            raise ValueError(f"item {i} is neither a row with a 'class' key nor a case_metrics() result: {item!r:.80}")
    return rows


def _stats(values: Sequence[float], name: str, out: dict[str, float]) -> None:
    arr = np.asarray(values, dtype=np.float64)
    out[f"{name}_mean"] = float(arr.mean()) if arr.size else float("nan")
    out[f"{name}_std"] = float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def aggregate(per_case: Sequence[Mapping[Any, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of every metric, per class and averaged over classes.

    Args:
        per_case: rows from :func:`evaluate_pairs` (``{"case", "class", metric: value}``) or a list of
            :func:`case_metrics` results (one per case; the case id is the list position).

    Returns:
        ``{group: {"<metric>_mean": ..., "<metric>_std": ..., "n": ...}}`` where ``group`` is ``str(class)`` for
        each class and ``"mean over classes"`` for the class average: each case's metrics are first averaged over
        the classes of that case, then mean and std are taken over cases (``n`` = number of cases). The std is the
        sample standard deviation (ddof=1; 0 for one case). Empty masks already hold finite documented values, so
        no value is dropped and ``n`` counts all rows of the group.

    Raises:
        ValueError: if an item has an unknown layout, a metric is missing, or a value is NaN.
    """
    rows = _rows(per_case)
    by_class: dict[int, list[Mapping[str, Any]]] = {}
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        missing = [m for m in METRICS if m not in r]
        if missing or any(math.isnan(float(r[m])) for m in METRICS):
            raise ValueError(f"row of case {r.get('case')!r}, class {r['class']!r} misses {missing} or holds NaN.")
        by_class.setdefault(int(r["class"]), []).append(r)
        by_case.setdefault(str(r.get("case")), []).append(r)
    summary: dict[str, dict[str, float]] = {}
    for c in sorted(by_class):
        group: dict[str, float] = {}
        for m in METRICS:
            _stats([float(r[m]) for r in by_class[c]], m, group)
        group["n"] = float(len(by_class[c]))
        summary[str(c)] = group
    if by_case:
        group = {}
        for m in METRICS:
            _stats([float(np.mean([float(r[m]) for r in rs])) for rs in by_case.values()], m, group)
        group["n"] = float(len(by_case))
        summary[MEAN_OVER_CLASSES] = group
    return summary


def write_metrics_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write one line per case and class: ``case, class``, the metrics of :data:`METRICS`, then any other keys.

    Args:
        rows: flat rows as returned by :func:`evaluate_pairs`.
        path: output CSV file; parent folders are created.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["case", "class", *METRICS]
    fields += sorted({k for r in rows for k in r} - set(fields))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def metrics_markdown_table(
    summary: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("dice", "jaccard", "precision", "recall", "hd95", "msd"),
    class_names: Mapping[int | str, str] | None = None,
    percent: bool = True,
    digits: int = 2,
) -> str:
    """Render an :func:`aggregate` summary as a Markdown table, one row per group, cells ``mean ± std``.

    Args:
        summary: output of :func:`aggregate`.
        metrics: metric columns, in order.
        class_names: optional display name per class id (int or str key).
        percent: show overlap metrics (:data:`OVERLAP_METRICS`) in percent, as the papers do.
        digits: decimals.

    Returns:
        The table as a string (header, separator, rows), distances labelled ``(mm)``.

    Raises:
        ValueError: if a requested metric is unknown.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}.")
    names = {str(k): v for k, v in (class_names or {}).items()}
    unit = {m: (" (%)" if percent else "") for m in OVERLAP_METRICS} | {m: " (mm)" for m in DISTANCE_METRICS}
    lines = ["| class | n | " + " | ".join(f"{m}{unit[m]}" for m in metrics) + " |"]
    lines.append("|---|---|" + "---|" * len(metrics))
    for group, stats in summary.items():
        cells = []
        for m in metrics:
            k = 100.0 if percent and m in OVERLAP_METRICS else 1.0
            cells.append(f"{stats[f'{m}_mean'] * k:.{digits}f} ± {stats[f'{m}_std'] * k:.{digits}f}")
        lines.append(f"| {names.get(group, group)} | {int(stats['n'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_IMAGE_2D = (".png", ".bmp", ".tif", ".tiff")


def _read_label_2d(path: str | os.PathLike) -> np.ndarray:
    """A label image (PNG, BMP, TIFF) as an integer array ``(rows, cols)``; distances are then in pixels."""
    from PIL import Image

    with Image.open(str(path)) as img:
        arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{path}: a label image must have one channel, got shape {arr.shape}.")
    return _as_label_map(arr, str(path))


def _case_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii", *_IMAGE_2D):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def evaluate_pairs(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    labels: Sequence[int] | None = None,
    progress: bool = True,
    include_background: bool = False,
    binarize: bool = False,
) -> list[dict[str, Any]]:
    """Score NIfTI (prediction, label) pairs; spacing comes from the label's header (``get_zooms``). 2D label images
    (PNG, BMP, TIFF: no physical spacing) are scored on their pixel grid, distances in pixels.

    Args:
        pairs: ``(pred_path, label_path)`` per case; the case id is the label file name without ``.nii[.gz]``.
        labels: classes to score in every case (recommended; see :func:`case_metrics`).
        progress: show a tqdm progress bar when tqdm is installed.
        include_background: passed to :func:`case_metrics`.

    Returns:
        Flat rows ``{"case": str, "class": int, metric: float, ...}`` in case order, then class order.

    Raises:
        ValueError: naming both files when shapes or affines differ (affines compared with a 1e-3 tolerance), or
            when a file does not hold an integer label map.
    """
    import nibabel as nib

    rows: list[dict[str, Any]] = []
    it = tqdm(pairs, desc="metrics", disable=not progress) if _has_tqdm else pairs
    for pred_path, label_path in it:
        if str(pred_path).lower().endswith(_IMAGE_2D) or str(label_path).lower().endswith(_IMAGE_2D):
            arrays = [_read_label_2d(pred_path), _read_label_2d(label_path)]
            if arrays[0].shape != arrays[1].shape:
                raise ValueError(f"shape mismatch: prediction {pred_path} has {arrays[0].shape}, label {label_path} "
                                 f"has {arrays[1].shape}.")
            if binarize:
                arrays = [(a > 0).astype(np.uint8) for a in arrays]
                labels = [1]
            per_class = case_metrics(arrays[0], arrays[1], (1.0, 1.0), labels=labels,
                                     include_background=include_background)
            rows.extend(_with_identification(_case_name(label_path), per_class, arrays, labels, binarize))
            continue
        pred_img, label_img = nib.load(str(pred_path)), nib.load(str(label_path))
        if pred_img.shape != label_img.shape:
            raise ValueError(
                f"shape mismatch: prediction {pred_path} has {pred_img.shape}, "
                f"label {label_path} has {label_img.shape}."
            )
        if not np.allclose(pred_img.affine, label_img.affine, atol=1e-3):
            raise ValueError(
                f"affine mismatch: prediction {pred_path} has\n{pred_img.affine}\nlabel {label_path} has\n"
                f"{label_img.affine}"
            )
        spacing = [float(z) for z in label_img.header.get_zooms()[: len(label_img.shape)]]
        arrays = []
        for path, img in ((pred_path, pred_img), (label_path, label_img)):
            try:
                arrays.append(_as_label_map(np.asanyarray(img.dataobj), str(path)))
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from e
        if binarize:
            arrays = [(a > 0).astype(np.uint8) for a in arrays]
            labels = [1]
        per_class = case_metrics(arrays[0], arrays[1], spacing, labels=labels, include_background=include_background)
        rows.extend(_with_identification(_case_name(label_path), per_class, arrays, labels, binarize))
    return rows


def _with_identification(case: str, per_class: Mapping[int, Mapping[str, float]], arrays: Sequence[np.ndarray],
                         labels: Sequence[int] | None, binarize: bool) -> list[dict[str, Any]]:
    """Rows of one case; multi-class rows of structures present in the label also get the
    :func:`level_identification` fields ``identified``, ``missed`` and ``assigned``."""
    ident = {} if binarize else level_identification(arrays[0], arrays[1], labels)
    rows = []
    for c, m in per_class.items():
        row = {"case": case, "class": c, **m}
        if c in ident:
            row.update({k: ident[c][k] for k in ("identified", "missed", "assigned")})
        rows.append(row)
    return rows
