"""COCO encoding of masks: one annotation with compressed RLE (pycocotools) or polygons, bbox, area and extra fields."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from sam_demo.engine.utils.polygons import DEFAULT_TOLERANCE, mask_polygons

__all__ = [
    "MAX_OUTLINE",
    "InvalidRle",
    "OutlineBudget",
    "check_polygons",
    "check_rle",
    "coco_annotation",
    "coco_rle_annotation",
    "decode_rle",
    "encode_rle",
    "rle_run_lengths",
]


# How long one file's polygons may be in all, in pixels (see `OutlineBudget`).
MAX_OUTLINE = 20_000_000


class InvalidRle(ValueError):
    """An RLE whose counts are not a mask of its size; the message says what is wrong with them."""


def encode_rle(mask: np.ndarray) -> dict:
    """An (H, W) bool mask as pycocotools' compressed RLE: {"size": [H, W], "counts": bytes}.

    pycocotools reads the mask column by column; OpenCV's transpose lays it out so, ~7x faster than
    numpy's Fortran-order copy (1.2 against 7.9 ms for a 12 MP mask)."""
    binary = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == np.bool_ else mask.astype(np.uint8)
    if binary.ndim != 2 or not binary.size:
        return mask_utils.encode(np.asfortranarray(binary))
    return mask_utils.encode(cv2.transpose(binary).T)


def rle_run_lengths(counts: bytes, chunk_chars: int = 1 << 20) -> Iterator[np.ndarray]:
    """The run lengths (int64) that a compressed COCO RLE string holds, a chunk of `chunk_chars`
    characters at a time (memory bounded for any string), read as pycocotools' `rleFrString` reads
    it: each value in 5-bit groups, least significant first, "0" (48) added, 0x20 marking a group
    that is not the value's last, 0x10 in the last one the sign; from the fourth value on, each is a
    difference to the value two before.

    Raises InvalidRle for a character outside "0" to "o", a value cut off at the end or wider than
    32 bits (7 groups)."""
    text = np.frombuffer(counts, dtype=np.uint8)
    done, carry = 0, [0, 0]  # values read; the last run of the even (from the third) and odd values
    start = 0
    while start < text.size:
        chars = text[start : start + chunk_chars] - np.uint8(48)  # below "0" wraps round past 63
        if chars.max() > 63:
            raise InvalidRle("its counts hold a character outside the RLE alphabet")
        ends = np.flatnonzero((chars & 0x20) == 0)  # each value's last character
        if start + chars.size == text.size and (not ends.size or ends[-1] != chars.size - 1):
            raise InvalidRle("its counts end in the middle of a value")
        widths = np.diff(ends, prepend=-1)
        if not ends.size or widths.max() > 7:  # 35 bits: more than a count of pixels can need
            raise InvalidRle("its counts hold a value wider than 32 bits")
        values = np.zeros(ends.size, dtype=np.int64)
        for group in range(int(widths.max())):
            has = widths > group
            values[has] |= (chars[ends[has] - widths[has] + 1 + group] & 0x1F).astype(np.int64) << (5 * group)
        negative = (chars[ends] & 0x10) != 0  # sign-extended from the value's last group
        values[negative] -= np.int64(1) << (5 * widths[negative])
        # m > 2: cnts[m] += cnts[m - 2], so from the second and the third value on each parity adds up
        for parity in (0, 1):
            first = (parity - done) % 2 + (2 if parity == 0 and done == 0 else 0)
            chain = values[first::2]
            if chain.size:
                np.cumsum(chain, out=chain)
                chain += carry[parity]
                carry[parity] = int(chain[-1])
        done += ends.size
        start += int(ends[-1]) + 1
        yield values


def check_rle(rle: dict) -> None:
    """Raises InvalidRle unless the RLE's runs are H x W pixels in all, none negative: for RLEs from
    outside (a loaded file) before pycocotools reads them, as it leaves the pixels after runs that
    stop short unwritten (whatever its fresh array held) and takes uncompressed runs as uint32.
    Compressed (bytes or str) or uncompressed (a list of whole numbers). ~2 ms for a 12 MP photo's
    object; a string past the image's pixels is refused from the chunk that passes them."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, int) or isinstance(v, float) and v.is_integer() for v in counts):
            raise InvalidRle("its counts are not all whole numbers")
        if any(v < 0 for v in counts):
            raise InvalidRle("its counts hold a negative run")
        total = int(sum(counts))
    else:
        total = 0
        for runs in rle_run_lengths(counts.encode("ascii") if isinstance(counts, str) else counts):
            if runs.min() < 0:
                raise InvalidRle("its counts hold a negative run")
            total += int(runs.sum())
            if total > height * width:
                break
    if total != height * width:
        pixels = f"{total:,} pixel" + ("" if total == 1 else "s")
        raise InvalidRle(f"its runs add up to {pixels}, not the {height * width:,} of its size")


class OutlineBudget:
    """The pixels of polygon outline that one loaded file may still have drawn (`check_polygons`):
    pycocotools draws ~52 bytes and ~90 ns per pixel of an edge's longer side, so MAX_OUTLINE is
    ~1 GB at once and ~2 s in all. A fragmented mask traced pixel by pixel, its parts joined by cuts
    (YOLO's one polygon an object), is long: a random model's noisy masks reach 18 H W."""

    def __init__(self, pixels: int = MAX_OUTLINE):
        self.left = pixels


def check_polygons(polygons: list[list[float]], image_hw: tuple[int, int], budget: OutlineBudget | None = None) -> None:
    """Raises InvalidRle unless each polygon is x, y pairs of finite numbers within one image size of
    the (H, W) image, and their outline fits in `budget` (a new one: MAX_OUTLINE), which they then
    use up. From outside, before pycocotools: it casts the vertices to int and walks each edge pixel
    by pixel, so a NaN or a vertex at 1e9 crashed the process, and 800,000 vertices zig-zagging across
    a 500-pixel image took 21 GB."""
    height, width = image_hw
    budget = budget or OutlineBudget()
    length = 0.0
    for index, polygon in enumerate(polygons):
        xy = np.asarray(polygon, dtype=np.float64)
        if xy.size % 2:
            raise InvalidRle(f"its polygon {index + 1} has an odd count of numbers ({xy.size}): x, y pairs are needed")
        xy = xy.reshape(-1, 2)
        if not np.isfinite(xy).all():
            raise InvalidRle(f"its polygon {index + 1} holds a number that is not finite (NaN or infinity)")
        far = (xy < (-width, -height)) | (xy > (2 * width, 2 * height))
        if far.any():
            x, y = xy[far.any(1)][0]
            raise InvalidRle(
                f"its polygon {index + 1} has a point at ({x:g}, {y:g}), more than an image's size outside it"
            )
        length += float(np.abs(np.diff(xy, axis=0, append=xy[:1])).max(1).sum())  # each edge's longer side
    if length > budget.left:
        left = "" if budget.left == MAX_OUTLINE else f", of which {budget.left:,} are left"
        raise InvalidRle(
            f"its polygons are {length:,.0f} pixels long in all: one file's are drawn up to {MAX_OUTLINE:,}{left}; "
            "simplify them"
        )
    budget.left -= int(length)


def decode_rle(rle: dict) -> np.ndarray:
    """`encode_rle`'s inverse: the (H, W) bool mask, in row-major order (pycocotools decodes column
    by column; OpenCV's transpose turns it, as in `encode_rle`). An RLE from outside: `check_rle` first."""
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
