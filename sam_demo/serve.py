"""The endpoint twin (`POST /score`, `GET /health`) on Ray Serve: many replicas, image-affine routing.

    python -m sam_demo.serve --model M --replicas N [--max-replicas M] [--host H] [--port P]
                             [--ray-address ADDR] [--router image|default] [engine and /score flags]
    serve deploy serve_config.yaml          (a cluster; the file's `args` are these flags)

Two deployments. `Gateway` (the HTTP ingress, no model, no torch) runs api.py's HTTP layer, the
same as the single server's: API key, admission, body limits, error bodies. It parses the body,
so a bad request is answered there, and sends the parsed rows to a `Scorer` replica with the key
of the first row's image (affinity.route_key). `ImageAffinityRouter` (serve_router.py) sends each
key to its replica, so the replica's cached embedding is used again. A Scorer holds an engine and
answers with scoring.answer, as the single server does, so the two answer alike, byte for byte.

`/health` lists every live Scorer replica with its engine and cache (entries, hits, misses):
each replica's misses are its encoder runs. A replica that dies mid-request costs that request a
503 (Retry-After); Serve starts another, and meanwhile its images go to the others.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace

import ray
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from .affinity import route_key
from .api import ServerConfig, add_api_routes, add_score_flags, error, server_config
from .cli import EngineConfig, add_engine_flags, add_server_flags, engine_config, exit_with_message
from .endpoint import EndpointRow, RequestError, parse_request
from .serve_router import DEFAULT_MAX_IMBALANCE, ROUTE_KEY, ImageAffinityRouter

log = logging.getLogger("sam_demo")

APP_NAME = "sam"
SCORER = "Scorer"
ROUTERS = ("image", "default")  # ImageAffinityRouter, or Serve's own (power of two choices)
STATS_TIMEOUT_S = 2.0  # per replica, for /health


@dataclass(frozen=True)
class ServeSettings:
    """The Serve app: the engine each replica loads, the HTTP layer's config, and the replicas.

    server.score_concurrency is per replica: requests a replica computes at once; up to
    server.score_queue more wait there. replicas..max_replicas: Serve autoscales between them.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    replicas: int = 2
    max_replicas: int | None = None  # above `replicas`: autoscaling on ongoing requests
    router: str = "image"
    max_imbalance: int = DEFAULT_MAX_IMBALANCE
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    request_timeout_s: float = 600.0  # a request not answered by then gets 503

    def __post_init__(self):
        if self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {self.replicas}")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"--max-replicas ({self.max_replicas}) must be at least --replicas ({self.replicas})")
        if self.router not in ROUTERS:
            raise ValueError(f"--router must be one of {ROUTERS}, got {self.router!r}")
        if self.max_imbalance < 0 or self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ValueError("--max-imbalance, --cpus-per-replica and --gpus-per-replica must not be negative")
        if self.request_timeout_s <= 0:
            raise ValueError(f"--request-timeout must be positive, got {self.request_timeout_s:g}")

    @property
    def most_replicas(self) -> int:
        return self.max_replicas or self.replicas

    def gateway_config(self) -> ServerConfig:
        """The gateway's admission: every replica's computing slots, then the queue."""
        return replace(self.server, score_concurrency=self.server.score_concurrency * self.most_replicas)


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


# ---- command line and config file ------------------------------------------------------------
def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    defaults = ServeSettings()
    parser.add_argument("--replicas", type=int, default=defaults.replicas, help="Scorer replicas (default 2)")
    parser.add_argument(
        "--max-replicas", type=int, default=None, help="autoscale from --replicas up to this many on load"
    )
    parser.add_argument(
        "--router",
        choices=ROUTERS,
        default=defaults.router,
        help="image: each image's requests to one replica (default); default: Serve's power of two choices",
    )
    parser.add_argument(
        "--max-imbalance",
        type=int,
        default=defaults.max_imbalance,
        help="leave an image's replica when it has this many more requests than the least busy one",
    )
    parser.add_argument("--cpus-per-replica", type=float, default=defaults.cpus_per_replica)
    parser.add_argument("--gpus-per-replica", type=float, default=None, help="default: 1 with --device cuda, else 0")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout_s,
        help="seconds a /score request may take in all before 503 (default 600)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sam_demo.serve", description="sam-demo's /score and /health on Ray Serve"
    )
    add_engine_flags(parser)
    add_server_flags(parser)
    add_score_flags(parser)
    add_serve_flags(parser)
    parser.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)",
    )
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    gpus = args.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if (args.device or "").startswith("cuda") else 0.0
    return ServeSettings(
        engine=engine_config(args),
        server=server_config(args),
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        router=args.router,
        max_imbalance=args.max_imbalance,
        cpus_per_replica=args.cpus_per_replica,
        gpus_per_replica=gpus,
        request_timeout_s=args.request_timeout,
    )


def settings_from_config(args: dict) -> ServeSettings:
    """The settings of a config file's `args`: the command's flags by name (`max_rows: 8` for
    --max-rows 8; true for a switch), so the two share their defaults and their checks."""
    argv = []
    for name, value in args.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return settings_from_args(parse_args(argv))


def app_builder(args: dict) -> serve.Application:
    """`serve deploy`'s entry (serve_config.yaml: import_path sam_demo.serve:app_builder)."""
    return build_app(settings_from_config(args))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        exit_with_message(exc)
    import sam_demo

    # This package goes with the app to every node; the replicas' logs stay in Ray's log folder
    # (/tmp/ray/session_latest/logs/serve/), not on this console.
    ray.init(
        address=args.ray_address,
        runtime_env={"py_modules": [sam_demo]},
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    serve.start(http_options={"host": args.host, "port": args.port})
    print(f"Starting {settings.replicas} replica(s) of {settings.engine.model or 'the default model'} ...", flush=True)
    try:
        serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    except RuntimeError:  # a replica could not start, e.g. its model did not load
        reason = _scorer_failure()
        serve.delete(APP_NAME)
        exit_with_message(f"the Serve app did not start: {reason}")
    print(f"Serving POST /score and GET /health on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(APP_NAME)
        print("stopped", flush=True)


def _scorer_failure() -> str:
    """The last line of the Scorer deployment's status message: its replicas' error."""
    deployment = serve.status().applications.get(APP_NAME)
    message = deployment.deployments[SCORER].message if deployment and SCORER in deployment.deployments else ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (
        re.sub(r"^[\w.]+: ", "", lines[-1]) if lines else "see Ray's Serve logs (/tmp/ray/session_latest/logs/serve/)"
    )


if __name__ == "__main__":
    main()
