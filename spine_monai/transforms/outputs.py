"""Check an inference output folder before a bundle run starts: writable, and every output name short enough.

Not tied to a paper. Without it ``python -m monai.bundle run ... --output_dir DIR`` finds a read-only folder, or an
output name longer than the file system allows (255 bytes per name on ext4, xfs, btrfs, tmpfs), only when
``SaveImaged`` writes the first label map: after the whole inference, with an ``OSError`` traceback.
:func:`check_output_dir` runs from the ``initialize`` list of ``inference.json``
(``"$spine_monai.transforms.outputs.check_output_dir(@output_dir, @datalist)"``) and refuses with one line.

Choices:

- a MISSING output folder is accepted when its nearest existing ancestor is a writable folder: it is not created
  here (a run that then fails on a bad input leaves nothing behind); ``SaveImaged`` creates it with the first label
  map, as it always did. An ancestor that is a file, or not writable, is refused.
- writability is probed by creating and removing a temporary file (``os.access`` is always true for root and
  ignores read-only mounts).
- the names checked are those ``SaveImaged(output_postfix=postfix, separate_folder=False)`` writes,
  ``<input name without .nii.gz / .nii / ...>_<postfix><suffix>``, and the temporary name
  :class:`spine_monai.transforms.io.AtomicNibabelWriter` writes first (``.<stem>.XXXXXXXX.partial<suffix>``, the
  longer one).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spine_monai.errors import InputError

__all__ = ["check_output_dir", "output_name", "check_name_length"]


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(str(folder), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def output_name(input_path: str | os.PathLike, postfix: str = "seg", suffix: str = ".nii.gz") -> str:
    """The file name ``SaveImaged`` gives the output of ``input_path`` (MONAI's ``create_file_basename``)."""
    stem, ext = os.path.splitext(os.path.basename(os.path.normpath(str(input_path))))
    if ext == ".gz":
        stem, _ = os.path.splitext(stem)
    return f"{stem}_{postfix}{suffix}" if postfix else f"{stem}{suffix}"


def check_name_length(path: str | os.PathLike, limit: int = 255, what: str = "output") -> None:
    """Refuse a path with a component longer than ``limit`` bytes (the file system's name limit).

    Raises:
        InputError: naming the path and the length.
    """
    for part in Path(path).parts:
        n = len(os.fsencode(part))
        if n > limit:
            raise InputError(f"{path}: {what} name {part[:40]}... is {n} bytes, longer than the file system's limit "
                             f"of {limit}; use a shorter name.")


def _atomic_temp_length(name: str) -> int:
    """Length in bytes of the temporary name ``AtomicNibabelWriter`` uses for ``name``."""
    suffixes = "".join(Path(name).suffixes) or ".tmp"
    return len(os.fsencode(f".{name.split('.')[0]}.")) + 8 + len(os.fsencode(f".partial{suffixes}"))


def check_output_dir(output_dir: str | os.PathLike, datalist: Iterable[Mapping[str, Any]] | None = None,
                     postfix: str = "seg", suffix: str = ".nii.gz", key: str = "image") -> str:
    """Refuse an output folder that cannot be written, or output names too long for it (module docstring).

    Args:
        output_dir: the folder the label maps go to (may not exist yet).
        datalist: the inference items (``[{"image": path}, ...]``) whose output names are checked.
        postfix, suffix: ``SaveImaged``'s ``output_postfix`` and ``output_ext``.
        key: the datalist key holding the input path.

    Returns:
        ``output_dir`` as a string.

    Raises:
        InputError: naming the folder or the output file and the problem.
    """
    out = Path(output_dir).expanduser().absolute()
    check_name_length(out, _name_max(Path(out.anchor)), "output folder")  # before any lookup (ENAMETOOLONG)
    anc = out
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    limit = _name_max(anc if anc.is_dir() else anc.parent)
    check_name_length(out, limit, "output folder")
    if not anc.is_dir():
        raise InputError(f"{out}: cannot be an output folder, {anc} is a file.")
    try:
        with tempfile.NamedTemporaryFile(prefix=".spine_monai-probe-", dir=str(anc)):
            pass
    except OSError as err:
        where = "" if anc == out else f" (nearest existing folder {anc})"
        raise InputError(f"{out}: output folder is not writable{where}: {err.strerror or err}.") from None
    for item in datalist or ():
        src = item.get(key) if isinstance(item, Mapping) else None
        if not isinstance(src, (str, os.PathLike)):
            continue
        name = output_name(src, postfix, suffix)
        n = max(len(os.fsencode(name)), _atomic_temp_length(name))
        if n > limit:
            raise InputError(
                f"{src}: the output name {name[:40]}... would be {n} bytes (with the writer's temporary name), "
                f"longer than the file system's limit of {limit}; rename the input to a shorter name."
            )
    return str(output_dir)
