"""Data: the synthetic COCO-format dataset, the COCO dataset class, transforms, validation.

Names are imported lazily so that ``import rtinst.data.synthetic`` (used in worker
processes) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate_synthetic": "rtinst.data.synthetic",
    "CATEGORIES": "rtinst.data.synthetic_draw",
    "CocoInstanceDataset": "rtinst.data.coco",
    "decode_segmentation": "rtinst.data.coco",
    "Batch": "rtinst.data.transforms",
    "collate": "rtinst.data.transforms",
    "Compose": "rtinst.data.transforms",
    "ResizeShortEdge": "rtinst.data.transforms",
    "ResizeFixed": "rtinst.data.transforms",
    "RandomCrop": "rtinst.data.transforms",
    "RandomHorizontalFlip": "rtinst.data.transforms",
    "RandomApply": "rtinst.data.transforms",
    "ssd_augmentation": "rtinst.data.augment",
    "RandomSampleCrop": "rtinst.data.augment",
    "PhotometricDistort": "rtinst.data.augment",
    "DiscardSmallBoxes": "rtinst.data.augment",
    "SplitCrowd": "rtinst.data.augment",
    "Normalize": "rtinst.data.transforms",
    "masks_to_boxes": "rtinst.data.transforms",
    "validate_coco": "rtinst.data.validate",
    "ValidationReport": "rtinst.data.validate",
    "dataset_statistics": "rtinst.data.stats",
    "format_statistics": "rtinst.data.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rtinst.data' has no attribute {name!r}")
