"""``python -m spine_monai segment BUNDLE -i scan -o seg.nii.gz``: segment one scan with a bundle's trained weights.

Not tied to a paper: the command runs a bundle's own ``configs/inference.json`` (through
:func:`spine_monai.bundle.runner.infer_bundle`, i.e. exactly what ``python -m monai.bundle run`` runs) on one scan,
for example the SAU-Net bundle (Zhang, Yuan, Wang, Zhang, "SAU-Net: Efficient 3D Spine MRI Segmentation Using
Inter-Slice Attention", MIDL 2020, PMLR 121:903-913), and adds what a user needs around it:

- inputs: a NIfTI file, ``.mha`` / ``.mhd`` / ``.nrrd`` (ITK), or a folder holding one DICOM series (ITK/GDCM; a
  folder with several series gives the first one, as MONAI's ``ITKReader`` does);
- checks before the network runs, each failing with ONE line that names the file and the problem (``ValueError``
  or ``FileNotFoundError``; the CLI prints ``error: ...`` and exits with status 2): missing or unreadable input, a
  2D image or a single slice, a 4D image, an empty, constant or NaN/Inf image, unknown bundle, missing weights,
  weights that do not fit the network (for a two-network bundle also the second network's file beside them, e.g.
  the attention-driven CT bundle's ``localization.pt``), an unwritable output folder, an existing output (unless
  ``overwrite``);
- the label map (uint8) in the input's own geometry (``Invertd`` in the bundle's post-processing; a DICOM series
  gives a NIfTI with the series' geometry), written atomically: every output is first produced in a temporary
  folder beside the target and renamed into place at the end, so a failure leaves no partial or stale file;
- optionally a PNG overlay of the middle sagittal slice and a JSON with the volume of each label in ml (voxel count
  x voxel volume from the label's affine), label names from ``outputs.pred.channel_def`` of the bundle metadata.

Three kinds of bundle (:func:`bundle_input_dims`): a 3D bundle segments volumes; a 2D bundle (``inputs.image`` of its
metadata has two spatial sizes, e.g. SEAM) segments 2D images (PNG and the like, or a 2D NIfTI); a 2D bundle whose
``inference.json`` runs the network slice by slice over volumes (:data:`SLICEWISE_INFERERS`: the review bundle's
``SagittalSliceInferer``) segments both: a 2D image or 2D NIfTI gives a 2D label, anything else is read as a volume.
Its inputs are checked by the bundle's own view transform (:func:`read_sagittal`): a volume with one sagittal slice is
segmented, one with a single axial or coronal slice is refused, an RGB(A) image is converted to grey.

Choices: the input is read once here (MONAI ``LoadImage``, the reader the bundle uses) to check it before the
bundle runs, so a bad scan gives one line instead of an exception chain from inside the ignite engine; the cost is
reading the scan twice. ``device="auto"`` picks CUDA when present; AMP follows the device unless overridden.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spine_monai.bundle.runner import infer_bundle, resolve_bundle
from spine_monai.transforms.memory import check_bundle_memory
from spine_monai.transforms.validate import InputError, check_volume_array

__all__ = ["segment", "read_scan", "read_image_2d", "read_sagittal", "bundle_dims", "bundle_input_dims", "label_names",
           "label_volumes", "label_areas", "resolve_device"]

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
INPUT_KINDS = "a NIfTI, .mha, .mhd or .nrrd file, or a folder with one DICOM series"
IMAGE_SUFFIXES_2D = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
INPUT_KINDS_2D = "a 2D image (.png, .jpg, .bmp, .tif) or a 2D NIfTI"
INPUT_KINDS_SLICES = f"{INPUT_KINDS} holding a 3D volume, or {INPUT_KINDS_2D}"
#: ``inferer`` targets of ``inference.json`` that run a 2D network over the sagittal slices of a volume: a 2D bundle
#: using one segments 3D volumes as well as 2D images (the review bundle).
SLICEWISE_INFERERS = ("spine_monai.inferers.SagittalSliceInferer", "spine_monai.inferers.slices.SagittalSliceInferer")


def bundle_dims(root: Path) -> int:
    """2 or 3: ``len(network_data_format.inputs.image.spatial_shape)`` of the bundle metadata (as MONAI Label)."""
    meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    shape = meta.get("network_data_format", {}).get("inputs", {}).get("image", {}).get("spatial_shape", [0] * 3)
    return 2 if len(shape) == 2 else 3


def bundle_input_dims(root: Path) -> tuple[int, ...]:
    """The input dimensions a bundle segments: ``(3,)`` for a 3D bundle, ``(2,)`` for a 2D one (:func:`bundle_dims`),
    ``(2, 3)`` for a 2D bundle whose ``inference.json`` ``inferer`` is one of :data:`SLICEWISE_INFERERS` (it runs the
    2D network over the slices of a volume)."""
    if bundle_dims(root) == 3:
        return (3,)
    try:
        config = json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (2,)
    inferer = config.get("inferer") if isinstance(config, dict) else None
    target = inferer.get("_target_") if isinstance(inferer, dict) else None
    return (2, 3) if target in SLICEWISE_INFERERS else (2,)


def _is_image_2d(path: Path) -> bool:
    """Whether a slice-wise bundle takes ``path`` as a 2D image: a PNG-like file, or a NIfTI whose header has two
    dimensions (a ``(X, Y, 1)`` NIfTI is a volume with one slice, as the bundle's ``LoadImaged`` reads it)."""
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES_2D):
        return True
    if path.is_file() and name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            return len(nib.load(str(path)).shape) == 2
        except Exception:  # noqa: BLE001 - unreadable: read_scan says why
            return False
    return False


def read_image_2d(input_path: str | os.PathLike, min_size: int = 32,
                  aspect_range: tuple[float, float] | None = (1.5, 8.0)) -> Any:
    """Read and check a 2D image the way the 2D bundles do (``LoadImage`` + ``PrepareImage2Dd``'s checks).

    Args:
        input_path: the image.
        min_size: smallest allowed side in pixels (``PrepareImage2Dd``'s; SEAM's default).
        aspect_range: allowed height / width ratio (SEAM's VPI default); ``None`` skips the check.

    Returns:
        ``MetaTensor`` ``(1, X, Y)`` (X columns, Y rows), grey.

    Raises:
        FileNotFoundError: if the input does not exist.
        ValueError: (``InputError``) unreadable, a 3D volume, too small, of the wrong aspect, constant or NaN.
    """
    from monai.transforms import LoadImage

    from spine_monai.transforms.files import check_image_file
    from spine_monai.transforms.image2d import PrepareImage2Dd

    path = _check_input_path(input_path, INPUT_KINDS_2D)
    if path.is_dir():
        raise ValueError(f"{path}: a folder; this bundle segments one 2D image ({INPUT_KINDS_2D}).")
    if not path.name.lower().endswith(IMAGE_SUFFIXES_2D + (".nii", ".nii.gz")):
        raise ValueError(f"{path}: unsupported file type; expected {INPUT_KINDS_2D}.")
    check_image_file(path)
    try:
        img = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    except Exception as err:  # noqa: BLE001 - every reader failure means "cannot read this file"
        raise ValueError(f"{path}: cannot be read as an image (expected {INPUT_KINDS_2D}; {_reason(err)}).") from None
    return PrepareImage2Dd("image", min_size=min_size, aspect_range=aspect_range)({"image": img})["image"]


def read_sagittal(input_path: str | os.PathLike, min_size: int = 16) -> Any:
    """Read and check the input of a slice-wise bundle (the review bundle) as its ``inference.json`` will take it.

    A 2D image (.png, .jpg, .bmp, .tif; RGB(A) converted to grey) or a 2D NIfTI is read as a sagittal picture; any
    other input as a 3D volume (:func:`read_scan`, a single slice allowed). Then the bundle's view transform
    (:class:`spine_monai.transforms.slices.SagittalSlicesd`, at a tiny size) checks it: a volume with one sagittal
    slice passes, one with a single axial or coronal slice is refused.

    Args:
        input_path: the image or volume.
        min_size: smallest in-plane extent (``SagittalSlicesd``'s default).

    Returns:
        ``MetaTensor`` ``(1, X, Y)`` (grey 2D image) or ``(1, X, Y, Z)`` (volume, in the file's orientation).

    Raises:
        FileNotFoundError: if the input does not exist.
        ValueError: (``InputError``) naming the file: unreadable, a single axial / coronal slice, too small,
            constant, NaN, more than one channel in a volume.
    """
    from spine_monai.transforms.slices import SagittalSlicesd

    path = _check_input_path(input_path, INPUT_KINDS_SLICES)
    if _is_image_2d(path):
        img = read_image_2d(path, min_size=min_size, aspect_range=None)
    else:
        img = read_scan(path, single_slice=True)
    SagittalSlicesd("image", size=min_size, min_size=min_size)({"image": img})  # the bundle's own view checks
    return img


def _reason(err: BaseException, limit: int = 160) -> str:
    """One short line describing ``err``."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_input_path(input_path: str | os.PathLike, kinds: str = INPUT_KINDS) -> Path:
    """The input path, refused early when missing, empty, or a folder that is not a DICOM series."""
    path = Path(input_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found (expected {kinds}).")
    if path.is_dir():
        files = [f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")]
        if not files:
            raise ValueError(f"{path}: empty folder (expected {INPUT_KINDS}).")
        images = [f.name for f in files if f.name.lower().endswith(VOLUME_SUFFIXES)]
        if images:
            raise ValueError(
                f"{path}: a folder of image files ({images[0]}, ...), not a DICOM series; give one file as input."
            )
    elif path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes).")
    return path.resolve()


@contextlib.contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Collect what C/C++ readers (ITK, GDCM, MetaIO) write to file descriptor 2 into ``lines``.

    Those messages would otherwise precede the one-line error of the command. Python-level writes to ``sys.stderr``
    during the block are captured too (and returned in ``lines``).
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. an embedding application)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            lines.extend(ln.strip() for ln in text.splitlines() if ln.strip())


def read_scan(input_path: str | os.PathLike, single_slice: bool = False) -> Any:
    """Read and check a scan the way the bundles do (MONAI ``LoadImage``, channel first).

    Args:
        input_path: a NIfTI / .mha / .mhd / .nrrd file or a DICOM series folder.
        single_slice: accept a volume with one slice (a slice-wise bundle segments one sagittal slice; its own
            checks refuse other views, :func:`read_sagittal`).

    Returns:
        ``MetaTensor`` ``(1, X, Y, Z)`` with its RAS ``affine``.

    Raises:
        FileNotFoundError: if the input does not exist.
        ValueError: (``InputError`` for bad content) if it cannot be read, is 2D, a single slice, 4D, empty,
            constant, complex or holds NaN/Inf; if its gzip data are corrupt (CRC), its affine is NaN/Inf or
            singular, its spacing implausible, or a DICOM series lacks pixel data in a slice or has missing slices
            (:func:`spine_monai.transforms.files.check_image_file`, run before loading).
    """
    from monai.transforms import LoadImage

    from spine_monai.transforms.files import check_image_file

    path = _check_input_path(input_path)
    check_image_file(path)  # what the readers let through silently: corrupt gzip, complex data, broken headers
    loader = LoadImage(image_only=True, ensure_channel_first=True)  # reader set-up logs outside the capture
    native: list[str] = []
    try:
        with _native_stderr(native):
            img = loader(str(path))
    except Exception as err:  # noqa: BLE001 - every reader failure means "cannot read this file"
        # ITK's own message often is only a source location; its stderr lines say what was wrong
        detail = f"{_reason(err)} {native[0][:120]}" if native else _reason(err)
        raise ValueError(f"{path}: cannot be read as an image (expected {INPUT_KINDS}; {detail}).") from None
    for line in native:
        logger.warning("%s: reader says: %s", path, line)
    spatial = tuple(int(s) for s in img.shape[1:])
    if len(spatial) == 3 and min(spatial) == 1 and max(spatial) > 1 and not single_slice:
        raise InputError(f"{path}: a single 2D slice of shape {spatial}, not a volume; segment needs a 3D scan.")
    check_volume_array(img, str(path))
    return img


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked.

    Raises:
        ValueError: for an unknown device name or CUDA requested where it is not available.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r}: not a device name (use auto, cpu, cuda or cuda:N).") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device!r}: CUDA is not available on this machine; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present.")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device!r}: only cpu and cuda are supported.")
    return dev


def _real(path: str | os.PathLike) -> Path:
    """The path the file system will use: absolute, symbolic links and ``..`` resolved as the kernel will resolve
    them once the missing folders exist (``x/../a`` is ``a`` even when ``x`` does not exist yet)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _same_file(a: Path, b: Path) -> bool:
    """Whether two (resolved) paths name the same file, hard links included."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_name_lengths(out: Path) -> None:
    try:
        name_max = os.pathconf(str(next(p for p in (out, *out.parents) if p.exists())), "PC_NAME_MAX")
    except (OSError, ValueError, StopIteration):
        name_max = 255
    from spine_monai.transforms.outputs import check_name_length

    check_name_length(out, limit=name_max)
    if len(os.fsencode(str(out))) >= 4096:
        raise ValueError(f"{str(out)[:80]}...: path too long for the file system ({len(str(out))} characters).")


def _check_output(path: str | os.PathLike, suffixes: tuple[str, ...], what: str, overwrite: bool) -> Path:
    """An output path whose folder (or nearest existing ancestor) is writable and that does not exist yet.

    The path is resolved the way the file system will resolve it (:func:`_real`) before anything is checked, so
    every spelling of an existing file (relative, ``./``, ``x/../``, a symbolic link) is recognised as that file.
    """
    out = _real(path)
    _check_name_lengths(out)
    if not out.name.lower().endswith(suffixes):
        raise ValueError(f"{out}: the {what} file name must end with {' or '.join(suffixes)}.")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give a file name for the {what}.")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"{out}: already exists; pass --overwrite to replace it.")
    anc = out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ValueError(f"{out}: output folder {anc} is a file, not a folder.")
    try:  # a real write probe: os.access is always true for root and ignores read-only mounts
        with tempfile.NamedTemporaryFile(prefix=".spine_monai-probe-", dir=str(anc)):
            pass
    except OSError as err:
        raise ValueError(f"{out}: output folder {anc} is not writable ({err.strerror or err}).") from None
    return out


def _resolve_weights(root: Path, weights: str | os.PathLike | None) -> Path:
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found.")
        return path.resolve()
    path = root / "models" / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: bundle {root.name} has no trained weights; train it (python -m monai.bundle run --config_file "
            f"{root / 'configs' / 'train.json'} --bundle_root {root} --dataset_dir DATA writes models/model.pt), "
            "copy a trained model.pt there, or pass --weights FILE."
        )
    return path


def _check_other_networks(root: Path, ckpt: Path, overrides: dict[str, Any]) -> None:
    """One line, before the bundle runs, for a second network whose weights the inference config cannot load.

    A bundle whose ``inference.json`` defines a second network (:data:`spine_monai.bundle.package.NETWORKS`: the
    attention-driven CT bundle's localisation net) loads its weights from beside ``ckpt`` (``localization.pt``
    next to ``model.pt``; ``--localization_ckpt`` overrides it) when the weights' record says the method uses it
    (``use_localization``, true when absent, as ``inference.json`` reads it). Without this check a missing or
    non-matching file fails inside MONAI's config parser with a traceback.

    Raises:
        FileNotFoundError: the second network's weights are missing (naming the file and where they come from).
        ValueError: they are unreadable or do not fit (one line from :func:`spine_monai.export.load_network`).
    """
    from spine_monai.bundle.package import NETWORKS, bundle_networks
    from spine_monai.bundle.record import as_bool, read_settings
    from spine_monai.export import load_network

    settings = {**read_settings(ckpt), **overrides}
    for name in bundle_networks(root)[1:]:
        if not as_bool(settings.get(f"use_{name}", True), f"use_{name}"):
            continue
        path = Path(overrides.get(f"{name}_ckpt", ckpt.with_name(NETWORKS[name][1]))).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the {name} network's weights are missing; bundle {root.name} runs it before {ckpt.name} "
                f"and reads them from beside the weights (training writes {path.name} next to model.pt): copy "
                f"{path.name} and its record {path.stem}_config.json there."
            )
        rest = {k: v for k, v in overrides.items() if k != f"{name}_ckpt"}
        load_network(root, path, network=name, **rest)  # one-line error for unreadable or non-matching weights


def label_names(root: Path) -> dict[int, str]:
    """``{value: name}`` from ``network_data_format.outputs.pred.channel_def`` of the bundle metadata."""
    meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    chan = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def", {})
    names = {}
    for key, name in chan.items():
        try:
            names[int(key)] = str(name)
        except ValueError:
            continue
    return names


def label_volumes(label: np.ndarray, affine: np.ndarray, names: dict[int, str] | None = None) -> dict[str, Any]:
    """Voxel count and volume (ml) of every non-zero label.

    Args:
        label: integer label map ``(X, Y, Z)``.
        affine: its 4x4 voxel-to-world matrix in mm.
        names: ``{value: name}``; values missing here are named ``label_<value>``; named labels absent from the
            map are reported with 0 voxels.

    Returns:
        ``{"voxel_volume_ml", "volumes_ml": {name: ml}, "voxels": {name: count}, "values": {name: value}}``.
    """
    names = dict(names or {})
    voxel_ml = float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0
    values, counts = np.unique(np.asarray(label), return_counts=True)
    found = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    keys = sorted({v for v in names if v != 0} | {v for v in found if v != 0})
    out: dict[str, Any] = {"voxel_volume_ml": voxel_ml, "volumes_ml": {}, "voxels": {}, "values": {}}
    for value in keys:
        name = names.get(value, f"label_{value}")
        out["voxels"][name] = found.get(value, 0)
        out["volumes_ml"][name] = found.get(value, 0) * voxel_ml
        out["values"][name] = value
    return out


def _publish(tmp: Path, final: Path) -> None:
    """Give ``tmp`` the usual file mode and rename it onto ``final`` (atomic; via a copy beside ``final`` when the
    two are on different file systems)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        near = final.with_name(f".{final.name}.partial")
        try:
            shutil.copyfile(tmp, near)
            os.replace(near, final)
        finally:
            if near.exists():
                near.unlink()


def segment(bundle: str, input_path: str, output_path: str, weights: str | None = None, device: str = "auto",
            overlay: str | None = None, volumes_json: str | None = None, overwrite: bool = False,
            progress: bool = True, **overrides: Any) -> str:
    """Segment one scan with a bundle's inference config and trained weights.

    Args:
        bundle: bundle folder or name (e.g. ``saunet_spine_mri_segmentation``).
        input_path: a NIfTI / .mha / .mhd / .nrrd file or a folder with one DICOM series; a 3D volume. For a 2D
            bundle (SEAM): a 2D image (.png, .jpg, .bmp, .tif; RGB converted to grey) or a 2D NIfTI. For a slice-wise
            bundle (the review bundle, :func:`bundle_input_dims`): either (:func:`read_sagittal`).
        output_path: the label map to write (``.nii.gz`` or ``.nii``), in the input's geometry, uint8; for a 2D
            image input a ``.png`` of the image's size.
        weights: weights file; default ``<bundle>/models/model.pt``. The configuration record beside it
            (``model_config.json``, written by training) supplies the settings it was trained with, so no override
            is needed; an override that contradicts it is refused with one line naming the setting. A two-network
            bundle (attention-driven CT) also loads its second net from beside them (``localization.pt`` and its
            record ``localization_config.json``, written there by training).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        overlay: optional PNG of the middle sagittal slice with the label overlaid (2D: the image beside the
            image with the labels).
        volumes_json: optional JSON with the volume (ml) and voxel count of each label; for a 2D bundle the pixel
            count (and area in mm^2 for NIfTI) of each label and the spine's Cobb angle
            (:func:`spine_monai.measures.cobb_angle` on the thoracic and lumbar labels).
        overwrite: replace existing output files (otherwise they are refused).
        progress: show a progress bar.
        overrides: config overrides of ``inference.json``, e.g. ``--roi_size "[-1,128,128]"``. The network
            settings come from the weights' record; one that contradicts it is refused.

    Returns:
        The written label path.

    Raises:
        FileNotFoundError: missing input, bundle or weights.
        ValueError: unreadable or unsuitable input, weights that do not fit, unwritable or existing outputs, bad
            device; each a one-line message naming the file.
    """
    from spine_monai.export import load_network

    root = resolve_bundle(bundle)
    input_dims = bundle_input_dims(root)
    kinds = {(3,): INPUT_KINDS, (2,): INPUT_KINDS_2D}.get(input_dims, INPUT_KINDS_SLICES)
    src = _check_input_path(input_path, kinds)
    dims = 2 if input_dims == (2,) or (input_dims == (2, 3) and _is_image_2d(src)) else 3  # of this input
    for target in (output_path, overlay, volumes_json):
        if target is not None and _same_file(src, _real(target)):
            raise ValueError(f"{_real(target)}: is the input scan {src}; choose another output name (the input is "
                             "never overwritten, not even with --overwrite).")
    label_suffixes: tuple[str, ...] = (".nii.gz", ".nii")
    if dims == 2 and src.name.lower().endswith(IMAGE_SUFFIXES_2D):
        label_suffixes = (".png",)  # the label of an image file is a PNG of the image's size
    outputs = {"label": _check_output(output_path, label_suffixes, "label map", overwrite)}
    if overlay is not None:
        outputs["overlay"] = _check_output(overlay, (".png",), "overlay", overwrite)
    if volumes_json is not None:
        outputs["volumes"] = _check_output(volumes_json, (".json",), "volumes", overwrite)
    finals = list(outputs.values())
    if len(set(finals)) != len(finals) or any(_same_file(src, p) for p in finals):
        same = next((p for p in finals if _same_file(src, p)), outputs["label"])
        raise ValueError(f"{same}: is the input {src} (or another output); the input and the output files must all "
                         "be different files.")
    ckpt = _resolve_weights(root, weights)
    dev = resolve_device(device)
    if input_dims == (2, 3):
        image = read_sagittal(src)
    elif dims == 2:
        image = read_image_2d(src)
    else:
        image = read_scan(src)
    if dims == 3:
        check_bundle_memory(image, str(src), root, {**overrides, "ckpt_path": str(ckpt)})  # one line if too large
    load_network(root, ckpt, **overrides)  # one-line error for unreadable or non-matching weights (CPU)
    _check_other_networks(root, ckpt, overrides)  # e.g. localization.pt beside model.pt (CT bundle)

    override: dict[str, Any] = {"device": f"$torch.device('{dev}')", "dataset#data": [{"image": str(src)}]}
    if dev.type != "cuda":
        override["amp"] = False
    override.update(overrides)
    out = outputs["label"]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name.split('.')[0]}.segment-", dir=str(out.parent)))
    except OSError as err:
        raise ValueError(f"{out}: cannot write to the output folder {out.parent} ({err.strerror}).") from None
    try:
        written = infer_bundle(root, src, work / "pred", ckpt=ckpt, progress=progress, **override)
        segs = [p for p in written if p.name.endswith((".nii.gz", ".nii", ".png"))]
        if len(segs) != 1:
            raise RuntimeError(f"{root}: inference.json wrote {[p.name for p in written]}, expected one label map.")
        seg = segs[0]
        if dims == 2:
            staged = _stage_2d(seg, out, work, image, src, root, ckpt, outputs)
        else:
            staged = _stage_3d(seg, out, work, image, src, root, ckpt, outputs)
        for key, path in staged.items():
            _publish(path, outputs[key])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %s", out)
    return str(out)


def _stage_3d(seg: Path, out: Path, work: Path, image: Any, src: Path, root: Path, ckpt: Path,
              outputs: dict[str, Path]) -> dict[str, Path]:
    """The files to publish for a 3D bundle: label (``.nii``/``.nii.gz``), optional volumes JSON and overlay."""
    import nibabel as nib

    seg_img = nib.load(str(seg))
    label = np.asarray(seg_img.dataobj)
    if out.name.lower().endswith(".nii") and not seg.name.endswith(".nii"):
        seg = work / "label.nii"
        nib.save(seg_img, str(seg))
    staged = {"label": seg}
    if "volumes" in outputs:
        report = {"input": str(src), "segmentation": str(out), "bundle": root.name, "weights": str(ckpt),
                  "shape": list(label.shape), **label_volumes(label, seg_img.affine, label_names(root))}
        staged["volumes"] = work / "volumes.json"
        staged["volumes"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if "overlay" in outputs:
        staged["overlay"] = _render(image, label, seg_img.affine, work / "overlay.png", f"{src.name}: {root.name}")
    return staged


def label_areas(label: np.ndarray, pixel_mm2: float | None, names: dict[int, str] | None = None) -> dict[str, Any]:
    """Pixel count (and area in mm^2 when the pixel size is known) of every label of a 2D map."""
    names = dict(names or {})
    values, counts = np.unique(np.asarray(label), return_counts=True)
    found = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    keys = sorted({v for v in names if v != 0} | {v for v in found if v != 0})
    out: dict[str, Any] = {"pixel_area_mm2": pixel_mm2, "pixels": {}, "areas_mm2": {}, "values": {}}
    for value in keys:
        name = names.get(value, f"label_{value}")
        out["pixels"][name] = found.get(value, 0)
        out["areas_mm2"][name] = None if pixel_mm2 is None else found.get(value, 0) * pixel_mm2
        out["values"][name] = value
    return out


def _stage_2d(seg: Path, out: Path, work: Path, image: Any, src: Path, root: Path, ckpt: Path,
              outputs: dict[str, Path]) -> dict[str, Path]:
    """The files to publish for a 2D bundle: label (PNG for image inputs, NIfTI for 2D NIfTI inputs), optional JSON
    (pixel counts per label and, from the thoracic and lumbar labels, the spine centre line and Cobb angle) and an
    overlay PNG. Arrays are handled as ``(rows, columns)`` here; MONAI's ``(X, Y)`` is the transpose."""
    pixel_mm2: float | None = None
    if seg.name.endswith(".png"):
        from PIL import Image

        rows = np.asarray(Image.open(seg))
    else:
        import nibabel as nib

        seg_img = nib.load(str(seg))
        rows = np.asarray(seg_img.dataobj)
        rows = rows.reshape(rows.shape[:2]).T
        pixel_mm2 = float(abs(np.linalg.det(np.asarray(seg_img.affine, dtype=float)[:2, :2])))
        if out.name.lower().endswith(".nii") and not seg.name.endswith(".nii"):
            seg = work / "label.nii"
            nib.save(seg_img, str(seg))
    staged = {"label": seg}
    if "volumes" in outputs:
        names = label_names(root)
        report: dict[str, Any] = {"input": str(src), "segmentation": str(out), "bundle": root.name,
                                  "weights": str(ckpt), "shape_rows_cols": list(rows.shape),
                                  **label_areas(rows, pixel_mm2, names)}
        report["curvature"] = _curvature(rows, names)
        staged["volumes"] = work / "report.json"
        staged["volumes"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if "overlay" in outputs:
        img = np.asarray(image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image)[0].T
        staged["overlay"] = _render_2d(img, rows, work / "overlay.png", f"{src.name}: {root.name}")
    return staged


def _curvature(rows: np.ndarray, names: dict[int, str]) -> dict[str, Any]:
    """Cobb angle of the predicted spine (:mod:`spine_monai.measures`), or the reason it could not be measured."""
    by_name = {v.lower(): k for k, v in names.items()}
    classes = tuple(by_name[c] for c in ("thoracic", "lumbar") if c in by_name)
    if not classes:
        return {"cobb_deg": None, "reason": "the bundle has no thoracic / lumbar labels"}
    try:
        from spine_monai.measures import cobb_angle

        result = cobb_angle(rows, classes=classes)
    except ImportError:  # pragma: no cover - the measure ships with the package
        return {"cobb_deg": None, "reason": "spine_monai.measures is not available"}
    except ValueError as err:
        return {"cobb_deg": None, "reason": str(err)}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in result.items()}


def _render_2d(img: np.ndarray, rows: np.ndarray, out_png: Path, title: str) -> Path:
    """Side-by-side PNG: the image, and the image with the labels in colour (1 blue, 2 red, 3 green, others)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grey = img.astype(np.float64)
    lo, hi = np.percentile(grey, [0.5, 99.5])
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    colours = {1: (0.1, 0.2, 1.0), 2: (1.0, 0.15, 0.15), 3: (0.1, 0.85, 0.2), 4: (1.0, 0.8, 0.1)}
    over = rgb.copy()
    for value in np.unique(rows):
        if value == 0:
            continue
        mask = rows == value
        over[mask] = 0.45 * over[mask] + 0.55 * np.asarray(colours.get(int(value), (0.8, 0.3, 0.9)))
    h, w = rows.shape
    fig, axes = plt.subplots(1, 2, figsize=(4.0, 4.0 * h / max(2 * w, 1) + 0.4), dpi=150)
    for ax, pic in zip(axes, (rgb, over), strict=True):
        ax.imshow(pic, interpolation="nearest")
        ax.axis("off")
    fig.suptitle(title, fontsize=6)
    fig.savefig(out_png, bbox_inches="tight")
    plt.close(fig)
    return out_png


def _render(image: Any, label: np.ndarray, affine: np.ndarray, out_png: Path, title: str) -> Path:
    """Overlay PNG of the middle sagittal slice (``spine_monai.visualize.render_overlay``)."""
    from spine_monai.visualize import render_overlay

    img = np.asarray(image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image)[0]
    if img.shape != label.shape:
        raise RuntimeError(f"label shape {label.shape} differs from the image shape {img.shape}.")
    return Path(render_overlay(img, label, np.asarray(affine), out_png, title=title, slice_index="middle"))
