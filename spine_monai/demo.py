"""The main job, ``python -m spine_monai demo``: phantoms -> train SAU-Net -> evaluate on held-out phantoms -> infer.

Everything runs through the SAU-Net bundle's own configs (``bundles/saunet_spine_mri_segmentation``) with
overrides that size the run for a CPU (fewer epochs, smaller patches); every override is written into the output
folder's ``README.md`` so the run can be repeated with ``python -m monai.bundle run``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo", "DEMO_OVERRIDES"]

logger = logging.getLogger(__name__)

BUNDLE = "saunet_spine_mri_segmentation"

#: CPU-sized overrides of the bundle's train.json used by the demo (the paper's recipe otherwise: BCE, Adam).
DEMO_OVERRIDES: dict[str, Any] = {
    "epochs": 15,
    "val_interval": 5,
    "learning_rate": 0.001,
    "features": [8, 16, 32, 64, 128],
    "patch_size": [-1, 128, 128],
    "num_samples": 2,
    "pixdim": [4.0, 1.5, 1.5],
    "roi_size": [-1, 256, 256],
}


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device


def run_demo(out: str | os.PathLike = "demo_out", n: int = 16, n_test: int = 4, seed: int = 0,
             device: str = "auto", shape_scale: float = 1.0, num_workers: int = 2, overwrite: bool = False,
             **overrides: Any) -> str:
    """Run the demo end to end and return the output folder.

    Args:
        out: output folder (created; refused if it holds an earlier demo unless ``overwrite``).
        n: training phantoms (5 folds; fold 0 validates for checkpoint selection).
        n_test: held-out test phantoms (another seed), never seen in training or model selection.
        seed: phantom seed (test phantoms use ``seed + 1000``).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda:0"``.
        shape_scale: phantom in-plane size factor (1.0 = 256-512 pixels at 0.5-0.8 mm).
        num_workers: data-loader workers.
        overrides: further train.json overrides (e.g. ``epochs=30``), on top of :data:`DEMO_OVERRIDES`.

    Returns:
        The output folder, holding ``segmentation.nii.gz``, ``overlay.png``, ``metrics.csv``, ``metrics.md``,
        ``summary.json``, the data and the checkpoint.
    """
    import nibabel as nib
    import torch

    from spine_monai.bundle.runner import infer_bundle, resolve_bundle, train_bundle
    from spine_monai.data.phantoms import make_phantom_dataset
    from spine_monai.metrics.segmentation import aggregate, evaluate_pairs, metrics_markdown_table, write_metrics_csv
    from spine_monai.visualize import render_overlay

    if n < 2 or n_test < 2:
        raise ValueError(f"the demo needs n >= 2 training and n_test >= 2 test phantoms, got n={n}, n_test={n_test}.")
    out = Path(out).resolve()
    if (out / "summary.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a demo run; pass --overwrite or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    bundle = resolve_bundle(BUNDLE)
    dev = _device(device)
    settings = {**DEMO_OVERRIDES, **overrides}
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    logger.info("1/4 writing %d training and %d test phantoms to %s", n, n_test, out)
    data_dir = Path(make_phantom_dataset(n=n, out=out / "data", seed=seed, folds=min(5, n),
                                         shape_scale=shape_scale)).parent
    test_dir = Path(make_phantom_dataset(n=n_test, out=out / "test", seed=seed + 1000, folds=2,
                                         shape_scale=shape_scale)).parent
    timings["phantoms_s"] = time.perf_counter() - t0

    logger.info("2/4 training SAU-Net on %s", dev)
    t = time.perf_counter()
    train_overrides = {**settings, "device": f"$torch.device('{dev}')", "ckpt_dir": str(out / "models"),
                       "output_dir": str(out / "train_logs"), "num_workers": num_workers, "fold": 0}
    ckpt = train_bundle(bundle, data_dir, **train_overrides)
    timings["train_s"] = time.perf_counter() - t

    logger.info("3/4 segmenting the %d held-out test phantoms with the inference config", n_test)
    t = time.perf_counter()
    infer_overrides = {k: v for k, v in settings.items() if k in ("pixdim", "roi_size", "features", "use_isa")}
    infer_overrides["device"] = f"$torch.device('{dev}')"
    preds = infer_bundle(bundle, test_dir / "imagesTr", out / "test_pred", ckpt=ckpt, **infer_overrides)
    timings["infer_test_s"] = time.perf_counter() - t
    pairs = []
    for pred in preds:
        case = pred.name.replace("_seg.nii.gz", ".nii.gz")
        pairs.append((pred, test_dir / "labelsBinTr" / case))
    rows = evaluate_pairs(pairs, binarize=True, progress=True)
    summary = aggregate(rows)
    write_metrics_csv(rows, out / "metrics.csv")

    logger.info("4/4 segmenting one volume and drawing the overlay")
    one = sorted((test_dir / "imagesTr").glob("*.nii.gz"))[0]
    single = infer_bundle(bundle, one, out / "single", ckpt=ckpt, progress=False, **infer_overrides)[0]
    shutil.move(str(single), out / "segmentation.nii.gz")
    shutil.rmtree(out / "single", ignore_errors=True)
    img = nib.load(str(one))
    seg = nib.load(str(out / "segmentation.nii.gz"))
    render_overlay(img.get_fdata(), seg.get_fdata(), img.affine, out / "overlay.png",
                   title=f"SAU-Net on held-out phantom {one.name}", slice_index="foreground")
    timings["total_s"] = time.perf_counter() - t0

    dice = summary["1"]["dice_mean"]
    info = {
        "dice_mean": dice,
        "summary": summary,
        "device": dev,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "timings": timings,
        "overrides": settings,
        "n_train_phantoms": n,
        "n_test_phantoms": n_test,
        "seed": seed,
        "shape_scale": shape_scale,
    }
    (out / "summary.json").write_text(json.dumps(info, indent=2, default=str))
    table = metrics_markdown_table(summary, metrics=("dice", "jaccard", "precision", "recall", "hd95", "hd"),
                                   class_names={"1": "spine", "mean over classes": "mean"})
    extra = "".join(f" --{k} {json.dumps(v).replace(' ', '')}" for k, v in overrides.items())
    cmd = (f"python -m spine_monai demo --out {out.name} --n {n} --n_test {n_test} --seed {seed} "
           f"--shape_scale {shape_scale}{extra}")
    (out / "metrics.md").write_text(
        f"# SAU-Net demo: held-out phantoms\n\nCommand: `{cmd}`\n\nData: {n} training phantoms (seed {seed}), "
        f"{n_test} held-out test phantoms (seed {seed + 1000}); metrics in each test image's original geometry.\n"
        f"Device: {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads. Total time "
        f"{timings['total_s']:.0f} s (training {timings['train_s']:.0f} s).\n\nTrain overrides: "
        f"`{json.dumps(settings)}`\n\n{table}"
    )
    logger.info("held-out phantom Dice: %.4f (n=%d); outputs in %s", dice, len(preds), out)
    return str(out)
