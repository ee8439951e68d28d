"""``segment`` never writes over its input: every spelling of the same file is recognised before anything is
written (issue: ``-o x/../scan.nii.gz`` with a missing ``x`` overwrote the input)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spine_monai.segment import _real, _same_file, segment

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "saunet_spine_mri_segmentation"


@pytest.fixture
def scan(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "D"
    d.mkdir()
    path = d / "scan.nii.gz"
    path.write_bytes(b"not read: the output check comes first")
    (d / "sub").mkdir()
    os.symlink(path, d / "link.nii.gz")
    os.link(path, d / "hard.nii.gz")
    os.symlink(d / "sub", d / "subl")
    monkeypatch.chdir(d)
    return path


SPELLINGS = ["scan.nii.gz", "./scan.nii.gz", "x/../scan.nii.gz", "x/y/../../scan.nii.gz", "sub/../scan.nii.gz",
             "subl/../scan.nii.gz", "link.nii.gz", "hard.nii.gz", ".//scan.nii.gz", "{D}/scan.nii.gz",
             "{D}/x/../scan.nii.gz", "~/../{D_rel_home}"]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("overwrite", [False, True])
def test_every_spelling_of_the_input_is_refused(scan, spelling, overwrite):
    d = scan.parent
    if spelling.startswith("~"):
        home = Path(os.path.expanduser("~")).resolve()
        spelling = os.path.relpath(scan, home.parent)
        spelling = f"~/../{spelling}"
    spelling = spelling.format(D=d)
    before = scan.read_bytes()
    entries = sorted(p.name for p in d.iterdir())
    with pytest.raises(ValueError, match="is the input scan") as err:
        segment(str(BUNDLE), "scan.nii.gz", spelling, overwrite=overwrite, progress=False)
    assert "\n" not in str(err.value)
    assert scan.read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == entries  # no folder x/ created, nothing staged


def test_real_resolves_like_the_file_system(scan):
    d = scan.parent
    assert _real("x/../scan.nii.gz") == scan
    assert _real("subl/../scan.nii.gz") == scan  # a link's '..' is the parent of its target (here the same)
    assert _same_file(scan, _real("hard.nii.gz"))
    assert not _same_file(scan, _real("other.nii.gz"))
    assert _real("sub/out.nii.gz") == d / "sub" / "out.nii.gz"


def test_existing_output_spelled_differently_needs_overwrite(scan, tmp_path):
    out = scan.parent / "sub" / "seg.nii.gz"
    out.write_bytes(b"old")
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        segment(str(BUNDLE), "scan.nii.gz", "x/../sub/seg.nii.gz", progress=False)
    assert out.read_bytes() == b"old"


def test_output_name_too_long(scan):
    with pytest.raises(ValueError, match="longer than the file system.s limit"):
        segment(str(BUNDLE), "scan.nii.gz", "a" * 300 + ".nii.gz", progress=False)
