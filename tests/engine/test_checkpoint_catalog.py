"""The checkpoints the page suggests where encoding is slow: their sizes and encoder costs, counted."""

from __future__ import annotations

import pytest
import torch
from transformers import SamConfig, SamModel

from sam_demo.engine.checkpoint_catalog import CATALOG, encoder_tflop, faster_checkpoints

# Each catalog entry's vision config on the hub (hidden size, MLP size, layers, heads, global attention layers).
VISION = {
    "facebook/sam-vit-huge": dict(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]
    ),
    "facebook/sam-vit-large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23]
    ),
    "facebook/sam-vit-base": {},
    "nielsr/slimsam-50-uniform": dict(hidden_size=384, mlp_dim=1536),
    "nielsr/slimsam-77-uniform": dict(hidden_size=168, mlp_dim=696),
}


@pytest.mark.parametrize("entry", CATALOG, ids=lambda c: c.model)
def test_the_catalog_holds_each_checkpoints_counted_size_and_encoder_cost(entry):
    config = SamConfig(vision_config=VISION[entry.model])
    with torch.device("meta"):
        params = sum(p.numel() for p in SamModel(config).parameters())
    assert entry.params_m == pytest.approx(params / 1e6, abs=0.05)
    assert entry.size_mib == round(params * 4 / 2**20)
    assert entry.encode_tflop == pytest.approx(encoder_tflop(config.vision_config), abs=5e-4)


def test_faster_checkpoints_are_those_at_least_twice_as_cheap_largest_first():
    assert [c.model for c in faster_checkpoints(2.986)] == [
        "facebook/sam-vit-base",
        "nielsr/slimsam-50-uniform",
        "nielsr/slimsam-77-uniform",
    ]
    assert faster_checkpoints(0.1) == []
