"""SAM's prompt decoder with its prompt-independent work done once per image.

`SamModel.forward(image_embeddings=...)` redoes, on every click, work that depends only on the
image: the image-wide positional encoding, adding the "no mask" embedding to 4096 image tokens,
and in the first two-way attention layer the image-side projections (keys and values of the
token-to-image attention, queries of the image-to-token attention) over 4096 tokens.
`ImageDecoderCache` computes those once; `CachedDecoder.decode` runs the rest with the model's
own modules and attention function in the same order, so fp32 results equal `SamModel`'s.
With a lower `dtype` (bf16 on CPUs that compute it natively) the mask decoder runs on a copy of
its weights in that dtype; the prompt encoder stays fp32, since bf16 would move points by pixels.

Shapes follow transformers: tokens (1, B, T, 256) for B prompt groups; image tokens (B, 1, 4096, 256).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.sam.modeling_sam import SamAttention, eager_attention_forward


@dataclass(frozen=True)
class ImageDecoderCache:
    """Per-image decoder state (no mask input), laid out as the decoder that made it uses it.

    `CachedDecoder` keeps (1, 1, 4096, C) tensors; `FastDecoder` keeps per-head layouts.
    """

    keys: torch.Tensor  # image tokens + "no mask" embedding
    first_k: torch.Tensor  # layer 0, token->image attention: k_proj(keys + pe)
    first_v: torch.Tensor  # layer 0, token->image attention: v_proj(keys)
    first_q: torch.Tensor  # layer 0, image->token attention: q_proj(keys + pe)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.first_k, self.first_v, self.first_q))


class CachedDecoder:
    """Decode prompts against an `ImageDecoderCache` with a transformers `SamModel`'s weights.

    dtype: the mask decoder's compute dtype (default: the model's).
    """

    def __init__(self, model, dtype: torch.dtype | None = None):
        self.model = model
        self.dtype = dtype or model.mask_decoder.iou_token.weight.dtype
        self.mask_decoder = model.mask_decoder
        if self.dtype != self.mask_decoder.iou_token.weight.dtype:
            self.mask_decoder = copy.deepcopy(model.mask_decoder).to(self.dtype)
        self.transformer = self.mask_decoder.transformer
        self._attention = ALL_ATTENTION_FUNCTIONS.get_interface(
            model.mask_decoder.config._attn_implementation, eager_attention_forward
        )
        with torch.inference_mode():
            pe = model.get_image_wide_positional_embeddings()  # (1, 256, 64, 64), the same for every image
            no_mask = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        self.pe_tokens = pe.flatten(2).transpose(1, 2).unsqueeze(1).to(self.dtype)  # (1, 1, 4096, 256)
        self.no_mask = no_mask.to(self.dtype)
        self.embedding_hw = pe.shape[-2:]

    @torch.inference_mode()
    def prompt_embeddings(self, points=None, labels=None, boxes=None) -> torch.Tensor:
        """Sparse prompt embeddings (1, B, T, 256) in the decoder's dtype, from model-frame prompts."""
        sparse, _ = self.model.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=boxes, input_masks=None
        )
        return sparse.to(self.dtype)

    def _image_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """features (1, 256, 64, 64) -> image tokens + the "no mask" embedding, (1, 4096, 256), a transposed view."""
        return (features.to(self.dtype) + self.no_mask).flatten(2).transpose(1, 2)

    def _point_embeddings(self, sparse: torch.Tensor) -> torch.Tensor:
        """sparse (1, G, T', 256) -> the IoU and mask tokens followed by the prompt's, (1, G, T, 256)."""
        dec = self.mask_decoder
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        return torch.cat((output_tokens.expand(1, sparse.shape[1], -1, -1), sparse.to(self.dtype)), dim=2)

    @torch.inference_mode()
    def prepare(self, features: torch.Tensor) -> ImageDecoderCache:
        """features: (1, 256, 64, 64) image embedding -> the per-image decoder cache."""
        keys = self._image_tokens(features).unsqueeze(1)
        first = self.transformer.layers[0]
        keys_pe = keys + self.pe_tokens
        return ImageDecoderCache(
            keys=keys,
            first_k=first.cross_attn_token_to_image.k_proj(keys_pe),
            first_v=first.cross_attn_token_to_image.v_proj(keys),
            first_q=first.cross_attn_image_to_token.q_proj(keys_pe),
        )

    def _attend(
        self, module: SamAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """SamAttention.forward after its input projections (query/key/value already projected)."""
        point_batch = query.shape[1]
        heads = module.num_attention_heads
        out, _ = self._attention(
            module,
            module._separate_heads(query, heads),
            module._separate_heads(key, heads),
            module._separate_heads(value, heads),
            attention_mask=None,
            dropout=0.0,
            scaling=module.scaling,
            is_causal=module.is_causal,
        )
        return module.out_proj(module._recombine_heads(out, point_batch))

    @torch.inference_mode()
    def decode(
        self, cache: ImageDecoderCache, sparse: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """sparse: (1, B, T, 256) prompt embeddings -> low-res logits (1, B, C, 256, 256), IoU (1, B, C)."""
        groups = sparse.shape[1]
        point_embeddings = self._point_embeddings(sparse)

        def expand(t: torch.Tensor) -> torch.Tensor:
            return t.expand(groups, *t.shape[1:])

        queries, keys = point_embeddings, expand(cache.keys)
        for index, layer in enumerate(self.transformer.layers):
            # (1) self-attention of the tokens
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(query=queries, key=queries, value=queries)[0]
            else:
                query = queries + point_embeddings
                queries = queries + layer.self_attn(query=query, key=query, value=queries)[0]
            queries = layer.layer_norm1(queries)
            # (2) tokens attend to the image
            attn = layer.cross_attn_token_to_image
            q = attn.q_proj(queries + point_embeddings)
            if index == 0:
                k, v = expand(cache.first_k), expand(cache.first_v)
            else:
                k, v = attn.k_proj(keys + self.pe_tokens), attn.v_proj(keys)
            queries = layer.layer_norm2(queries + self._attend(attn, q, k, v))
            # (3) MLP on the tokens
            queries = layer.layer_norm3(queries + layer.mlp(queries))
            # (4) the image attends to the tokens
            attn = layer.cross_attn_image_to_token
            q = expand(cache.first_q) if index == 0 else attn.q_proj(keys + self.pe_tokens)
            token_keys = queries + point_embeddings
            keys = layer.layer_norm4(keys + self._attend(attn, q, attn.k_proj(token_keys), attn.v_proj(queries)))
        final = self.transformer.final_attn_token_to_image
        attn_out = self._attend(
            final, final.q_proj(queries + point_embeddings), final.k_proj(keys + self.pe_tokens), final.v_proj(keys)
        )
        tokens = self.transformer.layer_norm_final_attn(queries + attn_out)
        return self._heads(tokens, keys, groups, multimask_output)

    def _heads(self, tokens: torch.Tensor, keys: torch.Tensor, groups: int, multimask_output: bool):
        """Mask and IoU heads of SamMaskDecoder.forward (upscaling, hypernetworks, IoU MLP)."""
        dec = self.mask_decoder
        channels = keys.shape[-1]
        height, width = self.embedding_hw
        iou_token_out = tokens[:, :, 0, :]
        mask_tokens_out = tokens[:, :, 1 : (1 + dec.num_mask_tokens), :]
        image = keys.transpose(2, 3).reshape(groups, channels, height, width)
        upscaled = dec.activation(dec.upscale_layer_norm(dec.upscale_conv1(image)))
        upscaled = dec.activation(dec.upscale_conv2(upscaled))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, :, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=2
        )
        _, up_channels, up_h, up_w = upscaled.shape
        upscaled = upscaled.reshape(1, groups, up_channels, up_h * up_w)
        masks = (hyper_in @ upscaled).reshape(1, groups, -1, up_h, up_w)
        iou_pred = dec.iou_prediction_head(iou_token_out)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, :, selected].float(), iou_pred[:, :, selected].float()
