"""Two-stage inference of the attention-driven method: 2D localisation on sagittal slices, 3D segmentation, late fusion.

Sekuboyina, Kukacka, Kirschke, Menze, Valentinitsch, "Attention-driven Deep Learning for Pathological Spine
Segmentation", MSKI 2017 (MICCAI workshop), Springer LNCS, DOI 10.1007/978-3-319-74113-0_10, Section 2.1
("Training and Inference" of the attention net), Section 2.2 (segmentation net, late fusion), Fig. 1 and 3.

:class:`AttentionFusionInferer` is a ``monai.inferers.Inferer``: a bundle's ``inference.json`` uses it as its
``inferer``, so ``monai.bundle run``, ``spine_monai segment`` and MONAI Label run the whole method through the
evaluator's ``inferer(inputs, network)`` call. The evaluator passes one network (the segmentation net); the inferer
holds the localisation net and its weights itself. Input: a RAS volume ``(B, C, LR, AP, SI)`` (after
``Orientationd(axcodes="RAS")``, spacing and intensity preprocessing), i.e. sagittal slices are ``volume[:, :, r]``.

Steps, and our choices where the paper gives no number:

a. Localisation on every ``slice_step``-th sagittal slice ("Every n-th sagittal slice from the scan volume is
   considered for inference", n = 8 in the paper). The slices are centred on the LR axis: the first is
   ``((LR - 1) % slice_step) // 2``, then every ``slice_step``-th, so a volume with fewer than ``slice_step`` slices
   still uses its middle slice. Each slice is covered by overlapping 2D patches ("the patches are sampled from every
   n-th sagittal slice with overlap such that the entire slice is covered"): MONAI's ``SlidingWindowInferer`` with
   ``localization_roi_size`` (the paper's 160 x 160; ``None``: the whole slice, zero-padded to a multiple of 16) and
   ``localization_overlap``. Slices go through the net in batches of ``slice_batch_size``.
b. Up-sampling to the volume grid ("the original scan resolution is restored by interpolation in all three
   directions"): every value of a patch's 1/16 map stands for its 16 x 16 block, so each patch's map is repeated
   over its block (nearest, x16 in-plane) before the overlapping patches are averaged; across LR, the maps of the
   sampled slices are interpolated linearly, and slices beyond the first / last sampled one take its map (at most
   ``slice_step / 2`` slices, the half-width of the paper's 16 x 16 x n target block).
c. 3D Gaussian smoothing ("filtered with a 3D Gaussian kernel N(0, Sigma)", Sigma tuned on validation): ``sigma``
   in voxels of the input grid, per axis ``(LR, AP, SI)`` (the bundles resample to a fixed spacing first, so this
   is a fixed physical size); default ``(4, 8, 8)``, half the paper's ``8 x 16 x 16`` block, which rounds the block
   corners; replicate padding at the volume border, so a spine leaving the field of view keeps its attention.
d. Threshold ("This attention-map is thresholded and converted to a binary mask"): ``attention > threshold``. The
   default 0.1 is a permissive placeholder (the values are spine fractions per block, low at the spine's border;
   a false negative of stage 1 removes spine for good, a false positive only keeps what the segmentation net found);
   the bundle stores the value chosen on validation cases. Optional binary dilation by ``dilation`` voxels per axis
   (a box of ``2 d + 1``; default 0 = none).
e. Sliding-window segmentation with the segmentation net: MONAI ``SlidingWindowInferer`` with ``roi_size`` (default
   ``(12, 188, 188)``, the paper's 188 x 188 x 12 block in RAS order), ``overlap``, ``sw_batch_size``, ``mode``.
f. Late fusion ("used as a mask over the segmentation-net's output to clear away the stray segmentations"):
   :func:`spine_monai.networks.nets.sekuboyina.late_fusion` on LOGITS: inside the mask the segmentation logits are
   returned unchanged, outside they are set to ``-logit_fill`` (``+logit_fill`` on ``background_channel`` for a
   softmax output). The output keeps the shape, type and meta of a plain ``SlidingWindowInferer`` output
   ``(B, out_channels, LR, AP, SI)``, so the bundle's ``Activationsd(sigmoid=True)`` + ``AsDiscreted(threshold=0.5)``
   (or softmax + argmax) + ``Invertd`` post-processing is unchanged and yields exactly the paper's product of
   probabilities and mask. (Multiplying logits by the mask would give ``sigmoid(0) = 0.5`` outside, which
   ``AsDiscrete`` counts as foreground.)

Ablations: ``use_localization=False`` is the segmentation net alone (no localisation net needed);
``use_fusion=False`` keeps the localisation net configured but does not apply it (stage 1 is not computed for the
fused output; ``output="mask"`` / ``"attention"`` still work). ``output="mask"`` returns the stage-1 binary mask
``(B, 1, LR, AP, SI)`` (float 0/1) to evaluate the localisation alone; ``output="attention"`` the smoothed
spine-probability volume before the threshold (to choose ``threshold`` and ``sigma`` on validation cases).

The paper runs both nets "in parallel"; here they run one after the other on the input's device. Stage 1 runs
without gradients, with the smoothing in float32 even under AMP. A case where stage 1 finds no spine is logged as a
warning naming the case, and its output is all background.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from monai.networks.layers import gaussian_1d, separable_filtering
from monai.utils import convert_to_dst_type

from spine_monai.networks.nets.sekuboyina import LOGIT_FILL, late_fusion

__all__ = ["AttentionFusionInferer", "load_localization_weights", "sagittal_slice_indices", "smooth_attention"]

logger = logging.getLogger(__name__)

OUTPUTS = ("fused", "mask", "attention")


def sagittal_slice_indices(num_slices: int, slice_step: int) -> list[int]:
    """Indices along LR of the sagittal slices the localisation net sees: every ``slice_step``-th, centred.

    Args:
        num_slices: number of sagittal slices (the LR size of the volume).
        slice_step: take every ``slice_step``-th slice (the paper's n = 8).

    Returns:
        ``[start, start + slice_step, ...]`` with ``start = ((num_slices - 1) % slice_step) // 2``, so the unused
        slices are shared between both ends; one slice (the middle one) when ``num_slices <= slice_step``.

    Raises:
        ValueError: if ``num_slices`` or ``slice_step`` is not positive.
    """
    if num_slices < 1 or slice_step < 1:
        raise ValueError(f"num_slices and slice_step must be positive, got {num_slices}, {slice_step}.")
    start = ((num_slices - 1) % slice_step) // 2
    return list(range(start, num_slices, slice_step))


def smooth_attention(vol: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Step c: 3D Gaussian smoothing of an attention volume ``(B, 1, LR, AP, SI)``, ``sigma`` voxels per axis.

    Truncated at 4 sigma, replicate padding at the border; 0 on an axis: no smoothing along it.
    """
    sig = _per_axis(sigma, "sigma")
    if not any(sig):
        return vol
    kernels = [
        gaussian_1d(torch.tensor(s), truncated=4.0).to(vol) if s > 0 else torch.ones(1).to(vol)
        for s in sig
    ]
    return separable_filtering(vol, kernels, mode="replicate")


def load_localization_weights(net: nn.Module, path: str | os.PathLike, what: str = "localisation net") -> None:
    """Load a localisation-net checkpoint (or, with ``what``, another net's) with ``torch.load(weights_only=True)``.

    Args:
        net: the localisation net.
        path: a raw ``state_dict``, or a dict holding it under ``"model"`` or ``"network"`` (MONAI's
            ``CheckpointSaver`` / the project's checkpoint handler).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not a plain-tensor checkpoint (refused by ``weights_only=True``), holds no state
            dict, or its weights do not fit ``net``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} checkpoint not found.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: not a plain tensor checkpoint (torch.load(weights_only=True) refused it): {e}"
        ) from e
    if isinstance(state, Mapping):
        for key in ("model", "network"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or one under 'model' / 'network').")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: the weights do not fit the {what}: {e}") from e


class _BlockUpsampled(nn.Module):
    """The localisation net with its 1/``factor`` map repeated over each ``factor x factor`` block (input size)."""

    def __init__(self, net: nn.Module, factor: int) -> None:
        super().__init__()
        self.net = net
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        want = (x.shape[0], 1, x.shape[2] // self.factor, x.shape[3] // self.factor)
        if tuple(y.shape) != want:
            raise ValueError(
                f"the localisation net maps a patch {list(x.shape)} to {list(y.shape)}; expected {list(want)} "
                f"(one spine-fraction channel at 1/{self.factor} resolution, i.e. padding='same')."
            )
        return y.repeat_interleave(self.factor, dim=2).repeat_interleave(self.factor, dim=3)


def _per_axis(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    vals = (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(vals) != 3 or any(not v >= 0 for v in vals):
        raise ValueError(f"{name} must be a non-negative number or 3 of them (LR, AP, SI), got {value!r}.")
    return vals  # type: ignore[return-value]


def _case_names(inputs: Any, batch: int) -> list[str]:
    """``filename_or_obj`` of each batch item of a (batched) ``MetaTensor``, else ``case <i>``."""
    names = inputs.meta.get("filename_or_obj") if isinstance(inputs, MetaTensor) else None
    if isinstance(names, str):
        names = [names] * batch
    if isinstance(names, Sequence) and len(names) == batch:
        return [str(n) for n in names]
    return [f"case {i}" for i in range(batch)]


class AttentionFusionInferer(Inferer):
    """Attention-driven two-stage inference (see module docstring for every step and choice).

    Args:
        localization_net: the 2D localisation net (e.g. ``AttentionLocalisationNet2D()``, ``padding="same"``), or
            None when ``use_localization=False``.
        localization_ckpt: optional checkpoint of ``localization_net`` (see :func:`load_localization_weights`).
        roi_size: segmentation window ``(LR, AP, SI)`` (``-1``: the whole axis). Default ``(12, 188, 188)``.
        sw_batch_size: segmentation windows per forward pass.
        overlap: overlap of the segmentation windows.
        mode: blending of the segmentation windows, ``"constant"`` or ``"gaussian"``.
        slice_step: localisation on every ``slice_step``-th sagittal slice (paper: 8).
        localization_roi_size: 2D patch ``(AP, SI)`` of the localisation net, multiples of ``map_factor`` (paper:
            160 x 160); None: the whole slice at once.
        localization_overlap: overlap of the localisation patches.
        localization_sw_batch_size: localisation patches per forward pass.
        slice_batch_size: sagittal slices handled together (bounds the memory of stage 1).
        map_factor: down-sampling factor of the localisation net (16).
        sigma: Gaussian smoothing of the attention volume, voxels, one value or one per axis ``(LR, AP, SI)``; 0
            on an axis: no smoothing along it.
        threshold: attention above it is spine (tune on validation cases).
        dilation: binary dilation of the mask, voxels, one value or one per axis (default 0).
        use_localization: False: plain sliding-window segmentation, no localisation net needed.
        use_fusion: False: the localisation net is kept but not applied (stage 1 not computed for ``"fused"``).
        output: ``"fused"`` (segmentation logits after late fusion), ``"mask"`` (stage-1 binary mask) or
            ``"attention"`` (stage-1 smoothed spine-probability volume).
        background_channel: for a multi-channel softmax segmentation net, its background channel (set to
            ``+logit_fill`` outside the mask); None: every channel is set to ``-logit_fill`` (sigmoid outputs).
        logit_fill: magnitude of the logits written outside the mask.
        progress: show progress bars (slices of stage 1, windows of both stages).

    Raises:
        ValueError: on inconsistent or out-of-range settings (e.g. no ``localization_net`` while
            ``use_localization`` is True, a localisation patch that is not a multiple of ``map_factor``), or a
            checkpoint that does not fit; FileNotFoundError: for a missing checkpoint.

    Example (bundle ``inference.json``)::

        "inferer": {"_target_": "spine_monai.inferers.AttentionFusionInferer",
                    "localization_net": {"_target_": "spine_monai.networks.nets.AttentionLocalisationNet2D"},
                    "localization_ckpt": "$@bundle_root + '/models/localization.pt'",
                    "roi_size": [12, 188, 188], "threshold": "@attention_threshold"}
    """

    def __init__(
        self,
        localization_net: nn.Module | None = None,
        localization_ckpt: str | os.PathLike | None = None,
        roi_size: Sequence[int] | int = (12, 188, 188),
        sw_batch_size: int = 4,
        overlap: Sequence[float] | float = 0.25,
        mode: str = "constant",
        slice_step: int = 8,
        localization_roi_size: Sequence[int] | None = (160, 160),
        localization_overlap: float = 0.5,
        localization_sw_batch_size: int = 16,
        slice_batch_size: int = 8,
        map_factor: int = 16,
        sigma: float | Sequence[float] = (4.0, 8.0, 8.0),
        threshold: float = 0.1,
        dilation: int | Sequence[int] = 0,
        use_localization: bool = True,
        use_fusion: bool = True,
        output: str = "fused",
        background_channel: int | None = None,
        logit_fill: float = LOGIT_FILL,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
        if use_localization and localization_net is None:
            raise ValueError("use_localization=True needs a localization_net (or set use_localization=False).")
        if not use_localization and output != "fused":
            raise ValueError(f"output={output!r} is stage 1's result and needs use_localization=True.")
        if localization_ckpt is not None and localization_net is None:
            raise ValueError(f"localization_ckpt={str(localization_ckpt)!r} given without a localization_net.")
        for name, v in (("slice_step", slice_step), ("slice_batch_size", slice_batch_size),
                        ("map_factor", map_factor), ("localization_sw_batch_size", localization_sw_batch_size),
                        ("sw_batch_size", sw_batch_size)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        if localization_roi_size is not None:
            loc_roi = tuple(int(r) for r in localization_roi_size)
            if len(loc_roi) != 2 or any(r < map_factor or r % map_factor for r in loc_roi):
                raise ValueError(
                    f"localization_roi_size must be 2 positive multiples of map_factor={map_factor} (AP, SI) or None "
                    f"(whole slice), got {localization_roi_size!r}."
                )
        if not 0.0 <= localization_overlap < 1.0:
            raise ValueError(f"localization_overlap must be in [0, 1), got {localization_overlap!r}.")
        dil = _per_axis(dilation, "dilation")
        if any(d != int(d) for d in dil):
            raise ValueError(f"dilation must be whole voxels, got {dilation!r}.")
        if not logit_fill > 0:
            raise ValueError(f"logit_fill must be positive, got {logit_fill!r}.")
        self.localization_net = localization_net
        self._ckpt_mtime: float | None = None
        if localization_net is not None and localization_ckpt is not None:
            load_localization_weights(localization_net, localization_ckpt)
            self._ckpt_mtime = os.path.getmtime(localization_ckpt)
        self.localization_ckpt = localization_ckpt
        self.roi_size = roi_size
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = overlap
        self.mode = mode
        self.slice_step = int(slice_step)
        self.localization_roi_size = None if localization_roi_size is None else loc_roi
        self.localization_overlap = float(localization_overlap)
        self.slice_batch_size = int(slice_batch_size)
        self.map_factor = int(map_factor)
        self.sigma = _per_axis(sigma, "sigma")
        self.threshold = float(threshold)
        self.dilation = tuple(int(d) for d in dil)
        self.use_localization = bool(use_localization)
        self.use_fusion = bool(use_fusion)
        self.output = output
        self.background_channel = background_channel
        self.logit_fill = float(logit_fill)
        self.progress = bool(progress)
        self.seg_inferer = SlidingWindowInferer(roi_size, sw_batch_size, overlap, mode=mode, progress=progress)
        self.localization_inferer = (
            None
            if self.localization_roi_size is None
            else SlidingWindowInferer(self.localization_roi_size, int(localization_sw_batch_size),
                                      self.localization_overlap, mode="constant", progress=False)
        )

    # ---------------------------------------------------------------- stage 1
    def reload_if_changed(self) -> bool:
        """Reload ``localization_ckpt`` when the file changed since it was loaded (a server kept this inferer while
        training wrote new weights, e.g. MONAI Label's ``/train``); the smoothing, threshold and dilation recorded
        with the new weights (``localization_config.json``) replace the current ones. Called at every inference.

        Returns:
            True when new weights were loaded.
        """
        path = self.localization_ckpt
        if path is None or self.localization_net is None or not os.path.isfile(path):
            return False
        mtime = os.path.getmtime(path)
        if self._ckpt_mtime is not None and mtime == self._ckpt_mtime:
            return False
        load_localization_weights(self.localization_net, path)
        self._ckpt_mtime = mtime
        from spine_monai.bundle.record import read_settings

        settings = read_settings(path)
        if "attention_sigma" in settings:
            self.sigma = _per_axis(settings["attention_sigma"], "sigma")
        if "attention_threshold" in settings:
            self.threshold = float(settings["attention_threshold"])
        if "attention_dilation" in settings:
            self.dilation = tuple(int(d) for d in _per_axis(settings["attention_dilation"], "dilation"))
        logger.info("reloaded the localisation net from %s (sigma %s, threshold %g)", path, list(self.sigma),
                    self.threshold)
        return True

    def attention(self, inputs: torch.Tensor) -> torch.Tensor:
        """Stage 1, steps a-c: the smoothed spine-probability volume.

        Args:
            inputs: RAS volume ``(B, C, LR, AP, SI)``.

        Returns:
            Float32 tensor ``(B, 1, LR, AP, SI)`` on the input's device (a plain tensor).

        Raises:
            ValueError: if ``inputs`` is not 5D, there is no localisation net, or its output has the wrong size.
        """
        if inputs.dim() != 5:
            raise ValueError(f"expected a RAS volume (B, C, LR, AP, SI), got shape {list(inputs.shape)}.")
        if self.localization_net is None:
            raise ValueError("no localization_net: stage 1 is not available.")
        self.reload_if_changed()
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        b, c, n_lr, n_ap, n_si = x.shape
        idx = sagittal_slice_indices(n_lr, self.slice_step)
        net = _BlockUpsampled(self.localization_net.to(x.device).eval(), self.map_factor)
        # (B, C, K, AP, SI) -> (B, K, C, AP, SI) -> (B*K, C, AP, SI): one 2D image per sampled sagittal slice
        slices = x[:, :, idx].transpose(1, 2).reshape(b * len(idx), c, n_ap, n_si)
        chunks = torch.split(slices, self.slice_batch_size)
        if self.progress and len(chunks) > 1:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="localisation (sagittal slices)", leave=False)
        maps = []
        with torch.no_grad():
            for chunk in chunks:
                maps.append(self._localize_slices(chunk, net).float())
        # (B*K, 1, AP, SI) -> (B, 1, K, AP, SI)
        sampled = torch.cat(maps).reshape(b, len(idx), n_ap, n_si).unsqueeze(1)
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return self._smooth(self._interpolate_lr(sampled, idx, n_lr))

    def _localize_slices(self, slices: torch.Tensor, net: nn.Module) -> torch.Tensor:
        """Full-resolution block map ``(N, 1, AP, SI)`` of sagittal slices ``(N, C, AP, SI)``."""
        if self.localization_inferer is not None:
            return self.localization_inferer(slices, net)
        n_ap, n_si = slices.shape[2:]
        f = self.map_factor
        padded = F.pad(slices, (0, (-n_si) % f, 0, (-n_ap) % f))  # zero-pad to a multiple of the block size
        return net(padded)[:, :, :n_ap, :n_si]

    @staticmethod
    def _interpolate_lr(sampled: torch.Tensor, idx: list[int], n_lr: int) -> torch.Tensor:
        """Linear interpolation across LR between the sampled slices ``(B, 1, K, AP, SI)`` -> ``(B, 1, LR, AP, SI)``;
        constant beyond the first and last sampled slice."""
        if len(idx) == 1:
            return sampled.expand(-1, -1, n_lr, -1, -1).contiguous()
        pos = torch.arange(n_lr, device=sampled.device, dtype=torch.float32)
        at = torch.tensor(idx, device=sampled.device, dtype=torch.float32)
        j = (torch.searchsorted(at, pos, right=True) - 1).clamp(0, len(idx) - 2)  # left neighbour of each slice
        w = ((pos - at[j]) / (at[j + 1] - at[j])).clamp(0.0, 1.0).view(1, 1, -1, 1, 1)
        return sampled[:, :, j] * (1.0 - w) + sampled[:, :, j + 1] * w

    def _smooth(self, vol: torch.Tensor) -> torch.Tensor:
        """3D Gaussian smoothing with ``sigma`` voxels per axis (replicate padding)."""
        return smooth_attention(vol, self.sigma)

    def mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """Stage 1, steps a-d: the binary spine mask.

        Args:
            inputs: RAS volume ``(B, C, LR, AP, SI)``.

        Returns:
            Bool tensor ``(B, 1, LR, AP, SI)`` on the input's device; a warning is logged for each case without
            any spine.

        Raises:
            ValueError: as :meth:`attention`.
        """
        att = self.attention(inputs)
        mask = att > self.threshold
        if any(self.dilation):
            k = tuple(2 * d + 1 for d in self.dilation)
            mask = F.max_pool3d(mask.float(), kernel_size=k, stride=1, padding=self.dilation) > 0
        empty = ~mask.flatten(1).any(dim=1)
        if empty.any():
            names = _case_names(inputs, mask.shape[0])
            peak = att.flatten(1).amax(dim=1)
            for i in torch.nonzero(empty).flatten().tolist():
                logger.warning(
                    "%s: stage 1 (localisation) found no spine: the attention map peaks at %.3g, not above "
                    "threshold %g, so the fused segmentation is all background. Check the localisation weights, "
                    "the intensity preprocessing and the field of view, or lower the threshold.",
                    names[i], float(peak[i]), self.threshold,
                )
        return mask

    # ---------------------------------------------------------------- both stages
    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the method on a RAS volume.

        Args:
            inputs: RAS volume ``(B, C, LR, AP, SI)``, intensity-preprocessed (a ``MetaTensor`` from the bundle's
                preprocessing, or a tensor).
            network: the segmentation net (called through MONAI's ``SlidingWindowInferer``).
            args: passed to ``network``.
            kwargs: passed to ``network``.

        Returns:
            ``output="fused"``: the fused logits ``(B, out_channels, LR, AP, SI)``, of the type a plain
            ``SlidingWindowInferer`` returns (a ``MetaTensor`` with the input's meta for a ``MetaTensor`` input);
            ``"mask"`` / ``"attention"``: float32 ``(B, 1, LR, AP, SI)`` of the input's type.

        Raises:
            ValueError: if ``inputs`` is not 5D, the segmentation output is not one tensor of the input's spatial
                size, or the localisation net's output has the wrong size.
        """
        if inputs.dim() != 5:
            raise ValueError(f"expected a RAS volume (B, C, LR, AP, SI), got shape {list(inputs.shape)}.")
        if self.output != "fused":
            stage1 = self.mask(inputs).float() if self.output == "mask" else self.attention(inputs)
            return convert_to_dst_type(stage1, inputs, dtype=torch.float32)[0]
        if not (self.use_localization and self.use_fusion):
            return self.seg_inferer(inputs, network, *args, **kwargs)
        mask = self.mask(inputs)
        seg = self.seg_inferer(inputs, network, *args, **kwargs)
        if not isinstance(seg, torch.Tensor):
            raise ValueError(f"late fusion needs one output tensor from the segmentation net, got {type(seg)}.")
        return late_fusion(seg, mask.to(seg.device), background_channel=self.background_channel, logits=True,
                           logit_fill=self.logit_fill)
