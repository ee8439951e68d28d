"""Find the images an inference config should process, with a clear error when there are none."""

from __future__ import annotations

import glob
import os
from pathlib import Path

__all__ = ["list_images", "IMAGE_PATTERNS", "IMAGE_PATTERNS_2D", "output_names", "check_existing_outputs"]

IMAGE_PATTERNS = ("*.nii.gz", "*.nii", "*.mha", "*.mhd", "*.nrrd")
#: what a 2D bundle (SEAM, ultrasound VPI) reads: 2D image files and 2D NIfTI. Labels of 2D image inputs are written
#: as PNG (``spine_monai.transforms.image2d.SaveLabeld``).
IMAGE_PATTERNS_2D = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff", "*.nii.gz", "*.nii")
_PNG_OUT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(dataset_dir: str | os.PathLike, subdirs: tuple[str, ...] = ("imagesTs", "imagesTr", "images"),
                patterns: tuple[str, ...] = IMAGE_PATTERNS) -> list[dict]:
    """Data list ``[{"image": path}, ...]`` for an inference run.

    ``dataset_dir`` may be one image file, a DICOM series folder, a folder with ``imagesTs/`` (or else
    ``imagesTr/``) as written by
    ``python -m spine_monai phantoms``, or a folder of images. Label files (``*_label*``, ``*_seg*``) are skipped.
    ``patterns``: the file patterns that count as images (``IMAGE_PATTERNS_2D`` for 2D bundles).

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
    for pattern in patterns:
        files.extend(glob.glob(str(path / pattern)))
    files = sorted(f for f in set(files) if "_label" not in Path(f).name and "_seg" not in Path(f).name)
    if not files and _is_dicom_folder(path):
        return [{"image": str(path)}]  # a DICOM series folder is one image (read by ITK/GDCM)
    if not files:
        raise FileNotFoundError(f"{path}: no images found (looked for {', '.join(patterns)}).")
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


def output_names(datalist: list[dict], output_dir: str | os.PathLike, postfix: str = "seg") -> list[Path]:
    """The files ``SaveImaged(output_postfix=postfix, separate_folder=False)`` (or ``SaveLabeld``, which writes PNG
    for 2D image files) will write for ``datalist``."""
    out = []
    for item in datalist:
        name = Path(str(item["image"])).name
        ext = ".nii.gz"
        for suffix in (".nii.gz", *(p[1:] for p in IMAGE_PATTERNS + IMAGE_PATTERNS_2D), ".nhdr", ".dcm"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                ext = ".png" if suffix in _PNG_OUT else ".nii.gz"
                break
        out.append(Path(output_dir) / f"{name}_{postfix}{ext}")
    return out


def check_existing_outputs(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, postfix: str = "seg",
                           overwrite: bool = False, patterns: tuple[str, ...] = IMAGE_PATTERNS) -> bool:
    """Refuse an inference run that would replace existing label files, unless ``overwrite`` (``--overwrite true``).

    Called from ``inference.json``'s ``initialize``, so ``python -m monai.bundle run`` never overwrites a result
    silently. A ``dataset_dir`` that does not exist (yet) is not checked here: the dataset reports it when it runs,
    and ``monai.bundle.load`` of an inference workflow without data must still initialise.

    Raises:
        InputError: (a ``ValueError``) naming the first existing output and how many there are.
    """
    from spine_monai.bundle.record import as_bool
    from spine_monai.errors import InputError

    if as_bool(overwrite, "overwrite") or not Path(dataset_dir).exists():
        return True
    datalist = list_images(dataset_dir, patterns=tuple(patterns))
    existing = [p for p in output_names(datalist, output_dir, postfix) if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(f"{existing[0]}: already exists{more}; pass --overwrite true to replace, or choose "
                              "another --output_dir.")
    return True
