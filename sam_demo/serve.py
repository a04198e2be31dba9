"""The endpoint twin (`POST /score`, `GET /health`) on Ray Serve: many replicas, image-affine routing.

    python -m sam_demo.serve --model M --replicas N [--max-replicas M] [--host H] [--port P]
                             [--ray-address ADDR] [--router image|default] [engine and /score flags]
    serve deploy serve_config.yaml          (a cluster; the file's `args` are these flags)

This module is the command and the config file's entry (`app_builder`), and their settings
(`ServeSettings`); serve_app.py is the application. It imports neither Ray nor torch until it runs,
so a missing Ray is one clear message.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field, replace

from .affinity import DEFAULT_MAX_IMBALANCE
from .api import ServerConfig, add_score_flags, server_config
from .cli import EngineConfig, add_engine_flags, add_server_flags, engine_config, exit_with_message

ROUTERS = ("image", "default")  # ImageAffinityRouter, or Serve's own (power of two choices)


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


def app_builder(args: dict):
    """`serve deploy`'s entry (serve_config.yaml: import_path sam_demo.serve:app_builder): the
    `serve.Application` of the config file's `args`."""
    from .serve_app import build_app

    return build_app(settings_from_config(args))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        exit_with_message(exc)
    try:
        import ray
        from ray import serve

        from .serve_app import APP_NAME, build_app
    except ImportError as exc:
        exit_with_message(f"{exc}; the Serve app needs Ray Serve: pip install -r requirements-ray.txt")
    import sam_demo

    try:
        # This package goes with the app to every node; the replicas' logs stay in Ray's log folder
        # (/tmp/ray/session_latest/logs/serve/), not on this console.
        ray.init(
            address=args.ray_address,
            runtime_env={"py_modules": [sam_demo]},
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        signal.signal(signal.SIGTERM, _interrupt)  # a container's stop, as Ctrl-C (after Ray sets its own)
        serve.start(http_options={"host": args.host, "port": args.port})
        model = settings.engine.model or "the default model"
        print(f"Starting {settings.replicas} replica(s) of {model} ...", flush=True)
        try:
            serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
        except RuntimeError:  # a replica could not start, e.g. its model did not load
            reason = _scorer_failure(serve)
            serve.delete(APP_NAME)
            exit_with_message(f"the Serve app did not start: {reason}")
        print(f"Serving POST /score and GET /health on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if ray.is_initialized():  # take the app down (on a cluster it would stay up)
            with contextlib.suppress(Exception):
                serve.delete(APP_NAME)
        print("stopped", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _scorer_failure(serve) -> str:
    """The last line of the Scorer deployment's status message: its replicas' error."""
    from .serve_app import APP_NAME, SCORER

    deployment = serve.status().applications.get(APP_NAME)
    message = deployment.deployments[SCORER].message if deployment and SCORER in deployment.deployments else ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (
        re.sub(r"^[\w.]+: ", "", lines[-1]) if lines else "see Ray's Serve logs (/tmp/ray/session_latest/logs/serve/)"
    )


if __name__ == "__main__":
    main()
