"""SparseInst (Cheng et al., CVPR 2022): sparse instance activation maps, one-to-one predictions.

Children (named for ``rtinst bench breakdown``, SparseInst Table 8): ``backbone`` (C3-C5),
``encoder`` (:class:`~rtinst.models.necks.InstanceContextEncoder`, 1/8 output), ``decoder``
(instance + mask branches, masks at 1/4) and ``post`` (inference post-processing). The loss
(:class:`SparseInstCriterion`) is a plain attribute, not a module.

Paper switches (``SparseInstConfig``):

- Table 1: ``backbone`` (``resnet_d``, ``dcn_stages``).
- Table 2: ``encoder_ppm``, ``encoder_fusion``.
- Table 3: ``decoder_depth``, ``decoder_width``, ``coord_features`` (two channels of
  normalised absolute x, y in [-1, 1] concatenated to the encoder output: 256 -> 258 input
  channels), ``deform_last_conv`` (the last 3x3 conv of both branches becomes a modulated
  deformable conv, ``torchvision.ops.DeformConv2d`` + a zero-initialised offset/mask conv).
- Table 4: ``iam_conv`` (1x1 | 3x3 | 3x3-relu-3x3), ``iam_activation`` (sigmoid normalised by
  its spatial sum | softmax over spatial positions), ``iam_groups`` G: the last F_iam conv
  is a G-group conv to N*G maps; instance n's G features (one per group) are concatenated
  (D*G) and mixed by Linear(D*G, D*G) + ReLU (the paper's Group-IAM; Linear(1024, 1024) for
  D=256, G=4). G=1 has no such layer (plain IAM: heads on the 256-d features).
- Table 5: ``dice_weight``, ``bce_weight``, ``focal_mask_weight`` (any combination; 0 = off).
- Table 6: ``objectness`` off (no head, no loss) | no_rescore (head + loss, score = p) |
  rescore (score = sqrt(p * s)); ``objectness_loss`` ce (BCE on IoU targets) | l1.
- Table 7: ``instance_head=cross_attention``: 100 learned queries and one 4-head
  ``nn.MultiheadAttention`` over the instance-branch features replace F_iam (``iam_groups``
  is not used; the per-head attention maps are returned as the "IAMs").

Inference (``model(images)`` in eval mode, per image): ``p = sigmoid(cls)``, times
``sigmoid(obj)`` under a square root when ``objectness=rescore``; max over classes; keep
``> score_threshold``; with ``mask_rescore`` multiply by the mean mask probability inside
``prob > mask_threshold`` (the official code's extra step, computed here on the 1/4-res
grid); no NMS, no sorting (top-k by score only if more than ``max_detections`` survive,
impossible with N <= 100). ``mask_probs`` are the 1/4-res sigmoid masks of the padded input.
``model(images, None, extras=True)`` adds ``iam`` (N_kept, G, h, w) — (N_kept, h, w) for G=1,
(N_kept, heads, h, w) for cross attention — the activation maps at 1/8 (sigmoid/softmax
values; for cross attention the attention weights), and ``indices`` (which of the N
predictions were kept).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from rtinst.config_schema import SparseInstConfig
from rtinst.errors import UserError
from rtinst.models.backbones import build_backbone
from rtinst.models.losses import (bce_loss, dice_loss, mean_num_instances, paired_mask_iou,
                                  sigmoid_focal_loss)
from rtinst.models.matcher import sparseinst_match
from rtinst.models.necks import InstanceContextEncoder, init_msra, init_xavier

PRIOR_PROB = 0.01  # focal-loss prior of the class logits (and the initial IAM activation)
IOU_PRED_THRESHOLD = 0.4  # objectness targets: IoU(sigmoid(pred) >= 0.4, gt > 0.5)


def _prior_bias() -> float:
    return -math.log((1 - PRIOR_PROB) / PRIOR_PROB)


class DeformConv3x3(nn.Module):
    """Modulated deformable 3x3 conv (DCNv2) with its own offset/mask predictor (zero init:
    regular sampling grid, every tap weighted 0.5 at the start)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=True)
        self.offset_mask = nn.Conv2d(in_channels, 3 * 9, 3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        init_msra(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.offset_mask(x)
        return self.conv(x, om[:, :18], om[:, 18:].sigmoid())


def conv_stack(in_channels: int, width: int, depth: int, deform_last: bool = False) -> nn.Sequential:
    """``depth`` x (3x3 conv + ReLU); the last conv deformable when ``deform_last``."""
    layers: list[nn.Module] = []
    for i in range(depth):
        cin = in_channels if i == 0 else width
        if deform_last and i == depth - 1:
            conv: nn.Module = DeformConv3x3(cin, width)
        else:
            conv = nn.Conv2d(cin, width, 3, padding=1)
            init_msra(conv)
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def coordinate_features(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w): normalised absolute x and y of each position, in [-1, 1]."""
    b, _, h, w = x.shape
    if torch.compiler.is_exporting():
        # torch.export fixes linspace's step count to the example's size; this form keeps
        # h and w symbolic (an ONNX graph for any image size), within 1e-7 of linspace.
        ys = torch.arange(h, device=x.device, dtype=x.dtype) * (2.0 / (h - 1)) - 1
        xs = torch.arange(w, device=x.device, dtype=x.dtype) * (2.0 / (w - 1)) - 1
    else:
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy]).unsqueeze(0).expand(b, -1, -1, -1)


class _Heads(nn.Module):
    """Linear heads on the instance features: K class logits, mask kernel, objectness."""

    def __init__(self, dim: int, num_classes: int, kernel_dim: int, objectness: bool):
        super().__init__()
        self.cls_score = nn.Linear(dim, num_classes)
        self.mask_kernel = nn.Linear(dim, kernel_dim)
        self.objectness = nn.Linear(dim, 1) if objectness else None
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, _prior_bias())
        nn.init.normal_(self.mask_kernel.weight, std=0.01)
        nn.init.zeros_(self.mask_kernel.bias)

    def forward(self, z: torch.Tensor) -> dict[str, Optional[torch.Tensor]]:
        return {"logits": self.cls_score(z), "kernels": self.mask_kernel(z),
                "objectness": self.objectness(z).squeeze(-1) if self.objectness is not None else None}


def build_iam_conv(kind: str, width: int, num_maps: int, groups: int) -> nn.Module:
    """F_iam of Table 4; the (last) conv outputs ``num_maps`` = N*G maps in ``groups`` groups."""
    if kind == "1x1":
        last = nn.Conv2d(width, num_maps, 1, groups=groups)
        module: nn.Module = last
    elif kind == "3x3":
        last = nn.Conv2d(width, num_maps, 3, padding=1, groups=groups)
        module = last
    elif kind == "3x3-relu-3x3":
        first = nn.Conv2d(width, width, 3, padding=1)
        init_msra(first)
        last = nn.Conv2d(width, num_maps, 3, padding=1, groups=groups)
        module = nn.Sequential(first, nn.ReLU(inplace=True), last)
    else:
        raise UserError(f"model.iam_conv: unknown F_iam {kind!r}")
    nn.init.normal_(last.weight, std=0.01)
    nn.init.constant_(last.bias, _prior_bias())
    return module


class IAMInstanceBranch(nn.Module):
    """Instance branch with (Group-)IAM: convs -> F_iam -> normalised maps -> bmm aggregation."""

    def __init__(self, cfg: SparseInstConfig, in_channels: int):
        super().__init__()
        width, n, g = cfg.decoder_width, cfg.num_masks, cfg.iam_groups
        if width % g:
            raise UserError(f"model.iam_groups={g} must divide model.decoder_width={width} "
                            f"(a {g}-group conv splits the {width} input channels)")
        self.num_masks, self.groups, self.activation = n, g, cfg.iam_activation
        self.convs = conv_stack(in_channels, width, cfg.decoder_depth, cfg.deform_last_conv)
        self.iam_conv = build_iam_conv(cfg.iam_conv, width, n * g, g)
        dim = width * g
        if g > 1:
            fc = nn.Linear(dim, dim)
            init_xavier(fc)
            self.fc: nn.Module = nn.Sequential(fc, nn.ReLU(inplace=True))
        else:
            self.fc = nn.Identity()
        self.heads = _Heads(dim, cfg.num_classes, cfg.kernel_dim, cfg.objectness != "off")

    def forward(self, x: torch.Tensor, need_iam: bool = True) -> dict[str, Any]:
        f = self.convs(x)
        b, c, h, w = f.shape
        logits = self.iam_conv(f).flatten(2)  # (B, G*N, h*w), channel = g*N + n
        if self.activation == "sigmoid":
            act = logits.sigmoid()
            weights = act / act.sum(-1, keepdim=True).clamp(min=1e-6)
        else:
            weights = act = logits.softmax(-1)
        z = torch.bmm(weights, f.flatten(2).transpose(1, 2))  # (B, G*N, C)
        g, n = self.groups, self.num_masks
        z = z.view(b, g, n, c).transpose(1, 2).reshape(b, n, g * c)  # concat each instance's groups
        out = self.heads(self.fc(z))
        out["iam"] = act.view(b, g, n, h, w).transpose(1, 2) if need_iam else None  # (B, N, G, h, w)
        return out


class CrossAttentionInstanceBranch(nn.Module):
    """Table 7: one multi-head cross attention of N learned queries over the branch features."""

    def __init__(self, cfg: SparseInstConfig, in_channels: int):
        super().__init__()
        width, heads = cfg.decoder_width, cfg.cross_attention_heads
        if width % heads:
            raise UserError(f"model.cross_attention_heads={heads} must divide "
                            f"model.decoder_width={width}")
        self.num_masks, self.num_heads = cfg.num_masks, heads
        self.convs = conv_stack(in_channels, width, cfg.decoder_depth, cfg.deform_last_conv)
        self.queries = nn.Parameter(torch.randn(cfg.num_masks, width))
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.heads = _Heads(width, cfg.num_classes, cfg.kernel_dim, cfg.objectness != "off")

    def forward(self, x: torch.Tensor, need_iam: bool = True) -> dict[str, Any]:
        f = self.convs(x)
        b, c, h, w = f.shape
        tokens = f.flatten(2).transpose(1, 2)  # (B, h*w, C)
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)
        z, attn = self.attention(queries, tokens, tokens, need_weights=need_iam,
                                 average_attn_weights=False)
        out = self.heads(z)
        out["iam"] = (attn.view(b, self.num_heads, self.num_masks, h, w).transpose(1, 2)
                      if need_iam else None)  # (B, N, heads, h, w)
        return out


class MaskBranch(nn.Module):
    """Mask branch: convs -> 1x1 projection to the kernel dimension (mask features M)."""

    def __init__(self, cfg: SparseInstConfig, in_channels: int):
        super().__init__()
        self.convs = conv_stack(in_channels, cfg.decoder_width, cfg.decoder_depth,
                                cfg.deform_last_conv)
        self.projection = nn.Conv2d(cfg.decoder_width, cfg.kernel_dim, 1)
        init_msra(self.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.convs(x))


class SparseInstDecoder(nn.Module):
    """IAM-based decoder: 1/8 features (+ coords) -> class logits, objectness, 1/4 mask logits."""

    def __init__(self, cfg: SparseInstConfig, in_channels: int):
        super().__init__()
        self.coord_features = cfg.coord_features
        cin = in_channels + (2 if cfg.coord_features else 0)
        self.in_channels = cin
        branch = IAMInstanceBranch if cfg.instance_head == "iam" else CrossAttentionInstanceBranch
        self.inst_branch = branch(cfg, cin)
        self.mask_branch = MaskBranch(cfg, cin)

    def forward(self, features: torch.Tensor, need_iam: bool = False) -> dict[str, Any]:
        if self.coord_features:
            features = torch.cat([features, coordinate_features(features)], dim=1)
        out = self.inst_branch(features, need_iam)
        mask_features = self.mask_branch(features)  # (B, D, h, w)
        b, _, h, w = mask_features.shape
        kernels = out.pop("kernels")  # (B, N, D)
        masks = torch.bmm(kernels, mask_features.flatten(2)).view(b, -1, h, w)
        out["masks"] = F.interpolate(masks, scale_factor=2.0, mode="bilinear", align_corners=False)
        return out


class SparseInstPostprocess(nn.Module):
    """Scores, labels and mask probabilities per image (no NMS, no sorting)."""

    def __init__(self, cfg: SparseInstConfig):
        super().__init__()
        self.rescore = cfg.objectness == "rescore"
        self.mask_rescore = cfg.mask_rescore
        self.score_threshold = cfg.score_threshold
        self.mask_threshold = cfg.mask_threshold
        self.max_detections = cfg.max_detections

    def forward(self, out: dict[str, Any], extras: bool = False) -> list[dict[str, Any]]:
        prob = out["logits"].sigmoid()  # (B, N, K)
        if self.rescore:
            prob = torch.sqrt(prob * out["objectness"].sigmoid().unsqueeze(-1))
        scores, labels = prob.max(dim=-1)  # (B, N)
        mask_probs = out["masks"].sigmoid()  # (B, N, h, w)
        results = []
        for i in range(scores.shape[0]):
            keep = torch.nonzero(scores[i] > self.score_threshold).squeeze(1)
            s, m = scores[i, keep], mask_probs[i, keep]
            if self.mask_rescore:
                binary = (m > self.mask_threshold).float()
                s = s * (m * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
            if keep.numel() > self.max_detections:  # only when num_masks > max_detections
                top = s.topk(self.max_detections).indices
                keep, s, m = keep[top], s[top], m[top]
            res = {"scores": s, "labels": labels[i, keep], "mask_probs": m,
                   "mask_threshold": self.mask_threshold}
            if extras:
                res["indices"] = keep
                iam = out["iam"][i, keep]
                res["iam"] = iam[:, 0] if iam.shape[1] == 1 else iam
            results.append(res)
        return results


class SparseInstCriterion:
    """Bipartite-matching loss: focal classes, dice / BCE / focal masks, objectness on IoUs.

    Matching per image maximises ``p^(1-alpha) * DICE^alpha`` on 1/4-res masks (targets
    bilinearly downsampled to the prediction grid). Losses: sigmoid focal (0.25, 2) over all
    N x K logits / num matched instances (averaged over DDP processes:
    :func:`mean_num_instances`); dice (squared denominator) / num instances;
    pixel BCE and pixel focal as means over the matched masks' pixels; objectness on the
    matched predictions only, target IoU(sigmoid(pred) >= 0.4, gt > 0.5), BCE (ce) or L1 on
    the sigmoid. Terms with weight 0 are skipped.
    """

    # The assignment (Q, T scores -> rows, cols); an attribute so a diagnostic can fix it
    # (rtinst.diagnostics.oracle_iam assigns instance map k to object k).
    match = staticmethod(sparseinst_match)

    def __init__(self, cfg: SparseInstConfig):
        self.cfg = cfg

    def _targets_at(self, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if masks.shape[0] == 0:
            return masks.new_zeros((0, *size), dtype=torch.float32)
        return F.interpolate(masks[:, None].float(), size=size, mode="bilinear",
                             align_corners=False)[:, 0]

    def __call__(self, out: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        logits, pred_masks = out["logits"].float(), out["masks"].float()
        objectness = out["objectness"].float() if out["objectness"] is not None else None
        b, n, k = logits.shape
        size = tuple(pred_masks.shape[-2:])
        src_idx, tgt_masks, cls_target = [], [], torch.zeros_like(logits)
        with torch.no_grad():
            cls_prob, mask_prob = logits.sigmoid(), pred_masks.sigmoid()
        for i, t in enumerate(targets):
            tm = self._targets_at(t["masks"], size)
            rows, cols = self.match(cls_prob[i], mask_prob[i], t["labels"], tm, cfg.matcher_alpha)
            cls_target[i, rows, t["labels"][cols]] = 1.0
            src_idx.append(rows + i * n)
            tgt_masks.append(tm[cols])
        src_idx_t = torch.cat(src_idx)
        num_inst = mean_num_instances(src_idx_t.numel(), logits.device)
        src = pred_masks.flatten(0, 1)[src_idx_t]
        tgt = torch.cat(tgt_masks)
        losses = {"loss_cls": cfg.class_weight * sigmoid_focal_loss(logits, cls_target,
                                                                    normalizer=num_inst)}
        if cfg.dice_weight > 0:
            losses["loss_dice"] = cfg.dice_weight * dice_loss(src, tgt, num_inst)
        if cfg.bce_weight > 0:
            losses["loss_mask"] = cfg.bce_weight * bce_loss(src, tgt)
        if cfg.focal_mask_weight > 0:
            losses["loss_mask_focal"] = cfg.focal_mask_weight * sigmoid_focal_loss(
                src, tgt, reduction="mean")
        if objectness is not None and cfg.objectness_weight > 0:
            with torch.no_grad():
                iou = paired_mask_iou(src.sigmoid() >= IOU_PRED_THRESHOLD, tgt > 0.5)
            obj = objectness.flatten()[src_idx_t]
            if obj.numel() == 0:
                loss = objectness.sum() * 0.0
            elif cfg.objectness_loss == "ce":
                loss = F.binary_cross_entropy_with_logits(obj, iou)
            else:
                loss = (obj.sigmoid() - iou).abs().mean()
            losses["loss_objectness"] = cfg.objectness_weight * loss
        return losses


class SparseInst(nn.Module):
    """``model(images, targets)``: losses in training mode, per-image predictions in eval."""

    def __init__(self, cfg: SparseInstConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.encoder = InstanceContextEncoder(self.backbone.out_channels, cfg.encoder_channels,
                                              ppm=cfg.encoder_ppm, fusion=cfg.encoder_fusion)
        self.decoder = SparseInstDecoder(cfg, cfg.encoder_channels)
        self.post = SparseInstPostprocess(cfg)
        self.criterion = SparseInstCriterion(cfg)

    def forward_raw(self, images: torch.Tensor, need_iam: bool = False) -> dict[str, Any]:
        """Raw outputs: ``logits`` (B, N, K), ``objectness`` (B, N) or None, ``masks`` (B, N,
        H/4, W/4) logits, ``iam`` (B, N, G, H/8, W/8) or None."""
        return self.decoder(self.encoder(self.backbone(images)), need_iam=need_iam)

    def forward(self, images: torch.Tensor, targets: Optional[list[dict]] = None,
                extras: bool = False):
        if self.training:
            if targets is None:
                raise UserError("SparseInst in training mode needs targets")
            return self.criterion(self.forward_raw(images), targets)
        return self.post(self.forward_raw(images, need_iam=extras), extras=extras)
