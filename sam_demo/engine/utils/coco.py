"""COCO encoding of masks: one annotation with compressed RLE (pycocotools) or polygons, bbox, area and extra fields."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from sam_demo.engine.utils.polygons import DEFAULT_TOLERANCE, mask_polygons

__all__ = ["coco_annotation"]


def coco_annotation(
    mask: np.ndarray,
    annotation_id: int,
    image_id: int = 1,
    category_id: int = 1,
    polygons: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    **fields,
) -> dict:
    """A COCO annotation for an (H, W) bool mask: its segmentation as compressed RLE (exact) or, with
    `polygons`, as polygons (a polygon per part, holes cut in: `utils/polygons.py`, within a pixel at
    `tolerance`), bbox (XYWH) and area (the mask's pixels) from the mask, plus `fields`."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    segmentation = (
        [[round(float(v), 2) for v in polygon.ravel()] for polygon in mask_polygons(mask, tolerance)]
        if polygons
        else {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    )
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0,
        **fields,
    }
