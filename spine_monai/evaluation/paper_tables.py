"""The numbers the five reproduced papers report, as data, with their table and section references.

:mod:`spine_monai.evaluation.compare` prints these beside our own cross-validation results, labelled
``paper (<setting>)``. Values are copied from the paper texts in ``shared/papers`` exactly as printed (percent for
overlap metrics, millimetres for distances); a value the paper prints as ``a ± b`` is stored as ``(a, b)``, a
plain value as ``(a, None)`` and a value that is not a number (``"35M"``) as a string.

Papers:

- ``saunet``: Zhang, Yuan, Wang, Zhang, "SAU-Net: Efficient 3D Spine MRI Segmentation Using Inter-Slice Attention",
  MIDL 2020, PMLR 121:903-913. Section 4.3 (Tables 1-3), Section 4.4 (Table 4).
- ``safnet``: Yilizati-Yilihamu, Yang, Yang, Rong, Feng, "A spine segmentation method based on scene aware fusion
  network", BMC Neuroscience 2023. Results (Table 1), Ablation experiments (Table 2).
- ``seam``: Zhao, Huang, Liu, Leung, Ling, Yang, Lee, Lun, Zheng, Lam, "Structure-Enhanced Attentive Learning for
  Spine Segmentation from Ultrasound Volume Projection Images", ICASSP 2021, doi:10.1109/ICASSP39728.2021.9414658.
  Section 3.3 (Table 1).
- ``sekuboyina``: Sekuboyina, Kukačka, Kirschke, Menze, Valentinitsch, "Attention-driven Deep Learning for
  Pathological Spine Segmentation", 2017. Section 3 (Tables 1-2).
- ``review``: Zhou, Wen, Liu, Wang, Wang et al., "Review of Deep Learning Models for Spine Segmentation", ICMR 2022,
  doi:10.1145/3512527.3531356. Section 4.5 (Tables 1-3).

What the papers leave unclear is recorded in each table's ``notes`` (e.g. SAU-Net's Table 2 does not say what its
"time consumption" measures, nor whether "model size" counts parameters or megabytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PaperTable", "PAPER_TABLES", "COLUMN_HEADERS", "REVIEW_CLASSES", "paper_table", "format_value"]

#: a reported value: (mean, std or None) or a non-numeric string such as "35M".
Value = tuple[float, float | None] | str

#: display headers of the column keys used below (our metric names where one exists).
COLUMN_HEADERS: dict[str, str] = {
    "dice": "Dice (%)",
    "precision": "Precision (%)",
    "recall": "Recall (%)",
    "jaccard": "Jaccard (%)",
    "hd": "HSD (mm)",
    "fnr": "FN rate (%)",
    "fpr": "FP rate (%)",
    "time": "Time",
    "model_size": "Model size",
    "params": "#Param",
    "flops": "FLOPs",
    "memory": "Memory",
    "runtime_s": "Runtime (s)",
    "backbone": "Backbone",
    "fold_1": "Fold 1 Dice (%)",
    "fold_2": "Fold 2 Dice (%)",
    "fold_3": "Fold 3 Dice (%)",
    "fold_4": "Fold 4 Dice (%)",
    "fold_5": "Fold 5 Dice (%)",
    "dice_hc": "Dice HC (%)",
    "dice_osteo": "Dice osteoporotic (%)",
    "dice_lumbar": "Lumbar Dice (%)",
    "jaccard_lumbar": "Lumbar Jaccard (%)",
    "dice_thoracic": "Thoracic Dice (%)",
    "jaccard_thoracic": "Thoracic Jaccard (%)",
    "dice_rib": "Rib Dice (%)",
    "jaccard_rib": "Rib Jaccard (%)",
}


@dataclass(frozen=True)
class PaperTable:
    """One table of a paper.

    Args:
        paper: paper key (``"saunet"``, ...).
        table: the paper's table name, e.g. ``"Table 1"``.
        section: the section that reports it.
        caption: the caption, shortened.
        setting: data and protocol, e.g. ``"SpineSegT2W, 195 volumes, random 5-fold CV"``.
        columns: column keys (see :data:`COLUMN_HEADERS`), in the paper's order.
        rows: ``{row label: {column key: value}}`` in the paper's order; a missing key is "not reported".
        notes: ambiguities and typos of the paper, and how the data here reads them.
    """

    paper: str
    table: str
    section: str
    caption: str
    setting: str
    columns: tuple[str, ...]
    rows: Mapping[str, Mapping[str, Value]]
    notes: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, column: str) -> str:
        """Display header of ``column`` (a table-specific one first, then :data:`COLUMN_HEADERS`)."""
        return self.headers.get(column, COLUMN_HEADERS.get(column, column))


def _v(mean: float, std: float | None = None) -> tuple[float, float | None]:
    return (float(mean), None if std is None else float(std))


_SAU_SETTING = "SpineSegT2W (195 T2W volumes), random 5-fold CV"
_SAU_T1 = {
    "2D U-Net": {"dice": _v(88.06, 0.16), "precision": _v(86.43, 1.24), "recall": _v(89.85, 0.84),
                 "jaccard": _v(78.86, 0.62), "hd": _v(3.12, 0.035)},
    "3D U-Net": {"dice": _v(89.28, 0.33), "precision": _v(89.35, 0.35), "recall": _v(89.54, 0.48),
                 "jaccard": _v(80.72, 0.88), "hd": _v(1.94, 0.026)},
    "SAU-Net": {"dice": _v(89.86, 0.10), "precision": _v(89.75, 0.24), "recall": _v(90.41, 0.36),
                "jaccard": _v(81.56, 0.20), "hd": _v(1.76, 0.023)},
}
_METRICS5 = ("dice", "precision", "recall", "jaccard", "hd")

#: the 19 foreground classes of MRSpineSeg in the review's Table 2 order (= the review bundle's channel_def 1-19).
REVIEW_CLASSES: tuple[str, ...] = ("S", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "L5/S", "L4/L5",
                                   "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12", "T10/T11", "T9/T10")
#: Table 2 of the review as printed: per-class Dice (%) of the 19 classes, then mDice.
_REVIEW_T2: dict[str, tuple[float, ...]] = {
    "U-Net": (88.80, 83.93, 72.20, 70.92, 71.44, 71.77, 73.32, 68.87, 85.21, 94.67,
              16.77, 80.00, 75.83, 78.06, 80.12, 84.37, 82.83, 79.88, 96.45, 76.59),
    "PSPNet": (87.82, 87.72, 85.51, 85.58, 83.08, 81.63, 78.48, 74.97, 85.21, 94.67,
               84.76, 85.20, 87.91, 88.13, 89.13, 91.47, 87.06, 79.88, 96.45, 86.03),
    "DeepLabv3+": (87.75, 87.10, 85.17, 86.07, 84.02, 83.52, 80.02, 76.58, 85.21, 94.67,
                   85.60, 85.50, 87.39, 87.70, 89.39, 91.62, 90.47, 79.88, 96.45, 86.53),
    "DenseASPP": (87.34, 87.31, 84.67, 84.26, 82.53, 81.77, 80.35, 74.07, 85.21, 94.67,
                  16.77, 14.20, 85.59, 87.14, 26.04, 32.35, 41.22, 79.88, 96.45, 69.57),
    "Attention U-Net": (87.97, 83.56, 70.29, 67.55, 63.11, 69.77, 70.44, 9.86, 85.21, 94.67,
                        84.85, 77.54, 71.13, 71.67, 71.26, 81.96, 41.22, 79.88, 96.45, 72.55),
    "DANet": (81.55, 82.42, 80.22, 79.70, 75.94, 74.18, 72.24, 67.93, 85.21, 94.67,
              82.74, 82.54, 86.43, 84.89, 87.07, 86.96, 86.44, 91.60, 96.45, 83.12),
    "EMANet": (87.35, 87.52, 86.13, 85.78, 83.54, 82.79, 79.09, 74.15, 85.21, 94.67,
               84.16, 83.56, 87.33, 87.52, 89.23, 90.61, 86.11, 79.88, 96.45, 85.85),
    "Inf-Net": (87.80, 87.25, 85.01, 83.62, 81.28, 83.01, 79.23, 71.76, 85.21, 0.97,
                85.03, 86.07, 88.07, 87.51, 84.85, 90.94, 87.25, 89.85, 96.45, 81.11),
    "MiniSeg": (86.29, 86.05, 84.03, 83.10, 79.42, 77.79, 74.88, 70.85, 88.83, 94.67,
                83.66, 84.65, 85.72, 86.67, 87.66, 88.49, 85.32, 92.59, 97.30, 85.16),
    "PSANet": (87.41, 87.56, 86.04, 85.70, 81.55, 80.88, 78.84, 75.07, 85.21, 94.67,
               84.80, 84.06, 87.15, 86.38, 87.94, 89.75, 87.01, 79.88, 96.45, 85.60),
    "ResUNet++": (87.37, 85.59, 78.46, 74.35, 72.45, 77.11, 76.07, 70.55, 85.21, 94.67,
                  82.11, 82.32, 79.27, 77.08, 81.79, 88.85, 85.68, 79.88, 96.45, 81.85),
    "TransUNet": (86.15, 79.69, 71.91, 74.00, 71.02, 68.32, 65.32, 59.27, 85.21, 94.67,
                  16.77, 73.52, 75.00, 78.56, 81.33, 81.53, 80.65, 79.88, 96.45, 74.70),
}

PAPER_TABLES: dict[str, PaperTable] = {
    "saunet/table1": PaperTable(
        paper="saunet", table="Table 1", section="4.3", setting=_SAU_SETTING, columns=_METRICS5, rows=_SAU_T1,
        caption="Cross validation results of comparison experiments on SpineSegT2W",
        notes="Mean ± std; the std is small (0.1-1.2), so it is most likely taken over the 5 fold means, which is "
              "how compare reports ours. The column the paper calls fDSC is the Dice coefficient.",
        headers={"dice": "fDSC (%)"},
    ),
    "saunet/table2": PaperTable(
        paper="saunet", table="Table 2", section="4.3", setting=_SAU_SETTING + ", NVIDIA Tesla V100, Keras",
        columns=("time", "model_size"),
        rows={"2D U-Net": {"time": "153s", "model_size": "35M"},
              "3D U-Net": {"time": "534s", "model_size": "83M"},
              "SAU-Net": {"time": "178s", "model_size": "38M"}},
        caption="Comparison of time consumption and model size of different methods",
        notes="The paper does not say what 'time consumption' measures (training per epoch, inference of a fold or "
              "of one volume) nor whether 'model size' is a parameter count or megabytes; 35M for a 2D U-Net "
              "(31.0M parameters in the original U-Net) suggests parameters or weight-file size.",
    ),
    "saunet/table3": PaperTable(
        paper="saunet", table="Table 3", section="4.3",
        setting="Lower spine MRI of Chu et al. 2015 (23 T2W TSE volumes, 39 x 305 x 305)", columns=_METRICS5,
        rows={"SAU-Net (pre-trained on SpineSegT2W)": {"dice": _v(89.31), "precision": _v(88.33),
                                                       "recall": _v(90.56), "jaccard": _v(80.80), "hd": _v(4.29)},
              "SAU-Net (leave-one-out)": {"dice": _v(91.3, 0.5), "precision": _v(95.1, 0.6), "recall": _v(87.7, 1.3),
                                          "jaccard": _v(83.8, 0.7), "hd": _v(3.0, 0.8)},
              "Chu et al. (leave-one-out)": {"dice": _v(88.7, 2.9), "hd": _v(6.4, 1.2)}},
        caption="Comparison of spine segmentation results on lower spine MRI dataset",
    ),
    "saunet/table4": PaperTable(
        paper="saunet", table="Table 4", section="4.4", setting=_SAU_SETTING, columns=_METRICS5,
        rows={"Ours w/o ISA": {"dice": _v(88.89, 0.20), "precision": _v(87.83, 0.94), "recall": _v(90.34, 0.86),
                               "jaccard": _v(80.11, 0.50), "hd": _v(2.87, 0.039)},
              "Ours w/ ISA": dict(_SAU_T1["SAU-Net"])},
        caption="Cross validation results of ablation experiments on SpineSegT2W",
    ),
    "safnet/table1": PaperTable(
        paper="safnet", table="Table 1", section="Results", columns=("fold_1", "fold_2", "fold_3", "fold_4", "fold_5"),
        setting="MRSpineSeg (172 T2W volumes), 5-fold CV, mean Dice over 17 structures per fold",
        rows={"3D UNet": {"fold_1": _v(74.42, 5.22), "fold_2": _v(72.45, 8.24), "fold_3": _v(75.68, 7.42),
                          "fold_4": _v(74.22, 5.32), "fold_5": _v(78.35, 3.22)},
              "CFNet": {"fold_1": _v(78.95, 5.61), "fold_2": _v(77.02, 8.14), "fold_3": _v(78.31, 6.46),
                        "fold_4": _v(74.46, 5.67), "fold_5": _v(80.13, 2.64)},
              "3D ResUNet": {"fold_1": _v(78.95, 5.41), "fold_2": _v(76.27, 9.07), "fold_3": _v(79.04, 6.38),
                             "fold_4": _v(75.25, 5.76), "fold_5": _v(80.07, 4.49)},
              "3D DeepLabV3": {"fold_1": _v(79.19, 6.52), "fold_2": _v(78.62, 8.48), "fold_3": _v(82.77, 3.46),
                               "fold_4": _v(72.59, 5.88), "fold_5": _v(80.83, 3.48)},
              "SAFNet": {"fold_1": _v(79.46, 4.63), "fold_2": _v(78.82, 7.97), "fold_3": _v(81.32, 3.45),
                         "fold_4": _v(80.56, 5.47), "fold_5": _v(81.45, 3.47)}},
        caption="SAFNet achieves the highest mean DSC (%) for most individual vertebra segmentation",
        notes="The text and abstract give SAFNet's fold 5 as 80.83 ± 3.48 (the table's 3D DeepLabV3 value) and an "
              "overall mean of 80.32 ± 5.00; the table prints 81.45 ± 3.47. The std is over structures/cases.",
    ),
    "safnet/table2": PaperTable(
        paper="safnet", table="Table 2", section="Ablation experiments", columns=("dice",),
        setting="MRSpineSeg, mean Dice (mDice)",
        rows={"Base": {"dice": _v(77.15, 7.63)}, "Base + ASPP": {"dice": _v(81.12, 5.20)},
              "Base + Multiscale fusion": {"dice": _v(80.53, 4.78)},
              "Base + Self-attention mechanism": {"dice": _v(79.76, 4.96)}, "SAFNet": {"dice": _v(81.37, 3.68)}},
        caption="Ablation experimental results for SAFNet", headers={"dice": "mDice (%)"},
    ),
    "seam/table1": PaperTable(
        paper="seam", table="Table 1", section="3.3", setting="Ultrasound VPI (private), 4 classes",
        columns=("dice_lumbar", "jaccard_lumbar", "dice_thoracic", "jaccard_thoracic", "dice_rib", "jaccard_rib",
                 "dice", "jaccard", "runtime_s"),
        rows={name: dict(zip(("dice_lumbar", "jaccard_lumbar", "dice_thoracic", "jaccard_thoracic", "dice_rib",
                              "jaccard_rib", "dice", "jaccard", "runtime_s"), map(_v, vals), strict=True))
              for name, vals in {
                  "Vanilla FPN": (85.69, 75.29, 76.42, 62.12, 78.02, 64.24, 80.04, 67.21, 0.32),
                  "UNet": (82.21, 70.26, 74.70, 59.94, 77.37, 63.46, 78.09, 64.56, 0.25),
                  "PPMU": (84.58, 73.68, 76.55, 62.22, 78.21, 64.48, 79.78, 66.79, 0.61),
                  "RSNU": (85.85, 75.52, 77.45, 63.39, 79.26, 65.92, 80.86, 68.28, 0.32),
                  "WaveCT": (86.59, 76.58, 75.91, 61.36, 78.49, 64.82, 80.33, 67.58, 0.67),
                  "DANet": (83.75, 72.60, 75.93, 61.47, 77.48, 63.53, 79.05, 65.86, 0.32),
                  "EMANet": (84.73, 73.82, 77.68, 63.64, 79.02, 65.54, 80.48, 67.66, 0.46),
                  "NonLocal": (85.22, 74.63, 76.81, 62.61, 78.72, 65.19, 80.02, 67.47, 0.63),
                  "SEAM w/o attentive learning": (85.68, 75.24, 77.94, 64.02, 79.79, 66.61, 81.14, 68.62, 0.32),
                  "SEAM w/o structure supervision": (86.54, 76.52, 78.10, 64.24, 79.22, 65.83, 81.29, 68.87, 0.37),
                  "SEAM": (87.09, 77.45, 78.32, 64.58, 80.16, 67.02, 81.85, 69.68, 0.37),
              }.items()},
        caption="Quantitative segmentation results (Dice, Jaccard, runtime); ablations in the same table",
        headers={"dice": "Mean Dice (%)", "jaccard": "Mean Jaccard (%)"},
    ),
    "sekuboyina/table1": PaperTable(
        paper="sekuboyina", table="Table 1", section="3", columns=("dice",),
        setting="Private CT: Dataset 1 (45 healthy), Dataset 2 (11 fractured)",
        rows={"Dataset 1 (HC)": {"dice": _v(87.6, 5.0)}, "Dataset 2 (HC+Fx)": {"dice": _v(85.91, 4.8)}},
        caption="Dice (%) for Datasets 1 and 2",
    ),
    "sekuboyina/table2": PaperTable(
        paper="sekuboyina", table="Table 2", section="3", columns=("dice_hc", "dice_osteo"),
        setting="CSI 2014 challenge CT (20 scans), healthy and osteoporotic test sets",
        rows={"Forsberg et al.": {"dice_hc": _v(92.1, 3.0), "dice_osteo": _v(89.7, 3.0)},
              "Korez et al.": {"dice_hc": _v(94.7, 4.0), "dice_osteo": _v(89.0, 3.0)},
              "Sekuboyina et al.": {"dice_hc": _v(92.1, 1.6), "dice_osteo": _v(83.72, 4.7)}},
        caption="Comparison with state-of-the-art methods on CSI 2014",
        notes="The other methods' Dice is computed per vertebra and aggregated; the paper's on the entire spine.",
    ),
    "review/table1": PaperTable(
        paper="review", table="Table 1", section="4.5", columns=("dice", "jaccard", "fnr", "fpr", "recall"),
        setting="MRSpineSeg slices at 880 x 880, 8:2 split, 20 classes",
        rows={name: dict(zip(("dice", "jaccard", "fnr", "fpr", "recall"), map(_v, vals), strict=True))
              for name, vals in {
                  "U-Net": (79.87, 74.02, 34.04, 1.21, 83.90), "PSPNet": (87.38, 81.79, 22.19, 2.69, 92.24),
                  "DeepLabv3+": (87.55, 81.80, 18.45, 0.11, 90.81), "DenseASPP": (71.44, 67.13, 57.42, 0.15, 74.67),
                  "Attention U-Net": (75.55, 70.00, 36.33, 0.18, 78.98), "DANet": (84.74, 77.35, 30.82, 0.25, 88.95),
                  "EMANet": (87.32, 81.63, 15.88, 0.13, 90.47), "Inf-Net": (81.24, 75.42, 42.28, 0.37, 90.92),
                  "MiniSeg": (85.69, 79.25, 42.29, 2.40, 90.63), "PSANet": (87.04, 81.18, 27.45, 0.16, 89.94),
                  "ResUNet++": (83.14, 77.10, 18.89, 0.46, 86.78), "TransUNet": (76.57, 70.53, 40.62, 0.31, 79.56),
              }.items()},
        caption="Comparison between twelve models", headers={"jaccard": "mIOU (%)"},
        notes="FN rate is large next to 1 - recall (e.g. U-Net 34.04 vs 16.10): the paper's FNR and recall are "
              "probably averaged differently over classes. Table 1's Dice is not Table 2's mDice (U-Net 79.87 vs "
              "76.59); the paper does not say how either is averaged. Ours: every metric per class and volume, "
              "averaged over the 19 foreground classes, then over the test volumes, then over folds, so our FN rate "
              "is 100 - our recall.",
    ),
    "review/table2": PaperTable(
        paper="review", table="Table 2", section="4.5", columns=(*REVIEW_CLASSES, "mDice"),
        setting="MRSpineSeg slices at 880 x 880, 8:2 split, Dice (%) per class",
        rows={name: dict(zip((*REVIEW_CLASSES, "mDice"), map(_v, vals), strict=True))
              for name, vals in _REVIEW_T2.items()},
        caption="Dice coefficient in 19 classes between twelve models", headers={"mDice": "mDice (%)"},
        notes="mDice is the mean of the 19 class columns (to 0.02: rounding). The T10, T9, T10/T11 and T9/T10 "
              "columns repeat 85.21, 94.67, 79.88 and 96.45 for most networks: these classes are rare (53, 9, 68 "
              "and 14 of 200 images, Section 4.5), so the paper's per-class Dice is most likely dominated by slices "
              "where the class is absent from both label and prediction. Ours: each class's Dice per volume (a class "
              "absent from both counts 1), averaged over the test volumes, then over folds; mDice is our mean Dice "
              "over the classes (= the mean of the class columns when every class is scored in every volume).",
    ),
    "review/table3": PaperTable(
        paper="review", table="Table 3", section="4.5", columns=("backbone", "params", "flops", "memory"),
        setting="1 x 880 x 880 input, 20 classes, RTX 3090",
        rows={name: {"backbone": b, "params": p, "flops": f, "memory": m} for name, (b, p, f, m) in {
            "U-Net": ("-", "13M", "366.85G", "4.30GB"), "PSPNet": ("ResNet101", "27M", "470.54G", "2.54GB"),
            "DeepLabv3+": ("ResNet101", "59M", "261.38G", "3.09GB"),
            "DenseASPP": ("DenseNet169", "18M", "124.4G", "4.43GB"),
            "Attention U-Net": ("-", "34M", "787.19G", "7.06GB"), "DANet": ("ResNet101", "66M", "139.01G", "2.53GB"),
            "EMANet": ("ResNet101", "53M", "681.19G", "7.67GB"), "Inf-Net": ("Res2Net101", "50M", "192.55G", "3.66GB"),
            "MiniSeg": ("-", "83K", "1.5G", "5.41GB"), "PSANet": ("ResNet101", "78M", "482.13G", "8.19GB"),
            "ResUNet++": ("-", "14M", "836.62G", "8.88GB"), "TransUNet": ("-", "110M", "514.03G", "4.78GB"),
        }.items()},
        caption="Comparison between the twelve models in terms of parameters, FLOPs and memory",
        notes="Whether FLOPs counts multiply-adds once or twice is not stated, nor what Memory measures (GPU memory "
              "of training or of inference, at which batch size). The parameter counts of U-Net (13M), PSPNet (27M) "
              "and DeepLabv3+ (59M) match other configurations than the text names (spine_monai/networks/README.md); "
              "the bundle's table3_* overlays build those.",
    ),
}


def paper_table(key: str) -> PaperTable:
    """The table ``key`` (``"<paper>/<table>"``, e.g. ``"saunet/table1"``).

    Raises:
        ValueError: if ``key`` is unknown (the message lists the known keys).
    """
    if key not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {key!r}; known: {sorted(PAPER_TABLES)}.")
    return PAPER_TABLES[key]


def format_value(value: Value | None, digits: int | None = None) -> str:
    """A reported value as printed in the paper: ``"89.86 ± 0.10"``, ``"89.31"``, ``"35M"``, ``"-"`` if missing.

    Args:
        value: a :data:`Value` or ``None``.
        digits: decimals; ``None`` gives two, or three where the paper needs them (``0.035``).
    """
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    mean, std = value
    fmt = (lambda x: f"{x:.{digits}f}") if digits is not None else _short
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def _short(x: float) -> str:
    """At least two and at most three decimals (``0.1 -> "0.10"``, ``0.035 -> "0.035"``)."""
    text = f"{x:.3f}".rstrip("0")
    decimals = len(text.split(".")[1])
    return f"{x:.{max(decimals, 2)}f}"
