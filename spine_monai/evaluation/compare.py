"""A bundle's method, baselines and ablations on the same folds, as the paper's tables beside the paper's numbers.

``python -m spine_monai compare BUNDLE --dataset_dir D [--folds 5] [--max_folds k] [--epochs ...]``

Which rows a bundle has is declared in :data:`COMPARISONS` (one :class:`Comparison` per bundle folder name). For
SAU-Net (Zhang et al., MIDL 2020): Table 1 (Section 4.3) compares 2D U-Net / 3D U-Net / SAU-Net on Dice, precision,
recall, Jaccard and Hausdorff distance; Table 2 (Section 4.3) time and model size; Table 4 (Section 4.4) SAU-Net
with and without inter-slice attention. Table 3 (SAU-Net alone on the Chu et al. 2015 data, leave-one-out) is not
a default table: ask for it with ``--tables saunet/table3`` on a dataset of those cases (e.g. ``--include "VB2*"
--folds 12`` on the real lumbar MRI for leave-one-out over its 12 VB2 cases). Each method is one
:func:`spine_monai.evaluation.crossval.crossval` run with the method's overlays; all share ``<out>/folds.json``.

The review of twelve 2D networks (Zhou et al., ICMR 2022): one method per network of
:func:`spine_monai.networks.registry.list_networks` (``--methods unet,miniseg`` runs a subset), each the bundle's
configs with ``network_name`` set (:attr:`Method.overrides`); Table 1 (Dice, mIoU, FN rate, FP rate, recall), Table 2
(per-class Dice of the 19 classes and mDice) and Table 3 (parameters, FLOPs, memory, latency, measured with
:func:`spine_monai.evaluation.bench.bench`). Three more methods, ``unet_table3``, ``pspnet_table3`` and
``deeplabv3plus_table3``, are the configurations whose parameter counts match the review's Table 3 (the bundle's
``table3_*`` overlays; spine_monai/networks/README.md): they are rows of the default Table 3, which only benchmarks
them, and are trained and evaluated with ``--tables review/table1_table3_configs,review/table2_table3_configs`` (their
Table 1 / Table 2 rows beside the paper's).

Our cells are the mean ± sample std over the fold means (see :mod:`spine_monai.evaluation.crossval`), labelled
``ours (<dataset>, <folds run> of <k> folds, <device>)``; the paper's cells are labelled ``paper (<setting>)``.
Table 2's "time" is, for us, the inference time per volume (the paper does not say what its time measures) and
"model size" the parameter count and the checkpoint size. A table declared with ``bench=True`` (the review's
Table 3) shows the benchmark of each network as the comparison configures it (its overlays and overrides) instead:
parameters, FLOPs, peak memory and latency of one inference at the comparison's ``bench_sizes`` (first size; another
with ``--bench_options '{"sizes": "160x160"}'``), and the peak memory of one training step when that is measured
(``"train": true``; the default on CUDA only, a training batch at 880 x 880 needs tens of GB on a CPU).

Resuming: a compare that stops (killed, out of time) continues where it stopped when run again with the same
command. ``<out>/folds.json`` is reused, so every method keeps the same folds. Per method, per fold:

- a fold with ``<out>/<method>/fold_<k>/result.json`` is skipped (its settings must match the command's);
- the interrupted fold (no result yet) trains again from ``fold_<k>/models/checkpoint.pt``, after its last completed
  epoch (``resume=True`` of :class:`spine_monai.handlers.CheckpointManager`; the best model so far is kept); the
  epoch that was running is lost; a fold that stopped after training only redoes its inference;
- a benchmark with ``<out>/bench/<method>_<cpu|cuda>.json`` of the same request (``.request.json``) and no error is
  reused; a failed one is measured again.

``tables.md`` / ``tables.json`` are rewritten after every method, so a stopped run leaves the tables of what finished
(the rest "not run"). A different ``--methods`` subset, run later into the same ``--out``, adds its methods; the
tables show the methods of that run. ``--overwrite true`` recomputes everything.
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

from spine_monai.evaluation.paper_tables import REVIEW_CLASSES, format_value, paper_table

__all__ = ["Method", "TableSpec", "BenchTarget", "Comparison", "COMPARISONS", "comparison_for", "compare",
           "render_tables", "ours_label", "check_method_overrides"]

logger = logging.getLogger(__name__)

_PERCENT = {"dice", "jaccard", "precision", "recall", "fnr", "fpr"}


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
        overrides: config overrides that make this method (the review: ``{"network_name": "unet"}``), for the
            cross-validation and the benchmark: applied after the common overrides and before ``method_overrides``.
            A common override of one of these ids is refused (:func:`check_method_overrides`).
    """

    key: str
    label: str
    overlays: tuple[str, ...] = ()
    paper_rows: Mapping[str, str] = field(default_factory=dict)
    bench_inferer: str = "network"
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables to reproduce: ``kind`` ``"metrics"`` (quality) or ``"cost"`` (time and size).

    ``default``: written when ``compare`` is not told which tables to write (Table 3 of SAU-Net, a single method on
    another dataset, is asked for with ``--tables saunet/table3``). ``paper_setting``: the paper's protocol for this
    table when it differs from the comparison's. ``metric_of``: our metric shown in a paper column whose key is not
    one of our metric names (Sekuboyina's Table 2: ``{"dice_hc": "dice_healthy", "dice_osteo": "dice_fractured"}``,
    the case groups of :func:`spine_monai.evaluation.crossval.case_group`; the review's Table 2: ``{"L5/S":
    "dice_l5/s", "mDice": "dice"}``). ``bench``: a ``"cost"`` table whose cells are ours from
    :func:`spine_monai.evaluation.bench.bench` (parameters, FLOPs, memory, latency) instead of the cross-validation's
    timing; its methods are benchmarked, not trained, unless another chosen table shows them. ``name``: how
    ``--tables`` names this table when it is not the paper's table itself (the same paper table with other rows,
    e.g. ``"review/table1_table3_configs"``); default ``paper_table``.
    """

    paper_table: str
    methods: tuple[str, ...]
    kind: str = "metrics"
    default: bool = True
    paper_setting: str | None = None
    metric_of: Mapping[str, str] = field(default_factory=dict)
    bench: bool = False
    name: str | None = None

    @property
    def key(self) -> str:
        """The name ``--tables`` selects this table by."""
        return self.name or self.paper_table


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
        bench_sizes: the paper's input sizes for the benchmark: ``(slices, H, W)``, or two values for a 2D
            network (SEAM's ``(X, Y)``, the review's single ``(880, 880)`` slice).
        targets: benchmark targets.
    """

    paper: str
    title: str
    paper_setting: str
    method: str
    methods: tuple[Method, ...]
    tables: tuple[TableSpec, ...]
    bench_sizes: tuple[tuple[int, ...], ...] = ()
    targets: tuple[BenchTarget, ...] = ()

    def get(self, key: str) -> Method:
        """The method ``key``; ValueError naming the known keys otherwise."""
        for m in self.methods:
            if m.key == key:
                return m
        raise ValueError(f"unknown method {key!r}; this bundle has {[m.key for m in self.methods]}.")


#: the review's twelve networks: (registry name, the paper's row name in Tables 1-3), in the paper's order.
_REVIEW_NETWORKS: tuple[tuple[str, str], ...] = (
    ("unet", "U-Net"), ("pspnet", "PSPNet"), ("deeplabv3plus", "DeepLabv3+"), ("denseaspp", "DenseASPP"),
    ("attention_unet", "Attention U-Net"), ("danet", "DANet"), ("emanet", "EMANet"), ("infnet", "Inf-Net"),
    ("miniseg", "MiniSeg"), ("psanet", "PSANet"), ("resunetpp", "ResUNet++"), ("transunet", "TransUNet"))
#: the configurations whose parameter counts match the review's Table 3 (overlay ``table3_<name>``): name, label.
_REVIEW_TABLE3_CONFIGS: tuple[tuple[str, str], ...] = (
    ("unet", "U-Net 64-512 (Table 3 configuration)"), ("pspnet", "PSPNet ResNet-34 (Table 3 configuration)"),
    ("deeplabv3plus", "DeepLabv3+, plain-convolution ASPP (Table 3 configuration)"))
_REVIEW_ROWS = ("review/table1", "review/table2", "review/table3")
_REVIEW_PAPER_ROW = dict(_REVIEW_NETWORKS)
_REVIEW_KEYS = tuple(k for k, _ in _REVIEW_NETWORKS)
_REVIEW_T3_KEYS = tuple(f"{k}_table3" for k, _ in _REVIEW_TABLE3_CONFIGS)
#: Table 2's columns -> our metrics: ``dice_<class>`` (crossval's per-class names, lower case) and the mean Dice.
_REVIEW_PER_CLASS = {**{c: f"dice_{c.lower()}" for c in REVIEW_CLASSES}, "mDice": "dice"}


def _review_methods() -> tuple[Method, ...]:
    nets = tuple(Method(k, label, (), dict.fromkeys(_REVIEW_ROWS, label), overrides={"network_name": k})
                 for k, label in _REVIEW_NETWORKS)
    configs = tuple(Method(f"{k}_table3", label, (f"table3_{k}",), dict.fromkeys(_REVIEW_ROWS, _REVIEW_PAPER_ROW[k]),
                           overrides={"network_name": k}) for k, label in _REVIEW_TABLE3_CONFIGS)
    return nets + configs


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
    "review_spine_mri_segmentation": Comparison(
        paper="review",
        title="Review of deep learning models for spine segmentation (Zhou et al., ICMR 2022)",
        paper_setting="MRSpineSeg, 880 x 880 sagittal slices, 8:2 split",
        method="deeplabv3plus",  # the paper's best (Table 1); the benchmark's ratios are to it
        methods=_review_methods(),
        tables=(TableSpec("review/table1", _REVIEW_KEYS),
                TableSpec("review/table2", _REVIEW_KEYS, metric_of=_REVIEW_PER_CLASS),
                # each Table 3 configuration below the network it stands for: benchmarked only (no training)
                TableSpec("review/table3", tuple(k for n in _REVIEW_KEYS
                                                 for k in (n, *(t for t in _REVIEW_T3_KEYS if t == f"{n}_table3"))),
                          kind="cost", bench=True, paper_setting="1 x 880 x 880 input, RTX 3090"),
                TableSpec("review/table1", _REVIEW_T3_KEYS, default=False, name="review/table1_table3_configs"),
                TableSpec("review/table2", _REVIEW_T3_KEYS, default=False, name="review/table2_table3_configs",
                          metric_of=_REVIEW_PER_CLASS)),
        bench_sizes=((880, 880),),  # one 1 x 880 x 880 slice (Section 4.4), as a 2D size
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


#: the benchmark columns of a ``bench=True`` table: (JSON key, Markdown header; ``{size}`` is the input size).
_BENCH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("params", "#Param"), ("flops", "FLOPs ({size})"), ("memory", "memory ({size}, inference)"),
    ("latency_s", "latency (s, {size})"), ("train_memory", "memory (training step)"))


def _count(n: float) -> str:
    """A parameter count as the papers print it: ``"31.11M"``, ``"85.1K"``."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _flops(n: float) -> str:
    """FLOPs as the review prints them (``"366.85G"``); ``"95.2M"`` below a GFLOP (a small test input)."""
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _memory(row: Mapping[str, Any]) -> str:
    """Peak memory of a benchmark row: CUDA memory allocated on a GPU, else the measuring process's peak RSS."""
    if row.get("peak_cuda_mb") is not None:
        return f"{row['peak_cuda_mb'] / 1024:.2f} GiB (CUDA)"
    return "-" if row.get("peak_rss_mb") is None else f"{row['peak_rss_mb'] / 1024:.2f} GiB (RSS)"


def _bench_cells(rows: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Our cells of a ``bench=True`` table from one method's benchmark rows (the first inference size)."""
    if not rows:
        return ["not run"] * len(_BENCH_COLUMNS)
    infer = next((r for r in rows if r.get("kind") == "infer"), None)
    train = next((r for r in rows if r.get("kind") == "train"), None)
    if infer is None or infer.get("error"):
        cells = ["error"] * (len(_BENCH_COLUMNS) - 1)
    else:
        cells = [_count(float(infer["params"])), _flops(float(infer["flops"])), _memory(infer),
                 f"{float(infer['latency_s']):.3f}"]
    if train is None:
        cells.append("-")
    else:
        cells.append("error" if train.get("error") else _memory(train))
    return cells


def _bench_size(spec: Comparison, bench: Mapping[str, Sequence[Mapping[str, Any]] | None]) -> str:
    for rows in bench.values():
        for r in rows or ():
            if r.get("kind") == "infer" and r.get("size"):
                return "x".join(str(int(d)) for d in r["size"])
    return "x".join(map(str, spec.bench_sizes[0])) if spec.bench_sizes else "?"


def _row(method: str, source: str, columns: Sequence[str], cells: Sequence[str]) -> dict[str, Any]:
    return {"method": method, "source": source, "values": dict(zip(columns, cells, strict=True))}


def render_tables(spec: Comparison, summaries: Mapping[str, Mapping[str, Any] | None],
                  context: Mapping[str, Any], tables: Sequence[str] | None = None,
                  bench: Mapping[str, Sequence[Mapping[str, Any]] | None] | None = None) -> tuple[str, dict[str, Any]]:
    """Markdown and JSON of the paper's tables with our cross-validation results beside the paper's numbers.

    Args:
        spec: the bundle's comparison.
        summaries: ``{method key: crossval summary.json content}``; a missing or ``None`` entry shows "not run".
        context: ``dataset``, ``folds``, ``folds_run``, ``device`` and ``command`` of our runs (``bench_device``:
            the benchmark's device, for ``bench=True`` tables).
        tables: table keys to write (``"saunet/table3"``, :attr:`TableSpec.key`); default the spec's default tables.
        bench: ``{method key: its rows of the benchmark JSON}`` (:func:`spine_monai.evaluation.bench.bench`) for the
            ``bench=True`` tables; a missing entry shows "not run".

    Returns:
        ``(markdown, json-able dict)``.
    """
    bench = bench or {}
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
        elif ts.bench:
            size = _bench_size(spec, bench)
            ours_bench = f"ours (bench, {context.get('bench_device', context['device'])})"
            keys = [k for k, _ in _BENCH_COLUMNS]
            md.append("| Method | " + " | ".join(f"paper: {pt.header(c)}" for c in pt.columns) + " | "
                      + " | ".join(f"ours: {h.format(size=size)}" for _, h in _BENCH_COLUMNS) + " |")
            md.append("|---|" + "---|" * (len(pt.columns) + len(_BENCH_COLUMNS)))
            errors = []
            for key in ts.methods:
                m = spec.get(key)
                paper_row = pt.rows.get(m.paper_rows.get(ts.paper_table, ""), {})
                paper_cells = [format_value(paper_row.get(c)) for c in pt.columns]
                our_cells = _bench_cells(bench.get(key))
                md.append(f"| {m.label} | " + " | ".join(paper_cells + our_cells) + " |")
                rows += [_row(m.label, paper_src, pt.columns, paper_cells), _row(m.label, ours_bench, keys, our_cells)]
                errors += [f"{m.label} ({r.get('kind')}): {' '.join(str(r['error']).split())[-300:]}"
                           for r in bench.get(key) or () if r.get("error")]
            md += ["", f"Ours: {ours_bench}, each network as this comparison configures it (its overlays and "
                   f"overrides), random weights, one input of {size}: parameters; FLOPs of one forward pass counted by "
                   "torch.utils.flop_counter (a multiply-add counts 2 FLOPs); peak memory during inference (CUDA: "
                   "memory allocated; CPU: resident memory of the whole measuring process); median latency of one "
                   "forward pass; peak memory of one training step on the bundle's training batch (\"-\": not "
                   "measured, see --bench_options). Details: <out>/bench/<method>_<device>.md."]
            if errors:
                md += ["", "Benchmark errors: " + "; ".join(errors)]
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
        written.append({"table": pt.table, "paper_table": ts.paper_table, "key": ts.key, "caption": pt.caption,
                        "rows": rows})
    return "\n".join(md), {"context": dict(context), "ours": ours, "paper": paper_src, "tables": written}


def select_tables(spec: Comparison, tables: str | Sequence[str] | None = None) -> list[TableSpec]:
    """The :class:`TableSpec` s named in ``tables`` (``"saunet/table1,saunet/table3"`` or a list, by
    :attr:`TableSpec.key`), in the spec's order; the default ones when ``tables`` is ``None``. ValueError naming the
    known tables otherwise."""
    from spine_monai.evaluation.crossval import parse_overlays

    if tables is None:
        return [ts for ts in spec.tables if ts.default]
    wanted = parse_overlays(tables)
    known = [ts.key for ts in spec.tables]
    unknown = [t for t in wanted if t not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown tables {unknown or wanted}; this bundle's tables are {known}.")
    return [ts for ts in spec.tables if ts.key in wanted]


def check_method_overrides(methods: Sequence[Method], overrides: Mapping[str, Any]) -> None:
    """Refuse common overrides of ids that the methods set themselves (:attr:`Method.overrides`).

    Such an override would be replaced for every method that sets the id (the review: ``--network_name unet`` would
    still run all twelve networks), so it is an error that says how to choose methods instead.

    Raises:
        ValueError: naming the ids and the methods that set them.
    """
    fixed = sorted({k for m in methods for k in m.overrides} & set(overrides))
    if fixed:
        owners = [m.key for m in methods if set(m.overrides) & set(fixed)]
        raise ValueError(f"overrides {fixed} are set by the methods {owners} themselves; choose methods with "
                         "--methods (e.g. --methods unet,miniseg) or change one method with --method_overrides.")


def _method_overrides(root: Path, overlays: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    from spine_monai.evaluation.crossval import split_overrides

    train, infer = split_overrides(root, overlays, overrides, strict=False)
    return {k: v for k, v in overrides.items() if k in train or k in infer}


def _defined_overrides(root: Path, methods: Sequence[Method], common: Sequence[str],
                       overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method key: the overrides its configs (common + own overlays) define}``; configs parsed once per overlay
    list (the review's twelve networks share one)."""
    by_overlays: dict[tuple[str, ...], dict[str, Any]] = {}
    out = {}
    for m in methods:
        ovl = (*common, *m.overlays)
        if ovl not in by_overlays:
            by_overlays[ovl] = _method_overrides(root, ovl, overrides) if overrides else {}
        out[m.key] = by_overlays[ovl]
    return out


#: options of the benchmark behind ``bench=True`` tables (arguments of :func:`spine_monai.evaluation.bench.bench`).
BENCH_OPTIONS: tuple[str, ...] = ("sizes", "repeats", "warmup", "train", "train_repeats", "train_warmup", "threads",
                                  "amp", "inferer", "time_budget_s", "timeout_s", "memory_limit_mb")


def _bench_options(spec: Comparison, options: Mapping[str, Any] | None, dev: str) -> dict[str, Any]:
    """The benchmark's options: the given ones over the defaults (the spec's first size, 3 runs after 1 warm-up, a
    training step on CUDA only)."""
    from spine_monai.evaluation.bench import parse_sizes

    options = dict(options or {})
    unknown = sorted(set(options) - set(BENCH_OPTIONS))
    if unknown:
        raise ValueError(f"--bench_options {unknown} are not options of the benchmark; known: {list(BENCH_OPTIONS)}.")
    sizes = parse_sizes(options.pop("sizes", None)) or list(spec.bench_sizes[:1])
    if not sizes:
        raise ValueError(f"no benchmark size declared for {spec.title}; pass --bench_options "
                         "'{\"sizes\": \"HxW\"}'.")
    out = {"sizes": [list(s) for s in sizes], "repeats": 3, "warmup": 1, "train": dev.startswith("cuda")}
    out.update(options)
    return json.loads(json.dumps(out, default=str))


def _bench_method(root: Path, m: Method, folder: Path, dev: str, common: Sequence[str], over: Mapping[str, Any],
                  options: Mapping[str, Any], overwrite: bool) -> list[dict[str, Any]]:
    """Benchmark one method (its rows of ``<folder>/<key>_<cpu|cuda>.json``); reuse a complete, error-free earlier
    result of the same request (``<key>_<cpu|cuda>.request.json``) unless ``overwrite``."""
    from spine_monai.evaluation.bench import bench

    stem = f"{m.key}_{'cuda' if dev.startswith('cuda') else 'cpu'}"
    request = json.loads(json.dumps({"bundle": root.name, "method": m.key, "overlays": [*common, *m.overlays],
                                     "overrides": dict(over), "device": dev, "options": dict(options)}, default=str))
    request_file, result_file = folder / f"{stem}.request.json", folder / f"{stem}.json"

    def rows_of(data: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [r for r in data.get("results", []) if r.get("method") == m.key]

    if not overwrite and request_file.is_file() and result_file.is_file():
        done = json.loads(result_file.read_text(encoding="utf-8"))
        rows = rows_of(done)
        same = json.loads(request_file.read_text(encoding="utf-8")) == request
        if same and done.get("complete") and rows and not any(r.get("error") for r in rows):
            logger.info("bench %s: results exist, skipped (%s)", m.label, result_file)
            return rows
    request_file.unlink(missing_ok=True)
    bench(str(root), methods=m.key, overlays=list(common), device=dev, out=folder, name=stem,
          method_overrides={m.key: dict(over)}, **options)
    rows = rows_of(json.loads(result_file.read_text(encoding="utf-8")))
    folder.mkdir(parents=True, exist_ok=True)
    request_file.write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")
    return rows


def compare(bundle: str, dataset_dir: str, folds: int = 5, max_folds: int | None = None,
            methods: str | Sequence[str] | None = None, out: str | os.PathLike | None = None, seed: int = 0,
            device: str = "auto", method_overrides: Mapping[str, Mapping[str, Any]] | None = None,
            overlays: str | Sequence[str] | None = None, include: str | Sequence[str] | None = None,
            tables: str | Sequence[str] | None = None, val_fraction: float = 0.1, overwrite: bool = False,
            progress: bool = True, bench_options: Mapping[str, Any] | None = None, **overrides: Any) -> str:
    """Cross-validate a bundle's method, baselines and ablations on the same folds and write the paper's tables.

    Resumable: run the same command again after a stop (module docstring, "Resuming").

    Args:
        bundle: bundle folder or name (must have an entry in :data:`COMPARISONS`).
        dataset_dir: dataset folder (see :func:`spine_monai.evaluation.crossval.crossval`).
        folds: number of folds k.
        max_folds: run only the first ``max_folds`` folds of every method (stated in the tables).
        methods: subset of method keys (``"saunet,no_isa"``; the review: ``"unet,miniseg"``); default all the chosen
            tables show.
        out: output folder; default ``./compare/<bundle>``. Holds ``folds.json``, one crossval folder per method,
            ``bench/`` (benchmarks of ``bench=True`` tables), ``tables.md`` and ``tables.json``.
        seed: fold seed.
        device: ``"auto"``, ``"cpu"`` or ``"cuda:0"``.
        method_overrides: per-method overrides on top of ``overrides`` and :attr:`Method.overrides`, e.g.
            ``{"unet3d": {"patch_size": [16, 32, 32]}}``.
        overlays: bundle overlays for every method, applied before each method's own overlays (a dataset's
            settings, e.g. ``real_lumbar_mri``; the review's ``cpu_small``).
        include: case-id glob(s) selecting cases of the dataset (``"VB*"``), when the folds are assigned here.
        tables: tables to write by :attr:`TableSpec.key` (``"saunet/table3"``); default the bundle's default tables.
            Only the methods these tables show are run, unless ``methods`` says otherwise; a method only a
            ``bench=True`` table shows is benchmarked, not trained.
        val_fraction: share of each fold's training cases held out for checkpoint selection (see
            :func:`spine_monai.evaluation.crossval.crossval`).
        overwrite: recompute existing fold results and benchmarks.
        progress: progress bars.
        bench_options: options of the benchmark of ``bench=True`` tables (:data:`BENCH_OPTIONS`), e.g.
            ``{"sizes": "160x160", "repeats": 1, "train": true}``; default the comparison's first bench size, 3 runs
            after 1 warm-up, a training step on CUDA only.
        overrides: config overrides for every method that defines the id (e.g. ``--epochs 50``;
            ``--unet3d_features "[...]"`` only reaches the 3D U-Net, and is accepted, unused, when it is not selected).

    Returns:
        The path of ``tables.md``.

    Raises:
        ValueError: for an unknown method, an override no method's configs define, or one the methods set
            themselves (:func:`check_method_overrides`).
    """
    from spine_monai.bundle.runner import resolve_bundle
    from spine_monai.evaluation.crossval import (
        crossval,
        device_description,
        parse_overlays,
        prepare_folds,
        resolve_device,
    )

    root = resolve_bundle(bundle)
    spec = comparison_for(root)
    chosen_tables = select_tables(spec, tables)
    trained = {k for ts in chosen_tables if not ts.bench for k in ts.methods}
    benched = {k for ts in chosen_tables if ts.bench for k in ts.methods}
    keys = parse_overlays(methods) or tuple(m.key for m in spec.methods if m.key in trained | benched)
    selected = [spec.get(k) for k in keys]
    common = parse_overlays(overlays)
    per_method = {k: dict(v) for k, v in (method_overrides or {}).items()}
    unknown = sorted(set(per_method) - {m.key for m in spec.methods})
    if unknown:
        raise ValueError(f"method_overrides for unknown methods {unknown}.")
    check_method_overrides(spec.methods, overrides)
    # an override is checked against every method of the comparison, so one set of overrides (e.g. the widths of
    # all networks) serves any --methods subset; each selected method receives only the ids its configs define
    defined = _defined_overrides(root, spec.methods, common, overrides)
    unused = sorted(set(overrides) - {k for f in defined.values() for k in f})
    if unused:
        raise ValueError(f"overrides {unused} are not ids of any method's configs.")
    dev = resolve_device(device)
    bench_opts = _bench_options(spec, bench_options, dev) if benched & set(keys) else {}
    out = Path(out) if out is not None else Path.cwd() / "compare" / root.name
    out.mkdir(parents=True, exist_ok=True)
    folds_file = prepare_folds(dataset_dir, out / "folds.json", folds, seed, include)
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
        args += ["--tables", ",".join(ts.key for ts in chosen_tables)]
    if float(val_fraction) != 0.1:
        args += ["--val_fraction", str(val_fraction)]
    if per_method:
        args += ["--method_overrides", json.dumps(per_method, separators=(",", ":"))]
    if bench_options:
        args += ["--bench_options", json.dumps(dict(bench_options), separators=(",", ":"), default=str)]
    for k, v in overrides.items():
        args += [f"--{k}", v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))]
    folds_data = json.loads(Path(folds_file).read_text(encoding="utf-8"))
    n_cases = len(folds_data.get("training", []))
    summaries: dict[str, dict[str, Any]] = {}
    bench_rows: dict[str, list[dict[str, Any]]] = {}

    def write_tables() -> Path:
        first = next(iter(summaries.values()), None)
        dataset = f"{first['dataset'] if first else folds_data.get('name', Path(dataset_dir).name)}, {n_cases} cases"
        if include is not None:  # name the selection, e.g. the 12 VB2 cases of the lumbar MRI
            dataset += " matching " + " ".join(parse_overlays(include))
        device_name = first["device_name"] if first else device_description(dev)
        context = {"dataset": dataset, "folds": folds, "folds_run": len(first["folds_run"]) if first else 0,
                   "device": device_name, "bench_device": device_description(dev), "command": shlex.join(args),
                   "out": str(out), "folds_file": str(folds_file), "val_fraction": float(val_fraction)}
        md, data = render_tables(spec, summaries, context, [ts.key for ts in chosen_tables], bench=bench_rows)
        data["comparison"] = asdict(spec)
        data["bench"] = bench_rows
        (out / "tables.md").write_text(md, encoding="utf-8")
        (out / "tables.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        return out / "tables.md"

    for m in selected:
        over = {**defined[m.key], **m.overrides, **per_method.get(m.key, {})}
        if m.key in trained or m.key not in benched:
            logger.info("compare: %s (%s)", m.label, ", ".join([*m.overlays, *map(str, m.overrides.values())])
                        or "the bundle's configs")
            folder = crossval(str(root), dataset_dir, folds=folds, overlays=(*common, *m.overlays), out=out / m.key,
                              seed=seed, max_folds=max_folds, device=dev, folds_file=folds_file, overwrite=overwrite,
                              progress=progress, val_fraction=val_fraction, **over)
            summaries[m.key] = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
        if m.key in benched:
            bench_rows[m.key] = _bench_method(root, m, out / "bench", dev, common, over, bench_opts, overwrite)
        write_tables()
    md_path = write_tables()
    logger.info("tables written to %s", md_path)
    return str(md_path)
