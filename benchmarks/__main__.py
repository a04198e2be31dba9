"""Benchmark sam-demo against the naive transformers recipe, run in the same process.

    python -m benchmarks --quick                      # tiny random SAM, < 2 minutes on 2 cores
    python -m benchmarks --arch large                 # random ViT-L (offline stand-in for sam-vit-large)
    python -m benchmarks --model facebook/sam-vit-large

Rows (each: ours, naive, ratio; p50 and p95 over interleaved runs), one module each:
- click.py: cached embedding -> three full-resolution boolean masks on a 1800x1200 photo. Naive:
  SamProcessor(images=..., input_points=...) per click + SamModel(image_embeddings=...) + post_process_masks.
- encode.py: a new image -> its embedding, ours in the default dtype, naive fp32 (processor + get_image_embeddings).
- everything.py: a 32x32 point grid (8x8 with --quick) from the cached embedding, against transformers'
  pipeline("mask-generation") with its own encode (run by --pipeline-python, as it needs torchvision);
  in the fast mode also against the exact mode, with the FLOPs per prompt and the matmul throughput.
- batch.py: images/s on an endpoint batch CSV of distinct images, against a plain loop over the naive recipe.
- cold_start.py: a fresh process from start to the first mask, model already on disk.
- memory.py (not with --quick): peak RSS with the model loaded and 32 images cached.
- store.py (`--store` only): a known image's first mask from the embedding store vs a fresh
  encode, and the store's read and write per entry.
- workspace.py (`--workspace` only): D to the next image of a set with and without the background
  encode, and the whole set's COCO export (RLE vs polygons).
`--ui` and `--ui-memory` time and weigh the web demo in Chromium (ui.py); `--hostile` weighs
single hostile or heavy /score requests (hostile.py); `--serve` runs the endpoint on Ray Serve (serve.py).
Both sides flush denormals and use the same threads. The table is printed and written as JSON (report.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.batch import bench_batch
from benchmarks.click import agreement, bench_click
from benchmarks.cold_start import bench_cold_start
from benchmarks.encode import bench_encode
from benchmarks.everything import everything_rows
from benchmarks.memory import bench_memory
from benchmarks.naive import Naive
from benchmarks.report import machine, write_report
from sam_demo.engine.loading import load_engine
from sam_demo.engine.random_sam import write_random_checkpoint
from sam_demo.flags import add_engine_flags, engine_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random SAM, few rounds (a smoke test)")
    add_engine_flags(parser)
    parser.add_argument("--arch", default=None, help="random-weight ViT size when no --model: tiny, base, large, huge")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="timed clicks (encodes use a fifth, at least 3)")
    parser.add_argument(
        "--pipeline-python",
        default=os.environ.get("SAM_PIPELINE_PYTHON"),
        help="a Python with torchvision to time transformers' mask-generation pipeline "
        "(default: $SAM_PIPELINE_PYTHON); without it the everything row has no baseline",
    )
    parser.add_argument(
        "--ui", action="store_true", help="only the web demo's rows, timed in headless Chromium (default arch: base)"
    )
    parser.add_argument(
        "--ui-app",
        type=Path,
        default=None,
        help="with --ui: serve this checkout's app.py instead (e.g. a git worktree of an older commit)",
    )
    parser.add_argument(
        "--hostile", action="store_true", help="only the server's peak memory per hostile or heavy /score request"
    )
    parser.add_argument(
        "--ui-memory",
        action="store_true",
        help="only the web demo's server memory per open session (12 MP photo, ten objects)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="only the endpoint on Ray Serve: 1 and 2 replicas, image-affine vs Serve's default router",
    )
    parser.add_argument(
        "--workspace", action="store_true", help="only the dataset workspace's rows (default arch: base)"
    )
    parser.add_argument(
        "--store", action="store_true", help="only the embedding store's rows (a store in a temporary folder)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args(argv)

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (30 if args.quick else 100)
    tmp = tempfile.TemporaryDirectory()
    if args.model:
        path, label = args.model, args.model
    else:
        light = args.quick or args.ui_memory or args.hostile
        arch = args.arch or ("tiny" if light else "base" if args.ui or args.serve or args.workspace else "large")
        path = str(write_random_checkpoint(Path(tmp.name) / f"sam-{arch}-random", arch=arch))
        label = f"random-weight SAM ({arch} ViT)"
    if args.serve:
        from benchmarks.serve import serve_rows

        rows = serve_rows(path, args.dtype, requests=40 if args.quick else 100, images=4 if args.quick else 10)
        info = {"model": label, "device": "cpu", "dtype": args.dtype or "default", **machine(), "accuracy": "-"}
    elif args.ui or args.ui_memory or args.hostile:
        from benchmarks.hostile import request_memory
        from benchmarks.ui import bench_ui, session_memory

        if args.hostile:
            rows = request_memory(path, args.dtype, app=args.ui_app)
        elif args.ui_memory:
            rows = session_memory(path, args.dtype, sessions=2 if args.quick else 4, app=args.ui_app)
        else:
            rows = bench_ui(path, args.dtype, args.rounds or (8 if args.quick else 30), app=args.ui_app)
        info = {"model": label, "device": "cpu", "dtype": args.dtype or "default", **machine(), "accuracy": "-"}
    elif args.workspace:
        from benchmarks.workspace import workspace_rows

        engine = load_engine(engine_config(args, model=path))
        rows = workspace_rows(engine, args.rounds or (2 if args.quick else 5))
        info = {"model": label, "device": engine.info.device, "dtype": engine.info.dtype, **machine(), "accuracy": "-"}
    elif args.store:
        from benchmarks.store import store_rows

        config = replace(engine_config(args, model=path), embedding_store=str(Path(tmp.name) / "store"))
        engine = load_engine(config)
        rows = store_rows(engine, args.rounds or (3 if args.quick else 10))
        info = {"model": label, "device": engine.info.device, "dtype": engine.info.dtype, **machine(), "accuracy": "-"}
    else:
        engine = load_engine(engine_config(args, model=path))
        naive = Naive(path, engine.device)
        rows = [
            bench_click(engine, naive, rounds),
            bench_encode(engine, naive, max(3, rounds // 20 if args.quick else 3)),
        ]
        rows += everything_rows(engine, path, args.pipeline_python, 8 if args.quick else 32)
        rows.append(bench_batch(engine, naive, 20))
        rows.append(bench_cold_start(path, engine.device))
        if not args.quick and engine.device.type == "cpu":
            rows.append(bench_memory(path))
        info = {
            "model": label,
            "device": engine.info.device,
            "dtype": engine.info.dtype,
            **machine(),
            "accuracy": agreement(engine, path),
        }
    write_report(label, info, rows, args.out)


if __name__ == "__main__":
    main()
