"""FastInst training losses (paper §3.6): L = L_IA-q + L_pred + L'_pred.

- Matching (per stage, per image, Hungarian via :func:`rtinst.models.matcher.hungarian_match`):
  ``cost = w_cls * (-p_cls) + w_mask * BCE + w_dice * dice + w_loc * 1[query outside GT]``
  (2 / 5 / 5 / 1000). Mask costs use ``num_points`` uniformly random points shared by every
  prediction and GT of the image (Mask2Former); the location cost needs IA-guided queries
  (their position on the source level) and is left out for other query types.
- L_pred, for every stage 0..D (deep supervision, stage 0 = the initial queries):
  class cross-entropy with no-object weight 0.1; mask BCE and dice (V-Net form, +1 smoothing)
  on ``num_points`` points per matched mask, picked by uncertainty (|logit| small) among
  ``oversample_ratio * num_points`` random ones, ``importance_sample_ratio`` of them, the rest
  uniform (PointRend / Mask2Former). BCE and dice are summed over masks and divided by the
  number of GT instances in the batch.
- L'_pred (GT-mask-guided learning): the same losses on the re-run stages 1..D, with the
  last stage's matching held fixed (no matching of their own).
- L_IA-q (weight 20): cross-entropy of the auxiliary class map over every position of the
  query-source level, no-object weight 1/T (T = positions; the paper) or 1
  (``ia_loss_no_object_weight="official"``: the released code), targets from a Hungarian match
  of positions to GT with ``w_cls * (-p_cls) + w_loc * 1[position outside GT]``
  (``ia_loss_location_cost=False`` drops the location term). ``ia_loss_matching=False``
  (Table 6f) uses per-pixel semantic targets instead (the class of the GT covering the
  position; no-object elsewhere) with uniform class weights.

A position or query location is "inside" a GT when the GT mask covers the centre pixel of
its cell on the source level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rtinst.models.losses import dice_loss, mean_num_instances
from rtinst.models.matcher import hungarian_match


def point_sample(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` (N, C, H, W) at ``points`` (N, P, 2) in [0, 1] (x, y):
    returns (N, C, P)."""
    grid = 2 * points[:, :, None] - 1
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False)[..., 0]


@torch.no_grad()
def uncertain_points(logits: torch.Tensor, num_points: int, oversample: float,
                     importance: float) -> torch.Tensor:
    """PointRend's training point selection on (N, 1, H, W) logits -> (N, num_points, 2)."""
    n = logits.shape[0]
    num_sampled = int(num_points * oversample)
    candidates = torch.rand(n, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits.float(), candidates)[:, 0].abs()
    num_uncertain = int(importance * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = candidates.gather(1, idx[..., None].expand(-1, -1, 2))
    rest = torch.rand(n, num_points - num_uncertain, 2, device=logits.device)
    return torch.cat([chosen, rest], 1)


def cell_centres_inside(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W) GT masks -> (T, h*w) bool: does each GT cover the centre pixel of each cell
    of an (h, w) grid laid over the (padded) input?"""
    t, hp, wp = masks.shape
    h, w = size
    ys = ((torch.arange(h, device=masks.device) + 0.5) * hp / h).long().clamp(max=hp - 1)
    xs = ((torch.arange(w, device=masks.device) + 0.5) * wp / w).long().clamp(max=wp - 1)
    return masks[:, ys][:, :, xs].reshape(t, h * w)


def _pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of each prediction (Q, P) against each target (T, P): (Q, T)."""
    p = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / p


def _pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = logits.sigmoid()
    num = 2 * probs @ targets.T
    den = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


class FastInstCriterion(nn.Module):
    """Matcher + losses; see the module docstring. Built from a ``FastInstConfig``."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        weight = torch.ones(cfg.num_classes + 1)
        weight[-1] = cfg.no_object_weight
        self.register_buffer("class_weight", weight, persistent=False)

    # ------------------------------------------------------------------ matching

    @torch.no_grad()
    def match(self, stage: dict, targets: list[dict], locations: torch.Tensor | None,
              source_size: tuple[int, int] | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Hungarian matching of one stage's predictions; returns per image (query, gt) ids.

        ``locations``: (B, N_a) flat indices of the IA-guided queries on the source level of
        size ``source_size`` (None: no location cost)."""
        cfg = self.cfg
        out = []
        for b, tgt in enumerate(targets):
            labels, masks = tgt["labels"], tgt["masks"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=labels.device)
                out.append((empty, empty.clone()))
                continue
            logits = stage["class_logits"][b].float()
            cost = -cfg.class_weight * logits.softmax(-1)[:, labels]
            mask_logits = stage["mask_logits"][b].float()
            points = torch.rand(1, cfg.num_points, 2, device=mask_logits.device)
            pred = point_sample(mask_logits[None], points)[0]  # (Q, P)
            gt = point_sample(masks[None].float(), points)[0]  # (T, P)
            cost = cost + cfg.mask_weight * _pairwise_bce(pred, gt)
            cost = cost + cfg.dice_weight * _pairwise_dice(pred, gt)
            if locations is not None:
                inside = cell_centres_inside(masks, source_size)  # (T, hs*ws)
                outside = ~inside[:, locations[b]].T  # (Q, T)
                cost = cost + cfg.location_weight * outside.float()
            out.append(hungarian_match(cost))
        return out

    # ------------------------------------------------------------------ losses

    def stage_losses(self, stage: dict, targets: list[dict], indices, num_masks: float) -> dict:
        cfg = self.cfg
        logits = stage["class_logits"].float()  # (B, Q, K+1)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        for b, (qi, ti) in enumerate(indices):
            target_classes[b, qi] = targets[b]["labels"][ti]
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.class_weight)

        pred = torch.cat([stage["mask_logits"][b, qi] for b, (qi, _) in enumerate(indices)])
        gt = torch.cat([targets[b]["masks"][ti] for b, (_, ti) in enumerate(indices)])
        if pred.shape[0] == 0:
            zero = stage["mask_logits"].sum() * 0.0
            loss_mask = loss_dice = zero
        else:
            pred = pred[:, None].float()
            points = uncertain_points(pred, cfg.num_points, cfg.oversample_ratio,
                                      cfg.importance_sample_ratio)
            point_logits = point_sample(pred, points)[:, 0]
            with torch.no_grad():
                point_labels = point_sample(gt[:, None].float(), points)[:, 0]
            loss_mask = F.binary_cross_entropy_with_logits(
                point_logits, point_labels, reduction="none").mean(1).sum() / num_masks
            loss_dice = dice_loss(point_logits, point_labels, num_masks, squared=False)
        return {"ce": cfg.class_weight * loss_ce, "mask": cfg.mask_weight * loss_mask,
                "dice": cfg.dice_weight * loss_dice}

    def proposal_loss(self, class_map: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        """L_IA-q on the (B, K+1, h, w) auxiliary class-map logits."""
        cfg = self.cfg
        b, k1, h, w = class_map.shape
        logits = class_map.float().flatten(2)  # (B, K+1, T)
        t = h * w
        target = torch.full((b, t), self.num_classes, dtype=torch.int64, device=logits.device)
        for i, tgt in enumerate(targets):
            labels = tgt["labels"]
            if labels.numel() == 0:
                continue
            inside = cell_centres_inside(tgt["masks"], (h, w))  # (T_gt, T)
            if cfg.ia_loss_matching:
                with torch.no_grad():
                    cost = -cfg.class_weight * logits[i].softmax(0)[labels].T  # (T, T_gt)
                    if cfg.ia_loss_location_cost:
                        cost = cost + cfg.location_weight * (~inside).T.float()
                    pos, gt = hungarian_match(cost)
                target[i, pos] = labels[gt]
            else:  # semantic targets; later (drawn on top) instances win overlaps
                for j in range(labels.numel()):
                    target[i, inside[j]] = labels[j]
        if cfg.ia_loss_matching and cfg.ia_loss_no_object_weight == "paper":
            weight = torch.ones(k1, device=logits.device)
            weight[-1] = 1.0 / t
            loss = F.cross_entropy(logits, target, weight)
        else:
            loss = F.cross_entropy(logits, target)
        return cfg.proposal_weight * loss

    def forward(self, outputs: dict, targets: list[dict], last_indices=None) -> dict:
        """``outputs``: ``stages`` (list of D+1 dicts with ``class_logits`` (B, N_a, K+1) and
        ``mask_logits`` (B, N_a, h, w)), ``locations`` / ``source_size`` (IA-guided only),
        ``class_map`` (B, K+1, hs, ws) or None, ``gt_stages`` (re-run stages 1..D) or None.
        ``last_indices``: the last stage's matching when already computed."""
        num_masks = mean_num_instances(sum(t["labels"].numel() for t in targets),
                                       outputs["stages"][0]["class_logits"].device)
        stages = outputs["stages"]
        locations, size = outputs.get("locations"), outputs.get("source_size")
        losses = {}
        for s, stage in enumerate(stages):
            if s == len(stages) - 1 and last_indices is not None:
                indices = last_indices
            else:
                indices = self.match(stage, targets, locations, size)
            if s == len(stages) - 1:
                last_indices = indices
            for name, value in self.stage_losses(stage, targets, indices, num_masks).items():
                losses[f"loss_{name}_{s}"] = value
        for s, stage in enumerate(outputs.get("gt_stages") or [], start=1):
            for name, value in self.stage_losses(stage, targets, last_indices, num_masks).items():
                losses[f"loss_gt_{name}_{s}"] = value
        if outputs.get("class_map") is not None:
            losses["loss_proposal"] = self.proposal_loss(outputs["class_map"], targets)
        return losses
