"""Answer endpoint requests with a `SamEngine`: the real-time `/score` and the batch rows."""

from __future__ import annotations

import numpy as np

from .endpoint import (
    PROMPT_FIELD_TO_COLUMN,
    EndpointRow,
    RequestError,
    decode_base64_image,
    parse_request,
    response_row,
)
from .engine import PromptError, SamEngine
from .fetch import FetchPolicy, ResponseTooLarge, fetch_url
from .images import ImageTooLargeError, decode_image_bytes, to_rgb_array


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


def predict_row(row: EndpointRow, index: int, engine: SamEngine, policy: FetchPolicy) -> dict:
    """Run one request row; return its live-format response element."""
    embedding = engine.embed(load_row_image(row, index, engine, policy))
    try:
        prediction = engine.decode(embedding, row.points_xy, row.labels, row.boxes_xyxy, None, row.multimask_output)
    except PromptError as exc:
        raise RequestError(exc.reason, index, PROMPT_FIELD_TO_COLUMN.get(exc.field, "input_points")) from None
    return response_row(prediction.masks, prediction.iou_scores)


def score(body: dict | str | bytes, engine: SamEngine, policy: FetchPolicy = FetchPolicy()) -> list[dict]:
    """Answer a whole real-time request: one response element per row, in order."""
    return [predict_row(row, i, engine, policy) for i, row in enumerate(parse_request(body))]
