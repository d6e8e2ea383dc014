"""FastInst's dual-path Transformer decoder layer, (masked) attention and positional embeddings.

One decoder layer (paper §3.4, post-norm, no dropout) holds two paths:

- pixel feature update: pixels cross-attend to the queries (no self-attention over the long
  pixel sequence), then an FFN;
- query update (Mask2Former): masked cross-attention to the pixels (a query only sees the
  pixels where its previous mask logit >= 0; auxiliary queries see everything), then query
  self-attention, then an FFN.

``order`` picks Table 3's variant: ``pixel_then_query`` (default), ``query_then_pixel``,
``pixel_only`` (single pixel-feature update) and ``query_only`` (single query update,
Mask2Former); a single-path layer builds only the modules of its path. Positional embeddings
are added to queries and keys of every attention (DETR).

Positional embeddings (§3.4, Table 7): :class:`LearnablePositionEmbedding` is a learnable
``dim x S x S`` grid (S = round(sqrt(N_a))), bilinearly resized to any feature size; it is
initialized N(0, 1) like an ``nn.Embedding`` (the official parameter is left uninitialized,
their issue #57). :func:`sine_position_embedding` is DETR's normalized 2D sinusoid.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ORDERS = ("pixel_then_query", "query_then_pixel", "pixel_only", "query_only")


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections and
    ``F.scaled_dot_product_attention``; ``allowed`` (B, Lq, Lk) bool, True = may attend."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim)
                                                                for _ in range(4))
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        mask = allowed[:, None] if allowed is not None else None
        out = F.scaled_dot_product_attention(self._split(self.q_proj(q)),
                                             self._split(self.k_proj(k)),
                                             self._split(self.v_proj(v)), attn_mask=mask)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class FFN(nn.Module):
    """Linear -> ReLU -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.relu(self.linear1(x)))


class DualPathDecoderLayer(nn.Module):
    """One FastInst decoder layer; ``forward`` returns the updated (queries, pixels)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, order: str = "pixel_then_query"):
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"unknown decoder order {order!r}; use one of {ORDERS}")
        self.order = order
        self.updates_pixels = order != "query_only"
        self.updates_queries = order != "pixel_only"
        if self.updates_pixels:
            self.pixel_cross_attn = Attention(dim, heads)
            self.pixel_norm1 = nn.LayerNorm(dim)
            self.pixel_ffn = FFN(dim, ffn_dim)
            self.pixel_norm2 = nn.LayerNorm(dim)
        if self.updates_queries:
            self.query_cross_attn = Attention(dim, heads)  # masked attention
            self.query_norm1 = nn.LayerNorm(dim)
            self.query_self_attn = Attention(dim, heads)
            self.query_norm2 = nn.LayerNorm(dim)
            self.query_ffn = FFN(dim, ffn_dim)
            self.query_norm3 = nn.LayerNorm(dim)

    def update_pixels(self, queries, pixels, query_pos, pixel_pos):
        x = self.pixel_cross_attn(pixels + pixel_pos, queries + query_pos, queries)
        pixels = self.pixel_norm1(pixels + x)
        return self.pixel_norm2(pixels + self.pixel_ffn(pixels))

    def update_queries(self, queries, pixels, query_pos, pixel_pos, allowed):
        x = self.query_cross_attn(queries + query_pos, pixels + pixel_pos, pixels, allowed)
        queries = self.query_norm1(queries + x)
        q = queries + query_pos
        queries = self.query_norm2(queries + self.query_self_attn(q, q, queries))
        return self.query_norm3(queries + self.query_ffn(queries))

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor, query_pos: torch.Tensor,
                pixel_pos: torch.Tensor, allowed: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, N, C), pixels (B, L, C), query_pos (B, N, C), pixel_pos (1, L, C),
        allowed (B, N, L) bool masked-attention mask (True = attend) or None."""
        if self.order == "query_then_pixel":
            queries = self.update_queries(queries, pixels, query_pos, pixel_pos, allowed)
            pixels = self.update_pixels(queries, pixels, query_pos, pixel_pos)
            return queries, pixels
        if self.updates_pixels:
            pixels = self.update_pixels(queries, pixels, query_pos, pixel_pos)
        if self.updates_queries:
            queries = self.update_queries(queries, pixels, query_pos, pixel_pos, allowed)
        return queries, pixels


class LearnablePositionEmbedding(nn.Module):
    """A learnable ``dim x S x S`` grid, bilinearly resized to the requested size."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, size, size))
        nn.init.normal_(self.weight)  # nn.Embedding's N(0, 1)

    def forward(self, h: int, w: int) -> torch.Tensor:
        """(dim, h, w)."""
        if (h, w) == tuple(self.weight.shape[-2:]):
            return self.weight
        return F.interpolate(self.weight[None], size=(h, w), mode="bilinear",
                             align_corners=False)[0]


def sine_position_embedding(h: int, w: int, dim: int, device=None,
                            dtype: torch.dtype = torch.float32,
                            temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2D sinusoid with coordinates normalized to (0, 2*pi]: (dim, h, w); the first
    dim/2 channels encode y, the rest x (interleaved sin/cos)."""
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = (torch.arange(1, h + 1, device=device, dtype=torch.float32) / (h + eps) * scale)
    x = (torch.arange(1, w + 1, device=device, dtype=torch.float32) / (w + eps) * scale)
    i = torch.arange(half, device=device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def encode(coord: torch.Tensor) -> torch.Tensor:  # (n,) -> (half, n)
        t = coord[:, None] / freq
        return torch.stack([t[:, 0::2].sin(), t[:, 1::2].cos()], dim=2).flatten(1).T

    pos_y = encode(y)[:, :, None].expand(half, h, w)
    pos_x = encode(x)[:, None, :].expand(half, h, w)
    pos = torch.cat([pos_y, pos_x], dim=0)
    if pos.shape[0] < dim:  # odd dim
        pos = torch.cat([pos, pos.new_zeros(dim - pos.shape[0], h, w)])
    return pos.to(dtype)


class PositionEmbedding(nn.Module):
    """``kind`` = learnable (S x S grid) or sinusoidal; ``forward(h, w) -> (dim, h, w)``."""

    def __init__(self, kind: str, dim: int, size: int):
        super().__init__()
        self.kind, self.dim = kind, dim
        if kind == "learnable":
            self.grid = LearnablePositionEmbedding(dim, size)
        elif kind != "sinusoidal":
            raise ValueError(f"unknown positional embedding {kind!r}")

    def forward(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        if self.kind == "learnable":
            return self.grid(h, w).to(like.dtype)
        return sine_position_embedding(h, w, self.dim, like.device, like.dtype)
