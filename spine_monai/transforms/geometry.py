"""Voxel-geometry checks: a usable affine, a plausible spacing, and the shape a resampling would produce.

Not tied to a paper. A NaN/Inf or singular (rank-deficient) voxel-to-world affine makes ``Orientationd`` fail with
``Unable to find out axis`` or ``Spacingd`` produce garbage; an absurd spacing (a header saying 44000 mm) makes
``Spacingd`` allocate a volume of billions of voxels. These functions refuse such inputs with one line naming the
file, and compute the output shape of ``Spacingd`` BEFORE it allocates anything.

Choices: a 3x3 part is singular when its smallest singular value is below ``1e-6`` times the largest (or below
``1e-6`` mm); the plausible spacing range is ``1e-3 .. 1e3`` mm per axis (a micrometre to a metre: wider than any
CT/MRI, narrow enough to catch unit and header errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spine_monai.errors import InputError

__all__ = ["SPACING_RANGE_MM", "voxel_spacing", "check_affine", "resampled_shape", "format_shape"]

#: plausible voxel spacing (mm), see the module docstring.
SPACING_RANGE_MM: tuple[float, float] = (1e-3, 1e3)


def _as_affine(affine: Any) -> np.ndarray:
    if hasattr(affine, "detach"):
        affine = affine.detach().cpu().numpy()
    return np.asarray(affine, dtype=np.float64)


def format_shape(shape: Sequence[int]) -> str:
    """``(2000, 2000, 40)`` -> ``"2000 x 2000 x 40"``."""
    return " x ".join(str(int(s)) for s in shape)


def voxel_spacing(affine: Any) -> np.ndarray:
    """Voxel spacing (mm) per array axis: the norms of the columns of the affine's linear part."""
    a = _as_affine(affine)
    r = a.shape[0] - 1
    return np.linalg.norm(a[:r, :r], axis=0)


def check_affine(affine: Any, name: str, spacing_range: tuple[float, float] | None = SPACING_RANGE_MM,
                 rcond: float = 1e-6) -> None:
    """Refuse a non-finite, singular or rank-deficient affine and an implausible voxel spacing.

    Args:
        affine: ``(4, 4)`` (or ``(r+1, r+1)``) voxel-to-world matrix in mm.
        name: the file, for the message.
        spacing_range: allowed ``(min, max)`` spacing in mm per axis; ``None`` skips that check.
        rcond: relative threshold on the singular values of the linear part.

    Raises:
        InputError: naming ``name``, the problem and the offending numbers.
    """
    a = _as_affine(affine)
    if not np.isfinite(a).all():
        where = ", ".join(f"[{i}, {j}]" for i, j in np.argwhere(~np.isfinite(a))[:4])
        raise InputError(f"{name}: the voxel-to-world affine has NaN/Inf entries (at {where}); fix the header.")
    r = a.shape[0] - 1
    sv = np.linalg.svd(a[:r, :r], compute_uv=False)
    if sv.min() <= rcond * max(sv.max(), 1.0) or sv.min() < 1e-6:
        rank = int((sv > rcond * max(sv.max(), 1.0)).sum())
        raise InputError(
            f"{name}: singular voxel-to-world affine (rank {rank} of {r}, singular values "
            f"{', '.join(f'{v:.3g}' for v in sv)}); the header geometry is broken."
        )
    if spacing_range is not None:
        sp = voxel_spacing(a)
        lo, hi = spacing_range
        if (sp < lo).any() or (sp > hi).any():
            raise InputError(
                f"{name}: implausible voxel spacing ({', '.join(f'{v:.6g}' for v in sp)}) mm, outside "
                f"{lo:g}..{hi:g} mm; check the header's units and pixdim."
            )


def resampled_shape(spatial_shape: Sequence[int], affine: Any, pixdim: float | Sequence[float],
                    diagonal: bool = False, scale_extent: bool = False) -> tuple[int, ...]:
    """The spatial shape ``monai.transforms.Spacing(pixdim)`` gives, computed without resampling.

    Same rules as MONAI 1.6.1: a ``pixdim`` shorter than the spatial dims is padded with its last value, values
    ``<= 0`` keep the input spacing, the output affine is ``zoom_affine`` and the shape ``compute_shape_offset``.

    Args:
        spatial_shape: input spatial shape ``(X, Y, Z)``.
        affine: input voxel-to-world matrix.
        pixdim: target spacing (mm).
        diagonal, scale_extent: as in ``Spacing``.

    Returns:
        The output spatial shape.
    """
    from monai.data.utils import compute_shape_offset, to_affine_nd, zoom_affine

    sr = len(spatial_shape)
    a = to_affine_nd(sr, _as_affine(affine))
    out_d = np.atleast_1d(np.asarray(pixdim, dtype=np.float64))[:sr].copy()
    if out_d.size < sr:
        out_d = np.append(out_d, [out_d[-1]] * (sr - out_d.size))
    new_affine = zoom_affine(a, out_d, diagonal=diagonal)
    shape, _ = compute_shape_offset(list(spatial_shape), a, new_affine, scale_extent)
    return tuple(int(s) for s in shape)
