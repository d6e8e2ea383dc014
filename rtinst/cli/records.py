"""`rtinst records`: list the run records under a folder as a table."""

from __future__ import annotations

import argparse

import pandas as pd

from rtinst.errors import UserError
from rtinst.records import load_records


def list_records(args: argparse.Namespace) -> int:
    df = load_records(args.root, config_keys=args.config_key or [])
    if df.empty:
        raise UserError(f"{args.root}: no run records (record.json) found")
    if args.out:
        from rtinst.io import atomic_path

        with atomic_path(args.out) as tmp:
            df.to_csv(tmp, index=False)
    with pd.option_context("display.max_columns", 30, "display.width", 200):
        print(df.drop(columns=["run_dir"]).to_string(index=False))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "records", help="list run records as a table",
        description="Collect every run record (record.json) under a folder into one table.",
    )
    sub = parser.add_subparsers(dest="records_command", metavar="SUBCOMMAND")
    p = sub.add_parser("list", help="print (and optionally save) the records table")
    p.add_argument("root", help="folder searched recursively for record.json files")
    p.add_argument("--config-key", action="append", metavar="DOTTED.KEY",
                   help="config keys to show as columns, e.g. model.decoder_layers (repeatable)")
    p.add_argument("--out", help="also write the table as CSV")
    p.set_defaults(func=list_records)
