"""Label conventions: the MRSpineSeg 20-class spine MRI labels, the VerSe CT vertebra labels and the binary view.

MRSpineSeg (the 2nd CSIG MRSpineSeg challenge data; Pang et al., "SpineParseNet: Spine Parsing for Volumetric MR
Image by a Two-Stage Segmentation Framework With Semantic Image Representation", IEEE TMI 40(1), 2021,
doi:10.1109/TMI.2020.3025087) labels 10 vertebrae (sacrum, L5..L1, T12..T9) and the 9 discs between them. The same
convention is used by SAFNet (Yilizati-Yilihamu et al., 2023, BMC, "A spine segmentation method based on scene
aware fusion network", section "Dataset") and the twelve-model review (Zhou et al., ICMR 2022,
doi:10.1145/3512527.3531356). SAU-Net (Zhang, Yuan, Wang and Zhang, 2020) is binary: spine vs background, see
:func:`to_binary`.

VerSe (Sekuboyina et al., "VerSe: A Vertebrae labelling and segmentation benchmark for multi-detector CT images",
Medical Image Analysis 73, 2021, doi:10.1016/j.media.2021.102166) labels each vertebra of a CT scan as one instance:
1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6 (a transitional sixth lumbar vertebra), 26 sacrum and 27 coccyx (defined
but hardly ever annotated) and 28 T13 (a thirteenth thoracic vertebra); discs, ribs and the pelvis are background. The
attention-driven CT method (Sekuboyina et al., 2017) segments the spine as one class (:func:`to_binary`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "MRSPINESEG_LABELS",
    "MRSPINESEG_NAMES",
    "VERTEBRA_LABELS",
    "DISC_LABELS",
    "BINARY_LABELS",
    "VERSE_LABELS",
    "VERSE_NAMES",
    "to_binary",
]

#: label value -> structure name (0 = background), as in MRSpineSeg.
MRSPINESEG_LABELS: dict[int, str] = {
    0: "background",
    1: "S",
    2: "L5",
    3: "L4",
    4: "L3",
    5: "L2",
    6: "L1",
    7: "T12",
    8: "T11",
    9: "T10",
    10: "T9",
    11: "L5/S",
    12: "L4/L5",
    13: "L3/L4",
    14: "L2/L3",
    15: "L1/L2",
    16: "T12/L1",
    17: "T11/T12",
    18: "T10/T11",
    19: "T9/T10",
}

#: structure name -> label value.
MRSPINESEG_NAMES: dict[str, int] = {name: value for value, name in MRSPINESEG_LABELS.items()}

#: vertebra labels (sacrum ... T9) and disc labels (L5/S ... T9/T10).
VERTEBRA_LABELS: tuple[int, ...] = tuple(range(1, 11))
DISC_LABELS: tuple[int, ...] = tuple(range(11, 20))

#: label value -> vertebra name (0 = background), as in VerSe (CT).
VERSE_LABELS: dict[int, str] = {
    0: "background",
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 7)},
    26: "S",
    27: "Co",
    28: "T13",
}

#: vertebra name -> VerSe label value.
VERSE_NAMES: dict[str, int] = {name: value for value, name in VERSE_LABELS.items()}

#: the binary view used by SAU-Net.
BINARY_LABELS: dict[int, str] = {0: "background", 1: "spine"}

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def to_binary(label: ArrayT, dtype: Any = None) -> ArrayT:
    """Binary spine view of a multi-class label map: ``label > 0``.

    Args:
        label: label map of any shape, a numpy array or a torch tensor (a MONAI ``MetaTensor`` stays one).
        dtype: dtype of the result; ``None`` keeps the dtype of ``label`` (so the result can replace the label in a
            pipeline, values 0/1), ``bool`` (or ``torch.bool``) gives a boolean mask.

    Returns:
        Array or tensor of the same type and shape as ``label`` with 1 (True) where ``label > 0``.

    Raises:
        TypeError: if ``label`` is neither a numpy array nor a torch tensor.
    """
    if isinstance(label, torch.Tensor):
        mask = label > 0
        if dtype is None:
            return mask.to(label.dtype)
        return mask.to(torch.bool if dtype is bool else dtype)
    if isinstance(label, np.ndarray):
        return (label > 0).astype(label.dtype if dtype is None else dtype)
    raise TypeError(f"label must be a numpy array or a torch tensor, got {type(label).__name__}.")
