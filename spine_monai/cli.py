"""Command-line interface: ``python -m spine_monai <command> ...`` (built with ``fire``).

Each command imports its implementation lazily, so ``--help`` and unrelated commands stay fast and a missing
optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import logging
import sys
from importlib import import_module
from typing import Any


def _call(target: str, *args: Any, **kwargs: Any) -> Any:
    module_name, func_name = target.rsplit(":", 1)
    func = getattr(import_module(module_name), func_name)
    if kwargs.pop("help", False) or kwargs.pop("h", False):  # commands with **kwargs would otherwise run
        return func.__doc__
    return func(*args, **kwargs)


class SpineMonaiCLI:
    """spine_monai commands. Run ``python -m spine_monai <command> --help`` for the arguments of one command."""

    def phantoms(self, modality: str = "mri", n: int = 20, out: str = "phantoms", seed: int = 0, folds: int = 5,
                 **kwargs: Any) -> str:
        """Write seeded synthetic spine phantoms (NIfTI) and a Decathlon-style datalist with k folds."""
        return _call("spine_monai.data.phantoms:make_phantom_dataset", modality=modality, n=n, out=out, seed=seed,
                     folds=folds, **kwargs)

    def datalist(self, dataset_dir: str, out: str | None = None, folds: int = 5, seed: int = 0,
                 pattern: str = "*_img.nii.gz", label_suffix: str = "_label", binarize: bool = True,
                 include: str | list[str] | None = None) -> str:
        """Build a datalist JSON (with k folds) for a folder of ``<case>_img`` / ``<case>_label`` pairs.

        ``include`` selects case ids by glob, e.g. ``--include "VB*"`` or ``--include "['VB2_*']"``.
        """
        return _call("spine_monai.data.folder:folder_datalist", dataset_dir=dataset_dir, out=out, folds=folds,
                     seed=seed, pattern=pattern, label_suffix=label_suffix, binarize=binarize, include=include)

    def demo(self, out: str = "demo_out", **kwargs: Any) -> str:
        """The main job: phantoms -> train SAU-Net -> evaluate -> infer one volume -> label, overlay, metrics."""
        return _call("spine_monai.demo:run_demo", out=out, **kwargs)

    def crossval(self, bundle: str, dataset_dir: str, folds: int = 5, **kwargs: Any) -> Any:
        """Train and evaluate one configuration of a bundle on k fixed folds."""
        return _call("spine_monai.evaluation.crossval:crossval", bundle, dataset_dir=dataset_dir, folds=folds,
                     **kwargs)

    def compare(self, bundle: str, dataset_dir: str, **kwargs: Any) -> Any:
        """Run a bundle's method, baselines and ablations on the same folds and write the paper's tables."""
        return _call("spine_monai.evaluation.compare:compare", bundle, dataset_dir=dataset_dir, **kwargs)

    def bench(self, *bundles: str, **kwargs: Any) -> Any:
        """Benchmark parameters, FLOPs, latency, peak memory and training step time of bundle networks."""
        return _call("spine_monai.evaluation.bench:bench", *bundles, **kwargs)

    def package(self, bundle: str, out_dir: str = "dist", **kwargs: Any) -> str:
        """Check a bundle and write ``dist/<name>_v<version>.zip`` in the model-zoo layout."""
        return _call("spine_monai.bundle.package:package_bundle", bundle, out_dir=out_dir, **kwargs)

    def install_bundle(self, zip_path: str, bundle_dir: str, **kwargs: Any) -> str:
        """Validate an untrusted bundle zip and extract it into ``bundle_dir``."""
        return _call("spine_monai.bundle.zipcheck:install_bundle", zip_path, bundle_dir=bundle_dir, **kwargs)

    def segment(self, bundle: str, i: str, o: str, **kwargs: Any) -> Any:
        """Segment one scan (NIfTI, DICOM folder, .mha, .nrrd) with a bundle's trained weights."""
        return _call("spine_monai.segment:segment", bundle, input_path=i, output_path=o, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors of the user's making are printed as one line and exit with status 2."""
    import fire

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire(SpineMonaiCLI, command=argv, name="python -m spine_monai")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
