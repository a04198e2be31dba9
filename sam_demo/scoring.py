"""Answer endpoint requests with a `SamEngine`: the real-time `/score` and the batch rows.

A response is built mask by mask: each full-size mask is made from its low-res logits, written
as a PNG and dropped, so a request's peak memory grows with one mask, not with all of them.
"""

from __future__ import annotations

import numpy as np

from .endpoint import (
    PROMPT_FIELD_TO_COLUMN,
    EndpointRow,
    RequestError,
    RequestLimits,
    decode_base64_image,
    over_limit,
    parse_request,
    response_row,
)
from .engine import PromptError, SamEngine
from .fetch import FetchPolicy, ResponseTooLarge, fetch_url
from .images import ImageTooLargeError, decode_image_bytes, to_rgb_array
from .transforms import masks_from_logits


def load_row_image(row: EndpointRow, index: int, engine: SamEngine, policy: FetchPolicy) -> np.ndarray:
    """Fetch or decode a row's image into (H, W, 3) uint8 RGB (EXIF orientation applied)."""
    try:
        data = fetch_url(row.image, policy) if row.is_url else decode_base64_image(row.image, index)
        return to_rgb_array(decode_image_bytes(data, engine.max_pixels), engine.max_pixels)
    except RequestError:
        raise
    except (ImageTooLargeError, ResponseTooLarge) as exc:
        raise RequestError(str(exc), index, "image", status=413) from None
    except ValueError as exc:
        raise RequestError(str(exc), index, "image") from None


def output_pixels(row: EndpointRow, image_hw: tuple[int, int]) -> int:
    """Mask pixels in the row's response: groups x masks per group x H x W."""
    groups = len(row.points_xy if row.points_xy is not None else row.boxes_xyxy)
    return groups * (3 if row.multimask_output else 1) * image_hw[0] * image_hw[1]


def predict_row(row: EndpointRow, index: int, engine: SamEngine, policy: FetchPolicy,
                max_output_pixels: int = RequestLimits.max_output_pixels) -> dict:
    """Run one request row; return its live-format response element.

    Raises RequestError (413) before decoding if its masks would exceed `max_output_pixels`.
    """
    return _predict(row, index, engine, policy, max_output_pixels)[0]


def _predict(row: EndpointRow, index: int, engine: SamEngine, policy: FetchPolicy,
             max_output_pixels: int) -> tuple[dict, int]:
    """`predict_row`, also giving the response's mask pixels."""
    rgb = load_row_image(row, index, engine, policy)
    pixels = output_pixels(row, rgb.shape[:2])
    if pixels > max_output_pixels:
        raise over_limit("mask pixels in the response (masks x image pixels)", pixels, max_output_pixels,
                         "--max-output-mp", index, "image")
    try:
        embedding = engine.embed(rgb)
    except ValueError as exc:  # e.g. an image too thin for SAM's input
        raise RequestError(str(exc), index, "image") from None
    del rgb
    try:
        low_res, iou = engine.decode_low_res(embedding, row.points_xy, row.labels, row.boxes_xyxy, None,
                                             row.multimask_output)
    except PromptError as exc:
        raise RequestError(exc.reason, index, PROMPT_FIELD_TO_COLUMN.get(exc.field, "input_points")) from None
    masks = ((masks_from_logits(group[c : c + 1], embedding.geometry, exact=engine.exact)[0] for c in range(len(group)))
             for group in low_res)
    return response_row(masks, iou.cpu().numpy()), pixels


def score(body: dict | str | bytes, engine: SamEngine, policy: FetchPolicy = FetchPolicy(),
          limits: RequestLimits = RequestLimits()) -> list[dict]:
    """Answer a whole real-time request: one response element per row, in order.

    The rows' masks together stay within `limits.max_output_pixels`.
    """
    out, left = [], limits.max_output_pixels
    for i, row in enumerate(parse_request(body, limits)):
        element, pixels = _predict(row, i, engine, policy, left)
        out.append(element)
        left -= pixels
    return out
