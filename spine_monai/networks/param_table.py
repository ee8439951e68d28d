"""Parameter counts of the project's networks against the papers and the reference code; writes ``README.md``.

Run ``python -m spine_monai.networks.param_table`` (CPU, a few minutes: networks are only built, never run).
It builds the twelve networks of Zhou et al., "Review of Deep Learning Models for Spine Segmentation", ICMR 2022
(https://doi.org/10.1145/3512527.3531356, Table 3) at the review's configuration (1 input channel, 20 classes,
880 x 880 slices), a few reference-code variants, and, when importable, the networks of the other papers
(SAU-Net, SAFNet, 3D DeepLabv3, FPN + SEAM), then writes ``spine_monai/networks/README.md``.
"""

from __future__ import annotations

import gc
import importlib
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from spine_monai.networks.registry import get_network

__all__ = ["COMMAND", "Row", "count_parameters", "main", "rows"]

logger = logging.getLogger(__name__)

COMMAND = "python -m spine_monai.networks.param_table"
_IN, _OUT = 1, 20


@dataclass(frozen=True)
class Row:
    """One line of the table.

    Attributes:
        network: registry name or class.
        config: configuration built.
        build: zero-argument builder.
        reference: parameters measured with the reference code (``ARCHITECTURES.md`` list), or None.
        paper: parameters reported by the paper (review Table 3 or the network's own paper), or None.
        note: explanation of any gap above 10 %.
    """

    network: str
    config: str
    build: Callable[[], nn.Module]
    reference: float | None
    paper: float | None
    note: str = ""


def count_parameters(model: nn.Module) -> int:
    """All parameters (trainable or frozen; buffers such as EMANet's bases are not parameters)."""
    return sum(p.numel() for p in model.parameters())


def _net(name: str, **kw: object) -> Callable[[], nn.Module]:
    return lambda: get_network(name, _IN, _OUT, **kw)


def _external(module: str, cls: str, *args: object, **kw: object) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(importlib.import_module(module), cls)(*args, **kw)

    return build


def rows() -> list[Row]:
    """The rows of the table: the twelve review networks at the review's configuration, then variants."""
    m = 1e6
    return [
        Row("unet", "MONAI BasicUNet 64-1024, ReLU, BN", _net("unet"), 31.1 * m, 13 * m,
            "Review's 13M matches the bilinear U-Net 64-512 (milesial-style `Up(1024, 256)`, as in "
            "MontaEllis/Pytorch-Medical-Segmentation `models/two_d/unet.py`: 13.4M by our count); the review's "
            "text and Fig. 1 describe the original 64-1024 U-Net, built here."),
        Row("pspnet", "smp PSPNet ResNet-101, depth 5, OS 8", _net("pspnet"), 48.9 * m, 27 * m,
            "Review's 27M matches a ResNet-34 PSPNet with a 1024-channel PSP bottleneck and three conv "
            "up-samplers (MontaEllis `models/two_d/pspnet.py`: 27.5M by our count), not the ResNet-101 its text "
            "and Table 3 name."),
        Row("deeplabv3plus", "smp DeepLabV3Plus ResNet-101, OS 16, rates 6/12/18", _net("deeplabv3plus"),
            45.7 * m, 59 * m,
            "smp uses depth-wise separable ASPP / decoder convolutions (as DeepLabv3+); with regular "
            "convolutions (`decoder_aspp_separable=False`, next row) it is 58.2M, the review's 59M."),
        Row("deeplabv3plus", "as above, `decoder_aspp_separable=False`",
            _net("deeplabv3plus", decoder_aspp_separable=False), None, 59 * m, ""),
        Row("denseaspp", "DenseNet-169 OS 8, ASPP 336/168", _net("denseaspp"), None, 18 * m, ""),
        Row("denseaspp", "DenseNet-161 OS 8, ASPP 512/128 (reference cfg)", _net("denseaspp",
            encoder_name="densenet161"), 35.4 * m, None, ""),
        Row("attention_unet", "MONAI AttentionUnet 64-1024", _net("attention_unet"), 31.7 * m, 34 * m, ""),
        Row("danet", "ResNet-101 OS 8 + DANetHead", _net("danet"), 66.5 * m, 66 * m, ""),
        Row("emanet", "ResNet-101 OS 8 + EMAU 512/64", _net("emanet"), 53.8 * m, 53 * m, ""),
        Row("infnet", "Res2Net-101 (`tu-res2net101d`)", _net("infnet"), None, 50 * m, ""),
        Row("infnet", "Res2Net-50 (`tu-res2net50d`, reference backbone)", _net("infnet",
            encoder_name="tu-res2net50d"), 33.1 * m, None,
            "The reference keeps the unused ImageNet classifier of its Res2Net-50 (2048 x 1000 + 1000 = 2.05M); "
            "without it the reference is 31.1M."),
        Row("miniseg", "P = (2, 3, 8, 6), with the 3 auxiliary heads", _net("miniseg"), 0.09 * m, 0.083 * m,
            "The paper's 83K is for 3 input channels and 2 classes (82,912 here)."),
        Row("psanet", "ResNet-101 OS 8, mask 109 x 109 (full at 880 x 880)", _net("psanet"), 72.2 * m, 78 * m, ""),
        Row("psanet", "mask 59 x 59 (reference cfg)", _net("psanet", mask_size=59), 72.2 * m, None,
            "Reference 72.2M includes its training-only auxiliary head (2.4M) and deep-stem ResNet."),
        Row("resunetpp", "features 16-256 (reference)", _net("resunetpp"), 4.1 * m, 14 * m,
            "The review's 14M matches no configuration we know: doubling the widths (next row) gives 16.2M."),
        Row("resunetpp", "features 32-512", _net("resunetpp", features=(32, 64, 128, 256, 512)), None, 14 * m,
            "Not an exact match of the review's 14M (see above)."),
        Row("transunet", "R50-ViT-B/16, img_size 880", _net("transunet"), None, 110 * m, ""),
        Row("transunet", "img_size 224 (reference cfg)", _net("transunet", img_size=224), 105.3 * m, None, ""),
    ]


def _other_rows() -> list[Row]:
    """Networks of the other papers, built when their modules are importable."""
    m = 1e6
    return [
        Row("SAUNet", "3D, 1 -> 1, defaults", _external("spine_monai.networks.nets.saunet", "SAUNet", 3, 1, 1), None,
            38 * m, "The SAU-Net paper's '38M' is a model-size column without units; the Dense U-Net widths are "
            "kept small on purpose (ARCHITECTURES.md section 1: accurate and cheap)."),
        Row("SAFNet", "3D, 1 -> 20, defaults", _external("spine_monai.networks.nets.safnet", "SAFNet", 3, 1, 20),
            None, None, ""),
        Row("DeepLabV3_3D", "3D, 1 -> 20, defaults",
            _external("spine_monai.networks.nets.deeplabv3_3d", "DeepLabV3_3D", 3, 1, 20), None, None, ""),
        Row("FPNSEAM", "smp FPN ResNet-50 + SEAM, 1 -> 4",
            _external("spine_monai.networks.nets.fpn_seam", "FPNSEAM", 1, 4, encoder_name="resnet50"), 26.1 * m, None,
            "Reference 26.1M is smp FPN ResNet-50 without SEAM."),
    ]


def _fmt(n: float | None) -> str:
    if n is None:
        return "-"
    if n < 1e6:
        return f"{n / 1e3:.1f}K"
    return f"{n / 1e6:.2f}M"


def _ratio(ours: int, ref: float | None) -> str:
    return "-" if ref is None else f"{ours / ref:.2f}"


def _table(built: list[tuple[Row, int]]) -> list[str]:
    lines = [
        "| network | configuration | our params | reference code | ratio | paper | ratio | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, ours in built:
        lines.append(
            f"| {row.network} | {row.config} | {_fmt(ours)} | {_fmt(row.reference)} | {_ratio(ours, row.reference)}"
            f" | {_fmt(row.paper)} | {_ratio(ours, row.paper)} | {row.note} |"
        )
    return lines


def _build_all(table_rows: list[Row], optional: bool) -> tuple[list[tuple[Row, int]], list[str]]:
    built: list[tuple[Row, int]] = []
    skipped: list[str] = []
    for row in table_rows:
        try:
            model = row.build()
        except (ImportError, AttributeError, TypeError, ValueError) as err:
            if not optional:
                raise
            logger.warning("skipping %s: %s", row.network, err)
            skipped.append(f"{row.network} ({type(err).__name__}: {err})")
            continue
        built.append((row, count_parameters(model)))
        logger.info("%s [%s]: %d parameters", row.network, row.config, built[-1][1])
        del model
        gc.collect()
    return built, skipped


def main(output: str | Path | None = None) -> Path:
    """Build every network, count parameters and write the Markdown page.

    Args:
        output: file to write; default ``spine_monai/networks/README.md`` next to this module.

    Returns:
        Path of the written file.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import monai
    import segmentation_models_pytorch as smp
    import timm
    import torch

    review, _ = _build_all(rows(), optional=False)
    others, skipped = _build_all(_other_rows(), optional=True)
    path = Path(output) if output is not None else Path(__file__).with_name("README.md")
    lines = [
        "# Network parameter counts",
        "",
        f"Generated by `{COMMAND}` (torch {torch.__version__}, monai {monai.__version__}, "
        f"segmentation-models-pytorch {smp.__version__}, timm {timm.__version__}, Python {platform.python_version()}).",
        "Do not edit by hand: change `spine_monai/networks/param_table.py` and run the command again.",
        "",
        "All parameters are counted (frozen ones too; buffers such as EMANet's EM bases are not parameters).",
        "Review networks: 1 input channel, 20 classes, built with `spine_monai.networks.registry.get_network`.",
        "*Reference code*: counts measured with the authors' or the library's code (CPU, 20 classes, 1 input",
        "channel; `shared/guides/ARCHITECTURES.md`). *Paper*: Table 3 of Zhou et al., ICMR 2022 (the twelve",
        "review networks) or the network's own paper. Ratios are ours / theirs; every gap above 10 % has a note.",
        "",
        "## The twelve networks of the review (and reference-code variants)",
        "",
        *_table(review),
        "",
        "## Networks of the other papers",
        "",
        *(_table(others) if others else ["None importable."]),
        "",
    ]
    if skipped:
        lines += ["Skipped (module not available yet): " + "; ".join(skipped), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote %s", path)
    return path


if __name__ == "__main__":
    main()
