"""The CT bundle's train.json keeps the paper's recipe; the CPU overlay's departures are the documented ones."""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "attention_driven_spine_ct_segmentation" / "configs"


def _load(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def test_train_json_is_the_papers_recipe():
    """Sekuboyina et al. 2017, Sections 2-3: 188 x 188 x 12 patches, every 8th slice, Adam 1e-5 (segmentation) and
    1e-4 (attention), dropout at the lowest level, no normalisation in the Caffe nets, 1 mm voxels, Dice loss."""
    t = _load("train.json")
    assert t["patch_size"] == [12, 188, 188] and t["slice_step"] == 8 and t["pixdim"] == [1.0, 1.0, 1.0]
    assert t["learning_rate"] == 1e-5 and t["loc_learning_rate"] == 1e-4 and t["dropout"] == 0.5
    assert t["norm"] is None and t["loc_norm"] is None and t["intensity_augmentation"] == []
    assert t["loss"]["_target_"] == "DiceLoss" and t["attention_min_recall"] == 0.98


def test_cpu_overlay_departures_are_the_documented_ones():
    """cpu_small.json: 2 mm, smaller patches and widths, batch norm and Adam 1e-3 in both nets (README, "The CPU
    recipe"); nothing else about the method changes."""
    c = _load("cpu_small.json")
    assert c["norm"] == "batch" and c["loc_norm"] == "batch"
    assert c["learning_rate"] == 1e-3 and c["loc_learning_rate"] == 1e-3 and c["pixdim"] == [2.0, 2.0, 2.0]
    method = {"loss", "dropout", "attention_min_recall", "attention_threshold_grid", "hu_window", "use_diffusion"}
    assert not method & set(c)
    aug = _load("real_ct_aug.json")
    assert set(aug) == {"intensity_augmentation"}
