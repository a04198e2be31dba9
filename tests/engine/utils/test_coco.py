"""COCO RLE: `encode_rle` equal to pycocotools' own recipe (a Fortran-order uint8 copy) for every
layout a caller may hand it, read back by pycocotools, and annotations made from the RLE alone;
`rle_run_lengths` reading pycocotools' compressed strings, and `check_rle` refusing RLEs whose
runs are not a mask of their size (pycocotools leaves the rest of its array unwritten)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam_demo.engine.utils.coco import (
    InvalidRle,
    OutlineBudget,
    check_polygons,
    check_rle,
    coco_annotation,
    coco_rle_annotation,
    decode_rle,
    encode_rle,
    rle_run_lengths,
)


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


@pytest.mark.parametrize(
    "runs",
    [
        [20],
        [0, 20],
        [3, 2, 15],
        [0, 1, 0, 1, 18],  # empty runs inside
        [1, 31, 1, 1023, 1, 32767, 1, 1048575, 1, 2**31 - 2**20 - 4],  # values of 1 to 7 groups of 5 bits
        [5, 3, 9, 1, 1, 1],  # differences to the value two before, negative ones too
        np.random.default_rng(1).integers(0, 40, 500).tolist(),
    ],
    ids=["one-run", "all-ones", "three", "empty-runs", "wide-values", "negative-differences", "random-500"],
)
@pytest.mark.parametrize("chunk_chars", [7, 8, 13, 1 << 20])  # values cut across chunks, and one chunk
def test_rle_run_lengths_reads_pycocotools_strings(runs, chunk_chars):
    """pycocotools compresses the runs (frPyObjects of uncompressed counts); they read back as given,
    however the string is cut into chunks."""
    width = int(sum(runs))
    compressed = mask_utils.frPyObjects({"size": [1, width], "counts": runs}, 1, width)
    assert np.concatenate(list(rle_run_lengths(compressed["counts"], chunk_chars))).tolist() == runs


@pytest.mark.parametrize(
    ("counts", "says"),
    [
        ([3, 2], "its runs add up to 5 pixels, not the 20 of its size"),  # stops short: the rest unwritten
        (b"", "its runs add up to 0 pixels, not the 20 of its size"),
        (b"1", "its runs add up to 1 pixel, not the 20 of its size"),
        (b"5", "its runs add up to 5 pixels, not the 20 of its size"),
        (b"3d0", "its runs add up to 23 pixels, not the 20 of its size"),
        (b"0d", "its counts end in the middle of a value"),
        (b"zzzz", "its counts hold a character outside the RLE alphabet"),
        (b"0\x7f", "its counts hold a character outside the RLE alphabet"),
        (b"0" + b"o" * 8 + b"0", "its counts hold a value wider than 32 bits"),
        (b"41@", "its counts hold a negative run"),  # 4, 1, then -16 (the third value is not a difference)
    ],
    ids=[
        "short-uncompressed",
        "empty",
        "one-pixel",
        "short",
        "long",
        "cut-off",
        "letters",
        "control",
        "wide",
        "negative",
    ],
)
def test_check_rle_refuses_runs_that_are_not_a_mask_of_its_size(counts, says):
    rle = {"size": [4, 5], "counts": counts}
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(rle, 4, 5)
    with pytest.raises(InvalidRle, match=says):
        check_rle(rle)


@pytest.mark.parametrize(
    ("counts", "says"),
    [
        ([3, 2], "its runs add up to 5 pixels, not the 20 of its size"),
        ([-5, 25], "its counts hold a negative run"),  # pycocotools raised OverflowError (uint32)
        ([10**12, 5], "its runs add up to 1,000,000,000,005 pixels"),
        ([1.5, 18.5], "its counts are not all whole numbers"),
        (["5", 15], "its counts are not all whole numbers"),
        ([], "its runs add up to 0 pixels"),
    ],
    ids=["short", "negative", "huge", "halves", "text", "empty"],
)
def test_check_rle_reads_uncompressed_counts_before_pycocotools(counts, says):
    """Uncompressed runs from a file are checked as given: pycocotools takes them as uint32."""
    with pytest.raises(InvalidRle, match=says):
        check_rle({"size": [4, 5], "counts": counts})


@pytest.mark.parametrize("counts", [[20], [0, 20], [3, 2, 15], [3.0, 17.0]], ids=["one", "all-ones", "three", "floats"])
def test_check_rle_takes_uncompressed_counts_of_its_size(counts):
    check_rle({"size": [4, 5], "counts": counts})


@pytest.mark.parametrize(
    ("polygon", "says"),
    [
        ([0, 0, 10, float("nan"), 10, 10], "polygon 1 holds a number that is not finite"),
        ([0, 0, 10, 0, 10, float("inf")], "polygon 1 holds a number that is not finite"),
        ([0, 0, 1e9, 0, 1e9, 1e9], r"polygon 1 has a point at \(1e\+09, 0\), more than an image's size outside"),
        ([-1e18, 0, 10, 0, 10, 10], r"polygon 1 has a point at \(-1e\+18, 0\)"),
        ([0, 0, 10, 0, 10, 10, 5], "polygon 1 has an odd count of numbers \\(7\\)"),
    ],
    ids=["nan", "infinity", "1e9", "minus-1e18", "odd"],
)
def test_check_polygons_refuses_what_pycocotools_cannot_draw(polygon, says):
    """pycocotools casts the vertices to int and walks each edge pixel by pixel: a NaN or a vertex at
    1e9 crashed the process (a segfault in frPyObjects)."""
    with pytest.raises(InvalidRle, match=says):
        check_polygons([polygon], (48, 64))


def test_check_polygons_draws_at_most_20_million_pixels_of_outline_a_file():
    """pycocotools draws ~52 bytes per pixel of edge: 800,000 vertices zig-zagging across a 500-pixel
    image took 21 GB. A file's polygons share one budget of outline."""
    side = [0.0, 0.0, 2000.0, 0.0, 2000.0, 2000.0, 0.0, 2000.0]  # 8,000 pixels of outline
    check_polygons([side] * 2500, (2000, 2000))
    with pytest.raises(
        InvalidRle,
        match="its polygons are 20,008,000 pixels long in all: one file's are drawn up to 20,000,000; simplify",
    ):
        check_polygons([side] * 2501, (2000, 2000))
    budget = OutlineBudget()
    check_polygons([side] * 2000, (2000, 2000), budget)
    assert budget.left == 4_000_000
    with pytest.raises(
        InvalidRle, match="its polygons are 4,008,000 pixels long in all: .* of which 4,000,000 are left"
    ):
        check_polygons([side] * 501, (2000, 2000), budget)


def test_check_polygons_takes_vertices_within_an_image_size_outside_it():
    check_polygons([[-64, -48, 128, -48, 128, 96, -64, 96], [0, 0, 5, 0, 5, 5]], (48, 64))
