"""`rtinst config show`: print a resolved config and its hash."""

from __future__ import annotations

import argparse

from rtinst.config import load_config, to_yaml
from rtinst.records import config_hash


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, repeatable, e.g. -o model.decoder_layers=1 -o train.lr=2e-4 "
        "(values are parsed as YAML: 1, 0.5, true, null, [1, 2])",
    )


def show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.override)
    print(f"# config hash: {config_hash(cfg)}")
    print(to_yaml(cfg), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="inspect run configs",
        description="Inspect run configs (YAML + dotted overrides, validated against rtinst.config).",
    )
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    p = sub.add_parser(
        "show", help="print the resolved config and its hash",
        description="Read CONFIG (YAML; may name a `base:` YAML), apply overrides, validate every "
        "key and value, and print the full resolved config with its content hash (the run-cache key).",
    )
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file (omit to start from the defaults)")
    add_override_argument(p)
    p.set_defaults(func=show)
