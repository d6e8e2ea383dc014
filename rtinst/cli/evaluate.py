"""``rtinst evaluate``: COCO mask AP/AR (and optionally TIDE) of a results file, or of a
checkpoint on a config's val split (``--config C --checkpoint W``: AP, TIDE, FPS, record)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtinst.cli.config import add_override_argument
from rtinst.engine.evaluate import BACKENDS, evaluate_segm, format_metrics
from rtinst.errors import UserError
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

With --config CONFIG.yaml --checkpoint W.pt instead, the weights (an rtinst checkpoint,
e.g. from `rtinst convert`) are evaluated on CONFIG's val split as a training run ends:
COCO mask AP, TIDE (when eval.tide), CPU/GPU latency at batch 1, and a run record with the
checkpoint's sha256 in results/evaluations/<model>-<preset>-<config hash>-<sha256[:8]>/
(--out DIR elsewhere; --as-run: the config's own run folder, where tables look for it).

examples:
  rtinst evaluate --config rtinst/configs/sparseinst/coco.yaml --checkpoint weights/sparseinst_r50_giam.pt
  rtinst evaluate --gt data/synthetic/annotations/instances_val.json --results coco_segm_results.json
  rtinst evaluate --gt GT.json --results RES.json --tide --tide-plot-dir plots --out metrics.json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="COCO mask AP/AR (+ TIDE errors) of a results file or a checkpoint",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gt", metavar="GT.json", help="COCO-format ground-truth annotations")
    p.add_argument("--results", metavar="RES.json",
                   help="COCO results list (compressed RLE masks at original image size)")
    p.add_argument("--config", help="YAML run config (with --checkpoint): evaluate weights on its val split")
    add_override_argument(p)
    p.add_argument("--checkpoint", type=Path, metavar="W.pt", help="rtinst checkpoint (with --config)")
    p.add_argument("--as-run", action="store_true",
                   help="with --checkpoint: write into the config's run folder "
                   "(<output_dir>/<model>-<preset>-<hash>) so tables use it")
    p.add_argument("--no-latency", action="store_true", help="with --checkpoint: skip the latency timing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--backend", choices=BACKENDS, default="faster_coco_eval",
                   help="COCO evaluation library (default: %(default)s; same numbers)")
    p.add_argument("--tide", action="store_true", help="also compute TIDE's error breakdown (mask mode)")
    p.add_argument("--tide-plot-dir", metavar="DIR", type=Path,
                   help="save TIDE's summary plot as DIR/<name>_mask_summary.png (implies --tide)")
    p.add_argument("--name", default=None,
                   help="run name used in the TIDE plot (default: the results file name without .json)")
    p.add_argument("--out", metavar="PATH", type=Path,
                   help="results-file mode: write all metrics, the input paths and provenance to "
                   "this JSON file (atomically); checkpoint mode: the record folder")
    p.add_argument("--verbose", action="store_true", help="show the evaluation libraries' own output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is not None or args.config is not None:
        return run_checkpoint(args)
    if args.gt is None or args.results is None:
        raise UserError("rtinst evaluate: give --gt and --results (a results file), or --config "
                        "and --checkpoint (weights)")
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


def run_checkpoint(args: argparse.Namespace) -> int:
    if args.config is None or args.checkpoint is None:
        raise UserError("rtinst evaluate: --config and --checkpoint go together")
    if args.gt is not None or args.results is not None:
        raise UserError("rtinst evaluate: --gt/--results evaluate a results file; with "
                        "--checkpoint the ground truth is the config's val split")
    if not args.checkpoint.is_file():
        raise UserError(f"--checkpoint {args.checkpoint}: file not found")
    from rtinst import paths
    from rtinst.config import load_config
    from rtinst.engine.checkpoint_eval import evaluate_checkpoint
    from rtinst.io import file_sha256
    from rtinst.records import config_hash, read_record, run_dir_for

    cfg = load_config(args.config, args.override)
    sha = file_sha256(args.checkpoint)
    if args.as_run:
        run_dir = run_dir_for(cfg, paths.resolve(cfg.output_dir))  # where the sweep looks
        if (run_dir / "record.json").is_file():
            old = read_record(run_dir)
            if old.provenance.get("checkpoint_sha256") != sha:
                raise UserError(f"{run_dir}: already holds a run of this config not made from "
                                f"{args.checkpoint}; move it away or use --out")
    elif args.out is not None:
        run_dir = args.out
    else:
        run_dir = paths.resolve("results/evaluations") / (
            f"{cfg.model.name}-{cfg.preset}-{config_hash(cfg)}-{sha[:8]}")
    record = evaluate_checkpoint(cfg, args.checkpoint, run_dir, progress=not args.quiet,
                                 latency=not args.no_latency)
    print(format_metrics(record.metrics))
    if "fps" in record.metrics:
        lat = record.provenance["latency"]
        print(f"  {lat['kind']}: {record.metrics['latency_ms']:.1f} ms = {record.metrics['fps']:.1f} FPS "
              f"at {lat['input_size'][0]}x{lat['input_size'][1]} ({lat['hardware']})")
    print(f"record: {run_dir / 'record.json'}")
    return 0
