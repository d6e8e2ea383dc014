"""Benchmark: NMS variants on YOLACT-550-sized inputs (19,248 anchors x 80 classes).

Not a pytest test (no ``test_`` prefix). Run from the repository root:

    python tests/benchmarks/bench_nms.py [--runs 30] [--threads 1] [--device auto]
    python tests/benchmarks/bench_nms.py --scores dump.pt     # tensors from a trained model

Inputs
  * ``sparse`` (synthetic): YOLACT's 550x550 anchor set (P3-P7 = 69,35,18,9,5; aspect
    ratios 1, 1/2, 2; scales 24..384) jittered as box predictions; ~10 objects; softmax
    scores that are mostly background with a few hundred confident, clustered boxes around
    the objects (what a trained model looks like).
  * ``dense`` (synthetic): random boxes and high-temperature softmax scores: ~900
    above-threshold candidates in every class, so every class fills its top-200 (the worst
    case for the IoU matrix).
  * ``--scores FILE.pt``: ``torch.load(FILE, weights_only=True)`` of a dict with ``boxes``
    ``(A, 4)`` or ``(N, A, 4)`` xyxy and ``scores`` ``(A, C)`` or ``(N, A, C)`` foreground
    scores (softmax without the background column); replaces the synthetic inputs.

Variants timed (ms per image, median over ``--runs`` x images after ``--warmup``; inside each
repetition the variants run once each in a shuffled order, so load from other processes and
the state left by the previous variant hit all of them alike; wall time and the calling
thread's CPU time are both recorded):
  * ``fast_literal``: the YOLACT paper's Fast NMS written literally: full per-class sort of
    all anchors, top-200, broadcast ``C x 200 x 200`` IoU, triu, column max, flatten, sort;
  * ``fast``: ``rtinst.ops.nms.fast_nms`` (must give the same output: checked);
  * ``standard``: ``standard_nms`` (torchvision.ops.nms per class), ``standard_batched``:
    ``standard_nms(impl="batched")`` (one torchvision.ops.batched_nms call);
  * ``cluster``: ``cluster_nms`` (checked equal to ``standard``); ``matrix``: ``matrix_nms``.

Writes ``results/benchmarks/nms.json`` atomically (medians, p10/p90, speed-ups, candidate
counts, equality checks, provenance incl. the fixed torch thread count) and prints a table.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from rtinst.io import atomic_write_json  # noqa: E402
from rtinst.ops.nms import (  # noqa: E402
    Detections,
    cluster_nms,
    fast_nms,
    matrix_nms,
    standard_nms,
)
from rtinst.provenance import provenance  # noqa: E402

SCORE_T, IOU_T, TOP_K, MAX_DET = 0.05, 0.5, 200, 100


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------


def yolact_anchors(size: int = 550) -> torch.Tensor:
    """(19248, 4) xyxy anchors of YOLACT-550: P3-P7, aspect ratios 1, 1/2, 2."""
    out = []
    for fm, scale in zip((69, 35, 18, 9, 5), (24, 48, 96, 192, 384)):
        c = (torch.arange(fm, dtype=torch.float32) + 0.5) / fm * size
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        for ar in (1.0, 0.5, 2.0):
            w, h = scale * math.sqrt(ar), scale / math.sqrt(ar)
            out.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(-1, 4))
    return torch.cat(out)


def synthetic_sparse(seed: int, num_classes: int = 80, n_objects: int = 10):
    g = torch.Generator().manual_seed(seed)
    anchors = yolact_anchors()
    a = anchors.shape[0]
    wh = (anchors[:, 2:] - anchors[:, :2]).clamp(min=1)
    boxes = anchors + torch.randn(a, 4, generator=g) * wh.repeat(1, 2) * 0.1
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    # background-dominated logits
    logits = torch.randn(a, num_classes + 1, generator=g) * 1.0
    logits[:, 0] += 8.0
    ctr = torch.rand(n_objects, 2, generator=g) * 450 + 50
    size = torch.rand(n_objects, 2, generator=g) * 200 + 30
    objs = torch.cat([ctr - size / 2, ctr + size / 2], 1)
    cls = torch.randint(0, num_classes, (n_objects,), generator=g)
    from torchvision.ops import box_iou

    iou = box_iou(anchors, objs)  # (A, n_objects)
    best, which = iou.max(1)
    pos = best > 0.3
    # confident foreground logits near objects, with some confusion with a second class
    strength = (best[pos] * 16).unsqueeze(1)
    rows = torch.nonzero(pos).squeeze(1)
    logits[rows, 1 + cls[which[rows]]] += strength.squeeze(1) + 3
    confuse = torch.randint(0, num_classes, (rows.numel(),), generator=g)
    logits[rows, 1 + confuse] += strength.squeeze(1) * 0.7
    # predicted boxes of positive anchors regress towards the object
    boxes[rows] = 0.5 * boxes[rows] + 0.5 * objs[which[rows]] + torch.randn(rows.numel(), 4, generator=g) * 4
    scores = torch.softmax(logits, 1)[:, 1:].contiguous()
    return boxes.contiguous(), scores


def synthetic_dense(seed: int, num_anchors: int = 19248, num_classes: int = 80):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_anchors, 2, generator=g) * 500
    wh = torch.rand(num_anchors, 2, generator=g) * 100 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.softmax(torch.randn(num_anchors, num_classes + 1, generator=g) * 3, 1)[:, 1:]
    return boxes, scores.contiguous()


def load_scores(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    d = torch.load(path, map_location="cpu", weights_only=True)
    boxes, scores = d["boxes"].float(), d["scores"].float()
    if boxes.dim() == 2:
        boxes, scores = boxes[None], scores[None]
    return [(boxes[i].contiguous(), scores[i].contiguous()) for i in range(boxes.shape[0])]


# ---------------------------------------------------------------------------------------
# the literal formulation (reference for timing and output)
# ---------------------------------------------------------------------------------------


def fast_nms_literal(boxes, scores, score_threshold=SCORE_T, iou_threshold=IOU_T, top_k=TOP_K,
                     max_detections=MAX_DET) -> Detections:
    """Fast NMS exactly as the YOLACT paper writes it, with no shortcuts.

    Every class's scores for all anchors are sorted (stable, descending: ties -> lower
    anchor), the top_k kept, the C x k x k IoU computed by broadcasting, lower triangle and
    diagonal zeroed, column max taken, ``max <= t`` and ``score > threshold`` kept, then
    flattened, sorted (ties: lower anchor, then lower class) and cut to max_detections.
    """
    num_classes = scores.shape[1]
    s = scores.t().masked_fill(~(scores.t() > score_threshold), -math.inf)
    s, idx = s.sort(dim=1, descending=True, stable=True)  # (C, A) full sort
    s, idx = s[:, :top_k], idx[:, :top_k]
    b = boxes[idx]  # (C, k, 4)
    lt = torch.max(b[:, :, None, :2], b[:, None, :, :2])
    rb = torch.min(b[:, :, None, 2:], b[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    iou = (inter / (area[:, :, None] + area[:, None, :] - inter)).nan_to_num(0.0)
    iou_max = iou.triu(diagonal=1).max(dim=1).values
    keep = (iou_max <= iou_threshold) & (s > -math.inf)
    cls = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(keep)[keep]
    anc, sc = idx[keep], s[keep]
    order = (anc * num_classes + cls).argsort()
    sc, perm = sc[order].sort(descending=True, stable=True)
    order = order[perm][:max_detections]
    return Detections(boxes[anc[order]], sc[:max_detections], cls[order], anc[order])


VARIANTS = {
    "fast_literal": fast_nms_literal,
    "fast": fast_nms,
    "standard": standard_nms,
    "standard_batched": lambda b, s: standard_nms(b, s, impl="batched"),
    "cluster": cluster_nms,
    "matrix": matrix_nms,
}


def same(a: Detections, b: Detections) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------


def bench(images, device: str, runs: int, warmup: int) -> dict:
    imgs = [(b.to(device), s.to(device)) for b, s in images]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    cpu_times: dict[str, list[float]] = {k: [] for k in VARIANTS}  # this thread's CPU time
    for _ in range(warmup):
        for fn in VARIANTS.values():
            for b, s in imgs:
                fn(b, s)
    sync()
    rng = random.Random(0)
    names = list(VARIANTS)
    for _ in range(runs):
        # round-robin in a shuffled order: background load and the cache/allocator state left
        # by the previous variant (e.g. the literal one's large tensors) hit all variants alike
        rng.shuffle(names)
        for name in names:
            fn = VARIANTS[name]
            for b, s in imgs:
                sync()
                c0, t0 = time.thread_time(), time.perf_counter()
                fn(b, s)
                sync()
                times[name].append((time.perf_counter() - t0) * 1e3)
                cpu_times[name].append((time.thread_time() - c0) * 1e3)
    checks = {"fast_equals_literal": True, "cluster_equals_standard": True,
              "standard_batched_equals_standard": True}
    n_det, n_cand = [], []
    for b, s in imgs:
        lit, fast = fast_nms_literal(b, s), fast_nms(b, s)
        std = standard_nms(b, s)
        checks["fast_equals_literal"] &= same(lit, fast)
        checks["cluster_equals_standard"] &= same(cluster_nms(b, s), std)
        checks["standard_batched_equals_standard"] &= same(standard_nms(b, s, impl="batched"), std)
        n_cand.append(int((s > SCORE_T).sum(0).clamp(max=TOP_K).sum()))
        n_det.append({k: int(fn(b, s).scores.numel()) for k, fn in VARIANTS.items()})
    med = {k: statistics.median(v) for k, v in times.items()}
    q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * len(v)))]  # noqa: E731
    return {
        "median_ms": med,
        "p10_ms": {k: q(v, 0.1) for k, v in times.items()},
        "p90_ms": {k: q(v, 0.9) for k, v in times.items()},
        # CPU time of the calling thread (excludes time descheduled by other processes on a
        # shared machine; equals wall time only with --threads 1 on CPU)
        "median_thread_cpu_ms": {k: statistics.median(v) for k, v in cpu_times.items()},
        "speedup": {
            "fast_vs_fast_literal": med["fast_literal"] / med["fast"],
            "fast_vs_standard": med["standard"] / med["fast"],
            "fast_vs_standard_batched": med["standard_batched"] / med["fast"],
            "cluster_vs_standard": med["standard"] / med["cluster"],
            "matrix_vs_standard": med["standard"] / med["matrix"],
        },
        "checks": checks,
        "candidates_after_topk_per_image": n_cand,
        "detections_per_image": n_det,
        "samples_per_variant": len(times["fast"]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (recorded)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cpu, and cuda if available)")
    ap.add_argument("--images", type=int, default=2, help="synthetic images per distribution")
    ap.add_argument("--scores", type=Path, default=None, help="dict {boxes, scores} saved with torch.save")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "nms.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if args.scores is not None:
        inputs = {f"file:{args.scores.name}": load_scores(args.scores)}
    else:
        inputs = {
            "sparse": [synthetic_sparse(args.seed + i) for i in range(args.images)],
            "dense": [synthetic_dense(args.seed + i) for i in range(args.images)],
        }
    record = {
        "benchmark": "nms",
        "what": "ms per image (one NMS call on one image's boxes/scores), median over runs x images",
        "params": {"score_threshold": SCORE_T, "iou_threshold": IOU_T, "top_k": TOP_K,
                   "max_detections": MAX_DET, "runs": args.runs, "warmup": args.warmup,
                   "threads": args.threads, "images_per_input": {k: len(v) for k, v in inputs.items()}},
        "inputs": {},
        "provenance": {},
        # on a shared machine other processes inflate wall times; the thread CPU times are
        # the fairer comparison then (see median_thread_cpu_ms)
        "load_average_1m": {"start": os.getloadavg()[0]},
    }
    rows = []
    for device in devices:
        record["provenance"][device] = provenance(device)
        for name, images in inputs.items():
            a, c = images[0][1].shape
            res = bench(images, device, args.runs, args.warmup)
            res["shape"] = {"anchors": a, "classes": c}
            record["inputs"].setdefault(name, {})[device] = res
            rows.append((device, name, res))
    record["load_average_1m"]["end"] = os.getloadavg()[0]
    atomic_write_json(args.out, record)

    names = list(VARIANTS)
    print(f"torch threads = {args.threads}; wall ms per image (median), its ratio to fast, "
          "and the thread's CPU ms (median)")
    print(f"{'device':6s} {'input':8s} " + " ".join(f"{n:>16s}" for n in names))
    for device, name, res in rows:
        print(f"{device:6s} {name:8s} " + " ".join(f"{res['median_ms'][n]:16.2f}" for n in names))
        print(f"{'':6s} {'x fast':8s} " + " ".join(f"{res['median_ms'][n] / res['median_ms']['fast']:16.2f}" for n in names))
        cpu = res["median_thread_cpu_ms"]
        print(f"{'':6s} {'cpu ms':8s} " + " ".join(f"{cpu[n]:16.2f}" for n in names))
        print(f"{'':6s} {'checks':8s} {res['checks']}  candidates/img {res['candidates_after_topk_per_image']}")
    print(f"wrote {args.out}")
    # standard_batched may legitimately differ (torchvision offsets coordinates per class)
    ok = all(r["checks"]["fast_equals_literal"] and r["checks"]["cluster_equals_standard"] for _, _, r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
