"""Benchmark of a bundle's networks: parameters, FLOPs, latency, peak memory, training step time.

``python -m spine_monai bench [BUNDLE ...] [--sizes 15x512x512,15x960x960] [--repeats 3] [--warmup 1]``

Efficiency is part of SAU-Net's claim (Zhang et al., MIDL 2020, Section 4.3, Table 2: 2D U-Net 153 s / 3D U-Net
534 s / SAU-Net 178 s; 35M / 83M / 38M), at the paper's sagittal volumes of 12-15 slices of 512 x 512 to
960 x 960 (Section 4.1). The networks are built from the bundle's own ``inference.json`` with each method's overlays
(the rows of :data:`spine_monai.evaluation.compare.COMPARISONS`), so the benchmark measures what the bundle runs.

Measured per network and input size, each in a fresh subprocess so that peak memories do not mix:

- FLOPs of one inference with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no compute; a
  multiply-add counts 2). For a sliding-window inferer: the sum over the windows it actually runs (counted with a
  stand-in network); the window blending is not counted.
- Latency: median of ``repeats`` timed runs after ``warmup`` runs, under ``torch.inference_mode``; on CUDA with
  bf16 autocast and synchronisation. ``time_budget_s`` caps the runs of one measurement: when the first run alone
  exceeds it, that run is the only sample (``runs`` = 0 and ``first_run_used`` in the JSON).
- Peak memory: the child's ``ru_maxrss`` after the inference runs (whole process, Python and libraries included;
  ``rss_before_mb`` is the resident size just before the first run); on CUDA ``torch.cuda.max_memory_allocated``.
- Training: one optimizer step (forward, the bundle's loss, backward, the bundle's optimizer) on a batch of
  ``batch_size * num_samples`` patches of the bundle's ``patch_size`` (a ``-1`` takes the slice count of the first
  size; a bundle without ``patch_size``, such as the review's, which trains on whole resized slices: inputs of the
  first size), in its own subprocess.

What is run: slice-wise networks (SAU-Net, the 2D U-Net) on the whole volume, ``network(x)`` (they take any size and
process the slices in chunks); the review's 2D networks on one ``(1, 1, H, W)`` slice (the paper's 1 x 880 x 880);
the 3D U-Net through the bundle's ``SlidingWindowInferer`` (its roi, overlap and blending), as the bundle runs it.
``--inferer config`` times every network through the bundle's inferer instead.

Code: the measuring (in the child processes) is in :mod:`spine_monai.evaluation.bench_measure`, the Markdown and JSON
rendering in :mod:`spine_monai.evaluation.bench_report`; their names are re-exported here.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine_monai.evaluation.bench_measure import (  # noqa: F401 (re-exported)
    _child_main,
    _flops,
    _maxrss_mb,
    _rss_mb,
    _run_child,
    _timed,
    measure,
)
from spine_monai.evaluation.bench_report import _error, _fmt, render_json, render_markdown  # noqa: F401 (re-exported)

__all__ = ["bench", "parse_sizes", "measure", "render_markdown", "CUDA_PEAK_TFLOPS"]

logger = logging.getLogger(__name__)

#: dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA datasheets, matched by device-name substring.
CUDA_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 756.0,
    "A100": 312.0, "L40S": 362.1, "L40": 181.0, "A10G": 70.0, "A10": 125.0, "L4": 121.0, "V100": 125.0,
    "RTX 4090": 165.2, "RTX A6000": 154.8, "T4": 65.0,
}


def parse_sizes(sizes: str | Sequence[Any] | None) -> list[tuple[int, ...]]:
    """``"15x512x512,15x960x960"``, ``[[15, 512, 512]]`` or ``["3x32x32"]`` -> ``[(15, 512, 512), ...]``.

    Raises:
        ValueError: if a size is not three positive integers.
    """
    if sizes is None:
        return []
    if isinstance(sizes, str):
        sizes = [s for s in sizes.replace(" ", "").split(",") if s]
    elif len(sizes) in (2, 3) and all(isinstance(s, (int, np.integer)) for s in sizes):
        sizes = [sizes]
    out = []
    for s in sizes:
        dims = [int(d) for d in s.lower().split("x")] if isinstance(s, str) else [int(d) for d in s]
        if len(dims) not in (2, 3) or min(dims) < 1:
            raise ValueError(f"size {s!r} must be three positive integers (slices, H, W), e.g. 15x512x512, or two "
                             "(X, Y) for a 2D bundle, e.g. 256x1024.")
        out.append(tuple(dims))
    return out


def _environment(dev: str, threads: int | None) -> dict[str, Any]:
    import monai
    import torch

    from spine_monai.evaluation.crossval import cpu_model

    env = {"device": dev, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
           "threads": threads or torch.get_num_threads(), "torch": torch.__version__, "monai": monai.__version__,
           "python": platform.python_version(), "platform": platform.platform(),
           "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if dev.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(dev))
        env["gpu"] = name
        env["gpu_peak_bf16_tflops"] = next((v for k, v in CUDA_PEAK_TFLOPS.items() if k in name), None)
    return env


def _ratios(rows: list[dict[str, Any]], reference: str) -> None:
    """Add ``<metric>_ratio`` (row / reference method at the same size) to every row in place."""
    ref = {tuple(r["size"]) if r["kind"] == "infer" else "train": r for r in rows if r["method"] == reference}
    for r in rows:
        base = ref.get(tuple(r["size"]) if r["kind"] == "infer" else "train")
        for metric in ("latency_s", "flops", "params", "peak_rss_mb", "peak_cuda_mb"):
            if base is not None and r.get(metric) and base.get(metric):
                r[f"{metric}_ratio"] = r[metric] / base[metric]


def _targets(spec: Any, rows: list[dict[str, Any]], dev: str) -> list[dict[str, Any]]:
    out = []
    for t in spec.targets:
        if t.device and not dev.startswith(t.device):
            continue
        for r in rows:
            if r["kind"] != "infer" or r["method"] != t.method or (t.size and tuple(r["size"]) != tuple(t.size)):
                continue
            value = r.get(t.metric)
            if t.ratio_to is not None:
                other = next((o for o in rows if o["method"] == t.ratio_to and o["kind"] == "infer"
                              and o["size"] == r["size"]), None)
                value = value / other[t.metric] if value and other and other.get(t.metric) else None
            out.append({"target": t.name, "size": r["size"], "value": value, "max": t.max_value,
                        "met": None if value is None else bool(value <= t.max_value)})
    return out


def bench(*bundles: str, sizes: str | Sequence[Any] | None = None, methods: str | Sequence[str] | None = None,
          repeats: int = 3, warmup: int = 1, train: bool = True, train_repeats: int | None = None,
          train_warmup: int | None = None, device: str = "auto", threads: int | None = None, amp: bool = True,
          inferer: str = "auto", time_budget_s: float | None = None, timeout_s: float | None = None,
          profile: str | Sequence[str] | None = None, memory_limit_mb: float | None = None,
          method_overrides: Mapping[str, Mapping[str, Any]] | None = None,
          overlays: str | Sequence[str] | None = None,
          out: str | os.PathLike = "bench", name: str | None = None, **overrides: Any) -> str:
    """Benchmark the networks of one or more bundles and write ``<out>/<name>.md`` and ``<out>/<name>.json``.

    Args:
        bundles: bundle folders or names; default the SAU-Net bundle.
        sizes: input sizes ``(slices, H, W)``; default the paper's sizes of the bundle's comparison.
        methods: method keys (``"saunet,unet3d"``); default all rows of the bundle's comparison.
        repeats: timed runs (median reported).
        warmup: untimed runs before them.
        train: also time one training step per network.
        train_repeats, train_warmup: the same for the training step (default ``repeats`` / ``warmup``).
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``.
        threads: torch threads in the children (default torch's).
        amp: bf16 autocast on CUDA.
        inferer: ``"auto"`` (per method, see the module docstring), ``"network"`` or ``"config"`` for all.
        time_budget_s: cap on the seconds of one measurement (fewer repeats for slow networks).
        timeout_s: kill a child after this many seconds (recorded as an error).
        profile: method keys to profile with ``torch.profiler`` (one extra run at the first size, after the peak
            memory is read; top ops by time and by memory in the Markdown).
        memory_limit_mb: cap on each child's data segment (``RLIMIT_DATA``, Linux), so that a network that does not
            fit fails with an error in its row instead of driving a shared machine out of memory.
        method_overrides: per-method overrides, e.g. ``{"unet3d": {"roi_size": [16, 32, 32]}}``, applied after
            ``overrides`` and the method's own (:attr:`spine_monai.evaluation.compare.Method.overrides`, e.g. the
            review's ``network_name``).
        overlays: bundle overlays for every method, applied before each method's own (the review's ``cpu_small``).
        out: output folder; ``<name>.json`` is rewritten after every measurement (``"complete": false``) so a
            stopped run keeps what it measured.
        name: file stem; default ``bench_cpu`` / ``bench_cuda``.
        overrides: config overrides for every method that defines the id (e.g. ``--features "[8,16,32]"``).

    Returns:
        The path of the Markdown file.

    Raises:
        ValueError: on bad ``repeats``, ``warmup``, ``inferer``, sizes, methods or overrides.
    """
    from spine_monai.bundle.runner import resolve_bundle
    from spine_monai.evaluation.compare import check_method_overrides, comparison_for
    from spine_monai.evaluation.crossval import parse_overlays, resolve_device, split_overrides

    if repeats < 1 or warmup < 0:
        raise ValueError(f"--repeats {repeats!r} must be >= 1 and --warmup {warmup!r} >= 0.")
    if inferer not in ("auto", "network", "config"):
        raise ValueError(f"--inferer {inferer!r} must be 'auto', 'network' or 'config'.")
    dev = resolve_device(device)
    env = _environment(dev, threads)
    to_profile = set(parse_overlays(profile))
    common = parse_overlays(overlays)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or f"bench_{'cuda' if dev.startswith('cuda') else 'cpu'}"
    settings = {"repeats": repeats, "warmup": warmup, "train_repeats": train_repeats or repeats,
                "train_warmup": warmup if train_warmup is None else train_warmup, "time_budget_s": time_budget_s,
                "amp_bf16": amp and dev.startswith("cuda"), "inferer": inferer, "memory_limit_mb": memory_limit_mb,
                "overrides": overrides, "method_overrides": method_overrides or {}, "overlays": list(common)}
    all_rows, all_targets, sections = [], [], []
    for bundle in bundles or ("saunet_spine_mri_segmentation",):
        root = resolve_bundle(bundle)
        spec = comparison_for(root)
        keys = parse_overlays(methods) or tuple(m.key for m in spec.methods)
        sel = [spec.get(k) for k in keys]
        check_method_overrides(sel, overrides)
        bench_sizes = parse_sizes(sizes) or list(spec.bench_sizes)
        if not bench_sizes:
            raise ValueError(f"no sizes given and none declared for {root.name}; pass --sizes.")
        rows = []
        split = {m.key: split_overrides(root, (*common, *m.overlays),
                                        {**overrides, **m.overrides, **(method_overrides or {}).get(m.key, {})},
                                        strict=False) for m in sel}
        unused = sorted(set(overrides) - {k for t, i in split.values() for k in (*t, *i)})
        if unused:
            raise ValueError(f"overrides {unused} are not ids of any selected method's configs of {root.name}.")
        for m in sel:
            train_over, infer_over = split[m.key]
            base = {"bundle": str(root), "overlays": [*common, *m.overlays], "device": dev, "threads": threads,
                    "amp": amp, "budget": time_budget_s, "memory_limit_mb": memory_limit_mb,
                    "train_overrides": train_over, "infer_overrides": infer_over}
            mode = m.bench_inferer if inferer == "auto" else inferer
            jobs = [{**base, "kind": "infer", "size": list(s), "inferer": mode, "repeats": repeats, "warmup": warmup,
                     "profile": m.key in to_profile and i == 0} for i, s in enumerate(bench_sizes)]
            if train:
                jobs.append({**base, "kind": "train", "size": list(bench_sizes[0]), "inferer": mode,
                             "repeats": train_repeats or repeats,
                             "warmup": warmup if train_warmup is None else train_warmup})
            for job in jobs:
                logger.info("bench %s: %s %s", root.name, m.label, job["kind"] + " " + "x".join(map(str, job["size"])))
                t = time.perf_counter()
                res = _run_child(job, timeout_s)
                res.update(method=m.key, label=m.label, bundle=root.name, kind=job["kind"], size=job["size"],
                           wall_s=time.perf_counter() - t)
                if "median_s" in res:
                    res["latency_s"] = res.pop("median_s")
                if res.get("flops") and res.get("latency_s"):
                    res["gflops_per_s"] = res["flops"] / res["latency_s"] / 1e9
                    if env.get("gpu_peak_bf16_tflops"):
                        res["fraction_of_peak"] = res["gflops_per_s"] / 1e3 / env["gpu_peak_bf16_tflops"]
                if res.get("error"):
                    logger.warning("bench %s %s failed: %s", m.label, job["kind"], res["error"][-300:])
                rows.append(res)
                partial = {"environment": env, "settings": settings, "results": all_rows + rows, "complete": False}
                (out / f"{stem}.json").write_text(render_json(partial), encoding="utf-8")
        _ratios(rows, spec.method)
        targets = _targets(spec, rows, dev)
        all_rows += rows
        all_targets += targets
        sections.append((root.name, spec.get(spec.method).label, rows, targets))
    env["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    data = {"environment": env, "settings": settings, "results": all_rows, "targets": all_targets, "complete": True}
    (out / f"{stem}.json").write_text(render_json(data), encoding="utf-8")
    md_path = out / f"{stem}.md"
    md_path.write_text(render_markdown(data, sections), encoding="utf-8")
    logger.info("benchmark written to %s", md_path)
    return str(md_path)


if __name__ == "__main__":  # the child entry point, as before (the same as bench_measure's)
    _child_main(sys.argv[1])
