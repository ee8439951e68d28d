"""The inference output folder is checked before a run: writable, names short enough; nothing is left behind."""

from __future__ import annotations

import os

import pytest

from spine_monai.errors import InputError
from spine_monai.transforms.outputs import check_output_dir, output_name


def test_existing_and_missing_folders(tmp_path):
    assert check_output_dir(tmp_path) == str(tmp_path)
    missing = tmp_path / "a" / "b"
    assert check_output_dir(missing) == str(missing)
    assert not (tmp_path / "a").exists()  # not created here: SaveImaged creates it with the first output
    assert os.listdir(tmp_path) == []  # the write probe is gone


def test_read_only_folder_refused(tmp_path, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(InputError, match=r"output folder is not writable: Read-only file system\.$") as err:
        check_output_dir(tmp_path)
    assert str(err.value).startswith(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs /sys")
def test_unwritable_folder_refused_even_for_root():
    try:  # /sys refuses new files to every user, root included
        with open("/sys/.spine_monai-probe", "w"):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    with pytest.raises(InputError, match="nearest existing folder /sys"):
        check_output_dir("/sys/no/such/out")


def test_file_in_the_way_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"f/out: cannot be an output folder, .*/f is a file"):
        check_output_dir(tmp_path / "f" / "out")


def test_too_long_names_refused(tmp_path):
    with pytest.raises(InputError, match="output folder name a{40}... is 300 bytes"):
        check_output_dir(tmp_path / ("a" * 300))
    long_input = str(tmp_path / (("b" * 240) + ".nii.gz"))
    assert output_name(long_input) == "b" * 240 + "_seg.nii.gz"
    with pytest.raises(InputError) as err:
        check_output_dir(tmp_path, [{"image": long_input}])
    msg = str(err.value)
    assert msg.startswith(long_input) and "longer than the file system's limit of 255" in msg
    check_output_dir(tmp_path, [{"image": str(tmp_path / ("b" * 200 + ".nii.gz"))}, {"image": str(tmp_path)}])


def test_output_name_like_saveimaged():
    assert output_name("/x/case_001.nii.gz") == "case_001_seg.nii.gz"
    assert output_name("/x/scan.mha", "pred") == "scan_pred.nii.gz"
    assert output_name("/x/dicom_folder/") == "dicom_folder_seg.nii.gz"
