"""The main job, ``python -m spine_monai demo``: phantoms -> train a bundle -> evaluate on held-out phantoms -> infer.

``--bundle`` chooses the method (default SAU-Net; ``seam_spine_us_segmentation`` runs FPN + SEAM on ultrasound VPI
phantoms and adds the Cobb-angle error against the phantoms' true angles; ``attention_driven_spine_ct_segmentation``
runs Sekuboyina et al.'s two-stage method on thoracolumbar CT phantoms: its ``train.json`` trains the localisation
net, then the segmentation net, and inference fuses both; ``review_spine_mri_segmentation`` trains one of the twelve 2D
networks of Zhou et al.'s review, DeepLabv3+ by default, on sagittal slices of multi-class MRI phantoms and segments
the held-out volumes slice by slice). Everything runs through the bundle's own configs with overrides (and, for SEAM,
SAFNet, the CT method and the review, CPU overlays such as ``cpu_small.json``) that size the run for a CPU:
:data:`SPECS`.
The output folder's ``README.md`` holds what was run: the command that repeats it, the same steps as
``python -m spine_monai phantoms`` and ``python -m monai.bundle run`` commands with every override, the result table
and the environment the figures hold for.

Reproducibility. Phantoms are seeded per case, ``train.json`` calls ``monai.utils.set_determinism(seed=@seed)`` and
the data loaders seed their workers from it, so two runs in the same environment give bit-identical weights and
metrics. The figures move with the floating-point summation order of the CPU kernels, which depends on the number of
torch threads and the instruction set the kernels use (``torch.backends.cpu.get_cpu_capability()``), and with the
library versions; 15 epochs of training and the choice of the best of three validated checkpoints amplify a last-bit
difference into a Dice difference of a few points. The demo therefore fixes the torch thread count when given
(``threads``), records threads, instruction set, CPU model, versions and the git commit in ``summary.json`` and
``README.md``, and fingerprints the phantoms (SHA-256 of the voxel data) and the trained weights, so a run elsewhere
can tell whether its data or its training differed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spine_monai.data.labels import MRSPINESEG_LABELS

__all__ = ["run_demo", "DEMO_OVERRIDES", "SPECS", "DemoSpec", "environment"]

logger = logging.getLogger(__name__)

BUNDLE = "saunet_spine_mri_segmentation"

#: CPU-sized overrides of the SAU-Net bundle's train.json used by the demo (the paper's recipe otherwise: BCE, Adam).
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


#: CPU recipe of the attention-driven CT bundle on top of its ``cpu_small.json`` (stage 1 ``loc_epochs``, stage 2
#: ``epochs``, validation every ``val_interval`` epochs of each). Sized from runs on one core of a shared 2-core AMD
#: EPYC VM (1 torch thread, no loader workers): phantoms 3.3 s a case, caching the pre-processed volumes 60 s, a
#: stage-1 epoch 2.5 s (+ 6 s validation with the mask search), a stage-2 epoch 25-30 s (+ 10 s validation),
#: inference 7 s and metrics 11 s a test volume. In the 11-phantom cross-validation run of the bundle docs, stage 1's
#: validation mask had settled by epoch 10 and stage 2's validation Dice was 0.48 at epoch 10, 0.77 at 20.
CT_DEMO_OVERRIDES: dict[str, Any] = {"epochs": 20, "loc_epochs": 30, "val_interval": 5}


#: MRSpineSeg's 19 structures (the multi-class MRI phantoms' labels), scored by the SAFNet demo.
MRSPINESEG_CLASSES: dict[int, str] = {value: name for value, name in MRSPINESEG_LABELS.items() if value}


@dataclass(frozen=True)
class DemoSpec:
    """What the demo runs for one bundle: its phantoms, its CPU-sized recipe and how its outputs are scored."""

    method: str  # the method's name in titles
    modality: str  # ``phantoms --modality``
    overlays: tuple[str, ...]  # configs applied after train.json
    overrides: Mapping[str, Any]  # train.json constants on top of the overlays
    images: str  # folders of the phantom dataset
    labels: str
    suffix: str  # image / label file suffix
    classes: Mapping[int, str]  # scored classes (binary: {1: "spine"})
    n: int  # default training / held-out phantom counts
    n_test: int
    cobb: bool = False  # score the Cobb angle of the predictions against the phantoms' truth
    binary: bool = True  # MRI phantoms: binary datalist label (SAU-Net) or the MRSpineSeg map (multi-class methods)


#: One entry per bundle the demo can run (``--bundle``).
SPECS: dict[str, DemoSpec] = {
    BUNDLE: DemoSpec("SAU-Net", "mri", (), DEMO_OVERRIDES, "imagesTr", "labelsBinTr", ".nii.gz", {1: "spine"}, 16, 4),
    "seam_spine_us_segmentation": DemoSpec(
        "FPN + SEAM", "us", ("cpu_small",), {"epochs": 40, "val_interval": 4}, "images", "labels", ".png",
        {1: "rib", 2: "thoracic", 3: "lumbar"}, 24, 8, cobb=True),
    "safnet_spine_mri_segmentation": DemoSpec(
        "SAFNet", "mri", ("cpu_small", "phantom_crop", "loss_ce"), {"epochs": 40, "val_interval": 4}, "imagesTr",
        "labelsTr", ".nii.gz", MRSPINESEG_CLASSES, 16, 4, binary=False),
    "attention_driven_spine_ct_segmentation": DemoSpec(
        "Attention-driven 2D/3D U-Net", "ct", ("cpu_small",), CT_DEMO_OVERRIDES, "imagesTr", "labelsBinTr", ".nii.gz",
        {1: "spine"}, 12, 4),
    # the recipe is cpu_small.json's (DeepLabv3+ on ResNet-18, 160 x 160 slices, 40 epochs); ``--network_name`` picks
    # another of the twelve networks (its cpu preset)
    "review_spine_mri_segmentation": DemoSpec(
        "Review 2D networks (DeepLabv3+)", "mri", ("cpu_small",), {}, "imagesTr", "labelsTr", ".nii.gz",
        MRSPINESEG_CLASSES, 16, 4, binary=False),
}


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device


def _git_commit() -> str | None:
    """``<commit>`` or ``<commit>+dirty`` (tracked files changed) of the checkout holding this package, else None."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def environment(device: str) -> dict[str, Any]:
    """What the demo's figures depend on besides its arguments: versions, CPU, instruction set, threads, commit."""
    import monai
    import numpy
    import scipy
    import torch

    from spine_monai.evaluation.crossval import cpu_model

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "device": device,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def _fingerprint_volumes(paths: Sequence[Path]) -> str:
    """SHA-256 (first 16 hex digits) over the voxel data, shapes and affines of NIfTI files (the pixels and shape of
    2D images), in the given order."""
    import nibabel as nib
    import numpy as np

    h = hashlib.sha256()
    for p in paths:
        if p.name.endswith((".nii", ".nii.gz")):
            img = nib.load(str(p))
            h.update(np.ascontiguousarray(np.asanyarray(img.dataobj)).tobytes())
            h.update(repr((img.shape, np.round(img.affine, 6).tolist())).encode())
        else:
            from PIL import Image

            with Image.open(p) as im:
                arr = np.asarray(im)
            h.update(np.ascontiguousarray(arr).tobytes())
            h.update(repr(arr.shape).encode())
    return h.hexdigest()[:16]


def _other_weights(bundle: Path, ckpt: Path) -> dict[str, Path]:
    """``{name: file}`` of the bundle's other trained networks beside ``ckpt`` (the attention-driven CT bundle's
    stage-1 ``localization.pt``; :data:`spine_monai.bundle.package.NETWORKS`)."""
    from spine_monai.bundle.package import NETWORKS, bundle_networks

    files = {name: ckpt.with_name(NETWORKS[name][1]) for name in bundle_networks(bundle)[1:]}
    return {name: path for name, path in files.items() if path.is_file()}


def _fingerprint_weights(path: Path) -> str:
    """SHA-256 (first 16 hex digits) over the tensors of a checkpoint (not the file, whose bytes hold no values
    alone)."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _shell(text: str, out: Path | None = None) -> str:
    """``text`` quoted for bash: paths inside ``out`` as ``"$OUT/..."``, ``$`` expressions kept literal."""
    if out is not None and (text == str(out) or text.startswith(str(out) + os.sep)):
        rest = text[len(str(out)):]
        return f'"$OUT{rest}"' if not re.search(r'["\\$`!]', rest) else "$OUT" + shlex.quote(rest)
    if "'" in text and not re.search(r'["\\`!]', text):
        return '"' + text.replace("$", "\\$") + '"'
    return shlex.quote(text)


def _flags(values: Mapping[str, Any], out: Path | None = None) -> str:
    """``--key value`` for ``fire`` (values as JSON without spaces), quoted for bash."""
    parts = []
    for k, v in values.items():
        text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        parts.append(f"--{k} {_shell(text, out)}")
    return " ".join(parts)


def _readme(out: Path, bundle: Path, spec: DemoSpec, cmd: str, args: Mapping[str, Any],
            train_overrides: Mapping[str, Any], infer_overrides: Mapping[str, Any], ckpt: Path, table: str,
            info: Mapping[str, Any]) -> str:
    """The output folder's README.md: what was run, how to repeat it, the results and their environment."""
    env = info["environment"]
    t = info["timings"]
    threads = f"{env['cpu_threads']} torch threads" + ("" if args["threads"] is None else " (set with --threads)")
    hw = env.get("gpu") or f"{env['cpu']}, {env['cpu_capability']} kernels, {threads}"
    two_d = spec.suffix == ".png"
    what = "one segmented image" if two_d else "one segmented volume"
    scored = "foreground Dice (spine)" if len(spec.classes) == 1 else \
        f"Dice, mean over {', '.join(spec.classes.values())}"
    modality = "" if spec.modality == "mri" else f" --modality {spec.modality}"
    modality += "" if spec.binary else " --nobinary"
    overlays = "".join(f",'$B/configs/{o}.json'" for o in spec.overlays)
    train_configs = f"\"['$B/configs/train.json'{overlays}]\"" if spec.overlays else "$B/configs/train.json"
    seg_name = f"segmentation{spec.suffix}"
    # a two-network bundle's other weights (the CT method's stage-1 localization.pt), read from beside model.pt
    others = [k[: -len("_weights")] for k in info["fingerprints"] if k.endswith("_weights")]
    other_files = "".join(f", `models/{name}.pt` ({name} net)" for name in others)
    lines = [
        f"# {spec.method} demo: phantoms -> training -> held-out evaluation -> {what}",
        "",
        f"Written by `python -m spine_monai demo`. Bundle `{bundle.name}`. {args['n']} training phantoms (seed "
        f"{args['seed']}; fold 0 of {min(5, args['n'])} validates for checkpoint selection), {args['n_test']} "
        f"held-out test phantoms (seed {args['seed'] + 1000}) never seen in training or selection; metrics in each "
        f"test image's original geometry" + (" (distances in pixels: PNG labels have no spacing)." if two_d else "."),
        "",
        "## Result",
        "",
        table.strip(),
        "",
        f"Held-out {scored}: **{100 * info['dice_mean']:.2f} %** on {info['n_test_phantoms']} phantoms. Device: "
        f"{env['device']} ({hw}); torch {env['torch']}, MONAI {env['monai']}. Time {t['total_s']:.0f} s (phantoms "
        f"{t['phantoms_s']:.0f} s, training {t['train_s']:.0f} s, test inference {t['infer_test_s']:.0f} s).",
        "",
    ]
    if info.get("cobb"):
        c = info["cobb"]
        lines += [
            f"Cobb angle (`spine_monai.measures.cobb_angle` on the predicted thoracic and lumbar labels) against the "
            f"phantoms' true angles: **mean absolute error {c['mae_deg']:.2f} deg** (max {c['max_error_deg']:.2f} "
            f"deg) over {c['n']} held-out phantoms; the measure on their true labels errs by {c['mae_truth_deg']:.2f}"
            f" deg. Per case in `cobb.csv`.",
            "",
        ]
    lines += [
        "These figures hold for the environment below. The run is deterministic there (seeded phantoms, "
        "`set_determinism` in train.json, seeded loader workers): repeating the command gives the same weights and "
        "the same metrics. Another torch thread count, CPU instruction set (`cpu_capability`), GPU or library "
        "version changes the floating-point summation order; a short training and the choice of the best validated "
        "checkpoint turn that into Dice differences of a few points. The fingerprints tell which part differed: "
        "other phantoms, or the same phantoms and another training.",
        "",
        "## Outputs",
        "",
        (f"- `{seg_name}`: label of the first test phantom at its own size (0 background, "
         + ", ".join(f"{k} {v}" for k, v in spec.classes.items()) + ");") if two_d else
        f"- `{seg_name}`: label map of the first test phantom, in its geometry (opens in 3D Slicer);",
        ("- `overlay.png`: the image | prediction (fill) with the ground truth (outline) | errors (TP green, FP red, "
         "FN blue, wrong class yellow) with the foreground Dice;") if two_d else
        "- `overlay.png`: one sagittal slice: image | prediction (fill) with the ground truth (outline) | errors "
        "(TP green, FP red, FN blue) with the slice's and the volume's Dice;",
        "- `metrics.csv` (per case and class), `metrics.md`, `summary.json` (everything below in JSON)"
        + (", `cobb.csv`;" if info.get("cobb") else ";"),
        f"- `data/`, `test/` (phantoms and datalists), `models/model.pt`{other_files}, `train_logs/` (TensorBoard), "
        "`test_pred/`.",
        "",
        "## Repeat",
        "",
        "```bash",
        cmd,
        "```",
        "",
        "The same steps with the bundle's configs (`B` the bundle folder, `OUT` this folder):",
        "",
        "```bash",
        f"B={shlex.quote(str(bundle))}",
        f"OUT={shlex.quote(str(out))}",
        f"python -m spine_monai phantoms{modality} --n {args['n']} --out $OUT/data --seed {args['seed']} "
        f"--folds {min(5, args['n'])} --shape_scale {args['shape_scale']}",
        f"python -m spine_monai phantoms{modality} --n {args['n_test']} --out $OUT/test --seed {args['seed'] + 1000} "
        f"--folds 2 --shape_scale {args['shape_scale']}",
        f"python -m monai.bundle run --config_file {train_configs} --bundle_root $B --dataset_dir $OUT/data \\",
        f"    {_flags(train_overrides, out)}",
        "python -m monai.bundle run --config_file $B/configs/inference.json --bundle_root $B \\",
        f"    --dataset_dir $OUT/test/{spec.images} --output_dir $OUT/test_pred --ckpt_path "
        f"{_shell(str(ckpt), out)} {_flags(infer_overrides, out)}",
        "```",
        "",
        "The trained model carries its settings (`models/model_config.json` beside `models/model.pt`"
        + "".join(f"; `{name}_config.json` beside `{name}.pt`, which inference reads from the folder of the weights"
                  for name in others)
        + "), so it is used with no further flag, e.g. on your own " + ("image:" if two_d else "scan:"),
        "",
        "```bash",
        f"python -m spine_monai segment $B -i {'vpi.png' if two_d else 'scan.nii.gz'} -o "
        f"{'vpi_seg.png' if two_d else 'seg.nii.gz'} --weights {_shell(str(ckpt), out)}",
        f"python -m spine_monai package $B --weights {_shell(str(ckpt), out)}   # a zip that installs and segments",
        "```",
        "",
        f"Metrics: `spine_monai.metrics.segmentation.evaluate_pairs` on (`test_pred/<case>_seg{spec.suffix}`, "
        f"`test/{spec.labels}/<case>{spec.suffix}`)"
        + (" with `binarize=True`" if len(spec.classes) == 1 else f" with `labels={list(spec.classes)}`")
        + ", then `aggregate`.",
        "",
        "## Environment",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    lines += [
        f"| train.json seed | {info['train_seed']} |",
        f"| data loader workers | {args['num_workers']} |",
        f"| phantom fingerprint (train, test) | `{info['fingerprints']['train_data']}`, "
        f"`{info['fingerprints']['test_data']}` |",
        f"| weights fingerprint | `{info['fingerprints']['weights']}` |",
        *(f"| {name} weights fingerprint | `{info['fingerprints'][f'{name}_weights']}` |" for name in others),
        "",
        f"Checkpoint: `{ckpt.relative_to(out) if ckpt.is_relative_to(out) else ckpt}`. Overlays: "
        f"`{list(spec.overlays)}`. Full train.json overrides: `{json.dumps(info['overrides'])}`.",
        "",
    ]
    return "\n".join(lines)


def run_demo(out: str | os.PathLike = "demo_out", bundle: str = "saunet_spine_mri_segmentation", n: int | None = None,
             n_test: int | None = None, seed: int = 0, device: str = "auto", shape_scale: float = 1.0,
             num_workers: int = 2, threads: int | None = None, overwrite: bool = False, **overrides: Any) -> str:
    """Run the demo end to end and return the output folder.

    Args:
        out: output folder (created; refused if it holds an earlier demo unless ``overwrite``).
        bundle: the method: ``saunet_spine_mri_segmentation`` (SAU-Net on sagittal MRI phantoms) or
            ``seam_spine_us_segmentation`` (FPN + SEAM on ultrasound VPI phantoms, with the Cobb-angle error) or
            ``safnet_spine_mri_segmentation`` (SAFNet on multi-class MRI phantoms, 19 structures, CPU recipe with
            the softmax cross-entropy) or ``attention_driven_spine_ct_segmentation`` (Sekuboyina et al.'s
            localisation net + 2D/3D U-Net with late fusion on CT phantoms, both stages trained, ``cpu_small``) or
            ``review_spine_mri_segmentation`` (one of the review's twelve 2D networks, DeepLabv3+ by default, on
            sagittal slices of multi-class MRI phantoms, 19 structures, ``cpu_small``; ``--network_name`` switches).
        n: training phantoms (5 folds; fold 0 validates for checkpoint selection); default 16 (SAU-Net, SAFNet,
            review), 24 (SEAM), 12 (attention-driven CT).
        n_test: held-out test phantoms (another seed), never seen in training or model selection; default 4
            (SAU-Net, SAFNet, attention-driven CT, review), 8 (SEAM).
        seed: phantom seed (test phantoms use ``seed + 1000``).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda:0"``.
        shape_scale: phantom size factor (1.0 = full size: 256-512 pixels in-plane for MRI, about 1100 x 270 for US).
        num_workers: data-loader workers (seeded; the result does not depend on it within one environment, but
            differs between 0 and more than 0, whose augmentations are drawn from other seeds).
        threads: torch threads for the run (``torch.set_num_threads``); default torch's (the number of cores). The
            figures depend on it on a CPU; it is recorded either way.
        overwrite: replace an earlier demo in ``out``.
        overrides: further train.json overrides (e.g. ``--epochs 30``), on top of the bundle's demo recipe
            (:data:`SPECS`).

    Returns:
        The output folder, holding ``README.md``, ``segmentation.nii.gz`` (``segmentation.png`` for SEAM),
        ``overlay.png``, ``metrics.csv``, ``metrics.md``, ``summary.json``, the data and the checkpoint.

    Raises:
        ValueError: for an unknown ``bundle``, ``n < 2`` or ``n_test < 2``, ``threads < 1``, or an ``out`` holding
            an earlier demo.
    """
    import torch

    name = Path(str(bundle)).name
    if name not in SPECS:
        raise ValueError(f"--bundle {bundle!r}: the demo runs {', '.join(SPECS)}.")
    spec = SPECS[name]
    n = spec.n if n is None else int(n)
    n_test = spec.n_test if n_test is None else int(n_test)
    if n < 2 or n_test < 2:
        raise ValueError(f"the demo needs --n >= 2 training and --n_test >= 2 test phantoms, got {n} and {n_test}.")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}.")
    out = Path(out).resolve()
    if (out / "summary.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a demo run; pass --overwrite or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(out, name, spec, n, n_test, seed, device, shape_scale, num_workers, threads, overrides)
    finally:
        torch.set_num_threads(before)


def _cobb_errors(preds: Sequence[Path], test_dir: Path, spec: DemoSpec) -> dict[str, Any]:
    """Cobb angle of each predicted label against the phantom's true angle, and of its true label (the measure's
    own error); per-case rows and the mean / max absolute errors."""
    import numpy as np
    from PIL import Image

    from spine_monai.measures import cobb_angle

    truth_info = json.loads((test_dir / "phantom_info.json").read_text(encoding="utf-8"))
    classes = tuple(k for k, v in spec.classes.items() if v in ("thoracic", "lumbar"))
    rows = []
    for pred in preds:
        case = pred.name[: -len(f"_seg{spec.suffix}")]
        row: dict[str, Any] = {"case": case, "true_deg": float(truth_info[case]["cobb_deg"])}
        for key, path in (("pred", pred), ("truth_label", test_dir / spec.labels / f"{case}{spec.suffix}")):
            try:
                row[f"{key}_deg"] = float(cobb_angle(np.asarray(Image.open(path)), classes=classes)["cobb_deg"])
            except ValueError as err:  # too little spine in the label to fit a centre line
                logger.warning("%s: no Cobb angle from %s (%s)", case, path.name, err)
                row[f"{key}_deg"] = float("nan")
        rows.append(row)
    err = np.array([abs(r["pred_deg"] - r["true_deg"]) for r in rows])
    own = np.array([abs(r["truth_label_deg"] - r["true_deg"]) for r in rows])
    return {"n": len(rows), "measured": int(np.isfinite(err).sum()), "mae_deg": float(np.nanmean(err)),
            "max_error_deg": float(np.nanmax(err)), "mae_truth_deg": float(np.nanmean(own)), "cases": rows}


def _run(out: Path, name: str, spec: DemoSpec, n: int, n_test: int, seed: int, device: str, shape_scale: float,
         num_workers: int, threads: int | None, overrides: Mapping[str, Any]) -> str:
    """The body of :func:`run_demo`, after its checks and with the thread count set."""
    import numpy as np
    import torch

    from spine_monai.bundle.runner import infer_bundle, resolve_bundle, train_bundle
    from spine_monai.data.phantoms import make_phantom_dataset
    from spine_monai.metrics.segmentation import aggregate, evaluate_pairs, metrics_markdown_table, write_metrics_csv

    bundle = resolve_bundle(name)
    dev = _device(device)
    settings = {**spec.overrides, **overrides}
    env = environment(dev)
    logger.info("environment: %s", ", ".join(f"{k}={v}" for k, v in env.items()))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    two_d = spec.suffix == ".png"

    logger.info("1/4 writing %d training and %d test phantoms (%s) to %s", n, n_test, spec.modality, out)
    data_dir = Path(make_phantom_dataset(modality=spec.modality, n=n, out=out / "data", seed=seed, folds=min(5, n),
                                         shape_scale=shape_scale, binary=spec.binary)).parent
    test_dir = Path(make_phantom_dataset(modality=spec.modality, n=n_test, out=out / "test", seed=seed + 1000,
                                         folds=2, shape_scale=shape_scale, binary=spec.binary)).parent
    timings["phantoms_s"] = time.perf_counter() - t0

    logger.info("2/4 training %s on %s", spec.method, dev)
    t = time.perf_counter()
    train_overrides = {**settings, "device": f"$torch.device('{dev}')", "ckpt_dir": str(out / "models"),
                       "output_dir": str(out / "train_logs"), "num_workers": num_workers, "fold": 0}
    ckpt = train_bundle(bundle, data_dir, overlays=spec.overlays, **train_overrides)
    timings["train_s"] = time.perf_counter() - t

    logger.info("3/4 segmenting the %d held-out test phantoms with the inference config", n_test)
    t = time.perf_counter()
    # no network settings: inference takes them from the record models/model_config.json beside the weights
    infer_overrides = {"device": f"$torch.device('{dev}')"}
    preds = infer_bundle(bundle, test_dir / spec.images, out / "test_pred", ckpt=ckpt, **infer_overrides)
    timings["infer_test_s"] = time.perf_counter() - t
    pairs = [(p, test_dir / spec.labels / p.name.replace(f"_seg{spec.suffix}", spec.suffix)) for p in preds]
    binary = len(spec.classes) == 1
    rows = evaluate_pairs(pairs, labels=None if binary else list(spec.classes), binarize=binary, progress=True)
    summary = aggregate(rows)
    write_metrics_csv(rows, out / "metrics.csv")
    cobb = _cobb_errors(preds, test_dir, spec) if spec.cobb else None
    if cobb is not None:
        with (out / "cobb.csv").open("w", encoding="utf-8") as fh:
            fh.write("case,true_deg,pred_deg,truth_label_deg\n")
            fh.writelines(f"{r['case']},{r['true_deg']:.2f},{r['pred_deg']:.2f},{r['truth_label_deg']:.2f}\n"
                          for r in cobb["cases"])

    logger.info("4/4 segmenting one %s and drawing the overlay", "image" if two_d else "volume")
    one = sorted((test_dir / spec.images).glob(f"*{spec.suffix}"))[0]
    single = infer_bundle(bundle, one, out / "single", ckpt=ckpt, progress=False, **infer_overrides)[0]
    shutil.move(str(single), out / f"segmentation{spec.suffix}")
    shutil.rmtree(out / "single", ignore_errors=True)
    title = f"{spec.method} on held-out phantom {one.name}"
    if two_d:
        from PIL import Image

        from spine_monai.visualize import render_overlay_2d

        def arr(path: Path) -> np.ndarray:
            with Image.open(path) as im:
                return np.asarray(im)

        render_overlay_2d(arr(one), arr(out / "segmentation.png"), out / "overlay.png", title=title,
                          label_truth=arr(test_dir / spec.labels / one.name))
    else:
        import nibabel as nib

        from spine_monai.visualize import render_overlay

        img = nib.load(str(one))
        render_overlay(img.get_fdata(), nib.load(str(out / "segmentation.nii.gz")).get_fdata(), img.affine,
                       out / "overlay.png", title=title, slice_index="foreground",
                       label_truth=nib.load(str(test_dir / spec.labels / one.name)).get_fdata())
    timings["total_s"] = time.perf_counter() - t0

    args = {"bundle": name, "n": n, "n_test": n_test, "seed": seed, "device": device, "shape_scale": shape_scale,
            "num_workers": num_workers, "threads": threads}
    train_cfg = json.loads((bundle / "configs" / "train.json").read_text(encoding="utf-8"))
    dice = summary["1" if binary else "mean over classes"]["dice_mean"]
    info = {
        "bundle": name,
        "dice_mean": dice,
        "summary": summary,
        "cobb": cobb,
        "device": dev,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "environment": env,
        "timings": timings,
        "overlays": list(spec.overlays),
        "overrides": settings,
        "train_seed": settings.get("seed", train_cfg.get("seed")),
        "n_train_phantoms": n,
        "n_test_phantoms": n_test,
        "seed": seed,
        "shape_scale": shape_scale,
        "num_workers": num_workers,
        "fingerprints": {
            "train_data": _fingerprint_volumes(sorted((data_dir / spec.images).glob(f"*{spec.suffix}"))),
            "test_data": _fingerprint_volumes(sorted((test_dir / spec.images).glob(f"*{spec.suffix}"))),
            "weights": _fingerprint_weights(ckpt),
            **{f"{name}_weights": _fingerprint_weights(path) for name, path in _other_weights(bundle, ckpt).items()},
        },
    }
    (out / "summary.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    names = {"1": "spine"} if binary else {str(k): v for k, v in spec.classes.items()}
    table = metrics_markdown_table(summary, metrics=("dice", "jaccard", "precision", "recall", "hd95", "hd"),
                                   class_names={**names, "mean over classes": "mean"})
    if two_d:
        table = table.replace("(mm)", "(px)")
    defaults = {k: p.default for k, p in inspect.signature(run_demo).parameters.items()}
    given = {k: v for k, v in args.items() if v != defaults[k] or k in ("n", "n_test", "seed")}
    if threads is None and dev == "cpu":
        given["threads"] = torch.get_num_threads()  # the repeat command pins what this run used
    cmd = f"python -m spine_monai demo --out {shlex.quote(out.name)} {_flags(given)}"
    if overrides:
        cmd += " " + _flags(overrides)
    cobb_line = "" if cobb is None else (
        f"\n\nCobb angle from the predicted labels: mean absolute error {cobb['mae_deg']:.2f} deg (max "
        f"{cobb['max_error_deg']:.2f}) over {cobb['n']} phantoms; from their true labels {cobb['mae_truth_deg']:.2f} "
        "deg.")
    (out / "metrics.md").write_text(
        f"# {spec.method} demo: held-out phantoms\n\nCommand: `{cmd}`\n\nData: {n} training phantoms (seed {seed}), "
        f"{n_test} held-out test phantoms (seed {seed + 1000}); metrics in each test image's original geometry.\n"
        f"Device: {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"({env['cpu']}, {env['cpu_capability']}). Total time {timings['total_s']:.0f} s (training "
        f"{timings['train_s']:.0f} s).\n\nOverlays: `{list(spec.overlays)}`; train overrides: "
        f"`{json.dumps(settings)}`\n\n{table}{cobb_line}\n", encoding="utf-8")
    (out / "README.md").write_text(_readme(out, bundle, spec, cmd, args, train_overrides, infer_overrides, ckpt,
                                           table, info), encoding="utf-8")
    logger.info("held-out phantom Dice: %.4f (n=%d); outputs in %s (README.md says how to repeat it)", dice,
                len(preds), out)
    return str(out)
