"""Tests of the Decathlon-style datalist with k folds (spine_monai.data.datalist)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_monai.data.datalist import load_datalist, make_folds, write_datalist


def _ids(n: int) -> list[str]:
    return [f"case_{i:03d}" for i in range(n)]


@pytest.mark.parametrize("n, folds", [(2, 2), (5, 5), (11, 3), (20, 5)])
def test_make_folds_balanced_and_complete(n, folds):
    assignment = make_folds(_ids(n), folds, seed=0)
    assert sorted(assignment) == _ids(n)
    sizes = [list(assignment.values()).count(f) for f in range(folds)]
    assert set(assignment.values()) == set(range(folds))
    assert max(sizes) - min(sizes) <= 1


def test_make_folds_deterministic_order_independent_and_seeded():
    ids = _ids(12)
    a = make_folds(ids, 4, seed=3)
    assert a == make_folds(ids, 4, seed=3)
    assert a == make_folds(list(reversed(ids)), 4, seed=3)
    assert any(a != make_folds(ids, 4, seed=s) for s in range(4, 8))


@pytest.mark.parametrize("ids, folds", [(_ids(5), 1), (_ids(5), 6), (["a", "a", "b"], 2), (_ids(3), 2.5)])
def test_make_folds_bad_arguments(ids, folds):
    with pytest.raises(ValueError):
        make_folds(ids, folds, seed=0)


@pytest.fixture
def files(tmp_path):
    """Six image/label pairs under tmp_path/data."""
    items = []
    for i in range(6):
        img = tmp_path / "data" / "imagesTr" / f"case_{i}.nii.gz"
        lab = tmp_path / "data" / "labelsTr" / f"case_{i}.nii.gz"
        for f in (img, lab):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x")
        items.append({"image": str(img), "label": str(lab), "label_multiclass": str(lab), "pathology": ["x@L1"]})
    return items


def test_write_relative_paths_and_extra_keys(tmp_path, files):
    out = write_datalist(files, tmp_path / "lists" / "datalist.json", folds=3, seed=1, name="demo",
                         labels={"0": "background", "1": "spine"})
    data = json.loads(out.read_text())
    assert (data["name"], data["folds"], data["seed"], data["numTraining"]) == ("demo", 3, 1, 6)
    assert data["labels"] == {"0": "background", "1": "spine"}
    first = data["training"][0]
    assert first["image"] == "../data/imagesTr/case_0.nii.gz"
    assert first["label_multiclass"] == "../data/labelsTr/case_0.nii.gz"
    assert first["pathology"] == ["x@L1"]
    assert sorted(item["fold"] for item in data["training"]) == [0, 0, 1, 1, 2, 2]
    for item in data["training"]:
        assert (out.parent / item["image"]).resolve().is_file()


def test_load_splits_partition_the_cases(tmp_path, files):
    path = write_datalist(files, tmp_path / "datalist.json", folds=3, seed=0)
    everything = load_datalist(path)
    assert len(everything) == 6 and all(Path(it["image"]).is_absolute() and Path(it["image"]).is_file()
                                        for it in everything)
    assert load_datalist(path, fold=1, split="all") == everything
    for f in range(3):
        train, val = load_datalist(path, fold=f), load_datalist(path, fold=f, split="val")
        assert {it["fold"] for it in val} == {f} and f not in {it["fold"] for it in train}
        assert sorted(it["image"] for it in train + val) == sorted(it["image"] for it in everything)
        assert len(val) == 2


@pytest.mark.slow  # importing monai.data takes seconds on a cold start
def test_load_matches_monai(tmp_path, files):
    from monai.data import load_decathlon_datalist

    path = write_datalist(files, tmp_path / "sub" / "datalist.json", folds=2, seed=0)
    ours = load_datalist(path)
    theirs = load_decathlon_datalist(str(path), data_list_key="training")
    assert [(a["image"], a["label"]) for a in ours] == [(b["image"], b["label"]) for b in theirs]


def test_given_folds_and_case_ids(tmp_path, files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = [{"image": str(Path(it["image"]).relative_to(tmp_path)), "label": it["label"], "case": f"p{i // 2}",
            "fold": i // 2} for i, it in enumerate(files)]
    path = write_datalist(rel, tmp_path / "out" / "datalist.json", folds=3, seed=0)
    data = json.loads(path.read_text())
    assert [it["fold"] for it in data["training"]] == [0, 0, 1, 1, 2, 2]  # given folds kept
    assert data["training"][0]["case"] == "p0"  # an id is never turned into a path
    assert data["training"][0]["image"] == "../data/imagesTr/case_0.nii.gz"  # relative to the cwd, resolved
    with pytest.raises(ValueError, match="every item or no item"):
        write_datalist([rel[0], files[1]], tmp_path / "x.json", folds=2, seed=0)
    with pytest.raises(ValueError, match="not integers"):
        write_datalist(rel, tmp_path / "x.json", folds=2, seed=0)


def test_bad_arguments(tmp_path, files):
    with pytest.raises(ValueError, match="--folds 7"):
        write_datalist(files, tmp_path / "d.json", folds=7, seed=0)
    with pytest.raises(ValueError, match="empty"):
        write_datalist([], tmp_path / "d.json", folds=2, seed=0)
    with pytest.raises(ValueError, match="reserved"):
        write_datalist(files, tmp_path / "d.json", folds=2, seed=0, training=[])
    path = write_datalist(files, tmp_path / "d.json", folds=2, seed=0)
    with pytest.raises(ValueError, match="split"):
        load_datalist(path, fold=0, split="test")
    with pytest.raises(ValueError, match="fold=2"):
        load_datalist(path, fold=2, split="val")
    with pytest.raises(FileNotFoundError):
        load_datalist(tmp_path / "missing.json")
