"""The fast float32 decoder's image tokens, kept factored: a per-image part plus a per-click low-rank part.

In SAM's two-way transformer a click changes the 4096 image tokens only through the image-to-token
attentions, whose output for token i is A_i M: its attention weights A_i over the H * T prompt
tokens and heads times M, the tokens' values through the output projection (H * T rows of 256).
Each layer then applies a layer norm, which per token is a scale (1 / std), a shift (its mean)
and the fixed affine map. So after layer l the image tokens are exactly

    keys_l,i = scale_i * X_l,i + coef_i @ basis

with X_l a fixed per-image array (the image tokens, centred and multiplied by the layer norms'
weights), `scale` (per token) and `coef` (per token, r columns) made from the click's attention
weights and layer-norm statistics, and `basis` (r rows of 256) from the click's values and the
layer norms' weights and biases. Each head's attention weights sum to 1 over the T tokens, so a
layer adds H (T - 1) + 1 rows, not H T (`_free_rows`); with the layer norms' rows, r is
H (T - 1) + 3 after the first layer and 2 H (T - 1) + 3 after the second (99 for a click, whose
T is 7 with SAM's 8 heads, against 115 with a row per head and token).

Every product of the image tokens with a fixed weight W is then X_l W (computed once per image,
`ImageProjections`) scaled per token, plus the low-rank coef @ (basis W): products over r columns
instead of 256. A layer norm's statistics come from the same parts: the squared norm of
scale * X + coef @ basis centred is scale^2 |X|^2 + 2 scale coef . (basis X) + coef (basis basis^T)
coef^T, where basis X needs only X's products with the output projections (also per image) and
the values. Per click that replaces the image side's products over 256 channels (~1.2 GFLOP for
one click on a 3:2 photo, the head's first convolution included) with ~0.5 GFLOP, and the image
tokens are never materialised.

Used in float32 only: the squared norms are sums of terms, fine in fp32 but not in bf16. SAM's
decoder has two layers; so does this.

Shapes: G prompt groups, H heads of c channels, T prompt tokens, N = 4096 image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FactoredImage", "HeadWeights", "ImageProjections", "ModelProjections", "per_head", "per_head_t"]


@dataclass(frozen=True)
class HeadWeights:
    """A linear layer's weight split per head: (H, c, C), for products with a few tokens."""

    weight: torch.Tensor
    bias: torch.Tensor  # (H, 1, c)

    @classmethod
    def of(cls, linear: torch.nn.Linear, heads: int) -> HeadWeights:
        out_features, in_features = linear.weight.shape
        weight = linear.weight.reshape(heads, out_features // heads, in_features).contiguous()
        return cls(weight, linear.bias.reshape(heads, 1, -1))


def per_head_t(x: torch.Tensor, heads: int) -> torch.Tensor:
    """A projected image (N, H * c) -> (H, c, N), contiguous."""
    return x.unflatten(-1, (heads, -1)).permute(1, 2, 0).contiguous()


def per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """A projected image (N, H * c) -> (H, N, c), contiguous."""
    return x.unflatten(-1, (heads, -1)).transpose(0, 1).contiguous()


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _per_head(u: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """u (G, H, T, a) times a per-head right (H, a, b) -> (G, H, T, b), one batched product per head."""
    groups, heads, tokens, _ = u.shape
    out = torch.bmm(u.transpose(0, 1).reshape(heads, groups * tokens, -1), right)
    return out.view(heads, groups, tokens, -1).transpose(0, 1)


@dataclass(frozen=True)
class ModelProjections:
    """What the factored decode needs of the model, per model (float32).

    Per attention (the second layer's two, the final one): the per-head weights (H, c, 256) and
    biases (H, 1, c) of the projections that read the image, and for the key / query ones the
    positional encoding through them, (H, c, N). Per layer: the image-to-token attention's output
    projection (256, H * c) and bias (256,), and layer_norm4's weight, bias and eps.
    """

    heads: int
    k1: tuple  # layer 1, token->image: k (weight, bias, pe (H, c, N))
    v1: tuple  # layer 1, token->image: v (weight, bias)
    q1: tuple  # layer 1, image->token: q (weight, bias, pe)
    kf: tuple  # final token->image: k (weight, bias, pe)
    vf: tuple  # final token->image: v (weight, bias)
    out: tuple  # per layer: image->token out_proj (weight (256, H * c), bias (256,))
    norms: tuple  # per layer: (weight, bias, eps) of layer_norm4
    conv1: tuple  # the upscaling head's first transposed convolution as a matmul: (256, 256), bias (256,)

    @classmethod
    @torch.inference_mode()
    def of(cls, transformer, pe_tokens: torch.Tensor, conv1: tuple) -> ModelProjections:
        """transformer: SamTwoWayTransformer (two layers); pe_tokens: (N, 256); conv1: (weight, bias)."""
        first, second = transformer.layers
        final = transformer.final_attn_token_to_image
        heads = final.num_attention_heads

        def weights(linear, with_pe: bool) -> tuple:
            split = HeadWeights.of(linear, heads)
            pe = (per_head_t(pe_tokens @ linear.weight.t(), heads),) if with_pe else ()
            return (split.weight, split.bias, *pe)

        t2i, i2t = second.cross_attn_token_to_image, second.cross_attn_image_to_token
        return cls(
            heads=heads,
            k1=weights(t2i.k_proj, True),
            v1=weights(t2i.v_proj, False),
            q1=weights(i2t.q_proj, True),
            kf=weights(final.k_proj, True),
            vf=weights(final.v_proj, False),
            out=tuple(
                (layer.cross_attn_image_to_token.out_proj.weight, layer.cross_attn_image_to_token.out_proj.bias)
                for layer in (first, second)
            ),
            norms=tuple(
                (layer.layer_norm4.weight, layer.layer_norm4.bias, layer.layer_norm4.eps) for layer in (first, second)
            ),
            conv1=conv1,
        )


@dataclass(frozen=True)
class ImageProjections:
    """Per image: the fixed parts X_1 (after the first layer norm) and X_2 (after the second) of the
    image tokens, through every weight that reads them (see the module docstring).

    x0_out / x1_out0 / x1_out1: X_0, gamma_0 X_1 and X_1 through the output projections (H, c, N),
    with their dots with those projections' biases (N,); x1_k, x1_q (H, c, N) and x1_v (H, N, c):
    X_1 through layer 1's projections; x2_k (H, c, N), x2_v (H, N, c), x2_conv (N, 256): X_2 through
    the final attention's and the upscaling head's.
    """

    x0_sq: torch.Tensor  # |X_0,i|^2 (N,)
    x0_out: torch.Tensor
    x0_out_b: torch.Tensor
    x1_mean: torch.Tensor  # mean of gamma_0 X_0,i, taken out of X_1 (N,)
    x1_sq: torch.Tensor
    x1_out0: torch.Tensor
    x1_out0_b: torch.Tensor
    x1_out0_sum: torch.Tensor  # sum of gamma_0 X_1,i (N,)
    x1_beta0: torch.Tensor  # X_1,i . beta_0 (N,)
    x1_out1: torch.Tensor
    x1_out1_b: torch.Tensor
    x1_k: torch.Tensor
    x1_v: torch.Tensor
    x1_q: torch.Tensor
    x2_k: torch.Tensor
    x2_v: torch.Tensor
    x2_conv: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in vars(self).values())

    @classmethod
    @torch.inference_mode()
    def of(cls, keys: torch.Tensor, model: ModelProjections) -> ImageProjections:
        """keys: (N, 256) the image tokens plus the "no mask" embedding, float32."""
        heads = model.heads
        (out0, bias0), (out1, bias1) = model.out
        (gamma0, beta0, _), (gamma1, _, _) = model.norms
        x0 = _centred(keys)
        scaled = gamma0 * x0
        x1_mean = scaled.mean(-1)
        x1 = scaled - x1_mean[:, None]
        x1_gamma = gamma0 * x1
        x2 = gamma1 * x1
        return cls(
            x0_sq=x0.square().sum(-1),
            x0_out=per_head_t(x0 @ out0, heads),
            x0_out_b=x0 @ bias0,
            x1_mean=x1_mean,
            x1_sq=x1.square().sum(-1),
            x1_out0=per_head_t(x1_gamma @ out0, heads),
            x1_out0_b=x1_gamma @ bias0,
            x1_out0_sum=x1_gamma.sum(-1),
            x1_beta0=x1 @ beta0,
            x1_out1=per_head_t(x1 @ out1, heads),
            x1_out1_b=x1 @ bias1,
            x1_k=per_head_t(x1 @ model.k1[0].flatten(0, 1).t(), heads),
            x1_v=per_head(x1 @ model.v1[0].flatten(0, 1).t(), heads),
            x1_q=per_head_t(x1 @ model.q1[0].flatten(0, 1).t(), heads),
            x2_k=per_head_t(x2 @ model.kf[0].flatten(0, 1).t(), heads),
            x2_v=per_head(x2 @ model.vf[0].flatten(0, 1).t(), heads),
            x2_conv=x2 @ model.conv1[0],
        )


def _values_dots(values: torch.Tensor, image_out: torch.Tensor, image_out_b: torch.Tensor) -> torch.Tensor:
    """The rows of M (values (G, H, T, c) through the output projection, its bias spread over the
    heads) dotted with per-image vectors x_i, given x through that projection (H, c, N) and x . bias
    (N,): (G, H * T, N)."""
    heads = values.shape[1]
    return (_per_head(values, image_out) + image_out_b / heads).flatten(1, 2)


@dataclass(frozen=True)
class FactoredImage:
    """The image tokens after a layer, keys_i = scale_i X_i + coef_i @ basis (see the module docstring).

    images: the image's parts; scale: (G, N); coef_t: (G, r, N), the coefficients laid out as
    attention weights are (a row per basis vector); basis: (G, r, 256).
    """

    images: ImageProjections
    scale: torch.Tensor
    coef_t: torch.Tensor
    basis: torch.Tensor

    def scores(self, u: torch.Tensor, projection: tuple, image: torch.Tensor) -> torch.Tensor:
        """Scaled per-head query vectors u (G, H, T, c) against the tokens + pe through `projection`
        (weight, bias, pe), given X through its weight `image` (H, c, N): (G, H, T, N)."""
        weight, bias, pe = projection
        groups, heads, tokens, _ = u.shape
        low_rank = torch.bmm((u @ weight).flatten(1, 2) @ self.basis.transpose(1, 2), self.coef_t)
        out = _per_head(u, image).mul_(self.scale[:, None, None, :]).add_(low_rank.view(groups, heads, tokens, -1))
        return out.add_(_per_head(u, pe)).add_((u * bias).sum(-1, keepdim=True))

    def pool(self, weights: torch.Tensor, projection: tuple, image: torch.Tensor) -> torch.Tensor:
        """Attention weights (G, H, T, N), each row summing to 1, over the tokens through
        `projection` (weight, bias), given X through its weight `image` (H, N, c): (G, H, T, c)."""
        weight, bias = projection[:2]
        groups, heads, tokens, _ = weights.shape
        direct = _per_head(weights * self.scale[:, None, None, :], image)
        mixed = torch.bmm(weights.flatten(1, 2), self.coef_t.transpose(1, 2))  # (G, H * T, r)
        low_rank = (mixed @ (self.basis @ weight.flatten(0, 1).t())).view(groups, heads, tokens, heads, -1)
        return direct + torch.diagonal(low_rank, dim1=1, dim2=3).permute(0, 3, 1, 2) + bias

    def conv1(self, model: ModelProjections, token_hw: tuple[int, int], side: int) -> torch.Tensor:
        """The upscaling head's first transposed convolution over the first token_hw = (rows, cols)
        of the side x side tokens (after the second layer): (G * rows * cols, 256), rows (g, i, j),
        columns (a, b, channel)."""
        weight, bias = model.conv1
        rows, cols = token_hw

        def crop(x: torch.Tensor, dim: int) -> torch.Tensor:  # N at dim -> rows * cols
            return x.unflatten(dim, (side, side))[(slice(None),) * dim + (slice(rows), slice(cols))].flatten(
                dim, dim + 1
            )

        direct = torch.addcmul(bias, crop(self.scale, 1)[..., None], crop(self.images.x2_conv, 0))
        out = torch.baddbmm(direct, crop(self.coef_t, 2).transpose(1, 2), self.basis @ weight)
        return out.flatten(0, 1)

    def __getitem__(self, groups: torch.Tensor | slice) -> FactoredImage:
        """These prompt groups' image tokens."""
        return FactoredImage(self.images, self.scale[groups], self.coef_t[groups], self.basis[groups])


def _inverse_std(squared_norm: torch.Tensor, eps: float, channels: int) -> torch.Tensor:
    return torch.rsqrt(squared_norm / channels + eps)


def _quadratic(coef_t: torch.Tensor, centred: torch.Tensor) -> torch.Tensor:
    """|coef_i @ centred|^2 per token from the basis' Gram matrix: coef_t (G, r, N), centred (G, r, C) -> (G, N)."""
    return (torch.bmm(centred @ centred.transpose(1, 2), coef_t) * coef_t).sum(1)


def _free_rows(attention: torch.Tensor, mixed: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """An image-to-token update A M with one row per head fewer.

    Each head's attention weights sum to 1 over its T tokens, so sum_t A_t M_t = M_T + sum_{t<T}
    A_t (M_t - M_T): each head's last token is its reference. Writes the free weights A_t, t < T,
    into `out` (G, H * (T - 1), N) and returns the rows (G, H * (T - 1) + 1, C): the differences
    M_t - M_T, then the heads' references summed, whose coefficient is 1.

    attention: (G, H, T, N); mixed: (G, H * T, C), the values through the output projection."""
    groups, heads, tokens, _ = attention.shape
    out.view(groups, heads, tokens - 1, -1).copy_(attention[:, :, :-1])
    rows = mixed.view(groups, heads, tokens, -1)
    reference = rows[:, :, -1:]
    return torch.cat([(rows[:, :, :-1] - reference).flatten(1, 2), reference.sum(1)], 1)


def after_first_layer(
    model: ModelProjections,
    images: ImageProjections,
    attention: torch.Tensor,
    values: torch.Tensor,
    mixed: torch.Tensor,
) -> FactoredImage:
    """The image tokens after layer 0 (its image-to-token attention and layer_norm4).

    attention: (G, H, T, N) that attention's weights (summing to 1 over T); values: (G, H, T, c)
    the tokens' values; mixed: (G, H * T, 256) the values through the output projection (+ bias / H).
    The basis: H (T - 1) + 1 rows of the update (`_free_rows`), then the mean's and beta's.
    """
    gamma, beta, eps = model.norms[0]
    groups, heads, tokens, count = attention.shape
    channels = mixed.shape[-1]
    rank = heads * (tokens - 1) + 1  # the update's rows
    coef_t = torch.empty(groups, rank + 2, count, dtype=mixed.dtype, device=mixed.device)
    centred = _centred(_free_rows(attention, mixed, coef_t[:, : rank - 1]))
    coef_t[:, rank - 1] = 1
    # |X_0 + A M - mean|^2 = |X_0|^2 + 2 A . (M X_0) + |coef @ (rows centred)|^2  (X_0 is centred)
    linear = (attention.flatten(1, 2) * _values_dots(values, images.x0_out, images.x0_out_b)).sum(1)
    inverse_std = _inverse_std(images.x0_sq + 2 * linear + _quadratic(coef_t[:, :rank], centred), eps, channels)
    # keys_1 = r (gamma X_0 + coef @ (gamma rows centred)) + beta, and gamma X_0 = X_1 + its mean: the
    # mean and beta become two more rows of the basis, a row of ones and beta
    coef_t[:, :rank] *= inverse_std[:, None]
    torch.mul(inverse_std, images.x1_mean, out=coef_t[:, rank])
    coef_t[:, rank + 1] = 1
    fixed = torch.stack([torch.ones_like(beta), beta]).expand(groups, 2, channels)
    return FactoredImage(images, inverse_std, coef_t, torch.cat([gamma * centred, fixed], 1))


def after_second_layer(
    model: ModelProjections,
    images: ImageProjections,
    keys: FactoredImage,
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    attention: torch.Tensor,
    values: torch.Tensor,
    mixed: torch.Tensor,
) -> FactoredImage:
    """The image tokens after layer 1, from `keys` (after layer 0, whose attention, values and mixed
    values were `first`) and layer 1's image-to-token attention, arguments as in `after_first_layer`.

    The rows after layer 0's norm, centred: its update's (coefficients r_0 times theirs), the ones
    row's (zero: dropped) and beta_0's (coefficient 1, so summed into the heads' references of this
    layer's update, also 1); then this layer's update's free rows. Then beta_1's."""
    gamma, beta, eps = model.norms[1]
    first_attention, first_values, first_mixed = first
    groups, heads, tokens, count = attention.shape
    channels = mixed.shape[-1]
    kept = keys.coef_t.shape[1] - 2  # layer 0's update rows; then the ones row and beta_0's
    free = heads * (tokens - 1)
    rank = kept + free + 1
    coef_t = torch.empty(groups, rank + 1, count, dtype=mixed.dtype, device=mixed.device)
    coef_t[:, :kept] = keys.coef_t[:, :kept]
    rows = _free_rows(attention, mixed, coef_t[:, kept : kept + free])
    rows[:, -1] += keys.basis[:, -1]  # beta_0
    coef_t[:, kept + free] = 1
    centred = _centred(torch.cat([keys.basis[:, :kept], rows], 1))
    # each row's dot with X_1 (centred, so the rows need not be), weighted by its coefficient: layer
    # 0's rows gamma_0 (M_0 - its mean) with coefficients r_0 A_0, the ones row (0), beta_0 with 1,
    # this layer's M_1 with A_1
    scale = keys.scale
    first_rows = _values_dots(first_values, images.x1_out0, images.x1_out0_b)
    first_rows -= first_mixed.mean(-1, keepdim=True) * images.x1_out0_sum
    linear = (
        scale * (first_attention.flatten(1, 2) * first_rows).sum(1)
        + images.x1_beta0
        + (attention.flatten(1, 2) * _values_dots(values, images.x1_out1, images.x1_out1_b)).sum(1)
    )
    quadratic = _quadratic(coef_t[:, :rank], centred)
    inverse_std = _inverse_std(scale.square() * images.x1_sq + 2 * scale * linear + quadratic, eps, channels)
    # keys_2 = r gamma_1 (r_0 X_1 + coef @ centred) + beta_1: beta_1 one more row, with coefficient 1
    coef_t[:, :rank] *= inverse_std[:, None]
    coef_t[:, -1] = 1
    return FactoredImage(
        images, inverse_std * scale, coef_t, torch.cat([gamma * centred, beta.expand(groups, 1, channels)], 1)
    )
