"""Official FastInst (detectron2, ``fastinst_R50_ppm-fpn_x{1,3}``) -> rtinst ``FastInst``.

Beyond renames:

- Packed ``nn.MultiheadAttention``: ``in_proj_weight`` / ``in_proj_bias`` are q; k; v
  stacked (3C rows); rtinst's attention has separate ``q_proj``, ``k_proj``, ``v_proj``.
- Pixel decoder: ``adapter_i`` / ``layer_i`` are numbered from 1 for res3..res5 (the
  official ``forward_features`` walks them in reverse): ``adapter_{i+1}`` -> lateral i,
  ``layer_{i+1}`` -> output conv i, each with its GroupNorm; ``ppm`` sits on the C5 lateral.
- ``meta_pos_embed`` (1, C, S, S) -> the learnable S x S grid (C, S, S).
- Decoder layer l: ``transformer_mask_*`` (the pixel path: pixels cross-attend to the
  queries, then FFN) and ``transformer_query_*`` (masked cross-attention, self-attention,
  FFN); each official sub-layer holds its own post-norm LayerNorm.
- Stage s heads: ``decoder_query_norm_layers.s``, ``class_embed_layers.s``,
  ``mask_embed_layers.s``, ``mask_features_layers.s``.
- ``criterion.empty_weight`` and ``sem_seg_head.predictor.criterion.empty_weight`` are the
  loss's no-object weights (a buffer, twice), not model weights: dropped.
- Class logits: K + 1 with no-object **last**, as rtinst. Input: RGB, ImageNet mean/std,
  padded after normalisation, as rtinst.
"""

from __future__ import annotations

import re

import torch

from rtinst.models.convert.common import Inferred, Rules, Source, State, count_indices, qkv_slice
from rtinst.models.convert.resnet import detectron2_rules, infer_backbone

P = "sem_seg_head.predictor."
PD = "sem_seg_head.pixel_decoder."
DROPPED = ("criterion.empty_weight", P + "criterion.empty_weight")
# rtinst decoder-layer attention -> (official layer list, attribute of its attention module)
ATTENTION = {
    "pixel_cross_attn": ("transformer_mask_cross_attention_layers", "multihead_attn"),
    "query_cross_attn": ("transformer_query_cross_attention_layers", "multihead_attn"),
    "query_self_attn": ("transformer_query_self_attention_layers", "self_attn"),
}
NORMS = {
    "pixel_norm1": "transformer_mask_cross_attention_layers",
    "pixel_norm2": "transformer_mask_ffn_layers",
    "query_norm1": "transformer_query_cross_attention_layers",
    "query_norm2": "transformer_query_self_attention_layers",
    "query_norm3": "transformer_query_ffn_layers",
}
FFNS = {"pixel_ffn": "transformer_mask_ffn_layers", "query_ffn": "transformer_query_ffn_layers"}
HEADS = {"norm": "decoder_query_norm_layers", "class_mlp": "class_embed_layers",
         "mask_mlp": "mask_embed_layers", "pixel_proj": "mask_features_layers"}


def _pos_grid(t: torch.Tensor, _: State) -> torch.Tensor:
    return t[0]


def rules(cfg) -> Rules:
    dim = cfg.hidden_dim
    r = detectron2_rules(Rules())
    r.add(r"pixel_decoder\.laterals\.(\d)\.0\.weight",
          lambda m: Source(f"{PD}adapter_{int(m.group(1)) + 1}.weight"))
    r.add(r"pixel_decoder\.laterals\.(\d)\.1\.(weight|bias)",
          lambda m: Source(f"{PD}adapter_{int(m.group(1)) + 1}.norm.{m.group(2)}"))
    r.add(r"pixel_decoder\.outputs\.(\d)\.0\.weight",
          lambda m: Source(f"{PD}layer_{int(m.group(1)) + 1}.weight"))
    r.add(r"pixel_decoder\.outputs\.(\d)\.1\.(weight|bias)",
          lambda m: Source(f"{PD}layer_{int(m.group(1)) + 1}.norm.{m.group(2)}"))
    r.add(r"pixel_decoder\.top\.(.+)", rf"{PD}ppm.\1")
    r.add(r"pos_embedding\.grid\.weight", P + "meta_pos_embed", _pos_grid, "(1, C, S, S) -> (C, S, S)")
    r.add(r"query_proposal\.conv\.(weight|bias)", P + r"query_proposal.conv_proposal_cls_logits.0.\1")
    r.add(r"query_proposal\.classifier\.(weight|bias)",
          P + r"query_proposal.conv_proposal_cls_logits.2.\1")
    r.add(r"aux_feat\.weight", P + "empty_query_features.weight")
    r.add(r"aux_pos\.weight", P + "empty_query_pos_embed.weight")

    def attention(m: re.Match) -> Source:
        layer, name, proj, kind = m.groups()
        official, attr = ATTENTION[name]
        base = f"{P}{official}.{layer}.{attr}."
        if proj == "out":
            return Source(f"{base}out_proj.{kind}")
        index = "qkv".index(proj)
        return Source(f"{base}in_proj_{kind}", qkv_slice(index, dim), f"{proj} rows of in_proj_{kind}")

    r.add(rf"layers\.(\d+)\.({'|'.join(ATTENTION)})\.(q|k|v|out)_proj\.(weight|bias)", attention)
    r.add(rf"layers\.(\d+)\.({'|'.join(NORMS)})\.(weight|bias)",
          lambda m: Source(f"{P}{NORMS[m.group(2)]}.{m.group(1)}.norm.{m.group(3)}"))
    r.add(rf"layers\.(\d+)\.({'|'.join(FFNS)})\.(linear[12])\.(weight|bias)",
          lambda m: Source(f"{P}{FFNS[m.group(2)]}.{m.group(1)}.{m.group(3)}.{m.group(4)}"))
    r.add(rf"heads\.(\d+)\.({'|'.join(HEADS)})\.(.+)",
          lambda m: Source(f"{P}{HEADS[m.group(2)]}.{m.group(1)}.{m.group(3)}"))
    return r


SIGNATURE = P


def dropped(key: str) -> bool:
    return key in DROPPED


def infer(state: State) -> list[Inferred]:
    out = infer_backbone(state, "backbone.", "res4")
    shape = {k: tuple(v.shape) for k, v in state.items()}
    if (s := shape.get(P + "class_embed_layers.0.layers.2.weight")):
        out.append(Inferred("num_classes", s[0] - 1, f"{s[0] - 1} classes (+ no-object)"))
    if (s := shape.get(P + "meta_pos_embed")):
        out.append(Inferred("hidden_dim", s[1], f"hidden dim {s[1]}"))
    layers = count_indices(state, rf"{re.escape(P)}transformer_query_ffn_layers\.(\d+)\..+")
    if layers or any(k.startswith(P + "decoder_query_norm_layers.") for k in state):
        noun = "decoder layer" if layers == 1 else "decoder layers"
        out.append(Inferred("decoder_layers", layers, f"{layers} {noun}"))
    if (s := shape.get(P + "transformer_query_ffn_layers.0.linear1.weight")):
        out.append(Inferred("ffn_dim", s[0], f"FFN width {s[0]}"))
    if (s := shape.get(P + "empty_query_features.weight")):
        out.append(Inferred("num_aux_queries", s[0], f"{s[0]} auxiliary queries"))
    out.append(Inferred("query_type", "ia_guided", "IA-guided queries"))
    out.append(Inferred("pixel_decoder", "ppm_fpn", "a PPM-FPN pixel decoder"))
    out.append(Inferred("dual_path", "pixel_then_query", "the dual-path decoder"))
    out.append(Inferred("pos_embedding", "learnable", "a learnable positional grid"))
    return out


def official_settings(cfg) -> list[str]:
    notes = []
    if cfg.num_heads != 8:
        notes.append("the official decoder has 8 attention heads (not in the weights): "
                     "-o model.num_heads=8")
    if cfg.num_ia_queries != 100:
        notes.append("the official models use 100 IA-guided queries: -o model.num_ia_queries=100")
    return notes
