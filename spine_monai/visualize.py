"""Overlay PNGs: one sagittal slice of a volume, alone and with its label map in colour.

:func:`render_overlay` takes numpy or torch volumes (X, Y, Z) in any orientation, reorients them to RAS with the
affine (so x is the sagittal, left-right axis) and draws superior up, anterior left, at the physical aspect ratio.
Used by the demo and ``segment``; also re-exported from :mod:`spine_monai.data.phantoms`. Needs matplotlib (drawn
on an Agg canvas, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_overlay"]


def _as_ras(image: Any, label: Any, affine: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """numpy (X, Y, Z) arrays reoriented to RAS (channel dims of size 1 dropped) and the voxel sizes."""
    import nibabel as nib

    def arr(x: Any) -> np.ndarray:
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        while x.ndim > 3 and x.shape[0] == 1:
            x = x[0]
        return x

    img = arr(image)
    lab = None if label is None else arr(label)
    aff = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=float)
    if img.ndim != 3:
        raise ValueError(f"image must be 3D (X, Y, Z), got shape {img.shape}.")
    if lab is not None and lab.shape != img.shape:
        raise ValueError(f"label shape {lab.shape} differs from image shape {img.shape}.")
    if aff.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {aff.shape}.")
    ornt = nib.orientations.io_orientation(aff)
    if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        aff = aff @ nib.orientations.inv_ornt_aff(ornt, img.shape)
        img = nib.orientations.apply_orientation(img, ornt)
        lab = None if lab is None else nib.orientations.apply_orientation(lab, ornt)
    return img, lab, np.sqrt((aff[:3, :3] ** 2).sum(0))


def _draw_sagittal(ax: Any, img: np.ndarray, lab: np.ndarray | None, zooms: np.ndarray, ix: int,
                   overlay: bool = True, title: str | None = None) -> None:
    """Sagittal slice ``ix`` of a RAS volume: superior up, anterior left, physical aspect ratio."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    sl = img[ix].T[::-1, ::-1]  # rows: superior first; columns: anterior first
    lo, hi = np.percentile(sl, [0.5, 99.5])
    ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, aspect=zooms[2] / zooms[1], interpolation="nearest")
    if overlay and lab is not None:
        lb = lab[ix].T[::-1, ::-1].astype(int)
        tab = colormaps["tab20"](np.arange(20))
        colours = ListedColormap(np.concatenate([tab[0::2], tab[1::2]]))  # vertebrae strong, discs pale
        ax.imshow(np.ma.masked_equal(np.where(lb > 0, (lb - 1) % 20 + 1, 0), 0), cmap=colours, vmin=0.5, vmax=20.5,
                  alpha=0.5, aspect=zooms[2] / zooms[1], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("anterior  <->  posterior")
    if title:
        ax.set_title(title, fontsize=9)


def render_overlay(image: Any, label: Any, affine: Any, out_png: str | Path, title: str | None = None,
                   slice_index: int | str = "middle") -> Path:
    """Write a PNG of one sagittal slice: the image and the image with the label map overlaid in colour.

    Args:
        image: 3D volume (X, Y, Z) (a leading channel of size 1 is dropped), numpy or torch; any orientation, it is
            reoriented to RAS with ``affine`` so that x is the sagittal (left-right) axis.
        label: label map of the same shape, or None for the image alone.
        affine: 4x4 voxel-to-world matrix (gives the aspect ratio and orientation).
        out_png: output file (folder created).
        title: figure title.
        slice_index: an x index, ``"middle"``, or ``"foreground"`` (the slice with the most label > 0 voxels).

    Returns:
        The PNG path.

    Raises:
        ValueError: for non-3D input, mismatched shapes, a bad affine, or a bad ``slice_index``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img, lab, zooms = _as_ras(image, label, affine)
    if slice_index == "middle":
        ix = img.shape[0] // 2
    elif slice_index == "foreground":
        if lab is None:
            raise ValueError("slice_index='foreground' needs a label.")
        ix = int(np.argmax((lab > 0).reshape(lab.shape[0], -1).sum(1)))
    elif isinstance(slice_index, (int, np.integer)) and -img.shape[0] <= slice_index < img.shape[0]:
        ix = int(slice_index) % img.shape[0]
    else:
        raise ValueError(f"slice_index={slice_index!r} must be 'middle', 'foreground' or an index < {img.shape[0]}.")
    panels = 1 if lab is None else 2
    fig = Figure(figsize=(4.5 * panels, 5.0))
    FigureCanvasAgg(fig)
    for k in range(panels):
        _draw_sagittal(fig.add_subplot(1, panels, k + 1), img, lab, zooms, ix, overlay=k == 1,
                       title=f"x slice {ix}" + (" + labels" if k else ""))
    if title:
        fig.suptitle(title)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out), dpi=100, bbox_inches="tight")
    return out
