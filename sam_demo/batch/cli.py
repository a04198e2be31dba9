"""The batch command: `python -m sam_demo.batch [engine flags] [--engine local|ray] INPUT OUTPUT`.

    python -m sam_demo.batch [--model M] [--device D] [--dtype T] [--predictions-csv P] INPUT OUTPUT

See job.py for the input and output formats and resuming. This module imports only the standard
library: everything else (numpy, torch, the model code) is imported inside `main`'s handling of
Ctrl-C, so an interrupt at any moment ends with one line, not a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sam_demo.endpoint.fetch import FetchPolicy
    from sam_demo.engine.automatic_mask_generator import EverythingConfig
    from sam_demo.engine.config import EngineConfig

__all__ = ["main"]


class Interrupted(BaseException):
    """Ctrl-C, raised by this command's SIGINT handler in place of KeyboardInterrupt.

    Under `python -m`, CPython exits by SIGINT (status -2, no message of ours) after a
    KeyboardInterrupt that passed through code run by exec() (dataclasses and torch run some while
    they import), even when the command caught it and asked for status 130; seen here one run in
    ten. Another exception type does not set that flag.
    """


def _interrupted(signum, frame) -> None:
    raise Interrupted


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGINT, _interrupted)
    try:
        _main(argv)
    except (Interrupted, KeyboardInterrupt):  # while importing, loading the model, or running rows
        print("\ninterrupted; rows written so far are kept. Run the same command again to resume.", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: list[str] | None) -> None:
    from sam_demo.batch.job import input_files, run_job, run_local
    from sam_demo.flags import add_engine_flags, engine_config, exit_with_message, fetch_policy

    parser = argparse.ArgumentParser(
        prog="python -m sam_demo.batch", description="Run Azure ML batch-endpoint CSV jobs for SAM locally, resumably."
    )
    parser.add_argument("input", type=Path, help="a batch CSV file or a folder of them")
    parser.add_argument("output", type=Path, help="JSON Lines output (resumed if it exists)")
    add_engine_flags(parser)
    parser.add_argument(
        "--predictions-csv", type=Path, default=None, help="also write Azure-style predictions.csv (valid JSON)"
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: a Ray Data actor pool (pip install -r requirements-ray.txt)",
    )
    parser.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="Ray actors, one model each (default: one per GPU, or 1)"
    )
    parser.add_argument(
        "--everything",
        action="store_true",
        help="segment everything in each row's image (prompts ignored); lines hold COCO RLE annotations",
    )
    parser.add_argument("--points-per-side", type=int, default=32, help="with --everything: grid size (default 32)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from sam_demo.engine.automatic_mask_generator import EverythingConfig
    from sam_demo.engine.loading import ModelLoadError, load_engine

    try:
        config, policy = engine_config(args), fetch_policy(args)
        input_files(args.input)
        everything = EverythingConfig(points_per_side=args.points_per_side) if args.everything else None
        if args.engine == "ray":
            results_for = _ray_runner(config, policy, args.workers, args.ray_address, everything)
        else:
            engine = load_engine(config)
            results_for = lambda rows: run_local(rows, engine, policy, everything)  # noqa: E731
        summary = run_job(args.input, args.output, results_for, args.predictions_csv, progress=not args.no_progress)
    except (ModelLoadError, ValueError) as exc:
        exit_with_message(exc)
    print(
        f"{summary['written']} rows written ({summary['errors']} with errors), {summary['skipped']} already done, "
        f"to {args.output}"
    )


def _ray_runner(
    config: EngineConfig,
    policy: FetchPolicy,
    workers: int | None,
    address: str | None,
    everything: EverythingConfig | None,
):
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray: pip install -r requirements-ray.txt ({exc})") from None
    from sam_demo.batch.ray_runner import run_ray

    return lambda rows: run_ray(rows, config, policy, workers, address, everything=everything)
