"""The endpoint twin's HTTP layer: `POST /score` and `GET /health`, whoever computes the answers.

`add_api_routes` owns everything a client sees before and around the computation: the API key,
admission (a bounded number computing and waiting, then 503 with Retry-After), the body's size
and deadline, and the 500 for an unexpected error. An `ApiBackend` computes: `server.EngineBackend`
with an engine in this process, `serve.ServeBackend` with replicas on Ray Serve. So both servers
answer every request alike, byte for byte. Imports no torch (a Serve gateway never loads it).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .cli import fetch_policy
from .endpoint import COLUMNS, RequestLimits
from .fetch import FetchPolicy
from .http_body import read_limited

log = logging.getLogger("sam_demo")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    api_key: str | None = None  # when set, /score needs "Authorization: Bearer <key>"
    max_body_bytes: int = 64 << 20
    body_timeout_s: float = 30.0  # for the whole /score body; 408 past it
    score_concurrency: int = 2  # /score requests computed at once
    score_queue: int = 16  # /score requests that may wait for them; more get 503 at once
    limits: RequestLimits = field(default_factory=RequestLimits)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    session_budget_bytes: int | None = None  # the web demo's sessions; None: a quarter of the memory


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

    Admission: `score_concurrency` requests compute at once, up to `score_queue` more wait on the
    event loop (holding no thread), and past that a request gets 503 with Retry-After at once.
    /health runs on the event loop, so it never waits behind /score.
    """
    slots = asyncio.Semaphore(config.score_concurrency)
    admitted = 0  # computing or waiting; only the event loop's thread changes it

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
            },
        }

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
        nonlocal admitted
        if config.api_key:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
                return error(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'")
        if backend is None:
            return JSONResponse(
                {"error": "the model is still loading; retry shortly"}, status_code=503, headers={"Retry-After": "10"}
            )
        if admitted >= config.score_concurrency + config.score_queue:
            return error(503, f"busy: {admitted} requests are computing or waiting; retry shortly", retry_after_s=2)
        admitted += 1
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_s)
            if isinstance(body, JSONResponse):
                return body
            async with slots:
                return await backend.score(body)
        except Exception:  # keep serving; the client gets a message, the log gets the traceback
            log.exception("internal error in /score")
            return error(500, "internal error while scoring; the server log has details")
        finally:
            admitted -= 1


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes | JSONResponse:
    try:
        body = await read_limited(request, limit, timeout_s)
    except TimeoutError:
        return error(408, f"the request body did not arrive within {timeout_s:g} s; send it at once")
    if body is None:
        return error(413, f"the request body is over the limit of {limit >> 20} MiB (--max-body-mb)")
    return body


# ---- flags -----------------------------------------------------------------------------------
def add_score_flags(parser: argparse.ArgumentParser) -> None:
    """/score's limits and queue: --max-body-mb, --max-rows, --max-prompts, --max-points,
    --max-output-mp and --score-queue."""
    defaults = RequestLimits()
    parser.add_argument("--max-body-mb", type=int, default=64, help="largest /score body (default 64)")
    parser.add_argument("--max-rows", type=int, default=defaults.max_rows, help="rows (images) per /score request")
    parser.add_argument(
        "--max-prompts",
        type=int,
        default=defaults.max_groups,
        help="point groups or boxes per row (one prediction each)",
    )
    parser.add_argument("--max-points", type=int, default=defaults.max_points, help="points per group")
    parser.add_argument(
        "--max-output-mp",
        type=int,
        default=defaults.max_output_pixels // 1_000_000,
        help="mask megapixels in one response (masks x image pixels)",
    )
    parser.add_argument(
        "--score-queue",
        type=int,
        default=ServerConfig.score_queue,
        help="/score requests that may wait for a compute slot; more get 503",
    )


def server_config(args: argparse.Namespace, **fields) -> ServerConfig:
    """The `ServerConfig` of parsed server, score and engine flags; `fields` set the rest."""
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_body_bytes=args.max_body_mb << 20,
        score_queue=args.score_queue,
        limits=RequestLimits(
            max_rows=args.max_rows,
            max_groups=args.max_prompts,
            max_points=args.max_points,
            max_output_pixels=args.max_output_mp * 1_000_000,
        ),
        fetch=fetch_policy(args),
        **fields,
    )
