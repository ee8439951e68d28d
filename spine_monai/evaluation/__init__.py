"""Evaluation of bundles: k-fold cross-validation, the papers' comparison tables and a performance benchmark."""
