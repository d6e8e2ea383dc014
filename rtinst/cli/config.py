"""`rtinst config show` (a resolved config and its hash) and `rtinst config recipe` (it beside
the official training recipe)."""

from __future__ import annotations

import argparse

from rtinst.config import ConfigError, load_config, to_yaml
from rtinst.config_schema import RunConfig
from rtinst.data.difficulty import config_difficulty
from rtinst.recipe import DIFF, OFFICIAL_RECIPES, check_recipe, format_recipe
from rtinst.records import config_hash


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, repeatable, e.g. -o model.decoder_layers=1 -o train.lr=2e-4 "
        "(values are parsed as YAML: 1, 0.5, true, null, [1, 2])",
    )


def load_checked(path: str | None, overrides: list[str]) -> RunConfig:
    """``load_config``, and the synthetic level and knobs resolved, so that `config show` and
    `data synthetic` report a bad one (naming the file) as the key errors of load_config."""
    cfg = load_config(path, overrides)
    if cfg.data.dataset == "synthetic":
        try:
            config_difficulty(cfg.data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
    return cfg


def show(args: argparse.Namespace) -> int:
    cfg = load_checked(args.config, args.override)
    print(f"# config hash: {config_hash(cfg)}")
    print(to_yaml(cfg), end="")
    return 0


def recipe(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.override)
    lines = check_recipe(cfg, path=args.official)
    print(format_recipe(lines), end="")
    diffs = [ln.key for ln in lines if ln.status == DIFF]
    print(f"# {cfg.model.name}: {len(lines)} keys, {len(diffs)} unrecorded difference(s)"
          + (f": {', '.join(diffs)}" if diffs else ""))
    return 1 if diffs else 0


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
    p = sub.add_parser(
        "recipe", help="print the resolved training recipe beside the official one",
        description="Resolve CONFIG (+ overrides) and print one line per official recipe key "
        "(solver, schedule, augmentations, sizes, loss/matcher weights, thresholds, backbone "
        "init, BN, DCN): key, ours, official, [ok | DIFF | accepted: reason | not in this "
        "build], source. Exit status 1 when an unrecorded difference (DIFF) exists.",
    )
    p.add_argument("config", help="YAML config file, e.g. rtinst/configs/fastinst/coco.yaml")
    add_override_argument(p)
    p.add_argument("--official", default=str(OFFICIAL_RECIPES), metavar="YAML",
                   help="official-recipe file (default: %(default)s)")
    p.set_defaults(func=recipe)
