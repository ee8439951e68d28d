"""Choosing the attention mask's sigma and threshold on validation volumes, and carrying them into the record."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from monai.engines import SupervisedEvaluator

from spine_monai.handlers import AttentionMaskSearch, CheckpointManager
from spine_monai.inferers import smooth_attention


def _dice(mask: torch.Tensor, truth: torch.Tensor) -> float:
    inter = (mask & truth).sum().item()
    total = mask.sum().item() + truth.sum().item()
    return 1.0 if total == 0 else 2.0 * inter / total


def _case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(1, 10, 12, 14)
    label[:, 3:7, 4:9, 2:12] = 1
    attention = (0.6 * label + 0.25 * torch.rand(label.shape, generator=g)).clamp(0, 1)
    return attention, label


def test_search_matches_brute_force_and_picks_the_best_pair():
    sigmas, thresholds = [0.0, [0.5, 1.0, 1.0]], [0.1, 0.3, 0.5, 0.7, 0.9]
    metric = AttentionMaskSearch(sigmas, thresholds, min_recall=0.0)  # no recall constraint: the best Dice
    cases = [_case(s) for s in range(3)]
    metric.reset()
    metric.update((torch.stack([c[0] for c in cases]), [c[1] for c in cases]))  # a batch and a list both work
    best = metric.compute()
    brute = torch.zeros(len(sigmas), len(thresholds), dtype=torch.float64)
    for i, s in enumerate(sigmas):
        for j, t in enumerate(thresholds):
            brute[i, j] = sum(_dice(smooth_attention(a[None], s)[0] > t, lab > 0.5) for a, lab in cases) / len(cases)
    assert torch.allclose(metric.table, brute, atol=1e-9)
    assert best == pytest.approx(float(brute.max()))
    i, j = divmod(int(torch.argmax(brute)), len(thresholds))
    assert metric.best_threshold == thresholds[j] and metric.best_sigma == sigmas[i]
    # the noisy map is cut between the noise (< 0.25) and the spine (>= 0.6): no smoothing, a middle threshold
    assert metric.best_sigma == 0.0 and metric.best_threshold in (0.3, 0.5)


def test_the_tightest_mask_that_keeps_the_spine_is_chosen():
    """Dice alone would cut the spine's faint border away; the recall floor keeps it."""
    label = torch.zeros(1, 8, 8, 8)
    label[:, 2:6, 2:6, 2:6] = 1
    attention = 0.9 * label
    attention[:, 2:6, 2:6, 2] = 0.15  # the spine's border: faint attention
    attention[:, 0, :, :] = 0.12  # a little stray attention elsewhere
    thresholds = [0.1, 0.13, 0.2, 0.5]
    loose = AttentionMaskSearch([0.0], thresholds, min_recall=0.0)
    strict = AttentionMaskSearch([0.0], thresholds, min_recall=0.98)
    for m in (loose, strict):
        m.reset()
        m.update(([attention], [label]))
    loose.compute(), strict.compute()
    assert loose.best_threshold == 0.13 and loose.best_recall == pytest.approx(1.0)  # 0.13 drops the stray, keeps all
    assert strict.best_threshold == 0.13
    strict_hi = AttentionMaskSearch([0.0], [0.2, 0.5], min_recall=0.98)  # nothing keeps the border: most recall
    strict_hi.reset()
    strict_hi.update(([attention], [label]))
    strict_hi.compute()
    assert strict_hi.best_threshold == 0.2 and strict_hi.best_recall == pytest.approx(0.75)
    assert float(strict_hi.recall_table[0, 0]) == pytest.approx(0.75)


def test_ties_go_to_the_lower_threshold_and_empty_cases_score_one():
    metric = AttentionMaskSearch([0.0], [0.2, 0.4, 0.6])
    metric.reset()
    label = torch.zeros(1, 4, 4, 4)
    label[:, 1:3, 1:3, 1:3] = 1
    metric.update(([label * 0.9], [label]))  # every threshold below 0.9 is perfect
    metric.update(([torch.zeros(1, 4, 4, 4)], [torch.zeros(1, 4, 4, 4)]))  # nothing there, nothing found
    assert metric.compute() == pytest.approx(1.0)
    assert metric.best_threshold == 0.2


@pytest.mark.parametrize("kwargs", [dict(sigmas=[], thresholds=[0.5]), dict(sigmas=[1.0], thresholds=[1.5]),
                                    dict(sigmas=[-1.0], thresholds=[0.5]),
                                    dict(sigmas=[1.0], thresholds=[0.5], min_recall=1.5)])
def test_bad_grids_are_refused(kwargs):
    with pytest.raises(ValueError):
        AttentionMaskSearch(**kwargs)


def test_no_volume_is_an_error():
    metric = AttentionMaskSearch([1.0], [0.5])
    metric.reset()
    with pytest.raises(ValueError, match="no validation volume"):
        metric.compute()


def test_chosen_pair_goes_into_the_saved_record(tmp_path):
    """An evaluator with the search as key metric: the checkpoint's record holds the chosen sigma and threshold."""
    attention, label = _case(0)
    data = [{"image": attention, "label": label}]

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    net = torch.nn.Conv3d(1, 1, 1)
    settings = {"attention_sigma": [4.0, 8.0, 8.0], "attention_threshold": 0.1, "features": [8]}
    manager = CheckpointManager(tmp_path, net, settings=settings, key_metric_filename="localization.pt",
                                tuned_settings=["attention_sigma", "attention_threshold"])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=torch.utils.data.DataLoader(data, batch_size=1),
        network=Identity(), inferer=lambda x, net: net(x),
        key_val_metric={"val_mask_dice": AttentionMaskSearch([0.0, 2.0], [0.1, 0.5, 0.9], min_recall=0.0,
                                                             output_transform=lambda o: (
                                                                 [o[0]["pred"]], [o[0]["label"]]))},
        val_handlers=[manager],
    )
    evaluator.run()
    record = json.loads((tmp_path / "localization_config.json").read_text())
    assert record["settings"]["attention_threshold"] == 0.5 and record["settings"]["attention_sigma"] == 0.0
    assert record["settings"]["features"] == [8]
    assert record["metric"]["value"] == pytest.approx(evaluator.state.metrics["val_mask_dice"])
    # resuming compares every setting except the tuned ones
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=0, iteration=0))
    manager.checkpoint_path.parent.mkdir(exist_ok=True)
    manager._trainer = trainer
    manager._epoch_completed(SimpleNamespace(state=SimpleNamespace(epoch=1, iteration=1, max_epochs=2)))
    again = CheckpointManager(tmp_path, net, settings=settings, key_metric_filename="localization.pt",
                              resume=True, tuned_settings=["attention_sigma", "attention_threshold"])
    again._load_checkpoint(SimpleNamespace(state=SimpleNamespace(epoch=0, iteration=0, max_epochs=2)))
    assert again.settings["attention_threshold"] == 0.5
