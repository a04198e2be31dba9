"""Helpers of automatic mask generation (Meta's `segment_anything/utils/amg.py`, in torch and OpenCV).

The point grid, crop boxes, stability scores, mask boxes, box NMS, the crop-edge filter and the
removal of small regions: each a pure function of its arrays, used by automatic_mask_generator.py.
"""

from __future__ import annotations

import math
from itertools import product

import cv2
import numpy as np
import torch

__all__ = [
    "crop_boxes",
    "mask_boxes",
    "near_crop_edge",
    "nms",
    "point_grid",
    "remove_small_regions",
    "stability_and_box",
]


def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points evenly spaced in [0, 1]^2, cell centres, x fastest."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    return np.stack([np.tile(side[None, :], (n_per_side, 1)), np.tile(side[:, None], (1, n_per_side))], -1).reshape(
        -1, 2
    )


def crop_boxes(hw: tuple[int, int], layers: int, overlap_ratio: float) -> list[tuple[tuple[int, int, int, int], int]]:
    """[(crop box XYXY, layer)]: the whole image, then 2^i x 2^i overlapping crops per layer i
    (those that are not empty: an image a few pixels across has fewer)."""
    h, w = hw
    boxes = [((0, 0, w, h), 0)]
    for layer in range(1, layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + h) / per_side)
        for x0, y0 in product(
            [int((crop_w - overlap) * i) for i in range(per_side)],
            [int((crop_h - overlap) * i) for i in range(per_side)],
        ):
            box = (x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h))
            if box[2] > x0 and box[3] > y0:
                boxes.append((box, layer))
    return boxes


def stability_and_box(
    logits: np.ndarray, threshold: float, offset: float, rows: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask's stability score and box from its (H, W) float32 logits: the IoU of the mask
    binarised at threshold +- offset, () float32 (Meta's `calculate_stability_score`: integer
    counts, divided as torch divides them), and the inclusive XYXY box of logits > threshold, (4,)
    int64, [0, 0, 0, 0] for an empty mask (as `mask_boxes`).

    One pass over strips of `rows` rows, each read while it is in the cache: the logits of a big
    photo are tens of MB, and a pass per comparison read them from memory three times (a 12 MP
    mask: 17.6 ms on one thread, now 3.4). With offset >= 0 the three sets nest, so a strip with
    nothing over threshold - offset (most of the photo, for most masks) needs no other test."""
    height, width = logits.shape
    over_high = over_low = 0
    any_row, any_col = np.zeros(height, bool), np.zeros(width, bool)
    for top in range(0, height, rows):
        strip = logits[top : top + rows]
        over = np.count_nonzero(strip > threshold - offset)
        over_low += over
        if not over and offset >= 0:
            continue
        over_high += np.count_nonzero(strip > threshold + offset)
        inside = strip > threshold
        any_row[top : top + rows] = inside.any(1)
        any_col |= inside.any(0)
    counts = torch.tensor([over_high, over_low], dtype=torch.int64)
    ys, xs = np.flatnonzero(any_row), np.flatnonzero(any_col)
    box = [xs[0], ys[0], xs[-1], ys[-1]] if len(ys) else [0, 0, 0, 0]
    return counts[0] / counts[1], torch.tensor(box, dtype=torch.int64)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(M, H, W) bool -> (M, 4) inclusive XYXY boxes; [0, 0, 0, 0] for empty masks."""
    h, w = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)
    ys, xs = torch.arange(h), torch.arange(w)
    bottom = (rows * ys).amax(-1)
    top = torch.where(rows, ys, h).amin(-1)
    right = (cols * xs).amax(-1)
    left = torch.where(cols, xs, w).amin(-1)
    boxes = torch.stack([left, top, right, bottom], -1)
    return torch.where((rows.any(-1))[:, None], boxes, torch.zeros_like(boxes))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices kept by greedy non-maximum suppression, by descending score (torchvision's rule)."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes.float()[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64)] if keep else order[:0]


def near_crop_edge(boxes: torch.Tensor, crop: tuple[int, int, int, int], image_hw: tuple[int, int], atol: float = 20.0):
    """Boxes (in image pixels) touching a crop edge that is not an image edge."""
    crop_t = torch.tensor(crop, dtype=torch.float)
    image_t = torch.tensor([0, 0, image_hw[1], image_hw[0]], dtype=torch.float)
    boxes = boxes.float()
    near_crop = torch.isclose(boxes, crop_t[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image_t[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def remove_small_regions(mask: np.ndarray, area: int) -> np.ndarray:
    """Fill holes and drop islands smaller than `area` pixels (Meta's postprocess_small_regions)."""
    for mode in ("holes", "islands"):
        working = (mask ^ (mode == "holes")).astype(np.uint8)
        count, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
        small = [i + 1 for i, s in enumerate(stats[1:, cv2.CC_STAT_AREA]) if s < area]
        if not small:
            continue
        if mode == "holes":
            mask = mask | np.isin(regions, small)
        else:
            keep = [i for i in range(1, count) if i not in small] or [int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1]
            mask = np.isin(regions, keep)
    return mask
