"""The ``rtinst`` command line: one sub-command per module, each registered explicitly.

User mistakes (``rtinst.errors.UserError``) print as one line ``error: ...`` with exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rtinst import __version__
from rtinst.errors import UserError

# Each module defines register(subparsers). Order = order in `rtinst --help`.
COMMAND_MODULES = [
    "rtinst.cli.data",
    "rtinst.cli.config",
    "rtinst.cli.train",
    "rtinst.cli.pretrain",
    "rtinst.cli.evaluate",
    "rtinst.cli.convert",
    "rtinst.cli.predict",
    "rtinst.cli.bench",
    "rtinst.cli.records",
    "rtinst.cli.sweep",
    "rtinst.cli.reproduce",
    "rtinst.cli.viz",
    "rtinst.cli.export",
]

DESCRIPTION = """\
rtinst: an ablation harness for real-time instance segmentation
(FastInst, SparseInst, YOLACT). Typical flow:

  rtinst data synthetic --out data/synthetic     # the embedded COCO-format dataset
  rtinst data check --ann A.json --images DIR    # validate your own COCO data
  rtinst config show CONFIG -o model.decoder_layers=1
  rtinst evaluate --gt GT.json --results RES.json --tide
  rtinst bench flops --model resnet50 --size 640x864
  rtinst viz iam --run results/runs/RUN --out results/figures/sparseinst

Run `rtinst COMMAND --help` for each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtinst", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"rtinst {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Library warnings (skipped degenerate annotations, ...) print as one line each.
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
