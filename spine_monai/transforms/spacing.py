"""Resampling that also works inside MONAI Label.

MONAI Label puts string entries such as ``image_path`` into the data dictionary. ``monai.transforms.Spacingd``
(monai 1.6.1) updates every ``<key>_*`` entry as if it were a meta dictionary, so it fails with
``'str' object has no attribute 'update'`` (HTTP 500 from ``/infer``). :class:`SafeSpacingd` hides the non-dict
``<key>_*`` entries from ``Spacingd`` and puts them back afterwards; everything else, including inversion by
``Invertd``, is ``Spacingd``'s own behaviour.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import Spacingd

__all__ = ["SafeSpacingd"]


class SafeSpacingd(Spacingd):
    """``Spacingd`` that ignores non-dict ``<key>_*`` entries (see the module docstring). Same arguments."""

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        hidden: dict[Hashable, Any] = {}
        for key in self.keys:
            for other in list(d.keys()):
                if isinstance(other, str) and other.startswith(f"{key}_") and not isinstance(d[other], dict):
                    hidden[other] = d.pop(other)
        out = super().__call__(d, lazy=lazy)
        out.update(hidden)
        return out
