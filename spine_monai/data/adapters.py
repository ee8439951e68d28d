"""Dataset-layout adapters: public spine datasets, as distributed, -> datalist items (``--format NAME``).

``python -m spine_monai datalist FOLDER --format NAME`` (:func:`spine_monai.data.folder.folder_datalist`) calls
``FORMATS[NAME](FOLDER, OUT_DIR, include)``; every adapter returns a :class:`Layout`: the items
``{"image", "label", "case_id", ...}`` sorted by case id, the label convention of the label files the items point to
(``labels``: value -> name) and a one-line description of the mapping applied. Folds are made afterwards by
:func:`spine_monai.data.datalist.write_datalist` (patient-grouped when the layout knows the patient).

The bundles read the label files as they are on disk, so an adapter whose mapping is not the identity writes the
mapped label maps as NIfTI under the datalist's folder (``labels_mrspineseg/<case>.nii.gz`` or
``labels_verse/<case>.nii.gz``), keeping the mask's geometry (spacing, origin, direction); the images stay where
they are. Files are written under a temporary name and then renamed, so an interrupted run never leaves a truncated
label file.

Layouts (details, label values and citations in each function):

- ``mrspineseg``: ``train/MR/Case{N}.nii.gz`` + ``train/Mask/mask_case{N}.nii.gz``; MRSpineSeg labels 0-19 used as
  they are (Pang et al., IEEE TMI 2021).
- ``spider``: ``images/*.mha`` + ``masks/*.mha`` (+ ``overview.csv``); SPIDER values mapped to MRSpineSeg and
  written (van der Graaf et al., Scientific Data 2024).
- ``verse``: ``rawdata/sub-*/[ses-*/]*_ct.nii.gz`` + ``derivatives/sub-*/[ses-*/]*_seg-vert_msk.nii.gz``; VerSe
  labels 1-28 used as they are (Löffler et al. 2020; Sekuboyina et al. 2021).
- ``ctspine1k``: ``X.nii.gz`` + ``X_seg.nii.gz`` (or ``volumes/`` + ``labels/``); VerSe numbering used as it is
  (Deng et al., arXiv:2105.14711).
- ``totalsegmentator``: ``<case>/ct.nii.gz`` + ``<case>/segmentations/vertebrae_*.nii.gz``; binary masks combined
  into one VerSe label map and written (Wasserthal et al., Radiology: AI 2023).
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine_monai.data.labels import MRSPINESEG_LABELS

__all__ = [
    "FORMATS",
    "Layout",
    "VERSE_LABELS",
    "SPIDER_TO_MRSPINESEG",
    "TOTALSEG_TO_VERSE",
    "spider_to_mrspineseg",
    "mrspineseg_layout",
    "spider_layout",
    "verse_layout",
    "ctspine1k_layout",
    "totalsegmentator_layout",
]

logger = logging.getLogger(__name__)

#: VerSe vertebra labels (Löffler et al. 2020; Sekuboyina et al. 2021): 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6,
#: 26 sacrum (reserved in VerSe, "not labeled in this dataset"; used here for TotalSegmentator's sacrum), 28 T13.
VERSE_LABELS: dict[int, str] = {
    0: "background",
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 7)},
    26: "sacrum",
    28: "T13",
}

#: SPIDER mask value -> MRSpineSeg label. Vertebrae are numbered from the bottom (1 = L5 ... 9 = T9), a partially
#: visible vertebra is 100 + its number, disc 200 + k lies below vertebra k (201 = L5/S1 ... 209 = T9/T10), 100 is the
#: spinal canal. Values not listed (canal, vertebrae above T9, discs above T9/T10) become 0.
SPIDER_TO_MRSPINESEG: dict[int, int] = {
    **{k: k + 1 for k in range(1, 10)},  # vertebra k -> L5 (2) ... T9 (10)
    **{100 + k: k + 1 for k in range(1, 10)},  # partially visible vertebra k -> the same vertebra
    **{200 + k: 10 + k for k in range(1, 10)},  # disc below vertebra k -> L5/S (11) ... T9/T10 (19)
}

#: values a SPIDER mask may hold (anything else is reported as unexpected).
_SPIDER_KNOWN: frozenset[int] = frozenset({0, 100, *range(1, 26), *range(101, 126), *range(201, 226)})

#: TotalSegmentator mask file stem -> VerSe label (``sacrum`` and v2's ``vertebrae_S1`` -> 26).
TOTALSEG_TO_VERSE: dict[str, int] = {
    **{f"vertebrae_C{i}": i for i in range(1, 8)},
    **{f"vertebrae_T{i}": 7 + i for i in range(1, 13)},
    **{f"vertebrae_L{i}": 19 + i for i in range(1, 6)},
    "vertebrae_S1": 26,
    "sacrum": 26,
}

_NIFTI = (".nii.gz", ".nii")


@dataclass
class Layout:
    """What an adapter found.

    Attributes:
        items: ``{"image", "label", "case_id", ...}`` per case, sorted by case id; ``subject`` (the patient) when
            the layout tells it, so that folds keep a patient's series together.
        labels: value -> name of the label convention of the files ``label`` points to.
        convention: name of that convention (``"MRSpineSeg"``, ``"VerSe"``).
        mapping: one line saying how the dataset's values were turned into ``labels`` (logged and recorded).
        label_values: the values found in the written label files (``None`` when the labels were not read).
        extra: further top-level datalist keys (e.g. ``overview``).
    """

    items: list[dict[str, Any]]
    labels: dict[int, str]
    convention: str
    mapping: str
    label_values: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ helpers


def _root(dataset_dir: str | os.PathLike) -> Path:
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found.")
    return root


def _includes(include: str | Sequence[str] | None) -> list[str]:
    return [include] if isinstance(include, str) else [str(p) for p in (include or [])]


def _selected(case_id: str, includes: Sequence[str]) -> bool:
    return not includes or any(fnmatch.fnmatch(case_id, pat) for pat in includes)


def _stem(path: Path, exts: Iterable[str] = _NIFTI) -> str:
    """File name without its (double) extension: ``1.3.6.1.4.0004.nii.gz`` -> ``1.3.6.1.4.0004``."""
    name = path.name
    for ext in exts:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _files(folder: Path, suffixes: Iterable[str] = _NIFTI, recursive: bool = False) -> list[Path]:
    """Regular, non-hidden files of ``folder`` whose name ends in one of ``suffixes`` (case-insensitive), sorted."""
    suffixes = tuple(s.lower() for s in suffixes)
    walker = folder.rglob("*") if recursive else folder.glob("*")
    found = []
    for p in walker:
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and p.name.lower().endswith(suffixes):
            found.append(p)
    return sorted(found)


def _no_case(root: Path, fmt: str, what: str, includes: Sequence[str]) -> FileNotFoundError:
    if includes:
        return FileNotFoundError(f"{root}: no {fmt} case matches include={list(includes)} ({what}).")
    return FileNotFoundError(f"{root}: no {fmt} case found ({what}).")


def _check_unique(items: Sequence[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        cid = item["case_id"]
        if cid in seen:
            raise ValueError(f"{item['image']}: case id {cid!r} is also the case id of {seen[cid]}; case ids must "
                             "be unique.")
        seen[cid] = str(item["image"])


def _nifti_shape(path: Path) -> tuple[int, ...]:
    """Shape from a NIfTI header (the data is not read); ``ValueError`` naming the file when it cannot be read."""
    import nibabel as nib

    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as err:  # nibabel raises several types for a damaged or foreign file
        raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err}).") from err


def _check_same_shape(image: Path, label: Path) -> None:
    """Image and label headers readable and of the same spatial shape."""
    si, sl = _nifti_shape(image), _nifti_shape(label)
    if si[:3] != sl[:3]:
        raise ValueError(f"{label}: shape {sl} differs from its image {image.name} {si}.")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path`` (same extension), then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{_stem(path)}.{os.getpid()}.tmp{ext}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _progress(items: Sequence[Any], desc: str, progress: bool) -> Iterable[Any]:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="case", disable=not progress)


def _warn_orphans(kind: str, paths: Iterable[Path]) -> None:
    paths = sorted(paths)
    if paths:
        shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        logger.warning("%d %s without an image, left out: %s", len(paths), kind, shown)


# ---------------------------------------------------------------------------------------------------- ITK I/O


def _itk_backend() -> str:
    """``"sitk"`` when SimpleITK is importable (fast to load), else ``"itk"`` (a core dependency)."""
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        return "itk"
    return "sitk"


def _itk_error(err: Exception) -> str:
    """One line of an ITK exception: the ``ITK ERROR: Class(0x..): message`` line without its prefix."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ITK ERROR"):
            return re.sub(r"^ITK ERROR:\s*\w+\([^)]*\):\s*", "", line)
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


def _read_itk(path: Path, backend: str | None = None) -> tuple[np.ndarray, Any]:
    """Voxel array (ITK order z, y, x) and the ITK image (for its geometry) of a file ITK reads (``.mha``)."""
    backend = backend or _itk_backend()
    try:
        if backend == "sitk":
            import SimpleITK as sitk

            img = sitk.ReadImage(str(path))
            return sitk.GetArrayFromImage(img), img
        import itk

        img = itk.imread(str(path))
        return itk.array_from_image(img), img
    except Exception as err:  # ITK raises RuntimeError; anything else also means the file cannot be used
        raise ValueError(f"{path}: cannot read ({_itk_error(err)}).") from err


def _itk_shape(path: Path, backend: str | None = None) -> tuple[int, ...]:
    """Array shape (ITK order z, y, x) of a file ITK reads; SimpleITK reads only the header."""
    backend = backend or _itk_backend()
    if backend != "sitk":
        return tuple(_read_itk(path, backend)[0].shape)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as err:  # RuntimeError from ITK
        raise ValueError(f"{path}: cannot read ({_itk_error(err)}).") from err
    return tuple(int(s) for s in reversed(reader.GetSize()))


def _write_itk_like(array: np.ndarray, reference: Any, path: Path) -> None:
    """Write ``array`` (ITK order) with the geometry of the ITK image ``reference`` (NIfTI by the extension)."""
    array = np.ascontiguousarray(array)
    if type(reference).__module__.startswith("SimpleITK"):
        import SimpleITK as sitk

        out = sitk.GetImageFromArray(array)
        out.CopyInformation(reference)
        sitk.WriteImage(out, str(path), True)
        return
    import itk

    out = itk.image_from_array(array)
    out.CopyInformation(reference)
    itk.imwrite(out, str(path), compression=True)


# ------------------------------------------------------------------------------------------------- MRSpineSeg


def mrspineseg_layout(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      include: str | Sequence[str] | None = None, progress: bool = True) -> Layout:
    """MRSpineSeg challenge layout (Pang et al., "SpineParseNet: Spine Parsing for Volumetric MR Image by a Two-Stage
    Segmentation Framework With Semantic Image Representation", IEEE TMI 40(1):262-273, 2021,
    doi:10.1109/TMI.2020.3025087; data: spinesegmentation-challenge.com).

    Layout: ``train/MR/Case{N}.nii.gz`` (T2-weighted sagittal MR) with ``train/Mask/mask_case{N}.nii.gz``; the two
    folders may also lie directly under ``dataset_dir``; ``.nii`` is accepted. The case id is the image stem
    (``Case12``).

    Labels: already the MRSpineSeg convention (0 background, 1 S, 2-10 L5..T9, 11-19 L5/S..T9/T10; see
    :mod:`spine_monai.data.labels`): identity mapping, the masks are used as they are on disk.

    Args:
        dataset_dir: the dataset folder (holding ``train/`` or ``MR/`` + ``Mask/``).
        out_dir: unused (nothing is written).
        include: case-id glob(s), e.g. ``"Case1*"``.
        progress: unused (nothing is written).

    Returns:
        The :class:`Layout`.

    Raises:
        FileNotFoundError: folder absent, no ``MR``/``Mask`` folders, no case, an image without its mask.
        ValueError: an unreadable file, an image and mask of different shapes.
    """
    root = _root(dataset_dir)
    for base in (root / "train", root):
        mr, mask = base / "MR", base / "Mask"
        if mr.is_dir() and mask.is_dir():
            break
    else:
        raise FileNotFoundError(f"{root}: no MRSpineSeg folders train/MR + train/Mask (or MR + Mask) found.")
    includes = _includes(include)
    masks = {_stem(p).lower(): p for p in _files(mask)}
    used: set[str] = set()
    items = []
    for image in _files(mr):
        case = _stem(image)
        key = f"mask_{case}".lower()
        if not _selected(case, includes):
            used.add(key)
            continue
        label = masks.get(key)
        if label is None:
            raise FileNotFoundError(f"{image}: no mask mask_{case.lower()}.nii.gz in {mask}.")
        used.add(key)
        _check_same_shape(image, label)
        items.append({"image": str(image.resolve()), "label": str(label.resolve()), "case_id": case})
    lowered = [pat.lower() for pat in includes]
    _warn_orphans("MRSpineSeg masks", (p for k, p in masks.items() if k not in used
                                       and _selected(re.sub(r"^mask_", "", k), lowered)))
    if not items:
        raise _no_case(root, "mrspineseg", f"images {mr}/Case*.nii.gz", includes)
    items.sort(key=lambda it: it["case_id"])
    _check_unique(items)
    return Layout(items, dict(MRSPINESEG_LABELS), "MRSpineSeg",
                  "identity (the masks already use the MRSpineSeg labels 0-19)")


# ----------------------------------------------------------------------------------------------------- SPIDER


def spider_to_mrspineseg(mask: np.ndarray) -> np.ndarray:
    """Map a SPIDER mask to MRSpineSeg labels with :data:`SPIDER_TO_MRSPINESEG` (unlisted values -> 0).

    Args:
        mask: integer SPIDER mask, any shape.

    Returns:
        ``uint8`` array of the same shape.
    """
    lut = np.zeros(256, np.uint8)
    for src, dst in SPIDER_TO_MRSPINESEG.items():
        lut[src] = dst
    values = np.asarray(mask)
    inside = (values >= 0) & (values < lut.size)
    out = np.zeros(values.shape, np.uint8)
    out[inside] = lut[values[inside].astype(np.int64)]
    return out


def _spider_subject(case: str) -> str:
    """Patient of a SPIDER series: ``12_t1`` / ``12_t2`` / ``12_t2_SPACE`` -> ``12`` (the whole id otherwise)."""
    match = re.match(r"^(\d+)_", case)
    return match.group(1) if match else case


def _read_overview(path: Path, case_ids: set[str]) -> dict[str, dict[str, str]]:
    """Rows of SPIDER's ``overview.csv`` keyed by series id, found as the column whose values name the series."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err}).") from err
    if not rows:
        return {}
    best, hits = None, 0
    for column in rows[0]:
        n = sum(1 for row in rows if _stem(Path(str(row.get(column) or "")), (".mha",)) in case_ids)
        if n > hits:
            best, hits = column, n
    if best is None:
        logger.warning("%s: no column names the series of masks/; overview not used", path)
        return {}
    return {_stem(Path(str(row[best])), (".mha",)): row for row in rows}


def spider_layout(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  include: str | Sequence[str] | None = None, progress: bool = True) -> Layout:
    """SPIDER lumbar spine MRI (van der Graaf et al., "Lumbar spine segmentation in MR images: a dataset and a
    public benchmark", Scientific Data 11:264, 2024, doi:10.1038/s41597-024-03090-w; data: Zenodo 10159290,
    spider.grand-challenge.org), mapped to MRSpineSeg labels.

    Layout: ``images/*.mha`` and ``masks/*.mha`` with the same file names (``{patient}_t1.mha``, ``_t2.mha``,
    ``_t2_SPACE.mha``), an optional ``overview.csv``. The case id is the file stem (``12_t2``); the patient
    (``subject``: the number before the first ``_``) keeps a patient's series in one fold. When ``overview.csv``
    has a column naming the series, its ``subset`` (training/validation) is copied to the item.

    Mask values (SPIDER challenge documentation, "SPIDER Baseline IIS" algorithm page, and the dataset card):
    0 background, 1-25 vertebrae numbered from the bottom (1 = L5), 100 spinal canal, 101-125 partially visible
    vertebrae (100 + number), 201-225 intervertebral discs numbered from the bottom, 201 = L5/S1: disc 200 + k is
    the disc *below* vertebra k (the brief of this adapter supposed 201 to lie between vertebrae 1 and 2; the
    published description says L5/S1, which is followed here). The sacrum is not labelled.

    Mapping to MRSpineSeg (:data:`SPIDER_TO_MRSPINESEG`): vertebra k (and partially visible 100 + k) -> k + 1 for
    k = 1..9 (1 -> L5 = 2, ..., 9 -> T9 = 10); disc 200 + k -> 10 + k (201 -> L5/S = 11, ..., 209 -> T9/T10 = 19);
    canal 100 -> 0; vertebrae above T9 (10-25, 110-125) and discs above T9/T10 (210-225) -> 0. MRSpineSeg's
    sacrum (1) never occurs in the written labels.

    Ambiguity: "numbered from the bottom" counts the lowest *lumbar-looking* vertebra as 1 = L5. With a
    transitional vertebra (lumbarised S1 = "L6", sacralised L5) or a scan whose lowest labelled vertebra is not L5,
    the anatomical names of the mapped labels shift by one level; SPIDER's numbering cannot tell. The adapter logs
    this and, per case, when the lowest vertebra label present is not 1.

    Written: ``<out_dir>/labels_mrspineseg/<case>.nii.gz`` (uint8, the mask's spacing, origin and direction); the
    item's ``label`` points there, ``source_label`` to the SPIDER mask; the image stays the ``.mha`` (read by MONAI's
    ``LoadImage`` with ``ITKReader``).

    Args:
        dataset_dir: the SPIDER folder (holding ``images/`` and ``masks/``).
        out_dir: the datalist's folder; labels are written under it.
        include: series-id glob(s), e.g. ``"*_t2"``.
        progress: tqdm progress bar while the labels are written.

    Returns:
        The :class:`Layout` (``label_values``: the MRSpineSeg values written).

    Raises:
        FileNotFoundError: folder absent, no ``images``/``masks`` folders, no case, an image without its mask.
        ValueError: ``out_dir`` not given, an unreadable file, an image and mask of different shapes.
    """
    root = _root(dataset_dir)
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{root}: no SPIDER folder {folder.name}/ (expected images/*.mha and masks/*.mha).")
    if out_dir is None:
        raise ValueError("spider: out_dir is needed to write the mapped labels.")
    includes = _includes(include)
    images = {_stem(p, (".mha",)): p for p in _files(images_dir, (".mha",))}
    masks = {_stem(p, (".mha",)): p for p in _files(masks_dir, (".mha",))}
    cases = sorted(c for c in images if _selected(c, includes))
    missing = [c for c in cases if c not in masks]
    if missing:
        raise FileNotFoundError(f"{images[missing[0]]}: no mask {missing[0]}.mha in {masks_dir}"
                                + (f" ({len(missing) - 1} more images without mask)." if len(missing) > 1 else "."))
    _warn_orphans("SPIDER masks", (p for c, p in masks.items() if c not in images and _selected(c, includes)))
    if not cases:
        raise _no_case(root, "spider", f"images {images_dir}/*.mha", includes)
    overview_path = root / "overview.csv"
    overview = _read_overview(overview_path, set(cases)) if overview_path.is_file() else {}
    labels_dir = Path(out_dir) / "labels_mrspineseg"
    logger.warning("spider: vertebrae are numbered from the bottom (1 = L5, 201 = L5/S1); with a transitional "
                   "vertebra or a scan whose lowest labelled vertebra is not L5 the MRSpineSeg names shift by a level")
    backend = _itk_backend()
    found: set[int] = {0}
    items = []
    for case in _progress(cases, "spider labels", progress):
        image, mask = images[case], masks[case]
        img_shape = _itk_shape(image, backend)
        arr, ref = _read_itk(mask, backend)
        if tuple(img_shape) != tuple(arr.shape):
            raise ValueError(f"{mask}: shape {arr.shape[::-1]} differs from its image {image.name} "
                             f"{tuple(img_shape[::-1])}.")
        values = {int(v) for v in np.unique(arr)}
        unknown = sorted(values - _SPIDER_KNOWN)
        if unknown:
            logger.warning("%s: values %s are not SPIDER labels; written as background", mask, unknown)
        vertebrae = sorted(v for v in values if 1 <= v <= 25)
        if vertebrae and vertebrae[0] != 1:
            logger.warning("%s: lowest vertebra label is %d, not 1 (L5): check the level naming", mask, vertebrae[0])
        mapped = spider_to_mrspineseg(arr)
        found.update(int(v) for v in np.unique(mapped))
        out = labels_dir / f"{case}.nii.gz"
        _write_atomic(out, lambda tmp, m=mapped, r=ref: _write_itk_like(m, r, tmp))
        item: dict[str, Any] = {"image": str(image.resolve()), "label": str(out.resolve()), "case_id": case,
                                "subject": _spider_subject(case), "source_label": str(mask.resolve())}
        subset = next((v for k, v in overview.get(case, {}).items() if k and k.strip().lower() == "subset"), None)
        if subset:
            item["subset"] = subset
        items.append(item)
    extra = {"overview": str(overview_path.resolve())} if overview_path.is_file() else {}
    mapping = ("SPIDER -> MRSpineSeg: vertebra k (and partial 100+k) -> k+1 for k=1..9 (1=L5 -> 2 ... 9=T9 -> 10); "
               "disc 200+k -> 10+k (201=L5/S1 -> 11 ... 209=T9/T10 -> 19); canal 100, vertebrae >9, discs >209 -> 0")
    return Layout(items, dict(MRSPINESEG_LABELS), "MRSpineSeg", mapping, sorted(found), extra)


# ------------------------------------------------------------------------------------------------------ VerSe


def _bids_entities(path: Path, suffix: str) -> tuple[dict[str, str], list[str]] | None:
    """BIDS-like entities of ``<k-v>_<k-v>_..._<suffix>.<ext>``: ({key: value}, [parts without a dash]);
    ``None`` when the name does not end in ``_<suffix>``."""
    stem = _stem(path, (*_NIFTI, ".json"))
    if not stem.endswith(f"_{suffix}"):
        return None
    entities: dict[str, str] = {}
    loose: list[str] = []
    for part in stem[: -len(suffix) - 1].split("_"):
        key, sep, value = part.partition("-")
        if sep:
            entities[key] = value
        elif part:
            loose.append(part)
    return entities, loose


def _key(entities: dict[str, str], loose: Sequence[str], drop: Iterable[str] = ("seg",)) -> tuple:
    drop = set(drop)
    return tuple(sorted((k, v) for k, v in entities.items() if k not in drop)), tuple(loose)


def _short_key(entities: dict[str, str]) -> tuple:
    return tuple(entities.get(k) for k in ("sub", "ses", "split"))


def _match_bids(images: dict[Path, tuple], candidates: list[tuple[Path, dict[str, str], list[str]]]
                ) -> dict[Path, Path]:
    """Image -> candidate file: same entities (``seg`` ignored), else the only candidate with the same
    ``sub``/``ses``/``split`` when that key is unique among images and candidates."""
    by_full: dict[tuple, list[Path]] = {}
    by_short: dict[tuple, list[Path]] = {}
    for path, entities, loose in candidates:
        by_full.setdefault(_key(entities, loose), []).append(path)
        by_short.setdefault(_short_key(entities), []).append(path)
    image_short: dict[tuple, int] = {}
    for entities, _ in images.values():
        image_short[_short_key(entities)] = image_short.get(_short_key(entities), 0) + 1
    matched = {}
    for image, (entities, loose) in images.items():
        full = by_full.get(_key(entities, loose), [])
        if len(full) > 1:
            raise ValueError(f"{image}: several files match it: {', '.join(str(p) for p in full)}.")
        if full:
            matched[image] = full[0]
            continue
        short = by_short.get(_short_key(entities), [])
        if len(short) == 1 and image_short[_short_key(entities)] == 1:
            matched[image] = short[0]
    return matched


def verse_layout(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 include: str | Sequence[str] | None = None, progress: bool = True) -> Layout:
    """VerSe spine CT in its subject-based (BIDS-like) structure (Löffler et al., "A Vertebral Segmentation Dataset
    with Fracture Grading", Radiology: Artificial Intelligence 2(4):e190138, 2020, doi:10.1148/ryai.2020190138;
    Sekuboyina et al., "VerSe: A Vertebrae labelling and segmentation benchmark for multi-detector CT images",
    Medical Image Analysis 73:102166, 2021, doi:10.1016/j.media.2021.102166; VerSe'20: Liebl et al., Scientific
    Data 8:284, 2021, doi:10.1038/s41597-021-01060-0).

    Layout: ``rawdata/sub-*/[ses-*/]*_ct.nii.gz`` and ``derivatives/sub-*/[ses-*/]*_seg-vert_msk.nii.gz``, the
    centroids ``*_seg-subreg_ctd.json`` optional (recorded as the item's ``centroids``). The folder is searched
    recursively, so ``dataset-01training/rawdata/...`` and a flat folder holding both kinds of file (VerSe's
    ``utils/sample``, TPTBox's test samples) also work. An image is paired with the mask that carries the same
    entities (``sub``, ``ses``, ``split``, ``dir``, ... the mask's ``seg-vert`` aside, in any order), else with the
    only mask of the same ``sub``/``ses``/``split``. The case id is the image stem without ``_ct``
    (``sub-verse004``, ``sub-gl003_dir-ax``); ``subject`` (the ``sub`` value) keeps a subject's scans in one fold.

    Labels (VerSe README): 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 28 T13 (26/27 sacrum/coccyx reserved, not
    labelled): identity mapping, the masks are used as they are on disk; the datalist records
    :data:`VERSE_LABELS`.

    Args:
        dataset_dir: the VerSe folder.
        out_dir: unused (nothing is written).
        include: case-id glob(s), e.g. ``"sub-verse5*"``.
        progress: unused (nothing is written).

    Returns:
        The :class:`Layout`.

    Raises:
        FileNotFoundError: folder absent, no case, an image without its mask.
        ValueError: an unreadable file, an image and mask of different shapes, a mask matching several images.
    """
    root = _root(dataset_dir)
    includes = _includes(include)
    images: dict[Path, tuple] = {}
    for p in _files(root, ("_ct.nii.gz", "_ct.nii"), recursive=True):
        parsed = _bids_entities(p, "ct")
        if parsed and _selected(_stem(p)[: -len("_ct")], includes):
            images[p] = parsed
    masks = []
    for p in _files(root, ("_msk.nii.gz", "_msk.nii"), recursive=True):
        parsed = _bids_entities(p, "msk")
        if parsed and parsed[0].get("seg") == "vert":
            masks.append((p, *parsed))
    centroids = []
    for p in _files(root, ("_ctd.json",), recursive=True):
        parsed = _bids_entities(p, "ctd")
        if parsed and parsed[0].get("seg") == "subreg":
            centroids.append((p, *parsed))
    if not images:
        what = "no image *_ct.nii.gz (rawdata/sub-*/)"
        if masks:
            what += f"; {len(masks)} mask(s) *_seg-vert_msk.nii.gz without image, e.g. {masks[0][0].name}"
        raise _no_case(root, "verse", what, includes)
    mask_of = _match_bids(images, masks)
    ctd_of = _match_bids(images, centroids)
    owners: dict[Path, Path] = {}
    for image, mask in mask_of.items():
        if mask in owners:
            raise ValueError(f"{mask}: matches two images, {owners[mask].name} and {image.name}; give the images "
                             "distinct entities.")
        owners[mask] = image
    items = []
    for image in sorted(images, key=lambda p: _stem(p)):
        mask = mask_of.get(image)
        if mask is None:
            raise FileNotFoundError(f"{image}: no mask {_stem(image)[:-3]}_seg-vert_msk.nii.gz found under {root}.")
        _check_same_shape(image, mask)
        item: dict[str, Any] = {"image": str(image.resolve()), "label": str(mask.resolve()),
                                "case_id": _stem(image)[: -len("_ct")]}
        subject = images[image][0].get("sub")
        if subject:
            item["subject"] = subject
        if image in ctd_of:
            item["centroids"] = str(ctd_of[image].resolve())
        items.append(item)
    _warn_orphans("VerSe masks", (p for p, entities, _ in masks if p not in owners
                                  and (not includes or _selected(_stem(p).rsplit("_seg-", 1)[0], includes))))
    items.sort(key=lambda it: it["case_id"])
    _check_unique(items)
    return Layout(items, dict(VERSE_LABELS), "VerSe", "identity (the masks already use the VerSe labels 1-28)")


# -------------------------------------------------------------------------------------------------- CTSpine1K


def ctspine1k_layout(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                     include: str | Sequence[str] | None = None, progress: bool = True) -> Layout:
    """CTSpine1K spine CT (Deng et al., "CTSpine1K: A Large-Scale Dataset for Spinal Vertebrae Segmentation in
    Computed Tomography", arXiv:2105.14711, 2021/2024; github.com/MIRACLE-Center/CTSpine1K).

    Layout: ``X.nii.gz`` images with ``X_seg.nii.gz`` labels beside them (same stem), searched recursively; the
    distributed tree ``volumes/<source>/X.nii.gz`` + ``labels/<source>/X_seg.nii.gz`` is also recognised (the
    label at the same relative path with ``volumes`` replaced by ``labels``). Stems may hold dots
    (``1.3.6.1.4.1.9328.50.4.0004``): only ``.nii.gz``/``.nii`` is taken off. The case id is the stem.

    Labels: the VerSe numbering (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6 in the lumbarisation cases): identity
    mapping, the labels are used as they are on disk; the datalist records :data:`VERSE_LABELS`. (CTSpine1K's
    exact value list was not available to check; values outside VerSe's are reported when the labels are read.)

    Args:
        dataset_dir: the CTSpine1K folder.
        out_dir: unused (nothing is written).
        include: case-id glob(s), e.g. ``"liver_*"``.
        progress: unused (nothing is written).

    Returns:
        The :class:`Layout`.

    Raises:
        FileNotFoundError: folder absent, no case, an image without its ``_seg`` label.
        ValueError: an unreadable file, an image and label of different shapes, two cases with the same stem.
    """
    root = _root(dataset_dir)
    includes = _includes(include)
    files = _files(root, recursive=True)
    labels = {p for p in files if _stem(p).endswith("_seg")}
    images = [p for p in files if p not in labels]
    used: set[Path] = set()
    items = []
    for image in images:
        case = _stem(image)
        ext = image.name[len(case):]
        candidates = [image.with_name(f"{case}_seg{ext}")]
        rel = image.relative_to(root).parts
        if "volumes" in rel[:-1]:
            i = len(rel) - 2 - list(reversed(rel[:-1])).index("volumes")
            candidates.append(root.joinpath(*rel[:i], "labels", *rel[i + 1:-1], f"{case}_seg{ext}"))
        label = next((c for c in candidates if c in labels), None)
        if not _selected(case, includes):
            if label is not None:
                used.add(label)
            continue
        if label is None:
            raise FileNotFoundError(f"{image}: no label {case}_seg{ext} beside it"
                                    + (" or under labels/." if len(candidates) > 1 else "."))
        used.add(label)
        _check_same_shape(image, label)
        items.append({"image": str(image.resolve()), "label": str(label.resolve()), "case_id": case})
    _warn_orphans("CTSpine1K labels", (p for p in labels if p not in used and _selected(_stem(p)[:-4], includes)))
    if not items:
        raise _no_case(root, "ctspine1k", "images X.nii.gz with labels X_seg.nii.gz", includes)
    items.sort(key=lambda it: it["case_id"])
    _check_unique(items)
    return Layout(items, dict(VERSE_LABELS), "VerSe",
                  "identity (CTSpine1K labels already use the VerSe numbering 1-25)")


# ------------------------------------------------------------------------------------------- TotalSegmentator


_TOTALSEG_IMAGES = ("ct.nii.gz", "ct.nii", "mri.nii.gz", "mri.nii")


def _totalseg_cases(root: Path) -> list[Path]:
    """Case folders: ``root`` itself when it holds ``segmentations/`` or an image, else its sub-folders that do."""
    def is_case(p: Path) -> bool:
        return (p / "segmentations").is_dir() or any((p / name).is_file() for name in _TOTALSEG_IMAGES)

    if is_case(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_case(p))


def _combine_totalseg(case_dir: Path, image: Path, masks: list[Path], out: Path) -> set[int]:
    """Combine binary TotalSegmentator masks into one VerSe label map written (atomically) to ``out``."""
    import nibabel as nib

    ref = None
    combined: np.ndarray | None = None
    overlap = 0
    img_shape = _nifti_shape(image)
    img_affine = nib.load(str(image)).affine
    for path in masks:
        try:
            nii = nib.load(str(path))
            data = np.asarray(nii.dataobj)
        except Exception as err:  # a damaged file: nibabel/zlib raise several types
            raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err}).") from err
        if ref is None:
            ref = nii
            if data.shape[:3] != img_shape[:3] or not np.allclose(nii.affine, img_affine, atol=1e-3):
                raise ValueError(f"{path}: shape {data.shape} / affine differ from the image {image.name} "
                                 f"{img_shape}.")
            combined = np.zeros(data.shape[:3], np.uint8)
        elif data.shape != ref.shape or not np.allclose(nii.affine, ref.affine, atol=1e-4):
            raise ValueError(f"{path}: shape {data.shape} / affine differ from {Path(ref.get_filename()).name} "
                             f"{tuple(ref.shape)} in {case_dir / 'segmentations'}.")
        fg = data > 0
        assert combined is not None
        overlap += int(np.count_nonzero(fg & (combined > 0)))
        combined[fg] = TOTALSEG_TO_VERSE[_stem(path)]
    assert ref is not None and combined is not None
    if overlap:
        logger.warning("%s: %d voxels belong to two masks; the later (caudal) one was kept", case_dir, overlap)
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    nii_out = nib.Nifti1Image(combined, ref.affine, header)
    _write_atomic(out, lambda tmp: nib.save(nii_out, str(tmp)))
    return {int(v) for v in np.unique(combined)}


def totalsegmentator_layout(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                            include: str | Sequence[str] | None = None, progress: bool = True) -> Layout:
    """TotalSegmentator folders (Wasserthal et al., "TotalSegmentator: Robust Segmentation of 104 Anatomic
    Structures in CT Images", Radiology: Artificial Intelligence 5(5):e230024, 2023, doi:10.1148/ryai.230024),
    combined into VerSe labels.

    Layout: one folder per case (the dataset's ``s0000/``, or a folder written by ``TotalSegmentator -o``) holding
    the image ``ct.nii.gz`` (``mri.nii.gz`` for the MR dataset; ``.nii`` accepted) and ``segmentations/`` with one
    binary mask per structure; ``dataset_dir`` may itself be such a folder. The case id is the folder name.

    Mapping (:data:`TOTALSEG_TO_VERSE`): ``vertebrae_C1..C7`` -> 1..7, ``vertebrae_T1..T12`` -> 8..19,
    ``vertebrae_L1..L5`` -> 20..24, ``sacrum`` (and v2's ``vertebrae_S1``) -> 26, the number VerSe reserves for the
    sacrum (its README: "26, 27: sacrum, coccyx - not labeled in this dataset"; TPTBox also uses 26). Other masks
    (organs, ``spinal_cord``, ...) are ignored. Masks are painted cranial to caudal (sacrum last); a voxel in two
    masks keeps the later one and the count is logged. Every mask must have the shape and affine of the others
    (and of the image): otherwise ``ValueError`` naming the file.

    Written: ``<out_dir>/labels_verse/<case>.nii.gz`` (uint8, the masks' affine and header); the item's
    ``source_masks`` names the ``segmentations/`` folder.

    Args:
        dataset_dir: folder of case folders (or one case folder).
        out_dir: the datalist's folder; labels are written under it.
        include: case-id glob(s), e.g. ``"s00*"``.
        progress: tqdm progress bar while the labels are written.

    Returns:
        The :class:`Layout` (``label_values``: the VerSe values written).

    Raises:
        FileNotFoundError: folder absent, no case, an image without ``segmentations/vertebrae_*.nii.gz``.
        ValueError: ``out_dir`` not given, an unreadable file, masks of different shapes or affines.
    """
    root = _root(dataset_dir)
    if out_dir is None:
        raise ValueError("totalsegmentator: out_dir is needed to write the combined labels.")
    includes = _includes(include)
    order = {name: i for i, name in enumerate(TOTALSEG_TO_VERSE)}
    jobs = []
    for case_dir in _totalseg_cases(root):
        case = case_dir.resolve().name
        if not _selected(case, includes):
            continue
        image = next((case_dir / n for n in _TOTALSEG_IMAGES if (case_dir / n).is_file()), None)
        seg_dir = case_dir / "segmentations"
        masks = _files(seg_dir) if seg_dir.is_dir() else []
        unknown = sorted(p.name for p in masks if _stem(p).startswith("vertebrae_") and _stem(p) not in order)
        if unknown:
            logger.warning("%s: masks %s are not TotalSegmentator vertebrae; ignored", seg_dir, unknown)
        masks = sorted((p for p in masks if _stem(p) in order), key=lambda p: order[_stem(p)])
        if image is None:
            if masks:
                logger.warning("%s: masks without an image (ct.nii.gz), left out", seg_dir)
            continue
        if not any(_stem(p).startswith("vertebrae_") for p in masks):
            raise FileNotFoundError(f"{image}: no mask {seg_dir}/vertebrae_*.nii.gz beside it.")
        jobs.append((case, case_dir, image, masks))
    if not jobs:
        raise _no_case(root, "totalsegmentator", "folders with ct.nii.gz + segmentations/vertebrae_*.nii.gz",
                       includes)
    labels_dir = Path(out_dir) / "labels_verse"
    found: set[int] = {0}
    items = []
    for case, case_dir, image, masks in _progress(jobs, "totalsegmentator labels", progress):
        out = labels_dir / f"{case}.nii.gz"
        found |= _combine_totalseg(case_dir, image, masks, out)
        items.append({"image": str(image.resolve()), "label": str(out.resolve()), "case_id": case,
                      "source_masks": str((case_dir / "segmentations").resolve())})
    items.sort(key=lambda it: it["case_id"])
    _check_unique(items)
    mapping = ("TotalSegmentator -> VerSe: vertebrae_C1..C7 -> 1..7, T1..T12 -> 8..19, L1..L5 -> 20..24, "
               "sacrum/vertebrae_S1 -> 26; other masks ignored")
    return Layout(items, dict(VERSE_LABELS), "VerSe", mapping, sorted(found))


#: ``--format`` name -> adapter ``(dataset_dir, out_dir, include, progress) -> Layout``.
FORMATS: dict[str, Callable[..., Layout]] = {
    "mrspineseg": mrspineseg_layout,
    "spider": spider_layout,
    "verse": verse_layout,
    "ctspine1k": ctspine1k_layout,
    "totalsegmentator": totalsegmentator_layout,
}
