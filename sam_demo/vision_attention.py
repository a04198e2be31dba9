"""Memory-bounded attention for SAM's ViT: the relative-position bias is built a block of queries at a time.

transformers' `SamVisionSdpaAttention` materialises the decomposed relative-position bias for all
query/key pairs at once (heads x N x N: for a global layer of ViT-L at 1024 px, 16 x 4096 x 4096,
0.5-1 GiB) and passes it to SDPA as a mask. Each query row only needs its own bias row, so this
forward builds the bias and runs SDPA for `block` queries at a time: the same arithmetic per row,
a fraction of the peak memory.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

QUERY_BLOCK = 1024


def _forward(self, hidden_states: torch.Tensor, output_attentions=False):
    batch, height, width, _ = hidden_states.shape
    heads, tokens = self.num_attention_heads, height * width
    qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.reshape(3, batch * heads, tokens, -1).unbind(0)
    rel_h = self.get_rel_pos(height, height, self.rel_pos_h) if self.use_rel_pos else None
    rel_w = self.get_rel_pos(width, width, self.rel_pos_w) if self.use_rel_pos else None
    key = key.view(batch, heads, tokens, -1)
    value = value.view(batch, heads, tokens, -1)
    rows_per_block = max(1, QUERY_BLOCK // width)
    outputs = []
    for row in range(0, height, rows_per_block):
        rows = min(rows_per_block, height - row)
        q = query[:, row * width : (row + rows) * width]  # (B*heads, rows*W, C)
        bias = None
        if rel_h is not None:
            q_grid = q.reshape(batch * heads, rows, width, -1)
            bias_h = torch.einsum("bhwc,hkc->bhwk", q_grid, rel_h[row : row + rows])
            bias_w = torch.einsum("bhwc,wkc->bhwk", q_grid, rel_w)
            bias = (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(batch, heads, rows * width, tokens)
        q = q.reshape(batch, heads, rows * width, -1)
        outputs.append(F.scaled_dot_product_attention(q, key, value, attn_mask=bias))
    out = torch.cat(outputs, dim=2)
    out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return self.proj(out), None


def bound_attention_memory(vision_encoder) -> int:
    """Use the blocked forward in the global-attention layers of a SAM vision encoder; return how many."""
    count = 0
    for layer in vision_encoder.layers:
        if layer.window_size == 0:
            layer.attn.forward = types.MethodType(_forward, layer.attn)
            count += 1
    return count
