"""SAM's mask decoder rearranged for speed: the same function, products taken in another order.

The fast mode's decoder, in every dtype (float32 included); bit-equality with transformers is the
exact mode's (`CachedDecoder`). Run in fp32 its logits equal `SamModel`'s to ~1e-5 (the tests
check this). What changes against `CachedDecoder`:

- *Few tokens, many pixels.* A click has ~7 prompt tokens against 4096 image tokens. Every
  attention between them is re-associated so that the per-head projections act on the tokens,
  never on the image: with u = q_h * scale,
  u (x W_k,h + b_k,h)^T = (u W_k,h) x^T + u . b_k,h, and softmax(.) (x W_v,h^T) = (softmax(.) x) W_v,h^T;
  for the image-to-token direction, out_proj(concat_h P_h v_h) = sum_h P_h (v_h W_o,h^T) + b_o.
  Per layer that is two (H*T, 256) x (256, 4096) products instead of four 4096 x 256 x 128
  projections, and the residual add rides in the last product (`baddbmm`). It pays while H*T is
  under the attention's internal width (T < 16: up to 9 points or a box and 7); an object of more
  points is decoded in the usual order.
- *Factored image tokens (float32).* After the first layer the image tokens are a per-image part
  scaled per token plus a low-rank per-click part (factored_image.py): the second layer, the final
  attention and the head's first convolution read the per-image part through products made once
  per image, and the click's part through ~2 H (T - 1) + 3 columns instead of 256. Not in bf16 (its
  layer-norm statistics are sums of terms) and not for objects of many points.
- *The final attention for the read tokens only.* Its queries attend to the image each alone, and
  the heads read only the IoU token and the returned masks' tokens: the prompt's tokens, and the
  mask tokens of the masks not returned (the single mask's with three, the three's with one), are
  left out of it.
- *Cached first layer, per-head layouts.* The first layer's image-side projections are cached
  per image as (heads, c, 4096) and (heads, 4096, c), so its attentions are plain batched
  matmuls with no copies.
- *Upscaling head channels-last.* Each 2x2 stride-2 transposed convolution is a matmul and
  its layer norm a plain `layer_norm`; only the returned masks' hypernetworks run. The 128x128
  map is put in row-major order once, so each row of 256 logits is one contiguous run.
- *Only the image's logits.* The upscaling head is local: the logits under the padding below or
  right of the resized image need only the padding's tokens, and nothing but a later mask input
  reads them. `decode` makes them only when asked (`token_hw`); a 3:2 photo's click then upscales
  43 of the 64 token rows.
- *Segment everything* (`candidates`): the IoU head reads only the tokens, so it runs first and
  the upscaling head only for prompts with a candidate over the IoU threshold, and only over the
  image tokens under the resized image.

Shapes: prompt tokens (G, T, 256) for G prompt groups; image tokens (G, 4096, 256).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sam_demo.engine.modeling.decoder import CachedDecoder, ImageDecoderCache
from sam_demo.engine.modeling.factored_image import (
    FactoredImage,
    HeadWeights,
    ImageProjections,
    ModelProjections,
    after_first_layer,
    after_second_layer,
    per_head,
    per_head_t,
)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(G, T, H * c) -> (G, H, T, c), a view."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(G, H, T, c) -> (G, T, H * c)."""
    return x.transpose(1, 2).flatten(2)


class FastDecoder(CachedDecoder):
    """`CachedDecoder`, re-associated for a few prompt tokens (see the module docstring)."""

    def __init__(self, model, dtype: torch.dtype | None = None):
        super().__init__(model, dtype)
        dec, transformer = self.mask_decoder, self.transformer
        self._pe = self.pe_tokens[0]  # (1, 4096, 256)
        with torch.inference_mode():
            # per-head projections of the image tokens; the first layer's come from the image's cache
            self._k, self._v, self._q, self._o = {}, {}, {}, {}
            for index, layer in enumerate(transformer.layers):
                attn = layer.cross_attn_image_to_token
                heads = attn.num_attention_heads
                if index > 0:
                    self._q[attn] = HeadWeights.of(attn.q_proj, heads)
                # out_proj (256, H * c) -> per head (H, c, 256); its bias spread over the H heads,
                # whose attention weights each sum to 1
                weight = attn.out_proj.weight.unflatten(1, (heads, -1)).permute(1, 2, 0).contiguous()
                self._o[attn] = (weight, attn.out_proj.bias / heads)
            for attn in [layer.cross_attn_token_to_image for layer in transformer.layers[1:]] + [
                transformer.final_attn_token_to_image
            ]:
                heads = attn.num_attention_heads
                self._k[attn] = HeadWeights.of(attn.k_proj, heads)
                value = HeadWeights.of(attn.v_proj, heads)
                self._v[attn] = (value.weight.transpose(1, 2), value.bias)  # (H, 256, c), (H, 1, c)
            # ConvTranspose2d(k=2, s=2) weights (in, out, 2, 2) -> (in, (a, b, out)), bias tiled to match;
            # the second one split by output row a into two (in, (b, out)) blocks
            conv1, conv2 = dec.upscale_conv1, dec.upscale_conv2
            first = (conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, -1).contiguous(), conv1.bias.repeat(4))
            second = [
                (
                    conv2.weight[:, :, a].permute(0, 2, 1).reshape(conv2.in_channels, -1).contiguous(),
                    conv2.bias.repeat(2),
                )
                for a in range(2)
            ]
            self._up = (first, second)
            # the mask tokens' hypernetwork MLPs stacked per layer: weight (M, in, out), bias (M, 1, out)
            mlps = dec.output_hypernetworks_mlps
            self._hyper = [
                (
                    torch.stack([linear.weight.t() for linear in linears]),
                    torch.stack([linear.bias[None] for linear in linears]),
                )
                for linears in zip(*[[mlp.proj_in, *mlp.layers, mlp.proj_out] for mlp in mlps])
            ]
            # float32: the image tokens kept factored (factored_image.py); SAM's decoder has two layers
            self._projections = (
                ModelProjections.of(transformer, self._pe[0], first)
                if self.dtype == torch.float32 and len(transformer.layers) == 2
                else None
            )

    @torch.inference_mode()
    def prepare(self, features: torch.Tensor) -> ImageDecoderCache:
        """features (1, 256, 64, 64) -> cache with keys (1, 4096, 256) and the first layer's
        projections per head: first_k, first_q (H, c, 4096), first_v (H, 4096, c)."""
        keys = self._image_tokens(features).contiguous()
        keys_pe = keys + self._pe
        first = self.transformer.layers[0]
        to_image, to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        heads = to_image.num_attention_heads
        return ImageDecoderCache(
            keys=keys,
            first_k=per_head_t(to_image.k_proj(keys_pe)[0], heads),
            first_v=per_head(to_image.v_proj(keys)[0], heads),
            first_q=per_head_t(to_token.q_proj(keys_pe)[0], to_token.num_attention_heads),
        )

    @property
    def factored(self) -> bool:
        """Whether this decoder keeps the image tokens factored (float32): then `decode` wants the
        image's `project`."""
        return self._projections is not None

    def project(self, cache: ImageDecoderCache) -> ImageProjections:
        """The image's parts of the factored tokens (float32): ~20 MB and ~2.7 GFLOP per image, so
        the engine keeps them for the last images decoded only."""
        return ImageProjections.of(cache.keys[0], self._projections)

    @staticmethod
    def _image_scores(u: torch.Tensor, keys_pe: torch.Tensor, weights: HeadWeights) -> torch.Tensor:
        """Scores of scaled per-head token vectors u (G, H, T, c) against linear(keys_pe), the image
        tokens (G, 4096, 256) projected by per-head `weights`, re-associated. -> (G, H, T, 4096)."""
        groups, heads, tokens, _ = u.shape
        left = (u @ weights.weight).flatten(1, 2)  # (G, H * T, 256)
        constant = (u * weights.bias).sum(-1).reshape(groups, heads * tokens, 1)
        return torch.baddbmm(constant, left, keys_pe.transpose(1, 2)).unflatten(1, (heads, tokens))

    @staticmethod
    def _few_tokens(attn, tokens: int) -> bool:
        """Whether re-associating pays: its two products per attention are (H * T, 256) x (256, 4096)
        against the image projections' 4096 x 256 x internal_dim each, so it wins while H * T is
        under internal_dim (T < 16 for SAM: a box and up to 9 points). An object of more points is
        decoded in the usual order, its image side projected."""
        return attn.num_attention_heads * tokens < attn.internal_dim

    def _token_to_image(self, attn, queries_pe, keys, keys_pe, cache: ImageDecoderCache | None):
        """Tokens attend to the image: (G, T, 256) -> (G, T, 256). `cache` for the first layer."""
        heads = attn.num_attention_heads
        u = _split_heads(attn.q_proj(queries_pe), heads) * attn.scaling
        if cache is not None:
            weights = torch.softmax(u @ cache.first_k, dim=-1)
            out = weights @ cache.first_v  # (G, H, T, c)
        elif not self._few_tokens(attn, u.shape[2]):
            key_t = _split_heads(attn.k_proj(keys_pe), heads).transpose(2, 3)  # (G, H, c, 4096)
            weights = torch.softmax(u @ key_t, dim=-1)
            out = weights @ _split_heads(attn.v_proj(keys), heads)
        else:
            weights = torch.softmax(self._image_scores(u, keys_pe, self._k[attn]), dim=-1)
            value_t, value_bias = self._v[attn]
            pooled = torch.bmm(weights.flatten(1, 2), keys).unflatten(1, weights.shape[1:3])  # (G, H, T, 256)
            out = pooled @ value_t + value_bias
        return attn.out_proj(_merge_heads(out))

    def _image_to_token(self, attn, queries, queries_pe, keys, keys_pe, cache: ImageDecoderCache | None):
        """The image attends to the tokens; returns keys + the attention output (G, 4096, 256)."""
        u, values = self._token_side(attn, queries, queries_pe)
        if cache is None and not self._few_tokens(attn, u.shape[2]):
            image_q = _split_heads(attn.q_proj(keys_pe), attn.num_attention_heads)  # (G, H, 4096, c)
            weights = torch.softmax(image_q @ u.transpose(2, 3), dim=-1)  # (G, H, 4096, T), over the tokens
            return keys + attn.out_proj(_merge_heads(weights @ values))
        scores = u @ cache.first_q if cache is not None else self._image_scores(u, keys_pe, self._q[attn])
        weights = torch.softmax(scores, dim=2)  # over the tokens
        return torch.baddbmm(keys, weights.flatten(1, 2).transpose(1, 2), self._mixed(attn, values))

    @staticmethod
    def _token_side(attn, queries, queries_pe) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens' side of an image-to-token attention: scaled keys u and values, (G, H, T, c)."""
        heads = attn.num_attention_heads
        return _split_heads(attn.k_proj(queries_pe), heads) * attn.scaling, _split_heads(attn.v_proj(queries), heads)

    def _mixed(self, attn, values: torch.Tensor) -> torch.Tensor:
        """Values (G, H, T, c) through the output projection per head, its bias spread over the
        heads (each head's weights sum to 1): M, (G, H * T, 256)."""
        out_weight, out_bias = self._o[attn]
        return (values @ out_weight + out_bias).flatten(1, 2)

    @staticmethod
    def _self_attention(layer, queries: torch.Tensor, point_embeddings: torch.Tensor) -> torch.Tensor:
        """A layer's self-attention of the tokens and layer_norm1, (G, T, 256)."""
        if layer.skip_first_layer_pe:  # SamAttention takes (1, G, T, 256)
            queries = layer.self_attn(query=queries[None], key=queries[None], value=queries[None])[0][0]
        else:
            query = (queries + point_embeddings)[None]
            queries = queries + layer.self_attn(query=query, key=query, value=queries[None])[0][0]
        return layer.layer_norm1(queries)

    @staticmethod
    def _mlp(layer, queries: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """A layer's token-to-image residual, layer_norm2, MLP and layer_norm3, (G, T, 256)."""
        queries = layer.layer_norm2(queries + attn_out)
        return layer.layer_norm3(queries + layer.mlp(queries))

    @torch.inference_mode()
    def decode(
        self,
        cache: ImageDecoderCache,
        sparse: torch.Tensor,
        multimask_output: bool,
        token_hw: tuple[int, int] | None = None,
        projections: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """sparse: (1, G, T', 256) prompt embeddings -> low-res logits (1, G, C, 4 * rows, 4 * cols)
        over the first token_hw = (rows, cols) of the 64x64 image tokens (default all: 256x256),
        IoU (1, G, C). The upscaling head is local, so those logits are the full frame's.
        projections: the image's `project`, to keep its tokens factored (float32, few tokens)."""
        tokens, keys = self._transform(cache, sparse, multimask_output, projections)
        logits = self._mask_logits(tokens, keys, multimask_output, token_hw)
        return logits[None], self._iou(tokens, multimask_output)[None]

    @torch.inference_mode()
    def candidates(
        self,
        cache: ImageDecoderCache,
        sparse: torch.Tensor,
        min_iou: float,
        token_hw: tuple[int, int],
        projections: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Segment everything's decode: the three candidates of each group whose predicted IoU is over
        `min_iou`, their logits made only for them and only over the first `token_hw` (rows, cols)
        of the 64x64 image tokens (the upscaling head is local: those rows and columns of logits are
        the same as `decode`'s). The IoU head needs only the tokens, so a group with no candidate
        over `min_iou` costs no upscaling.

        sparse: (1, G, T', 256). Returns group (K,), candidate (K,), logits (K, 4 * rows, 4 * cols)
        float32, IoU (K,) float32, for the K candidates kept, in group order.
        """
        tokens, keys = self._transform(cache, sparse, True, projections)
        iou = self._iou(tokens, True)
        keep = iou > min_iou
        groups = keep.any(1).nonzero().flatten()
        if not len(groups):
            empty = torch.empty(0, dtype=torch.long, device=tokens.device)
            return empty, empty, torch.empty(0, 4 * token_hw[0], 4 * token_hw[1], device=tokens.device), iou[:0, 0]
        pairs = keep[groups].nonzero()  # (K, 2): index into `groups`, candidate
        if len(groups) < len(tokens):  # else no copy of the image tokens' parts (MBs a group)
            tokens, keys = tokens[groups], keys[groups]
        logits = self._mask_logits(tokens, keys, True, token_hw)[pairs[:, 0], pairs[:, 1]]
        group = groups[pairs[:, 0]]
        return group, pairs[:, 1], logits, iou[group, pairs[:, 1]]

    def _transform(
        self,
        cache: ImageDecoderCache,
        sparse: torch.Tensor,
        multimask_output: bool,
        projections: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | FactoredImage]:
        """The two-way transformer: sparse (1, G, T', 256) -> the tokens the heads read (G, 1 + C,
        256: the IoU token, then the C returned masks' tokens) and the image tokens, (G, 4096, 256)
        or, in float32 with few tokens, factored."""
        groups = sparse.shape[1]
        point_embeddings = self._point_embeddings(sparse)[0]
        layers = self.transformer.layers
        if projections is not None and self._few_tokens(layers[0].cross_attn_image_to_token, point_embeddings.shape[1]):
            return self._transform_factored(cache, projections, point_embeddings, multimask_output)
        queries, keys, keys_pe = point_embeddings, cache.keys.expand(groups, -1, -1), None
        for index, layer in enumerate(layers):
            first = cache if index == 0 else None
            if first is None:
                keys_pe = keys + self._pe
            queries = self._self_attention(layer, queries, point_embeddings)
            attn_out = self._token_to_image(
                layer.cross_attn_token_to_image, queries + point_embeddings, keys, keys_pe, first
            )
            queries = self._mlp(layer, queries, attn_out)
            keys = self._image_to_token(
                layer.cross_attn_image_to_token, queries, queries + point_embeddings, keys, keys_pe, first
            )
            keys = layer.layer_norm4(keys)
        keys_pe = keys + self._pe
        queries, queries_pe = self._read_tokens(queries, point_embeddings, multimask_output)
        final = self.transformer.final_attn_token_to_image
        attn_out = self._token_to_image(final, queries_pe, keys, keys_pe, None)
        return self.transformer.layer_norm_final_attn(queries + attn_out), keys

    def _read_tokens(
        self, queries: torch.Tensor, point_embeddings: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens that the heads read, (G, 1 + C, 256): the IoU token (first of all) and the C
        returned masks' tokens (after it), also with their positional embeddings. The final
        attention runs for those only: each query attends alone."""
        selected = self._selected(multimask_output)

        def read(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x[:, :1], x[:, 1 + selected.start : 1 + selected.stop]], 1)

        return read(queries), read(queries + point_embeddings)

    def _transform_factored(
        self,
        cache: ImageDecoderCache,
        images: ImageProjections,
        point_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, FactoredImage]:
        """`_transform` with the image tokens kept factored (factored_image.py), float32."""
        model = self._projections
        first, second = self.transformer.layers
        final = self.transformer.final_attn_token_to_image
        # layer 0: the tokens attend to the image through the cache, the image's update is factored
        queries = self._self_attention(first, point_embeddings, point_embeddings)
        attn_out = self._token_to_image(first.cross_attn_token_to_image, queries + point_embeddings, None, None, cache)
        queries = self._mlp(first, queries, attn_out)
        attn = first.cross_attn_image_to_token
        u, first_values = self._token_side(attn, queries, queries + point_embeddings)
        first_mixed = self._mixed(attn, first_values)
        first_weights = torch.softmax(u @ cache.first_q, dim=2)  # over the tokens
        keys = after_first_layer(model, images, first_weights, first_values, first_mixed)
        # layer 1
        queries = self._self_attention(second, queries, point_embeddings)
        attn = second.cross_attn_token_to_image
        attn_out = self._factored_token_to_image(
            attn, queries + point_embeddings, keys, (model.k1, images.x1_k), (model.v1, images.x1_v)
        )
        queries = self._mlp(second, queries, attn_out)
        attn = second.cross_attn_image_to_token
        u, values = self._token_side(attn, queries, queries + point_embeddings)
        weights = torch.softmax(keys.scores(u, model.q1, images.x1_q), dim=2)  # over the tokens
        keys = after_second_layer(
            model, images, keys, (first_weights, first_values, first_mixed), weights, values, self._mixed(attn, values)
        )
        queries, queries_pe = self._read_tokens(queries, point_embeddings, multimask_output)
        attn_out = self._factored_token_to_image(
            final, queries_pe, keys, (model.kf, images.x2_k), (model.vf, images.x2_v)
        )
        return self.transformer.layer_norm_final_attn(queries + attn_out), keys

    @staticmethod
    def _factored_token_to_image(attn, queries_pe, keys: FactoredImage, key, value) -> torch.Tensor:
        """`_token_to_image` against factored image tokens; key and value: (projection, the image's
        part through it). (G, T, 256) -> (G, T, 256)."""
        u = _split_heads(attn.q_proj(queries_pe), attn.num_attention_heads) * attn.scaling
        weights = torch.softmax(keys.scores(u, *key), dim=-1)
        return attn.out_proj(_merge_heads(keys.pool(weights, *value)))

    def _selected(self, multimask_output: bool) -> range:
        return range(1, self.mask_decoder.num_mask_tokens) if multimask_output else range(1)

    def _iou(self, tokens: torch.Tensor, multimask_output: bool) -> torch.Tensor:
        """The IoU head: the read tokens (G, 1 + C, 256) -> (G, C) float32."""
        selected = self._selected(multimask_output)
        return self.mask_decoder.iou_prediction_head(tokens[:, 0, :])[:, selected.start : selected.stop].float()

    def _mask_logits(
        self,
        tokens: torch.Tensor,
        keys: torch.Tensor | FactoredImage,
        multimask_output: bool,
        token_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """The mask head: the read tokens (G, 1 + C, 256), image tokens (G, 4096, 256) -> logits (G, C,
        4 * rows, 4 * cols) float32, over the first token_hw = (rows, cols) of the 64x64 tokens (default:
        all).

        On a CPU one group at a time: a group's head works on arrays of ~3 MB, which more groups
        would multiply, and arrays past glibc's mapping threshold are fresh pages at every call
        (two groups at once: 20 ms against 12 on one thread, 7,000 page faults a call; segment
        everything's 16x16 grid faulted 100,000-260,000 times, now 25,000)."""
        if tokens.device.type != "cpu" or len(tokens) == 1:
            return self._upscaled_logits(tokens, keys, multimask_output, token_hw)
        return torch.cat(
            [
                self._upscaled_logits(tokens[g : g + 1], keys[g : g + 1], multimask_output, token_hw)
                for g in range(len(tokens))
            ]
        )

    def _upscaled_logits(
        self,
        tokens: torch.Tensor,
        keys: torch.Tensor | FactoredImage,
        multimask_output: bool,
        token_hw: tuple[int, int] | None,
    ) -> torch.Tensor:
        """`_mask_logits` for all the groups at once."""
        dec = self.mask_decoder
        groups = tokens.shape[0]
        height, width = token_hw or self.embedding_hw
        (w1, b1), second = self._up
        if isinstance(keys, FactoredImage):
            x = keys.conv1(self._projections, (height, width), self.embedding_hw[0])
        else:
            if (height, width) != tuple(self.embedding_hw):
                keys = keys.unflatten(1, tuple(self.embedding_hw))[:, :height, :width]
            x = torch.addmm(b1, keys.reshape(groups * height * width, -1), w1)  # rows (g, i, j), cols (a, b, c)
        selected = self._selected(multimask_output)
        hyper = tokens[:, 1:, :].transpose(0, 1)  # the returned masks' tokens (M, G, 256)
        for index, (weight, bias) in enumerate(self._hyper):
            hyper = torch.baddbmm(bias[selected.start : selected.stop], hyper, weight[selected.start : selected.stop])
            hyper = torch.relu(hyper) if index < len(self._hyper) - 1 else hyper.transpose(0, 1)  # (G, M, 32)
        norm = dec.upscale_layer_norm
        x = x.view(-1, w1.shape[1] // 4)  # rows (g, i, j, a, b): pixel (2i + a, 2j + b) of the 128x128 map
        x = dec.activation(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = x.view(groups, height, width, 2, 2, -1).transpose(2, 3).reshape(groups * 4 * height * width, -1)
        # rows (g, I, J) of the 128x128 map; pixel (2I + a2, 2J + b2) of the 256x256 logits comes from
        # the second convolution's column block a2, whose columns are (b2, c): one run of 256 logits
        masks = torch.empty(groups, len(selected), 4 * height, 4 * width, dtype=torch.float32, device=tokens.device)
        rows = masks.view(groups, len(selected), 2 * height, 2, 4 * width)  # (g, m, I, a2, 2J + b2)
        for a2, (w2, b2) in enumerate(second):
            y = dec.activation(torch.addmm(b2, x, w2)).view(groups, -1, w2.shape[1] // 2)  # rows (I, J, b2)
            rows[:, :, :, a2].copy_(torch.bmm(hyper, y.transpose(1, 2)).view(rows[:, :, :, a2].shape))
        return masks
