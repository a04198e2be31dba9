"""How the engine is loaded: `EngineConfig`, the dtype names, and the random-weights marker.

Torch-free, so a process that only passes a config on (a command parsing its flags, a Serve
gateway) needs no torch. `loading.py` turns a config into a `SamEngine`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sam_demo.engine.utils.cache import DEFAULT_CACHE_BYTES
from sam_demo.engine.utils.images import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_STORE_BYTES", "DTYPE_NAMES", "EngineConfig", "RANDOM_WEIGHTS_ATTR"]

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # loading.DTYPES maps them to torch dtypes
RANDOM_WEIGHTS_ATTR = "sam_demo_random_weights"  # config.json marker of random-weight checkpoints
DEFAULT_STORE_BYTES = 2 << 30  # the embedding store on disk: ~500 ViT embeddings of 4 MiB (fp32)


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how the model is loaded and cached."""

    model: str | None = None  # None: $SAM_MODEL or facebook/sam-vit-large
    device: str | None = None  # None: cuda, then mps, then cpu
    dtype: str | None = None  # None: the fastest safe choice for the device (float32 with `exact`)
    exact: bool = False  # transformers' decoder and upscaler in float32: masks bit-equal to the reference
    cache_bytes: int = DEFAULT_CACHE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    encoder: str | None = None  # what runs the ViT: "torch", "openvino", or None (the plan's choice)
    encoder_cache: str | None = None  # where OpenVINO's converted encoders are kept (None: the default)
    embedding_store: str | None = None  # a folder for embeddings on disk, shared by processes (None: memory only)
    embedding_store_bytes: int = DEFAULT_STORE_BYTES  # its bound (0: no store)
