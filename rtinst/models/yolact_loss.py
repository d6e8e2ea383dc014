"""YOLACT training losses (Bolya et al., ICCV 2019, Sec. 3.3, 4, 5).

Matching (SSD style): IoU of every anchor with every GT box; an anchor is positive when its
best IoU is >= ``positive_iou`` (0.5), background when < ``negative_iou`` (0.4), neutral
(ignored) in between; in addition every GT box claims its best anchor as a positive, so
no GT goes unmatched. Crowd regions (``target["crowd_boxes"]``) are never targets; with
``crowd_iou_threshold`` < 1 a non-positive anchor lying more than that fraction inside a
crowd box (intersection / anchor area, the official ``jaccard(..., iscrowd=True)``) is
neutral, as the official ``match()``. The official configs set the threshold to 1 (off).

Terms (all normalized by the number of positive anchors in the batch, as SSD):

``loss_cls``   softmax cross-entropy over K+1 classes (0 = background) on the positives and
               the hardest negatives: OHEM keeps, per image, the ``ohem_negpos_ratio * P``
               negatives (3:1) with the largest background loss ``-log softmax_0``.
``loss_box``   smooth-L1 (beta 1) on the SSD-encoded box offsets of the positives.
``loss_mask``  BCE between the assembled mask ``sigmoid(P C^T)`` (prototype resolution) and
               the GT mask downsampled to it (bilinear, > 0.5), cropped by the GT box and
               divided by the GT box area (in prototype cells), i.e. the mean BCE inside the
               box; averaged over the positives (at most ``masks_to_train`` per image, drawn
               at random). fc-mask: BCE of the 16x16 box-relative mask against the GT mask
               resampled into the GT box (``roi_align``, >= 0.5), averaged.
``loss_sem``   semantic segmentation auxiliary loss: a 1x1 conv on P3 with K sigmoid
               outputs against the union of each class's GT masks downsampled to P3
               (bilinear, > 0.5); BCE summed over classes, averaged over pixels and images.

Weights (REFERENCE_FACTS, official code): conf 1, box 1.5, mask 6.125, semantic 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_area, box_iou, roi_align

from rtinst.config import ConfigError
from rtinst.models.anchors import cxcywh_to_xyxy, encode_boxes

POSITIVE, NEUTRAL, NEGATIVE = 1, -1, 0


@dataclass
class Matches:
    """Per-anchor matching of one image.

    state   (A,) int: 1 positive, 0 background, -1 neutral (ignored)
    gt      (A,) int64: index of the matched (best-IoU) GT box (meaningful for positives)
    labels  (A,) int64: classification target, 0 = background, c + 1 = class c; -1 neutral
    """

    state: Tensor
    gt: Tensor
    labels: Tensor


def crowd_overlap(anchors_xyxy: Tensor, crowd_boxes: Tensor) -> Tensor:
    """(A,) the largest fraction of each anchor's area inside any crowd box."""
    lt = torch.maximum(anchors_xyxy[:, None, :2], crowd_boxes[None, :, :2])
    rb = torch.minimum(anchors_xyxy[:, None, 2:], crowd_boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)  # (A, M)
    area = box_area(anchors_xyxy).clamp(min=1e-12)
    return (inter / area[:, None]).max(dim=1).values


def match_anchors(anchors_xyxy: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                  positive_iou: float = 0.5, negative_iou: float = 0.4,
                  crowd_boxes: Tensor | None = None, crowd_iou_threshold: float = 1.0) -> Matches:
    """Match anchors to GT boxes with the positive / negative IoU thresholds; crowd boxes
    make overlapping non-positive anchors neutral (see module doc)."""
    num_anchors = anchors_xyxy.shape[0]
    device = anchors_xyxy.device
    if gt_boxes.shape[0] == 0:
        zeros = torch.zeros(num_anchors, dtype=torch.int64, device=device)
        m = Matches(zeros.clone(), zeros.clone(), zeros.clone())
    else:
        m = _match_gt(anchors_xyxy, gt_boxes, gt_labels, positive_iou, negative_iou)
    if crowd_boxes is not None and crowd_boxes.shape[0] and crowd_iou_threshold < 1:
        over = crowd_overlap(anchors_xyxy, crowd_boxes.to(anchors_xyxy.dtype))
        neutral = (m.state != POSITIVE) & (over > crowd_iou_threshold)
        m.state[neutral] = NEUTRAL
        m.labels[neutral] = NEUTRAL
    return m


def _match_gt(anchors_xyxy: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
              positive_iou: float, negative_iou: float) -> Matches:
    num_anchors = anchors_xyxy.shape[0]
    device = anchors_xyxy.device
    iou = box_iou(anchors_xyxy, gt_boxes.to(anchors_xyxy.dtype))  # (A, N)
    best_iou, best_gt = iou.max(dim=1)
    # Every GT keeps its best anchor (forced positive). If two GTs pick the same anchor,
    # the later one wins, as an index_fill would.
    best_anchor = iou.argmax(dim=0)  # (N,)
    best_iou = best_iou.index_fill(0, best_anchor, 2.0)
    best_gt[best_anchor] = torch.arange(gt_boxes.shape[0], device=device)
    state = torch.full((num_anchors,), NEUTRAL, dtype=torch.int64, device=device)
    state[best_iou >= positive_iou] = POSITIVE
    state[best_iou < negative_iou] = NEGATIVE
    labels = torch.where(state == POSITIVE, gt_labels[best_gt] + 1, state)  # 0 bg, -1 neutral
    return Matches(state, best_gt, labels)


def ohem_negatives(cls_logits: Tensor, state: Tensor, ratio: float) -> Tensor:
    """Bool (A,): the ``ratio * num_positives`` background anchors with the largest
    background loss ``logsumexp(logits) - logits[:, 0]`` (hard negative mining)."""
    num_pos = int((state == POSITIVE).sum())
    negatives = state == NEGATIVE
    num_neg = min(int(round(ratio * num_pos)), int(negatives.sum()))
    selected = torch.zeros_like(negatives)
    if num_neg <= 0:
        return selected
    with torch.no_grad():
        bg_loss = torch.logsumexp(cls_logits.float(), dim=-1) - cls_logits[:, 0].float()
        bg_loss = bg_loss.masked_fill(~negatives, float("-inf"))
        idx = bg_loss.topk(num_neg).indices
    selected[idx] = True
    return selected


def crop_mask(masks: Tensor, boxes: Tensor) -> Tensor:
    """Zero every cell of ``masks`` (N, h, w) outside ``boxes`` (N, 4) given in grid cells.

    A cell ``(i, j)`` is kept when it overlaps the box: ``floor(x1) <= j < ceil(x2)`` and
    ``floor(y1) <= i < ceil(y2)`` (a non-degenerate box always keeps at least one cell).
    """
    return masks * crop_region(boxes, masks.shape[-2], masks.shape[-1]).to(masks.dtype)


def crop_region(boxes: Tensor, h: int, w: int) -> Tensor:
    """Bool (N, h, w): the cells of an ``h x w`` grid that overlap each box (grid units)."""
    x1, y1 = boxes[:, 0].floor(), boxes[:, 1].floor()
    x2, y2 = boxes[:, 2].ceil(), boxes[:, 3].ceil()
    cols = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
    in_x = (cols[None] >= x1[:, None]) & (cols[None] < x2[:, None])  # (N, w)
    in_y = (rows[None] >= y1[:, None]) & (rows[None] < y2[:, None])  # (N, h)
    return in_y[:, :, None] & in_x[:, None, :]


def downsample_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, H, W) bool -> (N, h, w) float in {0, 1}: bilinear resize, then > 0.5."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    m = F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)
    return (m[:, 0] > 0.5).float()


class YolactLoss:
    """Computes the weighted ``loss_*`` dict from the raw head outputs and the targets."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(
        self,
        cls_logits: Tensor,  # (B, A, K+1)
        box_deltas: Tensor,  # (B, A, 4)
        mask_out: Tensor,  # (B, A, k) tanh coefficients, or (B, A, S*S) fc-mask logits
        prototypes: Tensor | None,  # (B, k, h, w) (None for fc-mask)
        semantic_logits: Tensor | None,  # (B, K, h3, w3) or None
        anchors: Tensor,  # (A, 4) cx, cy, w, h in input pixels
        targets: Sequence[dict],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        cfg = self.cfg
        anchors_xyxy = cxcywh_to_xyxy(anchors)
        zero = cls_logits.sum() * 0.0  # keeps every head in the graph when a term is empty
        cls_sum, box_sum, mask_sum = zero, zero, zero
        num_pos_total, num_mask_total = 0, 0
        for b, target in enumerate(targets):
            gt_boxes = target["boxes"].to(anchors.dtype)
            gt_labels = target["labels"].long()
            gt_masks = target["masks"]
            valid = (gt_boxes[:, 2] > gt_boxes[:, 0]) & (gt_boxes[:, 3] > gt_boxes[:, 1])
            if not bool(valid.all()):  # zero-size boxes cannot be matched or encoded
                gt_boxes, gt_labels, gt_masks = gt_boxes[valid], gt_labels[valid], gt_masks[valid]
            crowd_boxes = target.get("crowd_boxes")
            if crowd_boxes is None and cfg.crowd_iou_threshold < 1:
                raise ConfigError("model.crowd_iou_threshold < 1 needs the crowd regions in the "
                                  "training targets: set data.keep_crowd=true")
            m = match_anchors(anchors_xyxy, gt_boxes, gt_labels, cfg.positive_iou,
                              cfg.negative_iou, crowd_boxes, cfg.crowd_iou_threshold)
            pos = m.state == POSITIVE
            num_pos = int(pos.sum())
            num_pos_total += num_pos
            # classification with OHEM 3:1
            neg = ohem_negatives(cls_logits[b], m.state, cfg.ohem_negpos_ratio)
            selected = pos | neg
            if bool(selected.any()):
                cls_sum = cls_sum + F.cross_entropy(cls_logits[b][selected], m.labels[selected],
                                                    reduction="sum")
            if num_pos == 0:
                continue
            pos_idx = torch.nonzero(pos).squeeze(1)
            matched = m.gt[pos_idx]
            box_t = encode_boxes(gt_boxes[matched], anchors[pos_idx], cfg.box_variances)
            box_sum = box_sum + F.smooth_l1_loss(box_deltas[b][pos_idx], box_t, beta=1.0,
                                                 reduction="sum")
            # masks: at most masks_to_train positives per image
            if num_pos > cfg.masks_to_train:
                keep = torch.randperm(num_pos, device=pos_idx.device)[: cfg.masks_to_train]
                pos_idx, matched = pos_idx[keep], matched[keep]
            num_mask_total += int(pos_idx.numel())
            if prototypes is not None:
                mask_sum = mask_sum + self._proto_mask_loss(
                    prototypes[b], mask_out[b][pos_idx], gt_masks, gt_boxes, matched,
                    image_size)
            else:
                mask_sum = mask_sum + self._fc_mask_loss(mask_out[b][pos_idx], gt_masks, gt_boxes,
                                                         matched)
        losses = {
            "loss_cls": cfg.conf_loss_weight * cls_sum / max(num_pos_total, 1),
            "loss_box": cfg.box_loss_weight * box_sum / max(num_pos_total, 1),
            "loss_mask": cfg.mask_loss_weight * mask_sum / max(num_mask_total, 1),
        }
        if semantic_logits is not None:
            losses["loss_sem"] = cfg.semantic_loss_weight * self._semantic_loss(
                semantic_logits, targets)
        return losses

    def _proto_mask_loss(self, protos: Tensor, coeffs: Tensor, gt_masks: Tensor,
                         gt_boxes: Tensor, matched: Tensor, image_size: tuple[int, int]) -> Tensor:
        k, h, w = protos.shape
        logits = torch.einsum("khw,nk->nhw", protos, coeffs)  # P C^T, before the sigmoid
        used, inverse = torch.unique(matched, return_inverse=True)
        targets = downsample_masks(gt_masks[used], (h, w))[inverse]
        sy, sx = image_size[0] / h, image_size[1] / w
        scale = gt_boxes.new_tensor([sx, sy, sx, sy])
        region = crop_region(gt_boxes[matched] / scale, h, w).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        area = region.flatten(1).sum(1).clamp(min=1.0)
        return ((bce * region).flatten(1).sum(1) / area).sum()

    def _fc_mask_loss(self, mask_logits: Tensor, gt_masks: Tensor, gt_boxes: Tensor,
                      matched: Tensor) -> Tensor:
        s = self.cfg.fc_mask_size
        rois = torch.cat([matched[:, None].to(gt_boxes.dtype), gt_boxes[matched]], dim=1)
        targets = roi_align(gt_masks[:, None].float(), rois, (s, s), spatial_scale=1.0,
                            sampling_ratio=2, aligned=True)[:, 0]
        targets = (targets >= 0.5).float()
        bce = F.binary_cross_entropy_with_logits(mask_logits.view(-1, s, s), targets,
                                                 reduction="none")
        return bce.flatten(1).mean(1).sum()

    def _semantic_loss(self, logits: Tensor, targets: Sequence[dict]) -> Tensor:
        b, num_classes, h, w = logits.shape
        total = logits.sum() * 0.0
        for i, target in enumerate(targets):
            seg = logits.new_zeros((num_classes, h, w))
            masks = downsample_masks(target["masks"], (h, w))
            if masks.shape[0]:
                labels = target["labels"].long().to(logits.device)
                idx = labels[:, None, None].expand(-1, h, w)
                seg = seg.scatter_reduce(0, idx, masks.to(seg.dtype), reduce="amax")
            total = total + F.binary_cross_entropy_with_logits(
                logits[i], seg, reduction="sum") / (h * w)
        return total / b
