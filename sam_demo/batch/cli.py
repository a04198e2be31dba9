"""The batch commands: the endpoint's CSV jobs, and precomputing embeddings into the store.

    python -m sam_demo.batch [--model M] [--device D] [--dtype T] [--predictions-csv P] INPUT OUTPUT
    python -m sam_demo.precompute IMAGES_DIR_OR_CSV --embedding-store DIR [--model M] [--engine ray]

See job.py and precompute.py for the inputs, outputs and resuming. This module imports only the
standard library: everything else (numpy, torch, the model code) is imported inside the handling of
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

__all__ = ["main", "precompute_main"]


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
    """`python -m sam_demo.batch`."""
    _interruptible(_main, argv, "rows written so far are kept")


def precompute_main(argv: list[str] | None = None) -> None:
    """`python -m sam_demo.precompute`."""
    _interruptible(_precompute, argv, "embeddings stored so far are kept")


def _interruptible(run, argv: list[str] | None, kept: str) -> None:
    signal.signal(signal.SIGINT, _interrupted)
    try:
        run(argv)
    except (Interrupted, KeyboardInterrupt):  # while importing, loading the model, or running
        print(f"\ninterrupted; {kept}. Run the same command again to resume.", file=sys.stderr)
        raise SystemExit(130) from None


def _add_ray_flags(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--no-progress", action="store_true")


def _precompute(argv: list[str] | None) -> None:
    from sam_demo.batch.precompute import precompute_image, precompute_items, run_local, run_precompute
    from sam_demo.flags import add_engine_flags, engine_config, exit_with_message, fetch_policy

    parser = argparse.ArgumentParser(
        prog="python -m sam_demo.precompute",
        description="Encode a folder of images (or a batch CSV's images) into the embedding store, resumably.",
    )
    parser.add_argument("source", type=Path, help="a folder of images (searched recursively) or a batch .csv file")
    add_engine_flags(parser)
    _add_ray_flags(parser)
    args = parser.parse_args(argv)
    from sam_demo.engine.loading import ModelLoadError, load_engine

    try:
        config, policy = engine_config(args), fetch_policy(args)
        if not config.embedding_store or config.embedding_store_bytes <= 0:
            raise ValueError("precompute writes into an embedding store: give --embedding-store DIR")
        items = precompute_items(args.source)
        if args.engine == "ray":
            from sam_demo.batch.ray_runner import map_on_ray

            _require_ray()
            results_for = lambda todo: map_on_ray(  # noqa: E731
                todo, precompute_image, config, policy, args.workers, args.ray_address
            )
        else:
            engine = load_engine(config)
            if not engine.store.enabled:
                raise ValueError(f"the embedding store is off: {engine.store.stats().disabled_reason}")
            results_for = lambda todo: run_local(todo, engine, policy)  # noqa: E731
        counts = run_precompute(items, results_for, progress=not args.no_progress)
    except (ModelLoadError, ValueError) as exc:
        exit_with_message(exc)
    print(
        f"{counts['images']} images: {counts['encoded']} encoded, {counts['stored']} already stored, "
        f"{counts['error']} could not be read; store: {config.embedding_store}"
    )


def _main(argv: list[str] | None) -> None:
    from sam_demo.batch.job import input_files, run_job, run_local
    from sam_demo.flags import add_engine_flags, engine_config, exit_with_message, fetch_policy

    parser = argparse.ArgumentParser(
        prog="python -m sam_demo.batch", description="Run Azure ML batch-endpoint CSV jobs for SAM locally, resumably."
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="INPUT OUTPUT",
        help="a batch CSV file (or a folder of them) and the JSON Lines output (resumed if it exists); "
        "with --boxes, only the COCO JSON output",
    )
    add_engine_flags(parser)
    parser.add_argument(
        "--predictions-csv", type=Path, default=None, help="also write Azure-style predictions.csv (valid JSON)"
    )
    _add_ray_flags(parser)
    parser.add_argument(
        "--everything",
        action="store_true",
        help="segment everything in each row's image (prompts ignored); lines hold COCO RLE annotations",
    )
    parser.add_argument("--points-per-side", type=int, default=32, help="with --everything: grid size (default 32)")
    parser.add_argument(
        "--boxes",
        type=Path,
        default=None,
        help="segment boxes instead: a COCO detection JSON or a folder of YOLO detection .txt files (with --images)",
    )
    parser.add_argument("--images", type=Path, default=None, help="with --boxes: the folder of the boxes' images")
    parser.add_argument(
        "--polygons", action="store_true", help="with --boxes: segmentations as polygons (default: RLE, exact)"
    )
    args = parser.parse_args(argv)
    if args.boxes is not None:
        if len(args.paths) != 1 or args.images is None:
            parser.error("with --boxes, give --images DIR and one output path: --boxes B --images DIR OUT.json")
        _boxes(args)
        return
    if len(args.paths) != 2 or args.images is not None or args.polygons:
        parser.error("give INPUT and OUTPUT (--images and --polygons go with --boxes)")
    args.input, args.output = args.paths
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


def _boxes(args: argparse.Namespace) -> None:
    from functools import partial

    from sam_demo.batch.boxes import read_boxes, run_boxes, run_local, segment_image_boxes
    from sam_demo.engine.loading import ModelLoadError, load_engine
    from sam_demo.flags import engine_config, exit_with_message, fetch_policy

    (output,) = args.paths
    try:
        config, policy = engine_config(args), fetch_policy(args)
        box_set = read_boxes(args.boxes, args.images)
        if box_set.unmatched:
            shown = ", ".join(box_set.unmatched[:10]) + (" ..." if len(box_set.unmatched) > 10 else "")
            print(f"{len(box_set.unmatched)} labelled images are not under {args.images}: {shown}", file=sys.stderr)
        if not box_set.items:
            raise ValueError(f"none of the labelled images is under {args.images}")
        if args.engine == "ray":
            _require_ray()
            from sam_demo.batch.ray_runner import map_on_ray

            work = partial(segment_image_boxes, polygons=args.polygons)
            results_for = lambda todo: map_on_ray(todo, work, config, policy, args.workers, args.ray_address)  # noqa: E731
        else:
            engine = load_engine(config)
            results_for = lambda todo: run_local(todo, engine, policy, args.polygons)  # noqa: E731
        counts = run_boxes(box_set, output, results_for, progress=not args.no_progress)
    except (ModelLoadError, ValueError) as exc:
        exit_with_message(exc)
    print(
        f"{counts['images']} images ({counts['done before']} done before, {counts['errors']} could not be read): "
        f"{counts['annotations']} masks written to {output}"
    )


def _ray_runner(
    config: EngineConfig,
    policy: FetchPolicy,
    workers: int | None,
    address: str | None,
    everything: EverythingConfig | None,
):
    _require_ray()
    from sam_demo.batch.ray_runner import run_ray

    return lambda rows: run_ray(rows, config, policy, workers, address, everything=everything)


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray: pip install -r requirements-ray.txt ({exc})") from None
