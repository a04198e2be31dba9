"""Answer endpoint requests with a `SamEngine`: the real-time `/score` and the batch rows.

A response is built mask by mask: the decoder runs on a few prompt groups at a time, and each
full-size mask is made from its low-res logits, written as a PNG and dropped, so a request's peak
memory grows with one mask and a few groups' decoder activations, not with all of them.
"""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np
from PIL import Image

from sam_demo.endpoint.fetch import FetchPolicy, ResponseTooLarge, fetch_url
from sam_demo.endpoint.wire import (
    EndpointRow,
    RequestError,
    RequestLimits,
    decode_base64_image,
    over_limit,
    parse_request,
    prompt_error,
    response_from_groups,
)
from sam_demo.engine.sam_engine import ImageEmbedding, SamEngine
from sam_demo.engine.utils.images import IMAGE_FORMATS, ImageTooLargeError, decode_image_bytes, to_rgb_array
from sam_demo.engine.utils.prompts import PromptError, check_prompts
from sam_demo.engine.utils.transforms import masks_from_logits

# Prompt groups per decoder call in the fast mode: its upscaling activations take 8 MiB per group.
# The exact mode decodes all of a row's groups in one call, as the reference recipe does: float32
# sums may change with the batch's shape, in the last bit.
DECODE_GROUPS = 8


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
    return row.groups * (3 if row.multimask_output else 1) * image_hw[0] * image_hw[1]


def predict_row(
    row: EndpointRow,
    index: int,
    engine: SamEngine,
    policy: FetchPolicy,
    max_output_pixels: int = RequestLimits.max_output_pixels,
) -> dict:
    """Run one request row; return its live-format response element.

    Raises RequestError (413) before decoding if its masks would exceed `max_output_pixels`.
    """
    return _predict(row, index, engine, policy, max_output_pixels)[0]


def _predict(
    row: EndpointRow, index: int, engine: SamEngine, policy: FetchPolicy, max_output_pixels: int, before: int = 0
) -> tuple[dict, int]:
    """`predict_row`, also giving the response's mask pixels; `before`: the earlier rows' (the limit
    is the whole response's)."""
    rgb = load_row_image(row, index, engine, policy)
    pixels = output_pixels(row, rgb.shape[:2])
    if before + pixels > max_output_pixels:
        raise _over_output(before + pixels, max_output_pixels, index, before > 0)
    try:
        embedding = engine.embed(rgb)
    except ValueError as exc:  # e.g. an image too thin for SAM's input
        raise RequestError(str(exc), index, "image") from None
    del rgb
    try:
        check_prompts(embedding.geometry.original_hw, row.points_xy, row.labels, row.boxes_xyxy, None)
    except PromptError as exc:
        raise prompt_error(exc, index) from None
    return response_from_groups(_groups(engine, embedding, row)), pixels


def _groups(engine: SamEngine, embedding: ImageEmbedding, row: EndpointRow):
    """(masks, scores) of each prompt group, decoding DECODE_GROUPS groups at a time (the fast mode);
    the masks of a group are made one at a time, as they are consumed."""
    count = row.groups
    step = count if engine.exact else DECODE_GROUPS
    part = lambda array, chunk: None if array is None else array[chunk]  # noqa: E731
    for start in range(0, count, step):
        chunk = slice(start, start + step)
        low_res, iou = engine.decode_low_res(
            embedding,
            part(row.points_xy, chunk),
            part(row.labels, chunk),
            part(row.boxes_xyxy, chunk),
            None,
            row.multimask_output,
            full_frame=False,
        )
        for group, scores in zip(low_res, iou.cpu().numpy()):
            yield (
                (
                    masks_from_logits(group[c : c + 1], embedding.geometry, exact=engine.exact_upscale)[0]
                    for c in range(len(group))
                ),
                scores,
            )


def score(
    body: dict | str | bytes,
    engine: SamEngine,
    policy: FetchPolicy = FetchPolicy(),
    limits: RequestLimits = RequestLimits(),
) -> list[dict]:
    """Answer a whole real-time request: one response element per row, in order."""
    return score_rows(parse_request(body, limits), engine, policy, limits)


def score_rows(
    rows: list[EndpointRow],
    engine: SamEngine,
    policy: FetchPolicy = FetchPolicy(),
    limits: RequestLimits = RequestLimits(),
) -> list[dict]:
    """Answer a parsed request's rows, in order; their masks together stay within
    `limits.max_output_pixels`."""
    planned = 0
    for i, row in enumerate(rows):  # sizes from the headers first: no row is computed for a 413
        planned += _header_pixels(row, i)
        if planned > limits.max_output_pixels:
            raise _over_output(planned, limits.max_output_pixels, i, i > 0)
    out, used = [], 0
    for i, row in enumerate(rows):
        element, pixels = _predict(row, i, engine, policy, limits.max_output_pixels, used)
        out.append(element)
        used += pixels
    return out


def _header_pixels(row: EndpointRow, index: int) -> int:
    """The row's mask pixels from its image's header; 0 for a URL or an image whose header does not
    read (the row tells when it runs)."""
    if row.is_url:
        return 0
    try:
        with Image.open(io.BytesIO(decode_base64_image(row.image, index)), formats=IMAGE_FORMATS) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - the row's own decode says what is wrong, in its turn
        return 0
    return output_pixels(row, (height, width))


def _over_output(pixels: int, limit: int, index: int, with_rows_before: bool) -> RequestError:
    return over_limit(
        "mask pixels in the response (masks x image pixels, all rows)",
        f"{pixels:,}" + (f" with the rows before row {index}" if with_rows_before else ""),
        limit,
        "--max-output-mp",
        index,
        "image",
    )


def answer(
    request: bytes | list[EndpointRow],
    engine: SamEngine,
    policy: FetchPolicy = FetchPolicy(),
    limits: RequestLimits = RequestLimits(),
) -> tuple[int, list | dict]:
    """/score's answer to a body, or to rows parsed from one, as (HTTP status, JSON payload):
    200 and the response, or a `RequestError`'s status and body."""
    try:
        rows = request if isinstance(request, list) else parse_request(request, limits)
        return 200, score_rows(rows, engine, policy, limits)
    except RequestError as exc:
        return exc.status, exc.to_json()


def engine_report(engine: SamEngine) -> dict:
    """/health's description of an engine: model, device, dtype, plan, the last encode's seconds,
    the embedding cache, and the embedding store on disk (None without one)."""
    return {
        "model": engine.info.model,
        "device": engine.info.device,
        "dtype": engine.info.dtype,
        "random_weights": engine.info.random_weights,
        "plan": asdict(engine.plan),
        "encode_seconds": engine.encode_seconds,
        "cache": asdict(engine.cache_stats()),
        "embedding_store": asdict(engine.store.stats()) if engine.store is not None else None,
    }
