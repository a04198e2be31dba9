"""The one-process app: the Gradio UI at `/`, the endpoint twin at `POST /score` and `GET /health`.

    python app.py [--model M] [--device D] [--dtype T] [--host H] [--port P] [--share] [--api-key K]

The composition root: it loads the engine and puts the demo (`sam_demo.demo`) and the endpoint's
HTTP layer (`sam_demo.endpoint`) on one port, sharing that engine and its embedding cache.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict

from fastapi import FastAPI
from fastapi.routing import APIRouter
from fastapi_offline import FastAPIOffline

from sam_demo.demo.example_photos import warm_up
from sam_demo.demo.layout import launch_demo, mount_demo
from sam_demo.demo.routes import add_demo_routes
from sam_demo.demo.session_store import SessionStore
from sam_demo.demo.workspace import WorkspaceLimits, WorkspaceStore
from sam_demo.endpoint.engine_backend import EngineBackend
from sam_demo.endpoint.http import add_api_routes
from sam_demo.endpoint.settings import ServerConfig
from sam_demo.engine.loading import ModelLoadError, load_engine, resolve_model
from sam_demo.engine.sam_engine import SamEngine
from sam_demo.engine.utils.heap import map_large_blocks
from sam_demo.flags import (
    add_engine_flags,
    add_score_flags,
    add_server_flags,
    engine_config,
    exit_with_message,
    server_config,
)

__all__ = ["build_app", "main", "serve"]


def _add_routes(
    app: FastAPI | APIRouter,
    engine: SamEngine,
    config: ServerConfig,
    sessions: SessionStore,
    workspaces: WorkspaceStore,
) -> None:
    """The endpoint's routes (/health also reports the demo's sessions) and the demo's own."""
    add_api_routes(app, EngineBackend(engine, config, lambda: {"sessions": asdict(sessions.stats())}), config)
    add_demo_routes(app, engine, sessions, workspaces)


def build_app(
    engine: SamEngine,
    config: ServerConfig = ServerConfig(),
    session_budget_bytes: int | None = None,
    limits: WorkspaceLimits = WorkspaceLimits(),
) -> FastAPI:
    """FastAPI app with /score and /health, and the Gradio UI mounted at /.

    session_budget_bytes: memory for the demo's sessions, all together (None: a quarter of the RAM).
    limits: what one set of images in the demo may hold.
    """
    # /docs and /redoc work offline: their scripts are served from the fastapi-offline package.
    app = FastAPIOffline(title="sam-demo", description="Segment Anything demo and Azure ML SAM endpoint twin")
    sessions, workspaces = SessionStore(session_budget_bytes), WorkspaceStore(max_bytes=session_budget_bytes)
    _add_routes(app, engine, config, sessions, workspaces)
    return mount_demo(app, engine, sessions, config.fetch, workspaces, limits, config.limits)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="sam-demo: interactive SAM in the browser + the Azure endpoint's /score"
    )
    add_engine_flags(parser)
    add_server_flags(parser)
    add_score_flags(parser)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument(
        "--max-images",
        type=int,
        default=WorkspaceLimits.max_images,
        help=f"images one set in the web demo may hold (default {WorkspaceLimits.max_images})",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=WorkspaceLimits.max_bytes >> 20,
        help=f"MB of image files one set in the web demo may hold (default {WorkspaceLimits.max_bytes >> 20})",
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
    budget = None if args.session_budget_mb is None else args.session_budget_mb << 20
    if args.max_images < 1 or args.max_upload_mb < 1:
        exit_with_message("--max-images and --max-upload-mb must be at least 1")
    limits = WorkspaceLimits(max_images=args.max_images, max_bytes=args.max_upload_mb << 20)
    warm_up(engine)  # in the background: the examples encoded (or read from the store), the encode time measured
    serve(engine, server_config(args), session_budget_bytes=budget, share=args.share, limits=limits)


def serve(
    engine: SamEngine,
    config: ServerConfig,
    session_budget_bytes: int | None = None,
    share: bool = False,
    limits: WorkspaceLimits = WorkspaceLimits(),
) -> None:
    """Serve until stopped: on uvicorn, or on Gradio's own server with a public share link."""
    if share:
        # A share link needs Gradio's own server; /score and /health are added to it.
        router = APIRouter()
        sessions, workspaces = SessionStore(session_budget_bytes), WorkspaceStore(max_bytes=session_budget_bytes)
        _add_routes(router, engine, config, sessions, workspaces)
        launch_demo(
            engine, sessions, config.fetch, config.host, config.port, router.routes, workspaces, limits, config.limits
        )
        return
    import uvicorn

    print(f"Serving the demo on http://{config.host}:{config.port}/ and the endpoint on POST /score", flush=True)
    uvicorn.run(
        build_app(engine, config, session_budget_bytes, limits),
        host=config.host,
        port=config.port,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
