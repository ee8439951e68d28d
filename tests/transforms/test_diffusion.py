"""Tests for the curvature anisotropic diffusion transform (ITK) used as CT preprocessing of the attention-driven
bundle."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from scipy.ndimage import gaussian_filter

from spine_monai.errors import InputError
from spine_monai.transforms import CurvatureAnisotropicDiffusion, CurvatureAnisotropicDiffusiond
from spine_monai.transforms.diffusion import stable_time_step

pytestmark = pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")  # ITK's SWIG wrappers


def _noisy_step(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A unit step along the last axis (at its middle) plus Gaussian noise of std 0.1, channel-first."""
    clean = np.zeros((1, *shape), np.float32)
    clean[..., shape[-1] // 2 :] = 1.0
    noisy = clean + 0.1 * np.random.default_rng(seed).standard_normal(clean.shape).astype(np.float32)
    return clean, noisy


def _noise_and_step(img: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """Noise std in the flat regions (3 voxels away from the edge) and the height of the step kept at the edge."""
    n = img.shape[-1]
    flat = np.r_[0 : n // 2 - 3, n // 2 + 3 : n]
    noise = float(np.std(img[..., flat] - clean[..., flat]))
    step = float(img[..., n // 2].mean() - img[..., n // 2 - 1].mean())
    return noise, step


@pytest.mark.parametrize("shape", [(16, 24), (12, 12, 24)])
def test_reduces_noise_and_keeps_the_edge_better_than_a_gaussian(shape):
    clean, noisy = _noisy_step(shape)
    out = CurvatureAnisotropicDiffusion()(torch.from_numpy(noisy)).numpy()
    noise, step = _noise_and_step(out, clean)
    noise_in, _ = _noise_and_step(noisy, clean)
    assert noise < 0.35 * noise_in  # homogeneous regions smoothed
    assert step > 0.85  # the unit step is kept
    # the narrowest Gaussian blur that removes as much noise flattens the edge
    def blur(s: float) -> np.ndarray:
        return gaussian_filter(noisy, (0, *[s] * len(shape)))

    sigma = next(s for s in np.arange(0.25, 3.0, 0.05) if _noise_and_step(blur(s), clean)[0] <= noise)
    _, gauss_step = _noise_and_step(blur(sigma), clean)
    assert gauss_step < 0.75 * step, (sigma, gauss_step, step)


def test_metatensor_meta_affine_dtype_and_determinism():
    _, noisy = _noisy_step((8, 10, 12))
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-5.0, 3.0, 7.0)
    img = MetaTensor(torch.from_numpy(noisy).double(), affine=torch.as_tensor(affine),
                     meta={"filename_or_obj": "case1.nii.gz"})
    out = CurvatureAnisotropicDiffusion(iterations=2)(img)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.shape == img.shape
    torch.testing.assert_close(out.affine, img.affine)
    assert out.meta["filename_or_obj"] == "case1.nii.gz"
    assert torch.equal(out, CurvatureAnisotropicDiffusion(iterations=2)(img))  # deterministic


def test_per_channel_2d_and_array_types():
    rng = np.random.default_rng(1)
    two = rng.standard_normal((2, 10, 14)).astype(np.float64)
    two[1] *= 100.0  # channels are diffused independently (conductance is relative to each channel's gradients)
    t = CurvatureAnisotropicDiffusion(iterations=3)
    out = t(two)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 10, 14)
    np.testing.assert_allclose(out[1], t(two[1:])[0], rtol=1e-6)
    np.testing.assert_allclose(out[0], t(two[:1])[0], rtol=1e-6)
    ints = torch.from_numpy((rng.random((1, 6, 6, 6)) * 1000).astype(np.int16))
    assert t(ints).dtype == torch.float32
    np.testing.assert_array_equal(CurvatureAnisotropicDiffusion(iterations=0)(two), two.astype(np.float32))


def test_spacing_is_honoured():
    _, noisy = _noisy_step((8, 8, 12))
    iso = MetaTensor(torch.from_numpy(noisy), affine=torch.eye(4))
    aniso = MetaTensor(torch.from_numpy(noisy), affine=torch.diag(torch.tensor([3.0, 1.0, 1.0, 1.0])))
    t = CurvatureAnisotropicDiffusion(iterations=3, time_step=0.05)
    out_iso, out_aniso = t(iso), t(aniso)
    assert (out_iso - out_aniso).abs().max() > 1e-3  # the thick axis diffuses less
    torch.testing.assert_close(t(torch.from_numpy(noisy), spacing=(3.0, 1.0, 1.0)), out_aniso.as_tensor())
    off = CurvatureAnisotropicDiffusion(iterations=3, time_step=0.05, use_image_spacing=False)
    torch.testing.assert_close(off(aniso).as_tensor(), out_iso.as_tensor())
    # the axis order maps to ITK's reversed order: a thick first axis differs from a thick last axis
    last = MetaTensor(torch.from_numpy(noisy), affine=torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0])))
    assert (t(last) - out_aniso).abs().max() > 1e-3


def test_time_step_default_and_clamp(caplog):
    assert stable_time_step((1.0, 1.0, 1.0)) == 0.0625 and stable_time_step((1.0, 1.0)) == 0.125
    assert stable_time_step((0.5, 1.0, 2.0)) == 0.03125
    _, noisy = _noisy_step((6, 8, 10))
    fine = MetaTensor(torch.from_numpy(noisy), affine=torch.diag(torch.tensor([0.5, 1.0, 1.0, 1.0])),
                      meta={"filename_or_obj": "fine.nii.gz"})
    auto = CurvatureAnisotropicDiffusion(iterations=2)(fine)
    with caplog.at_level(logging.WARNING, logger="spine_monai.transforms.diffusion"):
        clamped = CurvatureAnisotropicDiffusion(iterations=2, time_step=0.0625)(fine)
    assert "fine.nii.gz" in caplog.text and "stability limit 0.03125" in caplog.text
    torch.testing.assert_close(clamped, auto)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input_raises(value):
    img = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "bad.nii.gz"})
    img[0, 1, 2, 3] = value
    with pytest.raises(InputError, match=r"bad\.nii\.gz: 1 non-finite"):
        CurvatureAnisotropicDiffusion()(img)


def test_dict_transform_in_compose():
    _, noisy = _noisy_step((6, 8, 10))
    data = {"image": MetaTensor(torch.from_numpy(noisy)), "label": torch.ones(1, 6, 8, 10), "image_path": "x"}
    out = Compose([CurvatureAnisotropicDiffusiond(keys="image", iterations=2)])(data)
    torch.testing.assert_close(out["image"], CurvatureAnisotropicDiffusion(iterations=2)(data["image"]))
    assert out["label"] is data["label"] and out["image_path"] == "x"
    assert CurvatureAnisotropicDiffusiond(keys=["image", "other"], allow_missing_keys=True)(data)["image"].shape
    with pytest.raises(KeyError):
        CurvatureAnisotropicDiffusiond(keys="other")(data)


@pytest.mark.parametrize(
    "kwargs", [{"iterations": -1}, {"iterations": 1.5}, {"time_step": 0.0}, {"conductance": 0.0},
               {"conductance": float("nan")}],
)
def test_bad_args(kwargs):
    with pytest.raises(ValueError):
        CurvatureAnisotropicDiffusion(**kwargs)


def test_bad_shapes_and_spacing():
    t = CurvatureAnisotropicDiffusion()
    with pytest.raises(ValueError, match="channel-first"):
        t(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="spacing"):
        t(torch.zeros(1, 4, 4), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        t(torch.zeros(1, 4, 4), spacing=(1.0, 0.0))
