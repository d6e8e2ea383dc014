"""Non-maximum suppression variants for dense one-stage detectors (YOLACT-style heads).

Every function takes the raw per-image output of a dense head and returns a
:class:`Detections`:

* ``boxes``  -- ``(A, 4)`` boxes in ``(x1, y1, x2, y2)`` format (one per anchor),
* ``scores`` -- ``(A, C)`` per-class *foreground* scores (e.g. softmax with the background
  column dropped); a 1-D ``(A,)`` tensor is treated as a single class.

and is batched by class: boxes of different classes never suppress each other. Extra per-box
tensors (mask coefficients, ...) are not passed in; gather them with the returned anchor
indices: ``coeffs[det.indices]`` or ``det.select(coeffs)``.

The shared pipeline (thresholds, top-k, tie-breaking, IoU conventions) is documented in
:mod:`rtinst.ops.nms_pipeline`; Matrix NMS lives in :mod:`rtinst.ops.matrix_nms`.

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
evaluates only the tiles on/above the diagonal, or, on sparse inputs, only the real candidate
pairs in NumPy, which has far less per-op overhead). ``tests/benchmarks/bench_nms.py``
measures the variants on YOLACT-550-sized inputs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchvision
from torch import Tensor

from rtinst.ops.box_iou import batched_pairwise_iou, iter_iou_triu, triu_any_above
from rtinst.ops.matrix_nms import mask_iou, matrix_nms, matrix_nms_masks
from rtinst.ops.nms_pipeline import (
    Detections,
    check_inputs,
    empty_detections,
    gather_kept,
    select_candidates,
    threshold_below,
)

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
    boxes, scores = check_inputs(boxes, scores)
    cand = select_candidates(boxes, scores, score_threshold, top_k)
    if cand is None:
        return empty_detections(boxes, scores)
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
    return gather_kept(boxes, scores, cand, keep, max_detections)


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    second_threshold: bool = True,
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

    ``second_threshold=False`` is the released code's default: only anchors whose best class
    score is ``> score_threshold`` are kept, and each of them ranks in *every* class's top-k
    with its (possibly tiny) score there, suppresses there, and is returned if it survives
    (the code's comment credits this with +0.2 mAP). ``True`` (the paper) thresholds every
    (anchor, class) pair.
    """
    boxes, scores = check_inputs(boxes, scores)
    cand = select_candidates(boxes, scores, score_threshold, top_k,
                             per_class_threshold=second_threshold)
    if cand is None:
        return empty_detections(boxes, scores)
    t = threshold_below(float(iou_threshold), boxes.dtype)
    # (C', k): column-wise max of triu(IoU, 1) > t, on the real candidates of each row
    keep = cand.valid & ~triu_any_above(cand.boxes, cand.valid.sum(1), t)
    return gather_kept(boxes, scores, cand, keep, max_detections)


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
    boxes, scores = check_inputs(boxes, scores)
    cand = select_candidates(boxes, scores, score_threshold, top_k)
    if cand is None:
        return empty_detections(boxes, scores)
    t = threshold_below(float(iou_threshold), boxes.dtype)
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
    return gather_kept(boxes, scores, cand, keep[:, :k], max_detections)



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
