"""Benchmark: cost per training sample of each coco preset's augmentations.

Not a pytest test (no ``test_`` prefix). Run from the repository root:

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_augment.py [--num-images 40] [--size 640]

Data: ``rtinst.data.synthetic.generate_synthetic`` train split at ``--size`` (long side, as
COCO's 640), with its crowd regions. For each model the coco preset's training transforms
are timed per sample (decode + transforms, one process, one thread, as one data-loader
worker, on this shared 2-core CPU: the record keeps the load average), with the preset's augmentations on and switched off (``crop_prob=0`` /
``photometric_distort``, ``expand``, ``random_sample_crop`` off). The record is written
atomically to ``results/benchmarks/augment_cost.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from rtinst.config import load_config  # noqa: E402
from rtinst.data.build import build_transforms  # noqa: E402
from rtinst.data.coco import CocoInstanceDataset  # noqa: E402
from rtinst.data.synthetic import generate_synthetic  # noqa: E402
from rtinst.io import atomic_write_json  # noqa: E402
from rtinst.provenance import provenance  # noqa: E402

OFF = {
    "fastinst": ["data.crop_prob=0"],
    "sparseinst": ["data.crop_prob=0"],
    "yolact": ["data.photometric_distort=false", "data.expand=false", "data.random_sample_crop=false"],
}
ON = {"fastinst": [], "sparseinst": ["data.crop_prob=0.5"], "yolact": []}  # sparseinst: the _aug rows


def time_pipeline(data_root: Path, overrides: list[str], model: str, seeds: int) -> dict:
    cfg = load_config(REPO / "rtinst" / "configs" / model / "coco.yaml", overrides)
    ds = CocoInstanceDataset(data_root / "annotations" / "instances_train.json", data_root / "train",
                             transforms=build_transforms(cfg.data, train=True),
                             keep_crowd=cfg.data.keep_crowd)
    times, sizes, instances = [], [], []
    for seed in range(seeds):
        for i in range(len(ds)):
            torch.manual_seed(seed * 100_003 + i)
            t = time.perf_counter()
            image, target = ds[i]
            times.append(time.perf_counter() - t)
            sizes.append(tuple(image.shape[-2:]))
            instances.append(int(target["labels"].shape[0]))
    return {
        "overrides": overrides,
        "transforms": repr(ds.transforms),
        "samples": len(times),
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * sorted(times)[int(0.9 * (len(times) - 1))],
        "mean_ms": 1000 * statistics.fmean(times),
        "mean_instances": statistics.fmean(instances),
        "mean_pixels": statistics.fmean(h * w for h, w in sizes),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-images", type=int, default=40)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--seeds", type=int, default=2, help="passes over the images, each with other seeds")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "augment_cost.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_augment_") as tmp:
        root = Path(tmp) / "synthetic"
        generate_synthetic(root, num_train=args.num_images, num_val=0, seed=0, size=args.size)
        results = {}
        for model in ("fastinst", "sparseinst", "yolact"):
            results[model] = {"off": time_pipeline(root, OFF[model], model, args.seeds),
                              "on": time_pipeline(root, ON[model], model, args.seeds)}
            on, off = results[model]["on"], results[model]["off"]
            print(f"{model:<10} off {off['median_ms']:6.1f} ms  on {on['median_ms']:6.1f} ms "
                  f"(p90 {on['p90_ms']:.1f} ms) per sample, {on['mean_instances']:.1f} instances")
    record = {
        "benchmark": "augment_cost",
        "what": "wall time per training sample: image decode + the coco preset's train transforms, "
                "one process, one thread; augmentations on vs off",
        "scale": f"synthetic train split, {args.num_images} images, long side {args.size}",
        "data_source": f"rtinst.data.synthetic.generate_synthetic (train, seed 0, size {args.size})",
        "seeds_per_image": args.seeds,
        # the machine is shared: a load above its core count inflates every time alike
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "results": results,
        "provenance": provenance(),
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
