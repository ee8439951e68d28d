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
