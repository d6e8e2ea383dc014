"""FastInst pixel decoders (Table 5): C3, C4, C5 -> E3, E4, E5 (1/8, 1/16, 1/32, ``dim`` channels).

- ``fpn``: the official ``BaseFPN`` (:class:`TopDownFPN`): 1x1 laterals with GroupNorm and no
  activation, 3x3 output convs with GroupNorm + ReLU; top-down, the *output-conv result* of
  the coarser level is bilinearly upsampled and added to the next lateral
  (``E5 = out5(lat5(C5))``, ``E4 = out4(lat4(C4) + up(E5))``, ``E3 = out3(lat3(C3) + up(E4))``),
  so every output conv feeds E3. (A textbook FPN passes the pre-output sum down instead; then
  E5's output conv would only be used by an E5 query source.)
- ``ppm_fpn`` (default): the same with a pyramid pooling module (pool sizes 1, 2, 3, 6;
  ``dim/4`` = 64 channels per branch) on the C5 lateral: ``E5 = out5(PPM(lat5(C5)))``.
- ``transformer_encoder``: the PPM is replaced by a DETR Transformer encoder on the 1/32
  lateral (sinusoidal positions, post-norm, ``layers`` x [self-attention + FFN]), as the
  "Transformer encoder" pixel decoder of Mask2Former / MaskFormer.
- ``msdeformattn``: Mask2Former's pixel decoder: 1x1 input projections (+GroupNorm) of C3-C5,
  ``layers`` multi-scale deformable-attention encoder layers (Deformable DETR) over the
  three levels together, outputs split back into E3, E4, E5. Written in pure PyTorch with
  ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``).

The attention encoders use ``heads`` heads, FFN width ``ffn_dim`` (1024) and 6 layers by
default, Mask2Former's pixel-decoder settings (the FastInst paper gives no numbers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rtinst.models.necks import PPM, conv_norm_act
from rtinst.models.transformer import FFN, Attention, sine_position_embedding

LEVELS = ("E3", "E4", "E5")


class TopDownFPN(nn.Module):
    """FastInst's (Base/PPM-)FPN: C3, C4, C5 -> E3, E4, E5; ``top`` acts on the C5 lateral."""

    def __init__(self, in_channels: list[int], dim: int, top: nn.Module | None = None):
        super().__init__()
        self.laterals = nn.ModuleList(conv_norm_act(c, dim, 1, "GN") for c in in_channels)
        self.outputs = nn.ModuleList(conv_norm_act(dim, dim, 3, "GN", activation=True)
                                     for _ in in_channels)
        self.top = top if top is not None else nn.Identity()
        self.out_channels = dim

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        last = len(features) - 1
        y = self.outputs[last](self.top(self.laterals[last](features[last])))
        outs = [y]
        for i in range(last - 1, -1, -1):
            lat = self.laterals[i](features[i])
            y = self.outputs[i](lat + F.interpolate(y, size=lat.shape[-2:], mode="bilinear",
                                                    align_corners=False))
            outs.insert(0, y)
        return outs


class TransformerEncoderLayer(nn.Module):
    """DETR encoder layer, post-norm: x = LN(x + SA(x + pos)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, x))
        return self.norm2(x + self.ffn(x))


class TransformerEncoder(nn.Module):
    """A DETR Transformer encoder on a (B, C, H, W) map; returns the same shape."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(dim, heads, ffn_dim)
                                    for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pos = sine_position_embedding(h, w, c, x.device, x.dtype).flatten(1).T[None]
        tokens = x.flatten(2).transpose(1, 2)
        for layer in self.layers:
            tokens = layer(tokens, pos)
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Zhu et al., Deformable DETR, Eq. 3).

    Each query attends to ``points`` sampled locations per head and level around its
    reference point; offsets and weights (softmax over levels x points) are linear in the
    query. Sampling is bilinear via ``F.grid_sample``.
    """

    def __init__(self, dim: int, heads: int = 8, levels: int = 3, points: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start as a fixed pattern: head h looks in direction 2*pi*h/heads, point p at
        # distance p+1 (in cells of each level), so the heads cover a ring around the query.
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        direction = torch.stack([angle.cos(), angle.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True).values
        bias = direction[:, None, None, :].repeat(1, self.levels, self.points, 1)
        bias *= torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, value: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query (B, Lq, C); reference (Lq, 2) normalized (x, y) in [0, 1]; value (B, Lv, C)
        with the levels' flattened maps concatenated in ``shapes`` order."""
        b, lq, c = query.shape
        h, lv, p = self.heads, self.levels, self.points
        value = self.value_proj(value)
        offsets = self.sampling_offsets(query).view(b, lq, h, lv, p, 2)
        weights = self.attention_weights(query).view(b, lq, h, lv * p).softmax(-1)
        # Offsets are in cells of each level: normalize by that level's (W, H).
        norm = torch.tensor([[w_, h_] for h_, w_ in shapes], dtype=query.dtype, device=query.device)
        locations = (reference[None, :, None, None, None, :]
                     + offsets / norm[None, None, None, :, None, :])
        grids = 2 * locations - 1  # grid_sample's [-1, 1]
        sampled = []
        start = 0
        for level, (hl, wl) in enumerate(shapes):
            v = value[:, start:start + hl * wl].transpose(1, 2).reshape(b * h, c // h, hl, wl)
            start += hl * wl
            grid = grids[:, :, :, level].transpose(1, 2).reshape(b * h, lq, p, 2)
            sampled.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros",
                                         align_corners=False))  # (B*H, C/H, Lq, P)
        sampled = torch.cat(sampled, dim=-1)  # (B*H, C/H, Lq, Lv*P)
        weights = weights.transpose(1, 2).reshape(b * h, 1, lq, lv * p)
        out = (sampled * weights).sum(-1).view(b, c, lq).transpose(1, 2)
        return self.output_proj(out)


class MSDeformAttnEncoderLayer(nn.Module):
    """Deformable DETR encoder layer, post-norm: x = LN(x + MSDA(x + pos)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, levels: int = 3, points: int = 4):
        super().__init__()
        self.attn = MSDeformAttn(dim, heads, levels, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, pos, reference, shapes):
        x = self.norm1(x + self.attn(x + pos, reference, x, shapes))
        return self.norm2(x + self.ffn(x))


def _reference_points(shapes: list[tuple[int, int]], device, dtype) -> torch.Tensor:
    """Pixel centres of every level, normalized to [0, 1], concatenated: (sum HW, 2) as (x, y)."""
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid((torch.arange(h, device=device, dtype=dtype) + 0.5) / h,
                                (torch.arange(w, device=device, dtype=dtype) + 0.5) / w,
                                indexing="ij")
        refs.append(torch.stack([xs.flatten(), ys.flatten()], -1))
    return torch.cat(refs)


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's MSDeformAttn pixel decoder restricted to FastInst's three levels."""

    def __init__(self, in_channels: list[int], dim: int, heads: int, ffn_dim: int, layers: int,
                 points: int = 4):
        super().__init__()
        self.input_proj = nn.ModuleList(conv_norm_act(c, dim, 1, "GN") for c in in_channels)
        self.level_embed = nn.Parameter(torch.empty(len(in_channels), dim))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(MSDeformAttnEncoderLayer(dim, heads, ffn_dim, len(in_channels),
                                                             points) for _ in range(layers))
        self.out_channels = dim

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = [proj(f) for proj, f in zip(self.input_proj, features)]
        b, c = maps[0].shape[:2]
        shapes = [tuple(m.shape[-2:]) for m in maps]
        tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        pos = torch.cat([sine_position_embedding(h, w, c, tokens.device, tokens.dtype).flatten(1).T
                         + self.level_embed[i] for i, (h, w) in enumerate(shapes)])[None]
        reference = _reference_points(shapes, tokens.device, tokens.dtype)
        for layer in self.layers:
            tokens = layer(tokens, pos, reference, shapes)
        outs, start = [], 0
        for h, w in shapes:
            outs.append(tokens[:, start:start + h * w].transpose(1, 2).reshape(b, c, h, w))
            start += h * w
        return outs


def build_pixel_decoder(kind: str, in_channels: list[int], dim: int = 256, heads: int = 8,
                        ffn_dim: int = 1024, layers: int = 6) -> nn.Module:
    """Pixel decoder ``kind`` (fpn | ppm_fpn | transformer_encoder | msdeformattn):
    ``module([C3, C4, C5]) -> [E3, E4, E5]``, each with ``dim`` channels."""
    if kind == "fpn":
        return TopDownFPN(in_channels, dim)
    if kind == "ppm_fpn":
        return TopDownFPN(in_channels, dim, top=PPM(dim))
    if kind == "transformer_encoder":
        return TopDownFPN(in_channels, dim, top=TransformerEncoder(dim, heads, ffn_dim, layers))
    if kind == "msdeformattn":
        return MSDeformAttnPixelDecoder(in_channels, dim, heads, ffn_dim, layers)
    raise ValueError(f"unknown pixel decoder {kind!r}")
