"""The command-line flags that the commands share: the app (`app.py`), batch, serve and the benchmarks.

Each `add_*_flags` declares a group of flags; `engine_config`, `fetch_policy` and `server_config`
turn the parsed flags into the settings the domain code takes (`EngineConfig`, `FetchPolicy`,
`ServerConfig`), which know nothing of argparse. A command's own flags (batch's, serve's) stay in
its CLI module. The environment defaults are read here too (`SAM_MODEL` is read where the model is
resolved, in engine/loading.py, because the Python API honours it as well). Imports neither torch
nor the web stack, so a command can handle Ctrl-C from its first moment.
"""

from __future__ import annotations

import argparse
import os
import sys

from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.settings import ServerConfig
from sam_demo.endpoint.wire import RequestLimits
from sam_demo.engine.config import DEFAULT_STORE_BYTES, DTYPE_NAMES, EngineConfig
from sam_demo.engine.utils.cache import DEFAULT_CACHE_BYTES
from sam_demo.engine.utils.images import DEFAULT_MAX_PIXELS

DEFAULT_CACHE_MB = DEFAULT_CACHE_BYTES >> 20
SPACES_STORE = "/data/sam-demo/embeddings"
MAX_STORE_GB = 1_000_000


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --exact, --encoder, --encoder-cache, --embedding-store,
    --embedding-store-gb, --cache-mb, --max-pixels and --allow-private-urls."""
    parser.add_argument(
        "--model", default=None, help="hub id or save_pretrained folder (default: $SAM_MODEL or facebook/sam-vit-large)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu)")
    parser.add_argument(
        "--dtype", default=None, choices=DTYPE_NAMES, help="default: the fastest safe choice for the device"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="the exact mode: transformers' decoder and upscaler in float32, masks bit-equal to the "
        "transformers recipe (default: the fast mode, within a pixel of it)",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        choices=("torch", "openvino"),
        help="what runs the image encoder (default: OpenVINO on a CPU computing in float32 outside the exact "
        "mode, where the openvino package is installed; torch elsewhere)",
    )
    parser.add_argument(
        "--encoder-cache",
        default=None,
        help="where OpenVINO's converted encoders are kept (default: $SAM_DEMO_CACHE or ~/.cache/sam-demo, /openvino)",
    )
    parser.add_argument(
        "--embedding-store",
        default=default_embedding_store(),
        help="a folder that keeps image embeddings on disk across restarts, shared by every process given it "
        f"(default: {SPACES_STORE} on a Hugging Face Space with persistent storage; else none)",
    )
    parser.add_argument(
        "--embedding-store-gb",
        type=float,
        default=DEFAULT_STORE_BYTES / 2**30,
        help=f"the store's bound, least recently used first (default {DEFAULT_STORE_BYTES / 2**30:g}; 0: no store)",
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
    """The `EngineConfig` of parsed engine flags (`model` overrides --model). Raises ValueError for
    an --embedding-store-gb that is negative, not finite or absurd."""
    if not 0 <= args.embedding_store_gb <= MAX_STORE_GB:  # also refuses nan and inf
        raise ValueError(
            f"--embedding-store-gb must be from 0 (no store) to {MAX_STORE_GB:,}, got {args.embedding_store_gb:g}"
        )
    return EngineConfig(
        model=model or args.model,
        device=args.device,
        dtype=args.dtype,
        exact=args.exact,
        cache_bytes=args.cache_mb << 20,
        max_pixels=args.max_pixels,
        encoder=args.encoder,
        encoder_cache=args.encoder_cache,
        embedding_store=args.embedding_store,
        embedding_store_bytes=int(args.embedding_store_gb * 2**30),
    )


def default_embedding_store() -> str | None:
    """Spaces' persistent storage (/data, on a Space that has it), else None: no store unless asked."""
    return SPACES_STORE if os.environ.get("SPACE_ID") and os.path.isdir("/data") else None


def fetch_policy(args: argparse.Namespace) -> FetchPolicy:
    return FetchPolicy(allow_private=args.allow_private_urls)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """--host, --port (Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) and --api-key ($SAM_API_KEY)."""
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--api-key", default=os.environ.get("SAM_API_KEY"), help="require this bearer token on /score")


def add_score_flags(parser: argparse.ArgumentParser) -> None:
    """/score's limits and queue: --max-body-mb, --max-rows, --max-prompts, --max-points,
    --max-output-mp and --score-queue."""
    defaults = RequestLimits()
    mb = ServerConfig.max_body_bytes >> 20
    parser.add_argument("--max-body-mb", type=int, default=mb, help=f"largest /score body (default {mb})")
    parser.add_argument("--max-rows", type=int, default=defaults.max_rows, help="rows (images) per /score request")
    parser.add_argument(
        "--max-prompts",
        type=int,
        default=defaults.max_groups,
        help="point groups or boxes per row (one prediction each)",
    )
    parser.add_argument("--max-points", type=int, default=defaults.max_points, help="points per group")
    parser.add_argument(
        "--max-output-mp",
        type=int,
        default=defaults.max_output_pixels // 1_000_000,
        help="mask megapixels in one response (masks x image pixels)",
    )
    parser.add_argument(
        "--score-queue",
        type=int,
        default=ServerConfig.score_queue,
        help="/score requests that may wait for a compute slot; more get 503",
    )


def server_config(args: argparse.Namespace, **fields) -> ServerConfig:
    """The `ServerConfig` of parsed server, score and engine flags; `fields` set the rest."""
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_body_bytes=args.max_body_mb << 20,
        score_queue=args.score_queue,
        limits=RequestLimits(
            max_rows=args.max_rows,
            max_groups=args.max_prompts,
            max_points=args.max_points,
            max_output_pixels=args.max_output_mp * 1_000_000,
        ),
        fetch=fetch_policy(args),
        **fields,
    )


def exit_with_message(exc: Exception | str) -> None:
    """For command-line entry points: print the message (no traceback) and exit with status 2."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)
