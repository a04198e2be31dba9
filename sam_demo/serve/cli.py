"""The Serve command and the config file's entry: flags -> `ServeSettings` -> the Serve application.

    python -m sam_demo.serve --model M --replicas N [--max-replicas M] [--host H] [--port P]
                             [--ray-address ADDR] [--router image|default] [engine and /score flags]
    serve deploy serve_config.yaml          (a cluster; the file's `args` are these flags)

`app_builder` is serve_config.yaml's import path (`sam_demo.serve:app_builder`); deployments.py
builds the application. Imports neither Ray nor torch until it runs, so a missing Ray is one
clear message.
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

from sam_demo.flags import (
    add_engine_flags,
    add_score_flags,
    add_server_flags,
    engine_config,
    exit_with_message,
    server_config,
)
from sam_demo.serve.settings import APP_NAME, ROUTERS, SCORER, ServeSettings

__all__ = ["app_builder", "main", "settings_from_args", "settings_from_config"]


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
    from sam_demo.serve.deployments import build_app

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

        from sam_demo.serve.deployments import build_app
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
    deployment = serve.status().applications.get(APP_NAME)
    message = deployment.deployments[SCORER].message if deployment and SCORER in deployment.deployments else ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (
        re.sub(r"^[\w.]+: ", "", lines[-1]) if lines else "see Ray's Serve logs (/tmp/ray/session_latest/logs/serve/)"
    )
