"""Transforms used by the bundles: input checks (files, images, labels, memory), MONAI-Label-safe resampling,
atomic writing."""

from __future__ import annotations

from spine_monai.errors import InputError
from spine_monai.transforms.diffusion import CurvatureAnisotropicDiffusion, CurvatureAnisotropicDiffusiond
from spine_monai.transforms.files import ValidateFiled
from spine_monai.transforms.io import AtomicNibabelWriter
from spine_monai.transforms.labels import ValidateLabeld
from spine_monai.transforms.memory import CheckMemoryd
from spine_monai.transforms.spacing import SafeSpacingd
from spine_monai.transforms.validate import ValidateHUd, ValidateImaged

__all__ = ["AtomicNibabelWriter", "CheckMemoryd", "CurvatureAnisotropicDiffusion", "CurvatureAnisotropicDiffusiond",
           "InputError", "SafeSpacingd", "ValidateFiled", "ValidateHUd", "ValidateImaged", "ValidateLabeld"]
