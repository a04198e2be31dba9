"""Coordinate frames of SAM and one image's geometry in them (numpy only, no torch).

Frames:
- *original*: pixels of the user's image, `[x, y]` with x = column, origin top-left.
- *model*: the image resized so its longest side is 1024 (rounded as transformers rounds),
  then padded to 1024x1024 at the bottom/right. Prompts are fed to SAM in this frame.
- *low-res*: the decoder's 256x256 logits, covering the padded 1024x1024 model frame.

Everything here matches `SamProcessor` bit for bit: the tests compare against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EDGE_TOLERANCE_PX", "LOW_RES_SIDE", "MODEL_SIDE", "ImageGeometry", "box_within", "resized_hw"]

MODEL_SIDE = 1024
LOW_RES_SIDE = 256
EDGE_TOLERANCE_PX = 1.0  # a given box may pass the image's edge by this much (rounding); it is clipped


def box_within(
    box_xyxy, size_hw: tuple[float, float], tolerance: float = EDGE_TOLERANCE_PX
) -> tuple[float, float, float, float] | None:
    """An [x0, y0, x1, y1] box clipped to an image of (H, W), or None if it passes the image's edge by
    more than `tolerance` (boxes from files: a detector's or a tool's rounding is forgiven)."""
    h, w = size_hw
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if x0 < -tolerance or y0 < -tolerance or x1 > w + tolerance or y1 > h + tolerance:
        return None
    return tuple(min(max(v, 0.0), float(side)) for v, side in ((x0, w), (y0, h), (x1, w), (y1, h)))


def resized_hw(original_hw: tuple[int, int], longest_side: int = MODEL_SIDE) -> tuple[int, int]:
    """(height, width) after resizing the longest side to `longest_side`, rounded half up."""
    h, w = original_hw
    scale = longest_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes of one image in the original and model frames; computed once per image."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]

    @classmethod
    def for_size(cls, original_hw: tuple[int, int]) -> ImageGeometry:
        """Raises ValueError for an image so thin that SAM's input would have no row (or column) of it."""
        resized = resized_hw(original_hw)
        if 0 in resized:
            h, w = original_hw
            raise ValueError(
                f"the image is {w}x{h}: at SAM's {MODEL_SIDE}-pixel input its short side would be 0 "
                f"pixels; crop or pad it so that its long side is at most {2 * MODEL_SIDE} times its short side"
            )
        return cls(tuple(original_hw), resized)

    @property
    def low_res_extent(self) -> tuple[int, int]:
        """(rows, cols) of the 256x256 logits that the resized region depends on.

        Output pixel i of a bilinear x4 upscale reads input pixels floor((i + 0.5) / 4 - 0.5) and
        the next one, so the first r output rows depend on the first ceil(r / 4) + 1 input rows.
        """
        factor = MODEL_SIDE // LOW_RES_SIDE
        rh, rw = self.resized_hw
        return min(LOW_RES_SIDE, -(-rh // factor) + 1), min(LOW_RES_SIDE, -(-rw // factor) + 1)

    @property
    def scale_xy(self) -> np.ndarray:
        """(2,) float64 factors original -> model frame. Per axis, by the rounded resized size."""
        (h, w), (rh, rw) = self.original_hw, self.resized_hw
        return np.array([rw / w, rh / h], dtype=np.float64)

    def coords_to_model(self, coords_xy: np.ndarray) -> np.ndarray:
        """(..., 2) float points in original pixels -> float64 points in the model frame."""
        return np.asarray(coords_xy, dtype=np.float64) * self.scale_xy

    def boxes_to_model(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(..., 4) XYXY boxes in original pixels -> float64 boxes in the model frame.

        Boxes pass through float32 first, as `SamProcessor` does.
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).astype(np.float64)
        return boxes * np.tile(self.scale_xy, 2)
