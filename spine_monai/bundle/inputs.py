"""Find the images an inference config should process, with a clear error when there are none."""

from __future__ import annotations

import glob
import os
from pathlib import Path

__all__ = ["list_images", "IMAGE_PATTERNS"]

IMAGE_PATTERNS = ("*.nii.gz", "*.nii", "*.mha", "*.mhd", "*.nrrd")


def list_images(dataset_dir: str | os.PathLike, subdirs: tuple[str, ...] = ("imagesTs", "imagesTr")) -> list[dict]:
    """Data list ``[{"image": path}, ...]`` for an inference run.

    ``dataset_dir`` may be one image file, a DICOM series folder, a folder with ``imagesTs/`` (or else
    ``imagesTr/``) as written by
    ``python -m spine_monai phantoms``, or a folder of images. Label files (``*_label*``, ``*_seg*``) are skipped.

    Raises:
        FileNotFoundError: if ``dataset_dir`` does not exist or holds no image.
    """
    path = Path(dataset_dir)
    if path.is_file():
        return [{"image": str(path)}]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder (set --dataset_dir to an image or a folder).")
    for sub in subdirs:
        if (path / sub).is_dir():
            path = path / sub
            break
    files: list[str] = []
    for pattern in IMAGE_PATTERNS:
        files.extend(glob.glob(str(path / pattern)))
    files = sorted(f for f in set(files) if "_label" not in Path(f).name and "_seg" not in Path(f).name)
    if not files and _is_dicom_folder(path):
        return [{"image": str(path)}]  # a DICOM series folder is one image (read by ITK/GDCM)
    if not files:
        raise FileNotFoundError(f"{path}: no images found (looked for {', '.join(IMAGE_PATTERNS)}).")
    return [{"image": f} for f in files]


def _is_dicom_folder(path: Path) -> bool:
    """True if the folder holds DICOM files (``.dcm`` or files with the ``DICM`` preamble marker)."""
    for f in sorted(path.iterdir())[:20]:
        if not f.is_file():
            continue
        if f.suffix.lower() == ".dcm":
            return True
        with f.open("rb") as fh:
            head = fh.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return True
    return False
