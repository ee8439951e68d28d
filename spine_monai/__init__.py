"""spine_monai: MONAI bundles and networks for spine segmentation.

The package holds the custom networks, blocks, losses, metrics, transforms and data tools that the bundles in
``bundles/`` reference from their JSON configs.
"""

from __future__ import annotations

__version__ = "0.1.0"
