"""Writing outputs so that a failure never leaves a partial file behind.

:class:`AtomicNibabelWriter` writes each image to a temporary file in the target folder and renames it into place
(``os.replace``, atomic on POSIX) only after nibabel has finished, so an interrupted or failed run leaves either the
complete label map or nothing. Use it in ``SaveImaged(writer="spine_monai.transforms.io.AtomicNibabelWriter")``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from monai.data import NibabelWriter

__all__ = ["AtomicNibabelWriter", "atomic_path"]


def atomic_path(target: str | os.PathLike) -> str:
    """A temporary path beside ``target`` with the same (possibly double) extension."""
    target = Path(target)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=f".partial{suffix}",
                               dir=str(target.parent))
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the final file gets the usual permissions
    return tmp


def atomic_write(filename: str | os.PathLike, write: Any) -> Any:
    """Call ``write(tmp)`` on a temporary path beside ``filename`` and rename it into place on success (the
    temporary file is removed on failure); returns what ``write`` returns."""
    Path(filename).parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(filename)
    try:
        result = write(tmp)
        os.replace(tmp, filename)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return result


class AtomicNibabelWriter(NibabelWriter):
    """``NibabelWriter`` whose ``write`` goes to a temporary file and is renamed into place on success."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs: Any) -> Any:
        return atomic_write(filename, lambda tmp: super(AtomicNibabelWriter, self).write(tmp, verbose=verbose,
                                                                                         **obj_kwargs))
