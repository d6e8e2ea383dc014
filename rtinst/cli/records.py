"""`rtinst records`: list the run records under a folder as a table; archive stale runs;
compact runs' checkpoints."""

from __future__ import annotations

import argparse

import pandas as pd

from rtinst.errors import UserError, did_you_mean
from rtinst.records import load_records

# what a reader scans first; fits a 120-character terminal (hashes are 12 characters)
DEFAULT_COLUMNS = ("config_hash", "status", "model", "preset", "seed", "wall_time_s", "ap", "ap50",
                   "error")
MAX_CELL = 24  # longer cells (errors, paths) are cut to this many characters by default


def select_columns(df: pd.DataFrame, columns: str | None, config_keys: list[str]) -> pd.DataFrame:
    """``columns``: comma-separated names, ``all``, or None for the default view (plus the
    ``--config-key`` columns asked for)."""
    if columns == "all":
        return df.drop(columns=["run_dir"])
    if columns is None:
        wanted = [c for c in DEFAULT_COLUMNS if c in df] + [f"config.{k}" for k in config_keys]
    else:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        for c in wanted:
            if c not in df:
                raise UserError(f"--columns: unknown column '{c}'"
                                f"{did_you_mean(c, list(df.columns), listing='columns')}")
    return df[wanted]


def format_records(df: pd.DataFrame, full: bool = False) -> str:
    shown = df.copy()
    for c in shown.columns:
        if not pd.api.types.is_numeric_dtype(shown[c]) and not full:
            shown[c] = shown[c].map(lambda v: v if not isinstance(v, str) or len(v) <= MAX_CELL
                                    else v[:MAX_CELL - 3] + "...")
    with pd.option_context("display.max_columns", None, "display.width", 10_000,
                           "display.float_format", "{:.2f}".format):
        return shown.to_string(index=False)


def list_records(args: argparse.Namespace) -> int:
    df = load_records(args.root, config_keys=args.config_key or [])
    if df.empty:
        raise UserError(f"{args.root}: no run records (record.json) found")
    view = select_columns(df, args.columns, args.config_key or [])
    if args.out:
        from rtinst.io import atomic_path

        with atomic_path(args.out) as tmp:
            df.to_csv(tmp, index=False)
    print(format_records(view, full=args.columns is not None))
    return 0


def archive_records(args: argparse.Namespace) -> int:
    from rtinst import paths
    from rtinst.harness.archive import archive_runs, checks_table

    result = archive_runs(paths.resolve(args.runs_dir), paths.resolve(args.archive_dir),
                          dry_run=args.dry_run)
    table = checks_table(result.checks)
    if not table.empty:
        print(format_records(table, full=True))
    print(result.summary())
    for name, left in result.maps_kept.items():
        print(f"kept {name}: {left} of its old runs are still current")
    return 0


def _write_snapshot(run_dir):
    from rtinst.viz.run import load_run
    from rtinst.viz.snapshot import IMAGES, write_snapshot

    return write_snapshot(load_run(run_dir), IMAGES)


def compact_records(args: argparse.Namespace) -> int:
    from rtinst.engine.compact import DEFAULT_MAX_MB
    from rtinst.harness.analysis_runs import compact_analysis_runs, compact_runs

    if not args.runs and not args.analysis:
        raise UserError("rtinst records compact: give run folders or --analysis")
    max_mb = DEFAULT_MAX_MB if args.max_mb is None else args.max_mb
    report = compact_runs(args.runs, max_mb)
    if args.analysis:
        report.extend(compact_analysis_runs(args.preset, max_mb, snapshot=_write_snapshot))
    for line in report.lines():
        print(line)
    if report.refused:
        raise UserError("; ".join(report.refused))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "records", help="list run records as a table, archive stale runs, compact checkpoints",
        description="Collect every run record (record.json) under a folder into one table; "
        "move run folders that no current spec row matches out of the run cache.",
    )
    sub = parser.add_subparsers(dest="records_command", metavar="SUBCOMMAND")
    p = sub.add_parser("list", help="print (and optionally save) the records table")
    p.add_argument("root", help="folder searched recursively for record.json files")
    p.add_argument("--config-key", action="append", metavar="DOTTED.KEY",
                   help="config keys to show as columns, e.g. model.decoder_layers (repeatable)")
    p.add_argument("--columns", default=None, metavar="A,B,C",
                   help="columns to print, comma-separated (e.g. config_hash,status,error,ap), "
                   f"or all; default: {','.join(DEFAULT_COLUMNS)} plus the --config-key columns")
    p.add_argument("--out", help="also write the full table (every column) as CSV")
    p.set_defaults(func=list_records)
    p = sub.add_parser(
        "archive", help="move stale run folders out of the runs folder",
        description="A run folder is current when its config.yaml hashes to its folder name and "
        "is the config of a row of a spec under experiments/ at its preset and seed. Every other "
        "folder (hash mismatch, no current row, broken: no record.json or config.yaml) keeps its "
        "record.json and config.yaml under ARCHIVE_DIR/runs/<run>/, is listed in "
        "ARCHIVE_DIR/INDEX.csv with the commit that still holds the whole folder, and is removed "
        "from the runs folder. No table, sweep or notebook reads the archive.",
    )
    p.add_argument("--runs-dir", default="results/runs",
                   help="the run cache to clean (default: results/runs, under the repository root)")
    p.add_argument("--archive-dir", default="results/archive",
                   help="where stale runs go (default: results/archive)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be archived and change nothing")
    p.set_defaults(func=archive_records)
    p = sub.add_parser(
        "compact", help="write a run's float16 model_fp16.pt (committable) from its checkpoint",
        description="Write RUN/model_fp16.pt from RUN/checkpoints/last.pt: the model's weights in "
        "float16 (integer buffers exact), without optimizer state, so that rtinst viz and the "
        "analysis notebooks work without the (uncommitted) checkpoint. --analysis also writes "
        "RUN/predictions_snapshot.json of the rows marked 'weights: snapshot' in "
        "experiments/analysis_runs.yaml: the predictions on a few val images that their figure draws.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders")
    p.add_argument("--max-mb", type=float, default=None,
                   help="refuse to write a file larger than this many MB (default 6: the "
                   "SparseInst tiny model is 5.6 MB)")
    p.add_argument("--analysis", action="store_true",
                   help="every run of experiments/analysis_runs.yaml whose figure loads a model "
                   "(or, for 'weights: snapshot' rows, its predictions snapshot) and that has a "
                   "finished record and a checkpoint; lists the others with the command that "
                   "makes them")
    p.add_argument("--preset", default="tiny", choices=["smoke", "tiny", "coco"],
                   help="--analysis: the preset the runs are resolved at (default tiny)")
    p.set_defaults(func=compact_records)
