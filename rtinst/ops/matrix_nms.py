"""SOLOv2 Matrix NMS (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation"): scores
decayed by their overlap with higher-scoring detections instead of boxes removed.

:func:`matrix_nms` runs on box IoU inside the per-class pipeline of
:mod:`rtinst.ops.nms_pipeline` (so ``rtinst.ops.nms.nms("matrix", ...)`` takes the same
arguments as the other variants); :func:`matrix_nms_masks` is the mask-IoU form SOLOv2
defines it on.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torchvision
from torch import Tensor

from rtinst.ops.box_iou import iter_iou_triu
from rtinst.ops.nms_pipeline import (
    Detections,
    check_inputs,
    empty_detections,
    gather_kept,
    select_candidates,
)

__all__ = ["matrix_nms", "matrix_nms_masks", "mask_iou", "matrix_decay"]


def check_matrix_args(kernel: str, sigma: float, gaussian_form: str) -> None:
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"unknown matrix NMS kernel {kernel!r}; expected 'gaussian' or 'linear'")
    if gaussian_form not in ("paper", "code"):
        raise ValueError(f"gaussian_form must be 'paper' or 'code', got {gaussian_form!r}")
    if kernel == "gaussian" and not sigma > 0:
        raise ValueError(f"matrix NMS sigma must be > 0, got {sigma}")


def matrix_decay(
    iou_triu: Tensor,
    kernel: Literal["gaussian", "linear"],
    sigma: float,
    gaussian_form: Literal["paper", "code"],
) -> Tensor:
    """SOLOv2 decay factors for score-sorted candidates: ``(B, n, n) -> (B, n)``.

    ``decay_j = min_{i < j} f(iou_ij) / f(comp_i)`` with ``comp_i = max_{m < i} iou_mi`` (the
    largest IoU of ``i`` with any higher-scoring box; ``f`` is decreasing, so ``f(comp_i)`` is
    SOLOv2's ``min_m f(iou_mi)``); ``decay_j = 1`` when ``j`` has no higher-scoring box.
    Ratios above 1 (and 0/0 in the linear kernel) never lower the min; the factor is at most 1.
    """
    comp = iou_triu.amax(dim=1)  # (B, n): column max
    n = iou_triu.shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool, device=iou_triu.device).triu_(diagonal=1)
    if kernel == "gaussian":
        # paper: f(x) = exp(-x^2 / sigma)   code: f(x) = exp(-sigma * x^2)
        scale = (1.0 / sigma) if gaussian_form == "paper" else sigma
        ratio = torch.exp(-scale * (iou_triu.square() - comp.square()[:, :, None]))
    else:
        ratio = (1.0 - iou_triu) / (1.0 - comp[:, :, None])
    ratio = ratio.nan_to_num(nan=math.inf).masked_fill_(~upper, math.inf)
    return ratio.amin(dim=1).clamp_(max=1.0)


def matrix_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float | None = None,
    top_k: int = 200,
    max_detections: int = 100,
    kernel: Literal["gaussian", "linear"] = "gaussian",
    sigma: float = 2.0,
    update_threshold: float = 0.05,
    gaussian_form: Literal["paper", "code"] = "paper",
) -> Detections:
    """SOLOv2 Matrix NMS (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation") on
    box IoU, batched by class.

    For each class's score-sorted candidates (steps 1-2 of :mod:`rtinst.ops.nms_pipeline`),
    every box ``j`` gets its score multiplied by::

        decay_j = min_{i: s_i > s_j} f(iou_ij) / f(iou_{.,i}),   f(iou_{.,i}) = min_{m: s_m > s_i} f(iou_mi)

    with ``f(x) = 1 - x`` (``kernel="linear"``) or gaussian ``f(x) = exp(-x^2 / sigma)``
    (``gaussian_form="paper"``, the SOLOv2 paper: ratio ``exp(-(iou^2 - comp^2) / sigma)``) or
    ``exp(-sigma * x^2)`` (``gaussian_form="code"``, what the public SOLO/mmdet/OpenVINO
    implementations compute with the same ``sigma=2.0``). A box without higher-scoring
    overlapping boxes keeps its score. Then boxes with decayed score ``> update_threshold``
    are kept, sorted by decayed score, cut to ``max_detections``. ``iou_threshold`` is
    accepted (and ignored) so that :func:`nms` can pass the same arguments to every variant.

    Difference from SOLOv2's pipeline: SOLOv2 keeps a global top-N (e.g. 500) before a joint
    matrix over all classes with a same-label mask; here the pre-selection is ``top_k`` per
    class, consistent with the other variants. :func:`matrix_nms_masks` follows SOLOv2.
    """
    del iou_threshold
    check_matrix_args(kernel, sigma, gaussian_form)
    boxes, scores = check_inputs(boxes, scores)
    cand = select_candidates(boxes, scores, score_threshold, top_k)
    if cand is None:
        return empty_detections(boxes, scores)
    decay = torch.empty_like(cand.scores)
    k = decay.shape[1]
    for s, e, x in iter_iou_triu(cand.boxes):
        decay[s:e] = matrix_decay(x, kernel, sigma, gaussian_form)[:, :k]
    decayed = cand.scores * decay  # padding: -inf * decay = -inf (decay > 0) or nan
    keep = cand.valid & (decayed > float(update_threshold))
    return gather_kept(boxes, scores, cand, keep, max_detections, kept_scores=decayed)


def mask_iou(masks_a: Tensor, masks_b: Tensor | None = None) -> Tensor:
    """IoU between two sets of masks ``(N, H, W)`` x ``(M, H, W)`` -> ``(N, M)``.

    Masks are binarised with ``> 0`` for non-bool input (pass probabilities thresholded by the
    caller, e.g. ``probs > 0.5``). Two empty masks have IoU 0.
    """
    a = masks_a.reshape(masks_a.shape[0], -1)
    a = (a if a.dtype == torch.bool else a > 0).to(torch.float32)
    b = a if masks_b is None else masks_b.reshape(masks_b.shape[0], -1)
    if masks_b is not None:
        b = (b if b.dtype == torch.bool else b > 0).to(torch.float32)
    inter = a @ b.t()
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return (inter / union).nan_to_num_(nan=0.0)


def boxes_from_masks(masks: Tensor) -> Tensor:
    """Tight ``(x1, y1, x2, y2)`` boxes of binary masks (torchvision convention); zeros if empty."""
    m = masks if masks.dtype == torch.bool else masks > 0
    out = torch.zeros(m.shape[0], 4, dtype=torch.float32, device=m.device)
    nonempty = m.flatten(1).any(1)
    if bool(nonempty.any()):
        out[nonempty] = torchvision.ops.masks_to_boxes(m[nonempty]).to(torch.float32)
    return out


def matrix_nms_masks(
    masks: Tensor,
    scores: Tensor,
    labels: Tensor,
    kernel: Literal["gaussian", "linear"] = "gaussian",
    sigma: float = 2.0,
    update_threshold: float = 0.05,
    pre_nms_top_k: int = 500,
    max_detections: int = 100,
    gaussian_form: Literal["paper", "code"] = "paper",
    boxes: Tensor | None = None,
) -> Detections:
    """Matrix NMS on masks, as SOLOv2 defines it.

    ``masks`` ``(N, H, W)`` (bool, or scores binarised with ``> 0``), ``scores`` ``(N,)``,
    ``labels`` ``(N,)``: sort by score (ties: lower index first), keep ``pre_nms_top_k``,
    compute mask IoU with pairs of different labels set to 0, decay as in
    :func:`matrix_nms`, keep decayed score ``> update_threshold``, sort, cut to
    ``max_detections``. ``indices`` index the input masks; ``boxes`` are the given ``boxes``
    (``(N, 4)``) or the masks' tight boxes.
    """
    check_matrix_args(kernel, sigma, gaussian_form)
    n = scores.shape[0]
    if masks.shape[0] != n or labels.shape[0] != n:
        raise ValueError(
            f"masks, scores, labels disagree in length: {masks.shape[0]}, {n}, {labels.shape[0]}"
        )
    labels = labels.to(torch.int64)
    all_boxes = boxes if boxes is not None else None
    if n == 0:
        bx = all_boxes if all_boxes is not None else torch.zeros(0, 4, device=scores.device)
        return empty_detections(bx, scores)
    s, order = scores.sort(descending=True, stable=True)
    if pre_nms_top_k is not None and pre_nms_top_k >= 0:
        s, order = s[:pre_nms_top_k], order[:pre_nms_top_k]
    lab = labels[order]
    iou = mask_iou(masks[order]).to(scores.dtype if scores.is_floating_point() else torch.float32)
    iou = iou.mul_(lab[:, None] == lab[None, :]).triu_(diagonal=1)
    decay = matrix_decay(iou[None], kernel, sigma, gaussian_form)[0]
    decayed = s * decay
    kept = torch.nonzero(decayed > float(update_threshold)).squeeze(1)
    ds = decayed[kept]
    ds, perm = ds.sort(descending=True, stable=True)  # ties: earlier (higher original) first
    kept = kept[perm]
    if max_detections is not None and max_detections >= 0:
        kept, ds = kept[:max_detections], ds[:max_detections]
    idx = order[kept]
    bx = all_boxes[idx] if all_boxes is not None else boxes_from_masks(masks[idx])
    return Detections(boxes=bx, scores=ds, labels=labels[idx], indices=idx)
