"""Export a bundle's trained network to TorchScript, ``torch.export`` (.pt2) and ONNX; load weights with clear errors.

Not tied to a paper: this implements the export conventions of the MONAI Model Zoo (``models/model.ts`` written by
``python -m monai.bundle ckpt_export``, ``models/model.onnx``) for the project's bundles, first of all SAU-Net
(Zhang, Yuan, Wang, Zhang, "SAU-Net: Efficient 3D Spine MRI Segmentation Using Inter-Slice Attention", MIDL 2020,
PMLR 121:903-913), whose forward pass has Python control flow that needs care (below).

Choices (also in the bundle README, section "Exports"):
- TorchScript goes through MONAI's own ``monai.bundle.ckpt_export`` (``torch.jit.script``), so the file is the one
  MONAI Label and ``python -m monai.bundle ckpt_export`` produce, with metadata and config inside; scripting keeps
  SAU-Net's Python loops, so any number of slices and any in-plane size work, slice streaming included.
- ONNX and ``.pt2`` go through ``torch.export`` (the dynamo exporter, ``torch.onnx.export(..., dynamo=True)``) with
  symbolic shapes: the slice count is dynamic in ``[3, max_slices]`` and the in-plane sizes are dynamic multiples of
  the network's size divisor (``2 ** (levels - 1)``, 16 for the default SAU-Net). An export without dynamic shapes
  (``dynamic=False`` here, or ``python -m monai.bundle onnx_export``, which passes none) resolves the Python branches
  for the example input (the Dense U-Net's padding amounts, SAU-Net's choice between the unchunked and the chunked
  slice path, the chunk loop) and is only valid for that shape.
- SAU-Net streams slices in chunks of ``slice_chunk`` in evaluation mode (a Python loop whose trip count depends on
  the slice count). For the dynamic export ``slice_chunk`` is raised to ``max_slices`` so the graph always takes the
  unchunked path; chunking only bounds memory (its result equals the unchunked one), so the exported model gives the
  same result but holds the features of all slices at once.
- Batch size and channels are fixed to those of ``input_shape`` (inference runs one window at a time).

Errors are one line naming the file: a missing weights file is a ``FileNotFoundError``; an unreadable file or weights
that do not fit the bundle's network are a ``ValueError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from spine_monai.bundle.runner import config_files, resolve_bundle

__all__ = [
    "load_weights",
    "load_network",
    "size_multiple",
    "export_torchscript",
    "export_program",
    "export_onnx",
    "export_cli",
]

logger = logging.getLogger(__name__)

_NESTED_KEYS = ("model", "state_dict", "network")


def _one_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception message, shortened, for one-line errors."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _staged(out: str | os.PathLike) -> Iterator[Path]:
    """A path with ``out``'s name in a temporary folder beside it; renamed onto ``out`` only if the block succeeds.

    The same file name keeps the TorchScript archive's inner folder name equal to the final one, and files get the
    usual permissions (``mkstemp`` would make them owner-only).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=str(out.parent)))
    try:
        yield work / out.name
        os.replace(work / out.name, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a plain state dict (``torch.save(model.state_dict(), path)``) with ``weights_only=True``.

    A checkpoint nesting the state dict under ``"model"``, ``"state_dict"`` or ``"network"`` is unwrapped.

    Args:
        path: the weights file.

    Returns:
        The state dict (tensors on the CPU).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not a readable PyTorch file holding a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found.")
    try:
        state: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling / zip error means the same thing to the user
        raise ValueError(
            f"{path}: not a readable PyTorch weights file ({type(err).__name__}: {_one_line(err, 120)}); expected a "
            "state dict saved with torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, Mapping):
        for key in _NESTED_KEYS:
            if len(state) <= 3 and isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: does not hold a state dict of tensors (got {type(state).__name__}); save weights with "
            "torch.save(model.state_dict(), path)."
        )
    return dict(state)


def _check_fits(net: nn.Module, state: Mapping[str, torch.Tensor], path: Path, bundle_name: str) -> None:
    """Raise a one-line ``ValueError`` summarising why ``state`` does not load into ``net``."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]!r}")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatch(es), e.g. {k!r} {tuple(state[k].shape)} in the file vs "
                     f"{tuple(own[k].shape)} in the network")
    raise ValueError(
        f"{path}: weights do not match the network of bundle {bundle_name} ({'; '.join(parts)}); were they trained "
        "with other config overrides (e.g. --features) or for another bundle?"
    )


def load_network(bundle: str | os.PathLike, ckpt: str | os.PathLike | None = None, config: str = "inference",
                 device: str | torch.device = "cpu", **override: Any) -> nn.Module:
    """Build ``network_def`` of a bundle config (with ``override``) and load weights, in evaluation mode.

    Args:
        bundle: bundle folder or name.
        ckpt: weights file; ``None`` means ``<bundle>/models/model.pt``.
        config: the config that defines ``network_def`` (``configs/<config>.json``).
        device: where the network is put.
        override: config overrides, e.g. ``features=[4, 8, 16]``. Not needed for weights with a configuration
            record (``model_config.json`` beside them): its overlays and settings are applied first, and an override
            that contradicts them is refused.

    Returns:
        The network with the weights loaded, in ``eval()`` mode.

    Raises:
        FileNotFoundError: if the bundle or the weights file is missing.
        ValueError: if ``network_def`` cannot be built, or the weights are unreadable or do not fit.
    """
    from monai.bundle import ConfigParser

    from spine_monai.bundle.record import inference_overrides

    root = resolve_bundle(bundle)
    path = Path(ckpt) if ckpt is not None else root / "models" / "model.pt"
    overlays, override = inference_overrides(path, (), override)
    if config != "inference":
        override.pop("ckpt_path")
    parser = ConfigParser()
    parser.read_config(config_files(root, [config, *overlays]))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    for key, value in override.items():
        parser[key] = value
    try:
        net = parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - a bad override shows as one line, not a config-parser traceback
        raise ValueError(
            f"{root / 'configs' / config}: cannot build network_def with overrides {override}: {_one_line(err)}"
        ) from None
    if not isinstance(net, nn.Module):
        raise ValueError(f"{root / 'configs' / config}: network_def is a {type(net).__name__}, not a torch module.")
    state = load_weights(path)
    _check_fits(net, state, path, root.name)
    net.load_state_dict(state)
    return net.to(device).eval()


def size_multiple(net: nn.Module, default: int = 16) -> int:
    """The factor in-plane sizes are padded to inside ``net`` (the first ``size_divisor`` attribute found)."""
    for module in net.modules():
        value = getattr(module, "size_divisor", None)
        if isinstance(value, int) and value >= 1:
            return value
    value = getattr(net, "output_stride", None)  # FPN-based networks (SEAM) need sizes divisible by their stride
    if isinstance(value, int) and value >= 1:
        return value
    return default


def _dynamic_shapes(net: nn.Module, input_shape: Sequence[int], max_slices: int, max_size: int) -> tuple[dict, ...]:
    """``torch.export`` dynamic shapes: slices in ``[3, max_slices]``, other spatial axes multiples of the divisor."""
    from torch.export import Dim

    mult = size_multiple(net)
    slice_axis = getattr(net, "slice_dim", None)
    dims: dict[int, Any] = {}
    for axis in range(len(input_shape) - 2):
        size = int(input_shape[axis + 2])
        if axis == slice_axis:
            if not 3 <= size <= max_slices:
                raise ValueError(
                    f"input_shape {tuple(input_shape)}: the slice count {size} must be in [3, {max_slices}]."
                )
            dims[axis + 2] = Dim("slices", min=3, max=max_slices)
        else:
            if size % mult:
                raise ValueError(
                    f"input_shape {tuple(input_shape)}: spatial size {size} must be a multiple of {mult} (the "
                    "network's size divisor) for a dynamic export; choose e.g. the ROI size."
                )
            dims[axis + 2] = mult * Dim(f"n{axis}", min=1, max=max(1, max_size // mult))
    return (dims,)  # positional: one entry per forward argument


def default_input_shape(bundle: str | os.PathLike) -> tuple[int, ...]:
    """An example input for the bundle's network: ``(1, 1, 12, 64, 64)`` for a 3D bundle, ``(1, 1, 64, 256)`` for a
    2D one (``len(inputs.image.spatial_shape)`` of its metadata, as MONAI Label decides)."""
    import json

    meta = json.loads((resolve_bundle(bundle) / "configs" / "metadata.json").read_text(encoding="utf-8"))
    spatial = meta.get("network_data_format", {}).get("inputs", {}).get("image", {}).get("spatial_shape", [0] * 3)
    return (1, 1, 64, 256) if len(spatial) == 2 else (1, 1, 12, 64, 64)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise ValueError(f"input_shape must be 5 positive sizes (B, C, X, Y, Z), or 4 (B, C, X, Y) for a 2D bundle, "
                         f"got {tuple(input_shape)}.")
    return shape


def _exported(bundle: str | os.PathLike, ckpt: str | os.PathLike | None, input_shape: Sequence[int], dynamic: bool,
              max_slices: int, max_size: int, override: dict[str, Any]) -> tuple[Any, nn.Module]:
    """The exported program and the eager network it came from."""
    expected = default_input_shape(bundle)
    shape = _check_input_shape(expected if input_shape is None else input_shape)
    if len(shape) != len(expected):
        what = "5 positive sizes (B, C, X, Y, Z)" if len(expected) == 5 else "4 positive sizes (B, C, X, Y)"
        raise ValueError(f"input_shape must be {what} for {resolve_bundle(bundle).name}, got {shape}.")
    net = load_network(bundle, ckpt, **override)
    if hasattr(net, "slice_chunk"):
        net.slice_chunk = max(int(net.slice_chunk), int(max_slices))
    dyn = _dynamic_shapes(net, shape, max_slices, max_size) if dynamic else None
    with torch.no_grad():
        program = torch.export.export(net, (torch.rand(shape),), dynamic_shapes=dyn, strict=False)
    return program, net


def export_program(bundle: str | os.PathLike, ckpt: str | os.PathLike | None = None,
                   out: str | os.PathLike | None = None, input_shape: Sequence[int] | None = None,
                   dynamic: bool = True, max_slices: int = 1024, max_size: int = 4096,
                   **override: Any) -> Any:
    """``torch.export`` the bundle's network (optionally saved as ``.pt2``).

    Args:
        bundle: bundle folder or name.
        ckpt: weights (default ``<bundle>/models/model.pt``).
        out: if given, the ``.pt2`` file to write (atomically); load it with ``torch.export.load(out).module()``.
        input_shape: example input ``(B, C, X, Y, Z)`` (``(B, C, X, Y)`` for a 2D bundle); default
            :func:`default_input_shape`.
        dynamic: symbolic slice count (``[3, max_slices]``) and in-plane sizes (multiples of the size divisor).
        max_slices: largest slice count of a dynamic export; SAU-Net's ``slice_chunk`` is raised to it so the
            graph has no Python loop over chunks.
        max_size: largest in-plane size of a dynamic export.
        override: config overrides used when the weights were trained (e.g. ``features=[4, 8, 16]``).

    Returns:
        The ``torch.export.ExportedProgram`` (call ``.module()`` to run it).

    Raises:
        ValueError: on a bad ``input_shape`` or weights that do not fit (see :func:`load_network`).
    """
    program, _ = _exported(bundle, ckpt, input_shape, dynamic, max_slices, max_size, override)
    if out is not None:
        with _staged(out) as tmp:
            torch.export.save(program, str(tmp))
    return program


def export_onnx(bundle: str | os.PathLike, ckpt: str | os.PathLike | None, out: str | os.PathLike,
                input_shape: Sequence[int] | None = None, opset: int = 18, dynamic: bool = True,
                max_slices: int = 1024, max_size: int = 4096, **override: Any) -> Path:
    """Export the bundle's network to ONNX (input ``image``, output ``pred`` = logits) with the dynamo exporter.

    The bundle's ``metadata.json`` and the export settings are stored in the model's ``metadata_props``
    (``monai_bundle_metadata``, ``spine_monai_export``). The input must be preprocessed as ``inference.json`` does
    (RAS, resampled to ``pixdim``, intensities scaled to [0, 1]); the output are logits (apply a sigmoid).

    Args:
        bundle: bundle folder or name.
        ckpt: weights (``None``: ``<bundle>/models/model.pt``).
        out: the ``.onnx`` file to write (atomically).
        input_shape: example input ``(B, C, X, Y, Z)`` (``(B, C, X, Y)`` for a 2D bundle); batch and channels stay
            fixed; default :func:`default_input_shape`.
        opset: ONNX opset version.
        dynamic: see :func:`export_program`; ``False`` gives a graph valid for ``input_shape`` only.
        max_slices: largest slice count of a dynamic export.
        max_size: largest in-plane size of a dynamic export.
        override: config overrides used when the weights were trained.

    Returns:
        The written path.

    Raises:
        ValueError: on a bad ``input_shape`` or weights that do not fit.
    """
    import onnx

    if input_shape is None:
        input_shape = default_input_shape(bundle)
    program, net = _exported(bundle, ckpt, input_shape, dynamic, max_slices, max_size, override)
    out = Path(out)
    root = resolve_bundle(bundle)
    with _staged(out) as tmp:
        onnx_program = torch.onnx.export(program, (torch.rand(_check_input_shape(input_shape)),), dynamo=True,
                                         input_names=["image"], output_names=["pred"], opset_version=opset,
                                         verbose=False)
        onnx_program.save(str(tmp))
        model = onnx.load(str(tmp))
        meta = (root / "configs" / "metadata.json").read_text(encoding="utf-8")
        settings = {"bundle": root.name, "input_shape": list(input_shape), "dynamic": dynamic,
                    "max_slices": max_slices if dynamic else None,
                    "size_multiple": size_multiple(net) if dynamic else None, "override": override}
        for key, value in (("monai_bundle_metadata", meta),
                           ("spine_monai_export", json.dumps(settings, default=str))):
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.save(model, str(tmp))
    logger.info("wrote %s", out)
    return out


def export_torchscript(bundle: str | os.PathLike, ckpt: str | os.PathLike | None, out: str | os.PathLike,
                       **override: Any) -> Path:
    """TorchScript export with ``monai.bundle.ckpt_export`` (metadata and inference config embedded).

    Args:
        bundle: bundle folder or name.
        ckpt: weights (``None``: ``<bundle>/models/model.pt``).
        out: the ``.ts`` file to write (atomically).
        override: config overrides used when the weights were trained.

    Returns:
        The written path.

    Raises:
        FileNotFoundError: if the bundle or the weights are missing.
        ValueError: if the weights are unreadable or do not fit.
    """
    from monai.bundle import ckpt_export

    from spine_monai.bundle.record import inference_overrides

    root = resolve_bundle(bundle)
    path = Path(ckpt) if ckpt is not None else root / "models" / "model.pt"
    load_network(root, path, **override)  # one-line errors before MONAI's own
    overlays, override = inference_overrides(path, (), override)
    with _staged(out) as tmp:
        ckpt_export(net_id="network_def", filepath=str(tmp), ckpt_file=str(path),
                    meta_file=str(root / "configs" / "metadata.json"),
                    config_file=config_files(root, ["inference", *overlays]), bundle_root=str(root), **override)
    return Path(out)


def export_cli(bundle: str, format: str = "torchscript", out: str | None = None, weights: str | None = None,
               **overrides: Any) -> str:
    """``python -m spine_monai export BUNDLE --format torchscript|onnx|program --out FILE [--weights FILE]``.

    Args:
        bundle: bundle folder or name.
        format: ``torchscript`` (``.ts``, via ``monai.bundle ckpt_export``), ``onnx`` or ``program``
            (``torch.export`` ``.pt2``).
        out: the file to write; default ``model.ts`` / ``model.onnx`` / ``model.pt2`` beside the weights.
        weights: the weights file (default ``<bundle>/models/model.pt``); its ``model_config.json`` supplies the
            settings it was trained with.
        overrides: further options of the exporter (``input_shape``, ``dynamic``, ...) or config overrides.

    Returns:
        The written path.

    Raises:
        ValueError: for an unknown format or weights that do not fit.
    """
    suffixes = {"torchscript": ".ts", "onnx": ".onnx", "program": ".pt2"}
    if format not in suffixes:
        raise ValueError(f"--format {format!r}: choose one of {', '.join(suffixes)}.")
    root = resolve_bundle(bundle)
    path = Path(weights) if weights is not None else root / "models" / "model.pt"
    target = Path(out) if out is not None else path.with_suffix(suffixes[format])
    if format == "torchscript":
        return str(export_torchscript(root, path, target, **overrides))
    if format == "onnx":
        return str(export_onnx(root, path, target, **overrides))
    export_program(root, path, target, **overrides)
    return str(target)


def _program_file(bundle: str, ckpt: str | None = None, out: str = "model.pt2", **kwargs: Any) -> str:
    """CLI form of :func:`export_program`: writes ``out`` and returns its path."""
    export_program(bundle, ckpt, out, **kwargs)
    return str(out)


if __name__ == "__main__":  # python -m spine_monai.export onnx|torchscript|program BUNDLE CKPT OUT [--overrides]
    import fire

    fire.Fire({"onnx": export_onnx, "torchscript": export_torchscript, "program": _program_file})
