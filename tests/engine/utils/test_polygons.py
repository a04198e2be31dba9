"""Masks as polygons: each part with its holes, read back by pycocotools (even-odd) and OpenCV
(winding number), exact at tolerance 0 and within a pixel of the edge at the default tolerance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sam_demo.engine.utils.polygons import DEFAULT_TOLERANCE, joined_polygon, mask_polygons, polygons_to_mask


def _canvas() -> np.ndarray:
    return np.zeros((300, 400), np.uint8)


def ring() -> np.ndarray:
    m = _canvas()
    cv2.circle(m, (200, 150), 90, 1, -1)
    cv2.circle(m, (200, 150), 40, 0, -1)
    return m.astype(bool)


def parts_with_holes() -> np.ndarray:
    m = _canvas()
    m[30:270, 20:180] = 1
    m[60:120, 50:100] = 0  # two holes in the first part
    m[160:240, 110:150] = 0
    cv2.ellipse(m, (300, 150), (80, 120), 30, 0, 360, 1, -1)  # a second part
    cv2.circle(m, (300, 150), 25, 0, -1)  # with a hole holding an island
    cv2.circle(m, (300, 150), 10, 1, -1)
    return m.astype(bool)


def thin_diagonal() -> np.ndarray:
    return np.eye(300, 400, k=20, dtype=bool) | np.eye(300, 400, k=21, dtype=bool)


def speckles() -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.random((300, 400)).astype(np.float32), (0, 0), 3) > 0.5


SHAPES = {"ring": ring, "parts with holes": parts_with_holes, "1-2 px diagonal": thin_diagonal, "speckles": speckles}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max(1, (a | b).sum())


def off_the_edge(got: np.ndarray, want: np.ndarray) -> int:
    """Pixels where `got` differs from `want` more than one pixel from its edge."""
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(want.astype(np.uint8), kernel).astype(bool) & ~cv2.erode(want.astype(np.uint8), kernel).astype(
        bool
    )
    return int(((got != want) & ~edge).sum())


@pytest.mark.parametrize("shape", SHAPES)
def test_at_tolerance_0_the_polygons_draw_the_mask_exactly(shape):
    """Exactly, but for a few pixels where two parts touch only at a corner (the speckles)."""
    mask = SHAPES[shape]()
    polygons = mask_polygons(mask, tolerance=0)
    for drawn in (polygons_to_mask(polygons, mask.shape), polygons_to_mask([joined_polygon(polygons)], mask.shape)):
        wrong = int((drawn != mask).sum())
        assert wrong == 0 if shape != "speckles" else wrong <= mask.sum() * 1e-4, wrong


@pytest.mark.parametrize("shape", ["ring", "parts with holes"])
def test_at_the_default_tolerance_the_polygons_keep_holes_and_parts_within_a_pixel(shape):
    mask = SHAPES[shape]()
    polygons = mask_polygons(mask, DEFAULT_TOLERANCE)
    drawn = polygons_to_mask(polygons, mask.shape)
    assert iou(drawn, mask) >= 0.98 and off_the_edge(drawn, mask) == 0
    assert len(polygons) == (1 if shape == "ring" else 3), "a polygon per part (the island in a hole is one)"
    assert sum(len(p) for p in polygons) < np.count_nonzero(cv2.Canny(mask.astype(np.uint8) * 255, 1, 1)) / 4, (
        "simplified"
    )


@pytest.mark.parametrize("shape", ["ring", "parts with holes"])
def test_opencv_fills_them_as_pycocotools_does(shape):
    """fillPoly fills by winding number: a hole's outline runs the other way round, so it stays empty."""
    mask = SHAPES[shape]()
    polygon = joined_polygon(mask_polygons(mask, tolerance=0))
    # OpenCV samples pixel centres at integers: COCO's frame is shifted by half a pixel.
    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(filled, [np.round((polygon - 0.5) * 16).astype(np.int32)], 1, shift=4)
    assert iou(filled.astype(bool), mask) >= 0.98  # fillPoly also draws the pixels the outline touches


def test_an_empty_mask_has_no_polygon():
    assert mask_polygons(np.zeros((10, 10), bool)) == []
    assert len(joined_polygon([])) == 0


@pytest.mark.parametrize("tolerance", [0, DEFAULT_TOLERANCE])
def test_polygons_stay_within_the_image_frame(tolerance):
    """Speckles at the image's edges, where pixels touch at a corner: their mitred outlines reach
    0.7 px past the frame unless clipped, and YOLO's coordinates must stay in [0, 1]."""
    mask = np.random.default_rng(0).random((8, 8)) > 0.5
    xy = np.concatenate(mask_polygons(mask, tolerance))
    assert xy.min() >= 0 and (xy <= [8, 8]).all()
