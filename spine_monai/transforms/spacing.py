"""Resampling that also works inside MONAI Label, and refuses absurd output sizes before allocating them.

Not tied to a paper. Two problems of ``monai.transforms.Spacingd`` (monai 1.6.1):

- MONAI Label puts string entries such as ``image_path`` into the data dictionary; ``Spacingd`` updates every
  ``<key>_*`` entry as if it were a meta dictionary, so it fails with ``'str' object has no attribute 'update'``
  (HTTP 500 from ``/infer``). :class:`SafeSpacingd` hides the non-dict ``<key>_*`` entries from ``Spacingd`` and
  puts them back afterwards.
- A header with an absurd spacing (44000 mm) or a huge scan resampled to a fine ``pixdim`` makes ``Spacingd``
  allocate billions of voxels (minutes of swapping, then an out-of-memory kill). :class:`SafeSpacingd` computes the
  output shape first (:func:`spine_monai.transforms.geometry.resampled_shape`, MONAI's own rules) and refuses more
  than ``max_voxels`` with one line naming the file, the shapes and the spacings.

Everything else, including inversion by ``Invertd``, is ``Spacingd``'s own behaviour.

Choice: ``max_voxels`` defaults to ``2**28`` (268 million voxels, 1 GiB per float32 channel): a 512 x 512 x 200 CT
at 1 mm (52 million) or a 960 x 960 x 15 MRI at the bundle's 4 x 1 x 1 mm pass with a wide margin; a 44000 mm
slice spacing does not. The memory a whole ``segment`` run needs is a separate check
(:mod:`spine_monai.transforms.memory`): a 2000 x 2000 x 40 scan resamples to a modest size but is itself large.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.transforms import Spacingd

from spine_monai.errors import InputError
from spine_monai.transforms.geometry import check_affine, format_shape, resampled_shape, voxel_spacing
from spine_monai.transforms.validate import source_name

__all__ = ["SafeSpacingd", "MAX_RESAMPLED_VOXELS"]

#: default limit of :class:`SafeSpacingd` on the voxels of a resampled volume (see the module docstring).
MAX_RESAMPLED_VOXELS: int = 2**28


class SafeSpacingd(Spacingd):
    """``Spacingd`` that ignores non-dict ``<key>_*`` entries and refuses absurd output sizes (module docstring).

    Args:
        keys, pixdim, ...: as ``monai.transforms.Spacingd`` (passed through as keyword arguments).
        max_voxels: largest allowed number of voxels per channel of a resampled volume; ``None``: no limit.

    Raises:
        InputError: (at call time) when a resampled volume would exceed ``max_voxels``, or the affine is unusable.
    """

    def __init__(self, *args: Any, max_voxels: int | None = MAX_RESAMPLED_VOXELS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_voxels is not None and int(max_voxels) < 1:
            raise ValueError(f"max_voxels={max_voxels!r} must be a positive number of voxels or None.")
        self.max_voxels = None if max_voxels is None else int(max_voxels)

    def check_size(self, data: Mapping[Hashable, Any]) -> None:
        """Refuse a resampling whose output would exceed ``max_voxels`` (nothing is allocated)."""
        if self.max_voxels is None:
            return
        for key, scale_extent in self.key_iterator(dict(data), self.scale_extent):
            img = data[key]
            if not isinstance(img, MetaTensor):
                continue
            name = source_name(img, fallback=str(key))
            shape = tuple(int(s) for s in img.peek_pending_shape())
            affine = np.asarray(img.peek_pending_affine(), dtype=np.float64)
            check_affine(affine, name, spacing_range=None)
            out = resampled_shape(shape, affine, self.spacing_transform.pixdim, self.spacing_transform.diagonal,
                                  bool(scale_extent))
            n = int(np.prod(out, dtype=np.float64))
            if n > self.max_voxels:
                sp = ", ".join(f"{v:.4g}" for v in voxel_spacing(affine))
                px = ", ".join(f"{v:g}" for v in self.spacing_transform.pixdim)
                raise InputError(
                    f"{name}: resampling {format_shape(shape)} voxels of ({sp}) mm to pixdim ({px}) mm would give "
                    f"{format_shape(out)} = {n:.3g} voxels, more than max_voxels={self.max_voxels}; check the "
                    "voxel spacing in the header, or crop the scan."
                )

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        self.check_size(d)
        hidden: dict[Hashable, Any] = {}
        for key in self.keys:
            for other in list(d.keys()):
                if isinstance(other, str) and other.startswith(f"{key}_") and not isinstance(d[other], dict):
                    hidden[other] = d.pop(other)
        out = super().__call__(d, lazy=lazy)
        out.update(hidden)
        return out
