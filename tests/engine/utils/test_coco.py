"""COCO RLE: `encode_rle` equal to pycocotools' own recipe (a Fortran-order uint8 copy) for every
layout a caller may hand it, read back by pycocotools, and annotations made from the RLE alone."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam_demo.engine.utils.coco import coco_annotation, coco_rle_annotation, decode_rle, encode_rle


def _reference(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def _random(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) > 0.5


@pytest.mark.parametrize(
    "mask",
    [
        _random((1, 1)),
        _random((4, 1)),
        _random((1, 4)),
        _random((3, 5)),
        _random((300, 451)),
        np.ones((7, 9), bool),
        np.zeros((7, 9), bool),
        np.zeros((0, 5), bool),
        _random((40, 60))[:, ::3],  # a strided view
        _random((40, 60)).T,  # Fortran order already
        _random((30, 20)).astype(np.uint8),  # 0/1 bytes
    ],
    ids=["1x1", "4x1", "1x4", "3x5", "300x451", "full", "empty", "0x5", "strided", "fortran", "uint8"],
)
def test_encode_rle_is_pycocotools_recipe(mask):
    rle = encode_rle(mask)
    assert rle == _reference(mask)
    decoded = decode_rle(rle)
    assert decoded.dtype == bool and decoded.flags.c_contiguous and np.array_equal(decoded, mask.astype(bool))


def test_an_annotation_from_the_rle_is_the_annotation_from_the_mask():
    mask = np.zeros((50, 80), bool)
    mask[10:30, 20:70] = True
    from_mask = coco_annotation(mask, 3, image_id=2, category_id=5, predicted_iou=0.9)
    from_rle = coco_rle_annotation(encode_rle(mask), 3, image_id=2, category_id=5, predicted_iou=0.9)
    assert from_rle == from_mask
    assert from_rle["area"] == 20 * 50 and from_rle["bbox"] == [20.0, 10.0, 50.0, 20.0]
