"""COCO encoding of masks: one annotation with compressed RLE (pycocotools) or polygons, bbox, area and extra fields."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from sam_demo.engine.utils.polygons import DEFAULT_TOLERANCE, mask_polygons

__all__ = ["coco_annotation", "coco_rle_annotation", "decode_rle", "encode_rle"]


def encode_rle(mask: np.ndarray) -> dict:
    """An (H, W) bool mask as pycocotools' compressed RLE: {"size": [H, W], "counts": bytes}.

    pycocotools reads the mask column by column; OpenCV's transpose lays it out so, ~7x faster than
    numpy's Fortran-order copy (1.2 against 7.9 ms for a 12 MP mask)."""
    binary = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == np.bool_ else mask.astype(np.uint8)
    if binary.ndim != 2 or not binary.size:
        return mask_utils.encode(np.asfortranarray(binary))
    return mask_utils.encode(cv2.transpose(binary).T)


def decode_rle(rle: dict) -> np.ndarray:
    """`encode_rle`'s inverse: the (H, W) bool mask, in row-major order (pycocotools decodes column
    by column; OpenCV's transpose turns it, as in `encode_rle`)."""
    columns = mask_utils.decode(rle)  # (H, W) uint8 0/1, Fortran order
    if columns.ndim != 2 or not columns.size:
        return np.ascontiguousarray(columns, dtype=bool)
    return cv2.transpose(columns.T).view(bool)


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
    rle = encode_rle(mask)
    if not polygons:
        return coco_rle_annotation(rle, annotation_id, image_id, category_id, **fields)
    segmentation = [[round(float(v), 2) for v in polygon.ravel()] for polygon in mask_polygons(mask, tolerance)]
    return _annotation(rle, segmentation, annotation_id, image_id, category_id, fields)


def coco_rle_annotation(rle: dict, annotation_id: int, image_id: int = 1, category_id: int = 1, **fields) -> dict:
    """`coco_annotation` of a mask held as compressed RLE (`encode_rle`): segmentation that RLE, its
    counts as text; bbox (XYWH) and area from the RLE, plus `fields`."""
    segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return _annotation(rle, segmentation, annotation_id, image_id, category_id, fields)


def _annotation(rle: dict, segmentation, annotation_id: int, image_id: int, category_id: int, fields: dict) -> dict:
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
