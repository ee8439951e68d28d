"""Transforms used by the bundles: input validation, MONAI-Label-safe resampling, atomic writing."""

from __future__ import annotations

from spine_monai.transforms.io import AtomicNibabelWriter
from spine_monai.transforms.spacing import SafeSpacingd
from spine_monai.transforms.validate import InputError, ValidateImaged

__all__ = ["AtomicNibabelWriter", "InputError", "SafeSpacingd", "ValidateImaged"]
