"""Masks as polygons, for COCO's polygon segmentations and YOLO's segmentation labels.

A mask's outline comes from OpenCV's contours (two levels: each part's outline and its holes),
moved onto the edge pixels' outer edges and simplified to a tolerance in pixels (Douglas-Peucker). A hole is kept inside its part's polygon by
a cut of zero width from the nearest vertex of the outline to the nearest of the hole, so one
polygon draws the part with its holes: the readers fill polygons even-odd (pycocotools) or by
winding number (OpenCV's `fillPoly`, with the hole's outline the other way round, as
`findContours` gives it), and both leave the hole empty. COCO lists a polygon per part; a YOLO
label line holds one polygon per object, so there the parts are joined the same way.

Supervision's `mask_to_polygons` takes the outer contours only (holes are lost) and gives a polygon
per part; the cuts here keep holes and parts in the one polygon each format allows.

Polygons are (N, 2) float64 arrays of x, y in COCO's frame (pixel (x, y) covers [x, x + 1) x
[y, y + 1)), on the outer edges of the mask's edge pixels: OpenCV's contours (and most tools'
polygons) pass through those pixels' centres, which loses half of each edge pixel when read back;
moved half a pixel out, a polygon at tolerance 0 draws the mask exactly, and at the default
tolerance within a pixel of its edge. RLE segmentations are exact.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DEFAULT_TOLERANCE", "MAX_TOLERANCE", "joined_polygon", "mask_polygons", "polygons_to_mask"]

DEFAULT_TOLERANCE = 1.0  # pixels a simplified outline may stray from the mask's edge
MAX_TOLERANCE = 10.0  # pixels: past this an outline no longer follows its mask
_MIN_VERTICES = 3


def mask_polygons(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[np.ndarray]:
    """One polygon per connected part of an (H, W) bool mask, its holes cut in; parts whose
    outline has fewer than 3 vertices are left out. Largest part first."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    # Clipped to the image's frame: a corner's mitre (a diagonal step on the edge) may reach past it,
    # and YOLO's coordinates must stay within [0, 1]; no pixel of the mask lies out there.
    h, w = mask.shape
    outlines = [
        np.clip(_outline(c, parent == -1, tolerance), 0, [w, h]) for c, (_, _, _, parent) in zip(contours, hierarchy)
    ]
    parts = []
    for i, (_, _, child, parent) in enumerate(hierarchy):
        if parent != -1 or len(outlines[i]) < _MIN_VERTICES:
            continue
        holes = []
        while child != -1:
            if len(outlines[child]) >= _MIN_VERTICES:
                holes.append(outlines[child])
            child = hierarchy[child][0]  # the next hole of this part
        parts.append((_area(outlines[i]), _cut_in(outlines[i], holes)))
    return [polygon for _, polygon in sorted(parts, key=lambda p: -p[0])]


def joined_polygon(polygons: list[np.ndarray]) -> np.ndarray:
    """The polygons joined into one by zero-width cuts to the first: one YOLO line."""
    return _cut_in(polygons[0], polygons[1:]) if polygons else np.zeros((0, 2))


def polygons_to_mask(polygons: list[np.ndarray], size_hw: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool mask the polygons draw, filled even-odd as pycocotools does."""
    from pycocotools import mask as mask_utils

    h, w = size_hw
    rles = mask_utils.frPyObjects([p.ravel().tolist() for p in polygons], h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _outline(contour: np.ndarray, outer: bool, tolerance: float) -> np.ndarray:
    """An OpenCV contour (N, 1, 2), through the centres of a part's (`outer`) or a hole's edge pixels,
    moved half a pixel out of the mask onto the pixels' outer edges, then simplified to `tolerance`
    px: (M, 2) float64 in COCO's frame. Untouched by the simplification, the polygon draws exactly
    the mask's pixels."""
    points = contour.reshape(-1, 2).astype(np.float64)
    if len(points) < _MIN_VERTICES:  # a pixel, or two: the square around them
        (x0, y0), (x1, y1) = points.min(0) - 0.5, points.max(0) + 0.5
        corners = np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]])
        return (corners if outer else corners[::-1]) + 0.5
    moved = _offset(points, 0.5)
    if (_area(moved) > _area(points)) != outer:  # a part's outline grows, a hole's shrinks
        moved = _offset(points, -0.5)
    if tolerance > 0:
        moved = cv2.approxPolyDP(moved.astype(np.float32), tolerance, closed=True).reshape(-1, 2).astype(np.float64)
    return moved + 0.5  # pixel indices are the squares' top-left corners; COCO's centres are at + 0.5


def _offset(points: np.ndarray, distance: float) -> np.ndarray:
    """A closed polygon's vertices moved `distance` to the right of its edges (mitred: each edge
    moves by exactly that; the mitre is cut short at sharp turns)."""
    incoming, outgoing = points - np.roll(points, 1, 0), np.roll(points, -1, 0) - points
    normals = []
    for d in (incoming, outgoing):
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        normals.append(np.stack([d[:, 1], -d[:, 0]], axis=1))
    mitre = (normals[0] + normals[1]) / np.maximum(1 + (normals[0] * normals[1]).sum(1, keepdims=True), 0.25)
    return points + distance * mitre


def _area(points: np.ndarray) -> float:
    return cv2.contourArea(points.astype(np.float32))


def _cut_in(outline: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """`outline` with each of `others` spliced in where their vertices are nearest: out along a cut
    from that vertex of `outline`, once round the other polygon back to where the cut met it, and
    back along the cut. (N + sum(M + 2), 2)."""
    if not others:
        return outline
    spliced = []
    matcher = cv2.BFMatcher(cv2.NORM_L2)  # the nearest pair of vertices, in OpenCV's vectorised search
    points = outline.astype(np.float32)
    for other in others:
        nearest = min(matcher.match(other.astype(np.float32), points), key=lambda m: m.distance)
        j, i = nearest.queryIdx, nearest.trainIdx
        spliced.append((i, np.concatenate([other[j:], other[: j + 1]])))
    pieces, start = [], 0
    for i, around in sorted(spliced, key=lambda s: s[0]):
        pieces += [outline[start : i + 1], around]
        start = i  # outline[i] again, after the way round
    return np.concatenate([*pieces, outline[start:]])
