"""One server on one port: the Gradio UI at `/`, the endpoint twin at `POST /score`, `GET /health`.

python app.py [--model M] [--device D] [--dtype T] [--host H] [--port P] [--share] [--api-key K]
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
from dataclasses import asdict, dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .cli import add_engine_flags, add_server_flags, engine_config, fetch_policy
from .demo_routes import add_demo_routes
from .endpoint import COLUMNS, RequestError, RequestLimits
from .engine import SamEngine
from .fetch import FetchPolicy
from .heap import map_large_blocks
from .http_body import read_limited
from .loading import ModelLoadError, exit_with_message, load_engine, resolve_model
from .scoring import score
from .session_store import SessionStore

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


def error(status: int, message: str, row: int | None = None, column: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "row": row, "column": column}, status_code=status)


def add_api_routes(
    app: FastAPI, engine: SamEngine | None, config: ServerConfig, sessions: SessionStore | None = None
) -> None:
    """Add POST /score and GET /health to `app`. `engine` None answers 503; /health reports
    `sessions` (the web demo's) when given.

    Admission: `score_concurrency` requests compute at once (each on a worker thread), up to
    `score_queue` more wait on the event loop (holding no thread), and past that a request gets 503
    with Retry-After at once. /health runs on the event loop, so it never waits behind /score.
    """
    slots = asyncio.Semaphore(config.score_concurrency)
    admitted = 0  # computing or waiting; only the event loop's thread changes it

    @app.get("/health", tags=["endpoint"], summary="Model, device, dtype, cache and sessions state")
    async def health() -> dict:
        if engine is None:
            return {"status": "loading", "model": None}
        stats = engine.cache_stats()
        demo = {} if sessions is None else {"sessions": asdict(sessions.stats())}
        return {
            "status": "ok",
            "model": engine.info.model,
            "device": engine.info.device,
            "dtype": engine.info.dtype,
            "random_weights": engine.info.random_weights,
            "plan": asdict(engine.plan),
            "cache": {
                "entries": stats.entries,
                "bytes": stats.bytes,
                "max_bytes": stats.max_bytes,
                "hits": stats.hits,
                "misses": stats.misses,
            },
            "score": {
                "computing_or_waiting": admitted,
                "max_computing": config.score_concurrency,
                "max_waiting": config.score_queue,
            },
            **demo,
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
        if engine is None:
            return JSONResponse(
                {"error": "the model is still loading; retry shortly"}, status_code=503, headers={"Retry-After": "10"}
            )
        if admitted >= config.score_concurrency + config.score_queue:
            return JSONResponse(
                {
                    "error": f"busy: {admitted} requests are computing or waiting; retry shortly",
                    "row": None,
                    "column": None,
                },
                status_code=503,
                headers={"Retry-After": "2"},
            )
        admitted += 1
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_s)
            if isinstance(body, JSONResponse):
                return body
            async with slots:
                return JSONResponse(await run_in_threadpool(score, body, engine, config.fetch, config.limits))
        except RequestError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status)
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


def build_app(engine: SamEngine, config: ServerConfig = ServerConfig()) -> FastAPI:
    """FastAPI app with /score and /health, and the Gradio UI mounted at /."""
    import gradio as gr

    from .ui import PAGE_CSS, build_demo

    # /docs and /redoc work offline: their scripts are served from the fastapi-offline package.
    app = FastAPIOffline(title="sam-demo", description="Segment Anything demo and Azure ML SAM endpoint twin")
    sessions = SessionStore(config.session_budget_bytes)
    add_api_routes(app, engine, config, sessions)
    add_demo_routes(app, engine, sessions)
    return gr.mount_gradio_app(app, build_demo(engine, sessions, config.fetch), path="/", css=PAGE_CSS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="sam-demo: interactive SAM in the browser + the Azure endpoint's /score"
    )
    add_engine_flags(parser)
    add_server_flags(parser)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--max-body-mb", type=int, default=64, help="largest /score body (default 64)")
    defaults = RequestLimits()
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
    parser.add_argument(
        "--session-budget-mb",
        type=int,
        default=None,
        help="memory for the web demo's sessions, all together (default: a quarter of the RAM)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    map_large_blocks()  # a request's or an upload's big arrays leave the RSS when freed
    print(f"Loading {resolve_model(args.model)} ...", flush=True)
    try:
        engine = load_engine(engine_config(args))
    except (ModelLoadError, ValueError) as exc:
        exit_with_message(exc)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        share=args.share,
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
        session_budget_bytes=None if args.session_budget_mb is None else args.session_budget_mb << 20,
    )
    serve(engine, config)


def serve(engine: SamEngine, config: ServerConfig) -> None:
    if config.share:
        # A share link needs Gradio's own server; /score and /health are added to it.
        from fastapi.routing import APIRouter

        from .ui import PAGE_CSS, build_demo

        router = APIRouter()
        sessions = SessionStore(config.session_budget_bytes)
        add_api_routes(router, engine, config, sessions)
        add_demo_routes(router, engine, sessions)
        build_demo(engine, sessions, config.fetch).launch(
            server_name=config.host,
            server_port=config.port,
            share=True,
            css=PAGE_CSS,
            app_kwargs={"routes": router.routes},
        )
        return
    import uvicorn

    print(f"Serving the demo on http://{config.host}:{config.port}/ and the endpoint on POST /score", flush=True)
    uvicorn.run(
        build_app(engine, config), host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=2
    )
