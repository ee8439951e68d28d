"""k-fold cross-validation of one bundle configuration: ``python -m spine_monai crossval BUNDLE --dataset_dir D``.

The papers validate by k-fold cross-validation on fixed folds (SAU-Net: Zhang et al., MIDL 2020, Section 4.2,
"random 5-fold cross-validation ... 5 fixed folds", 4 folds train, 1 tests; SAFNet: Yilizati-Yilihamu et al.,
BMC Neuroscience 2023, five-fold CV). For each fold this module trains with the bundle's ``train.json`` (+ overlays,
+ overrides), segments the held-out cases with ``inference.json`` (+ the same overlays) and scores the written labels
in the original image geometry with :func:`spine_monai.metrics.segmentation.evaluate_pairs`.

Layout of ``out``::

    folds.json               the datalist with the fold of every case (reused by every method and every run)
    fold_<k>/models/model.pt, fold_<k>/train_logs/, fold_<k>/pred/*_seg.nii.gz
    fold_<k>/metrics.csv     per case; fold_<k>/result.json marks the fold done (resume skips it)
    metrics.csv              all folds; summary.json, summary.md: per fold, mean ± std over folds, pooled cases

Resuming: a run that stopped (killed, out of time) continues with the same command. Folds with a ``result.json`` are
skipped (their settings must match). The interrupted fold trains again with ``resume=True``: from
``fold_<k>/models/checkpoint.pt``, after its last completed epoch (:class:`spine_monai.handlers.CheckpointManager`;
the best model so far is kept; a fold stopped after its last epoch trains no further), or from epoch 1 when it had
not completed one; its inference is then redone from scratch (``pred/`` is cleared). Its ``train_s`` adds up the
attempts, each up to its last checkpoint (``fold_<k>/train_time.json``). ``overwrite`` starts every fold over.

Choices: the "± std" beside each mean is the sample standard deviation over the fold means (the paper's stds, 0.1-1.2
points, are of that size); the pooled per-case mean ± std is reported as well. Inference time per volume is the
time from fetching a volume to its label file being written (loading, preprocessing, network, inversion, saving),
one-off setup excluded.

Case groups: where the datalist gives a case a ``"group"`` (or, as the CT phantoms' datalist does, a
``"pathology"`` list such as ``["wedge_fracture@T10"]``, grouped by :func:`case_group` into ``"fractured"`` and
``"healthy"``), every fold also reports ``<metric>_<group>`` (e.g. ``dice_fractured``), the mean over that fold's test
cases of the group; the summary's ``across_folds`` takes the mean ± std over the folds that tested any case of the
group (its ``n`` says how many). This is the analogue of Sekuboyina et al.'s healthy vs osteoporotic columns.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import platform
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["crossval", "prepare_folds", "inner_split", "parse_overlays", "bundle_classes", "split_overrides",
           "resolve_device", "device_description", "fold_statistics", "identification_rates",
           "dataset_classes", "case_group", "group_metrics", "SUMMARY_METRICS", "RESERVED_OVERRIDES"]

logger = logging.getLogger(__name__)

#: metrics kept in result.json / summary.json (means over the classes of each case); ``fnr`` / ``fpr``: false negative
#: rate FN / (FN + TP) and false positive rate FP / (FP + TN) (the review's Table 1).
SUMMARY_METRICS: tuple[str, ...] = ("dice", "jaccard", "precision", "recall", "fnr", "fpr", "hd", "hd95", "msd")
#: config ids the cross-validation sets itself.
RESERVED_OVERRIDES: tuple[str, ...] = ("dataset_dir", "datalist", "fold", "ckpt_dir", "output_dir", "bundle_root",
                                       "device", "train_datalist", "val_datalist", "resume")


def parse_overlays(overlays: str | Sequence[str] | None) -> tuple[str, ...]:
    """Overlay names from ``None``, ``"a"``, ``"a,b"`` or a sequence (as ``fire`` passes them)."""
    if overlays is None:
        return ()
    if isinstance(overlays, str):
        return tuple(o.strip() for o in overlays.split(",") if o.strip())
    return tuple(str(o) for o in overlays)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda:0"`` when CUDA is available, else ``"cpu"``; other strings unchanged."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    torch.device(device)  # raises on a malformed device string
    return device


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: str) -> str:
    """A readable device name: ``"cpu (AMD EPYC, 2 threads)"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({cpu_model()}, {torch.get_num_threads()} threads)"


def bundle_classes(bundle_root: Path) -> list[int] | None:
    """Classes to score: ``None`` for a binary bundle (2 entries in the metadata's output ``channel_def``), else the
    foreground class ids of the ``channel_def``."""
    meta = json.loads((bundle_root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    if len(channel_def) <= 2:
        return None
    return sorted(int(k) for k in channel_def if int(k) != 0)


def dataset_classes(classes: list[int] | None, folds_path: Path) -> list[int] | None:
    """The bundle's classes that the dataset labels: a datalist recording ``label_values`` (e.g. the five lumbar
    levels of the shared VB3 cases relabelled to MRSpineSeg values) is scored on those classes only, since a class no
    case labels cannot be scored (it would add a both-empty Dice of 1 for every case)."""
    if classes is None:
        return None
    values = json.loads(Path(folds_path).read_text(encoding="utf-8")).get("label_values")
    if not values:
        return classes
    kept = [c for c in classes if c in {int(v) for v in values}]
    if kept != classes:
        logger.info("scoring the %d classes the dataset labels (%s) of the bundle's %d", len(kept), kept, len(classes))
    return kept or classes


def case_group(item: Mapping[str, Any]) -> str | None:
    """The group of a datalist item: its ``"group"``; else, for an item with a ``"pathology"`` list, ``"fractured"``
    when an entry names a fracture (``"wedge_fracture@T10"``, ``"crush_fracture@L3"``) and ``"healthy"`` otherwise
    (disc degeneration and sclerotic lesions count as healthy: the paper's split is healthy vs fractured); None when
    the item says neither."""
    if item.get("group") is not None:
        return str(item["group"])
    pathology = item.get("pathology")
    if pathology is None:
        return None
    return "fractured" if any("fracture" in str(p).split("@")[0] for p in pathology) else "healthy"


def group_metrics(rows: Sequence[Mapping[str, Any]], groups: Mapping[str, str | None]) -> dict[str, float]:
    """``{"<metric>_<group>": mean over the group's cases}`` of one fold's per-case ``rows`` (mean over classes
    first), for the :data:`SUMMARY_METRICS`; ``groups`` maps case id -> group (None: in no group)."""
    from spine_monai.metrics.segmentation import aggregate

    out: dict[str, float] = {}
    for g in sorted({g for g in groups.values() if g is not None}):
        sub = [r for r in rows if groups.get(str(r.get("case"))) == g]
        if not sub:
            continue
        mean = aggregate(sub)["mean over classes"]
        out.update({f"{m}_{g}": float(mean[f"{m}_mean"]) for m in SUMMARY_METRICS})
    return out


def identification_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``level_id_rate``: share of the labelled structures (case x class with a non-empty label) whose majority
    predicted foreground value is their own (:func:`spine_monai.metrics.segmentation.level_identification`);
    ``level_missed_rate``: share with no foreground predicted. Empty for binary rows."""
    marked = [r for r in rows if r.get("identified") is not None and float(r.get("label_voxels", 0)) > 0]
    if not marked:
        return {}
    return {"level_id_rate": float(np.mean([float(r["identified"]) for r in marked])),
            "level_missed_rate": float(np.mean([float(r["missed"]) for r in marked]))}


def _class_names(bundle_root: Path) -> dict[int, str]:
    """``{value: lower-case name}`` of the non-background classes of a multi-class bundle ({} for a binary one)."""
    meta = json.loads((bundle_root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    if len(channel_def) <= 2:
        return {}
    return {int(k): str(v).lower().replace(" ", "_") for k, v in channel_def.items() if int(k) != 0}


def _common_metrics(results: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The metric names every fold result holds (folds of older runs may lack the per-class ones)."""
    if not results:
        return SUMMARY_METRICS
    return tuple(k for k in results[0]["metrics"] if all(k in r["metrics"] for r in results))


def _class_metrics(groups: Mapping[str, Mapping[str, float]], names: Mapping[int, str]) -> dict[str, float]:
    """Per-class means of one fold, ``{"dice_<name>": ..., "jaccard_<name>": ...}`` (multi-class bundles)."""
    out = {}
    for value, name in names.items():
        group = groups.get(str(value))
        if group is None:
            continue
        for m in ("dice", "jaccard", "precision", "recall"):
            out[f"{m}_{name}"] = group[f"{m}_mean"]
    return out


def split_overrides(bundle_root: Path, overlays: Sequence[str], overrides: Mapping[str, Any],
                    strict: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split user overrides into those of ``train.json`` and those of ``inference.json`` (each + overlays).

    A key goes to every config that defines the id (``features`` to both, ``epochs`` to training only).

    Raises:
        ValueError: for a reserved id (:data:`RESERVED_OVERRIDES`), or, with ``strict``, an id that neither config
            defines (a typo such as ``epoch``).
    """
    from spine_monai.bundle.runner import make_workflow

    reserved = sorted(set(overrides) & set(RESERVED_OVERRIDES))
    if reserved:
        raise ValueError(f"overrides {reserved} are set by the cross-validation itself; use its own arguments.")
    parsers = {kind: make_workflow(bundle_root, [kind, *overlays], wf).parser
               for kind, wf in (("train", "train"), ("inference", "infer"))}
    out: dict[str, dict[str, Any]] = {"train": {}, "inference": {}}
    for key, value in overrides.items():
        found = [kind for kind, parser in parsers.items() if key in parser]
        if not found and strict:
            raise ValueError(f"override {key!r} is not an id of train.json or inference.json with overlays "
                             f"{list(overlays)} of {bundle_root.name}.")
        for kind in found:
            out[kind][key] = value
    return out["train"], out["inference"]


def _case_id(item: Mapping[str, Any]) -> str:
    for key in ("case_id", "case"):
        if key in item:
            return str(item[key])
    name = Path(str(item["image"])).name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem


def prepare_folds(dataset_dir: str | os.PathLike, folds_file: str | os.PathLike, folds: int, seed: int = 0,
                  include: str | Sequence[str] | None = None) -> Path:
    """Write (once) the datalist with folds that every fold and every method of a comparison reads.

    Order: an existing ``folds_file`` is reused as it is; else ``<dataset_dir>/datalist.json`` is copied, keeping its
    folds when it has ``folds`` of them (re-assigned from ``seed`` otherwise); else a folder of ``*_img`` /
    ``*_label`` pairs gets one via :func:`spine_monai.data.folder.folder_datalist`.

    Args:
        dataset_dir: dataset folder.
        folds_file: the datalist JSON to write or reuse.
        folds: number of folds.
        seed: fold seed when folds are assigned here.
        include: optional case-id glob(s) selecting cases.

    Returns:
        ``folds_file``.

    Raises:
        ValueError: if an existing ``folds_file`` holds another number of folds.
        FileNotFoundError: if ``dataset_dir`` has neither ``datalist.json`` nor image/label pairs.
    """
    from spine_monai.data.datalist import load_datalist, write_datalist
    from spine_monai.data.folder import folder_datalist

    folds_file, root = Path(folds_file), Path(dataset_dir)
    if folds_file.is_file():
        have = json.loads(folds_file.read_text(encoding="utf-8")).get("folds")
        if have != folds:
            raise ValueError(f"{folds_file} holds {have} folds, not --folds {folds}; choose another --out.")
        logger.info("reusing the folds of %s", folds_file)
        return folds_file
    datalist = root / "datalist.json"
    if datalist.is_file():
        data = json.loads(datalist.read_text(encoding="utf-8"))
        items = load_datalist(datalist)
        includes = list(parse_overlays(include))
        if includes:
            items = [it for it in items if any(fnmatch.fnmatch(_case_id(it), p) for p in includes)]
        keep = data.get("folds") == folds and all("fold" in it for it in items)
        if not keep:
            logger.info("%s has folds=%s; assigning %d folds with seed %d", datalist, data.get("folds"), folds, seed)
            items = [{k: v for k, v in it.items() if k != "fold"} for it in items]
        extra = {k: v for k, v in data.items()
                 if k not in ("training", "folds", "seed", "numTraining") and (k == "label_values"
                                                                               or not isinstance(v, list))}
        extra["source"] = str(datalist.resolve())
        return write_datalist(items, folds_file, folds=folds, seed=int(data.get("seed", seed)) if keep else seed,
                              **extra)
    if root.is_dir() and any(root.glob("*_img.*")):
        return Path(folder_datalist(root, folds_file, folds=folds, seed=seed, include=include))
    raise FileNotFoundError(f"{root}: no datalist.json and no '<case>_img' / '<case>_label' pairs to make folds from.")


def _infer_timed(bundle_root: Path, items: Sequence[Mapping[str, Any]], output_dir: Path, ckpt: Path,
                 overlays: Sequence[str], progress: bool, **override: Any) -> list[float]:
    """Run ``inference.json`` on ``items``; seconds per volume from fetching it to its label file being written."""
    from spine_monai.bundle.runner import infer_bundle

    times: list[float] = []
    infer_bundle(bundle_root, output_dir, output_dir, ckpt=ckpt, overlays=overlays, progress=progress,
                 timings=times, datalist=[{"image": str(it["image"])} for it in items], **override)
    return times


def _train_attempts(fold_dir: Path, resume: bool) -> list[dict[str, float]]:
    """The earlier, interrupted training attempts of a fold, each closed with the seconds it kept, plus a new open one
    (written to ``fold_<k>/train_time.json`` before training starts).

    An attempt that was killed kept the epochs up to its last ``models/checkpoint.pt``: its ``kept_s`` is that file's
    modification time minus the attempt's start (0 when it wrote no checkpoint), so the fold's ``train_s`` adds up the
    training that the resumed model contains, not the work lost after the last checkpoint. Without ``resume`` (or
    without a checkpoint to resume from) the earlier attempts are dropped.
    """
    path, ckpt = fold_dir / "train_time.json", fold_dir / "models" / "checkpoint.pt"
    attempts: list[dict[str, float]] = []
    if resume and path.is_file() and ckpt.is_file():
        try:
            attempts = list(json.loads(path.read_text(encoding="utf-8")).get("attempts", []))
        except (OSError, ValueError):
            attempts = []
        saved = ckpt.stat().st_mtime
        for a in attempts:
            if "kept_s" not in a:  # the attempt that was interrupted: up to its last checkpoint
                a["kept_s"] = max(0.0, saved - float(a["start"]))
    attempts.append({"start": time.time()})
    _write_json(path, {"attempts": attempts})
    return attempts


def _count_params(bundle_root: Path, overlays: Sequence[str], override: Mapping[str, Any]) -> int:
    from spine_monai.bundle.runner import make_workflow

    parser = make_workflow(bundle_root, ["inference", *overlays], "infer", **override).parser
    net = parser.get_parsed_content("network_def")
    return int(sum(p.numel() for p in net.parameters()))


def inner_split(items: Sequence[Mapping[str, Any]], val_fraction: float,
                seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a fold's training cases into (training, inner validation) for checkpoint selection.

    ``max(1, round(val_fraction * n))`` cases drawn with ``numpy.random.default_rng(seed)``; the rest keep their
    order. Needs at least two cases.

    Raises:
        ValueError: with fewer than two training cases.
    """
    items = [dict(it) for it in items]
    if len(items) < 2:
        raise ValueError(f"{len(items)} training case(s): need at least 2 to hold one out for checkpoint selection.")
    n_val = min(len(items) - 1, max(1, round(float(val_fraction) * len(items))))
    chosen = set(np.random.default_rng(seed).choice(len(items), size=n_val, replace=False).tolist())
    return ([it for i, it in enumerate(items) if i not in chosen], [it for i, it in enumerate(items) if i in chosen])


def _group_statistics(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean ± std over folds of the group metrics (``dice_fractured``), over the folds that tested the group."""
    names = {k for r in results for k in r.get("group_metrics", [])}
    out = {}
    for name in sorted(names):
        have = [r["metrics"] for r in results if name in r["metrics"]]
        out[name] = fold_statistics(have, (name,))[name]
    return out


def fold_statistics(fold_means: Sequence[Mapping[str, float]],
                    metrics: Sequence[str] = SUMMARY_METRICS) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1; 0 for one fold) over folds of each metric's fold mean.

    Returns:
        ``{metric: {"mean", "std", "n"}}``.
    """
    out = {}
    for m in metrics:
        values = np.asarray([float(f[m]) for f in fold_means], dtype=np.float64)
        out[m] = {"mean": float(values.mean()) if values.size else math.nan,
                  "std": float(values.std(ddof=1)) if values.size > 1 else 0.0, "n": int(values.size)}
    return out


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _command(bundle: str, dataset_dir: str, folds: int, overlays: Sequence[str], out: Path,
             extra: Mapping[str, Any]) -> str:
    args = ["python", "-m", "spine_monai", "crossval", str(bundle), "--dataset_dir", str(dataset_dir),
            "--folds", str(folds), "--out", str(out)]
    if overlays:
        args += ["--overlays", ",".join(overlays)]
    for key, value in extra.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))]
    return shlex.join(args)


def crossval(bundle: str, dataset_dir: str, folds: int = 5, overlays: str | Sequence[str] | None = None,
             out: str | os.PathLike | None = None, seed: int = 0, max_folds: int | None = None, device: str = "auto",
             folds_file: str | os.PathLike | None = None, include: str | Sequence[str] | None = None,
             overwrite: bool = False, progress: bool = True, strict: bool = True, val_fraction: float = 0.1,
             **overrides: Any) -> str:
    """Train and evaluate one configuration of a bundle on k fixed folds; resumable.

    The held-out fold is only used for testing: the checkpoint that is tested (the best validation Dice during
    training) is chosen on an inner validation set, ``val_fraction`` of the training folds' cases (at least one),
    drawn with ``seed + fold`` and left out of training (see :func:`inner_split`). Choosing it on the test fold would
    bias every method's numbers upwards.

    Args:
        bundle: bundle folder or name.
        dataset_dir: folder with ``datalist.json`` or ``<case>_img`` / ``<case>_label`` pairs.
        folds: number of folds k.
        overlays: extra configs of the bundle (``"baseline_unet3d"``, ``"a,b"`` or a list).
        out: output folder; default ``./crossval/<bundle>[+<overlays>]``.
        seed: fold seed (only used when the folds are assigned here).
        max_folds: run only folds ``0 .. max_folds - 1`` (stated in the summary).
        device: ``"auto"``, ``"cpu"`` or ``"cuda:0"``.
        folds_file: datalist with folds to use/write; default ``<out>/folds.json``.
        include: case-id glob(s) selecting cases of the dataset.
        overwrite: recompute folds whose results exist (otherwise they are skipped; their settings must match).
        progress: progress bars.
        strict: reject overrides that neither train.json nor inference.json (with overlays) define.
        val_fraction: share of the training cases held out of training for checkpoint selection (0 < f < 1).
        overrides: config overrides, e.g. ``--epochs 50 --features "[8,16,32]"`` (each goes to the configs defining it).

    Returns:
        The output folder (holding ``summary.md`` and ``summary.json``).

    Raises:
        ValueError: on ``folds < 2``, ``max_folds`` out of range, bad overrides, or results of other settings in
            ``out``.
    """
    from spine_monai.bundle.runner import resolve_bundle, train_bundle
    from spine_monai.data.datalist import load_datalist
    from spine_monai.metrics.segmentation import aggregate, evaluate_pairs, write_metrics_csv

    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"--folds {folds!r} must be an integer >= 2.")
    n_run = folds if max_folds is None else int(max_folds)
    if not 1 <= n_run <= folds:
        raise ValueError(f"--max_folds {max_folds!r} must be between 1 and --folds {folds}.")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"--val_fraction {val_fraction!r} must be strictly between 0 and 1.")
    root = resolve_bundle(bundle)
    ovl = parse_overlays(overlays)
    out = Path(out) if out is not None else Path.cwd() / "crossval" / "+".join([root.name, *ovl])
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    train_over, infer_over = split_overrides(root, ovl, overrides, strict=strict)
    amp_train, amp_infer = split_overrides(root, ovl, {"amp": dev.startswith("cuda")}, strict=False)
    train_over = {"device": f"$torch.device('{dev}')", **amp_train, **train_over}
    infer_over = {"device": f"$torch.device('{dev}')", **amp_infer, **infer_over}
    folds_path = prepare_folds(dataset_dir, Path(folds_file) if folds_file else out / "folds.json", folds, seed,
                               include)
    classes = dataset_classes(bundle_classes(root), folds_path)
    names = {c: n for c, n in _class_names(root).items() if classes is None or c in classes}
    settings = json.loads(json.dumps({"bundle": root.name, "overlays": list(ovl), "overrides": dict(overrides),
                                      "folds": folds, "folds_file": str(folds_path.resolve()),
                                      "val_fraction": float(val_fraction), "seed": seed}, default=str))
    extra: dict[str, Any] = {}  # the command line that reproduces this run, overrides last
    if max_folds is not None:
        extra["max_folds"] = int(max_folds)
    if int(seed) != 0:
        extra["seed"] = int(seed)
    if folds_file:  # shared folds (e.g. of a comparison): the case selection is in that file
        extra["folds_file"] = str(folds_path)
    extra.update(overrides)
    if include is not None:
        extra["include"] = ",".join(parse_overlays(include))
    if float(val_fraction) != 0.1:
        extra["val_fraction"] = float(val_fraction)
    command = _command(str(bundle), str(dataset_dir), folds, ovl, out, extra)
    results = []
    for k in range(n_run):
        fold_dir = out / f"fold_{k}"
        result_file = fold_dir / "result.json"
        if result_file.is_file() and not overwrite:
            result = json.loads(result_file.read_text(encoding="utf-8"))
            if result.get("settings") != settings:
                raise ValueError(f"{result_file} was computed with other settings ({result.get('settings')}, now "
                                 f"{settings}); pass --overwrite or choose another --out.")
            logger.info("fold %d: results exist, skipped (%s)", k, result_file)
            results.append(result)
            continue
        fold_dir.mkdir(parents=True, exist_ok=True)
        val_items = load_datalist(folds_path, fold=k, split="val")
        train_items, inner_val = inner_split(load_datalist(folds_path, fold=k, split="train"), val_fraction,
                                             seed + k)
        n_train = len(train_items)
        _write_json(fold_dir / "split.json", {"fold": k, "train": [_case_id(it) for it in train_items],
                                              "inner_val": [_case_id(it) for it in inner_val],
                                              "test": [_case_id(it) for it in val_items]})
        logger.info("fold %d/%d: training on %d cases (checkpoint chosen on %d more), testing on %d", k + 1, folds,
                    n_train, len(inner_val), len(val_items))
        attempts = _train_attempts(fold_dir, resume=not overwrite)
        t0 = time.perf_counter()
        ckpt = train_bundle(root, dataset_dir, overlays=ovl, progress=progress, datalist=str(folds_path), fold=k,
                            ckpt_dir=str(fold_dir / "models"), output_dir=str(fold_dir / "train_logs"),
                            train_datalist=train_items, val_datalist=inner_val, resume=not overwrite,
                            overwrite=bool(overwrite), **train_over)
        attempts[-1]["kept_s"] = time.perf_counter() - t0
        _write_json(fold_dir / "train_time.json", {"attempts": attempts})
        train_s = float(sum(a["kept_s"] for a in attempts))
        pred_dir = fold_dir / "pred"
        if pred_dir.is_dir():  # labels of an interrupted run: this fold's inference is redone from scratch
            import shutil

            shutil.rmtree(pred_dir)
        t0 = time.perf_counter()
        times = _infer_timed(root, val_items, pred_dir, ckpt, ovl, progress, **infer_over)
        infer_total = time.perf_counter() - t0
        rows = []
        for item in val_items:
            name = Path(str(item["image"])).name
            stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
            if name.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")):
                pred = pred_dir / f"{stem}_seg.png"  # 2D image inputs get a PNG label (SaveLabeld)
            else:
                pred = pred_dir / f"{stem}_seg.nii.gz"
            if not pred.is_file():
                raise RuntimeError(f"inference wrote no {pred} for {item['image']}.")
            for row in evaluate_pairs([(pred, item["label"])], labels=classes, progress=False,
                                      binarize=classes is None):
                rows.append({**row, "case": _case_id(item), "fold": k})
        write_metrics_csv(rows, fold_dir / "metrics.csv")
        groups = aggregate(rows)
        group = groups["mean over classes"]
        result = {
            "fold": k, "n_train": n_train, "n_inner_val": len(inner_val), "n_test": len(val_items), "train_s": train_s,
            "train_attempts": len(attempts),
            "infer_s_per_volume": float(np.mean(times)) if times else math.nan, "infer_s_volumes": times,
            "infer_s_total": infer_total, "device": dev, "device_name": device_description(dev),
            "params": _count_params(root, ovl, infer_over), "weights_mb": ckpt.stat().st_size / 2**20,
            "checkpoint": str(ckpt), "metrics": {m: group[f"{m}_mean"] for m in SUMMARY_METRICS},
            "metrics_std": {m: group[f"{m}_std"] for m in SUMMARY_METRICS}, "settings": settings, "rows": rows,
        }
        result["metrics"].update(_class_metrics(groups, names))
        result["metrics"].update(identification_rates(rows))
        group_of = {_case_id(it): case_group(it) for it in val_items}
        by_group = group_metrics(rows, group_of)
        result["metrics"].update(by_group)
        result["group_metrics"] = sorted(by_group)
        result["metrics"]["runtime_s"] = result["infer_s_per_volume"]
        _write_json(result_file, result)
        results.append(result)
    all_rows = [row for r in results for row in r["rows"]]
    write_metrics_csv(all_rows, out / "metrics.csv")
    pooled = aggregate(all_rows)
    dataset = json.loads(folds_path.read_text(encoding="utf-8")).get("name", Path(dataset_dir).name)
    summary = {
        "bundle": root.name, "overlays": list(ovl), "overrides": settings["overrides"], "dataset": dataset,
        "dataset_dir": str(Path(dataset_dir).resolve()), "folds": folds, "folds_run": [r["fold"] for r in results],
        "val_fraction": float(val_fraction),
        "folds_file": str(folds_path.resolve()), "device": dev,
        "device_name": results[-1]["device_name"] if results else device_description(dev), "command": command,
        "binary": classes is None,
        "per_fold": [{k: v for k, v in r.items() if k not in ("rows", "settings")} for r in results],
        "across_folds": {**fold_statistics([r["metrics"] for r in results], _common_metrics(results)),
                         **_group_statistics(results)},
        "timing": {key: fold_statistics([r for r in results], (key,))[key]
                   for key in ("train_s", "infer_s_per_volume")},
        "params": results[-1]["params"], "weights_mb": results[-1]["weights_mb"], "pooled": pooled,
    }
    _write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    logger.info("cross-validation summary: %s", out / "summary.md")
    return str(out)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """Render a crossval ``summary.json`` as Markdown (settings, one row per fold, mean ± std over folds)."""
    from spine_monai.metrics.segmentation import metrics_markdown_table

    cols = ("dice", "jaccard", "precision", "recall", "hd", "hd95")
    pct = {"dice", "jaccard", "precision", "recall"}
    name = "+".join([summary["bundle"], *summary["overlays"]])
    lines = [f"# Cross-validation: {name}", "",
             f"- dataset: {summary['dataset']} ({summary['dataset_dir']})",
             f"- folds: {len(summary['folds_run'])} of {summary['folds']} run ({summary['folds_run']}); "
             f"folds file {summary['folds_file']}",
             f"- checkpoint selection: best validation Dice on {summary.get('val_fraction', 0.1):.0%} of each "
             "fold's training cases, held out of training (fold_<k>/split.json); the test fold is never seen",
             f"- device: {summary['device_name']}", f"- overrides: `{json.dumps(summary['overrides'])}`",
             f"- parameters: {summary['params']:,}; weights {summary['weights_mb']:.1f} MiB",
             f"- command: `{summary['command']}`", "",
             "Overlap metrics in %, distances in mm (HD = Hausdorff distance, the paper's HSD). The ± is the sample "
             "standard deviation over the fold means.", "",
             "| fold | train / inner val / test | " + " | ".join(cols) + " | train (s) | inference (s / volume) |",
             "|---|---|" + "---|" * (len(cols) + 2)]
    for r in summary["per_fold"]:
        cells = [f"{r['metrics'][m] * (100 if m in pct else 1):.2f}" for m in cols]
        split = f"{r['n_train']} / {r.get('n_inner_val', 0)} / {r['n_test']}"
        lines.append(f"| {r['fold']} | {split} | " + " | ".join(cells)
                     + f" | {r['train_s']:.1f} | {r['infer_s_per_volume']:.2f} |")
    af, tm = summary["across_folds"], summary["timing"]
    cells = [f"{af[m]['mean'] * (100 if m in pct else 1):.2f} ± {af[m]['std'] * (100 if m in pct else 1):.2f}"
             for m in cols]
    lines.append("| **mean ± std** | | " + " | ".join(cells) + f" | {tm['train_s']['mean']:.1f} | "
                 f"{tm['infer_s_per_volume']['mean']:.2f} |")
    if "level_id_rate" in af:
        per_fold = ", ".join(f"{r['metrics']['level_id_rate']:.1%}" for r in summary["per_fold"])
        lines += ["", f"Correctly numbered structures (majority predicted value inside each labelled structure is its "
                      f"own): {af['level_id_rate']['mean']:.1%} ± {af['level_id_rate']['std']:.1%} over folds "
                      f"({per_fold}); structures with no foreground predicted: "
                      f"{af['level_missed_rate']['mean']:.1%}. Per case and class: `identified`, `assigned` in "
                      "metrics.csv."]
    lines += ["", "Pooled over all test cases (mean ± std over cases):", "",
              metrics_markdown_table(summary["pooled"], metrics=("dice", "jaccard", "precision", "recall", "hd",
                                                                 "hd95"))]
    return "\n".join(lines)
