"""FastInst (He et al., CVPR 2023): backbone -> pixel decoder -> query selection -> dual-path
Transformer decoder -> per-stage class / mask predictions.

Paper switches (``FastInstConfig``, Tables 2-7):

- ``query_type`` (Table 2): ``ia_guided`` (§3.3: a 3x3 conv + ReLU + 1x1 conv auxiliary head
  gives K+1 class logits on the source level; softmax; each position's best foreground class;
  positions that are an 8-neighbour local maximum of that class plane come first, then the
  top-N_a by foreground probability; their features and positional embeddings are gathered),
  ``zero`` (zero features, learned positional embeddings, DETR), ``learnable`` (learned
  features and positional embeddings, Mask2Former) or ``resize`` (E3, E4 and E5 bilinearly
  resized to a grid of N_a cells and averaged, positional embeddings resized alike; OSFormer).
  Only ``ia_guided`` builds the auxiliary head and has the IA loss / location cost.
- ``num_ia_queries`` N_a, ``num_aux_queries`` N_b (learned features + positional embeddings,
  never masked in masked attention, never predict), ``query_source`` E3 / E4 / E5.
- ``decoder_layers`` D (0 = predict from the initial queries directly), ``dual_path``
  (Table 3), ``pos_embedding`` learnable S x S grid (S = round(sqrt(N_a))) or sinusoidal.
- ``gt_mask_guidance`` (Table 4, training only): after the last layer, its Hungarian matching
  gives each matched query its GT mask (at 1/8) as attention mask (others: no mask); every
  layer l is run again on its own outputs with those masks (paper §3.5: "original output
  queries and pixel features of l-th layer ... as input to forward the l-th Transformer
  decoder layer again"), and stage l's heads predict from the result; supervised with the
  fixed matching (``loss_gt_*``).

Prediction (§3.4): each of the D+1 stages has its own LayerNorm, 3-layer class MLP (K+1),
3-layer mask-embedding MLP and Linear(C, C) on the pixel features; masks = embedding .
projected pixel features at 1/8. Masked attention in layer l uses stage l-1's masks (a query
attends where its logit >= 0; a query whose mask is empty attends everywhere).

Inference (eval mode): every query's mask is upsampled (bilinear) to the padded input (as
Mask2Former's inference); softmax, drop no-object, top-``max_detections`` over N_a x K (no
NMS); score = class probability x mean mask probability inside the binarized (> 0.5)
upsampled mask; ``mask_probs`` are returned at 1/8 (the engine upsamples them again for the
COCO results). In eval, a stage whose prediction nobody needs (pixel-only layers, whose
queries never attend to masks) is not computed unless ``extras=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rtinst.models.backbones import build_backbone
from rtinst.models.fastinst_loss import FastInstCriterion
from rtinst.models.pixel_decoders import LEVELS, build_pixel_decoder
from rtinst.models.transformer import DualPathDecoderLayer, PositionEmbedding


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class PredictionHead(nn.Module):
    """One stage's class and mask prediction from (queries, pixel features).

    ``project_pixels=False``: the caller passes already projected mask features (the
    single-query-update variant, whose pixel features never change, projects them once)."""

    def __init__(self, dim: int, num_classes: int, project_pixels: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.class_mlp = MLP(dim, dim, num_classes + 1)
        self.mask_mlp = MLP(dim, dim, dim)
        self.pixel_proj = nn.Linear(dim, dim) if project_pixels else nn.Identity()

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int]) -> dict:
        q = self.norm(queries)
        mask_embed = self.mask_mlp(q)  # (B, N_a, C)
        mask_features = self.pixel_proj(pixels)  # (B, L, C)
        masks = torch.bmm(mask_embed, mask_features.transpose(1, 2))
        return {"class_logits": self.class_mlp(q),
                "mask_logits": masks.view(*masks.shape[:2], *size)}


class QueryProposal(nn.Module):
    """Auxiliary classification head of §3.3: 3x3 conv + ReLU, 1x1 conv to K+1 logits."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.classifier = nn.Conv2d(dim, num_classes + 1, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.conv(x)))


def select_ia_queries(class_map: torch.Tensor, num_queries: int) -> torch.Tensor:
    """(B, K+1, h, w) logits (no-object last) -> (B, num_queries) flat positions.

    Local maxima of the foreground-argmax class plane (8-neighbourhood, ties kept) come first,
    ranked by foreground probability; then the other positions. With fewer than
    ``num_queries`` positions, positions repeat (tiny inputs only)."""
    b, _, h, w = class_map.shape
    fg = class_map.softmax(1)[:, :-1]
    score, cls = fg.max(1)  # (B, h, w)
    neighbourhood = F.max_pool2d(fg, 3, stride=1, padding=1).gather(1, cls[:, None])[:, 0]
    is_peak = score >= neighbourhood
    rank = torch.where(is_peak, score, score - 1.0).flatten(1)  # non-peaks after every peak
    k = min(num_queries, h * w)
    idx = rank.topk(k, dim=1).indices
    if k < num_queries:
        idx = idx.repeat(1, math.ceil(num_queries / k))[:, :num_queries]
    return idx


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, C, L), idx (B, N) -> (B, N, C)."""
    return x.gather(2, idx[:, None].expand(-1, x.shape[1], -1)).transpose(1, 2)


class FastInst(nn.Module):
    """``model(images, targets)``: losses in training, per-image predictions in eval."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        dim, k = cfg.hidden_dim, cfg.num_classes
        # Without decoder layers nothing attends: positional embeddings and auxiliary queries
        # (which only act as attention keys) would get no gradient, so they are not built.
        attends = cfg.decoder_layers > 0
        self.num_ia, self.num_aux = cfg.num_ia_queries, cfg.num_aux_queries if attends else 0
        self.backbone = build_backbone(cfg.backbone)
        in_channels = [self.backbone.out_channels[n] for n in ("res3", "res4", "res5")]
        self.pixel_decoder = build_pixel_decoder(cfg.pixel_decoder, in_channels, dim,
                                                 cfg.num_heads, cfg.ffn_dim,
                                                 cfg.pixel_decoder_layers)
        self.pos_embedding = (PositionEmbedding(cfg.pos_embedding, dim,
                                                max(1, round(math.sqrt(self.num_ia))))
                              if attends else None)
        if cfg.query_type == "ia_guided":
            self.query_proposal = QueryProposal(dim, k)
        if cfg.query_type == "learnable":
            self.query_feat = nn.Embedding(self.num_ia, dim)
        if cfg.query_type in ("zero", "learnable") and attends:
            self.query_pos = nn.Embedding(self.num_ia, dim)
        if self.num_aux:
            self.aux_feat = nn.Embedding(self.num_aux, dim)
            self.aux_pos = nn.Embedding(self.num_aux, dim)
        self.layers = nn.ModuleList(DualPathDecoderLayer(dim, cfg.num_heads, cfg.ffn_dim,
                                                         cfg.dual_path)
                                    for _ in range(cfg.decoder_layers))
        # Single query update (Table 3, Mask2Former): the pixel features never change, so, as
        # Mask2Former's mask features, they are projected once and shared by every stage.
        self.shared_mask_features = cfg.dual_path == "query_only"
        if self.shared_mask_features:
            self.mask_features = nn.Linear(dim, dim)
        self.heads = nn.ModuleList(PredictionHead(dim, k, not self.shared_mask_features)
                                   for _ in range(cfg.decoder_layers + 1))
        self.criterion = FastInstCriterion(cfg)

    # ------------------------------------------------------------------ queries

    def initial_queries(self, levels: dict[str, torch.Tensor]) -> dict:
        """IA-guided / zero / learnable / resize queries (B, N_a, C) + positional embeddings."""
        cfg = self.cfg
        src = levels[cfg.query_source]
        b, c, hs, ws = src.shape
        out = {"class_map": None, "locations": None, "source_size": (hs, ws)}
        if cfg.query_type == "ia_guided":
            class_map = self.query_proposal(src)
            idx = select_ia_queries(class_map, self.num_ia)
            pos = None
            if self.pos_embedding is not None:
                pos = _gather(self.pos_embedding(hs, ws, src).flatten(1)[None].expand(b, -1, -1),
                              idx)
            out.update(queries=_gather(src.flatten(2), idx), pos=pos, class_map=class_map,
                       locations=idx)
        elif cfg.query_type in ("zero", "learnable"):
            feat = (self.query_feat.weight if cfg.query_type == "learnable"
                    else src.new_zeros(self.num_ia, c))
            pos = (self.query_pos.weight[None].expand(b, -1, -1).to(src.dtype)
                   if self.pos_embedding is not None else None)
            out.update(queries=feat[None].expand(b, -1, -1).to(src.dtype), pos=pos)
        else:  # resize
            gh = max(1, round(math.sqrt(self.num_ia)))
            gw = math.ceil(self.num_ia / gh)
            resized = sum(F.interpolate(levels[n], size=(gh, gw), mode="bilinear",
                                        align_corners=False) for n in LEVELS) / len(LEVELS)
            pos = None
            if self.pos_embedding is not None:
                pos = self.pos_embedding(gh, gw, src).flatten(1)[:, :self.num_ia].T[None]
                pos = pos.expand(b, -1, -1)
            out.update(queries=resized.flatten(2)[:, :, :self.num_ia].transpose(1, 2), pos=pos)
        return out

    def _with_aux(self, queries: torch.Tensor,
                  pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.num_aux:
            return queries, pos
        b = queries.shape[0]
        aux = self.aux_feat.weight[None].expand(b, -1, -1).to(queries.dtype)
        aux_pos = self.aux_pos.weight[None].expand(b, -1, -1).to(queries.dtype)
        return torch.cat([queries, aux], 1), torch.cat([pos, aux_pos], 1)

    def _attention_mask(self, ia_allowed: torch.Tensor) -> torch.Tensor:
        """(B, N_a, L) bool for the IA queries -> (B, N, L): empty rows attend everywhere,
        auxiliary queries are never masked."""
        ia_allowed = ia_allowed | ~ia_allowed.any(-1, keepdim=True)
        if not self.num_aux:
            return ia_allowed
        b, _, l = ia_allowed.shape
        return torch.cat([ia_allowed, ia_allowed.new_ones(b, self.num_aux, l)], 1)

    # ------------------------------------------------------------------ forward

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None,
                extras: bool = False):
        outputs = self.forward_raw(images, extras)
        if self.training:
            if targets is None:
                raise ValueError("FastInst in training mode needs targets")
            return self.losses(outputs, targets, outputs["layer_outputs"], outputs["query_pos"],
                               outputs["pixel_pos"], outputs["pixel_size"])
        return self.inference(outputs, images.shape[-2:], extras)

    def forward_raw(self, images: torch.Tensor, extras: bool = False) -> dict:
        """Network outputs before post-processing: ``stages`` (per stage ``class_logits``
        (B, N_a, K+1) and ``mask_logits`` (B, N_a, H/8, W/8); None for a stage nobody needs),
        the query proposals and what the losses need (``rtinst.engine.export`` exports the
        last stage)."""
        feats = self.backbone(images)
        e3, e4, e5 = self.pixel_decoder([feats["res3"], feats["res4"], feats["res5"]])
        levels = {"E3": e3, "E4": e4, "E5": e5}
        init = self.initial_queries(levels)
        queries, query_pos = self._with_aux(init["queries"], init["pos"])
        b, c, h, w = e3.shape
        pixels = e3.flatten(2).transpose(1, 2)
        pixel_pos = (self.pos_embedding(h, w, e3).flatten(1).T[None]
                     if self.pos_embedding is not None else None)

        mask_features = self.mask_features(pixels) if self.shared_mask_features else None

        def predict(stage: int) -> dict | None:
            # Stage i is needed by the loss, the extras, the output (last stage) or as the
            # masked-attention mask of layer i+1; otherwise (pixel-only layers in eval) skip it.
            needed = (self.training or extras or stage == len(self.layers)
                      or self.layers[stage].updates_queries)
            if not needed:
                return None
            pix = mask_features if mask_features is not None else pixels
            return self.heads[stage](queries[:, :self.num_ia], pix, (h, w))

        stages = [predict(0)]
        layer_outputs = []
        for i, layer in enumerate(self.layers):
            allowed = None
            if layer.updates_queries:
                allowed = self._attention_mask(stages[-1]["mask_logits"].detach().flatten(2) >= 0)
            queries, pixels = layer(queries, pixels, query_pos, pixel_pos, allowed)
            layer_outputs.append((queries, pixels))
            stages.append(predict(i + 1))

        return {"stages": stages, "class_map": init["class_map"],
                "locations": init["locations"] if self.cfg.query_type == "ia_guided" else None,
                "source_size": init["source_size"], "layer_outputs": layer_outputs,
                "query_pos": query_pos, "pixel_pos": pixel_pos, "pixel_size": (h, w)}

    def losses(self, outputs: dict, targets: list[dict], layer_outputs, query_pos, pixel_pos,
               size: tuple[int, int]) -> dict:
        last = self.criterion.match(outputs["stages"][-1], targets, outputs["locations"],
                                    outputs["source_size"])
        if self.cfg.gt_mask_guidance and self.layers:
            allowed = self._gt_attention_mask(last, targets, size, query_pos.shape[0])
            gt_stages = []
            for i, (layer, (q, x)) in enumerate(zip(self.layers, layer_outputs)):
                q, x = layer(q, x, query_pos, pixel_pos, allowed if layer.updates_queries else None)
                feats = self.mask_features(x) if self.shared_mask_features else x
                gt_stages.append(self.heads[i + 1](q[:, :self.num_ia], feats, size))
            outputs["gt_stages"] = gt_stages
        return self.criterion(outputs, targets, last_indices=last)

    @torch.no_grad()
    def _gt_attention_mask(self, indices, targets, size, batch) -> torch.Tensor:
        """Matched queries attend inside their GT mask (covering >= half a 1/8 cell)."""
        device = targets[0]["labels"].device if targets else None
        allowed = torch.ones(batch, self.num_ia, size[0] * size[1], dtype=torch.bool, device=device)
        for b, (qi, ti) in enumerate(indices):
            if qi.numel():
                gt = targets[b]["masks"][ti][:, None].float()
                allowed[b, qi] = (F.adaptive_avg_pool2d(gt, size) >= 0.5).flatten(1)
        return self._attention_mask(allowed)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def inference(self, outputs: dict, input_size, extras: bool = False) -> list[dict]:
        last = outputs["stages"][-1]
        k = self.cfg.num_classes
        probs = last["class_logits"].softmax(-1)[..., :k]  # (B, N_a, K)
        topk = min(self.cfg.max_detections, probs.shape[1] * k)
        # As Mask2Former's inference: every query's mask upsampled to the padded input first;
        # a query's mask score (mean probability inside its binarized mask) serves all its
        # (query, class) detections.
        full = F.interpolate(last["mask_logits"], size=tuple(input_size), mode="bilinear",
                             align_corners=False).sigmoid().flatten(2)
        binary = (full > 0.5).to(full.dtype)
        mask_scores = (full * binary).sum(-1) / (binary.sum(-1) + 1e-6)  # (B, N_a)
        results = []
        for b in range(probs.shape[0]):
            scores, flat = probs[b].flatten().topk(topk)
            query = torch.div(flat, k, rounding_mode="floor")
            labels = flat % k
            mask_logits = last["mask_logits"][b, query]  # (n, h, w)
            result = {"scores": scores * mask_scores[b, query], "labels": labels,
                      "mask_probs": mask_logits.sigmoid()}
            if extras:
                result.update(self._extras(outputs, b, query, input_size))
            results.append(result)
        return results

    def _extras(self, outputs: dict, b: int, query: torch.Tensor, input_size) -> dict:
        kept = torch.zeros(self.num_ia, dtype=torch.bool, device=query.device)
        kept[query] = True
        extra = {"query_kept": kept, "query_index": query,
                 "layer_predictions": [{"class_logits": s["class_logits"][b],
                                        "mask_logits": s["mask_logits"][b]}
                                       for s in outputs["stages"]]}
        if outputs["class_map"] is not None:
            hs, ws = outputs["source_size"]
            idx = outputs["locations"][b]
            sy, sx = input_size[0] / hs, input_size[1] / ws
            extra["query_locations"] = torch.stack([((idx % ws).float() + 0.5) * sx,
                                                    ((idx // ws).float() + 0.5) * sy], -1)
            extra["class_map"] = outputs["class_map"][b].softmax(0)
        return extra
