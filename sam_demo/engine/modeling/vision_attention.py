"""Attention with decomposed relative-position bias for SAM's ViT, in two forms.

transformers' `SamVisionSdpaAttention` materialises the relative-position bias for all
query/key pairs (heads x N x N: for a global layer of ViT-L at 1024 px, 16 x 4096 x 4096,
0.5-1 GiB) and passes it to SDPA as a mask.

- `_blocked_forward` (exact): the same arithmetic a block of query rows at a time, so only a
  block's bias exists at once. Bit-identical, a fraction of the peak memory. Used in fp32 and on GPUs.
- `_folded_forward` (fast, CPU bf16): the bias goes into the score matmul itself. With
  bias_h[q, kh] = q . Rh[qh - kh] and bias_w[q, kw] = q . Rw[qw - kw], the scores are
  [q * scale, bias_h[q, :], bias_w[q, :]] . [k, onehot(kh), onehot(kw)], one bmm over a
  head dim of c + H + W, then softmax and a bmm with the values, a chunk of queries at a time.
  On CPU, PyTorch's fused SDPA kernel runs bf16 no faster than fp32 (~180 GFLOP/s here), while
  these bf16 bmms run near the matmul peak: the ViT-L encode drops by ~30%. Same function up to
  rounding: the scores are rounded to bf16 once before the softmax (as in transformers' eager
  attention under autocast); the tests compare it with the exact attention in fp32.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

QUERY_BLOCK = 1024  # query tokens per block in the exact form
SCORE_ELEMENTS = 1 << 21  # score-matrix elements per chunk in the fast form (4 MiB in bf16)


def _qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, W, C) -> query, key, value as (B * heads, H * W, C / heads)."""
    batch, height, width, _ = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(batch, height * width, 3, self.num_attention_heads, -1)
    return qkv.permute(2, 0, 3, 1, 4).reshape(3, batch * self.num_attention_heads, height * width, -1).unbind(0)


def _project_out(self, out: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(B, heads, H * W, c) attention output -> (B, H, W, C) after the output projection."""
    heads = self.num_attention_heads
    out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return self.proj(out)


def _rel_pos_tables(self, height: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative-position embeddings per (query, key) row pair (H, H, c) and column pair (W, W, c)."""
    return (
        self.get_rel_pos(height, height, self.rel_pos_h).to(dtype),
        self.get_rel_pos(width, width, self.rel_pos_w).to(dtype),
    )


def _rel_pos_terms(query_grid: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor):
    """Bias terms of queries (G, r, W, c) with their rows' rel_h (r, H, c): (G, r, W, H) and (G, r, W, W)."""
    return torch.einsum("bhwc,hkc->bhwk", query_grid, rel_h), torch.einsum("bhwc,wkc->bhwk", query_grid, rel_w)


def _blocked_forward(self, hidden_states: torch.Tensor, output_attentions=False):
    batch, height, width, _ = hidden_states.shape
    heads, tokens = self.num_attention_heads, height * width
    query, key, value = _qkv(self, hidden_states)
    key = key.view(batch, heads, tokens, -1)
    value = value.view(batch, heads, tokens, -1)
    if self.use_rel_pos:
        rel_h, rel_w = _rel_pos_tables(self, height, width, query.dtype)
    rows_per_block = max(1, QUERY_BLOCK // width)
    outputs = []
    for row in range(0, height, rows_per_block):
        rows = min(rows_per_block, height - row)
        q = query[:, row * width : (row + rows) * width]  # (B*heads, rows*W, C)
        bias = None
        if self.use_rel_pos:
            bias_h, bias_w = _rel_pos_terms(q.reshape(batch * heads, rows, width, -1), rel_h[row : row + rows], rel_w)
            bias = (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(batch, heads, rows * width, tokens)
        q = q.reshape(batch, heads, rows * width, -1)
        outputs.append(F.scaled_dot_product_attention(q, key, value, attn_mask=bias))
    return _project_out(self, torch.cat(outputs, dim=2), batch, height, width), None


def _folded_forward(self, hidden_states: torch.Tensor, output_attentions=False):
    batch, height, width, _ = hidden_states.shape
    tokens = height * width
    query, key, value = _qkv(self, hidden_states)
    groups = query.shape[0]  # batch * heads
    if self.use_rel_pos:  # keys gain one-hot columns for their row and column
        rel_h, rel_w = _rel_pos_tables(self, height, width, query.dtype)
        onehot_h = torch.eye(height, dtype=key.dtype).repeat_interleave(width, dim=0)  # (N, H)
        onehot_w = torch.eye(width, dtype=key.dtype).repeat(height, 1)  # (N, W)
        key = torch.cat([key, onehot_h.expand(groups, -1, -1), onehot_w.expand(groups, -1, -1)], dim=-1)
    key_t = key.transpose(1, 2)  # (G, c [+ H + W], N)
    out = torch.empty_like(value)
    rows_per_chunk = max(1, min(height, SCORE_ELEMENTS // (width * tokens)))
    groups_per_chunk = max(1, SCORE_ELEMENTS // (rows_per_chunk * width * tokens))
    for g in range(0, groups, groups_per_chunk):
        gs = slice(g, min(groups, g + groups_per_chunk))
        for row in range(0, height, rows_per_chunk):
            rows = slice(row, min(height, row + rows_per_chunk))
            q = query[gs, rows.start * width : rows.stop * width]  # (g, r*W, c)
            parts = [q * self.scale]
            if self.use_rel_pos:
                bias_h, bias_w = _rel_pos_terms(q.reshape(q.shape[0], -1, width, q.shape[-1]), rel_h[rows], rel_w)
                parts += [bias_h.flatten(1, 2), bias_w.flatten(1, 2)]
            probs = torch.softmax(torch.bmm(torch.cat(parts, dim=-1), key_t[gs]), dim=-1)
            torch.bmm(probs, value[gs], out=out[gs, rows.start * width : rows.stop * width])
    return _project_out(self, out, batch, height, width), None


def patch_vision_attention(vision_encoder, fast: bool) -> int:
    """Swap the attention forward of a SAM vision encoder's layers; return how many were patched.

    fast=False: the exact blocked form, in the global-attention layers (where the bias is big).
    fast=True: the folded form, in every layer (for CPU inference in bf16).
    """
    count = 0
    for layer in vision_encoder.layers:
        if fast or layer.window_size == 0:
            layer.attn.forward = types.MethodType(_folded_forward if fast else _blocked_forward, layer.attn)
            count += 1
    return count
