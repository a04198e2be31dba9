"""What a zoomed-in page draws sharp: the mask layers of the visible region at screen resolution,
and the photo at full resolution.

The page shows every mask layer at display size (`render.py`, at most 1280 px a side), which is
blurred once zoomed in past it. When it is, the page asks for the visible region's layers at the
screen's own resolution: output pixel (i, j) shows the full-resolution mask's pixel under its
centre, so the drawn edge follows the full-resolution mask within one screen pixel at any zoom.
A prompt's mask is sampled straight from its low-res logits at those pixels (the two bilinear
resizes of `transforms.upscale_logits_fast`, evaluated only where needed), never made whole.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image

from sam_demo.demo.render import data_uri, layer_png
from sam_demo.demo.session import FixedMask, ObjectResult, Session
from sam_demo.engine.utils.geometry import LOW_RES_SIDE, MODEL_SIDE

__all__ = [
    "MAX_DETAIL_LAYERS",
    "MAX_DETAIL_PIXELS",
    "PHOTO_MAX_PIXELS",
    "detail_layers",
    "photo_jpeg",
    "region_mask",
    "sample_indices",
]

MAX_DETAIL_PIXELS = 4_200_000  # a 2x screen's 1450x1450 viewport; the page asks for no more
MAX_DETAIL_LAYERS = 24  # layers one request may ask for (the page asks for more in turn): a bounded cost
MAX_DETAIL_SIDE = 4096
PHOTO_MAX_PIXELS = 16_000_000  # the full-resolution photo for zooming; larger ones are downscaled to it


def sample_indices(start: float, stop: float, count: int, size: int) -> np.ndarray:
    """Indices of the original pixels under the centres of `count` output pixels spanning
    [start, stop) (original pixels, edges at integers), clipped to [0, size - 1]. (count,) int64."""
    centres = start + (np.arange(count, dtype=np.float64) + 0.5) * ((stop - start) / count)
    return np.clip(np.floor(centres), 0, size - 1).astype(np.int64)


def _linear_taps(dst: np.ndarray, src_size: int, dst_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For destination indices `dst` of a bilinear resize from `src_size` to `dst_size` (half-pixel
    centres, edges clamped, as OpenCV's INTER_LINEAR and PyTorch's align_corners=False): the two
    source indices and the second one's weight."""
    s = np.maximum((dst + 0.5) * (src_size / dst_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(s).astype(np.int64), src_size - 1)
    i1 = np.minimum(i0 + 1, src_size - 1)
    return i0, i1, (s - i0).astype(np.float32)


def _logits_at(result: ObjectResult, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The chosen mask's full-resolution logits at original pixels rows x cols: (len(rows), len(cols)) float32."""
    geometry = result.geometry
    (h, w), (rh, rw) = geometry.original_hw, geometry.resized_hw
    factor = MODEL_SIDE // LOW_RES_SIDE
    in_h, in_w = geometry.low_res_extent
    low_res = np.ascontiguousarray(result.low_res[result.chosen][:in_h, :in_w])
    model = cv2.resize(low_res, (in_w * factor, in_h * factor), interpolation=cv2.INTER_LINEAR)[:rh, :rw]
    r0, r1, fy = _linear_taps(rows, rh, h)
    c0, c1, fx = _linear_taps(cols, rw, w)
    top, bottom = model[r0], model[r1]
    across_top = top[:, c0] * (1 - fx) + top[:, c1] * fx
    across_bottom = bottom[:, c0] * (1 - fx) + bottom[:, c1] * fx
    return across_top * (1 - fy)[:, None] + across_bottom * fy[:, None]


def region_mask(source: ObjectResult | FixedMask, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The full-resolution mask at original pixels rows x cols (from `sample_indices`): (len(rows), len(cols)) uint8 0/1."""
    if isinstance(source, FixedMask):
        return np.ascontiguousarray(source.mask[np.ix_(rows, cols)]).view(np.uint8)
    return (_logits_at(source, rows, cols) > 0).view(np.uint8)


def detail_layers(session: Session, region_xyxy: tuple, size_wh: tuple, keys: list) -> dict[str, str]:
    """PNG data URIs (`render.layer_png`, outlines in screen pixels) of the shown layers named in
    `keys`, for the region [x0, x1) x [y0, y1) of the original image drawn `size_wh` screen pixels large.

    Keys that are not shown now are left out (the page asks again with its newest view). Raises
    ValueError for a region off the image or a size out of bounds, saying which.
    """
    x0, y0, x1, y1 = (float(v) for v in region_xyxy)
    out_w, out_h = (int(v) for v in size_wh)
    h, w = session.size_hw
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"the region must lie within the {w}x{h} image, as x0 < x1 and y0 < y1")
    if not (1 <= out_w <= MAX_DETAIL_SIDE and 1 <= out_h <= MAX_DETAIL_SIDE and out_w * out_h <= MAX_DETAIL_PIXELS):
        raise ValueError(
            f"the size must be 1 to {MAX_DETAIL_SIDE} pixels a side and at most {MAX_DETAIL_PIXELS:,} in all"
        )
    wanted = set(keys)
    rows, cols = sample_indices(y0, y1, out_h, h), sample_indices(x0, x1, out_w, w)
    return {
        layer.key: data_uri("image/png", layer_png(region_mask(layer.source, rows, cols), layer.rgb, layer.active))
        for layer in session.layers()
        if layer.key in wanted and layer.source is not None and not layer.hidden
    }


def photo_jpeg(rgb: np.ndarray, max_pixels: int = PHOTO_MAX_PIXELS) -> bytes:
    """The photo for a zoomed-in page: (H, W, 3) uint8 RGB as JPEG (quality 90), downscaled to at
    most `max_pixels` pixels."""
    h, w = rgb.shape[:2]
    scale = min(1.0, math.sqrt(max_pixels / (h * w)))
    image = Image.fromarray(rgb)
    if scale < 1:
        image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
