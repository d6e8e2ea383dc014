"""Tests for rtinst.ops.nms: Fast / Cluster / Matrix / standard NMS.

The references below are deliberately naive loops written straight from the definitions
(YOLACT paper Sec. 3.5 for Fast NMS, greedy NMS, SOLOv2's decay formula), using python
floats for comparisons so that ``x > t`` means the real-number comparison.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from rtinst.ops.nms import (
    NMS_KINDS,
    Detections,
    batched_pairwise_iou,
    cluster_nms,
    fast_nms,
    mask_iou,
    matrix_nms,
    matrix_nms_masks,
    nms,
    standard_nms,
)

VARIANTS = {"standard": standard_nms, "fast": fast_nms, "cluster": cluster_nms, "matrix": matrix_nms}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------


def random_inputs(seed: int, num_anchors: int = 120, num_classes: int = 4, clustered: bool = True):
    """Boxes jittered around a few object centres (many heavy overlaps) plus random boxes;
    scores uniform with a fraction below 0.05."""
    g = torch.Generator().manual_seed(seed)
    a = num_anchors
    n_obj = max(1, a // 25)
    centres = torch.rand(n_obj, 2, generator=g) * 200
    sizes = torch.rand(n_obj, 2, generator=g) * 60 + 10
    which = torch.randint(0, n_obj, (a,), generator=g)
    ctr = centres[which] + torch.randn(a, 2, generator=g) * 4
    wh = sizes[which] * (1 + 0.15 * torch.randn(a, 2, generator=g)).clamp(min=0.3)
    if not clustered:
        ctr = torch.rand(a, 2, generator=g) * 200
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1)
    scores = torch.rand(a, num_classes, generator=g)
    scores[torch.rand(a, num_classes, generator=g) < 0.3] *= 0.05  # some below threshold
    return boxes, scores


# ---------------------------------------------------------------------------------------
# brute-force references (loops, straight from the definitions)
# ---------------------------------------------------------------------------------------


def ref_candidates(scores, c, score_threshold, top_k):
    """Anchors of class c with score > threshold, sorted by (score desc, anchor asc), top_k."""
    # score threshold in the scores' dtype (torch semantics), as YOLACT's code compares
    cand = [a for a in range(scores.shape[0]) if bool(scores[a, c] > score_threshold)]
    cand.sort(key=lambda a: (-scores[a, c].item(), a))
    return cand[:top_k]


def ref_merge(scores_by_key, max_detections):
    """scores_by_key: list of (score, anchor, class). Sort by score desc, anchor, class."""
    items = sorted(scores_by_key, key=lambda t: (-t[0], t[1], t[2]))
    if max_detections >= 0:
        items = items[:max_detections]
    return items


def _iou_table(boxes, ids) -> list[list[float]]:
    """IoU of boxes[ids[i]] and boxes[ids[j]] as python floats (NaN, from 0/0, -> 0)."""
    if not ids:
        return []
    x = box_iou(boxes[ids], boxes[ids]).tolist()
    return [[0.0 if math.isnan(v) else v for v in row] for row in x]


def ref_standard(boxes, scores, score_threshold=0.05, iou_threshold=0.5, top_k=200, max_detections=100):
    out = []
    for c in range(scores.shape[1]):
        cand = ref_candidates(scores, c, score_threshold, top_k)
        iou = _iou_table(boxes, cand)
        kept = []  # positions in cand
        for j in range(len(cand)):
            if all(iou[i][j] <= iou_threshold for i in kept):
                kept.append(j)
        out += [(scores[cand[j], c].item(), cand[j], c) for j in kept]
    return ref_merge(out, max_detections)


def ref_fast_literal(boxes, scores, score_threshold=0.05, iou_threshold=0.5, top_k=200, max_detections=100):
    """YOLACT Fast NMS, literally: per class the top_k candidates sorted by score; C x n x n
    IoU matrix X; X[i, j] = 0 for i >= j; K[j] = max_i X[i, j]; keep K <= t."""
    out = []
    for c in range(scores.shape[1]):
        cand = ref_candidates(scores, c, score_threshold, top_k)
        n = len(cand)
        iou = _iou_table(boxes, cand)
        x = [[iou[i][j] if i < j else 0.0 for j in range(n)] for i in range(n)]  # triu, diag 0
        for j in range(n):
            k_j = max((x[i][j] for i in range(n)), default=0.0)
            if k_j <= iou_threshold:
                out.append((scores[cand[j], c].item(), cand[j], c))
    return ref_merge(out, max_detections)


def ref_fast_released(boxes, scores, score_threshold=0.05, iou_threshold=0.5, top_k=200,
                      max_detections=100):
    """The released YOLACT code's Fast NMS (second_threshold=False): anchors whose max class
    score > threshold; per class all of them sorted by score, top_k, then as the paper."""
    anchors = [a for a in range(scores.shape[0]) if bool(scores[a].max() > score_threshold)]
    out = []
    for c in range(scores.shape[1]):
        cand = sorted(anchors, key=lambda a: (-scores[a, c].item(), a))[:top_k]
        n = len(cand)
        iou = _iou_table(boxes, cand)
        for j in range(n):
            if max((iou[i][j] for i in range(j)), default=0.0) <= iou_threshold:
                out.append((scores[cand[j], c].item(), cand[j], c))
    return ref_merge(out, max_detections)


def ref_matrix(boxes, scores, kernel="gaussian", sigma=2.0, form="paper", score_threshold=0.05,
               top_k=200, update_threshold=0.05, max_detections=100):
    """SOLOv2: decay_j = min_{i: s_i > s_j} f(iou_ij) / f(iou_{.,i}),
    f(iou_{.,i}) = min_{m: s_m > s_i} f(iou_mi) (= 1 when i is the top box)."""
    if kernel == "linear":
        f = lambda u: 1.0 - u  # noqa: E731
    elif form == "paper":
        f = lambda u: math.exp(-(u**2) / sigma)  # noqa: E731
    else:
        f = lambda u: math.exp(-sigma * u**2)  # noqa: E731
    out = []
    for c in range(scores.shape[1]):
        cand = ref_candidates(scores, c, score_threshold, top_k)
        iou = _iou_table(boxes, cand)
        for j, aj in enumerate(cand):
            decay = 1.0
            for i in range(j):
                comp = min([f(iou[m][i]) for m in range(i)], default=1.0)
                decay = min(decay, f(iou[i][j]) / comp)
            s = scores[aj, c].item() * decay
            if s > update_threshold:
                out.append((s, aj, c))
    return ref_merge(out, max_detections)


def as_list(det: Detections):
    return list(zip(det.scores.tolist(), det.indices.tolist(), det.labels.tolist()))


def assert_same(a: Detections, b: Detections):
    for name, x, y in zip(Detections._fields, a, b):
        assert x.dtype == y.dtype, name
        assert torch.equal(x, y), name


def check_det(det: Detections, boxes, scores):
    n = det.scores.shape[0]
    assert det.boxes.shape == (n, 4) and det.boxes.dtype == boxes.dtype
    assert det.scores.shape == (n,) and det.scores.dtype == scores.dtype
    assert det.labels.shape == (n,) and det.labels.dtype == torch.int64
    assert det.indices.shape == (n,) and det.indices.dtype == torch.int64
    if n:
        assert torch.equal(det.boxes, boxes[det.indices])
        assert bool((det.scores[:-1] >= det.scores[1:]).all())


# ---------------------------------------------------------------------------------------
# equivalences on random inputs
# ---------------------------------------------------------------------------------------

CASES = [
    # seed, anchors, classes, top_k, iou_threshold, clustered
    *[(s, 80, 3, 200, 0.5, True) for s in range(30)],
    *[(100 + s, 150, 2, 12, 0.45, True) for s in range(6)],  # top_k truncates; t = 0.45
    *[(200 + s, 100, 5, 30, 0.3, False) for s in range(4)],
    (300, 1, 1, 200, 0.5, True),
    (301, 300, 1, 200, 0.7, True),
]


@pytest.mark.parametrize("seed,a,c,top_k,t,clustered", CASES)
def test_cluster_equals_standard_and_greedy_reference(seed, a, c, top_k, t, clustered):
    boxes, scores = random_inputs(seed, a, c, clustered)
    kw = dict(score_threshold=0.05, iou_threshold=t, top_k=top_k, max_detections=-1)
    std = standard_nms(boxes, scores, **kw)
    clu = cluster_nms(boxes, scores, **kw)
    assert_same(clu, std)
    assert as_list(std) == ref_standard(boxes, scores, **kw)
    check_det(std, boxes, scores)


@pytest.mark.parametrize("seed,a,c,top_k,t,clustered", CASES)
def test_fast_equals_literal_paper_reference(seed, a, c, top_k, t, clustered):
    boxes, scores = random_inputs(seed, a, c, clustered)
    kw = dict(score_threshold=0.05, iou_threshold=t, top_k=top_k, max_detections=-1)
    fast = fast_nms(boxes, scores, **kw)
    assert as_list(fast) == ref_fast_literal(boxes, scores, **kw)
    check_det(fast, boxes, scores)
    # Fast NMS keeps a subset of standard NMS, per class
    std = standard_nms(boxes, scores, **kw)
    for cls in range(c):
        f_set = set(fast.indices[fast.labels == cls].tolist())
        s_set = set(std.indices[std.labels == cls].tolist())
        assert f_set <= s_set


@pytest.mark.parametrize("seed,a,c,top_k,t,clustered", CASES)
def test_fast_without_second_threshold_equals_released_code_reference(seed, a, c, top_k, t, clustered):
    boxes, scores = random_inputs(seed, a, c, clustered)
    kw = dict(score_threshold=0.05, iou_threshold=t, top_k=top_k, max_detections=-1)
    fast = fast_nms(boxes, scores, second_threshold=False, **kw)
    assert as_list(fast) == ref_fast_released(boxes, scores, **kw)
    check_det(fast, boxes, scores)
    assert as_list(nms("fast", boxes, scores, second_threshold=False, **kw)) == as_list(fast)


def test_second_threshold_false_ranks_low_scores_and_lets_them_suppress():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    # anchor 0 is a candidate through class 0 only; in class 1 it scores 0.03 (< 0.05)
    scores = torch.tensor([[0.9, 0.03], [0.01, 0.02], [0.02, 0.6]])
    paper = fast_nms(boxes, scores)  # second_threshold=True
    assert as_list(paper) == [(pytest.approx(0.9), 0, 0), (pytest.approx(0.6), 2, 1)]
    released = fast_nms(boxes, scores, second_threshold=False)
    # anchor 1 has no candidate class (max 0.02): never ranks. Anchor 0 enters class 1 with
    # 0.03 and is returned; anchor 2 enters class 0 with 0.02 (no overlap): returned too.
    assert as_list(released) == [(pytest.approx(0.9), 0, 0), (pytest.approx(0.6), 2, 1),
                                 (pytest.approx(0.03), 0, 1), (pytest.approx(0.02), 2, 0)]
    # a low-scored box suppresses: anchor 1 now a candidate via class 1 (0.2)
    scores = torch.tensor([[0.9, 0.03], [0.01, 0.2], [0.02, 0.6]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [0.5, 0, 10.5, 10]])
    released = fast_nms(boxes, scores, second_threshold=False, max_detections=-1)
    assert (0, 1) not in [(i, l) for _, i, l in as_list(released)]  # suppressed by anchor 2 (0.6)
    assert (1, 0) not in [(i, l) for _, i, l in as_list(released)]  # by anchor 0 (0.9)


def test_cluster_on_many_heavily_overlapping_boxes():
    # one class, 200 boxes on a short chain of shifts: long suppression chains
    g = torch.Generator().manual_seed(7)
    x = torch.cumsum(torch.rand(200, generator=g) * 3, 0)
    boxes = torch.stack([x, torch.zeros(200), x + 20, torch.full((200,), 20.0)], 1)
    scores = torch.rand(200, 2, generator=g)
    kw = dict(iou_threshold=0.5, max_detections=-1)
    std = standard_nms(boxes, scores, **kw)
    assert_same(cluster_nms(boxes, scores, **kw), std)
    assert as_list(std) == ref_standard(boxes, scores, **kw)
    assert len(fast_nms(boxes, scores, **kw).scores) < len(std.scores)
    # one Cluster-NMS iteration is Fast NMS
    assert_same(cluster_nms(boxes, scores, max_iterations=1, **kw), fast_nms(boxes, scores, **kw))


def test_fast_large_tiled_path_equals_literal_reference():
    # k > tile edge exercises the CPU tiled column max (several tiles, padding)
    boxes, scores = random_inputs(11, 230, 2, clustered=False)
    kw = dict(iou_threshold=0.5, top_k=150, max_detections=-1)
    assert as_list(fast_nms(boxes, scores, **kw)) == ref_fast_literal(boxes, scores, **kw)


def test_standard_batched_impl_equals_per_class():
    g = torch.Generator().manual_seed(3)
    xy = torch.randint(0, 100, (150, 2), generator=g).float()
    wh = torch.randint(5, 40, (150, 2), generator=g).float()
    boxes = torch.cat([xy, xy + wh], 1)  # integer coordinates: offsets are exact
    scores = torch.rand(150, 4, generator=g)
    a = standard_nms(boxes, scores, max_detections=-1)
    b = standard_nms(boxes, scores, max_detections=-1, impl="batched")
    assert_same(a, b)


def test_fast_suppresses_more_than_standard_chain():
    # A overlaps B, B overlaps C, A does not overlap C; scores A > B > C
    boxes = torch.tensor([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], dtype=torch.float32)
    # IoU(A,B) = IoU(B,C) = 7/13 > 0.5, IoU(A,C) = 4/16
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    assert standard_nms(boxes, scores, iou_threshold=0.5).indices.tolist() == [0, 2]
    assert cluster_nms(boxes, scores, iou_threshold=0.5).indices.tolist() == [0, 2]
    assert fast_nms(boxes, scores, iou_threshold=0.5).indices.tolist() == [0]


def test_iou_threshold_boundary_is_strict():
    # IoU exactly 0.5 is kept (suppression needs IoU > t), for all hard variants
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=torch.float32)
    scores = torch.tensor([[0.9], [0.8]])
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    for fn in (standard_nms, fast_nms, cluster_nms):
        assert fn(boxes, scores, iou_threshold=0.5).indices.tolist() == [0, 1]
        assert fn(boxes, scores, iou_threshold=0.49).indices.tolist() == [0]


def test_batched_pairwise_iou_matches_box_iou():
    boxes, _ = random_inputs(5, 60, 1)
    b = boxes.view(3, 20, 4)
    got = batched_pairwise_iou(b)
    for i in range(3):
        assert torch.equal(got[i], box_iou(b[i], b[i]))


# ---------------------------------------------------------------------------------------
# Matrix NMS
# ---------------------------------------------------------------------------------------


def test_matrix_isolated_box_keeps_score_and_duplicate_decays():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 8], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    u = 0.8  # IoU of box 1 with box 0
    for kernel, form, expect in [
        ("gaussian", "paper", math.exp(-(u**2) / 2.0)),
        ("gaussian", "code", math.exp(-2.0 * u**2)),
        ("linear", "paper", 1 - u),
    ]:
        det = matrix_nms(boxes, scores, kernel=kernel, gaussian_form=form, update_threshold=0.0)
        got = dict(zip(det.indices.tolist(), det.scores.tolist()))
        assert got[0] == pytest.approx(0.9, abs=1e-7)  # top box
        assert got[2] == pytest.approx(0.7, abs=1e-7)  # no overlap: score unchanged
        assert got[1] == pytest.approx(0.8 * expect, rel=1e-5)


def test_matrix_linear_vs_gaussian_differ_and_update_threshold():
    boxes, scores = random_inputs(1, 80, 2)
    g = matrix_nms(boxes, scores, kernel="gaussian", max_detections=-1)
    lin = matrix_nms(boxes, scores, kernel="linear", max_detections=-1)
    assert as_list(g) != as_list(lin)
    assert bool((g.scores > 0.05).all()) and bool((lin.scores > 0.05).all())
    high = matrix_nms(boxes, scores, kernel="linear", update_threshold=0.5, max_detections=-1)
    assert len(high.scores) < len(lin.scores) and bool((high.scores > 0.5).all())


@pytest.mark.parametrize("kernel,form", [("gaussian", "paper"), ("gaussian", "code"), ("linear", "paper")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_equals_solov2_formula_reference(kernel, form, seed):
    boxes, scores = random_inputs(seed, 40, 2)
    kw = dict(kernel=kernel, sigma=2.0, top_k=25, update_threshold=0.05, max_detections=-1)
    det = matrix_nms(boxes, scores, gaussian_form=form, **kw)
    ref = ref_matrix(boxes, scores, form=form, **kw)
    got = as_list(det)
    assert [(a, c) for _, a, c in got] == [(a, c) for _, a, c in ref]
    assert [s for s, _, _ in got] == pytest.approx([s for s, _, _ in ref], rel=1e-5)


def test_matrix_nms_masks_matches_box_version_on_rectangles():
    boxes, scores = random_inputs(4, 30, 1)
    ib = boxes.clamp(0, 250).round()
    ib[:, 2:] = torch.maximum(ib[:, 2:], ib[:, :2] + 1)
    masks = torch.zeros(30, 256, 256, dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(ib.long().tolist()):
        masks[i, y1:y2, x1:x2] = True  # pixel IoU == box IoU for integer rectangles
    s = scores[:, 0]
    labels = torch.zeros(30, dtype=torch.int64)
    dm = matrix_nms_masks(masks, s, labels, pre_nms_top_k=-1, max_detections=-1)
    db = matrix_nms(ib, s, score_threshold=-1.0, top_k=1000, max_detections=-1)
    assert dm.indices.tolist() == db.indices.tolist()
    assert torch.allclose(dm.scores, db.scores, rtol=1e-5)
    assert torch.equal(dm.boxes, ib[dm.indices] - torch.tensor([0.0, 0.0, 1.0, 1.0]))
    # different labels never decay each other
    dm2 = matrix_nms_masks(masks, s, torch.arange(30), pre_nms_top_k=-1, max_detections=-1,
                           update_threshold=0.0)
    assert torch.equal(dm2.scores, s.sort(descending=True).values)
    assert torch.equal(mask_iou(masks[:3]), box_iou(ib[:3], ib[:3]).nan_to_num(0))


def test_matrix_nms_masks_empty():
    det = matrix_nms_masks(torch.zeros(0, 8, 8), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert det.scores.shape == (0,) and det.boxes.shape == (0, 4) and det.indices.dtype == torch.int64


# ---------------------------------------------------------------------------------------
# edge cases, all variants
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NMS_KINDS)
@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_all_below_threshold(kind, device):
    fn = VARIANTS[kind]
    for boxes, scores in [
        (torch.zeros(0, 4), torch.zeros(0, 3)),  # no boxes
        (torch.rand(10, 4), torch.full((10, 3), 0.05)),  # all <= threshold
        (torch.rand(10, 4), torch.zeros(10, 0)),  # no classes
    ]:
        boxes, scores = boxes.to(device), scores.to(device)
        det = fn(boxes, scores)
        check_det(det, boxes, scores)
        assert det.scores.shape == (0,) and det.boxes.shape == (0, 4)
        assert det.boxes.device == boxes.device


@pytest.mark.parametrize("kind", NMS_KINDS)
def test_single_box_and_1d_scores(kind):
    fn = VARIANTS[kind]
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    det = fn(boxes, torch.tensor([[0.01, 0.7]]))
    assert det.indices.tolist() == [0] and det.labels.tolist() == [1]
    assert det.scores.tolist() == pytest.approx([0.7])
    det1 = fn(boxes, torch.tensor([0.7]))  # (A,) = one class
    assert det1.labels.tolist() == [0]


@pytest.mark.parametrize("kind", NMS_KINDS)
def test_ties_are_broken_by_lower_anchor_then_lower_class(kind):
    fn = VARIANTS[kind]
    boxes = torch.tensor([[i * 20.0, 0, i * 20.0 + 10, 10] for i in range(6)])  # disjoint
    scores = torch.zeros(6, 2)
    scores[:, 0] = 0.5
    scores[[1, 4], 1] = 0.5
    det = fn(boxes, scores)
    assert list(zip(det.indices.tolist(), det.labels.tolist())) == [
        (0, 0), (1, 0), (1, 1), (2, 0), (3, 0), (4, 0), (4, 1), (5, 0)
    ]
    # ties at the per-class top_k cut: lower anchors enter first
    det = fn(boxes, scores, top_k=3)
    assert sorted(det.indices[det.labels == 0].tolist()) == [0, 1, 2]
    # identical boxes with equal scores: the lower anchor suppresses / decays the higher one
    same = torch.tensor([[0.0, 0, 10, 10]] * 3)
    det = fn(same, torch.full((3, 1), 0.5), max_detections=1)
    assert det.indices.tolist() == [0]


def test_ties_with_large_candidate_sets_take_topk_fallback():
    # more candidates than top_k, all with the same score: membership decided by anchor index
    boxes, _ = random_inputs(9, 300, 2, clustered=False)
    scores = torch.full((300, 2), 0.25)
    kw = dict(top_k=50, max_detections=-1)
    assert as_list(fast_nms(boxes, scores, **kw)) == ref_fast_literal(boxes, scores, **kw)
    assert_same(cluster_nms(boxes, scores, **kw), standard_nms(boxes, scores, **kw))
    assert as_list(standard_nms(boxes, scores, **kw)) == ref_standard(boxes, scores, **kw)


@pytest.mark.parametrize("kind", NMS_KINDS)
def test_max_detections_cap(kind):
    fn = VARIANTS[kind]
    n = 50
    boxes = torch.tensor([[i * 20.0, 0, i * 20.0 + 10, 10] for i in range(n)])
    scores = torch.linspace(0.1, 0.9, n)[:, None].repeat(1, 2)
    det = fn(boxes, scores, max_detections=7)
    assert det.scores.shape == (7,)
    assert det.indices.tolist() == [49, 49, 48, 48, 47, 47, 46]
    assert det.labels.tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert fn(boxes, scores, max_detections=0).scores.shape == (0,)


@pytest.mark.parametrize("kind", NMS_KINDS)
def test_classes_are_independent(kind):
    fn = VARIANTS[kind]
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    scores = torch.tensor([[0.9, 0.0], [0.0, 0.8]])  # identical boxes, different classes
    det = fn(boxes, scores)
    assert det.indices.tolist() == [0, 1] and det.labels.tolist() == [0, 1]
    assert det.scores.tolist() == pytest.approx([0.9, 0.8])


def test_degenerate_boxes_behave_like_torchvision():
    # two identical zero-area boxes: IoU 0/0 = NaN never suppresses (as torchvision.ops.nms)
    boxes = torch.tensor([[5.0, 5, 5, 5], [5.0, 5, 5, 5], [0.0, 0, 10, 10]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    std = standard_nms(boxes, scores)
    assert std.indices.tolist() == [0, 1, 2]
    assert_same(cluster_nms(boxes, scores), std)
    assert_same(fast_nms(boxes, scores), std)


def test_nan_scores_are_never_candidates():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20.0, 0, 30, 10]])
    scores = torch.tensor([[float("nan")], [0.5]])
    for fn in VARIANTS.values():
        assert fn(boxes, scores).indices.tolist() == [1]


def test_dispatcher_select_and_errors():
    boxes, scores = random_inputs(2, 60, 3)
    coeffs = torch.randn(60, 8)
    for kind in NMS_KINDS:
        assert_same(nms(kind, boxes, scores, iou_threshold=0.4), VARIANTS[kind](boxes, scores, iou_threshold=0.4))
    det = nms("matrix", boxes, scores, kernel="linear")
    assert_same(det, matrix_nms(boxes, scores, kernel="linear"))
    assert torch.equal(det.select(coeffs), coeffs[det.indices])
    with pytest.raises(ValueError, match="unknown NMS kind"):
        nms("soft", boxes, scores)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(A, C\)"):
        fast_nms(boxes, scores[:10])
    with pytest.raises(ValueError, match="kernel"):
        matrix_nms(boxes, scores, kernel="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gaussian_form"):
        matrix_nms(boxes, scores, gaussian_form="mmdet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="impl"):
        standard_nms(boxes, scores, impl="loop")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", NMS_KINDS)
def test_cuda_matches_cpu(kind):
    fn = VARIANTS[kind]
    boxes, scores = random_inputs(21, 300, 5)
    cpu = fn(boxes, scores, max_detections=-1)
    gpu = fn(boxes.cuda(), scores.cuda(), max_detections=-1)
    assert cpu.indices.tolist() == gpu.indices.cpu().tolist()
    assert cpu.labels.tolist() == gpu.labels.cpu().tolist()
    assert torch.allclose(cpu.scores, gpu.scores.cpu())


@pytest.mark.parametrize("second_threshold", [True, False])
def test_yolact_passes_second_threshold_to_fast_nms(second_threshold):
    from test_yolact import make_batch, small_cfg

    from rtinst.config import load_config
    from rtinst.models.yolact import Yolact

    torch.manual_seed(0)
    model = Yolact(small_cfg(second_threshold=second_threshold)).eval()
    images = make_batch(1)[0]
    with torch.no_grad():
        boxes, scores = model.nms_inputs(images)
        # a threshold some anchors pass, so that both variants have candidates
        thr = float(scores[0].amax(1).quantile(0.9))
        model.cfg.score_threshold = thr
        out = model(images, None)[0]
    ref = fast_nms(boxes[0], scores[0], score_threshold=thr, second_threshold=second_threshold)
    assert out["scores"].numel() > 0
    assert torch.equal(out["scores"], ref.scores) and torch.equal(out["labels"], ref.labels)
    # the released code's variant returns scores below the threshold, the paper's never
    assert bool((out["scores"] <= thr).any()) == (not second_threshold)
    yolact_configs = Path(__file__).resolve().parents[1] / "rtinst" / "configs" / "yolact"
    assert not load_config(yolact_configs / "coco.yaml").model.second_threshold  # official
    assert load_config(yolact_configs / "tiny.yaml").model.second_threshold  # the tiny runs


# ---------------------------------------------------------------------------------------
# Fast NMS's NumPy pair path equals the torch column max, bit for bit
# ---------------------------------------------------------------------------------------


def _tie_heavy_boxes(g: torch.Generator, a: int, dtype: torch.dtype, degenerate: float):
    """Integer boxes on a small grid: many duplicates and IoUs exactly 1/2, 1/3, ...; a
    fraction collapsed to zero width/height or to a point (0/0 IoUs)."""
    xy = torch.randint(0, 12, (a, 2), generator=g)
    wh = torch.randint(1, 8, (a, 2), generator=g)
    flat = torch.rand(a, 2, generator=g) < degenerate
    wh = wh.masked_fill(flat, 0)
    boxes = torch.cat([xy, xy + wh], 1).to(dtype)
    return boxes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(12))
def test_fast_nms_pair_path_equals_torch_reference(seed, dtype, monkeypatch):
    from rtinst.ops import box_iou as box_iou_mod

    g = torch.Generator().manual_seed(seed)
    a = int(torch.randint(2, 260, (1,), generator=g))
    c = int(torch.randint(1, 9, (1,), generator=g))
    if seed % 3 == 0:
        boxes = _tie_heavy_boxes(g, a, dtype, degenerate=0.15)
    else:
        boxes, _ = random_inputs(seed, a, c, clustered=seed % 2 == 0)
        boxes = boxes.to(dtype)
        boxes[torch.rand(a, generator=g) < 0.05, 2] = boxes[:, 0][:1]  # some zero/negative width
    # quantized scores: ties inside a class and at the top-k cut
    scores = (torch.rand(a, c, generator=g) * 20).floor().to(dtype) / 20
    cases = [dict(iou_threshold=t, top_k=tk, max_detections=-1, second_threshold=st)
             for t in (0.5, 1 / 3, 0.0, 0.7) for tk in (5, 200) for st in (True, False)]
    pair = [fast_nms(boxes, scores, **kw) for kw in cases]
    for kw, p in zip(cases, pair):  # the literal paper reference on the common setting
        if kw["second_threshold"] and kw["top_k"] == 200 and kw["iou_threshold"] == 0.5:
            kw = {k: v for k, v in kw.items() if k != "second_threshold"}
            assert as_list(p) == ref_fast_literal(boxes, scores, **kw)
    monkeypatch.setattr(box_iou_mod, "_PAIR_PATH_MAX_PAIRS", -1)  # force the torch path
    for kw, p in zip(cases, pair):
        assert_same(p, fast_nms(boxes, scores, **kw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triu_any_above_pair_path_equals_colmax(dtype, monkeypatch):
    from rtinst.ops import box_iou as box_iou_mod
    from rtinst.ops.box_iou import triu_any_above, triu_colmax

    g = torch.Generator().manual_seed(5)
    for trial in range(40):
        b = int(torch.randint(1, 12, (1,), generator=g))
        k = int(torch.randint(1, 40, (1,), generator=g))
        boxes = _tie_heavy_boxes(g, b * k, dtype, degenerate=0.2).view(b, k, 4)
        if trial % 4 == 1:  # NaN and infinite coordinates
            boxes.view(-1)[torch.randint(0, b * k * 4, (3,), generator=g)] = math.nan
            boxes.view(-1)[torch.randint(0, b * k * 4, (3,), generator=g)] = math.inf
        counts = torch.randint(0, k + 1, (b,), generator=g)
        boxes = boxes.masked_fill(torch.arange(k)[None, :, None] >= counts[:, None, None], 0)
        for t in (0.5, 1 / 3, 0.0, 1.0):
            got = triu_any_above(boxes, counts, t)
            ref = (triu_colmax(boxes) > t) & (torch.arange(k) < counts[:, None])
            assert torch.equal(got, ref), (trial, t)
    # gradients: the boolean result is the same with boxes that require grad
    boxes = _tie_heavy_boxes(g, 30, dtype, 0.1).view(3, 10, 4).requires_grad_()
    counts = torch.tensor([10, 4, 0])
    got = triu_any_above(boxes, counts, 0.3)
    monkeypatch.setattr(box_iou_mod, "_PAIR_PATH_MAX_PAIRS", -1)
    assert torch.equal(got, triu_any_above(boxes, counts, 0.3))
    # a negative threshold suppresses every real candidate (K >= 0 > t), on both paths
    assert torch.equal(triu_any_above(boxes.detach(), counts, -0.1),
                       torch.arange(10) < counts[:, None])
