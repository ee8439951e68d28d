"""Dataset adapter: a folder of ``<case>_img`` / ``<case>_label`` image pairs -> datalist JSON with k folds.

Works for ``../shared/data/real/lumbar_mri`` (``VB2_02_img.nii.gz`` + ``VB2_02_label.nii.gz``) and any folder laid
out the same way. Labels are used as they are on disk; the bundles binarise them (``AsDiscreted(threshold=0.5)``)
when the method is binary, so one datalist serves binary and multi-class methods.

Public datasets as distributed (MRSpineSeg, SPIDER, VerSe, CTSpine1K, TotalSegmentator output) are read by the
adapters of :mod:`spine_monai.data.adapters`, chosen with ``format`` (``--format`` on the command line).
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spine_monai.data.datalist import make_folds, write_datalist

__all__ = ["find_pairs", "folder_datalist", "parse_label_map", "FORMAT_NAMES"]

#: values of ``format``: ``pairs`` (this module) and the adapters of :mod:`spine_monai.data.adapters`.
FORMAT_NAMES: tuple[str, ...] = ("pairs", "mrspineseg", "spider", "verse", "ctspine1k", "totalsegmentator")

logger = logging.getLogger(__name__)


def find_pairs(dataset_dir: str | os.PathLike, pattern: str = "*_img.nii.gz", label_suffix: str = "_label",
               include: str | Sequence[str] | None = None) -> list[dict]:
    """Image/label pairs of a folder.

    Args:
        dataset_dir: the folder.
        pattern: glob of the image files; the part replaced by ``_img`` identifies the case.
        label_suffix: the label of ``<case>_img.ext`` is ``<case><label_suffix>.ext``.
        include: optional case-id glob(s), e.g. ``"VB*"`` or ``["VB2_*"]``.

    Returns:
        ``[{"image": path, "label": path, "case": id}, ...]`` sorted by case id.

    Raises:
        FileNotFoundError: if the folder does not exist, holds no image, or an image has no label.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found.")
    images = sorted(glob.glob(str(root / pattern)))
    if not images:
        raise FileNotFoundError(f"{root}: no image matches {pattern!r}.")
    marker = pattern.split("*")[-1].split(".")[0]  # "_img" for "*_img.nii.gz"
    if not marker:
        raise ValueError(f"pattern {pattern!r} must end in a marker such as '*_img.nii.gz'.")
    includes = [include] if isinstance(include, str) else list(include or [])
    pairs = []
    for img in images:
        name = Path(img).name
        case = name.split(marker)[0]
        if includes and not any(fnmatch.fnmatch(case, pat) for pat in includes):
            continue
        label = root / name.replace(marker, label_suffix, 1)
        if not label.is_file():
            raise FileNotFoundError(f"{img}: no label file {label.name} beside it.")
        pairs.append({"image": str(Path(img).resolve()), "label": str(label.resolve()), "case": case})
    if not pairs:
        raise FileNotFoundError(f"{root}: no case matches include={includes}.")
    return pairs


def folder_datalist(dataset_dir: str | os.PathLike, out: str | os.PathLike | None = None, folds: int = 5,
                    seed: int = 0, pattern: str = "*_img.nii.gz", label_suffix: str = "_label",
                    binarize: bool = True, include: str | Sequence[str] | None = None, format: str = "pairs",
                    progress: bool = True, label_map: str | Mapping[Any, Any] | None = None) -> str:
    """Write a Decathlon-style datalist (with fixed folds) for a folder of image/label pairs or a public dataset.

    Args:
        dataset_dir: folder of pairs, or of a public dataset as distributed (see ``format``); read only: nothing is
            written there unless ``out`` points there.
        out: the datalist path to write (a ``.json`` file, or a folder that gets ``datalist.json``); default
            ``./<folder name>_datalist/datalist.json``. Label maps an adapter converts are written beside it
            (``labels_mrspineseg/``, ``labels_verse/``).
        folds: number of folds (fixed by ``seed``). When the layout names the patient (``spider``, ``verse``), the
            series of one patient share a fold.
        seed: fold seed.
        pattern, label_suffix: see :func:`find_pairs`.
        binarize: recorded in the datalist (``"binary_labels": true``): the label maps are meant as spine vs
            background; bundles apply the threshold. In either case the integer values found in the label files
            are recorded as ``label_values`` (e.g. vertebra instance ids 0..9): training accepts exactly those and
            refuses a label with any other value (a soft value, -1, 255 that was not there) naming the file.
        include: optional case-id glob(s), e.g. ``"VB*"`` or ``["VB2_*"]``.
        format: dataset layout: ``pairs`` (``<case>_img`` + ``<case>_label``); ``mrspineseg``
            (``train/MR/Case{N}`` + ``train/Mask/mask_case{N}``, labels as they are); ``spider`` (``images/*.mha`` +
            ``masks/*.mha``, mapped to MRSpineSeg labels and written); ``verse`` (``rawdata/sub-*/*_ct`` +
            ``derivatives/sub-*/*_seg-vert_msk``, VerSe labels as they are); ``ctspine1k`` (``X`` + ``X_seg``, VerSe
            labels as they are); ``totalsegmentator`` (``<case>/ct`` + ``<case>/segmentations/vertebrae_*``,
            combined into VerSe labels and written). The label convention is recorded as ``labels``.
        progress: progress bar while label maps are written.
        label_map: with ``format="pairs"``, relabel the label maps: ``"1:6,2:5,3:4,4:3,5:2"`` (or a mapping) maps
            each listed value to a new one, values not listed keep theirs. The relabelled maps are written with the
            header of their source to ``labels_mapped/`` beside the datalist, which records the mapping as
            ``label_mapping``. Example: the VB3 cases of the shared lumbar MRI label L1..L5 as 1..5; SAFNet's
            MRSpineSeg classes are L1 = 6 ... L5 = 2.

    Returns:
        The datalist path.

    Raises:
        FileNotFoundError: the folder is absent, holds no case of the layout, or an image has no label.
        ValueError: an unknown ``format``, an unreadable file, or ``pattern``/``label_suffix`` given with a
            ``format`` other than ``pairs``.
    """
    fmt = str(format).strip().lower()
    if fmt not in FORMAT_NAMES:
        raise ValueError(f"--format {format!r} is not one of {', '.join(FORMAT_NAMES)}.")
    if out is None:
        out_path = Path.cwd() / f"{Path(dataset_dir).resolve().name}_datalist" / "datalist.json"
    else:
        out_path = Path(out)
        if out_path.suffix != ".json":
            out_path = out_path / "datalist.json"
    extra: dict = {}
    if fmt == "pairs":
        pairs = find_pairs(dataset_dir, pattern, label_suffix, include)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if label_map is not None:
            mapping = parse_label_map(label_map)
            _relabel(pairs, mapping, out_path.parent / "labels_mapped", progress)
            extra["label_mapping"] = {str(k): v for k, v in mapping.items()}
        extra["label_values"] = _label_values(pairs)
    else:
        from spine_monai.data.adapters import FORMATS

        if label_map is not None:
            raise ValueError(f"--label_map applies to --format pairs only; --format {fmt} maps its own labels.")
        if pattern != "*_img.nii.gz" or label_suffix != "_label":
            raise ValueError(f"--pattern and --label_suffix apply to --format pairs only, not --format {fmt}.")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        layout = FORMATS[fmt](dataset_dir, out_path.parent, include=include, progress=progress)
        pairs = layout.items
        logger.info("--format %s: label convention %s; mapping: %s", fmt, layout.convention, layout.mapping)
        values = layout.label_values if layout.label_values is not None else _label_values(pairs)
        unexpected = sorted(set(values) - set(layout.labels))
        if unexpected:
            logger.warning("label values %s are not in the %s convention %s", unexpected, layout.convention,
                           sorted(layout.labels))
        extra["label_values"] = values
        extra.update(format=fmt, label_convention=layout.convention, label_mapping=layout.mapping,
                     labels={str(k): v for k, v in layout.labels.items()}, **layout.extra)
        _subject_folds(pairs, folds, seed)
    path = write_datalist(pairs, out_path, folds=folds, seed=seed, name=Path(dataset_dir).resolve().name,
                          source=str(Path(dataset_dir).resolve()), binary_labels=bool(binarize), **extra)
    logger.info("wrote %s (%d cases, %d folds)", path, len(pairs), folds)
    return str(path)


def _subject_folds(items: list[dict], folds: int, seed: int) -> None:
    """Give every item the fold of its ``subject`` (seeded by :func:`make_folds` over the subjects) when some
    subject has several items; otherwise leave the folds to :func:`write_datalist` (by case id)."""
    subjects = [str(item.get("subject", item.get("case_id"))) for item in items]
    if len(set(subjects)) == len(subjects):
        return
    unique = sorted(set(subjects))
    if isinstance(folds, int) and folds > len(unique):
        raise ValueError(f"--folds {folds} is more than the {len(unique)} subjects (a subject's series stay in "
                         "one fold).")
    assignment = make_folds(unique, folds, seed)
    for item, subject in zip(items, subjects, strict=True):
        item["fold"] = assignment[subject]
    logger.info("folds grouped by subject: %d series of %d subjects", len(items), len(unique))


def _label_values(pairs: Sequence[dict]) -> list[int]:
    """Sorted union of the non-negative integer values of every label file (non-integer values are left out)."""
    import nibabel as nib
    import numpy as np

    found: set[int] = {0}
    for item in pairs:
        data = np.asarray(nib.load(str(item["label"])).dataobj)
        values = np.unique(data)
        found.update(int(v) for v in values if np.isfinite(v) and float(v).is_integer() and v >= 0)
    return sorted(found)


def parse_label_map(label_map: str | Mapping[Any, Any]) -> dict[int, int]:
    """``"1:6,2:5"`` or ``{1: 6, "2": 5}`` -> ``{1: 6, 2: 5}``.

    Raises:
        ValueError: on an entry that is not ``old:new`` with non-negative integers, a value mapped twice, or an empty
            map.
    """
    if isinstance(label_map, Mapping):
        entries = list(label_map.items())
    else:
        entries = []
        for part in str(label_map).replace(";", ",").split(","):
            if not part.strip():
                continue
            if ":" not in part:
                raise ValueError(f"--label_map entry {part.strip()!r} is not 'old:new' (e.g. '1:6,2:5').")
            old, new = part.split(":", 1)
            entries.append((old, new))
    mapping: dict[int, int] = {}
    for old, new in entries:
        try:
            o, n = int(str(old).strip()), int(str(new).strip())
        except ValueError:
            raise ValueError(f"--label_map entry '{old}:{new}' must map integers (e.g. '1:6').") from None
        if o < 0 or n < 0:
            raise ValueError(f"--label_map entry '{o}:{n}': label values are non-negative.")
        if o in mapping:
            raise ValueError(f"--label_map maps {o} twice.")
        mapping[o] = n
    if not mapping:
        raise ValueError("--label_map is empty; give entries such as '1:6,2:5'.")
    return mapping


def _relabel(pairs: list[dict], mapping: Mapping[int, int], folder: Path, progress: bool) -> None:
    """Write each pair's label with ``mapping`` applied to ``folder`` (atomically, source header kept) and point the
    pair at it."""
    import nibabel as nib
    import numpy as np

    from spine_monai.data.adapters import _progress, _write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    for item in _progress(pairs, "relabel", progress):
        src = Path(item["label"])
        try:
            img = nib.load(str(src))
            data = np.asarray(img.dataobj)
        except Exception as err:  # nibabel raises many types on broken files
            raise ValueError(f"{src}: cannot read the label ({err}).") from err
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise ValueError(f"{src}: the label holds non-integer values; --label_map maps integer labels.")
        values = data.astype(np.int64)
        out = values.copy()
        for old, new in mapping.items():
            out[values == old] = new
        dtype = np.uint8 if out.max(initial=0) < 256 else np.int32
        header = img.header.copy()
        header.set_data_dtype(dtype)
        header.set_slope_inter(1, 0)
        mapped = nib.Nifti1Image(out.astype(dtype), img.affine, header)
        name = src.name if src.name.endswith((".nii", ".nii.gz")) else src.stem + ".nii.gz"
        target = folder / name
        _write_atomic(target, lambda p, m=mapped: nib.save(m, str(p)))
        item["label"] = str(target.resolve())
        item["label_source"] = str(src)
