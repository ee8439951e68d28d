"""Benchmark: sizes, the timing loop, one measurement in-process, and a tiny full run with child processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_monai.evaluation.bench import bench, measure, parse_sizes
from spine_monai.evaluation.bench_measure import _timed

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"
TINY = {"features": [4, 8, 16], "unet3d_features": [4, 4, 8, 8, 16, 4], "patch_size": [-1, 32, 32], "num_samples": 1}
UNET3D_TINY = {"unet3d": {"patch_size": [16, 32, 32], "roi_size": [16, 32, 32]}}


def test_parse_sizes():
    assert parse_sizes("15x512x512,15x960x960") == [(15, 512, 512), (15, 960, 960)]
    assert parse_sizes([[3, 32, 32]]) == [(3, 32, 32)]
    assert parse_sizes((3, 32, 32)) == [(3, 32, 32)]
    assert parse_sizes(["3x32x32"]) == [(3, 32, 32)]
    assert parse_sizes(None) == []
    assert parse_sizes("256x1024") == [(256, 1024)]  # a 2D bundle's (X, Y)
    with pytest.raises(ValueError, match="three positive"):
        parse_sizes("15x512x512x3")
    with pytest.raises(ValueError, match="three positive"):
        parse_sizes([[0, 32, 32]])


def test_timed_repeats_and_budget():
    calls = []
    res = _timed(lambda: calls.append(1), warmup=1, repeats=3, budget=None, sync=lambda: None)
    assert len(calls) == 4 and res["runs"] == 3 and not res["first_run_used"] and res["median_s"] >= 0
    calls.clear()
    res = _timed(lambda: calls.append(1), warmup=1, repeats=3, budget=0.0, sync=lambda: None)
    assert len(calls) == 1 and res["runs"] == 0 and res["first_run_used"]  # the first run exceeded the budget
    assert res["median_s"] == res["warmup_s"][0]


def test_split_modules_reexported_from_bench():
    from spine_monai.evaluation import bench as bench_mod
    from spine_monai.evaluation import bench_measure, bench_report

    for mod, names in ((bench_measure, ("measure", "_timed", "_flops", "_rss_mb", "_maxrss_mb", "_run_child",
                                        "_child_main")),
                       (bench_report, ("render_markdown", "render_json", "_fmt", "_error"))):
        for name in names:
            assert getattr(bench_mod, name) is getattr(mod, name), name
    assert all(hasattr(bench_mod, name) for name in bench_mod.__all__)
    assert bench_report.render_json({"a": Path("x")}) == '{\n  "a": "x"\n}\n'


def _job(kind: str, overlays: list[str], infer: dict, train: dict, inferer: str = "network") -> dict:
    return {"kind": kind, "bundle": str(BUNDLE), "overlays": overlays, "infer_overrides": infer,
            "train_overrides": train, "size": [3, 32, 32], "device": "cpu", "inferer": inferer, "repeats": 2,
            "warmup": 0, "budget": None, "threads": 1, "amp": True}


def test_measure_infer_network_and_train():
    res = measure(_job("infer", [], {"features": [4, 8, 16]}, {}))
    assert res["params"] > 0 and res["flops"] > 0 and res["median_s"] > 0
    assert res["runs"] == 2 and res["peak_rss_mb"] > 0 and res["rss_before_mb"] > 0
    assert "whole volume" in res["inferer"]
    train = {"features": [4, 8, 16], "patch_size": [-1, 32, 32], "num_samples": 2}
    res = measure(_job("train", [], {}, train))
    assert res["input_shape"] == [2, 1, 3, 32, 32] and res["median_s"] > 0


def test_measure_sliding_window_counts_windows():
    over = {"unet3d_features": [4, 4, 8, 8, 16, 4], "roi_size": [16, 16, 16]}
    res = measure(_job("infer", ["baseline_unet3d"], over, {}, inferer="config"))
    # a 3 x 32 x 32 input padded to 16 in depth; in-plane stride 16 * (1 - 0.25) = 12: 1 x 3 x 3 windows of 16^3
    assert res["windows"] == 9
    assert "SlidingWindowInferer" in res["inferer"] and "roi=[16, 16, 16]" in res["inferer"]
    one = measure({**_job("infer", ["baseline_unet3d"], over, {}, inferer="network"), "size": [16, 16, 16]})
    assert res["flops"] == 9 * one["flops"]


def test_measure_two_stage_inferer_times_stage_one():
    """The CT bundle's AttentionFusionInferer: both stages timed together, stage 1 alone, and the report's shares."""
    from spine_monai.evaluation.bench_report import render_markdown

    ct = BUNDLE.parent / "attention_driven_spine_ct_segmentation"
    over = {"features": [4, 8, 16, 32, 64], "loc_features": [4, 4, 8, 8, 8, 8, 8, 8, 4], "roi_size": [12, 32, 32],
            "loc_patch_size": [32, 32], "slice_step": 4, "attention_sigma": [1.0, 2.0, 2.0]}
    res = measure({**_job("infer", [], over, {}, inferer="config"), "bundle": str(ct), "size": [16, 48, 48]})
    assert res["windows"] > 0 and "AttentionFusionInferer" in res["inferer"]
    assert 0 < res["stage1_s"] and res["median_s"] > 0
    row = {**res, "kind": "infer", "label": "Attention + segmentation net", "size": [16, 48, 48],
           "latency_s": max(res["median_s"], res["stage1_s"])}
    env = {"device": "cpu", "cpu": "x", "cpu_count": 2, "threads": 1, "torch": "t", "monai": "m", "python": "p",
           "platform": "l"}
    st = {"repeats": 2, "warmup": 0, "train_repeats": 1, "train_warmup": 0, "time_budget_s": None, "amp_bf16": False,
          "overrides": {}}
    md = render_markdown({"environment": env, "settings": st}, [("ct", "it", [row], [])])
    assert "| Attention + segmentation net | 16x48x48 |" in md and "stage 1 share" in md


@pytest.mark.slow
def test_bench_tiny_run_writes_json_and_ratios(tmp_path):
    md_path = bench(str(BUNDLE), sizes="3x32x32", methods="saunet,unet3d", repeats=2, warmup=1, threads=1,
                    train=False, out=tmp_path, name="tiny", method_overrides=UNET3D_TINY, profile="saunet", **TINY)
    data = json.loads((tmp_path / "tiny.json").read_text())
    assert data["complete"] is True
    env = data["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["monai"] and env["threads"] == 1
    rows = {(r["method"], r["kind"]): r for r in data["results"]}
    assert set(rows) == {("saunet", "infer"), ("unet3d", "infer")}  # training steps: see test_measure_*
    for r in rows.values():
        assert "error" not in r, r.get("error")
        assert r["latency_s"] > 0 and r["peak_rss_mb"] > 0 and r["latency_s_ratio"] > 0
    sau, u3d = rows[("saunet", "infer")], rows[("unet3d", "infer")]
    assert sau["latency_s_ratio"] == 1.0 and sau["params_ratio"] == 1.0
    assert u3d["latency_s_ratio"] == pytest.approx(u3d["latency_s"] / sau["latency_s"])
    assert u3d["flops_ratio"] == pytest.approx(u3d["flops"] / sau["flops"])
    assert u3d["windows"] == 1 and "SlidingWindowInferer" in u3d["inferer"]
    target = next(t for t in data["targets"] if "latency" in t["target"])
    assert target["value"] == pytest.approx(1.0 / u3d["latency_s_ratio"]) and target["met"] in (True, False)
    md = Path(md_path).read_text()
    assert "| SAU-Net | 3x32x32 |" in md and "Profile of SAU-Net" in md and "MONAI" in md


# ---------------------------------------------------------------------------------------------- the review (12 nets)
REVIEW = REPO / "bundles" / "review_spine_mri_segmentation"


def test_measure_review_network_from_the_registry():
    """The review's network_def is a registry call (no dict to read in_channels from) and it has no patch_size: one
    1 x H x W slice for inference, the training batch of whole slices of the benchmark's size."""
    from spine_monai.networks.registry import get_network

    over = {"network_name": "miniseg", "network_preset": "cpu", "img_size": 32}
    job = {**_job("infer", [], over, {}), "bundle": str(REVIEW), "size": [32, 32], "repeats": 1}
    res = measure(job)
    assert res["params"] == sum(p.numel() for p in get_network("miniseg", 1, 20, preset="cpu").parameters())
    assert res["flops"] > 0 and "whole image" in res["inferer"]
    res = measure({**job, "kind": "train", "infer_overrides": {}, "train_overrides": {**over, "num_samples": 1}})
    assert res["input_shape"] == [2, 1, 32, 32] and res["median_s"] > 0  # batch_size 2 x num_samples 1


def test_bench_review_method_overrides_and_overlays_reach_the_measurement(tmp_path, monkeypatch):
    """Each method's network_name (Method.overrides), its own overlay (table3_unet) and the common overlays reach
    the measured network; a common network_name is refused."""
    from spine_monai.evaluation import bench as bench_mod
    from spine_monai.networks.registry import get_network

    jobs = []

    def in_process(job, timeout):
        jobs.append(job)
        return measure(job)

    monkeypatch.setattr(bench_mod, "_run_child", in_process)
    md = bench(str(REVIEW), methods="miniseg,unet_table3", overlays="cpu_small", sizes="32x32", repeats=1, warmup=0,
               threads=1, train=False, out=tmp_path, name="review", img_size=32)
    assert [j["overlays"] for j in jobs] == [["cpu_small"], ["cpu_small", "table3_unet"]]
    assert [j["infer_overrides"]["network_name"] for j in jobs] == ["miniseg", "unet"]
    rows = {r["method"]: r for r in json.loads((tmp_path / "review.json").read_text())["results"]}
    assert rows["miniseg"]["params"] == sum(p.numel() for p in get_network("miniseg", 1, 20).parameters())
    features = [64, 128, 256, 512, 256, 64]  # the overlay's U-Net 64-512, over the cpu preset's widths
    assert rows["unet_table3"]["params"] == sum(p.numel() for p in get_network("unet", 1, 20, features=features)
                                                .parameters())
    assert rows["unet_table3"]["size"] == [32, 32] and "error" not in rows["unet_table3"]
    assert "| MiniSeg | 32x32 |" in Path(md).read_text()
    with pytest.raises(ValueError, match="network_name"):
        bench(str(REVIEW), methods="miniseg", sizes="32x32", out=tmp_path, network_name="unet")
