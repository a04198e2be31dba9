"""Load a SAM checkpoint (hub id or local `save_pretrained` folder) into a `SamEngine`."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import torch

from sam_demo.engine.config import DTYPE_NAMES, RANDOM_WEIGHTS_ATTR, EngineConfig
from sam_demo.engine.embedding_store import EmbeddingStore
from sam_demo.engine.modeling.openvino_encoder import OpenVinoEncoder, default_cache_dir, openvino_available
from sam_demo.engine.modeling.vision_attention import patch_vision_attention
from sam_demo.engine.plan import ExecutionPlan
from sam_demo.engine.sam_engine import EngineInfo, SamEngine
from sam_demo.engine.utils.digests import module_digest

log = logging.getLogger("sam_demo")

DEFAULT_MODEL = "facebook/sam-vit-large"
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do instead."""


def resolve_model(model: str | None) -> str:
    return model or os.environ.get("SAM_MODEL") or DEFAULT_MODEL


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU; use --device cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but this machine has no usable MPS; use --device cpu")
    return resolved


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | None, device: torch.device, exact: bool = False) -> torch.dtype:
    """The compute dtype asked for, else float32 for the exact mode, else the fastest safe one."""
    if exact and dtype is None:
        return torch.float32
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def load_engine(config: EngineConfig = EngineConfig()) -> SamEngine:
    """Load the model and processor; raise ModelLoadError with advice if that fails."""
    from transformers import SamModel, SamProcessor

    name = resolve_model(config.model)
    device = resolve_device(config.device)
    compute_dtype = resolve_dtype(config.dtype, device, config.exact)
    dtype_name = str(compute_dtype).removeprefix("torch.")
    openvino = openvino_available()
    ExecutionPlan.check_mode(dtype_name, config.exact, device.type, config.encoder, openvino)  # before the weights load
    if config.embedding_store:
        EmbeddingStore.check_directory(config.embedding_store)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    # A hub id is "name" or "org/name"; anything else (or an existing path) is a folder.
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise ModelLoadError(f"model folder {name!r} does not exist. {_advice()}")
    path = str(Path(name).expanduser()) if looks_local else name
    try:
        model, processor = _from_pretrained(path, SamModel, SamProcessor, local=looks_local)
    except ModelLoadError:
        raise
    except Exception as exc:  # the hub raises many types: OSError, HTTP, validation, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load SAM model {name!r}: {reason}. {_advice()}") from None
    sdpa = model.config._attn_implementation == "sdpa"
    plan = ExecutionPlan.choose(
        device.type, dtype_name, sdpa, config.exact, config.encoder, openvino, torch.get_num_threads()
    )
    # The ViT's identity, for the store's namespace and OpenVINO's cache: a digest of its weights as
    # loaded, before any cast; computed once (~1 s per GB), and only where one of them needs it.
    storing = bool(config.embedding_store) and config.embedding_store_bytes > 0
    digest = vit_digest(model.vision_encoder) if storing or plan.encoder == "openvino" else None
    model = model.to(device=device, dtype=DTYPES[plan.prompt_encoder]).eval()
    vit = None
    if plan.encoder == "openvino":
        try:
            vit = _openvino_encoder(model, plan, config.encoder_cache, digest)
        except Exception as exc:  # torch.export or the conversion failed for this model: torch runs it
            if config.encoder == "openvino":
                raise ModelLoadError(f"OpenVINO could not convert this model's image encoder: {exc}") from None
            log.warning("sam_demo: OpenVINO could not convert the image encoder (%s); torch runs it", exc)
            plan = replace(plan, encoder="torch", why=f"{plan.why}; OpenVINO could not convert this model's ViT")
    if vit is None:
        model.vision_encoder.to(DTYPES[plan.vit_weights])
        if plan.attention != "transformers":  # see vision_attention.py
            patch_vision_attention(model.vision_encoder, fast=plan.attention == "folded")
    info = EngineInfo(
        model=name,
        device=str(device),
        dtype=dtype_name,
        random_weights=bool(getattr(model.config, RANDOM_WEIGHTS_ATTR, False)),
    )
    how = "chosen automatically (pass dtype to override)" if config.dtype is None else "as asked"
    log.info("sam_demo: %s on %s, dtype %s %s; plan: %s", name, device, info.dtype, how, plan.describe())
    store = None
    if storing:
        namespace = store_namespace(_weights_digest(digest, processor), plan)
        store = EmbeddingStore(config.embedding_store, config.embedding_store_bytes, namespace)
        if store.enabled:
            log.info("sam_demo: embedding store at %s (%g GiB)", store.directory, config.embedding_store_bytes / 2**30)
    return SamEngine(model, processor, info, plan, config.cache_bytes, config.max_pixels, vit, store)


def store_namespace(weights_digest: str, plan: ExecutionPlan) -> str:
    """What an embedding depends on besides the image: the weights and the encoder's form on this
    kind of device (runtime, dtypes, attention). The decoder's mode is not in it: the exact and
    the fast mode share a float32 torch encoder's entries, which are the same bits."""
    return (
        f"weights={weights_digest};device={plan.device};encoder={plan.encoder};vit={plan.vit_weights}"
        f"/{plan.vit_compute}/{plan.attention};features={plan.prompt_encoder}"
    )


def vit_digest(vision_encoder) -> str:
    """The image encoder's weights and config as one hex digest (`utils.digests.module_digest`)."""
    return module_digest(vision_encoder, vision_encoder.config.to_json_string())


def _weights_digest(vit: str, processor) -> str:
    """The ViT's digest and the image processor's settings (the encode depends on nothing else of the
    checkpoint): a hub id and its save_pretrained copy agree."""
    return hashlib.blake2b(f"{vit}|{processor.image_processor.to_json_string()}".encode(), digest_size=16).hexdigest()


def _openvino_encoder(model, plan: ExecutionPlan, cache_dir: str | None, digest: str) -> OpenVinoEncoder:
    """The ViT converted for OpenVINO (or read from its cache); torch's copy of the weights is then
    dropped (the compiled model holds its own)."""
    precision = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}[plan.vit_compute]
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    encoder = OpenVinoEncoder(model.vision_encoder, cache, digest, precision, torch.get_num_threads())
    model.vision_encoder.to("meta")
    log.info("sam_demo: the image encoder runs on OpenVINO (%s, from %s)", precision, encoder.path.parent)
    return encoder


def _from_pretrained(path: str, model_cls, processor_cls, local: bool):
    """Load from a folder or the local hub cache; go online only if the hub's host resolves.

    Without this, an offline machine spends minutes in the hub client's retries.
    """
    if local:
        return model_cls.from_pretrained(path), processor_cls.from_pretrained(path)
    try:
        return (
            model_cls.from_pretrained(path, local_files_only=True),
            processor_cls.from_pretrained(path, local_files_only=True),
        )
    except Exception:
        pass  # not in the local cache: download
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(f"model {path!r} is not in the local cache and HF_HUB_OFFLINE is set. {_advice()}")
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise ModelLoadError(
            f"model {path!r} is not in the local cache and the hub ({host}) cannot be reached: {exc}. {_advice()}"
        ) from None
    return model_cls.from_pretrained(path), processor_cls.from_pretrained(path)


def _advice() -> str:
    return (
        "Without access to the Hugging Face hub, pass a local folder written by save_pretrained "
        "(--model /path/to/folder or SAM_MODEL=/path/to/folder); "
        "for a random-weight model to try the app: python -m sam_demo.checkpoints checkpoints/sam-tiny-random"
    )
