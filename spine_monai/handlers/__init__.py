"""Ignite/MONAI handlers used by the bundle configs."""

from __future__ import annotations

from spine_monai.handlers.attention_search import AttentionMaskSearch
from spine_monai.handlers.checkpoint import CheckpointManager, atomic_torch_save, shared_handler

__all__ = ["AttentionMaskSearch", "CheckpointManager", "atomic_torch_save", "shared_handler"]
