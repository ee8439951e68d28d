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
- A bundle with a second network (:data:`spine_monai.bundle.package.NETWORKS`; the attention-driven CT bundle's 2D
  localisation net, Sekuboyina et al., MSKI 2017, DOI 10.1007/978-3-319-74113-0_10, Section 2.1) exports it with
  ``network="localization"`` (``--network localization``): ``localization_def`` of ``inference.json`` is built with
  the settings of the weights' record (``models/localization.pt`` and ``localization_config.json`` by default) and
  written to ``localization.ts`` / ``.onnx`` / ``.pt2`` beside them. Its input is one batch of sagittal patches
  ``(B, 1, AP, SI)`` (default example ``(1, 1, 64, 64)``), both sizes dynamic multiples of 16 (its down-sampling
  factor); its output is the sigmoid spine-fraction map ``(B, 1, AP / 16, SI / 16)``. The default, ``"model"``, is
  ``network_def`` (the segmentation net) as before. The exported net is the network only: the two-stage inference
  (slice sampling, up-sampling, smoothing, threshold, late fusion) stays in
  :class:`spine_monai.inferers.AttentionFusionInferer`.

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

from spine_monai.bundle.package import NETWORKS, bundle_networks
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


def _network_id(root: Path, network: str) -> tuple[str, str]:
    """``(config id, default weights file name)`` of the bundle's network ``network`` (see :data:`NETWORKS`).

    Raises:
        ValueError: for a name the bundle does not define, naming the ones it does.
    """
    names = bundle_networks(root)
    if network not in names:
        raise ValueError(f"--network {network!r}: bundle {root.name} has no such network; choose one of "
                         f"{', '.join(names)}.")
    return NETWORKS[network]


def _network_settings(root: Path, network: str, path: Path, config: str,
                      override: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    """``(config id, overlays, overrides)`` that rebuild ``network`` for the weights ``path`` (their record's
    settings and overlays, then the user's ``override``). For a second network, ``inference.json`` reads the record of
    ``<network>_ckpt`` (set to ``path``) and, for what that lacks, the record of ``model.pt`` next to ``path``
    (``ckpt_path``), as inference does."""
    from spine_monai.bundle.record import inference_overrides

    net_id, _ = _network_id(root, network)
    overlays, override = inference_overrides(path, (), override)
    if network != "model":
        override["ckpt_path"] = str(path.with_name(NETWORKS["model"][1]))
        override[f"{network}_ckpt"] = str(path)
    if config != "inference":
        override.pop("ckpt_path")
        override.pop(f"{network}_ckpt", None)
    return net_id, overlays, override


def _weights_path(root: Path, ckpt: str | os.PathLike | None, network: str) -> Path:
    return Path(ckpt) if ckpt is not None else root / "models" / _network_id(root, network)[1]


def load_network(bundle: str | os.PathLike, ckpt: str | os.PathLike | None = None, config: str = "inference",
                 device: str | torch.device = "cpu", network: str = "model", **override: Any) -> nn.Module:
    """Build a network of a bundle config (``network_def`` by default, with ``override``) and load weights, in
    evaluation mode.

    Args:
        bundle: bundle folder or name.
        ckpt: weights file; ``None`` means ``<bundle>/models/model.pt`` (``localization.pt`` for
            ``network="localization"``).
        config: the config that defines the network (``configs/<config>.json``).
        device: where the network is put.
        network: ``"model"`` (``network_def``) or a bundle's second network, ``"localization"``
            (``localization_def`` of the attention-driven CT bundle); see :data:`NETWORKS`.
        override: config overrides, e.g. ``features=[4, 8, 16]``. Not needed for weights with a configuration
            record (``model_config.json`` beside them): its overlays and settings are applied first, and an override
            that contradicts them is refused.

    Returns:
        The network with the weights loaded, in ``eval()`` mode.

    Raises:
        FileNotFoundError: if the bundle or the weights file is missing.
        ValueError: if the bundle has no such ``network``, the network cannot be built, or the weights are
            unreadable or do not fit.
    """
    from monai.bundle import ConfigParser

    root = resolve_bundle(bundle)
    path = _weights_path(root, ckpt, network)
    net_id, overlays, override = _network_settings(root, network, path, config, override)
    parser = ConfigParser()
    parser.read_config(config_files(root, [config, *overlays]))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    for key, value in override.items():
        parser[key] = value
    try:
        net = parser.get_parsed_content(net_id)
    except Exception as err:  # noqa: BLE001 - a bad override shows as one line, not a config-parser traceback
        raise ValueError(
            f"{root / 'configs' / config}: cannot build {net_id} with overrides {override}: {_one_line(err)}"
        ) from None
    if not isinstance(net, nn.Module):
        raise ValueError(f"{root / 'configs' / config}: {net_id} is a {type(net).__name__}, not a torch module.")
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


def default_input_shape(bundle: str | os.PathLike, network: str = "model") -> tuple[int, ...]:
    """An example input for the bundle's network: ``(1, 1, 12, 64, 64)`` for a 3D bundle, ``(1, 1, 64, 256)`` for a
    2D one (``len(inputs.image.spatial_shape)`` of its metadata, as MONAI Label decides); ``(1, 1, 64, 64)`` (one
    sagittal patch) for the localisation net."""
    if network == "localization":
        return (1, 1, 64, 64)
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
              max_slices: int, max_size: int, override: dict[str, Any],
              network: str = "model") -> tuple[Any, nn.Module]:
    """The exported program and the eager network it came from."""
    _network_id(resolve_bundle(bundle), network)
    expected = default_input_shape(bundle, network)
    shape = _check_input_shape(expected if input_shape is None else input_shape)
    if len(shape) != len(expected):
        what = "5 positive sizes (B, C, X, Y, Z)" if len(expected) == 5 else "4 positive sizes (B, C, X, Y)"
        whose = resolve_bundle(bundle).name + ("" if network == "model" else f" --network {network}")
        raise ValueError(f"input_shape must be {what} for {whose}, got {shape}.")
    net = load_network(bundle, ckpt, network=network, **override)
    if hasattr(net, "slice_chunk"):
        net.slice_chunk = max(int(net.slice_chunk), int(max_slices))
    dyn = _dynamic_shapes(net, shape, max_slices, max_size) if dynamic else None
    with torch.no_grad():
        program = torch.export.export(net, (torch.rand(shape),), dynamic_shapes=dyn, strict=False)
    return program, net


def export_program(bundle: str | os.PathLike, ckpt: str | os.PathLike | None = None,
                   out: str | os.PathLike | None = None, input_shape: Sequence[int] | None = None,
                   dynamic: bool = True, max_slices: int = 1024, max_size: int = 4096, network: str = "model",
                   **override: Any) -> Any:
    """``torch.export`` the bundle's network (optionally saved as ``.pt2``).

    Args:
        bundle: bundle folder or name.
        ckpt: weights (default ``<bundle>/models/model.pt``, ``localization.pt`` for ``network="localization"``).
        out: if given, the ``.pt2`` file to write (atomically); load it with ``torch.export.load(out).module()``.
        input_shape: example input ``(B, C, X, Y, Z)`` (``(B, C, X, Y)`` for a 2D bundle); default
            :func:`default_input_shape`.
        dynamic: symbolic slice count (``[3, max_slices]``) and in-plane sizes (multiples of the size divisor).
        max_slices: largest slice count of a dynamic export; SAU-Net's ``slice_chunk`` is raised to it so the
            graph has no Python loop over chunks.
        max_size: largest in-plane size of a dynamic export.
        network: ``"model"`` (``network_def``) or ``"localization"`` (the CT bundle's localisation net, input
            ``(B, 1, AP, SI)``); see :func:`load_network`.
        override: config overrides used when the weights were trained (e.g. ``features=[4, 8, 16]``).

    Returns:
        The ``torch.export.ExportedProgram`` (call ``.module()`` to run it).

    Raises:
        ValueError: on a bad ``input_shape``, a ``network`` the bundle does not have, or weights that do not fit
            (see :func:`load_network`).
    """
    program, _ = _exported(bundle, ckpt, input_shape, dynamic, max_slices, max_size, override, network)
    if out is not None:
        with _staged(out) as tmp:
            torch.export.save(program, str(tmp))
    return program


def export_onnx(bundle: str | os.PathLike, ckpt: str | os.PathLike | None, out: str | os.PathLike,
                input_shape: Sequence[int] | None = None, opset: int = 18, dynamic: bool = True,
                max_slices: int = 1024, max_size: int = 4096, network: str = "model", **override: Any) -> Path:
    """Export the bundle's network to ONNX (input ``image``, output ``pred`` = logits) with the dynamo exporter.

    The bundle's ``metadata.json`` and the export settings are stored in the model's ``metadata_props``
    (``monai_bundle_metadata``, ``spine_monai_export``). The input must be preprocessed as ``inference.json`` does
    (RAS, resampled to ``pixdim``, intensities scaled to [0, 1]); the output are logits (apply a sigmoid).

    Args:
        bundle: bundle folder or name.
        ckpt: weights (``None``: ``<bundle>/models/model.pt``, ``localization.pt`` for ``network="localization"``).
        out: the ``.onnx`` file to write (atomically).
        input_shape: example input ``(B, C, X, Y, Z)`` (``(B, C, X, Y)`` for a 2D bundle); batch and channels stay
            fixed; default :func:`default_input_shape`.
        opset: ONNX opset version.
        dynamic: see :func:`export_program`; ``False`` gives a graph valid for ``input_shape`` only.
        max_slices: largest slice count of a dynamic export.
        max_size: largest in-plane size of a dynamic export.
        network: see :func:`export_program`.
        override: config overrides used when the weights were trained.

    Returns:
        The written path.

    Raises:
        ValueError: on a bad ``input_shape``, a ``network`` the bundle does not have, or weights that do not fit.
    """
    import onnx

    _network_id(resolve_bundle(bundle), network)
    if input_shape is None:
        input_shape = default_input_shape(bundle, network)
    program, net = _exported(bundle, ckpt, input_shape, dynamic, max_slices, max_size, override, network)
    out = Path(out)
    root = resolve_bundle(bundle)
    with _staged(out) as tmp:
        onnx_program = torch.onnx.export(program, (torch.rand(_check_input_shape(input_shape)),), dynamo=True,
                                         input_names=["image"], output_names=["pred"], opset_version=opset,
                                         verbose=False)
        onnx_program.save(str(tmp))
        model = onnx.load(str(tmp))
        meta = (root / "configs" / "metadata.json").read_text(encoding="utf-8")
        settings = {"bundle": root.name, "network": network, "input_shape": list(input_shape), "dynamic": dynamic,
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
                       network: str = "model", **override: Any) -> Path:
    """TorchScript export with ``monai.bundle.ckpt_export`` (metadata and inference config embedded).

    Args:
        bundle: bundle folder or name.
        ckpt: weights (``None``: ``<bundle>/models/model.pt``, ``localization.pt`` for ``network="localization"``).
        out: the ``.ts`` file to write (atomically).
        network: ``"model"`` (``network_def``) or ``"localization"`` (``localization_def``); see
            :func:`load_network`.
        override: config overrides used when the weights were trained.

    Returns:
        The written path.

    Raises:
        FileNotFoundError: if the bundle or the weights are missing.
        ValueError: if the bundle has no such ``network``, or the weights are unreadable or do not fit.
    """
    from monai.bundle import ckpt_export

    root = resolve_bundle(bundle)
    path = _weights_path(root, ckpt, network)
    load_network(root, path, network=network, **override)  # one-line errors before MONAI's own
    net_id, overlays, override = _network_settings(root, network, path, "inference", override)
    with _staged(out) as tmp:
        ckpt_export(net_id=net_id, filepath=str(tmp), ckpt_file=str(path),
                    meta_file=str(root / "configs" / "metadata.json"),
                    config_file=config_files(root, ["inference", *overlays]), bundle_root=str(root), **override)
    return Path(out)


def export_cli(bundle: str, format: str = "torchscript", out: str | None = None, weights: str | None = None,
               network: str = "model", **overrides: Any) -> str:
    """``python -m spine_monai export BUNDLE --format torchscript|onnx|program --out FILE [--weights FILE]
    [--network localization]``.

    Args:
        bundle: bundle folder or name.
        format: ``torchscript`` (``.ts``, via ``monai.bundle ckpt_export``), ``onnx`` or ``program``
            (``torch.export`` ``.pt2``).
        out: the file to write; default ``model.ts`` / ``model.onnx`` / ``model.pt2`` beside the weights
            (``localization.ts`` ... for the localisation net).
        weights: the weights file (default ``<bundle>/models/model.pt``, or ``localization.pt`` with
            ``--network localization``); its record (``model_config.json`` / ``localization_config.json``) supplies
            the settings it was trained with.
        network: which network to export: ``model`` (``network_def``, the segmentation net) or, for the
            attention-driven CT bundle, ``localization`` (``localization_def``, the 2D localisation net; input
            ``(B, 1, AP, SI)`` sagittal patches, sizes multiples of 16; default example ``input_shape``
            ``[1,1,64,64]``).
        overrides: further options of the exporter (``input_shape``, ``dynamic``, ...) or config overrides.

    Returns:
        The written path.

    Raises:
        ValueError: for an unknown format or network, or weights that do not fit.
    """
    suffixes = {"torchscript": ".ts", "onnx": ".onnx", "program": ".pt2"}
    if format not in suffixes:
        raise ValueError(f"--format {format!r}: choose one of {', '.join(suffixes)}.")
    root = resolve_bundle(bundle)
    path = _weights_path(root, weights, network)
    target = Path(out) if out is not None else path.with_suffix(suffixes[format])
    if format == "torchscript":
        return str(export_torchscript(root, path, target, network=network, **overrides))
    if format == "onnx":
        return str(export_onnx(root, path, target, network=network, **overrides))
    export_program(root, path, target, network=network, **overrides)
    return str(target)


def _program_file(bundle: str, ckpt: str | None = None, out: str = "model.pt2", **kwargs: Any) -> str:
    """CLI form of :func:`export_program`: writes ``out`` and returns its path."""
    export_program(bundle, ckpt, out, **kwargs)
    return str(out)


if __name__ == "__main__":  # python -m spine_monai.export onnx|torchscript|program BUNDLE CKPT OUT [--overrides]
    import fire

    fire.Fire({"onnx": export_onnx, "torchscript": export_torchscript, "program": _program_file})
