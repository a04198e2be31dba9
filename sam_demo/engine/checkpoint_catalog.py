"""SAM checkpoints this engine runs, and how much its image encoder costs: the page suggests a
smaller one where encoding is slow.

The prompt encoder and mask decoder are the same for every checkpoint; only the ViT differs, and
every image's input is 1024x1024, so an encode's time scales with the ViT's FLOPs on a machine.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["CATALOG", "Checkpoint", "encoder_tflop", "faster_checkpoints"]


@dataclass(frozen=True)
class Checkpoint:
    """A transformers `SamModel` checkpoint on the hub: its id, its parameters (millions), its fp32
    weights (MiB) and its image encoder's cost per image (TFLOP at 1024x1024, `encoder_tflop`)."""

    model: str
    params_m: float
    size_mib: int
    encode_tflop: float


CATALOG = (
    Checkpoint("facebook/sam-vit-huge", 641.1, 2446, 5.961),
    Checkpoint("facebook/sam-vit-large", 312.3, 1191, 2.986),
    Checkpoint("facebook/sam-vit-base", 93.7, 358, 0.972),
    Checkpoint("nielsr/slimsam-50-uniform", 28.0, 107, 0.307),
    Checkpoint("nielsr/slimsam-77-uniform", 9.7, 37, 0.093),
)


@functools.lru_cache(maxsize=8)
def _tflop(config_json: str) -> float:
    from transformers import SamVisionConfig, SamVisionModel

    config = SamVisionConfig.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = SamVisionModel(config).eval()
        pixels = torch.empty(1, config.num_channels, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixels)
    return counter.get_total_flops() / 1e12


def encoder_tflop(vision_config) -> float:
    """TFLOP of one encode by a ViT of this `SamVisionConfig`, counted by torch's FLOP counter on a
    weightless (meta) copy: a fraction of a second, no memory."""
    return _tflop(vision_config.to_json_string())


def faster_checkpoints(encode_tflop: float, speedup: float = 2.0) -> list[Checkpoint]:
    """The catalog's checkpoints whose encoder costs at most 1/speedup of `encode_tflop`, largest first."""
    return [c for c in CATALOG if c.encode_tflop * speedup <= encode_tflop]
