"""Networks and blocks of the spine_monai bundles.

``get_network(name, in_channels, out_channels, **kw)`` builds the review's twelve 2D networks by name
(``list_networks()`` lists them); the per-paper networks live in :mod:`spine_monai.networks.nets`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_network", "list_networks"]


def __getattr__(name: str) -> Any:  # lazy, so importing one network does not import every library
    if name in __all__:
        from spine_monai.networks import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
