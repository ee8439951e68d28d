"""InputError reporting: found through MONAI/DataLoader wrapping, one line and exit 2 from a bundle run."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from spine_monai.errors import InputError, InputErrorLogFilter, find_input_error, input_error_message


def _wrapped() -> RuntimeError:
    try:
        try:
            raise InputError("/data/a.nii.gz: image is constant")
        except InputError as err:
            raise RuntimeError("applying transform <ValidateImaged>") from err
    except RuntimeError as outer:
        try:
            raise RuntimeError("Failed to evaluate ConfigExpression") from outer
        except RuntimeError as top:
            return top


def test_found_in_the_chain():
    top = _wrapped()
    assert isinstance(find_input_error(top), InputError)
    assert input_error_message(top) == "/data/a.nii.gz: image is constant"
    assert input_error_message(RuntimeError("other")) is None and find_input_error(None) is None


@pytest.mark.slow  # starts a DataLoader worker process
def test_found_through_a_dataloader_worker():
    from monai.data import DataLoader, Dataset

    from spine_monai.transforms import ValidateImaged

    ds = Dataset([{"image": torch.ones(1, 4, 4, 4)}], transform=ValidateImaged(keys="image"))
    with pytest.raises(Exception) as excinfo:
        next(iter(DataLoader(ds, num_workers=1)))
    assert find_input_error(excinfo.value) is None  # only the text crosses the process boundary
    assert input_error_message(excinfo.value) == "image: image is constant (every voxel = 1.0); nothing to segment."


def test_log_filter_drops_error_records_of_input_errors_only():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    handler.addFilter(InputErrorLogFilter())
    log = logging.getLogger("spine_monai.test_errors")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        try:
            raise _wrapped()
        except RuntimeError:
            log.exception("Exception: applying transform")  # StatsHandler
            log.error("Engine run is terminating due to exception")  # ignite, no exc_info
            log.info("still logged")
        try:
            raise KeyError("a bug")
        except KeyError:
            log.exception("kept")
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["still logged", "kept"]


@pytest.mark.parametrize(
    "code, rc, last",
    [
        ("raise RuntimeError('applying transform') from e.InputError('/a.nii.gz: bad header')", 2,
         "error: /a.nii.gz: bad header"),
        ("raise KeyError('a bug')", 1, "KeyError: 'a bug'"),
    ],
    ids=["input-error", "other"],
)
def test_excepthook_exit_status(code, rc, last):
    script = f"import spine_monai.errors as e\ne.install_excepthook()\n{code}\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc
    assert proc.stderr.strip().splitlines()[-1] == last
    assert ("Traceback" in proc.stderr) == (rc != 2)
