"""The endpoint twin's HTTP layer: `POST /score` and `GET /health`, whoever computes the answers.

`add_api_routes` owns everything a client sees before and around the computation: the API key,
admission (a bounded number computing and waiting, then 503 with Retry-After), the body's size
and deadline, and the 500 for an unexpected error. An `ApiBackend` computes: `engine_backend.EngineBackend`
with an engine in this process, `serve.gateway.ServeBackend` with replicas on Ray Serve. So both
servers answer every request alike, byte for byte. Imports no torch (a Serve gateway never loads it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from sam_demo.endpoint.http_body import ByteBudget, OverBudget, read_limited
from sam_demo.endpoint.settings import ServerConfig
from sam_demo.endpoint.wire import COLUMNS

log = logging.getLogger("sam_demo")


class ApiBackend(Protocol):
    """What computes /score's answers and /health's report."""

    async def health(self) -> dict:
        """The model's and the computation's state (the HTTP layer adds its admission counts)."""

    async def score(self, body: bytes) -> JSONResponse:
        """The response to a /score body that passed admission: 200 and the rows' answers, or
        the request's error (400/413 with {"error", "row", "column"}), or 503 with Retry-After."""


# ---- OpenAPI documentation of /score (the body is parsed by our codec, not by pydantic) -------
class InputData(BaseModel):
    columns: list[str]
    index: list[int] | None = None
    data: list[list[str | bool | None | list]]


class ScoreRequest(BaseModel):
    input_data: InputData
    params: dict = {}


class MaskEntry(BaseModel):
    encoded_binary_mask: str
    iou_score: float


class PredictionEntry(BaseModel):
    masks_per_prediction: list[MaskEntry]


class RowResponseBody(BaseModel):
    predictions: list[PredictionEntry]


class RowResponse(BaseModel):
    response: RowResponseBody


class ErrorBody(BaseModel):
    error: str
    row: int | None = None
    column: str | None = None


SCORE_EXAMPLE = {
    "input_data": {
        "columns": list(COLUMNS),
        "index": [0],
        "data": [["<base64 image or http(s) URL>", "", "[[650, 900, 1000, 1250]]", "", False]],
    },
    "params": {},
}


def error(status: int, message: str, retry_after_s: int | None = None) -> JSONResponse:
    """The endpoint's error body for a problem not tied to a row or column."""
    headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return JSONResponse({"error": message, "row": None, "column": None}, status_code=status, headers=headers)


def add_api_routes(app: FastAPI, backend: ApiBackend | None, config: ServerConfig) -> None:
    """Add POST /score and GET /health to `app`. `backend` None answers 503 (still loading).

    Admission: a request's body is read first, then `score_concurrency` requests compute at once and
    up to `score_queue` more wait on the event loop (holding no thread); past that a request gets
    503 with Retry-After at once. Bodies arriving do not hold those places (a client sending a byte
    now and then held one for `body_timeout_s`: a few such clients kept everyone else out): up to
    `body_readers` arrive at once, and the bodies arriving, waiting and computing hold at most as
    many bytes as a full queue of the largest ones would (`ByteBudget`); past either, 503 at once.
    /health runs on the event loop, so it never waits behind /score.
    """
    slots = asyncio.Semaphore(config.score_concurrency)
    places = config.score_concurrency + config.score_queue
    budget = ByteBudget(config.max_body_bytes * places)
    admitted = 0  # computing or waiting; only the event loop's thread changes these two
    reading = 0  # bodies arriving

    @app.get("/health", tags=["endpoint"], summary="Model, device, dtype, cache and sessions state")
    async def health() -> dict:
        if backend is None:
            return {"status": "loading", "model": None}
        report = await backend.health()
        return {
            **report,
            "score": {
                "computing_or_waiting": admitted,
                "max_computing": config.score_concurrency,
                "max_waiting": config.score_queue,
                "bodies_arriving": reading,
            },
        }

    def busy() -> JSONResponse:
        return error(503, f"busy: {admitted} requests are computing or waiting; retry shortly", retry_after_s=2)

    @app.post(
        "/score",
        tags=["endpoint"],
        summary="Azure ML mask-generation endpoint (facebook/sam-vit-large), live wire format",
        description=(
            "Send the endpoint's request body (pandas split format, columns image, input_points, input_boxes, "
            "input_labels, multimask_output; one row per image). The answer is one element per row: "
            "`response.predictions[g].masks_per_prediction[m]` with a base64 PNG mask (mode L, 0/255, the "
            "image's size) and the predicted IoU, in decoder order."
        ),
        response_model=list[RowResponse],
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            408: {"model": ErrorBody, "description": "the body did not arrive in time"},
            413: {"model": ErrorBody},
            503: {"model": ErrorBody, "description": "loading, or too many requests waiting (see Retry-After)"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ScoreRequest.model_json_schema(), "example": SCORE_EXAMPLE}},
            }
        },
    )
    async def score_endpoint(request: Request):
        nonlocal admitted, reading
        if config.api_key:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
                return error(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'")
        if backend is None:
            return JSONResponse(
                {"error": "the model is still loading; retry shortly"}, status_code=503, headers={"Retry-After": "10"}
            )
        if admitted >= places:  # the queue is full of whole requests: no need to read this one
            return busy()
        if reading >= config.body_readers:
            return error(503, f"busy: {reading} request bodies are arriving; retry shortly", retry_after_s=2)
        reading += 1
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_s, budget)
        finally:
            reading -= 1
        if isinstance(body, JSONResponse):
            return body
        try:
            if admitted >= places:  # filled while this body arrived
                return busy()
            admitted += 1
            try:
                async with slots:
                    return await backend.score(body)
            finally:
                admitted -= 1
        except Exception:  # keep serving; the client gets a message, the log gets the traceback
            log.exception("internal error in /score")
            return error(500, "internal error while scoring; the server log has details")
        finally:
            budget.release(len(body))


async def _read_body(request: Request, limit: int, timeout_s: float, budget: ByteBudget) -> bytes | JSONResponse:
    try:
        body = await read_limited(request, limit, timeout_s, budget)
    except TimeoutError:
        return error(408, f"the request body did not arrive within {timeout_s:g} s; send it at once")
    except ClientDisconnect:  # nobody reads this answer; it keeps the log free of a traceback
        return error(400, "the client went away before its request body arrived")
    except OverBudget:
        return error(
            503,
            f"busy: the request bodies arriving and queued hold {budget.held >> 20} of the {budget.limit >> 20} MiB "
            "they may; retry shortly",
            retry_after_s=2,
        )
    if body is None:
        return error(413, f"the request body is over the limit of {limit >> 20} MiB (--max-body-mb)")
    return body
