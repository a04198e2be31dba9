"""One server on one port: the Gradio UI at `/`, the endpoint twin at `POST /score`, `GET /health`.

python app.py [--model M] [--device D] [--dtype T] [--host H] [--port P] [--share] [--api-key K]
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from .api import ServerConfig, add_api_routes, add_score_flags, server_config
from .cli import add_engine_flags, add_server_flags, engine_config, exit_with_message
from .demo_routes import add_demo_routes
from .engine import SamEngine
from .heap import map_large_blocks
from .loading import ModelLoadError, load_engine, resolve_model
from .scoring import answer, engine_report
from .session_store import SessionStore

__all__ = ["EngineBackend", "ServerConfig", "build_app", "main", "serve"]


class EngineBackend:
    """/score and /health answered by an engine in this process (the demo's server)."""

    def __init__(self, engine: SamEngine, config: ServerConfig, sessions: SessionStore | None = None):
        self.engine = engine
        self.config = config
        self.sessions = sessions

    async def health(self) -> dict:
        demo = {} if self.sessions is None else {"sessions": asdict(self.sessions.stats())}
        return {"status": "ok", **engine_report(self.engine), **demo}

    async def score(self, body: bytes) -> JSONResponse:
        status, payload = await run_in_threadpool(answer, body, self.engine, self.config.fetch, self.config.limits)
        return JSONResponse(payload, status_code=status)


def build_app(engine: SamEngine, config: ServerConfig = ServerConfig()) -> FastAPI:
    """FastAPI app with /score and /health, and the Gradio UI mounted at /."""
    import gradio as gr

    from .ui import PAGE_CSS, build_demo

    # /docs and /redoc work offline: their scripts are served from the fastapi-offline package.
    app = FastAPIOffline(title="sam-demo", description="Segment Anything demo and Azure ML SAM endpoint twin")
    sessions = SessionStore(config.session_budget_bytes)
    add_api_routes(app, EngineBackend(engine, config, sessions), config)
    add_demo_routes(app, engine, sessions)
    return gr.mount_gradio_app(app, build_demo(engine, sessions, config.fetch), path="/", css=PAGE_CSS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="sam-demo: interactive SAM in the browser + the Azure endpoint's /score"
    )
    add_engine_flags(parser)
    add_server_flags(parser)
    add_score_flags(parser)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
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
    budget = None if args.session_budget_mb is None else args.session_budget_mb << 20
    serve(engine, server_config(args, share=args.share, session_budget_bytes=budget))


def serve(engine: SamEngine, config: ServerConfig) -> None:
    if config.share:
        # A share link needs Gradio's own server; /score and /health are added to it.
        from fastapi.routing import APIRouter

        from .ui import PAGE_CSS, build_demo

        router = APIRouter()
        sessions = SessionStore(config.session_budget_bytes)
        add_api_routes(router, EngineBackend(engine, config, sessions), config)
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
