"""The endpoint's answers computed by an engine in this process (the one-process app's backend).

`http.add_api_routes` takes any `ApiBackend`; this one runs `scoring.answer` in a worker thread.
The Serve app's backend is `sam_demo.serve.gateway.ServeBackend`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sam_demo.endpoint.scoring import answer, engine_report
from sam_demo.endpoint.settings import ServerConfig
from sam_demo.engine.sam_engine import SamEngine

__all__ = ["EngineBackend"]


class EngineBackend:
    """/score and /health answered by `engine`; `health_extra()` adds to /health (the demo's sessions)."""

    def __init__(self, engine: SamEngine, config: ServerConfig, health_extra: Callable[[], dict] | None = None):
        self.engine = engine
        self.config = config
        self.health_extra = health_extra

    async def health(self) -> dict:
        extra = {} if self.health_extra is None else self.health_extra()
        return {"status": "ok", **engine_report(self.engine), **extra}

    async def score(self, body: bytes) -> JSONResponse:
        status, payload = await run_in_threadpool(answer, body, self.engine, self.config.fetch, self.config.limits)
        return JSONResponse(payload, status_code=status)
