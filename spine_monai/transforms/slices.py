"""Sagittal slices for the 2D networks of the spine-MRI review: one view of 3D volumes and 2D images, and the
review's TorchIO augmentation.

Zhou et al., "Review of Deep Learning Models for Spine Segmentation", ICMR 2022, Section 4.1: "we slice all of the
NIFTI inputs from 3D form to 2D form in the depth dimension ... all MR images are resampled to 880x880"; "We use
TorchIO to ... make the following augmentation transforms: random noise, random blur, random motion, and ghost".

Axes. A 3D volume is oriented to RAS, so axis 0 (left-right) indexes the sagittal slices and each slice is
``(A, S)``: anterior-posterior increasing towards anterior, inferior-superior increasing towards superior; each slice is
then resized to ``size x size`` (the slice count is kept). A 2D image (PNG or 2D NIfTI; MONAI reads both as
``(X, Y)`` = image columns, image rows) is taken as a sagittal picture in the usual display: anterior on the left,
superior at the top. Both axes are flipped so that it matches a RAS slice, and it is resized to ``size x size``. Every
step is invertible (``Invertd`` brings a prediction back to the input's grid and orientation).

Documented behaviour for edge cases:

- a 3D volume with one sagittal slice (left-right extent 1 after RAS orientation) is segmented as one slice;
- a 3D volume with one axial or coronal slice is refused: the networks were trained on sagittal slices;
- an RGB(A) 2D image is converted to grey (``spine_monai.transforms.image2d.to_grey``, logged); a colour 3D volume
  (more than one channel) is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    Flipd,
    InvertibleTransform,
    MapTransform,
    Orientationd,
    RandomizableTransform,
    Resized,
)
from monai.transforms.utils import allow_missing_keys_mode

from spine_monai.errors import InputError
from spine_monai.transforms.image2d import _squeeze_2d, check_image_2d, to_grey
from spine_monai.transforms.validate import check_volume_array, source_name

__all__ = ["SagittalSlicesd", "RandTorchIOSliced", "TORCHIO_TRANSFORMS"]

logger = logging.getLogger(__name__)

#: the four TorchIO augmentations of the review (Section 4.1), by name.
TORCHIO_TRANSFORMS = ("noise", "blur", "motion", "ghosting")


class SagittalSlicesd(MapTransform, InvertibleTransform):
    """Check an image, bring it into the RAS sagittal view and resize every slice to ``size x size`` (module doc).

    Args:
        keys: image (and label) keys; the first key is the image that is checked.
        size: in-plane size of every slice after resizing (the review: 880).
        mode: interpolation per key (``"bilinear"`` for images, ``"nearest"`` for labels).
        min_size: smallest in-plane extent of an input (pixels).
        allow_missing_keys: skip absent keys.

    Raises:
        InputError: naming the file: a 3D volume with one axial/coronal slice, more than one channel in a volume,
            too small, empty, constant or non-finite images, absurd sizes.
    """

    def __init__(self, keys: KeysCollection, size: int, mode: str | Sequence[str] = "bilinear", min_size: int = 16,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(size) < 1:
            raise ValueError(f"size must be positive, got {size}.")
        self.size = int(size)
        self.min_size = int(min_size)
        keys = list(self.keys)
        modes = [mode] * len(keys) if isinstance(mode, str) else list(mode)
        if len(modes) != len(keys):
            raise ValueError(f"mode needs one entry per key ({len(keys)}), got {modes}.")
        self.modes = modes
        self._3d = Compose([Orientationd(keys, axcodes="RAS", allow_missing_keys=allow_missing_keys),
                            Resized(keys, spatial_size=[-1, self.size, self.size], mode=modes,
                                    allow_missing_keys=allow_missing_keys)])
        self._2d = Compose([Flipd(keys, spatial_axis=[0, 1], allow_missing_keys=allow_missing_keys),
                            Resized(keys, spatial_size=[self.size, self.size], mode=modes,
                                    allow_missing_keys=allow_missing_keys)])

    def _check(self, d: dict[Hashable, Any]) -> bool:
        """Check the image (first key) and make 2D images grey; True for a 3D volume."""
        key = self.first_key(d)
        img = d[key]
        name = source_name(img, fallback=str(d.get(f"{key}_path", key)))
        if img.dim() == 3:  # (C, X, Y): a 2D image
            img = to_grey(img, name)
            check_image_2d(img, name, min_size=self.min_size, aspect_range=None)
            d[key] = img
            return False
        check_volume_array(img, name, channels=1)
        return True

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        is_3d = self._check(d)
        if not is_3d:
            for key in self.key_iterator(d):
                if key != self.first_key(d):
                    d[key] = _squeeze_2d(d[key], source_name(d[key], fallback=str(key)))
            return self._2d(d)
        orient, resize = self._3d.transforms
        d = orient(d)
        key = self.first_key(d)
        shape = tuple(int(s) for s in d[key].shape[1:])
        if shape[0] > 1 and min(shape[1:]) == 1:
            name = source_name(d[key], fallback=str(key))
            view = "axial" if shape[2] == 1 else "coronal"
            raise InputError(f"{name}: a single {view} slice (shape {shape} in RAS order); the review's networks "
                             "segment sagittal slices: give the sagittal volume or one sagittal slice.")
        return resize(d)

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = next(iter(k for k in self.keys if k in d))
        inner = self._3d if d[key].dim() == 4 else self._2d
        with allow_missing_keys_mode(inner):  # Invertd hands over the inverted key alone (no label)
            return inner.inverse(d)


class RandTorchIOSliced(RandomizableTransform, MapTransform):
    """The review's augmentation on 2D slices ``(C, H, W)``: TorchIO's ``RandomNoise``, ``RandomBlur``,
    ``RandomMotion`` and ``RandomGhosting``, each applied with probability ``prob`` (TorchIO's default parameters:
    the review states neither parameters nor probabilities).

    TorchIO takes a 2D image as a volume of shape ``(C, W, H, 1)``, which is how the slice is handed to it. The four
    transforms change intensities only, so labels are not touched; only ``keys`` (images) are transformed.

    Args:
        keys: image keys.
        prob: probability of each of the four transforms.
        transforms: which of :data:`TORCHIO_TRANSFORMS` to use (all four by default).
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, transforms: Sequence[str] = TORCHIO_TRANSFORMS,
                 allow_missing_keys: bool = False) -> None:
        import torchio as tio

        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys, allow_missing_keys)
        unknown = sorted(set(transforms) - set(TORCHIO_TRANSFORMS))
        if unknown:
            raise ValueError(f"unknown TorchIO transform(s) {unknown}; choose from {TORCHIO_TRANSFORMS}.")
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}.")
        build = {"noise": tio.RandomNoise, "blur": tio.RandomBlur, "motion": tio.RandomMotion,
                 "ghosting": tio.RandomGhosting}
        self.transform = tio.Compose([build[name](p=float(prob)) for name in transforms])
        self._tio = tio

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.dim() != 3:
                raise ValueError(f"RandTorchIOSliced expects 2D slices (C, H, W), got shape {tuple(img.shape)}.")
            t = torch.as_tensor(img).detach().float().unsqueeze(-1)
            out = self.transform(self._tio.ScalarImage(tensor=t)).data[..., 0].to(torch.float32)
            if hasattr(img, "copy_meta_from"):
                img = img.clone()
                img.data = out
                d[key] = img
            else:
                d[key] = out
        return d
