"""Overlay PNGs: one sagittal slice of a volume, alone, with its label map in colour, and against a ground truth.

:func:`render_overlay` takes numpy or torch volumes (X, Y, Z) in any orientation, reorients them to RAS with the
affine (so x is the sagittal, left-right axis) and draws superior up, anterior left, at the physical aspect ratio.
Given a ground truth (``label_truth``) it adds the truth's outline to the label panel and a third panel that colours
every labelled pixel as agreement or error (TP / FP / FN, with a legend and the slice's Dice), so the quality of a
prediction can be judged by eye. Used by the demo and ``segment``; also re-exported from
:mod:`spine_monai.data.phantoms`. Needs matplotlib (drawn on an Agg canvas, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_overlay", "render_overlay_2d", "ERROR_COLOURS"]

#: RGB of the error panel: agreement, prediction only, truth only, both labelled with different classes.
ERROR_COLOURS: dict[str, tuple[float, float, float]] = {
    "TP": (0.20, 0.80, 0.20),
    "FP": (1.00, 0.15, 0.15),
    "FN": (0.15, 0.55, 1.00),
    "wrong class": (1.00, 0.85, 0.00),
}
TRUTH_LINE = (1.00, 0.85, 0.00)  # outline of the ground truth on the label panel


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
                   overlay: bool = True, title: str | None = None,
                   xlabel: str = "anterior  <->  posterior") -> None:
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
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=9)


def _error_map(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of :data:`ERROR_COLOURS`' kinds for two label maps (0 = background)."""
    p, t = pred > 0, truth > 0
    return {"TP": p & t & (pred == truth), "FP": p & ~t, "FN": t & ~p, "wrong class": p & t & (pred != truth)}


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Foreground Dice (label > 0) of two label maps; 1.0 when both are empty."""
    p, t = pred > 0, truth > 0
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def _draw_truth_outline(ax: Any, truth: np.ndarray, ix: int) -> None:
    """Outline of ``truth > 0`` on sagittal slice ``ix``, in the orientation of :func:`_draw_sagittal`."""
    t = (truth[ix].T[::-1, ::-1] > 0).astype(float)
    if t.any():
        ax.contour(t, levels=[0.5], colors=[TRUTH_LINE], linewidths=0.8)


def _draw_errors(ax: Any, img: np.ndarray, pred: np.ndarray, truth: np.ndarray, zooms: np.ndarray, ix: int,
                 xlabel: str = "anterior  <->  posterior", volume: bool = True) -> None:
    """Sagittal slice ``ix`` with each labelled pixel coloured by :data:`ERROR_COLOURS`, a legend and the Dice."""
    from matplotlib.patches import Patch

    _draw_sagittal(ax, img, None, zooms, ix, overlay=False, xlabel=xlabel)
    masks = _error_map(pred[ix].T[::-1, ::-1], truth[ix].T[::-1, ::-1])
    rgba = np.zeros(masks["TP"].shape + (4,))
    for kind, mask in masks.items():
        rgba[mask] = (*ERROR_COLOURS[kind], 0.6)
    ax.imshow(rgba, aspect=zooms[2] / zooms[1], interpolation="nearest")
    shown = [k for k in ERROR_COLOURS if k != "wrong class" or masks[k].any()]
    names = {"TP": "TP (both)", "FP": "FP (prediction only)", "FN": "FN (truth only)", "wrong class": "wrong class"}
    handles = [Patch(color=ERROR_COLOURS[k], label=f"{names[k]}: {int(masks[k].sum())} px") for k in shown]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02 if not volume else -0.06),
              ncol=2 if volume else 1, fontsize=7, frameon=False)
    if volume:
        ax.set_title(f"errors, slice Dice {_dice(pred[ix], truth[ix]):.3f} (volume {_dice(pred, truth):.3f})",
                     fontsize=9)
    else:
        ax.set_title(f"errors, foreground\nDice {_dice(pred[ix], truth[ix]):.3f}", fontsize=9)


def render_overlay(image: Any, label: Any, affine: Any, out_png: str | Path, title: str | None = None,
                   slice_index: int | str = "middle", label_truth: Any = None) -> Path:
    """Write a PNG of one sagittal slice: the image and the image with the label map overlaid in colour; with a
    ground truth, also its outline on the label panel and a panel of agreement and errors.

    Args:
        image: 3D volume (X, Y, Z) (a leading channel of size 1 is dropped), numpy or torch; any orientation, it is
            reoriented to RAS with ``affine`` so that x is the sagittal (left-right) axis.
        label: label map of the same shape (a prediction, say), or None for the image alone.
        affine: 4x4 voxel-to-world matrix (gives the aspect ratio and orientation).
        out_png: output file (folder created).
        title: figure title.
        slice_index: an x index, ``"middle"``, or ``"foreground"`` (the slice with the most label > 0 voxels; of
            ``label_truth`` when given, so that a poor prediction does not choose the slice).
        label_truth: optional ground-truth label map of the same shape. Adds its outline (yellow) to the label panel
            and a third panel colouring pixels TP (green, both > 0 and equal), FP (red, only ``label`` > 0), FN
            (blue, only the truth > 0) and, for label maps with several classes, "wrong class" (yellow, both > 0
            but different), with pixel counts, the slice's and the volume's foreground Dice.

    Returns:
        The PNG path.

    Raises:
        ValueError: for non-3D input, mismatched shapes, a bad affine, a bad ``slice_index``, or ``label_truth``
            without ``label``.
    """
    img, lab, zooms = _as_ras(image, label, affine)
    truth = None
    if label_truth is not None:
        if lab is None:
            raise ValueError("label_truth needs a label to compare with.")
        truth = _as_ras(image, label_truth, affine)[1]
    if slice_index == "middle":
        ix = img.shape[0] // 2
    elif slice_index == "foreground":
        if lab is None:
            raise ValueError("slice_index='foreground' needs a label.")
        ref = lab if truth is None else truth
        ix = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1)))
    elif isinstance(slice_index, (int, np.integer)) and -img.shape[0] <= slice_index < img.shape[0]:
        ix = int(slice_index) % img.shape[0]
    else:
        raise ValueError(f"slice_index={slice_index!r} must be 'middle', 'foreground' or an index < {img.shape[0]}.")
    return _figure(img, lab, truth, zooms, ix, out_png, title)


def _figure(img: np.ndarray, lab: np.ndarray | None, truth: np.ndarray | None, zooms: np.ndarray, ix: int,
            out_png: str | Path, title: str | None, plane: str | None = None) -> Path:
    """The panels of :func:`render_overlay` for slice ``ix`` of RAS volumes; ``plane`` names a 2D image's view
    (no slice index, no axis words) instead of the sagittal slice of a volume."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    xlabel = "" if plane else "anterior  <->  posterior"
    panels = 1 if lab is None else 2 if truth is None else 3
    if plane:  # a tall 2D image: narrow panels, short titles, legends in one column
        aspect = img.shape[2] * zooms[2] / max(img.shape[1] * zooms[1], 1e-6)
        figsize = (2.6 * panels, float(np.clip(2.3 * aspect, 3.0, 10.0)) + (1.2 if truth is not None else 0.4))
        names = [plane, "prediction (fill)" + (",\ntruth (outline)" if truth is not None else "")]
    else:
        figsize = (4.5 * panels, 5.0 if truth is None else 5.6)
        names = [f"x slice {ix}", f"x slice {ix}" + (" + labels" if truth is None else
                                                       " + prediction (fill), truth (outline)")]
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    for k in range(min(panels, 2)):
        ax = fig.add_subplot(1, panels, k + 1)
        _draw_sagittal(ax, img, lab, zooms, ix, overlay=k == 1, title=names[k], xlabel=xlabel)
        if k == 1 and truth is not None:
            _draw_truth_outline(ax, truth, ix)
            ax.legend(handles=[Line2D([], [], color=TRUTH_LINE, lw=1.2, label="ground truth outline")],
                      loc="upper center", bbox_to_anchor=(0.5, -0.02 if plane else -0.06), fontsize=7,
                      frameon=False)
    if truth is not None:
        _draw_errors(fig.add_subplot(1, panels, 3), img, lab, truth, zooms, ix, xlabel=xlabel, volume=not plane)
    if title:
        fig.suptitle(title)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out), dpi=100, bbox_inches="tight")
    return out


def render_overlay_2d(image: Any, label: Any, out_png: str | Path, title: str | None = None, label_truth: Any = None,
                      plane: str = "coronal VPI") -> Path:
    """The panels of :func:`render_overlay` for a 2D image shown as it is stored (row 0 at the top).

    Args:
        image: 2D array ``(rows, columns)`` (as PIL / matplotlib hold a PNG; MONAI's ``(X, Y)`` is its transpose).
        label: label map of the same shape, or None.
        out_png: output file.
        title: figure title.
        label_truth: optional ground truth of the same shape: adds its outline and the TP / FP / FN panel.
        plane: the view's name in the panel titles.

    Returns:
        The PNG path.

    Raises:
        ValueError: for a non-2D image, mismatched shapes, or ``label_truth`` without ``label``.
    """
    def vol(x: Any) -> np.ndarray | None:
        if x is None:
            return None
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        if a.ndim != 2:
            raise ValueError(f"a 2D overlay needs (rows, columns) arrays, got shape {a.shape}.")
        return a[::-1, ::-1].T[None]  # undoes _draw_sagittal's transpose and flips: the image as stored

    img, lab, truth = vol(image), vol(label), vol(label_truth)
    for other, what in ((lab, "label"), (truth, "label_truth")):
        if other is not None and other.shape != img.shape:
            raise ValueError(f"{what} shape {other.shape[1:][::-1]} differs from the image shape "
                             f"{img.shape[1:][::-1]}.")
    if truth is not None and lab is None:
        raise ValueError("label_truth needs a label to compare with.")
    return _figure(img, lab, truth, np.ones(3), 0, out_png, title, plane=plane)
