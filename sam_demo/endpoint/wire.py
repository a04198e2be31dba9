"""The Azure ML "mask-generation" wire format (facebook/sam-vit-large), as the live service speaks it.

Request (pandas "split" orientation, one row per image)::

    {"input_data": {"columns": ["image", "input_points", "input_boxes", "input_labels", "multimask_output"],
                    "index": [0],
                    "data": [["<base64 or http(s) URL>", "", "[[650, 900, 1000, 1250]]", "", false]]}}

Response (live format; the model card's differs)::

    [{"response": {"predictions": [{"masks_per_prediction": [
        {"encoded_binary_mask": "<base64 PNG, mode L, 0/255>", "iou_score": 0.97}]}]}}]

This module is pure: it parses and validates requests, and encodes and decodes responses.
Bad input raises `RequestError` naming the row, the column and the problem.
"""

from __future__ import annotations

import ast
import base64
import binascii
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from sam_demo.engine.utils.prompts import PromptError, check_structure, finite_number

COLUMNS = ("image", "input_points", "input_boxes", "input_labels", "multimask_output")
# The prompt rules (prompts.py) name inputs by field; the endpoint by column. The one mapping:
PROMPT_FIELD_TO_COLUMN = {"points": "input_points", "labels": "input_labels", "boxes": "input_boxes"}


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for; past a limit the answer is 413 naming it (and its flag).

    max_output_pixels bounds the masks of a whole response: masks x image pixels, summed over rows.
    max_literal_chars: list columns are JSON; a Python literal (tuples, True) is accepted as the
    endpoint's samples write it, but only this short (its parser costs far more than JSON's).
    """

    max_rows: int = 16
    max_groups: int = 64
    max_points: int = 64
    max_output_pixels: int = 500_000_000
    max_literal_chars: int = 10_000

    @property
    def max_numbers(self) -> int:
        """Numbers that one request body may hold (JSON parsing stops past them): per row, G groups
        of P points (2 numbers each), their P labels, and a box (4)."""
        return self.max_rows * self.max_groups * (3 * self.max_points + 4) + 1000

    @property
    def max_column_numbers(self) -> int:
        """Numbers that one list column may hold: the points (2 per point) or the boxes, at most."""
        return self.max_groups * (2 * self.max_points + 4)


def over_limit(what: str, value: int | str, limit: int, flag: str, row: int | None = None, column: str | None = None):
    """RequestError (413) saying which limit a request is over, by how much, and its flag."""
    value = f"{value:,}" if isinstance(value, int) else value
    return RequestError(f"{what}: {value} is over the limit of {limit:,} ({flag})", row, column, status=413)


class _TooManyNumbers(Exception):
    pass


def _load_json(text: str | bytes, max_numbers: int):
    """json.loads that stops once it has read `max_numbers` numbers (raising _TooManyNumbers):
    a megabyte of digits would otherwise become tens of megabytes of Python numbers first."""
    count = 0

    def counted(parse):
        def hook(literal: str):
            nonlocal count
            count += 1
            if count > max_numbers:
                raise _TooManyNumbers
            return parse(literal)

        return hook

    return json.loads(text, parse_int=counted(int), parse_float=counted(float))


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def count_containers(text: str | bytes, bound: int) -> int:
    """How many lists and objects a JSON text holds, counted exactly (brackets inside its strings, as
    in the list columns' text, left out) only when its brackets are over `bound`. Parsed, each costs
    ~60 bytes: 64 MB of "[]," in a key nobody reads was 1.4 GB. A request has fewer than numbers."""
    data = text.encode() if isinstance(text, str) else text
    brackets = data.count(b"[") + data.count(b"{")
    if brackets <= bound:
        return brackets
    outside = _JSON_STRING.sub(b"", data)
    return outside.count(b"[") + outside.count(b"{")


class RequestError(ValueError):
    """Bad request input. `row` (0-based, or None) and `column` (or None) say where."""

    def __init__(self, message: str, row: int | None = None, column: str | None = None, status: int = 400):
        where = ", ".join(
            p for p in (f"row {row}" if row is not None else "", f"column {column!r}" if column else "") if p
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.row = row
        self.column = column
        self.status = status  # HTTP status for the server: 400, or 413 for over-limit input

    def to_json(self) -> dict:
        return {"error": str(self), "row": self.row, "column": self.column}


@dataclass(frozen=True)
class EndpointRow:
    """One request row: one image and its prompt groups (one prediction per group).

    image: base64 text or an http(s) URL, as sent.
    points_xy: (G, N, 2) float64 original pixels, or None. labels: (G, N) int64, or None.
    boxes_xyxy: (G, 4) float64 original pixels, or None.
    """

    image: str
    points_xy: np.ndarray | None
    labels: np.ndarray | None
    boxes_xyxy: np.ndarray | None
    multimask_output: bool

    @property
    def is_url(self) -> bool:
        return self.image.startswith(("http://", "https://"))

    @property
    def groups(self) -> int:
        """Prompt groups, one prediction each."""
        return len(self.points_xy if self.points_xy is not None else self.boxes_xyxy)


def prompt_error(exc: PromptError, row: int) -> RequestError:
    """A prompt rule's error as the endpoint's: its field named by its column (the one mapping)."""
    return RequestError(exc.reason, row, PROMPT_FIELD_TO_COLUMN.get(exc.field, "input_points"))


# ---- requests ------------------------------------------------------------------------------
def parse_request(body: dict | str | bytes, limits: RequestLimits = RequestLimits()) -> list[EndpointRow]:
    """Parse and validate a real-time request body; return its rows in order."""
    if isinstance(body, (str, bytes, bytearray)):
        containers = count_containers(body, limits.max_numbers)
        if containers > limits.max_numbers:
            raise over_limit(
                "lists and objects in one request",
                f"{containers:,}",
                limits.max_numbers,
                "--max-rows x --max-prompts x --max-points",
            )
        try:
            body = _load_json(body, limits.max_numbers)
        except _TooManyNumbers:
            raise over_limit(
                "numbers in one request",
                f"more than {limits.max_numbers:,}",
                limits.max_numbers,
                "--max-rows x --max-prompts x --max-points",
            ) from None
        except RecursionError:
            raise RequestError("the body is nested too deeply to be a request") from None
        except ValueError as exc:  # also a number of over 4,300 digits
            raise RequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or "input_data" not in body:
        raise RequestError(
            'the body must be a JSON object with "input_data" (pandas split format: columns, index, data)'
        )
    table = body["input_data"]
    if (
        not isinstance(table, dict)
        or not isinstance(table.get("columns"), list)
        or not isinstance(table.get("data"), list)
    ):
        raise RequestError('"input_data" must be an object with a "columns" list and a "data" list of rows')
    columns = table["columns"]
    if len(columns) > 2 * len(COLUMNS):  # what follows is quadratic in them
        raise RequestError(f"columns must be exactly {list(COLUMNS)} in any order; {len(columns):,} were given")
    missing = [c for c in COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in COLUMNS]
    duplicated = sorted({str(c) for c in columns if columns.count(c) > 1})
    if missing or unknown or duplicated:
        problems = (
            f"missing {missing}" if missing else "",
            f"unknown {unknown}" if unknown else "",
            f"given twice {duplicated}" if duplicated else "",
        )
        raise RequestError(
            f"columns must be exactly {list(COLUMNS)} in any order; " + "; ".join(p for p in problems if p),
            column=str((missing or unknown or duplicated)[0])[:80],
        )
    data = table["data"]
    if not data:
        raise RequestError('"input_data.data" has no rows')
    if len(data) > limits.max_rows:
        raise over_limit("rows in one request", len(data), limits.max_rows, "--max-rows")
    index = table.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise RequestError(f'"input_data.index" must be a list with one entry per row ({len(data)}), or left out')
    rows = []
    for i, values in enumerate(data):
        if not isinstance(values, list) or len(values) != len(columns):
            raise RequestError(f"expected a list of {len(columns)} values, one per column", row=i)
        rows.append(parse_row(dict(zip(columns, values)), i, limits))
    return rows


def parse_row(values: dict, row: int, limits: RequestLimits = RequestLimits()) -> EndpointRow:
    """Validate one row given as {column: value}; values may be strings of nested lists."""
    image = values["image"]
    if not isinstance(image, str) or not image.strip():
        raise RequestError("expected base64 image text or an http(s) URL", row, "image")
    parse = lambda column, ndim, example: _parse_array(values[column], row, column, ndim, example, limits)  # noqa: E731
    points = parse("input_points", 3, "[[[x, y], ...], ...] (groups of points)")
    boxes = parse("input_boxes", 2, "[[x0, y0, x1, y1], ...]")
    labels = parse("input_labels", 2, "[[1, 0, ...], ...] (one list per point group)")
    multimask = _parse_bool(values["multimask_output"], row)
    try:
        points, checked_labels, boxes, _ = check_structure(points, labels, boxes, names=PROMPT_FIELD_TO_COLUMN)
    except PromptError as exc:
        raise prompt_error(exc, row) from None
    labels = None if labels is None else checked_labels  # absent labels stay absent (all 1 to the engine)
    for array, column in ((points, "input_points"), (boxes, "input_boxes")):
        if array is not None and len(array) > limits.max_groups:
            raise over_limit(
                "prompt groups (point groups or boxes) in one row",
                len(array),
                limits.max_groups,
                "--max-prompts",
                row,
                column,
            )
    if points is not None and points.shape[1] > limits.max_points:
        raise over_limit("points in one group", points.shape[1], limits.max_points, "--max-points", row, "input_points")
    return EndpointRow(image.strip(), points, labels, boxes, multimask)


def _is_empty(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null")


def _parse_array(
    value, row: int, column: str, ndim: int, example: str, limits: RequestLimits = RequestLimits()
) -> np.ndarray | None:
    if _is_empty(value):
        return None
    if isinstance(value, str):
        value = _parse_list_text(value, row, column, example, limits)
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise RequestError(f"expected a non-empty nested list {example}, got {str(value)[:80]}", row, column)
    _check_numbers(value, ndim, row, column, example)
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(
            f"ragged nested list; every group needs the same number of entries, expected {example}",
            row,
            column,
        ) from None
    if array.ndim != ndim or 0 in array.shape:
        raise RequestError(f"expected {ndim} levels of nesting {example}, got shape {list(array.shape)}", row, column)
    return array


def _parse_list_text(text: str, row: int, column: str, example: str, limits: RequestLimits):
    """A list column's text: JSON, or (only when short) a Python literal such as "((1, 2),)"."""
    most = limits.max_column_numbers
    try:
        return _load_json(text, most)
    except _TooManyNumbers:
        raise over_limit(
            "numbers in one list column", f"more than {most:,}", most, "--max-prompts x --max-points", row, column
        ) from None
    except RecursionError:
        raise RequestError(f"nested too deeply; expected {example}", row, column) from None
    except ValueError:
        pass
    if len(text) > limits.max_literal_chars:
        raise RequestError(
            f"is not JSON ({len(text):,} characters; Python literals are read only up to "
            f"{limits.max_literal_chars:,}); expected {example}",
            row,
            column,
        )
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise RequestError(f"cannot parse {text[:80]!r} as a nested list; expected {example}", row, column) from None


def _check_numbers(value, ndim: int, row: int, column: str, example: str) -> None:
    """Every leaf `ndim` levels down is an int or float that a float64 holds (not a bool or a string)."""
    level = [value]
    for depth in range(ndim):
        if not all(isinstance(v, (list, tuple)) for v in level):
            hint = " (a single box must still be wrapped: [[x0, y0, x1, y1]])" if column == "input_boxes" else ""
            raise RequestError(
                f"expected {ndim} levels of nesting {example}, found a number at level {depth}{hint}", row, column
            )
        level = [v for items in level for v in items]
    for v in level:
        if isinstance(v, (list, tuple)):
            raise RequestError(f"expected {ndim} levels of nesting {example}, found more", row, column)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RequestError(
                f"expected numbers, found {v!r:.40} ({type(v).__name__}); expected {example}", row, column
            )
        if isinstance(v, int) and abs(v) > 2**53:
            raise RequestError(f"the number {str(v)[:20]}... is too large for a coordinate", row, column)


def _parse_bool(value, row: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"  # batch CSVs write True/False
    raise RequestError(f"expected true or false, got {value!r}", row, "multimask_output")


def decode_base64_image(text: str, row: int | None = None) -> bytes:
    """Decode base64 image text (newlines and a data: URL prefix tolerated) into bytes."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"is neither an http(s) URL nor valid base64 ({exc})", row, "image") from None


def build_request(rows: Sequence[dict]) -> dict:
    """Build a request body from rows given as dicts with the five columns' Python values.

    List values (points, boxes, labels) are written as strings of nested lists, as the
    endpoint's samples do; None becomes "".
    """
    data = []
    for values in rows:
        out = []
        for column in COLUMNS:
            value = values.get(column)
            if column in ("input_points", "input_boxes", "input_labels"):
                value = "" if value is None else json.dumps(np.asarray(value).tolist())
            out.append(value)
        data.append(out)
    return {"input_data": {"columns": list(COLUMNS), "index": list(range(len(data))), "data": data}, "params": {}}


# ---- responses -----------------------------------------------------------------------------
def encode_mask_png(mask: np.ndarray) -> str:
    """(H, W) bool mask -> base64 of an 8-bit grayscale PNG, values 0 and 255."""
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding of a mask failed")
    return base64.b64encode(png.tobytes()).decode("ascii")


def decode_mask_png(text: str, size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """base64 PNG (as in `encoded_binary_mask`) -> (H, W) bool mask (pixel > 127).

    size_hw: the (H, W) the mask must have; another size raises ValueError before any pixel is decoded.
    """
    with Image.open(io.BytesIO(base64.b64decode(text)), formats=["PNG"]) as image:  # no other decoder runs
        if size_hw is not None and image.size[::-1] != tuple(size_hw):
            raise MaskSizeError(image.size[::-1], size_hw)
        return np.asarray(image.convert("L")) > 127


class MaskSizeError(ValueError):
    """A response's mask is not the size of the image it is read for."""

    def __init__(self, got_hw: tuple[int, int], want_hw: tuple[int, int]):
        super().__init__(
            f"the saved masks are {got_hw[1]}x{got_hw[0]} but the image is {want_hw[1]}x{want_hw[0]}; "
            "upload the image the masks were made for"
        )


def response_row(masks: np.ndarray, iou_scores: np.ndarray) -> dict:
    """One request row's response element from masks (G, C, H, W) bool and scores (G, C)."""
    return response_from_groups(zip(masks, iou_scores))


def response_from_groups(groups) -> dict:
    """One request row's response element from (masks, scores) per prompt group, in order.

    masks: an iterable of (H, W) bool masks (a generator makes each only when it is encoded);
    scores: their (C,) predicted IoUs.
    """
    predictions = [
        {
            "masks_per_prediction": [
                {"encoded_binary_mask": encode_mask_png(mask), "iou_score": float(score)}
                for mask, score in zip(group_masks, group_scores)
            ]
        }
        for group_masks, group_scores in groups
    ]
    return {"response": {"predictions": predictions}}


@dataclass(frozen=True)
class DecodedMask:
    mask: np.ndarray  # (H, W) bool
    iou_score: float


def response_entries(body) -> list[list[list[dict]]]:
    """A response's mask entries, [row][prediction][mask], checked but not decoded: each a dict with
    `encoded_binary_mask` (str) and a finite `iou_score`.

    Accepts the live `[{"response": {"predictions": [{"masks_per_prediction": [...]}]}}]`,
    the model card's `[{"predictions": [{"mask_per_prediction": [...]}]}]`, a single row
    object, or the JSON text of any of these. Raises ValueError naming the first entry out of shape.
    """
    if isinstance(body, (str, bytes, bytearray)):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"the response is not valid JSON: {exc}") from None
    rows = body if isinstance(body, list) else [body]
    entries = []
    for i, row in enumerate(rows):
        if isinstance(row, dict) and "response" in row:
            row = row["response"]
        if not isinstance(row, dict) or not isinstance(row.get("predictions"), list):
            raise ValueError(f"response row {i} has no 'predictions' list")
        predictions = []
        for j, prediction in enumerate(row["predictions"]):
            masks = (
                prediction.get("masks_per_prediction", prediction.get("mask_per_prediction"))
                if isinstance(prediction, dict)
                else None
            )
            if not isinstance(masks, list):
                raise ValueError(f"response row {i}, prediction {j} has no 'masks_per_prediction' list")
            for k, m in enumerate(masks):
                if not (
                    isinstance(m, dict)
                    and isinstance(m.get("encoded_binary_mask"), str)
                    and finite_number(m.get("iou_score"))
                ):
                    raise ValueError(
                        f"response row {i}, prediction {j}, mask {k}: expected "
                        '{"encoded_binary_mask": base64 PNG, "iou_score": a finite number}'
                    )
            predictions.append(masks)
        entries.append(predictions)
    return entries


def decode_mask_entry(entry: dict, size_hw: tuple[int, int] | None = None) -> DecodedMask:
    """One entry of `response_entries` decoded; `size_hw` as `decode_mask_png`'s. Raises ValueError
    (`MaskSizeError` for a mask of another size) for a mask that is not a readable PNG."""
    try:
        return DecodedMask(decode_mask_png(entry["encoded_binary_mask"], size_hw), float(entry["iou_score"]))
    except MaskSizeError:
        raise
    except Image.DecompressionBombError:
        raise ValueError("a mask's PNG is far larger than any image SAM takes") from None
    except (ValueError, OSError, binascii.Error) as exc:
        raise ValueError(f"a mask is not a readable PNG ({exc})") from None


def read_response(body) -> list[list[list[DecodedMask]]]:
    """Decode a response (any form `response_entries` takes) into [row][prediction][mask]."""
    return [[[decode_mask_entry(m) for m in prediction] for prediction in row] for row in response_entries(body)]
