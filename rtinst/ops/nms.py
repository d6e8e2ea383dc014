"""Non-maximum suppression variants for dense one-stage detectors (YOLACT-style heads).

Every function takes the raw per-image output of a dense head and returns a
:class:`Detections`:

* ``boxes``  -- ``(A, 4)`` boxes in ``(x1, y1, x2, y2)`` format (one per anchor),
* ``scores`` -- ``(A, C)`` per-class *foreground* scores (e.g. softmax with the background
  column dropped); a 1-D ``(A,)`` tensor is treated as a single class.

and is batched by class: boxes of different classes never suppress each other. Extra per-box
tensors (mask coefficients, ...) are not passed in; gather them with the returned anchor
indices: ``coeffs[det.indices]`` or ``det.select(coeffs)``.

Shared pipeline (all variants)
------------------------------
1. Candidates: an (anchor, class) pair is a candidate when ``score > score_threshold``
   (scores ``<=`` the threshold, and NaN scores, are dropped).
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

Variants
--------
* :func:`standard_nms` -- sequential greedy NMS per class (torchvision).
* :func:`fast_nms` -- YOLACT's Fast NMS (Bolya et al., ICCV 2019): already-suppressed boxes
  may still suppress, so it removes slightly more than standard NMS.
* :func:`cluster_nms` -- Cluster-NMS (Zheng et al.): Fast NMS iterated to a fixed point;
  equals standard NMS exactly.
* :func:`matrix_nms` -- SOLOv2 Matrix NMS: decays scores instead of removing boxes.
  :func:`matrix_nms_masks` is the mask-IoU form SOLOv2 defines it on.
* :func:`nms` -- dispatcher by name for configs.

Devices: everything is plain tensor code and runs on CUDA too (the IoU matrices come from
:mod:`rtinst.ops.box_iou`: in one piece on CUDA, in cache-sized chunks on CPU, where Fast NMS
evaluates only the tiles on/above the diagonal). ``tests/benchmarks/bench_nms.py``
measures the variants on YOLACT-550-sized inputs.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch
import torchvision
from torch import Tensor

from rtinst.ops.box_iou import batched_pairwise_iou, iter_iou_triu, triu_colmax

__all__ = [
    "Detections",
    "NMSKind",
    "NMS_KINDS",
    "standard_nms",
    "fast_nms",
    "cluster_nms",
    "matrix_nms",
    "matrix_nms_masks",
    "mask_iou",
    "batched_pairwise_iou",
    "nms",
]

NMSKind = Literal["standard", "fast", "cluster", "matrix"]
NMS_KINDS: tuple[str, ...] = ("standard", "fast", "cluster", "matrix")


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


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _threshold_below(t: float, dtype: torch.dtype) -> float:
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


def _empty(boxes: Tensor, scores: Tensor) -> Detections:
    dev = boxes.device
    return Detections(
        boxes=boxes.new_zeros((0, 4)),
        scores=scores.new_zeros((0,)),
        labels=torch.zeros(0, dtype=torch.int64, device=dev),
        indices=torch.zeros(0, dtype=torch.int64, device=dev),
    )


def _check_inputs(boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
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


class _Candidates(NamedTuple):
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


def _select_candidates(
    boxes: Tensor, scores: Tensor, score_threshold: float, top_k: int
) -> _Candidates | None:
    """Steps 1-2 of the pipeline: threshold, then per-class top-k (deterministic ties)."""
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
    sub = torch.where(sub > thr, sub, torch.full((), -math.inf, dtype=sub.dtype, device=sub.device))
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
    return _Candidates(classes, anchors, vals, valid, cand_boxes)


def _finalize(
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
        return _empty(boxes, fallback_scores)
    cap = max_detections is not None and max_detections >= 0
    if cap and scores.numel() > 2 * max_detections + 64:
        # Only the best max_detections matter: keep everything >= the max_detections-th
        # score (ties at the cut included, so the exact ordering below is unaffected).
        if max_detections == 0:
            return _empty(boxes, fallback_scores)
        kth = scores.topk(max_detections, sorted=False).values.min()
        sel = torch.nonzero(scores >= kth).squeeze(1)
        scores, cls, anchors = scores[sel], cls[sel], anchors[sel]
    key = anchors * num_classes + cls  # unique per (anchor, class)
    order = key.argsort()
    s = scores[order]
    s, perm = s.sort(descending=True, stable=True)
    order = order[perm]
    if cap:
        order, s = order[:max_detections], s[:max_detections]
    idx = anchors[order]
    return Detections(boxes=boxes[idx], scores=s, labels=cls[order], indices=idx)


def _gather_kept(
    boxes: Tensor, scores: Tensor, cand: _Candidates, keep: Tensor, max_detections: int,
    kept_scores: Tensor | None = None,
) -> Detections:
    rows, slots = torch.nonzero(keep, as_tuple=True)
    s = (cand.scores if kept_scores is None else kept_scores)[rows, slots]
    return _finalize(
        boxes, s, cand.classes[rows], cand.anchors[rows, slots], scores.shape[1],
        max_detections, scores,
    )


# ----------------------------------------------------------------------------------------
# variants
# ----------------------------------------------------------------------------------------


def standard_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    impl: Literal["per_class", "batched"] = "per_class",
) -> Detections:
    """Traditional sequential NMS, independently per class.

    Per class: keep candidates with ``score > score_threshold``; keep the ``top_k`` by score;
    greedily walk them in descending score order and drop every later box whose IoU with an
    already *kept* box is ``> iou_threshold``. Then the survivors of all classes are sorted by
    score and cut to ``max_detections``.

    ``impl="per_class"`` (default) calls ``torchvision.ops.nms`` once per class that has
    candidates, on the original coordinates. ``impl="batched"`` makes one
    ``torchvision.ops.batched_nms`` call; note torchvision may implement it by offsetting
    boxes per class, which perturbs coordinates in the last bits, so IoUs that lie within
    rounding of the threshold may be decided differently from ``per_class``.

    Ties: torchvision is given a strictly decreasing rank instead of the raw scores, so
    equal scores are processed lower-anchor-first whatever torchvision's sort does.
    """
    if impl not in ("per_class", "batched"):
        raise ValueError(f"unknown standard_nms impl {impl!r}; expected 'per_class' or 'batched'")
    boxes, scores = _check_inputs(boxes, scores)
    cand = _select_candidates(boxes, scores, score_threshold, top_k)
    if cand is None:
        return _empty(boxes, scores)
    t = float(iou_threshold)
    ncls, k = cand.scores.shape
    rank = -torch.arange(k, device=boxes.device, dtype=boxes.dtype)
    counts = cand.valid.sum(1).tolist()  # valid slots form a prefix of each row
    keep = torch.zeros_like(cand.valid)
    if impl == "per_class":
        for r, n in enumerate(counts):
            kept = torchvision.ops.nms(cand.boxes[r, :n], rank[:n], t)
            keep[r, kept] = True
    else:
        rows, slots = torch.nonzero(cand.valid, as_tuple=True)
        # rank over the whole flattened candidate list, decreasing within each class
        flat_rank = -(rows * k + slots).to(boxes.dtype)
        kept = torchvision.ops.batched_nms(cand.boxes[rows, slots], flat_rank, rows, t)
        keep[rows[kept], slots[kept]] = True
    return _gather_kept(boxes, scores, cand, keep, max_detections)


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
) -> Detections:
    """YOLACT's Fast NMS (Bolya et al., "YOLACT: Real-time Instance Segmentation", Sec. 3.5).

    Per class take the ``top_k`` candidates by score (``score > score_threshold``), compute
    the ``C x k x k`` pairwise IoU matrix ``X`` (classes with fewer candidates are padded),
    zero its lower triangle and diagonal (``X[c, i, j] = 0 for i >= j``), take the column-wise
    max ``K[c, j] = max_i X[c, i, j]`` -- the largest IoU of box ``j`` with any higher-scoring
    box of its class, *including boxes that are themselves suppressed* -- and keep the boxes
    with ``K <= iou_threshold``. Survivors are flattened, sorted by score, cut to
    ``max_detections``. Because suppressed boxes still suppress, the kept set is a subset of
    :func:`standard_nms`'s (per class).

    Implementation: only classes that have candidates get a row, ``k`` is the largest
    candidate count actually present (at most ``top_k``), top-k uses ``torch.topk`` instead of
    a full sort of all anchors. The output equals the paper's literal formulation (threshold,
    full per-class sort, broadcast IoU over ``C x top_k x top_k``). Equivalently this is the
    released YOLACT code with its second score threshold enabled: boxes below the threshold
    rank after all candidates of their class, so they can never suppress a candidate.
    """
    boxes, scores = _check_inputs(boxes, scores)
    cand = _select_candidates(boxes, scores, score_threshold, top_k)
    if cand is None:
        return _empty(boxes, scores)
    t = _threshold_below(float(iou_threshold), boxes.dtype)
    iou_max = triu_colmax(cand.boxes)  # (C', k): column-wise max of triu(IoU, 1)
    keep = cand.valid & ~(iou_max > t)
    return _gather_kept(boxes, scores, cand, keep, max_detections)


def cluster_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    max_iterations: int | None = None,
) -> Detections:
    """Cluster-NMS (Zheng et al., "Enhancing Geometric Factors in Model Learning and Inference
    for Object Detection and Instance Segmentation"): standard NMS from matrix operations.

    With ``B = triu(IoU, 1)`` over each class's score-sorted candidates (as in
    :func:`fast_nms`) and ``S = B > iou_threshold`` ("i suppresses j" if i scores higher),
    iterate from ``keep_0 = all candidates``::

        keep_{n+1}[j] = not any_i ( keep_n[i] and S[i, j] )    # colmax(B * keep_n[:, None]) <= t

    Iteration 1 is exactly Fast NMS. Only boxes kept in the previous iteration may suppress,
    so the iteration stops at the first ``n`` with ``keep_{n+1} == keep_n`` (at most ``k``
    iterations; typically a handful). Why it equals greedy NMS: greedy NMS's kept set is the
    unique fixed point of this map (decide boxes in score order; each decision depends only
    on higher-scoring ones), and after ``n`` iterations the first ``n`` boxes of every class
    are already decided correctly, so the iteration reaches that fixed point; and any fixed
    point is the greedy one. IoUs use the same arithmetic as ``torchvision.ops.nms``, so the
    result equals :func:`standard_nms` exactly (same kept set and order).

    ``max_iterations`` caps the iterations (``None``: run to convergence; ``1``: Fast NMS).
    """
    boxes, scores = _check_inputs(boxes, scores)
    cand = _select_candidates(boxes, scores, score_threshold, top_k)
    if cand is None:
        return _empty(boxes, scores)
    t = _threshold_below(float(iou_threshold), boxes.dtype)
    ncls, k = cand.scores.shape
    fdt = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    sup_f = None  # S as 0/1, (C', kp, kp) with kp >= k (padding never suppresses)
    for s, e, x in iter_iou_triu(cand.boxes):
        if sup_f is None:
            sup_f = torch.empty(ncls, *x.shape[1:], dtype=fdt, device=boxes.device)
        torch.gt(x, t, out=sup_f[s:e])
    kp = sup_f.shape[-1]
    valid = torch.nn.functional.pad(cand.valid, (0, kp - k))
    keep = valid
    limit = k + 1 if max_iterations is None else int(max_iterations)
    for _ in range(limit):
        # number of currently-kept higher-scoring boxes overlapping j: (C',1,k) @ (C',k,k)
        hits = torch.bmm(keep.to(fdt)[:, None, :], sup_f)[:, 0, :]
        new_keep = valid & (hits == 0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return _gather_kept(boxes, scores, cand, keep[:, :k], max_detections)


def _check_matrix_args(kernel: str, sigma: float, gaussian_form: str) -> None:
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"unknown matrix NMS kernel {kernel!r}; expected 'gaussian' or 'linear'")
    if gaussian_form not in ("paper", "code"):
        raise ValueError(f"gaussian_form must be 'paper' or 'code', got {gaussian_form!r}")
    if kernel == "gaussian" and not sigma > 0:
        raise ValueError(f"matrix NMS sigma must be > 0, got {sigma}")


def _matrix_decay(
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

    For each class's score-sorted candidates (steps 1-2 of the module pipeline), every box
    ``j`` gets its score multiplied by::

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
    _check_matrix_args(kernel, sigma, gaussian_form)
    boxes, scores = _check_inputs(boxes, scores)
    cand = _select_candidates(boxes, scores, score_threshold, top_k)
    if cand is None:
        return _empty(boxes, scores)
    decay = torch.empty_like(cand.scores)
    k = decay.shape[1]
    for s, e, x in iter_iou_triu(cand.boxes):
        decay[s:e] = _matrix_decay(x, kernel, sigma, gaussian_form)[:, :k]
    decayed = cand.scores * decay  # padding: -inf * decay = -inf (decay > 0) or nan
    keep = cand.valid & (decayed > float(update_threshold))
    return _gather_kept(boxes, scores, cand, keep, max_detections, kept_scores=decayed)


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


def _boxes_from_masks(masks: Tensor) -> Tensor:
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
    _check_matrix_args(kernel, sigma, gaussian_form)
    n = scores.shape[0]
    if masks.shape[0] != n or labels.shape[0] != n:
        raise ValueError(
            f"masks, scores, labels disagree in length: {masks.shape[0]}, {n}, {labels.shape[0]}"
        )
    labels = labels.to(torch.int64)
    all_boxes = boxes if boxes is not None else None
    if n == 0:
        bx = all_boxes if all_boxes is not None else torch.zeros(0, 4, device=scores.device)
        return _empty(bx, scores)
    s, order = scores.sort(descending=True, stable=True)
    if pre_nms_top_k is not None and pre_nms_top_k >= 0:
        s, order = s[:pre_nms_top_k], order[:pre_nms_top_k]
    lab = labels[order]
    iou = mask_iou(masks[order]).to(scores.dtype if scores.is_floating_point() else torch.float32)
    iou = iou.mul_(lab[:, None] == lab[None, :]).triu_(diagonal=1)
    decay = _matrix_decay(iou[None], kernel, sigma, gaussian_form)[0]
    decayed = s * decay
    kept = torch.nonzero(decayed > float(update_threshold)).squeeze(1)
    ds = decayed[kept]
    ds, perm = ds.sort(descending=True, stable=True)  # ties: earlier (higher original) first
    kept = kept[perm]
    if max_detections is not None and max_detections >= 0:
        kept, ds = kept[:max_detections], ds[:max_detections]
    idx = order[kept]
    bx = all_boxes[idx] if all_boxes is not None else _boxes_from_masks(masks[idx])
    return Detections(boxes=bx, scores=ds, labels=labels[idx], indices=idx)


# ----------------------------------------------------------------------------------------
# dispatcher
# ----------------------------------------------------------------------------------------

_VARIANTS = {
    "standard": standard_nms,
    "fast": fast_nms,
    "cluster": cluster_nms,
    "matrix": matrix_nms,
}


def nms(
    kind: NMSKind,
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    **kwargs,
) -> Detections:
    """Run the NMS variant named ``kind`` (``"standard"``, ``"fast"``, ``"cluster"``,
    ``"matrix"``) with the common parameters; ``kwargs`` go to the variant (e.g.
    ``kernel``/``sigma``/``update_threshold`` for matrix, ``impl`` for standard)."""
    try:
        fn = _VARIANTS[kind]
    except KeyError:
        raise ValueError(f"unknown NMS kind {kind!r}; expected one of {NMS_KINDS}") from None
    return fn(
        boxes, scores, score_threshold=score_threshold, iou_threshold=iou_threshold,
        top_k=top_k, max_detections=max_detections, **kwargs,
    )
