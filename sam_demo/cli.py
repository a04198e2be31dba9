"""Command-line flags shared by the app (`app.py`), the batch command and the benchmark.

`add_engine_flags` declares how the model is loaded and what input it takes; `engine_config` and
`fetch_policy` turn the parsed flags into the engine's (`EngineConfig`, defined here so that a
process that only passes it on, such as a Serve gateway, needs no torch) and the URL fetcher's. The
app's environment defaults are read here too (`SAM_MODEL` is read where the model is resolved, in
loading.py, because the Python API honours it as well). Imports no torch, so a command can handle
Ctrl-C before torch is loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from .cache import DEFAULT_CACHE_BYTES
from .images import DEFAULT_MAX_PIXELS

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # loading.DTYPES maps them to torch dtypes
DEFAULT_CACHE_MB = DEFAULT_CACHE_BYTES >> 20


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how the model is loaded and cached."""

    model: str | None = None  # None: $SAM_MODEL or facebook/sam-vit-large
    device: str | None = None  # None: cuda, then mps, then cpu
    dtype: str | None = None  # None: the fastest safe choice for the device
    cache_bytes: int = DEFAULT_CACHE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --cache-mb, --max-pixels and --allow-private-urls."""
    parser.add_argument(
        "--model", default=None, help="hub id or save_pretrained folder (default: $SAM_MODEL or facebook/sam-vit-large)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu)")
    parser.add_argument(
        "--dtype", default=None, choices=DTYPE_NAMES, help="default: the fastest safe choice for the device"
    )
    parser.add_argument(
        "--cache-mb", type=int, default=DEFAULT_CACHE_MB, help=f"embedding cache size (default {DEFAULT_CACHE_MB} MiB)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image in pixels (default {DEFAULT_MAX_PIXELS / 1e6:g} MP)",
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let image URLs point at private, loopback or link-local addresses",
    )


def engine_config(args: argparse.Namespace, model: str | None = None):
    """The `EngineConfig` of parsed engine flags (`model` overrides --model)."""
    return EngineConfig(
        model=model or args.model,
        device=args.device,
        dtype=args.dtype,
        cache_bytes=args.cache_mb << 20,
        max_pixels=args.max_pixels,
    )


def fetch_policy(args: argparse.Namespace):
    from .fetch import FetchPolicy

    return FetchPolicy(allow_private=args.allow_private_urls)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """--host, --port (Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) and --api-key ($SAM_API_KEY)."""
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--api-key", default=os.environ.get("SAM_API_KEY"), help="require this bearer token on /score")


def exit_with_message(exc: Exception | str) -> None:
    """For command-line entry points: print the message (no traceback) and exit with status 2."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)
