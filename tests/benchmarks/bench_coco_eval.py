"""Benchmark: faster-coco-eval vs pycocotools on COCO mask evaluation.

Not a pytest test (no ``test_`` prefix). Run from the repository root:

    python tests/benchmarks/bench_coco_eval.py [--num-images 500] [--repeats 3]

Ground truth: ``rtinst.data.synthetic.generate_synthetic`` (val split) when importable,
else the test-fixture generator at 240x320 with ~6 objects per image. Predictions: 100
per image, perturbed GT masks plus random false positives with random scores.

Each backend is timed end to end as a user runs it (load GT + load results + evaluate +
accumulate + summarize; wall clock, median of ``--repeats`` runs, alternating order, one
process). The record (times, speed-up, AP numbers of both, provenance) is written
atomically to ``results/benchmarks/coco_eval_backends.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from eval_fixtures import make_gt, perturbed_predictions, write_json  # noqa: E402
from rtinst.engine.evaluate import METRIC_KEYS  # noqa: E402
from rtinst.io import atomic_write_json  # noqa: E402
from rtinst.provenance import provenance  # noqa: E402


def synthetic_gt(out_dir: Path, num_images: int, seed: int) -> tuple[dict, str]:
    """GT from rtinst's synthetic generator when it exists, else the fixture generator."""
    try:
        from rtinst.data.synthetic import generate_synthetic
    except ImportError:
        generate_synthetic = None
    if generate_synthetic is not None:
        try:
            generate_synthetic(out_dir / "synthetic", num_train=0, num_val=num_images, seed=seed)
            path = out_dir / "synthetic" / "annotations" / "instances_val.json"
            return json.loads(path.read_text()), f"rtinst.data.synthetic.generate_synthetic (val, seed {seed})"
        except Exception as e:  # the generator is optional here; say why it was not used
            print(f"rtinst.data.synthetic unusable ({type(e).__name__}: {e}); using the fixture generator")
    gt = make_gt(num_images=num_images, sizes=((240, 320),), objects=(4, 8), seed=seed, crowd=True)
    return gt, f"tests/eval_fixtures.make_gt (240x320, 4-8 objects/image, seed {seed})"


def run_pycocotools(gt_path: Path, res_path: Path) -> tuple[np.ndarray, float]:
    """The 12 stats in percent and the seconds spent loading GT + results."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(res_path))
        load_s = time.perf_counter() - t
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12]) * 100, load_s


def run_faster(gt_path: Path, res_path: Path) -> tuple[np.ndarray, float]:
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = lambda *a, **k: None  # noqa: E731
    t = time.perf_counter()
    coco_gt = COCO(str(gt_path), print_function=quiet)
    coco_dt = coco_gt.loadRes(str(res_path))
    load_s = time.perf_counter() - t
    ev = COCOeval_faster(coco_gt, coco_dt, "segm", print_function=quiet, separate_eval=True)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:12]) * 100, load_s


BACKENDS = {"pycocotools": run_pycocotools, "faster_coco_eval": run_faster}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-images", type=int, default=500)
    ap.add_argument("--dets-per-image", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "coco_eval_backends.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_coco_eval_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        gt, gt_source = synthetic_gt(tmp, args.num_images, args.seed)
        res = perturbed_predictions(gt, seed=args.seed + 1, dets_per_image=args.dets_per_image)
        gt_path, res_path = write_json(tmp / "gt.json", gt), write_json(tmp / "res.json", res)
        print(f"data: {len(gt['images'])} images, {len(gt['annotations'])} GT, {len(res)} detections "
              f"({time.perf_counter() - t0:.1f} s to build)")

        times = {name: [] for name in BACKENDS}
        load_times = {name: [] for name in BACKENDS}
        stats = {}
        for rep in range(args.repeats):
            order = list(BACKENDS) if rep % 2 == 0 else list(BACKENDS)[::-1]
            for name in order:
                t = time.perf_counter()
                stats[name], load_s = BACKENDS[name](gt_path, res_path)
                times[name].append(time.perf_counter() - t)
                load_times[name].append(load_s)
                print(f"  run {rep + 1} {name:<16} {times[name][-1]:7.2f} s (loading {load_s:.2f} s)")

    max_diff = float(np.max(np.abs(stats["pycocotools"] - stats["faster_coco_eval"])))
    agree = max_diff < 1e-9
    median = {name: statistics.median(ts) for name, ts in times.items()}
    speedup = median["pycocotools"] / median["faster_coco_eval"]
    eval_only = {name: statistics.median(t - lt for t, lt in zip(times[name], load_times[name]))
                 for name in BACKENDS}
    sizes = sorted({(im["height"], im["width"]) for im in gt["images"]})
    record = {
        "benchmark": "coco_eval_backends",
        "what": "wall time of load GT + load results + evaluate + accumulate + summarize (segm)",
        "gt_source": gt_source,
        "num_images": len(gt["images"]),
        "num_gt": len(gt["annotations"]),
        "num_detections": len(res),
        "image_sizes_hw": sizes[:5],
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "times_s": times,
        "median_s": median,
        "speedup_faster_vs_pycocotools": speedup,
        "load_times_s": load_times,
        "median_eval_only_s": eval_only,
        "speedup_eval_only": eval_only["pycocotools"] / eval_only["faster_coco_eval"],
        "metrics_percent": {name: dict(zip(METRIC_KEYS, map(float, s))) for name, s in stats.items()},
        "max_abs_diff_percent": max_diff,
        "backends_agree": agree,
        "provenance": provenance(),
    }
    atomic_write_json(args.out, record)
    print(f"faster-coco-eval {median['faster_coco_eval']:.2f} s vs pycocotools {median['pycocotools']:.2f} s "
          f"(median of {args.repeats}): {speedup:.1f}x faster end to end, "
          f"{record['speedup_eval_only']:.1f}x for evaluate+accumulate+summarize alone; AP {stats['pycocotools'][0]:.3f} vs "
          f"{stats['faster_coco_eval'][0]:.3f}, max |diff| {max_diff:.1e} -> {'agree' if agree else 'DISAGREE'}; "
          f"wrote {args.out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
