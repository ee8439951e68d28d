"""Rendering of a benchmark: the Markdown report and the text of the JSON file.

Part of :mod:`spine_monai.evaluation.bench`. :func:`render_markdown` writes the environment and settings, then per
bundle one table of inference rows (ratios to the bundle's reference method in parentheses), the training steps,
the targets and the ``torch.profiler`` tables; a failed or skipped measurement is one row with its message.
:func:`render_json` is the JSON text (indent 2, non-JSON values as strings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_markdown", "render_json"]


def _fmt(value: Any, spec: str, ratio: Any = None, suffix: str = "") -> str:
    if value is None:
        return "-"
    text = format(value, spec) + suffix
    return text if ratio is None else f"{text} ({ratio:.2f}x)"


def _error(row: Mapping[str, Any]) -> str:
    """``error: <tail of the message>``, or ``skipped: <reason>`` for a row marked ``skipped``."""
    text = " ".join(str(row["error"]).split())[-300:]
    return f"{'skipped' if row.get('skipped') else 'error'}: {text}"


def render_markdown(data: Mapping[str, Any], sections: Sequence[tuple[str, str, list, list]]) -> str:
    """Markdown of a benchmark: environment, one table per bundle, targets, profiles."""
    env, st = data["environment"], data["settings"]
    lines = ["# Benchmark", "",
             f"- device: {env['device']}" + (f" ({env['gpu']})" if env.get("gpu") else ""),
             f"- CPU: {env['cpu']}, {env['cpu_count']} logical cores, torch threads {env['threads']}",
             f"- torch {env['torch']}, MONAI {env['monai']}, Python {env['python']}, {env['platform']}",
             f"- load average at start / end: {env.get('load_average_start')} / {env.get('load_average_end')}",
             f"- repeats {st['repeats']} after {st['warmup']} warm-up (training: {st['train_repeats']} after "
             f"{st['train_warmup']}), time budget per measurement {st['time_budget_s']} s; bf16 AMP: "
             f"{st['amp_bf16']}; overrides {json.dumps(st['overrides'])}"
             + (f"; overlays {st['overlays']}" if st.get("overlays") else "")
             + (f"; per method {json.dumps(st['method_overrides'])}" if st.get("method_overrides") else ""), ""]
    for bundle, ref_label, rows, targets in sections:
        lines += [f"## {bundle}", "", f"Ratios in parentheses are to {ref_label} at the same size. Latency: median "
                  "seconds per volume (runs timed; `1st` = only the first run, it exceeded the time budget). Peak "
                  "memory: whole child process (maxrss).", "",
                  "| network | input | inference | params | GFLOP | latency (s) | runs | GFLOP/s | peak RSS (MiB) "
                  "| RSS before 1st run (MiB) |" + (" peak CUDA (MiB) |" if env["device"].startswith("cuda") else ""),
                  "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if env["device"].startswith("cuda") else "")]
        for r in (r for r in rows if r["kind"] == "infer"):
            if r.get("error"):
                lines.append(f"| {r['label']} | {'x'.join(map(str, r['size']))} | {_error(r)} |")
                continue
            rate = _fmt(r.get("gflops_per_s"), ".1f")
            if r.get("fraction_of_peak"):
                rate += f" ({100 * r['fraction_of_peak']:.1f}% of peak)"
            cells = [r["label"], "x".join(map(str, r["size"])), r.get("inferer", ""),
                     _fmt(r.get("params", 0) / 1e6, ".2f", r.get("params_ratio"), "M"),
                     _fmt(r.get("flops", 0) / 1e9, ".1f", r.get("flops_ratio")),
                     _fmt(r.get("latency_s"), ".3f", r.get("latency_s_ratio")),
                     "1st" if r.get("first_run_used") else str(r.get("runs")), rate,
                     _fmt(r.get("peak_rss_mb"), ".0f", r.get("peak_rss_mb_ratio")), _fmt(r.get("rss_before_mb"), ".0f")]
            if env["device"].startswith("cuda"):
                cells.append(_fmt(r.get("peak_cuda_mb"), ".0f", r.get("peak_cuda_mb_ratio")))
            lines.append("| " + " | ".join(cells) + " |")
        staged = [r for r in rows if r["kind"] == "infer" and r.get("stage1_s") and r.get("latency_s")]
        if staged:
            lines += ["", "Two-stage inference: stage 1 (localisation on every n-th sagittal slice, up-sampling, "
                      "smoothing, threshold) timed alone, stage 2 (sliding-window segmentation and fusion) = the "
                      "rest.", "", "| network | input | stage 1 (s) | stage 2 (s) | stage 1 share |",
                      "|---|---|---|---|---|"]
            for r in staged:
                s1, total = float(r["stage1_s"]), float(r["latency_s"])
                size = "x".join(map(str, r["size"]))
                share = f"{100 * s1 / total:.1f}%"
                lines.append(f"| {r['label']} | {size} | {s1:.3f} | {max(total - s1, 0.0):.3f} | {share} |")
        train_rows = [r for r in rows if r["kind"] == "train"]
        if train_rows:
            lines += ["", "Training: one optimizer step on the bundle's training batch.", "",
                      "| network | batch | step (s) | runs | peak RSS (MiB) |", "|---|---|---|---|---|"]
            for r in train_rows:
                if r.get("error"):
                    lines.append(f"| {r['label']} | {_error(r)} | | | |")
                    continue
                lines.append(f"| {r['label']} | {r.get('input_shape')} | "
                             f"{_fmt(r.get('latency_s'), '.3f', r.get('latency_s_ratio'))} | "
                             f"{'1st' if r.get('first_run_used') else r.get('runs')} | "
                             f"{_fmt(r.get('peak_rss_mb'), '.0f')} |")
        if targets:
            lines += ["", "Targets:", "", "| target | input | value | limit | met |", "|---|---|---|---|---|"]
            for t in targets:
                lines.append(f"| {t['target']} | {'x'.join(map(str, t['size']))} | {_fmt(t['value'], '.3f')} | "
                             f"{t['max']} | {'yes' if t['met'] else ('no' if t['met'] is False else '-')} |")
        for r in rows:
            if r.get("profile"):
                lines += ["", f"Profile of {r['label']} at {'x'.join(map(str, r['size']))} (one run; by self time, "
                          "then by memory allocated):", "", "```", r["profile"].rstrip(), "",
                          r.get("profile_memory", "").rstrip(), "```"]
        lines.append("")
    return "\n".join(lines)


def render_json(data: Mapping[str, Any]) -> str:
    """The text of ``<name>.json``: ``data`` with indent 2, values JSON does not know as strings, a final newline."""
    return json.dumps(data, indent=2, default=str) + "\n"
