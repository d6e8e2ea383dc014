"""``rtinst evaluate``: COCO mask AP/AR (and optionally TIDE) of a results file."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtinst.engine.evaluate import BACKENDS, evaluate_segm, format_metrics
from rtinst.io import atomic_write_json

DESCRIPTION = """\
Evaluate instance-segmentation results against COCO-format ground truth.

RES.json is a COCO results list: one object per detection with image_id, category_id
(the dataset's own ids), score and a compressed-RLE segmentation at the original image
size. The numbers are pycocotools' summarize() definitions in percent (AP, AP50, AP75,
AP S/M/L, AR@1/10/100, AR S/M/L; "n/a" where the GT has no object of that size); both
backends give the same numbers (up to float rounding, ~1e-13), faster-coco-eval is faster
on large sets. With --tide, TIDE's error breakdown (dAP at IoU 0.5 for Cls, Loc, Both,
Dupe, Bkg, Miss, FalsePos, FalseNeg) is added; TIDE's own AP50 is reported separately
and is not the pycocotools AP50.

examples:
  rtinst evaluate --gt data/synthetic/annotations/instances_val.json --results coco_segm_results.json
  rtinst evaluate --gt GT.json --results RES.json --tide --tide-plot-dir plots --out metrics.json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="COCO mask AP/AR (+ TIDE errors) of a results file",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gt", required=True, metavar="GT.json", help="COCO-format ground-truth annotations")
    p.add_argument("--results", required=True, metavar="RES.json",
                   help="COCO results list (compressed RLE masks at original image size)")
    p.add_argument("--backend", choices=BACKENDS, default="faster_coco_eval",
                   help="COCO evaluation library (default: %(default)s; same numbers)")
    p.add_argument("--tide", action="store_true", help="also compute TIDE's error breakdown (mask mode)")
    p.add_argument("--tide-plot-dir", metavar="DIR", type=Path,
                   help="save TIDE's summary plot as DIR/<name>_mask_summary.png (implies --tide)")
    p.add_argument("--name", default=None,
                   help="run name used in the TIDE plot (default: the results file name without .json)")
    p.add_argument("--out", metavar="metrics.json", type=Path,
                   help="write all metrics, the input paths and provenance to this JSON file (atomically)")
    p.add_argument("--verbose", action="store_true", help="show the evaluation libraries' own output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    metrics = evaluate_segm(args.gt, args.results, backend=args.backend, verbose=args.verbose)
    print(format_metrics(metrics))
    if args.tide or args.tide_plot_dir is not None:
        from rtinst.engine.tide import format_tide, run_tide, use_agg_backend

        use_agg_backend()
        name = args.name or Path(args.results).stem
        tide = run_tide(args.gt, args.results, out_dir=args.tide_plot_dir, name=name)
        metrics.update(tide)
        print(format_tide(tide))
        if args.tide_plot_dir is not None and tide["tide_plot"] is None:
            print("  plot: skipped, every main TIDE error is zero (nothing to draw)")
    if args.out is not None:
        from rtinst.provenance import provenance

        record = dict(metrics, gt=str(args.gt), results=str(args.results), provenance=provenance())
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0
