"""`rtinst viz iam|prototypes|queries|tide|curve|confusion --run RUN --out DIR`: figures of trained runs."""

from __future__ import annotations

import argparse

from rtinst.errors import UserError


def _indices(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--images {text!r}: expected comma-separated val image positions, e.g. 0,1,2") from None
    if not values:
        raise UserError("--images: give at least one val image position")
    return values


def run(args: argparse.Namespace) -> int:
    from rtinst.engine.tide import use_agg_backend

    use_agg_backend()
    from rtinst.viz import render

    runs = args.run
    if args.kind not in ("queries", "tide", "curve") and len(runs) > 1:
        raise UserError(f"rtinst viz {args.kind}: takes one --run (got {len(runs)})")
    if args.labels is not None and len(args.labels) != len(runs):
        raise UserError(f"--label given {len(args.labels)} times for {len(runs)} --run folders")
    images = _indices(args.images) if args.images else None
    kw = {"data_root": args.data_root}
    if args.kind == "iam":
        written = render.render_iam(runs[0], args.out, images or [0, 1], args.average_images, **kw)
    elif args.kind == "prototypes":
        written = render.render_prototypes(runs[0], args.out, images or [0, 1, 2], **kw)
    elif args.kind == "confusion":
        written = render.render_confusion(runs[0], args.out, **kw)
    elif args.kind == "queries":
        written = render.render_queries(runs, args.out, images or [0, 1], args.labels, args.min_score, **kw)
    elif args.kind == "curve":
        written = render.render_curve(runs, args.out, args.labels, args.goal)
    else:
        written = render.render_tide(runs, args.out, args.labels)
    for path in written:
        print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "viz", help="figures of trained runs: IAMs, prototypes, query locations, TIDE",
        description="Render the analysis figures of trained runs (run folders with record.json, "
        "config.yaml and checkpoints/last.pt or the compact model_fp16.pt) as PNG files in --out. iam: SparseInst IAMs per "
        "detection and their mean over the val split per group. prototypes: YOLACT prototypes, "
        "coefficients and the mask assembly. queries: FastInst IA-guided query locations of each "
        "--run (e.g. the Table 6f IA-loss variants) beside the ground truth; a run without "
        "weights is drawn from its predictions_snapshot.json (rtinst records compact --analysis). tide: dAP per TIDE "
        "error type across runs (records only, no checkpoint needed). curve: mask AP vs training "
        "minutes and steps across runs (their curve.json, recorded with train.snapshot_iters). confusion: ground-truth class "
        "x predicted class of the objects a run localized (from its coco_segm_results.json, else "
        "from the predictions of its restored model).",
    )
    p.add_argument("kind", choices=["iam", "prototypes", "queries", "tide", "curve", "confusion"])
    p.add_argument("--run", action="append", required=True, metavar="RUN_DIR",
                   help="run folder (repeatable for queries, tide and curve)")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--images", help="val image positions, comma-separated (default 0,1 / 0,1,2)")
    p.add_argument("--label", dest="labels", action="append", help="legend name per --run (repeatable)")
    p.add_argument("--data-root", help="replace the runs' data.root (data moved or relative paths)")
    p.add_argument("--average-images", type=int, default=100,
                   help="iam: val images averaged for the mean IAMs (default 100)")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="queries: detections at or above this score are highlighted (default 0.3)")
    p.add_argument("--goal", type=float, help="curve: draw this AP as a dashed goal line")
    p.set_defaults(func=run)
