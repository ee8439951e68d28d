"""Refuse training labels whose values the bundle does not expect, naming the file and the values.

Not tied to a paper. The SAU-Net bundle binarises its labels (``AsDiscreted(threshold=0.5)``: spine vs
background), so before this check a label with soft values (0.4 becomes background: an empty target), negative
values (-1 becomes background), 0/255 masks, a map of another label convention, or the image itself given as the
label were all accepted and silently became an empty or wrong target. :class:`ValidateLabeld` runs after
``LoadImaged`` and before that threshold and refuses:

- non-integer ("soft", probabilistic or interpolated) values, and NaN/Inf;
- values outside the allowed set ``values`` (e.g. -1, 255), listing up to ``max_report`` of them with counts;
- a label that is the image itself: the same file, or an array identical to the image.

Choice of the allowed set in ``train.json``: ``label_values``, read from the training datalist by
:func:`spine_monai.data.datalist.label_values`: the values ``python -m spine_monai datalist`` found in the label files
(recorded as ``label_values``, e.g. vertebral-body instance ids 0..9 of ``../shared/data/real/lumbar_mri``, all
merged into "spine" by the threshold), else the ids of the datalist's ``labels`` map (phantoms: ``{0, 1}``, or the
20 MRSpineSeg ids with ``binary=False``), else ``{0, 1}`` (MONAI Label's datastore labels). So a 7 or a 255 in a
binary (0/1) dataset is refused, naming the file, while instance ids that the dataset really uses are accepted;
``--label_values "[0,1]"`` overrides. A 0/255 mask is refused with the hint to store it as 0/1.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from spine_monai.errors import InputError
from spine_monai.transforms.validate import source_name

__all__ = ["ValidateLabeld", "check_label_values", "label_value_counts"]


def label_value_counts(label: torch.Tensor) -> dict[int, int]:
    """``{value: voxel count}`` of an integer-valued tensor (bincount when the value range is small)."""
    flat = label.reshape(-1)
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < 1 << 16:
        counts = torch.bincount(flat.to(torch.int64) - lo)
        idx = torch.nonzero(counts).reshape(-1)
        return {int(i) + lo: int(counts[i]) for i in idx}
    values, counts = torch.unique(flat, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def _fmt(values: Iterable[float], limit: int) -> str:
    vals = list(values)
    text = ", ".join(f"{v:g}" for v in vals[:limit])
    return text + (f", ... ({len(vals)} values)" if len(vals) > limit else "")


def check_label_values(label: Any, name: str, values: Iterable[int] = (0, 1), image: Any = None,
                       image_name: str | None = None, max_report: int = 5) -> dict[int, int]:
    """Refuse a label whose values are not integer ids in ``values``, or that is the image itself.

    Args:
        label: label map (tensor or array, any shape).
        name: the label file, for the messages.
        values: the allowed integer values.
        image: the image of the pair (optional): a label identical to it is refused.
        image_name: the image file (optional): a label read from the same file is refused.
        max_report: how many offending values a message lists.

    Returns:
        ``{value: voxel count}`` of the label.

    Raises:
        InputError: naming ``name`` and the offending values.
    """
    allowed = sorted({int(v) for v in values})
    if image_name is not None and str(image_name) == str(name):
        raise InputError(f"{name}: the label is the image file itself; give the label map's file.")
    t = label if isinstance(label, torch.Tensor) else torch.as_tensor(np.asarray(label))
    t = t.detach()
    if hasattr(t, "as_tensor"):
        t = t.as_tensor()
    if t.is_complex():
        raise InputError(f"{name}: complex-valued label; labels must be integer class ids in {_fmt(allowed, 8)}.")
    if image is not None and tuple(image.shape) == tuple(t.shape):
        img = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(np.asarray(image))
        head = slice(0, 4096)  # cheap test on the first voxels before comparing everything
        same = not img.is_complex() and torch.equal(img.reshape(-1)[head].double(), t.reshape(-1)[head].double())
        if same and torch.equal(img.to(torch.float64), t.to(torch.float64)):
            raise InputError(f"{name}: the label is identical to the image {image_name or ''}; give the label map.")
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            raise InputError(f"{name}: label contains {int((~finite).sum())} NaN/Inf value(s).")
        frac = t != torch.round(t)
        if bool(frac.any()):
            soft = torch.unique(t[frac][:1_000_000])
            raise InputError(
                f"{name}: label has non-integer (soft) values {_fmt(soft.tolist(), max_report)} in "
                f"{int(frac.sum())} voxels; labels must be integer class ids in {_fmt(allowed, 8)} (threshold or "
                "round a probability map first)."
            )
        t = t.to(torch.int64)
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    counts = label_value_counts(t)
    bad = {v: c for v, c in counts.items() if v not in allowed}
    if bad:
        listed = ", ".join(f"{v} ({c} voxels)" for v, c in list(sorted(bad.items()))[:max_report])
        more = f" and {len(bad) - max_report} more" if len(bad) > max_report else ""
        hint = " (a 0/255 mask? store it as 0/1)" if 255 in bad and set(counts) <= {0, 255} else ""
        raise InputError(
            f"{name}: label values {listed}{more} are not expected by this bundle (allowed: {_fmt(allowed, 8)})"
            f"{hint}; is this the right label file?"
        )
    return counts


class ValidateLabeld(MapTransform):
    """Refuse label maps with unexpected values (see the module docstring); place it before ``AsDiscreted``.

    Args:
        keys: the label key(s) (``(1, X, Y, Z)`` tensors, typically ``"label"``).
        values: allowed integer label values.
        image_key: the image of the pair; a label identical to it (or from the same file) is refused.
        max_report: how many offending values a message lists.
        allow_missing_keys: skip absent keys.

    Raises:
        InputError: naming the label file and the offending values.
    """

    def __init__(self, keys: KeysCollection = "label", values: Iterable[int] = (0, 1), image_key: str | None = "image",
                 max_report: int = 5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.values = tuple(sorted({int(v) for v in values}))
        if not self.values:
            raise ValueError("values is empty: give the allowed label values, e.g. [0, 1].")
        self.image_key = image_key
        self.max_report = int(max_report)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key) if self.image_key is not None else None
        image_name = source_name(image, fallback="") if image is not None else None
        for key in self.key_iterator(d):
            name = source_name(d[key], fallback=str(key))
            check_label_values(d[key], name, self.values, image=image, image_name=image_name or None,
                               max_report=self.max_report)
        return d
