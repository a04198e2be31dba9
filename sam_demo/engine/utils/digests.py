"""Content digests of what a computation depends on: a module's weights and configuration.

`module_digest` names a checkpoint by what it holds, not by where it came from, so a hub id and a
local `save_pretrained` copy of the same weights get the same name, and a changed file another.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["module_digest"]


def module_digest(module: torch.nn.Module, *parts: str) -> str:
    """Hex blake2b (128 bits) of `parts` and every parameter and buffer of `module`: names, dtypes,
    shapes and bytes, in `state_dict` order. ~1 s per GB of weights (ViT-L's encoder: 1.2 GB)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(memoryview(tensor.view(torch.uint8).numpy()) if tensor.numel() else b"")
    return digest.hexdigest()
