"""The pipeline every NMS variant of :mod:`rtinst.ops.nms` shares: input checks, candidate
selection (steps 1-2), and merging the survivors (step 4); the variants differ only in step 3.

Shared pipeline (all variants)
------------------------------
1. Candidates: an (anchor, class) pair is a candidate when ``score > score_threshold``
   (scores ``<=`` the threshold, and NaN scores, are dropped). Fast NMS with
   ``second_threshold=False`` (the released YOLACT code) thresholds anchors instead: every
   pair of an anchor whose best class scores ``> score_threshold`` is a candidate.
2. Per class, the ``top_k`` candidates by score are kept (``torch.topk`` on the transposed,
   thresholded score matrix, restricted to anchors that have a candidate in some class --
   never a full sort of all ``A`` anchors).
3. Per class, suppression among those candidates (the variants differ only here).
4. Survivors of all classes are merged, sorted by descending score and cut to
   ``max_detections`` (``None`` or negative: no cap).

Defaults follow YOLACT: ``score_threshold=0.05``, ``iou_threshold=0.5``, ``top_k=200``,
``max_detections=100``.

Deterministic tie-breaking (all variants, CPU and CUDA): equal scores are ordered by lower
anchor index first, then (across classes, in step 4) by lower class index first. The same
order decides which candidates enter the ``top_k`` of a class when scores tie at the cut.

Threshold conventions: score thresholds (``score_threshold``, Matrix NMS's
``update_threshold``) are applied as torch's ``scores > t`` (``t`` cast to the scores'
dtype, as YOLACT's code does: a float32 score equal to ``float32(0.05)`` is dropped). The
IoU threshold is compared as a real number, like ``torchvision.ops.nms`` does (float IoU vs
double threshold), so that Cluster-NMS equals torchvision's NMS even for thresholds that are
not representable in float32 (e.g. 0.45).

IoU conventions: IoU is computed in the boxes' dtype exactly as
``torchvision.ops.box_iou`` does (``inter / (area_i + area_j - inter)``); a pair whose IoU
is NaN (two zero-area boxes) never suppresses, as in ``torchvision.ops.nms``. A box is
suppressed when its IoU is *strictly greater* than ``iou_threshold`` (kept when ``<=``),
matching ``torchvision.ops.nms`` and the YOLACT paper.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Detections", "Candidates", "check_inputs", "select_candidates", "gather_kept",
           "empty_detections", "threshold_below"]


class Detections(NamedTuple):
    """Detections of one image, sorted by descending score (ties: lower anchor, then class).

    boxes   (N, 4) float, the input boxes of the kept anchors
    scores  (N,)   float, the class score (Matrix NMS: the decayed score)
    labels  (N,)   int64, class index into the columns of the input ``scores``
    indices (N,)   int64, anchor index (row of the input ``boxes``/``scores``) of each detection
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    indices: Tensor

    def select(self, per_anchor: Tensor) -> Tensor:
        """Gather a per-anchor tensor (e.g. mask coefficients ``(A, k)``) for the detections."""
        return per_anchor[self.indices.to(per_anchor.device)]



@functools.lru_cache(maxsize=64)
def threshold_below(t: float, dtype: torch.dtype) -> float:
    """The largest value ``v`` of ``dtype`` with ``v <= t``.

    For a tensor ``x`` of ``dtype``, ``x > v`` is then exactly ``x > t`` evaluated in real
    numbers (as ``torchvision.ops.nms`` does, comparing float IoUs with a double threshold),
    even when ``t`` itself is not representable in ``dtype`` (e.g. 0.45 in float32).
    """
    if not math.isfinite(t) or dtype not in (torch.float32, torch.float64):
        return float(t)
    v = torch.tensor(t, dtype=dtype)
    if v.item() > t:
        v = torch.nextafter(v, torch.tensor(-math.inf, dtype=dtype))
    return float(v.item())


def empty_detections(boxes: Tensor, scores: Tensor) -> Detections:
    dev = boxes.device
    return Detections(
        boxes=boxes.new_zeros((0, 4)),
        scores=scores.new_zeros((0,)),
        labels=torch.zeros(0, dtype=torch.int64, device=dev),
        indices=torch.zeros(0, dtype=torch.int64, device=dev),
    )


def check_inputs(boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    if scores.dim() == 1:
        scores = scores[:, None]
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (A, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have shape (A, C) with A = {boxes.shape[0]} (number of boxes), "
            f"got {tuple(scores.shape)}"
        )
    if boxes.device != scores.device:
        raise ValueError(f"boxes on {boxes.device} but scores on {scores.device}")
    if not boxes.is_floating_point() or not scores.is_floating_point():
        raise ValueError("boxes and scores must be floating point tensors")
    return boxes, scores


class Candidates(NamedTuple):
    """Per-class candidates, padded to a common length ``k``.

    classes (C',)   class index of each row (only classes with at least one candidate)
    anchors (C', k) anchor index of each slot (0 in padding slots)
    scores  (C', k) score, sorted descending along a row (ties: lower anchor first);
                    ``-inf`` in padding slots, which are always at the end of a row
    valid   (C', k) True for real candidates
    boxes   (C', k, 4) boxes of the slots (zeros in padding slots)
    """

    classes: Tensor
    anchors: Tensor
    scores: Tensor
    valid: Tensor
    boxes: Tensor


def select_candidates(
    boxes: Tensor, scores: Tensor, score_threshold: float, top_k: int,
    per_class_threshold: bool = True,
) -> Candidates | None:
    """Steps 1-2 of the pipeline: threshold, then per-class top-k (deterministic ties).

    ``per_class_threshold=False`` is the released YOLACT code's Fast NMS
    (``second_threshold=False``): the threshold selects *anchors* (max class score >
    threshold) and each such anchor then ranks in every class with its score there, however
    low (NaN scores still never rank)."""
    thr = float(score_threshold)  # compared in the scores' dtype, like torch's ``scores > t``
    num_anchors, num_classes = scores.shape
    if num_anchors == 0 or num_classes == 0 or top_k <= 0:
        return None
    # Anchors with a candidate in some class, from one pass over the scores (the max over
    # classes); amax propagates NaN, so rows with a NaN are decided elementwise instead.
    mx = scores.amax(1) if num_classes > 1 else scores[:, 0]
    any_above = mx > thr
    nan_rows = torch.isnan(mx)
    if bool(nan_rows.any()):
        any_above[nan_rows] = (scores[nan_rows] > thr).any(1)
    n_rows = int(any_above.sum())
    if n_rows == 0:
        return None
    # Restrict to those anchors when that shrinks the problem (typical: a few hundred of
    # ~19k anchors); ``rows`` stays in ascending anchor order.
    if n_rows * 4 < num_anchors * 3:
        rows = torch.nonzero(any_above).squeeze(1)  # (A',)
        sub = scores.index_select(0, rows)
    else:
        rows = torch.arange(num_anchors, device=scores.device)
        sub = scores
    # (C, A') class-major scores; non-candidates (<= threshold, NaN) become -inf.
    sub = sub.t()
    neg_inf = torch.full((), -math.inf, dtype=sub.dtype, device=sub.device)
    if per_class_threshold:
        sub = torch.where(sub > thr, sub, neg_inf)
    else:
        ok = ~torch.isnan(sub)
        if rows.numel() == num_anchors:  # not restricted above: drop anchors without a candidate
            ok &= any_above[None, :]
        sub = torch.where(ok, sub, neg_inf)
    k = min(int(top_k), sub.shape[1])
    a = sub.shape[1]
    if k < a:
        # One extra element tells whether the k-th value ties with the (k+1)-th, i.e. whether
        # topk's (unspecified) choice among equal scores decided membership.
        vals, pos = sub.topk(k + 1, dim=1, largest=True, sorted=True)
        cut_tie = (vals[:, k - 1] == vals[:, k]) & torch.isfinite(vals[:, k])
        vals, pos = vals[:, :k], pos[:, :k]
        if bool(cut_tie.any()):
            # Rare: fall back to a full stable sort for the affected classes only.
            tie_rows = torch.nonzero(cut_tie).squeeze(1)
            v2, p2 = sub.index_select(0, tie_rows).sort(dim=1, descending=True, stable=True)
            vals = vals.index_copy(0, tie_rows, v2[:, :k].contiguous())
            pos = pos.index_copy(0, tie_rows, p2[:, :k].contiguous())
        # Order inside the selection: score descending, ties -> lower anchor index first
        # (positions in ``rows`` increase with the anchor index). topk's order among equal
        # values is unspecified, so re-sort when a row holds equal finite scores.
        if k > 1 and bool(((vals[:, 1:] == vals[:, :-1]) & (vals[:, 1:] > -math.inf)).any()):
            pos, perm = pos.sort(dim=1)
            vals = vals.gather(1, perm)
            vals, perm = vals.sort(dim=1, descending=True, stable=True)
            pos = pos.gather(1, perm)
    else:
        # few anchors (<= top_k): a stable sort gives the order directly
        vals, pos = sub.sort(dim=1, descending=True, stable=True)
        vals, pos = vals[:, :k], pos[:, :k]
    # Keep only classes with candidates, and only as many slots as the fullest class needs.
    valid = vals > -math.inf
    counts = valid.sum(1)
    classes = torch.nonzero(counts > 0).squeeze(1)  # (C',)
    if classes.numel() == 0:
        return None
    n_max = int(counts.max())
    if classes.numel() < num_classes or n_max < k:
        vals, pos, valid = vals[classes, :n_max], pos[classes, :n_max], valid[classes, :n_max]
    anchors = rows[pos]
    cand_boxes = boxes[anchors]
    cand_boxes = cand_boxes.masked_fill(~valid[..., None], 0)
    anchors = anchors.masked_fill(~valid, 0)
    return Candidates(classes, anchors, vals, valid, cand_boxes)


def finalize(
    boxes: Tensor,
    scores: Tensor,
    cls: Tensor,
    anchors: Tensor,
    num_classes: int,
    max_detections: int,
    fallback_scores: Tensor,
) -> Detections:
    """Step 4: sort kept (anchor, class) pairs by score desc, anchor asc, class asc; cut."""
    if scores.numel() == 0:
        return empty_detections(boxes, fallback_scores)
    cap = max_detections is not None and max_detections >= 0
    if cap and scores.numel() > 2 * max_detections + 64:
        # Only the best max_detections matter: keep everything >= the max_detections-th
        # score (ties at the cut included, so the exact ordering below is unaffected).
        if max_detections == 0:
            return empty_detections(boxes, fallback_scores)
        kth = scores.topk(max_detections, sorted=False).values.min()
        sel = torch.nonzero(scores >= kth).squeeze(1)
        scores, cls, anchors = scores[sel], cls[sel], anchors[sel]
    # index_select rather than advanced indexing: same values, less per-call overhead
    key = anchors * num_classes + cls  # unique per (anchor, class)
    order = key.argsort()
    s, perm = scores.index_select(0, order).sort(descending=True, stable=True)
    order = order.index_select(0, perm)
    if cap:
        order, s = order[:max_detections], s[:max_detections]
    idx = anchors.index_select(0, order)
    return Detections(boxes=boxes.index_select(0, idx), scores=s,
                      labels=cls.index_select(0, order), indices=idx)


def gather_kept(
    boxes: Tensor, scores: Tensor, cand: Candidates, keep: Tensor, max_detections: int,
    kept_scores: Tensor | None = None,
) -> Detections:
    # flat slot indices: one nonzero and 1-D index_selects instead of 2-D advanced indexing
    flat = torch.nonzero(keep.reshape(-1)).squeeze(1)
    s = (cand.scores if kept_scores is None else kept_scores).reshape(-1).index_select(0, flat)
    return finalize(
        boxes, s, cand.classes.index_select(0, flat // keep.shape[1]),
        cand.anchors.reshape(-1).index_select(0, flat), scores.shape[1], max_detections,
        scores,
    )
