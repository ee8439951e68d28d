"""The twelve 2D networks compared by Zhou et al., "Review of Deep Learning Models for Spine Segmentation" (2022)."""
