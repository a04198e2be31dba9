"""The Serve app's HTTP ingress: the single server's HTTP layer in front of the Scorer replicas. No torch.

`Gateway` runs endpoint/http.py's routes, the same as the one-process app's: API key, admission,
body limits, error bodies. Its `ServeBackend` parses the body, so a bad request is answered here,
and sends the parsed rows to a Scorer replica with the key of the first row's image
(affinity.route_key), which `ImageAffinityRouter` (router.py) maps to that image's replica.
`/health` lists every live Scorer replica with its engine, its requests and its cache.
"""

from __future__ import annotations

import asyncio
import logging

import ray
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from sam_demo.endpoint.http import add_api_routes, error
from sam_demo.endpoint.wire import EndpointRow, RequestError, parse_request
from sam_demo.serve.affinity import route_key
from sam_demo.serve.router import ROUTE_KEY
from sam_demo.serve.settings import SCORER, ServeSettings

__all__ = ["Gateway", "ServeBackend"]

log = logging.getLogger("sam_demo")
STATS_TIMEOUT_S = 2.0  # per replica, for /health


class ServeBackend:
    """api.ApiBackend on Serve: parses here, computes on the replica that `route_key` picks."""

    def __init__(self, scorer: DeploymentHandle, settings: ServeSettings, app_name: str):
        self.scorer = scorer
        self.settings = settings
        self.replica_prefix = f"SERVE_REPLICA::{app_name}#{SCORER}#"

    async def score(self, body: bytes) -> JSONResponse:
        try:
            rows, key = await asyncio.to_thread(self._parse, body)
        except RequestError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status)
        timeout = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                status, payload = await self.scorer.score.remote(rows, **{ROUTE_KEY: key})
        except TimeoutError:
            return error(503, f"no replica answered within {timeout:g} s; retry shortly", retry_after_s=5)
        except (RayActorError, ReplicaUnavailableError):
            log.warning("a replica stopped while computing a /score request")
            return error(503, "the replica computing this request stopped; retry it", retry_after_s=1)
        except DeploymentUnavailableError:
            return error(503, "no replica is available (the app is being replaced or removed); retry shortly", 5)
        return JSONResponse(payload, status_code=status)

    def _parse(self, body: bytes) -> tuple[list[EndpointRow], str]:
        """The request's rows and its routing key: its first row's image's (off the event loop:
        hashing a 50 MB image takes tens of ms)."""
        rows = parse_request(body, self.settings.server.limits)
        return rows, route_key(rows[0].image)

    async def health(self) -> dict:
        replicas = await self._replica_reports()
        live = [r for r in replicas if "cache" in r]
        totals = {k: sum(r["cache"][k] for r in live) for k in ("entries", "bytes", "max_bytes", "hits", "misses")}
        first = live[0] if live else {}
        stores = [r["embedding_store"] for r in live if r.get("embedding_store")]
        store = None
        if stores:  # one folder shared by the replicas: its size once, their reads and writes summed
            counted = ("hits", "misses", "writes", "evictions", "corrupt", "skipped")
            store = {**stores[0], **{k: sum(s[k] for s in stores) for k in counted}}
        return {
            "status": "ok" if live else "no replicas",
            "model": first.get("model"),
            "router": self.settings.router,
            "max_imbalance": self.settings.max_imbalance,
            "cache": totals,
            "embedding_store": store,
            "replicas": replicas,
        }

    async def _replica_reports(self) -> list[dict]:
        """Every Scorer replica's `record_routing_stats`, asked at once; one that does not answer
        within STATS_TIMEOUT_S, or answers with an error (a replacement replica raises one until Serve
        has initialised it), is listed as unreachable (dead, or starting)."""
        named = await asyncio.to_thread(ray.util.list_named_actors, True)
        names = sorted(
            a["name"] for a in named if a["namespace"] == "serve" and a["name"].startswith(self.replica_prefix)
        )

        async def report(name: str) -> dict:
            try:
                async with asyncio.timeout(STATS_TIMEOUT_S):
                    return await ray.get_actor(name, namespace="serve").record_routing_stats.remote()
            except (TimeoutError, RayActorError, RayTaskError, ValueError):
                return {"replica": name.removeprefix(self.replica_prefix), "state": "unreachable"}

        return list(await asyncio.gather(*map(report, names)))


@serve.ingress()  # the FastAPI app is built in each replica, by __serve_build_asgi_app__
class Gateway:
    def __init__(self, scorer: DeploymentHandle, settings: ServeSettings):
        self.settings = settings
        self.backend = ServeBackend(scorer, settings, serve.get_replica_context().app_name)

    def __serve_build_asgi_app__(self):
        from fastapi_offline import FastAPIOffline

        app = FastAPIOffline(title="sam-demo on Ray Serve", description="Azure ML SAM endpoint twin, scaled out")
        add_api_routes(app, self.backend, self.settings.gateway_config())
        return app
