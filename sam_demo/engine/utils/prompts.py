"""SAM's prompt rules, in one place: points, labels, boxes, a mask input, and how they form groups.

`check_structure` needs no image: shapes, label values, matching group counts. `check_prompts`
adds what depends on the image: points on it, boxes overlapping it. Both raise `PromptError`
naming the offending input ("points", "labels", "boxes", "mask_input" or "prompt"). Callers that
speak of inputs by other names (the endpoint's columns) pass `names`, and messages use them.

Shapes: points_xy (G, N, 2) [x, y] in original pixels; labels (G, N) in {1 foreground,
0 background, -1 ignored}; boxes_xyxy (G, 4) [x0, y0, x1, y1]; mask_input (1, 256, 256) or
(1, 1, 256, 256) low-res logits, with one group at most. Group g's points go with box g.
"""

from __future__ import annotations

import math

import numpy as np

from sam_demo.engine.utils.geometry import LOW_RES_SIDE

FIELDS = ("points", "labels", "boxes", "mask_input")
# How far past the image a box may reach, in image sizes: past the edge is used as given (detectors'
# boxes do), but SAM's float32 prompt encoder turns a coordinate near 1e38 into NaN scores.
BOX_REACH = 10


def finite_numbers(value, count: int) -> bool:
    """Whether a parsed JSON `value` is a list of `count` finite numbers (not booleans, nor integers
    past floats' range, which `math.isfinite` would raise on)."""
    return isinstance(value, list) and len(value) == count and all(finite_number(v) for v in value)


def finite_number(value) -> bool:
    """Whether a parsed JSON `value` is a finite number: not a boolean, nor an integer past floats'
    range (which `math.isfinite` would raise on)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits
        return False


class PromptError(ValueError):
    """A prompt is malformed or lies outside the image. `field` names the offending input."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def check_structure(points_xy, labels, boxes_xyxy, mask_input=None, names: dict[str, str] | None = None):
    """Validate prompts without an image; return float64 points, int64 labels (all 1 where
    points come without labels), float64 boxes and float32 (1, 1, 256, 256) mask input, each
    None where absent. Raises PromptError."""
    name = {field: field for field in FIELDS} | (names or {})
    groups = None
    if points_xy is not None:
        points_xy = _finite_array("points", points_xy, np.float64)
        if points_xy.ndim != 3 or points_xy.shape[2] != 2 or 0 in points_xy.shape:
            raise PromptError(
                "points",
                f"each point must be [x, y], in groups: expected shape (groups, points, 2), "
                f"got {list(points_xy.shape)}",
            )
        groups = points_xy.shape[0]
        labels = (
            np.ones(points_xy.shape[:2], dtype=np.int64)
            if labels is None
            else _finite_array("labels", labels, np.float64)
        )
        if labels.shape != points_xy.shape[:2]:
            raise PromptError(
                "labels",
                f"{name['labels']} have shape {list(labels.shape)} but the points have "
                f"{list(points_xy.shape[:2])} (groups, points)",
            )
        if not np.isin(labels, (1, 0, -1)).all():
            raise PromptError(
                "labels",
                f"labels must be 1, 0 or -1 (foreground, background, ignored), got "
                f"{sorted(set(np.unique(labels).tolist()))}",
            )
        labels = labels.astype(np.int64)
    elif labels is not None:
        raise PromptError("labels", f"{name['labels']} were given without {name['points']}")
    if boxes_xyxy is not None:
        boxes_xyxy = _finite_array("boxes", boxes_xyxy, np.float64)
        if boxes_xyxy.ndim != 2 or boxes_xyxy.shape[1] != 4 or len(boxes_xyxy) == 0:
            raise PromptError("boxes", f"expected shape (boxes, 4) as [x0, y0, x1, y1], got {list(boxes_xyxy.shape)}")
        if groups is not None and groups != len(boxes_xyxy):
            raise PromptError(
                "boxes",
                f"{groups} point groups but {len(boxes_xyxy)} boxes; group i goes with box i, so the counts must match",
            )
        groups = len(boxes_xyxy)
    if mask_input is not None:
        mask_input = _finite_array("mask_input", mask_input, np.float32)
        if mask_input.shape == (1, LOW_RES_SIDE, LOW_RES_SIDE):
            mask_input = mask_input[None]
        if mask_input.shape != (1, 1, LOW_RES_SIDE, LOW_RES_SIDE):
            raise PromptError("mask_input", f"expected (1, 256, 256) low-res logits, got {mask_input.shape}")
        if groups not in (None, 1):
            raise PromptError("mask_input", f"a mask input goes with one prompt group, got {groups}")
    if points_xy is None and boxes_xyxy is None and mask_input is None:
        raise PromptError("prompt", f"no prompt: give {name['points']} and/or {name['boxes']} (or a mask input)")
    return points_xy, labels, boxes_xyxy, mask_input


def check_prompts(image_hw: tuple[int, int], points_xy, labels, boxes_xyxy, mask_input=None):
    """`check_structure`, then the rules of an image of `image_hw` (H, W): points lie on the closed
    rectangle [0, W] x [0, H]; boxes need x0 < x1 and y0 < y1 and must overlap the image. A box that
    reaches past the edge is used as given, as the live endpoint and the transformers recipe use
    it (detectors produce such boxes)."""
    points_xy, labels, boxes_xyxy, mask_input = check_structure(points_xy, labels, boxes_xyxy, mask_input)
    h, w = image_hw
    if points_xy is not None:
        outside = points_outside(points_xy, image_hw)
        if outside.any():
            g, n = np.argwhere(outside)[0]
            raise PromptError(
                "points",
                f"point {points_xy[g, n].tolist()} (group {g}, point {n}) lies outside the "
                f"{w}x{h} image; x must be in [0, {w}] and y in [0, {h}]",
            )
    if boxes_xyxy is not None:
        for i, (x0, y0, x1, y1) in enumerate(boxes_xyxy):
            if not (x1 > x0 and y1 > y0):
                raise PromptError(
                    "boxes", f"box {i} {boxes_xyxy[i].tolist()} has zero or negative size; need x0 < x1 and y0 < y1"
                )
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                raise PromptError("boxes", f"box {i} {boxes_xyxy[i].tolist()} lies wholly outside the {w}x{h} image")
            if min(x0 / w, y0 / h) < -BOX_REACH or max(x1 / w, y1 / h) > BOX_REACH + 1:
                raise PromptError(
                    "boxes",
                    f"box {i} {boxes_xyxy[i].tolist()} reaches more than {BOX_REACH} image sizes past the {w}x{h} "
                    f"image; x must be in [{-BOX_REACH * w}, {(BOX_REACH + 1) * w}] and y in "
                    f"[{-BOX_REACH * h}, {(BOX_REACH + 1) * h}]",
                )
    return points_xy, labels, boxes_xyxy, mask_input


def points_outside(points_xy: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(..., 2) [x, y] points -> (...) bool: True where the point is off the closed image rectangle."""
    h, w = image_hw
    x, y = points_xy[..., 0], points_xy[..., 1]
    return ~((x >= 0) & (x <= w) & (y >= 0) & (y <= h))


def _finite_array(field: str, value, dtype) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise PromptError(field, f"not a regular numeric array ({exc})") from None
    if not np.isfinite(array).all():
        raise PromptError(field, "contains NaN or infinite numbers")
    return array
