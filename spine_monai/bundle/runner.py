"""Run a bundle's own configs from Python (train, evaluate, infer), with progress bars.

The demo, cross-validation, comparison and ``segment`` commands all go through these functions, so they run exactly
what ``python -m monai.bundle run`` runs, with the same config ids, and only add overrides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["resolve_bundle", "config_files", "make_workflow", "train_bundle", "infer_bundle"]

logger = logging.getLogger(__name__)

REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def resolve_bundle(bundle: str | os.PathLike) -> Path:
    """A bundle folder from a path or a bundle name (looked up in ``./bundles`` and the repository's ``bundles/``).

    Raises:
        FileNotFoundError: if no bundle folder with ``configs/metadata.json`` is found.
    """
    candidates = [Path(bundle), Path.cwd() / "bundles" / str(bundle), REPO_BUNDLES / str(bundle)]
    for cand in candidates:
        if (cand / "configs" / "metadata.json").is_file():
            return cand.resolve()
    raise FileNotFoundError(
        f"bundle {bundle!r} not found (looked in {', '.join(str(c) for c in candidates)}); give the bundle folder."
    )


def config_files(bundle_root: Path, names: Sequence[str]) -> list[str]:
    """Paths of ``configs/<name>`` (``.json`` added when missing); overlays are applied in the given order."""
    files = []
    for name in names:
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = bundle_root / "configs" / (name if name.endswith((".json", ".yaml")) else f"{name}.json")
        if not path.is_file():
            raise FileNotFoundError(f"config {name!r} not found in {bundle_root / 'configs'}.")
        files.append(str(path))
    return files


def make_workflow(bundle: str | os.PathLike, configs: Sequence[str], workflow_type: str = "train",
                  **override: Any):
    """A ``monai.bundle.ConfigWorkflow`` over the bundle's configs with ``bundle_root`` and ``override`` set."""
    from monai.bundle import ConfigWorkflow

    root = resolve_bundle(bundle)
    wf = ConfigWorkflow(
        config_file=config_files(root, configs),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(root),
        **override,
    )
    return wf


def _attach_progress(engine: Any, desc: str, with_loss: bool) -> None:
    from ignite.handlers import ProgressBar
    from monai.handlers import from_engine

    bar = ProgressBar(persist=False, desc=desc)
    if with_loss:
        bar.attach(engine, output_transform=lambda out: {"loss": float(from_engine(["loss"], first=True)(out))})
    else:
        bar.attach(engine)


def train_bundle(bundle: str | os.PathLike, dataset_dir: str | os.PathLike, overlays: Sequence[str] = (),
                 progress: bool = True, **override: Any) -> Path:
    """Train with ``configs/train.json`` (+ overlays) and return the best checkpoint ``<ckpt_dir>/model.pt``.

    Args:
        bundle: bundle folder or name.
        dataset_dir: the folder with ``datalist.json``.
        overlays: extra configs applied after ``train.json`` (e.g. ``["baseline_unet3d"]``).
        progress: show a progress bar per epoch.
        override: config overrides, e.g. ``epochs=5, ckpt_dir="out/models"``.
    """
    wf = make_workflow(bundle, ["train", *overlays], "train", dataset_dir=str(dataset_dir), **override)
    wf.initialize()
    if progress:
        _attach_progress(wf.parser.get_parsed_content("train#trainer"), "train", with_loss=True)
    try:
        wf.run()
    finally:
        wf.finalize()
    ckpt = Path(wf.parser.get_parsed_content("ckpt_dir")) / "model.pt"
    if not ckpt.is_file():
        raise RuntimeError(f"training finished without writing {ckpt} (did validation run at least once?).")
    return ckpt


def infer_bundle(bundle: str | os.PathLike, dataset_dir: str | os.PathLike, output_dir: str | os.PathLike,
                 ckpt: str | os.PathLike | None = None, overlays: Sequence[str] = (), progress: bool = True,
                 timings: list[float] | None = None, **override: Any) -> list[Path]:
    """Run ``configs/inference.json`` (+ overlays) on an image or folder; return the written label files.

    If ``timings`` is a list, the seconds per volume (from fetching it to its label being written) are appended.
    The weights' configuration record (``model_config.json`` beside them, :mod:`spine_monai.bundle.record`) supplies
    the overlays and settings they were trained with; an override that contradicts it raises ``ValueError``.
    """
    from spine_monai.bundle.record import inference_overrides

    output_dir = Path(output_dir)
    before = set(output_dir.glob("*")) if output_dir.is_dir() else set()
    weights = Path(ckpt) if ckpt is not None else resolve_bundle(bundle) / "models" / "model.pt"
    overlays, override = inference_overrides(weights, overlays, override)  # the trained model's own settings
    override.setdefault("overwrite", True)  # callers own their output folders (segment stages in a fresh one)
    wf = make_workflow(bundle, ["inference", *overlays], "infer", dataset_dir=str(dataset_dir),
                       output_dir=str(output_dir), **override)
    wf.initialize()
    evaluator = wf.parser.get_parsed_content("evaluator")
    if timings is not None:
        import time

        from ignite.engine import Events

        start = [0.0]
        evaluator.add_event_handler(Events.GET_BATCH_STARTED, lambda _: start.__setitem__(0, time.perf_counter()))
        evaluator.add_event_handler(Events.ITERATION_COMPLETED,
                                    lambda _: timings.append(time.perf_counter() - start[0]))
    if progress:
        _attach_progress(evaluator, "infer", with_loss=False)
    try:
        wf.run()
    finally:
        wf.finalize()
    return sorted(p for p in output_dir.glob("*") if p not in before and not p.name.startswith("."))
