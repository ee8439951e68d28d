"""Tests of ``SagittalSliceInferer``: a 2D network over the sagittal slices of a volume, or on a 2D image."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.data import MetaTensor

from spine_monai.inferers import SagittalSliceInferer


class _Recorder(nn.Module):
    """A 2D "network" (1x1 conv, 1 -> 3 channels) that records the batch sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4
        self.batches.append(int(x.shape[0]))
        return self.conv(x)


def test_volume_equals_per_slice_application_in_chunks():
    torch.manual_seed(0)
    net = _Recorder().eval()
    vol = torch.randn(2, 1, 5, 12, 10)  # two volumes of 5 sagittal slices
    with torch.no_grad():
        out = SagittalSliceInferer(slice_chunk=4)(vol, net)
        expected = torch.stack([torch.stack([net.conv(vol[b, :, s][None])[0] for s in range(5)], dim=1)
                                for b in range(2)])
    assert tuple(out.shape) == (2, 3, 5, 12, 10)
    torch.testing.assert_close(out, expected)
    assert net.batches[:3] == [4, 4, 2]  # 10 slices in chunks of at most 4


def test_2d_input_passes_through_and_meta_is_kept():
    net = _Recorder().eval()
    img = torch.randn(1, 1, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(SagittalSliceInferer()(img, net), net.conv(img))
    vol = MetaTensor(torch.randn(1, 1, 3, 8, 8), affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])))
    with torch.no_grad():
        out = SagittalSliceInferer(slice_chunk=2, progress=True)(vol, net)
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (1, 3, 3, 8, 8)
    torch.testing.assert_close(out.affine, vol.affine)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="slice_chunk"):
        SagittalSliceInferer(slice_chunk=0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        SagittalSliceInferer()(torch.randn(1, 8, 8), _Recorder())
