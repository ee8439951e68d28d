"""Choosing the attention mask's Gaussian width and threshold on the validation cases (stage 1 of the CT method).

Sekuboyina et al., MSKI 2017, Section 2.1: the up-sampled attention volume "is filtered with a 3D Gaussian kernel
N(0, Sigma) ... This attention-map is thresholded and converted to a binary mask", Sigma and the threshold "chosen
by validation". :class:`AttentionMaskSearch` is that validation: an ignite metric over the stage-1 attention volumes
BEFORE smoothing (``AttentionFusionInferer(output="attention", sigma=0)``) and the labels. For every ``sigma`` of
``sigmas`` and every ``threshold`` of ``thresholds`` it scores the mask ``smooth(attention, sigma) > threshold``
against the spine label (Dice and recall per volume, averaged over volumes). The mask only removes: after the late
fusion a spine voxel outside it is lost for good, while a background voxel inside it costs nothing unless the
segmentation net marks it. So the chosen pair is the one with the best mean Dice (the tightest mask) among those
whose mean recall is at least ``min_recall``; when none reaches it, the pair with the highest recall. Its Dice is the
metric's value. (Choosing on Dice alone, our first version, kept masks of 0.6 Dice that cut half of the spine away:
fused test Dice 59.5 % with 48 % recall on CT phantoms, while the segmentation net alone reached 90 % on validation.)
The winning pair is written into ``engine.state.metrics`` as ``"attention_sigma"`` and ``"attention_threshold"``, where
:class:`~spine_monai.handlers.CheckpointManager` (``tuned_settings``) takes it into the record of the checkpoint it
saves, so inference uses the pair chosen with the weights it loads.

Our choices (the paper gives neither grid nor criterion): ``min_recall`` 0.98 by default; ties go to the larger
sigma and then to the lower threshold; Dice and recall of the empty mask against an empty label are 1.
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
        min_recall: the mean recall (share of spine voxels inside the mask) a pair must reach to be chosen.
        output_transform: maps the engine output to ``(attention, label)``, each a ``(B, 1, LR, AP, SI)`` tensor or
            a list of ``(1, LR, AP, SI)`` tensors (MONAI's ``from_engine(["pred", "label"])``).
        device: where the sums are kept.

    Attributes (after :meth:`compute`): ``best_sigma``, ``best_threshold``, ``best_recall``, ``table`` and
    ``recall_table`` (mean Dice / recall per ``(sigma index, threshold index)``).

    Raises:
        ValueError: for an empty grid, a threshold outside (0, 1) or a negative sigma; at :meth:`compute`, when no
            volume was seen.
    """

    def __init__(self, sigmas: Sequence[float | Sequence[float]], thresholds: Sequence[float],
                 min_recall: float = 0.98, output_transform: Callable = lambda x: x,
                 device: str | torch.device = "cpu") -> None:
        self.sigmas = [s if isinstance(s, (int, float)) else [float(v) for v in s] for s in sigmas]
        self.thresholds = [float(t) for t in thresholds]
        if not self.sigmas or not self.thresholds:
            raise ValueError("sigmas and thresholds must each hold at least one value.")
        if any(not 0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie in (0, 1), got {list(thresholds)}.")
        if not 0.0 <= float(min_recall) <= 1.0:
            raise ValueError(f"min_recall must lie in [0, 1], got {min_recall!r}.")
        self.min_recall = float(min_recall)
        for s in self.sigmas:
            smooth_attention(torch.zeros(1, 1, 1, 1, 1), s)  # validates the value (ValueError for a bad sigma)
        self.best_sigma: float | list[float] | None = None
        self.best_threshold: float | None = None
        self.table: torch.Tensor | None = None
        self.recall_table: torch.Tensor | None = None
        self.best_recall: float | None = None
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._dice_sum = torch.zeros(len(self.sigmas), len(self.thresholds), dtype=torch.float64)
        self._recall_sum = torch.zeros_like(self._dice_sum)
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
                self._recall_sum[i] += inter / n_truth if n_truth > 0 else torch.ones_like(inter)
            self._count += 1

    def compute(self) -> float:
        dice_sum, recall_sum, count = self._dice_sum, self._recall_sum, self._count
        if idist.get_world_size() > 1:  # validation volumes are split over the ranks
            dice_sum = idist.all_reduce(dice_sum.clone())
            recall_sum = idist.all_reduce(recall_sum.clone())
            count = int(idist.all_reduce(torch.tensor(float(count))))
        if count == 0:
            raise ValueError("AttentionMaskSearch: no validation volume was seen.")
        table, recall = dice_sum / count, recall_sum / count
        cells = [(i, j) for i in range(table.shape[0]) for j in range(table.shape[1])]
        allowed = [c for c in cells if float(recall[c]) >= self.min_recall - 1e-12]
        if allowed:
            score = {c: float(table[c]) for c in allowed}
        else:  # no pair keeps enough of the spine: keep the most of it
            score = {c: float(recall[c]) for c in cells}
        best = max(score.values())
        # ties: the larger sigma (later in the grid when the grid is increasing), then the lower threshold
        i, j = max((c for c, v in score.items() if v >= best - 1e-12), key=lambda ij: (ij[0], -ij[1]))
        self.table, self.recall_table = table, recall
        self.best_sigma, self.best_threshold = self.sigmas[i], self.thresholds[j]
        self.best_recall = float(recall[i, j])
        return float(table[i, j])

    def completed(self, engine: Any, name: str) -> None:
        super().completed(engine, name)
        engine.state.metrics["attention_sigma"] = self.best_sigma
        engine.state.metrics["attention_threshold"] = self.best_threshold
        engine.state.metrics["attention_mask_recall"] = self.best_recall
