"""Choosing the attention mask's Gaussian width and threshold on the validation cases (stage 1 of the CT method).

Sekuboyina et al., MSKI 2017, Section 2.1: the up-sampled attention volume "is filtered with a 3D Gaussian kernel
N(0, Sigma) ... This attention-map is thresholded and converted to a binary mask", Sigma and the threshold "chosen
by validation". :class:`AttentionMaskSearch` is that validation: an ignite metric over the stage-1 attention volumes
BEFORE smoothing (``AttentionFusionInferer(output="attention", sigma=0)``) and the labels. For every ``sigma`` of
``sigmas`` and every ``threshold`` of ``thresholds`` it scores the mask ``smooth(attention, sigma) > threshold``
against the spine label (Dice per volume, averaged over volumes) and reports the best mean Dice as its value. The
winning pair is written into ``engine.state.metrics`` as ``"attention_sigma"`` and ``"attention_threshold"``, where
:class:`~spine_monai.handlers.CheckpointManager` (``tuned_settings``) takes it into the record of the checkpoint it
saves, so inference uses the pair chosen with the weights it loads.

Our choices (the paper gives neither grid): ties go to the larger sigma and then to the lower threshold (a missed
spine voxel is lost for good after the fusion, a kept background voxel is only what the segmentation net adds);
Dice of the empty mask against an empty label is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.metrics import Metric

from spine_monai.inferers.two_stage import smooth_attention

__all__ = ["AttentionMaskSearch"]


def _as_items(value: Any) -> list[torch.Tensor]:
    """A batch tensor ``(B, 1, ...)`` or a list of ``(1, ...)`` tensors -> list of ``(1, ...)`` tensors."""
    if isinstance(value, torch.Tensor):
        return list(value)
    return [torch.as_tensor(v) for v in value]


class AttentionMaskSearch(Metric):
    """Best mean Dice of ``smooth(attention, sigma) > threshold`` over a grid (see the module docstring).

    Args:
        sigmas: Gaussian widths to try, each one value or three (LR, AP, SI), in voxels of the volume.
        thresholds: thresholds to try, in (0, 1).
        output_transform: maps the engine output to ``(attention, label)``, each a ``(B, 1, LR, AP, SI)`` tensor or
            a list of ``(1, LR, AP, SI)`` tensors (MONAI's ``from_engine(["pred", "label"])``).
        device: where the sums are kept.

    Attributes (after :meth:`compute`): ``best_sigma``, ``best_threshold``, ``table`` (mean Dice per
    ``(sigma index, threshold index)``).

    Raises:
        ValueError: for an empty grid, a threshold outside (0, 1) or a negative sigma; at :meth:`compute`, when no
            volume was seen.
    """

    def __init__(self, sigmas: Sequence[float | Sequence[float]], thresholds: Sequence[float],
                 output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        self.sigmas = [s if isinstance(s, (int, float)) else [float(v) for v in s] for s in sigmas]
        self.thresholds = [float(t) for t in thresholds]
        if not self.sigmas or not self.thresholds:
            raise ValueError("sigmas and thresholds must each hold at least one value.")
        if any(not 0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie in (0, 1), got {list(thresholds)}.")
        for s in self.sigmas:
            smooth_attention(torch.zeros(1, 1, 1, 1, 1), s)  # validates the value (ValueError for a bad sigma)
        self.best_sigma: float | list[float] | None = None
        self.best_threshold: float | None = None
        self.table: torch.Tensor | None = None
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._dice_sum = torch.zeros(len(self.sigmas), len(self.thresholds), dtype=torch.float64)
        self._count = 0

    def update(self, output: Sequence[Any]) -> None:
        attention, label = output
        thr = torch.tensor(self.thresholds, dtype=torch.float32)
        for att, lab in zip(_as_items(attention), _as_items(label), strict=True):
            att = att.detach().float().cpu()
            if hasattr(att, "as_tensor"):
                att = att.as_tensor()
            truth = (torch.as_tensor(lab).detach().cpu() > 0.5).reshape(-1)
            n_truth = truth.sum().double()
            for i, sigma in enumerate(self.sigmas):
                smoothed = smooth_attention(att[None], sigma).reshape(-1)
                # one sort per volume gives every threshold's |mask| and |mask & label|
                order = torch.sort(smoothed)
                values = order.values
                hit = truth[order.indices].double()
                hits_above = torch.flip(torch.cumsum(torch.flip(hit, [0]), 0), [0])  # hits at or above each rank
                first = torch.searchsorted(values, thr, right=True)  # first rank strictly above the threshold
                n_mask = (values.numel() - first).double()
                inter = torch.where(first < values.numel(), hits_above[first.clamp(max=values.numel() - 1)],
                                    torch.zeros_like(n_mask))
                denom = n_mask + n_truth
                dice = torch.where(denom > 0, 2.0 * inter / denom.clamp(min=1.0), torch.ones_like(denom))
                self._dice_sum[i] += dice
            self._count += 1

    def compute(self) -> float:
        dice_sum, count = self._dice_sum, self._count
        if idist.get_world_size() > 1:  # validation volumes are split over the ranks
            dice_sum = idist.all_reduce(dice_sum.clone())
            count = int(idist.all_reduce(torch.tensor(float(count))))
        if count == 0:
            raise ValueError("AttentionMaskSearch: no validation volume was seen.")
        table = dice_sum / count
        best = float(table.max())
        # ties: the larger sigma (later in the grid when the grid is increasing), then the lower threshold
        candidates = [(i, j) for i in range(table.shape[0]) for j in range(table.shape[1])
                      if float(table[i, j]) >= best - 1e-12]
        i, j = max(candidates, key=lambda ij: (ij[0], -ij[1]))
        self.table = table
        self.best_sigma, self.best_threshold = self.sigmas[i], self.thresholds[j]
        return best

    def completed(self, engine: Any, name: str) -> None:
        super().completed(engine, name)
        engine.state.metrics["attention_sigma"] = self.best_sigma
        engine.state.metrics["attention_threshold"] = self.best_threshold
