"""2D image handling for the bundles on 2D images (the SEAM ultrasound VPI bundle): checks and conversions of PNG
and 2D NIfTI inputs, the segmentation output of multi-output networks, and writing a label in the input's format.

Zhao et al., "Structure-Enhanced Attentive Learning for Spine Segmentation from Ultrasound Volume Projection Images",
ICASSP 2021, DOI 10.1109/ICASSP39728.2021.9414658, Section 3.1: VPI images are grey-level coronal images; "each
query sample was first rescaled to 1024 x 256 ... the segmentation mask ... resized to the original resolution".

Axes: MONAI reads a PNG as ``(C, W, H)`` (``PILReader`` reverses the indices, as for every MONAI reader), so axis 0
of the spatial shape runs along the image columns (left -> right) and axis 1 along the rows (top -> bottom). A 2D
NIfTI is taken as it is stored, ``(X, Y)`` = (columns, rows) in the same sense, and a ``(X, Y, 1)`` volume is
treated as 2D. The paper's "1024 x 256" (height x width) is therefore ``spatial_size [256, 1024]`` in the configs.

Documented conversions (``PrepareImage2Dd``), each logged once per image at INFO/WARNING:

- RGB / RGBA / grey+alpha images are converted to grey with the ITU-R BT.601 luma weights (0.299, 0.587, 0.114),
  alpha dropped: VPI exports are grey, a colour PNG is almost always a grey image saved as RGB. A WARNING is logged
  when the colour channels differ (a real colour image, e.g. a screenshot with an overlay).
- 16-bit PNGs are accepted: the bundles scale intensities by percentiles, so the bit depth does not matter.

Refused (``InputError`` naming the file): a 3D volume (more than one slice), an image smaller than ``min_size``
pixels on a side, an image whose height / width ratio lies outside ``aspect_range`` (VPI images are tall: the real
Scolioscan VPI is 2574 x 640, ratio 4.0, the paper's network input 1024 x 256; a wide image is usually rotated or
not a VPI), an empty, constant or NaN/Inf image, more than 4 channels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILWriter
from monai.transforms import MapTransform, SaveImage, SaveImaged

from spine_monai.errors import InputError
from spine_monai.transforms.io import AtomicNibabelWriter, atomic_write
from spine_monai.transforms.validate import source_name

__all__ = ["PrepareImage2Dd", "SelectOutputd", "SaveLabeld", "AtomicPILWriter", "check_image_2d", "to_grey",
           "IMAGE_SUFFIXES_2D", "LUMA"]

logger = logging.getLogger(__name__)

#: file endings written back as PNG by :class:`SaveLabeld` (everything else as NIfTI).
IMAGE_SUFFIXES_2D = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: ITU-R BT.601 luma weights for R, G, B.
LUMA = (0.299, 0.587, 0.114)


def to_grey(img: torch.Tensor, name: str) -> torch.Tensor:
    """``(C, X, Y)`` with C in 1..4 -> ``(1, X, Y)``: luma of RGB(A), grey of grey+alpha (alpha dropped).

    Raises:
        InputError: for more than 4 channels.
    """
    c = int(img.shape[0])
    if c == 1:
        return img
    if c > 4:
        raise InputError(f"{name}: {c} channels; expected a grey image (1 channel) or RGB(A).")
    if c == 2:  # grey + alpha
        logger.info("%s: grey + alpha image, alpha channel dropped", name)
        return img[:1]
    rgb = img[:3].float()
    if not (torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])):
        logger.warning("%s: a colour image (the RGB channels differ); converted to grey with the BT.601 luma "
                       "weights. VPI images are grey: check that this is not a screenshot or an overlay.", name)
    else:
        logger.info("%s: RGB image with equal channels, converted to grey", name)
    weights = torch.tensor(LUMA, dtype=torch.float32).reshape(3, *([1] * (img.dim() - 1)))
    grey = (rgb * weights).sum(0, keepdim=True)
    if isinstance(img, MetaTensor):
        out = MetaTensor(grey, meta=img.meta, applied_operations=img.applied_operations)
        return out
    return grey


def check_image_2d(img: Any, name: str, min_size: int = 32, aspect_range: Sequence[float] | None = (1.5, 8.0),
                   max_pixels: int = 200_000_000) -> None:
    """Check a channel-first 2D image ``(C, X, Y)`` (X columns, Y rows).

    Args:
        img: the image.
        name: file name used in the messages.
        min_size: smallest allowed side (pixels).
        aspect_range: allowed height / width (rows / columns); None skips the check.
        max_pixels: largest allowed number of pixels.

    Raises:
        InputError: naming ``name`` and the problem.
    """
    shape = tuple(int(s) for s in img.shape)
    spatial = shape[1:]
    if len(spatial) != 2:
        raise InputError(f"{name}: expected a 2D image, got spatial shape {spatial}; this bundle segments 2D images "
                         "(a VPI PNG or a 2D NIfTI); give one 2D image, not a volume.")
    width, height = spatial
    if min(spatial) < min_size:
        raise InputError(f"{name}: image too small ({height} x {width} pixels, height x width); each side needs "
                         f">= {min_size} pixels.")
    if width * height > max_pixels:
        raise InputError(f"{name}: absurd image size {height} x {width} ({width * height} pixels > {max_pixels}).")
    if aspect_range is not None:
        ratio = height / width
        lo, hi = float(aspect_range[0]), float(aspect_range[1])
        if not lo <= ratio <= hi:
            hint = " (wider than tall: is it rotated by 90 degrees?)" if ratio < 1 else ""
            raise InputError(f"{name}: height / width = {ratio:.2f} ({height} x {width}); a coronal spine VPI is tall "
                             f"and narrow, ratio between {lo} and {hi}{hint}.")
    t = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
    if t.is_complex():
        raise InputError(f"{name}: complex-valued image; give a real (magnitude) image.")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise InputError(f"{name}: image contains {int((~torch.isfinite(t)).sum())} NaN/Inf value(s).")
    if float(t.float().max()) == float(t.float().min()):
        raise InputError(f"{name}: image is constant (every pixel = {float(t.float().min())}); nothing to segment.")


def _squeeze_2d(img: Any, name: str) -> Any:
    """``(C, X, Y, 1)`` -> ``(C, X, Y)`` (a 2D image stored as a one-slice volume); a true volume is refused."""
    if img.dim() == 4:
        if int(img.shape[-1]) != 1:
            raise InputError(f"{name}: a 3D volume of shape {tuple(int(s) for s in img.shape[1:])}; this bundle "
                             "segments 2D images (a VPI PNG or a 2D NIfTI), not volumes.")
        out = img[..., 0]
        if isinstance(img, MetaTensor):
            affine = np.asarray(img.affine, dtype=np.float64)
            aff2 = np.eye(3)
            aff2[:2, :2] = affine[:2, :2]
            aff2[:2, 2] = affine[:2, 3]
            out = MetaTensor(out.as_tensor(), meta=dict(img.meta), applied_operations=img.applied_operations)
            out.affine = torch.as_tensor(aff2)
            out.meta["spatial_shape"] = np.asarray(out.shape[1:])
            out.meta["original_affine"] = torch.as_tensor(aff2)
        return out
    if img.dim() > 4:
        raise InputError(f"{name}: array of shape {tuple(img.shape)} (channel first); expected a 2D image.")
    return img


class PrepareImage2Dd(MapTransform):
    """Make loaded 2D images single-channel and check them (module docstring: conversions and refusals).

    Place it right after ``LoadImaged(ensure_channel_first=True)``. A label (``label_key``) must be one channel
    (a grey PNG) of the image's size.

    Args:
        keys: image key(s).
        label_key: key of the label; checked against the image when present.
        min_size: smallest allowed side in pixels.
        aspect_range: allowed height / width ratio; None skips the check.
        allow_missing_keys: skip absent keys.

    Raises:
        InputError: naming the file and the problem.
    """

    def __init__(self, keys: KeysCollection = "image", label_key: str | None = None, min_size: int = 32,
                 aspect_range: Sequence[float] | None = (1.5, 8.0), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(min_size) < 1:
            raise ValueError(f"min_size must be positive, got {min_size}.")
        if aspect_range is not None and (len(aspect_range) != 2 or not 0 < aspect_range[0] <= aspect_range[1]):
            raise ValueError(f"aspect_range must be (low, high) with 0 < low <= high, got {aspect_range}.")
        self.label_key = label_key
        self.min_size = int(min_size)
        self.aspect_range = None if aspect_range is None else (float(aspect_range[0]), float(aspect_range[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            name = source_name(d[key], fallback=str(d.get(f"{key}_path", key)))
            img = _squeeze_2d(d[key], name)
            img = to_grey(img, name)
            check_image_2d(img, name, self.min_size, self.aspect_range)
            d[key] = img
            if self.label_key is not None and self.label_key in d:
                lab = d[self.label_key]
                lab_name = source_name(lab, fallback=str(self.label_key))
                lab = _squeeze_2d(lab, lab_name)
                if lab.shape[0] != 1:
                    raise InputError(f"{lab_name}: a label map needs one channel (a grey PNG of class values), got "
                                     f"{lab.shape[0]} channels.")
                if tuple(lab.shape[1:]) != tuple(img.shape[1:]):
                    w, h = (int(s) for s in img.shape[1:])
                    lw, lh = (int(s) for s in lab.shape[1:])
                    raise InputError(f"{lab_name}: label size {lh} x {lw} differs from image {name} size {h} x {w} "
                                     "(height x width).")
                d[self.label_key] = lab
        return d


class SelectOutputd(MapTransform):
    """Keep one element of a network output that is a tuple or list (e.g. ``FPNSEAM``'s ``(logits, keys)``).

    The trainer and evaluator store the network output under ``pred``; after decollation a tuple output is a list per
    item. This picks the segmentation so MONAI's metric handlers see one tensor. A plain tensor passes unchanged, so
    the same post-processing serves networks with one output (the baselines).

    Args:
        keys: keys holding the network output (``"pred"``).
        index: element to keep (0: the segmentation logits).
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection = "pred", index: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.index = int(index)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (tuple, list)):
                d[key] = d[key][self.index]
        return d


class AtomicPILWriter(PILWriter):
    """``PILWriter`` whose ``write`` goes to a temporary file and is renamed into place on success."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **kwargs: Any) -> Any:
        return atomic_write(filename, lambda tmp: super(AtomicPILWriter, self).write(tmp, verbose=verbose,
                                                                                     format="PNG", **kwargs))


class SaveLabeld(SaveImaged):
    """``SaveImaged`` writing each label in its input's format: PNG for a PNG/JPEG/BMP/TIFF input, NIfTI otherwise.

    A subclass of ``SaveImaged``, so MONAI Label removes it from the post-processing as it removes ``SaveImaged``.
    Both writers are atomic (temporary file renamed into place). Arguments as ``SaveImaged``; ``output_ext`` and
    ``writer`` apply to the NIfTI branch (default ``.nii.gz``, :class:`AtomicNibabelWriter`); ``channel_dim``
    as ``SaveImage`` (None for a label without channel axis: MONAI Label's writer expects the 2D label as
    ``(X, Y)``, so the 2D inference post-processing squeezes the channel before saving).
    """

    def __init__(self, keys: KeysCollection, output_ext: str = ".nii.gz", writer: Any = AtomicNibabelWriter,
                 channel_dim: int | None = 0, **kwargs: Any) -> None:
        super().__init__(keys, output_ext=output_ext, writer=writer, **kwargs)
        self.saver.data_kwargs["channel_dim"] = channel_dim
        kwargs = dict(kwargs)
        kwargs.pop("meta_keys", None)
        kwargs.pop("meta_key_postfix", None)
        kwargs.pop("allow_missing_keys", None)
        kwargs.pop("output_dtype", None)
        self.png_saver = SaveImage(output_ext=".png", writer=AtomicPILWriter, output_dtype=np.uint8, scale=None,
                                   channel_dim=channel_dim, **{k: v for k, v in kwargs.items() if k != "scale"})

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            if meta_key is None and meta_key_postfix is not None:
                meta_key = f"{key}_{meta_key_postfix}"
            meta = d.get(meta_key) if meta_key is not None else None
            img = d[key]
            src = (img.meta if isinstance(img, MetaTensor) else (meta or {})).get("filename_or_obj", "")
            saver = self.png_saver if str(src).lower().endswith(IMAGE_SUFFIXES_2D) else self.saver
            saver(img=img, meta_data=meta)
        return d
