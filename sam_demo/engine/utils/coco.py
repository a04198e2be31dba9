"""COCO encoding of masks: one annotation with compressed RLE (pycocotools), bbox, area and extra fields."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["coco_annotation"]


def coco_annotation(mask: np.ndarray, annotation_id: int, image_id: int = 1, category_id: int = 1, **fields) -> dict:
    """A COCO annotation for an (H, W) bool mask: compressed RLE, bbox (XYWH), area, plus `fields`."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0,
        **fields,
    }
