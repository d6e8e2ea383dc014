"""`rtinst train`: train and evaluate one config; ends with AP and a run record."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtinst.cli.config import add_override_argument
from rtinst.config import load_config
from rtinst.records import config_hash, run_dir_for


def train(args: argparse.Namespace) -> int:
    from rtinst.engine.evaluate import format_metrics
    from rtinst.engine.loop import TrainingDiverged
    from rtinst.engine.train import run_training

    cfg = load_config(args.config, args.override)
    run_dir = Path(args.run_dir) if args.run_dir else run_dir_for(cfg, cfg.output_dir)
    print(f"run {config_hash(cfg)} -> {run_dir}", file=sys.stderr)
    try:
        record = run_training(cfg, run_dir, progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"error: run failed: {e} (recorded in {run_dir / 'record.json'})", file=sys.stderr)
        return 1
    print(format_metrics(record.metrics))
    print(f"record: {run_dir / 'record.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train + evaluate one config (resumes an interrupted run)",
        description="Train CONFIG, predict the val split, evaluate COCO mask AP (and TIDE when "
        "eval.tide), and write a run record. The run folder defaults to "
        "<output_dir>/<model>-<preset>-<config hash>; running again on the same folder resumes "
        "from its last checkpoint. Multi-GPU: torchrun --nproc_per_node=N -m rtinst train ...",
    )
    p.add_argument("--config", required=False, default=None, help="YAML run config")
    add_override_argument(p)
    p.add_argument("--run-dir", help="run folder (default: derived from the config hash)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=train)
