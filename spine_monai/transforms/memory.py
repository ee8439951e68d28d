"""Estimate the peak memory of segmenting a scan, and refuse before running when it will not fit.

Not tied to a paper. ``segment`` (and ``python -m monai.bundle run`` with ``inference.json``) holds several
input-sized arrays at once (the scan read for checking, the loaded float32 copy, the sigmoid output inverted back to
the input grid with its resampling grid, the uint8 label, the writer's copy), so a 2000 x 2000 x 40 scan (160 million
voxels) needs about 11 GiB and, on a machine without that, is killed after minutes of swapping. The estimate is made
right after the scan is loaded (shape and affine; the loaded copy is 4 bytes per voxel), before the run's large
allocations, and the run is refused with one line naming the size.

Model (peak resident memory of the process, fitted on CPU runs of the SAU-Net bundle with its default settings,
``features=[16, 32, 64, 128, 256]``, ``roi_size=[-1, 256, 256]``, ``pixdim=[4, 1, 1]``, random weights)::

    peak = BASE + max(PER_INPUT_VOXEL * n_input,
                      NET_PER_INPUT_VOXEL * n_input + PER_RESAMPLED_VOXEL * n_resampled
                      + PER_WINDOW_VOXEL * (features[0] / 16) * n_window)

``n_input`` are the scan's voxels, ``n_resampled`` those after ``Spacingd(pixdim)``, ``n_window`` those of one
sliding window (``roi_size`` clipped to the resampled shape; ``-1`` takes the whole axis). The first term is the
input-grid stage (post-processing back on the input grid and writing), the second the network stage.

Measurement: ``/usr/bin/time -f %M python -m spine_monai segment saunet_spine_mri_segmentation -i vol.nii.gz -o
seg.nii.gz --weights model.pt --device cpu`` on ten random float32 volumes from 8 x 64 x 64 to 15 x 1104 x 1104
(spacings 4.4 x 0.27 to 4.4 x 8 mm, so that the input, resampled and window sizes vary independently). The
input-grid stage grows by 65 bytes per input voxel (15 x 736 x 736 -> 15 x 1104 x 1104 at the same resampled size:
+626 MiB for +10.2 million voxels); the interpreter with torch, MONAI, ITK and the network takes about 1.3 GiB.
Every measured peak was 0-43 % (median 10 %) below the estimate: the estimate errs on the large side. On CUDA the
network stage lives mostly on the GPU; the estimate of host memory is then pessimistic.

Limit: ``max_memory_gb`` (argument, or the ``SPINE_MONAI_MAX_MEMORY_GB`` environment variable) caps the estimated
peak; without it the memory still needed beyond what the process already holds must fit into the memory available
now (``psutil.virtual_memory().available``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from spine_monai.errors import InputError
from spine_monai.transforms.geometry import format_shape, resampled_shape, voxel_spacing
from spine_monai.transforms.validate import source_name

__all__ = ["estimate_segment_bytes", "check_segment_memory", "check_bundle_memory", "CheckMemoryd",
           "MEMORY_ENV", "GIB"]

logger = logging.getLogger(__name__)

GIB = 1024**3
#: environment variable with a memory limit in GiB (same meaning as ``max_memory_gb``).
MEMORY_ENV = "SPINE_MONAI_MAX_MEMORY_GB"

#: interpreter, torch, MONAI, ITK, the network and its weights (bytes); see the module docstring.
BASE = 1_350 * 1024**2
#: input-grid stage, bytes per input voxel.
PER_INPUT_VOXEL = 65
#: network stage: input-sized arrays still alive, per input voxel.
NET_PER_INPUT_VOXEL = 16
#: network stage: the resampled image, the sliding-window output and count maps, per resampled voxel.
PER_RESAMPLED_VOXEL = 46
#: network stage: activations of one window, per window voxel at ``features[0] = 16``.
PER_WINDOW_VOXEL = 126


def _ras_order(affine: np.ndarray) -> list[int]:
    """For each RAS axis, the input axis that ``Orientationd(axcodes="RAS")`` puts there."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    order = [0, 1, 2]
    for in_axis, (out_axis, _) in enumerate(ornt[:3]):
        order[int(out_axis)] = in_axis
    return order


def estimate_segment_bytes(spatial_shape: Sequence[int], spacing: Sequence[float] | None = None,
                           pixdim: float | Sequence[float] = (4.0, 1.0, 1.0),
                           roi_size: Sequence[int] = (-1, 256, 256), features: Sequence[int] | int = 16,
                           affine: Any = None) -> dict[str, Any]:
    """Estimated peak memory of segmenting a scan (see the module docstring for the model).

    Args:
        spatial_shape: the scan's ``(X, Y, Z)``.
        spacing: voxel spacing (mm) per axis, for a scan already in RAS order; ignored when ``affine`` is given.
        pixdim: the bundle's target spacing.
        roi_size: the bundle's sliding-window size (in RAS order, ``-1`` = whole axis).
        features: the network's feature widths (the first one scales the activations) or that first width.
        affine: the scan's voxel-to-world matrix: the axes are reordered to RAS as ``Orientationd`` does.

    Returns:
        ``{"bytes", "input_shape", "resampled_shape", "window_shape"}``.
    """
    shape = [int(s) for s in spatial_shape]
    if affine is not None:
        a = np.asarray(affine.detach().cpu().numpy() if hasattr(affine, "detach") else affine, dtype=np.float64)
        order = _ras_order(a)
        sp = voxel_spacing(a)
        shape = [shape[i] for i in order]
        spacing = [float(sp[i]) for i in order]
    elif spacing is None:
        spacing = [1.0] * len(shape)
    res = resampled_shape(shape, np.diag([*[float(s) for s in spacing], 1.0]), pixdim)
    roi = [int(r) for r in roi_size] + [-1] * (len(res) - len(roi_size))
    win = [n if r <= 0 else min(r, n) for r, n in zip(roi, res, strict=False)]
    width = int(features if isinstance(features, (int, np.integer)) else list(features)[0])
    n_in = float(np.prod(shape, dtype=np.float64))
    n_res = float(np.prod(res, dtype=np.float64))
    n_win = float(np.prod(win, dtype=np.float64))
    net = NET_PER_INPUT_VOXEL * n_in + PER_RESAMPLED_VOXEL * n_res + PER_WINDOW_VOXEL * (width / 16) * n_win
    total = BASE + max(PER_INPUT_VOXEL * n_in, net)
    return {"bytes": int(total), "input_shape": tuple(int(s) for s in spatial_shape), "resampled_shape": res,
            "window_shape": tuple(win)}


def _limit_bytes(max_memory_gb: float | None) -> float | None:
    if max_memory_gb is None and os.environ.get(MEMORY_ENV):
        try:
            max_memory_gb = float(os.environ[MEMORY_ENV])
        except ValueError:
            raise ValueError(f"{MEMORY_ENV}={os.environ[MEMORY_ENV]!r}: not a number of GiB.") from None
    if max_memory_gb is None:
        return None
    if float(max_memory_gb) <= 0:
        raise ValueError(f"max_memory_gb={max_memory_gb!r} must be positive.")
    return float(max_memory_gb) * GIB


def check_segment_memory(image: Any, name: str, pixdim: float | Sequence[float] = (4.0, 1.0, 1.0),
                         roi_size: Sequence[int] = (-1, 256, 256), features: Sequence[int] | int = 16,
                         max_memory_gb: float | None = None) -> int:
    """Refuse a scan whose segmentation would need more memory than allowed or available.

    Args:
        image: the loaded scan, ``(C, X, Y, Z)`` (a ``MetaTensor`` gives the affine; else 1 mm spacing, RAS).
        name: the file, for the message.
        pixdim, roi_size, features: the bundle's settings.
        max_memory_gb: cap on the estimated peak (default: ``$SPINE_MONAI_MAX_MEMORY_GB``, else the memory
            available now plus what this process already holds).

    Returns:
        The estimated peak in bytes.

    Raises:
        InputError: naming the file, its shape and the estimated and allowed GiB.
    """
    import psutil

    affine = image.affine if isinstance(image, MetaTensor) else None
    est = estimate_segment_bytes(tuple(image.shape[1:]), pixdim=pixdim, roi_size=roi_size, features=features,
                                 affine=affine)
    need = est["bytes"]
    limit = _limit_bytes(max_memory_gb)
    if limit is not None:
        allowed, what = limit, f"the limit of {limit / GIB:.1f} GiB ({MEMORY_ENV} / max_memory_gb)"
    else:
        held = psutil.Process().memory_info().rss
        allowed = psutil.virtual_memory().available + held
        what = f"the {allowed / GIB:.1f} GiB this machine has available"
    logger.debug("%s: estimated peak memory %.2f GiB for %s", name, need / GIB, est)
    if need > allowed:
        raise InputError(
            f"{name}: segmenting this {format_shape(est['input_shape'])} scan (resampled to "
            f"{format_shape(est['resampled_shape'])}) needs about {need / GIB:.1f} GiB of memory, more than {what}; "
            "crop or downsample the scan, or use a machine with more memory."
        )
    return need


def check_bundle_memory(image: Any, name: str, bundle_root: str | os.PathLike,
                        overrides: Mapping[str, Any] | None = None, max_memory_gb: float | None = None) -> int:
    """:func:`check_segment_memory` with ``pixdim``, ``roi_size``, ``features`` from a bundle's inference config.

    The values are read from ``configs/inference.json`` (with ``overrides`` applied); where one cannot be read
    (an expression that needs the weights, say) the bundle default of the module docstring is used.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(str(bundle_root), "configs", "inference.json"))
    parser["bundle_root"] = str(bundle_root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    settings: dict[str, Any] = {"pixdim": (4.0, 1.0, 1.0), "roi_size": (-1, 256, 256), "features": 16}
    for key in settings:
        try:
            settings[key] = parser.get_parsed_content(key)
        except Exception:  # noqa: BLE001 - a value that needs more than the config (e.g. the weights): default
            logger.debug("%s: cannot read %s from the inference config; using %s", name, key, settings[key])
    return check_segment_memory(image, name, max_memory_gb=max_memory_gb, **settings)


class CheckMemoryd(MapTransform):
    """Run :func:`check_segment_memory` on a loaded image; place it after ``LoadImaged``, before ``Spacingd``.

    Args:
        keys: the image key.
        pixdim, roi_size, features: the bundle's settings (``@pixdim``, ``@roi_size``, ``@features``).
        max_memory_gb: cap on the estimated peak (default: ``$SPINE_MONAI_MAX_MEMORY_GB``, else available memory).
        allow_missing_keys: skip absent keys.

    Raises:
        InputError: when the estimated peak exceeds the limit.
    """

    def __init__(self, keys: KeysCollection = "image", pixdim: float | Sequence[float] = (4.0, 1.0, 1.0),
                 roi_size: Sequence[int] = (-1, 256, 256), features: Sequence[int] | int = 16,
                 max_memory_gb: float | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.pixdim = pixdim
        self.roi_size = tuple(int(r) for r in roi_size)
        self.features = features
        self.max_memory_gb = max_memory_gb
        _limit_bytes(max_memory_gb)  # bad values fail at construction

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            check_segment_memory(img, source_name(img, fallback=str(key)), self.pixdim, self.roi_size, self.features,
                                 self.max_memory_gb)
        return d
