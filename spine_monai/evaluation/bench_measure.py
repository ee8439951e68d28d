"""Measuring one network of a bundle: parameters, FLOPs, latency, peak memory, training step time.

Part of :mod:`spine_monai.evaluation.bench`, whose docstring says what is measured and how. :func:`bench` runs each
measurement in a fresh child process (:func:`_run_child`: ``python -m spine_monai.evaluation.bench_measure
job.json``, so that peak memories do not mix); the child applies the memory limit, calls :func:`measure` and writes
its result as JSON.

- :func:`measure`: builds the network from the bundle's configs with the method's overlays; for ``"infer"`` counts
  parameters and FLOPs (meta device, :func:`_flops`), times the inferences (:func:`_timed`) and reads the peak
  memory; for ``"train"`` times optimizer steps of the bundle's loss and optimizer on random patches.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure"]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _timed(fn: Callable[[], Any], warmup: int, repeats: int, budget: float | None, sync: Callable[[], None]) -> dict:
    """Run ``fn`` ``warmup`` times then ``repeats`` times (fewer within ``budget`` seconds); median of the latter."""
    warm: list[float] = []
    for _ in range(warmup):
        t = time.perf_counter()
        fn()
        sync()
        warm.append(time.perf_counter() - t)
        if budget is not None and sum(warm) > budget:
            break
    n = repeats
    if budget is not None and warm:
        n = 0 if sum(warm) + warm[-1] > budget else min(repeats, max(1, int((budget - sum(warm)) // warm[-1])))
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    used = samples or warm[-1:]
    return {"median_s": float(np.median(used)), "runs": len(samples), "first_run_used": not samples,
            "samples_s": samples, "warmup_s": warm}


def _flops(net_meta: Any, shapes: Sequence[tuple[int, ...]]) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    total, cache = 0, {}
    for shape in shapes:
        if shape not in cache:
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                net_meta(torch.empty(shape, device="meta"))
            cache[shape] = fc.get_total_flops()
        total += cache[shape]
    return int(total)


def _in_channels(parser: Any) -> int:
    """Input channels of the bundle's network: ``network_def``'s ``in_channels`` when it is a dict, else the metadata's
    ``inputs.image.num_channels`` (a ``network_def`` that is an expression, as the review's registry call), else 1."""
    raw = parser["network_def"]
    if isinstance(raw, Mapping) and "in_channels" in raw:
        return int(raw["in_channels"])
    try:
        return int(parser["_meta_"]["network_data_format"]["inputs"]["image"]["num_channels"])
    except (KeyError, TypeError, ValueError):
        return 1


def measure(job: Mapping[str, Any]) -> dict[str, Any]:
    """One measurement (run in a child process by :func:`bench`): ``job["kind"]`` is ``"infer"`` or ``"train"``.

    Args:
        job: ``bundle``, ``overlays``, ``infer_overrides``, ``train_overrides``, ``size``, ``device``, ``inferer``
            (``"network"``/``"config"``), ``repeats``, ``warmup``, ``budget``, ``threads``, ``amp``, ``profile``.

    Returns:
        The measured values (see :mod:`spine_monai.evaluation.bench`).
    """
    import torch

    from spine_monai.bundle.runner import make_workflow

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    dev = torch.device(job["device"])
    cuda = dev.type == "cuda"
    amp = bool(job.get("amp", True)) and cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp)
    size = tuple(job["size"])
    res: dict[str, Any] = {"kind": job["kind"], "size": list(size), "threads": torch.get_num_threads()}
    if job["kind"] == "train":
        parser = make_workflow(job["bundle"], ["train", *job["overlays"]], "train", **job["train_overrides"],
                               device=f"$torch.device('{dev}')").parser
        net = parser.get_parsed_content("network").train()
        loss_fn, opt = parser.get_parsed_content("loss"), parser.get_parsed_content("optimizer")
        if "patch_size" in parser:
            patch = [size[i] if int(p) == -1 else int(p) for i, p in enumerate(parser.get_parsed_content("patch_size"))]
        else:  # whole inputs (the review trains on whole slices resized to img_size): the benchmark's size
            patch = list(size)
        get = parser.get_parsed_content
        samples = int(get("num_samples")) if "num_samples" in parser else 1
        batch = int(get("train#dataloader#batch_size")) * samples
        in_ch = _in_channels(parser)
        x = torch.rand(batch, in_ch, *patch, device=dev)
        with torch.device("meta"):  # the output shape without computing it
            net_meta = parser.get_parsed_content("network_def", lazy=False).eval()
        with torch.no_grad():
            out_meta = net_meta(torch.empty(x.shape, device="meta"))
        out_shape = (out_meta[0] if isinstance(out_meta, (tuple, list)) else out_meta).shape
        if out_shape[1] > 1:  # multi-class (softmax) losses take a class-index label (B, 1, *S)
            target = torch.randint(0, int(out_shape[1]), (out_shape[0], 1, *out_shape[2:]), device=dev).float()
        else:
            target = (torch.rand(out_shape, device=dev) > 0.5).float()  # a random binary map (BCE losses)

        def _float(out: Any) -> Any:
            return type(out)(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn(_float(net(x)), target)
            loss.backward()
            opt.step()

        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        res.update(input_shape=list(x.shape), **_timed(step, job["warmup"], job["repeats"], job.get("budget"), sync))
    else:
        parser = make_workflow(job["bundle"], ["inference", *job["overlays"]], "infer", **job["infer_overrides"],
                               device=f"$torch.device('{dev}')").parser
        net = parser.get_parsed_content("network_def").to(dev).eval()
        res["params"] = int(sum(p.numel() for p in net.parameters()))
        with torch.device("meta"):
            net_meta = parser.get_parsed_content("network_def", lazy=False).eval()
        in_ch = _in_channels(parser)
        x = torch.rand(1, in_ch, *size, device=dev)
        if job["inferer"] == "config":
            if "localization_ckpt" in parser:  # a two-stage bundle: time random weights, like the network's own
                parser["localization_ckpt"] = None
            inferer = parser.get_parsed_content("inferer")
            res["inferer"] = (f"{type(inferer).__name__} roi={list(getattr(inferer, 'roi_size', []))} "
                              f"overlap={getattr(inferer, 'overlap', '')} mode={getattr(inferer, 'mode', '')}")
            shapes: list[tuple[int, ...]] = []

            def stand_in(w: torch.Tensor) -> torch.Tensor:  # records the windows, returns zeros of the output shape
                shapes.append(tuple(w.shape))
                with torch.no_grad():
                    out = net_meta(torch.empty(w.shape, device="meta"))
                return torch.zeros(out.shape, device=w.device)

            with torch.inference_mode():
                inferer(torch.zeros_like(x), stand_in)
            res["windows"] = len(shapes)

            def run() -> Any:
                return inferer(x, net)
        else:
            chunk = getattr(net, "slice_chunk", None)
            whole = "volume" if len(size) == 3 else "image"
            res["inferer"] = f"network(x) on the whole {whole}" + (f", slice chunks of {chunk}" if chunk else "")
            shapes = [tuple(x.shape)]

            def run() -> Any:
                return net(x)

        res["flops"] = _flops(net_meta, shapes)
        del net_meta
        res["rss_before_mb"] = _rss_mb()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        with torch.inference_mode(), autocast:
            res.update(_timed(run, job["warmup"], job["repeats"], job.get("budget"), sync))
            stage1 = getattr(inferer, "mask", None) if job["inferer"] == "config" else None
            if callable(stage1) and getattr(inferer, "use_localization", False):
                # a two-stage inferer (AttentionFusionInferer): stage 1 alone, so the report gives each stage's share
                timed = _timed(lambda: stage1(x), job["warmup"], job["repeats"], job.get("budget"), sync)
                res["stage1_s"] = timed["median_s"]
        res["peak_rss_mb"] = _maxrss_mb()  # before profiling, which adds its own memory
        if job.get("profile"):
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with torch.inference_mode(), autocast, profile(activities=acts, profile_memory=True) as prof:
                run()
                sync()
            dev_key = "cuda" if cuda else "cpu"
            averages = prof.key_averages()
            res["profile"] = averages.table(sort_by=f"self_{dev_key}_time_total", row_limit=15)
            res["profile_memory"] = averages.table(sort_by=f"self_{dev_key}_memory_usage", row_limit=10)
    res.setdefault("peak_rss_mb", _maxrss_mb())
    if cuda:
        res["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return res


def _run_child(job: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({**job, "result": str(result)}), encoding="utf-8")
        env = dict(os.environ)
        if job.get("threads"):
            env["OMP_NUM_THREADS"] = str(job["threads"])
        try:
            proc = subprocess.run([sys.executable, "-m", "spine_monai.evaluation.bench_measure", str(spec)], env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not result.is_file():
            return {"error": f"exit status {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
        return json.loads(result.read_text(encoding="utf-8"))


def _child_main(spec_path: str) -> None:
    job = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if job.get("memory_limit_mb"):
        limit = int(job["memory_limit_mb"] * 2**20)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    result = measure(job)
    Path(job["result"]).write_text(json.dumps(result, default=str), encoding="utf-8")


if __name__ == "__main__":
    _child_main(sys.argv[1])
