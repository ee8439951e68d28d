"""Comparison tables rendered from synthetic per-fold results (no training) and the papers' numbers as data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_monai.evaluation.compare import COMPARISONS, compare, ours_label, render_tables, select_tables
from spine_monai.evaluation.paper_tables import PAPER_TABLES, format_value, paper_table

REPO = Path(__file__).resolve().parents[2]
SAU = COMPARISONS["saunet_spine_mri_segmentation"]
CONTEXT = {"dataset": "phantoms", "folds": 5, "folds_run": 2, "device": "cpu (test CPU, 2 threads)",
           "command": "python -m spine_monai compare saunet_spine_mri_segmentation --max_folds 2"}


def _summary(dice: float, std: float, n: int = 2) -> dict:
    stats = {m: {"mean": v, "std": s, "n": n} for m, v, s in
             [("dice", dice, std), ("precision", 0.8, 0.01), ("recall", 0.9, 0.02), ("jaccard", 0.7, 0.03),
              ("hd", 3.5, 0.25), ("hd95", 2.0, 0.1), ("msd", 0.5, 0.05)]}
    return {"across_folds": stats, "params": 1_400_000, "weights_mb": 5.4,
            "timing": {"infer_s_per_volume": {"mean": 1.25, "std": 0.05, "n": n},
                       "train_s": {"mean": 600.0, "std": 10.0, "n": n}}}


def test_paper_numbers_as_printed():
    t1 = paper_table("saunet/table1")
    assert t1.rows["SAU-Net"]["dice"] == (89.86, 0.10)
    assert format_value(t1.rows["SAU-Net"]["dice"]) == "89.86 ± 0.10"
    assert format_value(t1.rows["2D U-Net"]["hd"]) == "3.12 ± 0.035"
    assert format_value(paper_table("saunet/table3").rows["SAU-Net (pre-trained on SpineSegT2W)"]["dice"]) == "89.31"
    assert format_value(paper_table("saunet/table2").rows["3D U-Net"]["time"]) == "534s"
    assert format_value(None) == "-"
    assert paper_table("saunet/table4").rows["Ours w/o ISA"]["dice"] == (88.89, 0.20)
    with pytest.raises(ValueError, match="unknown paper table"):
        paper_table("saunet/table9")


def test_paper_tables_are_complete():
    for key, table in PAPER_TABLES.items():
        assert key.split("/")[0] == table.paper
        for label, row in table.rows.items():
            assert set(row) <= set(table.columns), (key, label)
            for value in row.values():
                assert isinstance(value, str) or (len(value) == 2 and isinstance(value[0], float)), (key, label)


def test_comparison_declarations_match_bundles_and_papers():
    for bundle, spec in COMPARISONS.items():
        configs = REPO / "bundles" / bundle / "configs"
        assert spec.method in {m.key for m in spec.methods}
        for m in spec.methods:
            for overlay in m.overlays:
                assert (configs / f"{overlay}.json").is_file(), overlay
            for table, row in m.paper_rows.items():
                assert row in paper_table(table).rows, (table, row)
        for ts in spec.tables:
            # a table may show a method the paper did not run (Sekuboyina's seg-only ablation), not only such ones
            assert any(spec.get(k).paper_rows.get(ts.paper_table) for k in ts.methods), ts.paper_table
            assert set(ts.metric_of) <= set(paper_table(ts.paper_table).columns), ts.paper_table
        for t in spec.targets:
            spec.get(t.method)
    with pytest.raises(ValueError, match="unknown method"):
        SAU.get("unet5d")


def test_render_tables_ours_beside_paper():
    summaries = {"unet2d": _summary(0.85, 0.004), "unet3d": _summary(0.88, 0.002), "saunet": _summary(0.9012, 0.0015),
                 "no_isa": None}
    md, data = render_tables(SAU, summaries, CONTEXT)
    label = ours_label(CONTEXT)
    assert label == "ours (phantoms, 2 of 5 folds, cpu (test CPU, 2 threads))"
    assert "paper (SpineSegT2W, 5-fold)" in md and label in md and CONTEXT["command"] in md
    # Table 1: the paper's and our rows, overlap metrics in percent, distances in mm
    assert "| SAU-Net | paper (SpineSegT2W, 5-fold) | 89.86 ± 0.10 | 89.75 ± 0.24 | 90.41 ± 0.36 | 81.56 ± 0.20 | " \
           "1.76 ± 0.023 |" in md
    assert f"| SAU-Net | {label} | 90.12 ± 0.15 | 80.00 ± 1.00 | 90.00 ± 2.00 | 70.00 ± 3.00 | 3.50 ± 0.250 |" in md
    assert "| 2D U-Net | paper (SpineSegT2W, 5-fold) | 88.06 ± 0.16 |" in md
    # Table 2: time and size beside the paper's
    assert "| 3D U-Net | 534s | 83M | 1.25 ± 0.05 | 600 | 1.40M | 5.4 MiB |" in md
    # Table 4: the ablation that did not run says so
    assert f"| SAU-Net w/o ISA | {label} | not run |" in md
    assert "| SAU-Net w/o ISA | paper (SpineSegT2W, 5-fold) | 88.89 ± 0.20 |" in md
    assert [t["table"] for t in data["tables"]] == ["Table 1", "Table 2", "Table 4"]
    t1 = data["tables"][0]["rows"]
    assert t1[4] == {"method": "SAU-Net", "source": "paper (SpineSegT2W, 5-fold)",
                     "values": {"dice": "89.86 ± 0.10", "precision": "89.75 ± 0.24", "recall": "90.41 ± 0.36",
                                "jaccard": "81.56 ± 0.20", "hd": "1.76 ± 0.023"}}


def test_render_sekuboyina_table2_healthy_vs_fractured():
    spec = COMPARISONS["attention_driven_spine_ct_segmentation"]
    ours = _summary(0.8, 0.01)
    ours["across_folds"].update({"dice_healthy": {"mean": 0.83, "std": 0.02, "n": 2},
                                 "dice_fractured": {"mean": 0.71, "std": 0.05, "n": 2}})
    md, data = render_tables(spec, {"attention": ours, "seg_only": None}, CONTEXT)
    label = ours_label(CONTEXT)
    assert [t["table"] for t in data["tables"]] == ["Table 1", "Table 2"]
    assert f"| Attention + segmentation net, late fusion | {label} | 83.00 ± 2.00 | 71.00 ± 5.00 |" in md
    assert "| Attention + segmentation net, late fusion | paper (CSI 2014 challenge CT" in md
    assert "| 92.10 ± 1.60 | 83.72 ± 4.70 |" in md
    assert f"| Segmentation net alone | {label} | not run | not run |" in md
    assert f"| Attention + segmentation net, late fusion | {label} | 80.00 ± 1.00 |" in md  # Table 1: all phantoms


def test_select_tables_default_and_named():
    assert [t.paper_table for t in select_tables(SAU)] == ["saunet/table1", "saunet/table2", "saunet/table4"]
    assert [t.paper_table for t in select_tables(SAU, "saunet/table3")] == ["saunet/table3"]
    assert [t.paper_table for t in select_tables(SAU, ["saunet/table4", "saunet/table1"])] == [
        "saunet/table1", "saunet/table4"]
    with pytest.raises(ValueError, match="unknown tables"):
        select_tables(SAU, "saunet/table9")


def test_render_table3_shows_the_papers_other_rows():
    context = {**CONTEXT, "dataset": "lumbar_mri VB2", "folds": 12, "folds_run": 12, "val_fraction": 0.1}
    md, data = render_tables(SAU, {"saunet": _summary(0.88, 0.03, n=12)}, context, ["saunet/table3"])
    label = ours_label(context)
    assert [t["table"] for t in data["tables"]] == ["Table 3"]
    theirs = "paper (Chu et al. 2015 lower-spine MRI, 23 cases, leave-one-out)"
    assert f"| SAU-Net | {theirs} | 91.30 ± 0.50 | 95.10 ± 0.60 |" in md
    assert f"| SAU-Net | {label} | 88.00 ± 3.00 |" in md
    # rows of the paper we did not run are shown as theirs only
    assert f"| Chu et al. (leave-one-out) | {theirs} | 88.70 ± 2.90 | - |" in md
    assert f"| SAU-Net (pre-trained on SpineSegT2W) | {theirs} | 89.31 |" in md
    assert "10% of each fold's training cases" in md and "Table 1" not in md


def test_render_tables_one_fold_has_no_spread():
    md, _ = render_tables(SAU, {"saunet": _summary(0.9, 0.0, n=1)}, {**CONTEXT, "folds_run": 1})
    assert "ours (phantoms, 1 of 5 folds" in md
    assert "| 90.00 | 80.00 | 90.00 | 70.00 | 3.50 |" in md


def test_compare_rejects_bad_arguments(tmp_path):
    bundle = str(REPO / "bundles" / "saunet_spine_mri_segmentation")
    with pytest.raises(ValueError, match="unknown method"):
        compare(bundle, str(tmp_path), methods="saunet,unet5d")
    with pytest.raises(ValueError, match="epoch"):
        compare(bundle, str(tmp_path), methods="saunet", epoch=1)
    with pytest.raises(ValueError, match="unknown methods"):
        compare(bundle, str(tmp_path), method_overrides={"unet5d": {"epochs": 1}})
    # an override of an unselected method is not a typo: the arguments pass and the missing data is reported
    with pytest.raises(FileNotFoundError, match="no datalist.json"):
        compare(bundle, str(tmp_path / "empty"), methods="saunet", out=tmp_path / "out",
                unet3d_features=[4, 8, 16, 32, 64, 4])
    with pytest.raises(ValueError, match="unknown tables"):
        compare(bundle, str(tmp_path), tables="saunet/table7")
    with pytest.raises(ValueError, match="no comparison"):
        from spine_monai.evaluation.compare import comparison_for

        comparison_for(tmp_path)


@pytest.mark.slow
def test_compare_end_to_end_on_phantoms(tmp_path):
    """Two methods on the same folds of a selected subset; Table 4 with ours beside the paper's numbers."""
    from spine_monai.data.phantoms import make_phantom_dataset

    data = Path(make_phantom_dataset(n=5, out=tmp_path / "data", seed=3, folds=2, shape_scale=0.25,
                                     progress=False)).parent
    tiny = {"features": [4, 8, 16], "pixdim": [4.0, 2.5, 2.5], "num_workers": 0, "patch_size": [-1, 32, 32],
            "num_samples": 1, "roi_size": [-1, 64, 64], "epochs": 1}
    out = tmp_path / "cmp"
    md_path = Path(compare(str(REPO / "bundles" / "saunet_spine_mri_segmentation"), str(data), folds=2, max_folds=1,
                           tables="saunet/table4", include="case_00[0-3]", out=out, device="cpu", progress=False,
                           **tiny))
    md = md_path.read_text()
    # only the methods of Table 4 ran, on the same 4 selected cases and folds
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["no_isa", "saunet"]
    splits = [(out / m / "fold_0" / "split.json").read_text() for m in ("no_isa", "saunet")]
    assert splits[0] == splits[1]
    assert ", 4 cases matching case_00[0-3], 1 of 2 folds, cpu" in md
    assert "## Table 4" in md and "## Table 1" not in md
    assert "| Ours w/o ISA |" not in md  # rows are labelled with our method names
    paper = paper_table("saunet/table4")
    assert format_value(paper.rows["Ours w/ ISA"]["dice"]) in md
    assert "--include 'case_00[0-3]'" in md and "--tables saunet/table4" in md
    assert "--max_folds 1" in md
    # each method's crossval summary names the command that reproduces it, selection and fold limit included
    command = json.loads((out / "saunet" / "summary.json").read_text())["command"]
    assert "--max_folds 1" in command and f"--folds_file {out / 'folds.json'}" in command


# ---------------------------------------------------------------------------------------------- the review (12 nets)
REVIEW = COMPARISONS["review_spine_mri_segmentation"]
REVIEW_BUNDLE = REPO / "bundles" / "review_spine_mri_segmentation"
REVIEW_T3 = ("unet_table3", "pspnet_table3", "deeplabv3plus_table3")


def _review_summary(dice: float) -> dict:
    """A crossval summary of one fold with the review's metrics: Table 1's and the per-class Dice."""
    from spine_monai.evaluation.paper_tables import REVIEW_CLASSES

    stats = {m: {"mean": v, "std": 0.0, "n": 1} for m, v in
             [("dice", dice), ("jaccard", 0.7), ("fnr", 0.15), ("fpr", 0.0012), ("recall", 0.85)]}
    stats.update({f"dice_{c.lower()}": {"mean": 0.5 + i / 100, "std": 0.0, "n": 1}
                  for i, c in enumerate(REVIEW_CLASSES)})
    return {"across_folds": stats, "params": 85_128, "weights_mb": 0.4, "dataset": "phantoms", "folds_run": [0],
            "device_name": "cpu (test CPU, 1 threads)",
            "timing": {"infer_s_per_volume": {"mean": 0.5, "std": 0.0, "n": 1},
                       "train_s": {"mean": 3.0, "std": 0.0, "n": 1}}}


def _bench_rows(params: int, train: bool = False) -> list[dict]:
    rows = [{"kind": "infer", "size": [880, 880], "params": params, "flops": 366.85e9, "latency_s": 1.2345,
             "peak_rss_mb": 2048.0}]
    if train:
        rows.append({"kind": "train", "size": [880, 880], "peak_rss_mb": 5120.0, "latency_s": 4.0})
    return rows


def test_review_paper_tables_as_printed():
    t1, t2, t3 = (paper_table(f"review/table{i}") for i in (1, 2, 3))
    assert format_value(t1.rows["DeepLabv3+"]["dice"]) == "87.55" and t1.rows["MiniSeg"]["fpr"] == (2.40, None)
    assert t2.columns[0] == "S" and t2.columns[10] == "L5/S" and t2.columns[-1] == "mDice" and len(t2.columns) == 20
    assert t2.rows["U-Net"]["S"] == (88.80, None) and t2.rows["U-Net"]["L5/S"] == (16.77, None)
    assert t2.rows["Inf-Net"]["T9"] == (0.97, None) and t2.rows["MiniSeg"]["T9/T10"] == (97.30, None)
    assert t2.rows["TransUNet"]["mDice"] == (74.70, None) and t2.header("mDice") == "mDice (%)"
    assert list(t2.rows) == list(t1.rows) == list(t3.rows)  # the twelve, in the paper's order
    for name, row in t2.rows.items():  # a typo in a copied number shows as mDice != the mean of the 19 classes
        mean = sum(row[c][0] for c in t2.columns[:-1]) / 19
        assert mean == pytest.approx(row["mDice"][0], abs=0.02), name  # the paper rounds
    assert t3.rows["MiniSeg"] == {"backbone": "-", "params": "83K", "flops": "1.5G", "memory": "5.41GB"}
    assert t3.rows["Inf-Net"]["backbone"] == "Res2Net101"


def test_review_comparison_declaration():
    from spine_monai.evaluation.crossval import _class_names
    from spine_monai.networks.registry import list_networks

    nets = [m for m in REVIEW.methods if m.key not in REVIEW_T3]
    assert [m.key for m in nets] == list_networks()
    assert all(m.overrides == {"network_name": m.key} and not m.overlays for m in nets)
    assert [m.label for m in nets] == list(paper_table("review/table1").rows)
    for key in REVIEW_T3:
        m = REVIEW.get(key)
        base = key.removesuffix("_table3")
        assert m.overlays == (f"table3_{base}",) and m.overrides == {"network_name": base}
        assert m.paper_rows["review/table3"] == REVIEW.get(base).label
    assert REVIEW.method == "deeplabv3plus" and REVIEW.bench_sizes == ((880, 880),)
    # Table 2's columns read our per-class metrics, named after the bundle's channel_def as crossval names them
    names = set(_class_names(REVIEW_BUNDLE).values())
    t2 = next(ts for ts in REVIEW.tables if ts.key == "review/table2")
    assert {v.removeprefix("dice_") for k, v in t2.metric_of.items() if k != "mDice"} == names
    assert t2.metric_of["L5/S"] == "dice_l5/s" and t2.metric_of["mDice"] == "dice"
    # default: Tables 1-3 of the twelve (Table 3 also benchmarks the Table 3 configurations); theirs on request
    assert [ts.key for ts in select_tables(REVIEW)] == ["review/table1", "review/table2", "review/table3"]
    t3 = select_tables(REVIEW, "review/table3")[0]
    assert t3.bench and t3.kind == "cost" and set(t3.methods) == {m.key for m in REVIEW.methods}
    assert t3.methods[:2] == ("unet", "unet_table3")
    named = select_tables(REVIEW, "review/table2_table3_configs,review/table1_table3_configs")
    assert [(ts.paper_table, ts.methods) for ts in named] == [("review/table1", REVIEW_T3),
                                                              ("review/table2", REVIEW_T3)]


def test_render_review_tables_beside_the_paper():
    summaries = {"unet": _review_summary(0.8123), "miniseg": _review_summary(0.6)}
    bench = {"unet": _bench_rows(31_110_000, train=True), "miniseg": _bench_rows(85_128),
             "psanet": [{"kind": "infer", "size": [880, 880], "error": "exit status 1: out of memory"}]}
    context = {**CONTEXT, "folds": 3, "folds_run": 1, "bench_device": "cpu (test CPU, 1 threads)"}
    md, data = render_tables(REVIEW, summaries, context, bench=bench)
    label, src = ours_label(context), "paper (MRSpineSeg, 880 x 880 sagittal slices, 8:2 split)"
    assert [t["table"] for t in data["tables"]] == ["Table 1", "Table 2", "Table 3"]
    # Table 1: Dice, mIoU, FN rate, FP rate, recall in %
    assert "| Method | source | Dice (%) | mIOU (%) | FN rate (%) | FP rate (%) | Recall (%) |" in md
    assert f"| U-Net | {src} | 79.87 | 74.02 | 34.04 | 1.21 | 83.90 |" in md
    assert f"| U-Net | {label} | 81.23 | 70.00 | 15.00 | 0.12 | 85.00 |" in md
    assert f"| DeepLabv3+ | {src} | 87.55 | 81.80 | 18.45 | 0.11 | 90.81 |" in md
    assert f"| DeepLabv3+ | {label} | not run |" in md
    # Table 2: the 19 classes and mDice, ours from dice_<class> and the mean Dice
    assert "| Method | source | S | L5 | L4 | L3 | L2 | L1 | T12 | T11 | T10 | T9 | L5/S |" in md
    assert "| T9/T10 | mDice (%) |" in md
    assert f"| MiniSeg | {src} | 86.29 | 86.05 |" in md and "| 92.59 | 97.30 | 85.16 |" in md
    assert f"| MiniSeg | {label} | 50.00 | 51.00 | 52.00 |" in md and "| 68.00 | 60.00 |" in md
    # Table 3: the paper's backbone, #Param, FLOPs, memory beside our benchmark
    assert ("| Method | paper: Backbone | paper: #Param | paper: FLOPs | paper: Memory | ours: #Param | "
            "ours: FLOPs (880x880) | ours: memory (880x880, inference) | ours: latency (s, 880x880) | "
            "ours: memory (training step) |") in md
    assert "| U-Net | - | 13M | 366.85G | 4.30GB | 31.11M | 366.85G | 2.00 GiB (RSS) | 1.234 | 5.00 GiB (RSS) |" in md
    assert "| U-Net 64-512 (Table 3 configuration) | - | 13M | 366.85G | 4.30GB | not run |" in md
    assert "| MiniSeg | - | 83K | 1.5G | 5.41GB | 85.1K | 366.85G | 2.00 GiB (RSS) | 1.234 | - |" in md
    assert "| PSANet | ResNet101 | 78M | 482.13G | 8.19GB | error | error | error | error | - |" in md
    assert "Benchmark errors: PSANet (infer): exit status 1: out of memory" in md
    assert "ours (bench, cpu (test CPU, 1 threads))" in md and "a multiply-add counts 2 FLOPs" in md
    t3 = data["tables"][2]["rows"]
    assert t3[1]["values"]["params"] == "31.11M" and t3[0]["values"]["params"] == "13M"


def _fake_crossval(calls: list):
    def crossval(bundle, dataset_dir, out=None, **kwargs):
        calls.append({"out": Path(out).name, **kwargs})
        Path(out).mkdir(parents=True, exist_ok=True)
        summary = _review_summary(0.5 + len(calls) / 100)
        (Path(out) / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        return str(out)

    return crossval


def _fake_bench(calls: list):
    def bench(bundle, methods=None, out=None, name=None, **kwargs):
        calls.append({"methods": methods, **kwargs})
        rows = [{**r, "method": methods} for r in _bench_rows(1_000_000 * len(calls))]
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps({"results": rows, "complete": True}), encoding="utf-8")
        return str(Path(out) / f"{name}.md")

    return bench


def test_review_compare_subset_and_method_overrides_reach_crossval(tmp_path, monkeypatch):
    """Method.overrides go to crossval after the common overrides and before method_overrides; a subset of
    networks runs; only Table 3's rows are benchmarked; an existing benchmark is reused."""
    from spine_monai.evaluation import bench as bench_mod
    from spine_monai.evaluation import crossval as crossval_mod

    cv_calls, bench_calls = [], []
    monkeypatch.setattr(crossval_mod, "crossval", _fake_crossval(cv_calls))
    monkeypatch.setattr(bench_mod, "bench", _fake_bench(bench_calls))
    data = Path(make_review_dataset(tmp_path))
    out = tmp_path / "cmp"
    kwargs = {"folds": 3, "max_folds": 1, "out": out, "device": "cpu", "progress": False, "epochs": 1,
              "network_preset": "cpu", "method_overrides": {"miniseg": {"epochs": 2}},
              "bench_options": {"sizes": "32x32", "repeats": 1}}
    md_path = compare(str(REVIEW_BUNDLE), str(data), methods="unet,miniseg", **kwargs)
    assert [c["out"] for c in cv_calls] == ["unet", "miniseg"]
    assert cv_calls[0]["network_name"] == "unet" and cv_calls[0]["epochs"] == 1
    assert cv_calls[1]["network_name"] == "miniseg" and cv_calls[1]["epochs"] == 2
    assert all(c["network_preset"] == "cpu" and c["overlays"] == () for c in cv_calls)
    # the benchmark of Table 3 sees the same overrides, and the size asked for
    assert [c["methods"] for c in bench_calls] == ["unet", "miniseg"]
    assert bench_calls[1]["method_overrides"] == {"miniseg": {"network_preset": "cpu", "epochs": 2,
                                                              "network_name": "miniseg"}}
    assert bench_calls[0]["sizes"] == [[32, 32]] and bench_calls[0]["train"] is False
    md = Path(md_path).read_text()
    assert "| MiniSeg | ours (phantoms, 6 cases, 1 of 3 folds, cpu (test CPU, 1 threads)) | 52.00 |" in md
    assert "| DANet | paper (MRSpineSeg, 880 x 880 sagittal slices, 8:2 split) | 84.74 |" in md
    assert "--methods unet,miniseg" in md and '--bench_options \'{"sizes":"32x32","repeats":1}\'' in md
    # again: the benchmarks of the same request are reused (crossval skips its own finished folds itself)
    compare(str(REVIEW_BUNDLE), str(data), methods="unet,miniseg", **kwargs)
    assert len(bench_calls) == 2 and len(cv_calls) == 4
    # Table 3 alone benchmarks its rows without training them
    cv_calls.clear()
    compare(str(REVIEW_BUNDLE), str(data), tables="review/table3", methods="unet_table3", **kwargs)
    assert cv_calls == [] and bench_calls[-1]["methods"] == "unet_table3"
    assert bench_calls[-1]["overlays"] == []
    # the twelve are told apart by network_name: a common one is refused (in compare and in bench)
    with pytest.raises(ValueError, match="network_name.*--methods"):
        compare(str(REVIEW_BUNDLE), str(data), network_name="unet", out=out)
    with pytest.raises(ValueError, match="not options of the benchmark"):
        compare(str(REVIEW_BUNDLE), str(data), methods="unet", bench_options={"size": "32x32"}, out=out)


def make_review_dataset(tmp_path: Path) -> str:
    """Six tiny multi-class MRI phantoms in 3 folds (the review's 20 MRSpineSeg classes)."""
    from spine_monai.data.phantoms import make_phantom_dataset

    datalist = make_phantom_dataset(n=6, out=tmp_path / "data", seed=0, folds=3, shape_scale=0.25, binary=False,
                                    progress=False)
    return str(Path(datalist).parent)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_review_compare_two_networks_killed_and_resumed(tmp_path, monkeypatch, caplog):
    """A real tiny compare of U-Net and MiniSeg (CPU presets, 32 x 32 slices, 2 epochs) killed in MiniSeg's
    training after epoch 1: the same command again keeps U-Net's fold and benchmark, resumes MiniSeg at epoch 2 from
    its checkpoint, and writes Tables 1-3 beside the paper's numbers."""
    import logging

    import torch

    from spine_monai.evaluation import bench as bench_mod
    from spine_monai.evaluation.bench_measure import measure
    from spine_monai.handlers.checkpoint import CheckpointManager

    # the benchmark's measurements in this process (a child process costs seconds of imports each)
    monkeypatch.setattr(bench_mod, "_run_child", lambda job, timeout: measure(job))
    data = make_review_dataset(tmp_path)
    out = tmp_path / "cmp"
    kwargs = {"folds": 3, "max_folds": 1, "methods": "unet,miniseg", "out": out, "device": "cpu", "progress": False,
              "network_preset": "cpu", "img_size": 32, "epochs": 2, "num_workers": 0, "num_samples": 2,
              "bench_options": {"sizes": "32x32", "repeats": 1, "warmup": 0, "threads": 1}}

    class Killed(RuntimeError):
        pass

    original = CheckpointManager._epoch_completed

    def killed_after_epoch_1(self, engine):
        original(self, engine)  # the checkpoint of the epoch is written, then the process "dies"
        if "miniseg" in str(self.save_dir) and engine.state.epoch == 1:
            raise Killed("killed")

    with monkeypatch.context() as m:
        m.setattr(CheckpointManager, "_epoch_completed", killed_after_epoch_1)
        with pytest.raises(RuntimeError) as err:  # MONAI's config runner wraps the error
            compare(str(REVIEW_BUNDLE), data, **kwargs)
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, Killed)
    unet_result, unet_bench = out / "unet" / "fold_0" / "result.json", out / "bench" / "unet_cpu.json"
    ckpt = out / "miniseg" / "fold_0" / "models" / "checkpoint.pt"
    assert unet_result.is_file() and unet_bench.is_file() and ckpt.is_file()
    assert not (out / "miniseg" / "fold_0" / "result.json").exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    partial = (out / "tables.md").read_text()  # the tables of what finished, written before the kill
    assert "| MiniSeg | ours (" in partial and "not run" in partial
    stamps = unet_result.stat().st_mtime_ns, unet_bench.stat().st_mtime_ns

    with caplog.at_level(logging.INFO):
        md = Path(compare(str(REVIEW_BUNDLE), data, **kwargs)).read_text()
    assert (unet_result.stat().st_mtime_ns, unet_bench.stat().st_mtime_ns) == stamps  # kept, not redone
    assert "resumed from" in caplog.text and "after epoch 1 of 2" in caplog.text
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 2 and state["history"] == [1, 2]
    result = json.loads((out / "miniseg" / "fold_0" / "result.json").read_text())
    assert result["train_attempts"] == 2 and result["train_s"] > 0
    assert result["settings"]["overrides"]["network_name"] == "miniseg"
    assert json.loads(unet_result.read_text())["params"] != result["params"]  # two different networks

    label = "ours (spine_monai_mri_phantoms, 6 cases, 1 of 3 folds, cpu"
    src = "paper (MRSpineSeg, 880 x 880 sagittal slices, 8:2 split)"
    for name, paper in (("U-Net", "79.87 | 74.02 | 34.04 | 1.21 | 83.90"), ("MiniSeg", "85.69 | 79.25 | 42.29")):
        assert f"| {name} | {src} | {paper}" in md
        assert f"| {name} | {label}" in md
    assert f"| MiniSeg | {src} | 86.29 | 86.05 | 84.03 |" in md  # Table 2
    assert md.count(f"| DeepLabv3+ | {label}") == 2 and "| DeepLabv3+ | ours (" in md
    lines = [line for line in md.splitlines() if line.startswith(("| U-Net | ", "| MiniSeg | "))]
    assert all("not run" not in line for line in lines if label in line)  # ours for both, in Tables 1 and 2
    assert "| MiniSeg | - | 83K | 1.5G | 5.41GB | 85.1K |" in md  # Table 3: our benchmark at 32 x 32
    assert "| U-Net | - | 13M | 366.85G | 4.30GB | 1.95M |" in md
    assert "| PSANet | ResNet101 | 78M | 482.13G | 8.19GB | not run |" in md
    assert "FLOPs (32x32)" in md
