"""Where a trained FastInst's IA-guided queries sit: on the objects or on the background (the
paper's Figure 3 claim, in numbers over val images instead of two pictures).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_query_foreground.py \\
        fastinst-tiny-04f532c2fe01 fastinst-tiny-00b477601837 fastinst-tiny-af5ff9bbae88 \\
        --runs-root results/runs --images 200 --out results/benchmarks/fastinst_query_foreground_tiny.json

For each run (a folder with ``query_type: ia_guided``, its weights ``checkpoints/last.pt`` or
``model_fp16.pt``) the first ``--images`` val images are predicted as evaluation feeds them,
and each of the N_a IA queries' locations (``result["query_locations"]``, (x, y) in input
pixels) is looked up in the image's GT object masks at the same input resolution:

- ``share_inside``: the queries inside any GT object, per image (median and mean over images);
  ``object_area_share``: the objects' pixels' share of the image, what queries placed
  uniformly at random would score;
- ``queries_per_object``: queries inside each GT object, averaged over all objects;
  ``objects_hit``: the share of GT objects with at least one query inside;
- the run's mask AP (record.json) and its IA-loss variant (FastInst Table 6f).

``--runs-root`` and the runs' ``data.root`` resolve as every rtinst path does (``$RTINST_HOME``
reads the runs and data of another checkout, e.g. one holding the uncommitted
``checkpoints/last.pt``). Writes the JSON atomically; reads the runs only (~20 s a run for 200
images on one CPU thread).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

from rtinst import paths
from rtinst.errors import UserError
from rtinst.io import atomic_write_json
from rtinst.provenance import provenance

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "results" / "benchmarks" / "fastinst_query_foreground_tiny.json"


def query_foreground(locations: torch.Tensor, gt_masks: torch.Tensor) -> dict:
    """Which GT objects each query location falls in, for one image.

    ``locations`` (N, 2): (x, y) in pixels of the input grid; pixel (row r, column c) covers
    [c, c + 1) x [r, r + 1), so a location on the left/top edge of a mask pixel is inside it
    and one on its right/bottom edge belongs to the next pixel. ``gt_masks`` (M, h, w) bool
    at the image's size; a location outside [0, w) x [0, h) (the padding of the input batch)
    is outside every object. Returns counts, per object ``queries_in_object`` (M,) (a query
    inside two overlapping objects counts for both) and the objects' union area share.
    """
    if locations.ndim != 2 or locations.shape[-1] != 2:
        raise UserError(f"query_foreground: locations must be (N, 2) (x, y), got {tuple(locations.shape)}")
    if gt_masks.ndim != 3:
        raise UserError(f"query_foreground: gt_masks must be (M, h, w), got {tuple(gt_masks.shape)}")
    m, h, w = gt_masks.shape
    col = torch.floor(locations[:, 0]).long()
    row = torch.floor(locations[:, 1]).long()
    on_image = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    inside = torch.zeros(m, len(locations), dtype=torch.bool)  # (M, N)
    if on_image.any() and m:
        inside[:, on_image] = gt_masks.bool()[:, row[on_image], col[on_image]]
    n = len(locations)
    n_inside = int(inside.any(0).sum())
    union = gt_masks.bool().any(0) if m else torch.zeros(h, w, dtype=torch.bool)
    return {"queries": n, "queries_inside": n_inside, "share_inside": n_inside / n if n else math.nan,
            "object_area_share": float(union.float().mean()) if h * w else math.nan,
            "queries_in_object": inside.sum(1).tolist()}


def summarize(per_image: list[dict]) -> dict:
    """Over images: share inside (median, mean, sample std across images) and area share
    (median, mean); per GT object pooled over all images: mean queries inside and the share
    with at least one."""
    shares = [r["share_inside"] for r in per_image if not math.isnan(r["share_inside"])]
    areas = [r["object_area_share"] for r in per_image]
    per_object = [c for r in per_image for c in r["queries_in_object"]]
    if not shares or not per_object:
        raise UserError("query foreground: no image with queries and GT objects to summarize")
    return {"images": len(per_image), "objects": len(per_object),
            "images_without_objects": sum(1 for r in per_image if not r["queries_in_object"]),
            "queries_per_image": statistics.fmean(r["queries"] for r in per_image),
            "share_inside": {"median": statistics.median(shares), "mean": statistics.fmean(shares),
                             "std": statistics.stdev(shares) if len(shares) > 1 else 0.0},
            "object_area_share": {"median": statistics.median(areas), "mean": statistics.fmean(areas)},
            "concentration_mean": statistics.fmean(shares) / max(statistics.fmean(areas), 1e-12),
            "queries_per_object": statistics.fmean(per_object),
            "objects_hit": sum(1 for c in per_object if c > 0) / len(per_object)}


def _run_dir(name: str, runs_root: Path) -> Path:
    direct = Path(name)
    run_dir = direct if direct.is_dir() else runs_root / name
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{name}: not a run folder (no config.yaml in {direct} or {runs_root / name})")
    return run_dir


def measure_run(run_dir: Path, images: int, data_root: str | None) -> dict:
    from rtinst.viz.queries import ia_loss_variant
    from rtinst.viz.run import load_run, predict

    run = load_run(run_dir, data_root)
    if getattr(run.cfg.model, "query_type", None) != "ia_guided":
        raise UserError(f"{run_dir}/config.yaml: model.query_type is "
                        f"{getattr(run.cfg.model, 'query_type', None)!r}, query locations need ia_guided")
    n = min(images, len(run.val_set))
    per_image = []
    for i in range(n):
        sample = predict(run, [i])[0]
        per_image.append(query_foreground(sample.result["query_locations"], sample.gt_masks))
    metrics = run.record.metrics
    return {"run": run_dir.name, "ia_loss": ia_loss_variant(run.cfg),
            "mask_ap": round(metrics["ap"], 2) if "ap" in metrics else None,
            "num_ia_queries": run.cfg.model.num_ia_queries,
            "weights": run.weights.name if run.weights else None,
            "trained_on": (run.record.provenance or {}).get("hardware", "unknown hardware"),
            **{k: (round(v, 4) if isinstance(v, float) else
                   {kk: round(vv, 4) for kk, vv in v.items()} if isinstance(v, dict) else v)
               for k, v in summarize(per_image).items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, or names under --runs-root")
    parser.add_argument("--runs-root", default="results/runs")
    parser.add_argument("--images", type=int, default=200, help="first N val images")
    parser.add_argument("--data-root", default=None, help="replaces the runs' data.root")
    parser.add_argument("--preset", default="tiny", help="the runs' preset, for the label")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    try:
        if args.images < 1:
            raise UserError(f"--images {args.images}: must be >= 1")
        runs_root = paths.resolve(args.runs_root)
        rows = []
        for name in args.runs:
            row = measure_run(_run_dir(name, runs_root), args.images, args.data_root)
            rows.append(row)
            print(f"{row['run']} ({row['ia_loss']}, AP {row['mask_ap']}): queries inside objects "
                  f"median {row['share_inside']['median']:.3f} mean {row['share_inside']['mean']:.3f} "
                  f"(object area {row['object_area_share']['mean']:.3f}), "
                  f"{row['queries_per_object']:.2f} queries/object, {row['objects_hit']:.3f} objects hit")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "python tests/benchmarks/bench_query_foreground.py " + " ".join(
        [*args.runs, "--runs-root", args.runs_root, "--images", str(args.images)]
        + (["--data-root", args.data_root] if args.data_root else []))
    result = {"what": "FastInst IA-guided query locations against the GT object masks of the "
                      "first val images (paper Figure 3 in numbers)",
              "preset": args.preset, "command": command,
              "rule": "a location (x, y) is in the mask pixel [floor(y), floor(x)]; outside the "
                      "unpadded image it is outside every object",
              "baseline": "object_area_share: the share_inside of uniformly placed queries",
              "runs": rows, "provenance": provenance()}
    atomic_write_json(args.out, result)
    print(f"wrote {paths.display(Path(args.out).resolve())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
