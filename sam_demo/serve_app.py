"""The Serve application of `python -m sam_demo.serve`: a Gateway in front of Scorer replicas.

`Gateway` (the HTTP ingress, no model, no torch) runs api.py's HTTP layer, the same as the single
server's: API key, admission, body limits, error bodies. It parses the body, so a bad request is
answered there, and sends the parsed rows to a `Scorer` replica with the key of the first row's
image (affinity.route_key). `ImageAffinityRouter` (serve_router.py) sends each key to its replica,
so the replica's cached embedding is used again. A Scorer holds an engine and answers with
scoring.answer, as the single server does, so the two answer alike, byte for byte.

`/health` lists every live Scorer replica with its engine, its requests and its cache (entries,
hits, misses): each replica's misses are its encoder runs. A replica that dies mid-request costs
that request a 503 (Retry-After); Serve starts another, and meanwhile its images go to the others.
"""

from __future__ import annotations

import asyncio
import logging

import ray
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from .affinity import route_key
from .api import add_api_routes, error
from .endpoint import EndpointRow, RequestError, parse_request
from .serve import ServeSettings
from .serve_router import ROUTE_KEY, ImageAffinityRouter

log = logging.getLogger("sam_demo")

APP_NAME = "sam"
SCORER = "Scorer"
STATS_TIMEOUT_S = 2.0  # per replica, for /health


class Scorer:
    """A replica: one engine, answering parsed requests (scoring.answer)."""

    def __init__(self, settings: ServeSettings):
        import torch

        from .heap import map_large_blocks
        from .loading import load_engine

        map_large_blocks()
        # One torch thread per CPU the replica holds (float32 sums may change with the count).
        torch.set_num_threads(max(1, int(settings.cpus_per_replica)))
        self.engine = load_engine(settings.engine)
        self.settings = settings
        self.slots = asyncio.Semaphore(settings.server.score_concurrency)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.computing_or_waiting = 0  # only the replica's event loop changes it

    async def score(self, rows: list, route_key: str = "") -> tuple[int, list | dict]:
        """(HTTP status, JSON payload) for a request's parsed rows. `route_key` is for the router."""
        from .scoring import answer

        server = self.settings.server
        self.computing_or_waiting += 1
        try:
            async with self.slots:
                return await asyncio.to_thread(answer, rows, self.engine, server.fetch, server.limits)
        finally:
            self.computing_or_waiting -= 1

    def record_routing_stats(self) -> dict:
        """This replica in /health (Serve's routing-stats hook, also read by the gateway)."""
        from .scoring import engine_report

        return {
            "replica": self.replica,
            "node": ray.get_runtime_context().get_node_id(),
            "computing_or_waiting": self.computing_or_waiting,
            **engine_report(self.engine),
        }


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
        return {
            "status": "ok" if live else "no replicas",
            "model": first.get("model"),
            "router": self.settings.router,
            "max_imbalance": self.settings.max_imbalance,
            "cache": totals,
            "replicas": replicas,
        }

    async def _replica_reports(self) -> list[dict]:
        """Every Scorer replica's `record_routing_stats`, asked at once; one that does not answer
        within STATS_TIMEOUT_S is listed as unreachable (dead, or starting)."""
        named = await asyncio.to_thread(ray.util.list_named_actors, True)
        names = sorted(
            a["name"] for a in named if a["namespace"] == "serve" and a["name"].startswith(self.replica_prefix)
        )

        async def report(name: str) -> dict:
            try:
                async with asyncio.timeout(STATS_TIMEOUT_S):
                    return await ray.get_actor(name, namespace="serve").record_routing_stats.remote()
            except (TimeoutError, RayActorError, ValueError):
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


def build_app(settings: ServeSettings) -> serve.Application:
    """The Serve application: a Gateway in front of `settings.replicas` Scorer replicas."""
    server = settings.server
    options = dict(
        name=SCORER,
        ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica},
        max_ongoing_requests=server.score_concurrency + server.score_queue,
        health_check_period_s=2,
        health_check_timeout_s=30,
    )
    if settings.max_replicas and settings.max_replicas > settings.replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": server.score_concurrency,
        }
    else:
        options["num_replicas"] = settings.replicas
    if settings.router == "image":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=ImageAffinityRouter,
            request_router_kwargs={"max_imbalance": settings.max_imbalance},
        )
    scorer = serve.deployment(Scorer).options(**options).bind(settings)
    gateway = serve.deployment(Gateway).options(
        name="Gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000
    )
    return gateway.bind(scorer, settings)
