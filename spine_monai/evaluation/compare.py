"""A bundle's method, baselines and ablations on the same folds, as the paper's tables beside the paper's numbers.

``python -m spine_monai compare BUNDLE --dataset_dir D [--folds 5] [--max_folds k] [--epochs ...]``

Which rows a bundle has is declared in :data:`COMPARISONS` (one :class:`Comparison` per bundle folder name). For
SAU-Net (Zhang et al., MIDL 2020): Table 1 (Section 4.3) compares 2D U-Net / 3D U-Net / SAU-Net on Dice, precision,
recall, Jaccard and Hausdorff distance; Table 2 (Section 4.3) time and model size; Table 4 (Section 4.4) SAU-Net
with and without inter-slice attention. Table 3 (SAU-Net alone on the Chu et al. 2015 data, leave-one-out) is not
a default table: ask for it with ``--tables saunet/table3`` on a dataset of those cases (e.g. ``--include "VB2*"
--folds 12`` on the real lumbar MRI for leave-one-out over its 12 VB2 cases). Each method is one
:func:`spine_monai.evaluation.crossval.crossval` run with the method's overlays; all share ``<out>/folds.json``.

Our cells are the mean ± sample std over the fold means (see :mod:`spine_monai.evaluation.crossval`), labelled
``ours (<dataset>, <folds run> of <k> folds, <device>)``; the paper's cells are labelled ``paper (<setting>)``.
Table 2's "time" is, for us, the inference time per volume (the paper does not say what its time measures) and
"model size" the parameter count and the checkpoint size.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spine_monai.evaluation.paper_tables import format_value, paper_table

__all__ = ["Method", "TableSpec", "BenchTarget", "Comparison", "COMPARISONS", "comparison_for", "compare",
           "render_tables", "ours_label"]

logger = logging.getLogger(__name__)

_PERCENT = {"dice", "jaccard", "precision", "recall"}


@dataclass(frozen=True)
class Method:
    """One row of a comparison.

    Args:
        key: short id, also the output sub-folder (``"unet3d"``).
        label: display name (``"3D U-Net"``).
        overlays: bundle configs applied after train.json / inference.json.
        paper_rows: ``{paper table key: row label in that table}``.
        bench_inferer: what :mod:`spine_monai.evaluation.bench` times: ``"network"`` (the network on the whole
            volume; slice-wise networks take any size) or ``"config"`` (the bundle's inference ``inferer``).
    """

    key: str
    label: str
    overlays: tuple[str, ...] = ()
    paper_rows: Mapping[str, str] = field(default_factory=dict)
    bench_inferer: str = "network"


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables to reproduce: ``kind`` ``"metrics"`` (quality) or ``"cost"`` (time and size).

    ``default``: written when ``compare`` is not told which tables to write (Table 3 of SAU-Net, a single method on
    another dataset, is asked for with ``--tables saunet/table3``). ``paper_setting``: the paper's protocol for this
    table when it differs from the comparison's. ``metric_of``: our metric shown in a paper column whose key is not
    one of our metric names (Sekuboyina's Table 2: ``{"dice_hc": "dice_healthy", "dice_osteo": "dice_fractured"}``,
    the case groups of :func:`spine_monai.evaluation.crossval.case_group`).
    """

    paper_table: str
    methods: tuple[str, ...]
    kind: str = "metrics"
    default: bool = True
    paper_setting: str | None = None
    metric_of: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchTarget:
    """A benchmark target: ``metric`` of ``method`` at ``size`` (all sizes if ``None``) must be ``<= max_value``;
    with ``ratio_to`` the ratio to that method's value is compared instead; ``device`` limits it to a device type."""

    name: str
    method: str
    metric: str
    max_value: float
    ratio_to: str | None = None
    size: tuple[int, ...] | None = None
    device: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Everything compare and bench need to know about a bundle's methods.

    Args:
        paper: paper key of :mod:`spine_monai.evaluation.paper_tables`.
        title: the paper, shortly (``"SAU-Net (Zhang et al., MIDL 2020)"``).
        paper_setting: short label of the paper's protocol, e.g. ``"SpineSegT2W, 5-fold"``.
        method: key of the proposed method (the reference of the benchmark's ratios).
        methods: all rows.
        tables: the tables to write.
        bench_sizes: the paper's input sizes ``(slices, H, W)`` for the benchmark.
        targets: benchmark targets.
    """

    paper: str
    title: str
    paper_setting: str
    method: str
    methods: tuple[Method, ...]
    tables: tuple[TableSpec, ...]
    bench_sizes: tuple[tuple[int, int, int], ...] = ()
    targets: tuple[BenchTarget, ...] = ()

    def get(self, key: str) -> Method:
        """The method ``key``; ValueError naming the known keys otherwise."""
        for m in self.methods:
            if m.key == key:
                return m
        raise ValueError(f"unknown method {key!r}; this bundle has {[m.key for m in self.methods]}.")


COMPARISONS: dict[str, Comparison] = {
    "saunet_spine_mri_segmentation": Comparison(
        paper="saunet",
        title="SAU-Net (Zhang et al., MIDL 2020)",
        paper_setting="SpineSegT2W, 5-fold",
        method="saunet",
        methods=(
            Method("unet2d", "2D U-Net", ("baseline_unet2d",),
                   {"saunet/table1": "2D U-Net", "saunet/table2": "2D U-Net"}),
            Method("unet3d", "3D U-Net", ("baseline_unet3d",),
                   {"saunet/table1": "3D U-Net", "saunet/table2": "3D U-Net"}, bench_inferer="config"),
            Method("saunet", "SAU-Net", (), {"saunet/table1": "SAU-Net", "saunet/table2": "SAU-Net",
                                             "saunet/table3": "SAU-Net (leave-one-out)",
                                             "saunet/table4": "Ours w/ ISA"}),
            Method("no_isa", "SAU-Net w/o ISA", ("ablation_no_isa",), {"saunet/table4": "Ours w/o ISA"}),
        ),
        tables=(TableSpec("saunet/table1", ("unet2d", "unet3d", "saunet")),
                TableSpec("saunet/table2", ("unet2d", "unet3d", "saunet"), kind="cost"),
                TableSpec("saunet/table4", ("no_isa", "saunet")),
                TableSpec("saunet/table3", ("saunet",), default=False,
                          paper_setting="Chu et al. 2015 lower-spine MRI, 23 cases, leave-one-out")),
        bench_sizes=((15, 512, 512), (15, 960, 960)),
        targets=(BenchTarget("SAU-Net latency <= 0.5 x 3D U-Net", "saunet", "latency_s", 0.5, ratio_to="unet3d"),
                 BenchTarget("SAU-Net peak CPU memory < 4 GB at 15x960x960", "saunet", "peak_rss_mb", 4096.0,
                             size=(15, 960, 960), device="cpu")),
    ),
    "safnet_spine_mri_segmentation": Comparison(
        paper="safnet",
        title="SAFNet (Yilizati-Yilihamu et al., BMC Neuroscience 2023)",
        paper_setting="MRSpineSeg, 172 T2W volumes, 5-fold",
        method="safnet",
        methods=(
            Method("unet3d", "3D UNet", ("baseline_unet3d",), {"safnet/table1": "3D UNet"}),
            Method("resunet3d", "3D ResUNet", ("baseline_resunet3d",), {"safnet/table1": "3D ResUNet"}),
            Method("deeplabv3", "3D DeepLabV3", ("baseline_deeplabv3",), {"safnet/table1": "3D DeepLabV3"}),
            Method("base", "Base", ("ablation_base",), {"safnet/table2": "Base"}),
            Method("base_aspp", "Base + ASPP", ("ablation_base_aspp",), {"safnet/table2": "Base + ASPP"}),
            Method("base_msf", "Base + Multiscale fusion", ("ablation_base_msf",),
                   {"safnet/table2": "Base + Multiscale fusion"}),
            Method("base_attention", "Base + Self-attention mechanism", ("ablation_base_attention",),
                   {"safnet/table2": "Base + Self-attention mechanism"}),
            Method("safnet", "SAFNet", (), {"safnet/table1": "SAFNet", "safnet/table2": "SAFNet"}),
        ),
        tables=(TableSpec("safnet/table1", ("unet3d", "resunet3d", "deeplabv3", "safnet")),
                TableSpec("safnet/table2", ("base", "base_aspp", "base_msf", "base_attention", "safnet"))),
        bench_sizes=((18, 128, 256),),  # the paper's 18 x 256 x 128 input in RAS order (LR, AP, SI)
    ),
    "attention_driven_spine_ct_segmentation": Comparison(
        paper="sekuboyina",
        title="Attention-driven pathological spine segmentation (Sekuboyina et al., MSKI 2017)",
        paper_setting="private clinical CT, healthy and fractured",
        method="attention",
        methods=(
            # the segmentation net alone (no stage 1): no row of the paper; beside the full method in Table 2 (the
            # paper: the attention net improves Dice "by 1-10%" over the segmentation net alone, Section 3)
            Method("seg_only", "Segmentation net alone", ("ablation_seg_only",), bench_inferer="config"),
            # the full method on phantoms that mix healthy and fractured spines: the paper's Dataset 2 (HC + Fx);
            # Table 2's healthy / osteoporotic columns: our healthy / fractured phantoms of the same folds
            Method("attention", "Attention + segmentation net, late fusion", (),
                   {"sekuboyina/table1": "Dataset 2 (HC+Fx)", "sekuboyina/table2": "Sekuboyina et al."},
                   bench_inferer="config"),
        ),
        tables=(TableSpec("sekuboyina/table1", ("attention",)),
                TableSpec("sekuboyina/table2", ("seg_only", "attention"),
                          paper_setting="CSI 2014 challenge CT, 20 scans; ours: the same phantom folds, fractured "
                                        "phantoms vs the others",
                          metric_of={"dice_hc": "dice_healthy", "dice_osteo": "dice_fractured"})),
        bench_sizes=((512, 512, 200),),  # a 512 x 512 x 200 CT at 1 mm, RAS (LR, AP, SI)
    ),
    "seam_spine_us_segmentation": Comparison(
        paper="seam",
        title="SEAM (Zhao et al., ICASSP 2021)",
        paper_setting="109 private VPI images, 80 train / 29 test",
        method="seam",
        methods=(
            Method("fpn", "Vanilla FPN", ("baseline_fpn",), {"seam/table1": "Vanilla FPN"}),
            Method("unet", "U-Net", ("baseline_unet",), {"seam/table1": "UNet"}),
            Method("danet", "FPN + DANet", ("baseline_danet",), {"seam/table1": "DANet"}),
            Method("emanet", "FPN + EMA", ("baseline_emanet",), {"seam/table1": "EMANet"}),
            Method("nonlocal", "FPN + Non-local", ("baseline_nonlocal",), {"seam/table1": "NonLocal"}),
            Method("wo_al", "SEAM w/o attentive learning", ("ablation_wo_al",),
                   {"seam/table1": "SEAM w/o attentive learning"}),
            Method("wo_ss", "SEAM w/o structure supervision", ("ablation_wo_ss",),
                   {"seam/table1": "SEAM w/o structure supervision"}),
            Method("seam", "FPN + SEAM", (), {"seam/table1": "SEAM"}),
        ),
        tables=(TableSpec("seam/table1", ("fpn", "unet", "danet", "emanet", "nonlocal", "wo_al", "wo_ss", "seam")),),
        bench_sizes=((256, 1024),),  # the paper's test input, 1024 x 256 (height x width) = MONAI (X, Y) 256 x 1024
        targets=(BenchTarget("SEAM runtime per image <= the paper's 0.37 s (GPU)", "seam", "latency_s", 0.37,
                             device="cuda"),),
    ),
}


def comparison_for(bundle_root: Path) -> Comparison:
    """The :class:`Comparison` of a bundle folder; ValueError listing the known bundles otherwise."""
    if bundle_root.name not in COMPARISONS:
        raise ValueError(f"no comparison is declared for bundle {bundle_root.name!r}; known: {sorted(COMPARISONS)}.")
    return COMPARISONS[bundle_root.name]


def ours_label(context: Mapping[str, Any]) -> str:
    """``"ours (<dataset>, <n> of <k> folds, <device>)"`` from a context of :func:`render_tables`."""
    return f"ours ({context['dataset']}, {context['folds_run']} of {context['folds']} folds, {context['device']})"


def _fold_cell(summary: Mapping[str, Any], metric: str) -> str | None:
    """A ``fold_<n>`` column (SAFNet's Table 1: mean Dice of each fold): our fold ``n - 1``'s mean Dice ± its std
    over the fold's cases, or ``None`` when ``metric`` is not a fold column."""
    if not metric.startswith("fold_") or not metric[5:].isdigit():
        return None
    fold = int(metric[5:]) - 1
    for r in summary.get("per_fold", []):
        if r.get("fold") == fold:
            mean, std = 100.0 * r["metrics"]["dice"], 100.0 * r.get("metrics_std", {}).get("dice", float("nan"))
            return f"{mean:.2f}" + ("" if std != std else f" ± {std:.2f}")
    return "not run"


def _ours_cell(summary: Mapping[str, Any] | None, metric: str) -> str:
    if summary is None:
        return "not run"
    fold = _fold_cell(summary, metric)
    if fold is not None:
        return fold
    stats = summary["across_folds"].get(metric)
    if stats is None:
        return "-"
    pct = metric.split("_")[0] in _PERCENT
    k = 100.0 if pct else 1.0
    mean = f"{stats['mean'] * k:.2f}"
    if stats.get("n", 2) < 2:  # one fold: no spread to report
        return mean
    return f"{mean} ± {stats['std'] * k:.{2 if pct else 3}f}"


def _cost_cells(summary: Mapping[str, Any] | None) -> list[str]:
    if summary is None:
        return ["not run"] * 4
    t = summary["timing"]
    infer = t["infer_s_per_volume"]
    return [f"{infer['mean']:.2f}" + (f" ± {infer['std']:.2f}" if infer.get("n", 2) > 1 else ""),
            f"{t['train_s']['mean']:.0f}", f"{summary['params'] / 1e6:.2f}M", f"{summary['weights_mb']:.1f} MiB"]


def _row(method: str, source: str, columns: Sequence[str], cells: Sequence[str]) -> dict[str, Any]:
    return {"method": method, "source": source, "values": dict(zip(columns, cells, strict=True))}


def render_tables(spec: Comparison, summaries: Mapping[str, Mapping[str, Any] | None],
                  context: Mapping[str, Any], tables: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Markdown and JSON of the paper's tables with our cross-validation results beside the paper's numbers.

    Args:
        spec: the bundle's comparison.
        summaries: ``{method key: crossval summary.json content}``; a missing or ``None`` entry shows "not run".
        context: ``dataset``, ``folds``, ``folds_run``, ``device`` and ``command`` of our runs.
        tables: paper table keys to write (``"saunet/table3"``); default the spec's default tables.

    Returns:
        ``(markdown, json-able dict)``.
    """
    ours = ours_label(context)
    paper_src = f"paper ({spec.paper_setting})"
    md = [f"# {spec.title}: our results beside the paper's", "",
          f"- **{ours}**: command `{context['command']}`",
          "- **paper (<its setting>)**: numbers as printed in the paper; see spine_monai/evaluation/paper_tables.py",
          f"- every method ran on the same folds ({context.get('folds_file', 'folds.json')}); its tested checkpoint "
          f"is the best validation Dice on {context.get('val_fraction', 0.1):.0%} of each fold's training cases, "
          "held out of training; the test fold is never seen before testing", "",
          "Ours: mean ± sample std over the fold means (the mean alone when one fold ran); overlap metrics in %, "
          "distances in mm (HSD = Hausdorff distance, maximum of the symmetric surface distances).", ""]
    written = []
    for ts in select_tables(spec, tables):
        pt = paper_table(ts.paper_table)
        paper_src = f"paper ({ts.paper_setting or spec.paper_setting})"
        md += [f"## {pt.table}: {pt.caption}", "", f"Paper: Section {pt.section}; {pt.setting}.", ""]
        rows = []
        if ts.kind == "metrics":
            md.append("| Method | source | " + " | ".join(pt.header(c) for c in pt.columns) + " |")
            md.append("|---|---|" + "---|" * len(pt.columns))
            for key in ts.methods:
                m = spec.get(key)
                paper_row = pt.rows.get(m.paper_rows.get(ts.paper_table, ""), {})
                paper_cells = [format_value(paper_row.get(c)) for c in pt.columns]
                our_cells = [_ours_cell(summaries.get(key), ts.metric_of.get(c, c)) for c in pt.columns]
                md.append(f"| {m.label} | {paper_src} | " + " | ".join(paper_cells) + " |")
                md.append(f"| {m.label} | {ours} | " + " | ".join(our_cells) + " |")
                rows += [_row(m.label, paper_src, pt.columns, paper_cells), _row(m.label, ours, pt.columns, our_cells)]
            used = {spec.get(key).paper_rows.get(ts.paper_table) for key in ts.methods}
            for name, paper_row in pt.rows.items():  # the paper's other rows (e.g. Chu et al.), theirs only
                if name not in used:
                    cells = [format_value(paper_row.get(c)) for c in pt.columns]
                    md.append(f"| {name} | {paper_src} | " + " | ".join(cells) + " |")
                    rows.append(_row(name, paper_src, pt.columns, cells))
        else:
            ours_cols = ["inference (s / volume)", "training (s / fold)", "parameters", "weights"]
            md.append("| Method | " + " | ".join(f"paper: {pt.header(c)}" for c in pt.columns) + " | "
                      + " | ".join(f"ours: {c}" for c in ours_cols) + " |")
            md.append("|---|" + "---|" * (len(pt.columns) + len(ours_cols)))
            for key in ts.methods:
                m = spec.get(key)
                paper_row = pt.rows.get(m.paper_rows.get(ts.paper_table, ""), {})
                paper_cells = [format_value(paper_row.get(c)) for c in pt.columns]
                our_cells = _cost_cells(summaries.get(key))
                md.append(f"| {m.label} | " + " | ".join(paper_cells + our_cells) + " |")
                rows += [_row(m.label, paper_src, pt.columns, paper_cells), _row(m.label, ours, ours_cols, our_cells)]
        if pt.notes:
            md += ["", f"Note on the paper's table: {pt.notes}"]
        md.append("")
        written.append({"table": pt.table, "paper_table": ts.paper_table, "caption": pt.caption, "rows": rows})
    return "\n".join(md), {"context": dict(context), "ours": ours, "paper": paper_src, "tables": written}


def select_tables(spec: Comparison, tables: str | Sequence[str] | None = None) -> list[TableSpec]:
    """The :class:`TableSpec` s named in ``tables`` (``"saunet/table1,saunet/table3"`` or a list), in the spec's
    order; the default ones when ``tables`` is ``None``. ValueError naming the known tables otherwise."""
    from spine_monai.evaluation.crossval import parse_overlays

    if tables is None:
        return [ts for ts in spec.tables if ts.default]
    wanted = parse_overlays(tables)
    known = [ts.paper_table for ts in spec.tables]
    unknown = [t for t in wanted if t not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown tables {unknown or wanted}; this bundle's tables are {known}.")
    return [ts for ts in spec.tables if ts.paper_table in wanted]


def _method_overrides(root: Path, overlays: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    from spine_monai.evaluation.crossval import split_overrides

    train, infer = split_overrides(root, overlays, overrides, strict=False)
    return {k: v for k, v in overrides.items() if k in train or k in infer}


def compare(bundle: str, dataset_dir: str, folds: int = 5, max_folds: int | None = None,
            methods: str | Sequence[str] | None = None, out: str | os.PathLike | None = None, seed: int = 0,
            device: str = "auto", method_overrides: Mapping[str, Mapping[str, Any]] | None = None,
            overlays: str | Sequence[str] | None = None, include: str | Sequence[str] | None = None,
            tables: str | Sequence[str] | None = None, val_fraction: float = 0.1, overwrite: bool = False,
            progress: bool = True, **overrides: Any) -> str:
    """Cross-validate a bundle's method, baselines and ablations on the same folds and write the paper's tables.

    Args:
        bundle: bundle folder or name (must have an entry in :data:`COMPARISONS`).
        dataset_dir: dataset folder (see :func:`spine_monai.evaluation.crossval.crossval`).
        folds: number of folds k.
        max_folds: run only the first ``max_folds`` folds of every method (stated in the tables).
        methods: subset of method keys (``"saunet,no_isa"``); default all.
        out: output folder; default ``./compare/<bundle>``. Holds ``folds.json``, one crossval folder per method,
            ``tables.md`` and ``tables.json``.
        seed: fold seed.
        device: ``"auto"``, ``"cpu"`` or ``"cuda:0"``.
        method_overrides: per-method overrides on top of ``overrides``, e.g. ``{"unet3d": {"patch_size": [16, 32,
            32]}}``.
        overlays: bundle overlays for every method, applied before each method's own overlays (a dataset's
            settings, e.g. ``real_lumbar_mri``).
        include: case-id glob(s) selecting cases of the dataset (``"VB*"``), when the folds are assigned here.
        tables: paper tables to write (``"saunet/table3"``); default the bundle's default tables. Only the methods
            these tables show are run, unless ``methods`` says otherwise.
        val_fraction: share of each fold's training cases held out for checkpoint selection (see
            :func:`spine_monai.evaluation.crossval.crossval`).
        overwrite: recompute existing fold results.
        progress: progress bars.
        overrides: config overrides for every method that defines the id (e.g. ``--epochs 50``;
            ``--unet3d_features "[...]"`` only reaches the 3D U-Net, and is accepted, unused, when it is not selected).

    Returns:
        The path of ``tables.md``.

    Raises:
        ValueError: for an unknown method, or an override no method's configs define.
    """
    from spine_monai.bundle.runner import resolve_bundle
    from spine_monai.evaluation.crossval import crossval, parse_overlays, prepare_folds, resolve_device

    root = resolve_bundle(bundle)
    spec = comparison_for(root)
    chosen_tables = select_tables(spec, tables)
    shown = {k for ts in chosen_tables for k in ts.methods}
    keys = parse_overlays(methods) or tuple(m.key for m in spec.methods if m.key in shown)
    selected = [spec.get(k) for k in keys]
    common = parse_overlays(overlays)
    per_method = {k: dict(v) for k, v in (method_overrides or {}).items()}
    unknown = sorted(set(per_method) - {m.key for m in spec.methods})
    if unknown:
        raise ValueError(f"method_overrides for unknown methods {unknown}.")
    # an override is checked against every method of the comparison, so one set of overrides (e.g. the widths of
    # all networks) serves any --methods subset; each selected method receives only the ids its configs define
    defined = {m.key: _method_overrides(root, (*common, *m.overlays), overrides) for m in spec.methods}
    unused = sorted(set(overrides) - {k for f in defined.values() for k in f})
    if unused:
        raise ValueError(f"overrides {unused} are not ids of any method's configs.")
    filtered = {m.key: defined[m.key] for m in selected}
    out = Path(out) if out is not None else Path.cwd() / "compare" / root.name
    out.mkdir(parents=True, exist_ok=True)
    folds_file = prepare_folds(dataset_dir, out / "folds.json", folds, seed, include)
    dev = resolve_device(device)
    summaries: dict[str, dict[str, Any]] = {}
    for m in selected:
        logger.info("compare: %s (%s)", m.label, ", ".join(m.overlays) or "the bundle's configs")
        folder = crossval(str(root), dataset_dir, folds=folds, overlays=(*common, *m.overlays), out=out / m.key,
                          seed=seed, max_folds=max_folds, device=dev, folds_file=folds_file, overwrite=overwrite,
                          progress=progress, val_fraction=val_fraction,
                          **{**filtered[m.key], **per_method.get(m.key, {})})
        summaries[m.key] = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
    first = next(iter(summaries.values()))
    args = ["python", "-m", "spine_monai", "compare", str(bundle), "--dataset_dir", str(dataset_dir), "--folds",
            str(folds)]
    if max_folds is not None:
        args += ["--max_folds", str(max_folds)]
    if methods is not None:
        args += ["--methods", ",".join(keys)]
    if common:
        args += ["--overlays", ",".join(common)]
    if include is not None:
        args += ["--include", ",".join(parse_overlays(include))]
    if tables is not None:
        args += ["--tables", ",".join(ts.paper_table for ts in chosen_tables)]
    if float(val_fraction) != 0.1:
        args += ["--val_fraction", str(val_fraction)]
    if per_method:
        args += ["--method_overrides", json.dumps(per_method, separators=(",", ":"))]
    for k, v in overrides.items():
        args += [f"--{k}", v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))]
    n_cases = len(json.loads(Path(folds_file).read_text(encoding="utf-8")).get("training", []))
    dataset = f"{first['dataset']}, {n_cases} cases"
    if include is not None:  # name the selection, e.g. the 12 VB2 cases of the lumbar MRI
        dataset += " matching " + " ".join(parse_overlays(include))
    context = {"dataset": dataset, "folds": folds, "folds_run": len(first["folds_run"]),
               "device": first["device_name"], "command": shlex.join(args), "out": str(out),
               "folds_file": str(folds_file), "val_fraction": float(val_fraction)}
    md, data = render_tables(spec, summaries, context, [ts.paper_table for ts in chosen_tables])
    data["comparison"] = asdict(spec)
    (out / "tables.md").write_text(md, encoding="utf-8")
    (out / "tables.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("tables written to %s", out / "tables.md")
    return str(out / "tables.md")
