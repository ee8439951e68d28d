"""Input checks with errors that name the file and the problem.

Bad input (a 2D or 4D image where a volume is expected, an empty or constant image, NaN/Inf values, a complex-valued
image, a NaN/Inf, singular or rank-deficient affine, an implausible voxel spacing, a label whose shape or geometry
differs from its image) must stop a run with one clear message instead of a shape error deep inside a network, or a
silently wrong result.

Choice: complex-valued images are refused, not converted: which real image is meant (magnitude, real part, phase)
is the user's decision, and a silent magnitude would hide a wrong export. Note that MONAI's readers cast complex
NIfTI data to float32, dropping the imaginary part, so a file is checked before loading too
(:func:`spine_monai.transforms.files.check_image_file`); this module sees complex in-memory arrays.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from spine_monai.errors import InputError
from spine_monai.transforms.geometry import SPACING_RANGE_MM, check_affine

__all__ = ["ValidateImaged", "ValidateHUd", "InputError", "source_name", "check_volume_array"]


def source_name(data: Any, fallback: str = "<in-memory image>") -> str:
    """The file a (Meta)Tensor was loaded from, for error messages."""
    if isinstance(data, MetaTensor):
        name = data.meta.get("filename_or_obj")
        if name:
            return str(name)
    return fallback


def check_volume_array(img: Any, name: str, channels: int | None = 1, min_size: int = 1,
                       max_voxels: int = 2_000_000_000,
                       spacing_range: tuple[float, float] | None = SPACING_RANGE_MM) -> None:
    """Check a channel-first image ``(C, X, Y, Z)`` and, for a ``MetaTensor``, its affine.

    Args:
        img: the channel-first array or tensor.
        name: file name used in the messages.
        channels: required number of channels (``None``: any).
        min_size: smallest allowed extent of each spatial axis.
        max_voxels: largest allowed number of voxels (absurd sizes are refused before any processing).
        spacing_range: plausible voxel spacing (mm), see :func:`spine_monai.transforms.geometry.check_affine`;
            ``None`` skips the spacing check (the affine is still checked for NaN/Inf and singularity).

    Raises:
        InputError: naming ``name`` and the problem.
    """
    shape = tuple(int(s) for s in img.shape)
    spatial = shape[1:]
    if len(spatial) == 2:
        raise InputError(f"{name}: expected a 3D volume, got a 2D image of shape {spatial}.")
    if len(spatial) != 3:
        raise InputError(f"{name}: expected a 3D volume, got an array of shape {shape} (channel first).")
    if channels is not None and shape[0] != channels:
        raise InputError(
            f"{name}: expected a single 3D volume with {channels} channel(s), got {shape[0]} "
            f"(a 4D image, e.g. a time series or multi-echo file? pick one volume first). Shape {shape}."
        )
    if min(spatial) == 1 and min_size > 1 and max(spatial) > 1:
        raise InputError(f"{name}: a single slice (spatial shape {spatial}); this model needs a volume with at least "
                         f"{min_size} voxels along each axis.")
    if min(spatial) < min_size:
        raise InputError(f"{name}: empty or too small image, spatial shape {spatial} (each axis needs >= {min_size}).")
    if int(np.prod(spatial)) * shape[0] > max_voxels:
        raise InputError(f"{name}: absurd image size {spatial} ({int(np.prod(spatial))} voxels > {max_voxels}).")
    if isinstance(img, MetaTensor):
        check_affine(img.affine, name, spacing_range)
    t = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
    if t.is_complex():
        raise InputError(
            f"{name}: complex-valued image ({str(t.dtype).replace('torch.', '')}); give a real image, e.g. the "
            "magnitude (numpy.abs) of the reconstruction."
        )
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise InputError(f"{name}: image contains {bad} NaN/Inf value(s); fix or mask them before segmenting.")
    tf = t.float()
    if float(tf.max()) == float(tf.min()):
        raise InputError(f"{name}: image is constant (every voxel = {float(tf.min())}); nothing to segment.")


class ValidateImaged(MapTransform):
    """Refuse bad images and image/label pairs, naming the file and the problem.

    Args:
        keys: the image key(s) to check (``(C, X, Y, Z)`` channel-first tensors, typically ``"image"``).
        label_key: if given and present, the label must have one channel, the image's spatial shape and affine.
        channels: required image channels.
        atol: tolerance on the affine comparison (mm).
        min_size: smallest extent of each spatial axis (default 1; a volume with one slice is refused as "a single
            slice" when ``min_size > 1``).
        allow_missing_keys: skip absent keys.

    Raises:
        InputError: (a ``ValueError``) on a 2D/4D image, a single slice (with ``min_size > 1``), an empty, constant,
            non-finite or complex image, a NaN/Inf or singular affine, an implausible spacing, or a label whose shape
            or affine differs from its image.
    """

    def __init__(self, keys: KeysCollection = "image", label_key: str | None = None, channels: int | None = 1,
                 atol: float = 1e-3, min_size: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_size = int(min_size)
        self.label_key = label_key
        self.channels = channels
        self.atol = atol

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            name = source_name(img, fallback=str(d.get(f"{key}_path", key)))
            check_volume_array(img, name, self.channels, min_size=self.min_size)
            if self.label_key is not None and self.label_key in d:
                self._check_label(img, d[self.label_key], name)
        return d

    def _check_label(self, img: Any, label: Any, img_name: str) -> None:
        lab_name = source_name(label, fallback=str(self.label_key))
        if label.shape[0] != 1:
            raise InputError(f"{lab_name}: a label map needs one channel, got shape {tuple(label.shape)}.")
        if tuple(label.shape[1:]) != tuple(img.shape[1:]):
            raise InputError(
                f"{lab_name}: label shape {tuple(label.shape[1:])} differs from image {img_name} shape "
                f"{tuple(img.shape[1:])}."
            )
        if isinstance(img, MetaTensor) and isinstance(label, MetaTensor):
            a_img = np.asarray(img.affine, dtype=float)
            a_lab = np.asarray(label.affine, dtype=float)
            if not np.allclose(a_img, a_lab, atol=self.atol):
                raise InputError(
                    f"{lab_name}: label geometry (affine) differs from image {img_name}:\n"
                    f"label affine\n{np.array2string(a_lab, precision=3)}\nimage affine\n"
                    f"{np.array2string(a_img, precision=3)}"
                )
        if isinstance(label, torch.Tensor) and label.is_floating_point() and not bool(torch.isfinite(label).all()):
            raise InputError(f"{lab_name}: label contains NaN/Inf values.")


class ValidateHUd(MapTransform):
    """Refuse an image that is not a CT in Hounsfield units, naming the file and what was found.

    A CT in HU holds fat (about -100 HU) or air (-1000 HU) somewhere in a body scan, and bone above a few hundred HU;
    an MRI (non-negative magnitudes), a CT already rescaled (to [0, 1] or 0..255) or a CT stored without its rescale
    intercept (raw 0..4095 values) holds no value below ``min_below``. The check uses percentiles, so a few outlier
    voxels do not decide it.

    Args:
        keys: the image key(s).
        min_below: the ``low_percentile`` of the image must lie below this (HU); default -100 (fat).
        max_above: the ``high_percentile`` must lie above this (HU); default 150 (cancellous bone, contrast).
        low_percentile, high_percentile: the percentiles compared (on a subsample of at most 2**20 voxels).
        allow_missing_keys: skip absent keys.

    Raises:
        InputError: one line naming the file, the percentile found and the likely cause.
    """

    def __init__(self, keys: KeysCollection = "image", min_below: float = -100.0, max_above: float = 150.0,
                 low_percentile: float = 1.0, high_percentile: float = 99.9, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_below, self.max_above = float(min_below), float(max_above)
        self.low_percentile, self.high_percentile = float(low_percentile), float(high_percentile)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            name = source_name(img, fallback=str(d.get(f"{key}_path", key)))
            arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
            flat = arr.reshape(-1)
            if flat.size > 2**20:
                flat = flat[:: int(np.ceil(flat.size / 2**20))]
            low, high = (float(v) for v in np.percentile(flat.astype(np.float32), [self.low_percentile,
                                                                                   self.high_percentile]))
            if low >= self.min_below:
                raise InputError(
                    f"{name}: does not look like a CT in Hounsfield units: its {self.low_percentile:g}th percentile "
                    f"is {low:.1f}, but a body CT holds fat (about -100 HU) or air (-1000 HU); an MRI, a CT already "
                    "rescaled, or one stored without its rescale intercept (-1024)?"
                )
            if high <= self.max_above:
                raise InputError(
                    f"{name}: does not look like a CT in Hounsfield units: its {self.high_percentile:g}th percentile "
                    f"is {high:.1f}, but bone is above {self.max_above:.0f} HU; an image rescaled to a small range?"
                )
        return d
