"""``rtinst data``: generate the embedded synthetic dataset, or check a COCO dataset.

Heavy modules (torch, pycocotools) are imported inside the handlers so ``rtinst --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rtinst.data.difficulty import (CLUTTER_LEVELS, DEFAULT_DIFFICULTY, DIFFICULTIES, TEXTURES,
                                    resolve_difficulty)
from rtinst.cli.config import add_override_argument, load_checked
from rtinst.errors import UserError

MAX_PRINTED_ERRORS = 20


def _range(text: str, kind: type) -> tuple:
    parts = text.split("-")
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX (e.g. 2-4), got {text!r}")
    return values


def _int_range(text: str) -> tuple[int, int]:
    return _range(text, int)


def _float_range(text: str) -> tuple[float, float]:
    return _range(text, float)


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _describe(d) -> str:
    size = "COCO-like areas" if d.object_size is None else \
        f"sqrt(area) {d.object_size[0]:g}-{d.object_size[1]:g} px"
    textures = "all textures" if len(d.textures) > 1 and d.textures == TEXTURES else ",".join(d.textures)
    return (f"{d.size} px, {d.objects[0]}-{d.objects[1]} objects, {size}, {textures}, "
            f"{d.clutter} clutter")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="generate the synthetic dataset or check a COCO dataset",
        description="Dataset tools: `synthetic` writes the embedded COCO-format shapes dataset; "
                    "`check` validates a COCO instance-segmentation annotation file and its images.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="{synthetic,check}", required=True)

    syn = sub.add_parser(
        "synthetic",
        help="generate the synthetic COCO-format dataset",
        description="Generate the embedded synthetic instance-segmentation dataset: 10 shape "
                    "classes with random textures and colours on cluttered backgrounds, with "
                    "occlusion, touching same-class pairs, crowd regions and COCO small/medium/"
                    "large objects. Writes DIR/annotations/instances_{train,val}.json, images in "
                    "DIR/train and DIR/val, and DIR/statistics.json, then prints the statistics. "
                    "The same arguments give byte-identical files, whatever --workers is. "
                    "--difficulty picks a named level (hard: the embedded dataset); the knobs "
                    "after it change one aspect of that level. --config CONFIG instead writes "
                    "the dataset a run config wants (data.synthetic_*) into its data.root, or "
                    "skips when that folder holds it already.",
    )
    syn.add_argument("--out", type=Path, metavar="DIR",
                     help="output folder (required unless --config: then it replaces data.root)")
    syn.add_argument("--config", metavar="CONFIG",
                     help="run config (YAML) whose data section names the dataset: images "
                          "(data.synthetic_train/val/seed/size), level (data.synthetic_difficulty) "
                          "and knobs (data.synthetic_knobs); not with the options below")
    add_override_argument(syn)
    syn.add_argument("--train", type=int, metavar="N", help="training images (default 2000)")
    syn.add_argument("--val", type=int, metavar="M", help="validation images (default 500)")
    syn.add_argument("--seed", type=int, metavar="S", help="random seed (default 0)")
    syn.add_argument("--difficulty", choices=sorted(DIFFICULTIES),
                     help="named level: " + "; ".join(f"{name}: {_describe(d)}" for name, d in
                                                      DIFFICULTIES.items())
                     + f" (default {DEFAULT_DIFFICULTY}, the embedded dataset). The options "
                     "below replace single knobs of the level")
    syn.add_argument("--size", type=int, default=None, metavar="PX",
                     help="long image edge in pixels; short edges vary (default: the level's)")
    syn.add_argument("--objects", type=_int_range, metavar="MIN-MAX",
                     help="objects planned per image, uniform (a touching same-class partner and "
                          "a crowd region may add one each)")
    syn.add_argument("--object-size", type=_float_range, metavar="MIN-MAX",
                     help="sqrt(area) in pixels at the stored size, log-uniform "
                          "(instead of the COCO-like small/medium/large mixture)")
    syn.add_argument("--textures", type=_names, metavar="A,B",
                     help=f"object textures drawn from, of {','.join(TEXTURES)}")
    syn.add_argument("--clutter", choices=CLUTTER_LEVELS,
                     help="background: full (colour field, faint texture, blobs, lines), light "
                          "(colour field and faint texture), none (one flat colour); pixel noise always")
    syn.add_argument("--pairs", type=float, metavar="P",
                     help="chance of a touching same-class pair per image (hard 0.4)")
    syn.add_argument("--crowds", type=float, metavar="P",
                     help="chance of an iscrowd=1 cluster per image (hard 0.05)")
    syn.add_argument("--no-occlusion", dest="occlusion", action="store_false", default=None,
                     help="objects never overlap (placements that would are rejected)")
    syn.add_argument("--workers", type=int, default=None, metavar="W",
                     help="worker processes (default: number of CPUs, at most 8)")
    syn.set_defaults(func=run_synthetic)

    check = sub.add_parser(
        "check",
        help="validate a COCO annotation file and its images",
        description="Validate a COCO instance-segmentation dataset: JSON syntax, top-level keys, "
                    "image files and sizes, image/category ids of annotations, decodable "
                    "segmentations. Degenerate annotations COCO tolerates (empty or < 3-point "
                    "polygons, zero-area masks, zero-size boxes) are reported in one warning line "
                    "and skipped by rtinst. Prints a summary when the dataset is valid.",
        epilog="exit status: 0 valid (warnings allowed), 1 problems found, 2 usage error",
    )
    check.add_argument("--ann", required=True, type=Path, metavar="FILE", help="COCO annotation JSON file")
    check.add_argument("--images", type=Path, metavar="DIR",
                       help="folder the images' file_name is relative to (required unless --no-image-check)")
    check.add_argument("--no-image-check", dest="check_images", action="store_false",
                       help="do not check that image files exist and have the declared size")
    check.set_defaults(func=run_check)


# The options a run config's data section replaces (argparse dest -> option).
GENERATOR_OPTIONS = {"train": "--train", "val": "--val", "seed": "--seed",
                     "difficulty": "--difficulty", "size": "--size", "objects": "--objects",
                     "object_size": "--object-size", "textures": "--textures",
                     "clutter": "--clutter", "pairs": "--pairs", "crowds": "--crowds",
                     "occlusion": "--no-occlusion"}


def run_synthetic(args: argparse.Namespace) -> int:
    if args.config is not None or args.override:
        return _synthetic_from_config(args)
    if args.out is None:
        raise UserError("data synthetic: --out DIR is required (or --config CONFIG)")
    from rtinst.data.stats import format_statistics
    from rtinst.data.synthetic import generate_synthetic

    difficulty = resolve_difficulty(args.difficulty or DEFAULT_DIFFICULTY, size=args.size, objects=args.objects,
                                    object_size=args.object_size, textures=args.textures,
                                    clutter=args.clutter, pair_probability=args.pairs,
                                    crowd_probability=args.crowds, occlusion=args.occlusion)
    start = time.perf_counter()
    stats = generate_synthetic(args.out, num_train=2000 if args.train is None else args.train,
                               num_val=500 if args.val is None else args.val, seed=args.seed or 0,
                               workers=args.workers, progress=True, difficulty=difficulty)
    elapsed = time.perf_counter() - start
    print(format_statistics(stats))
    print(f"\nwrote {args.out} in {elapsed:.1f} s (statistics in {Path(args.out) / 'statistics.json'})")
    return 0


def _synthetic_from_config(args: argparse.Namespace) -> int:
    """The dataset of a run config, as a run would generate it on first use (ensure_synthetic)."""
    from dataclasses import replace

    from rtinst.data.build import ensure_synthetic
    from rtinst.data.stats import format_statistics
    from rtinst.paths import resolve

    given = [flag for dest, flag in GENERATOR_OPTIONS.items() if getattr(args, dest) is not None]
    if given:
        raise UserError(f"data synthetic: {given[0]} does not go with --config/-o; set the config's "
                        "data.synthetic_* keys instead (e.g. -o data.synthetic_knobs.objects=[1,3])")
    cfg = load_checked(args.config, args.override)
    data = cfg.data if args.out is None else replace(cfg.data, root=str(args.out))
    if data.dataset != "synthetic":
        raise UserError(f"{args.config or 'the default config'}: data.dataset is {data.dataset!r}, "
                        "not 'synthetic': nothing to generate")
    root = resolve(data.root)
    start = time.perf_counter()
    if not ensure_synthetic(data, progress=True, workers=args.workers):
        print(f"{root} already holds this dataset (delete it to regenerate)")
        return 0
    elapsed = time.perf_counter() - start
    print(format_statistics(json.loads((root / "statistics.json").read_text())))
    print(f"\nwrote {root} in {elapsed:.1f} s (statistics in {root / 'statistics.json'})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from rtinst.data.validate import validate_coco

    if not args.ann.exists():
        raise UserError(f"annotation file not found: {args.ann}")
    if args.check_images:
        if args.images is None:
            raise UserError("--images DIR is required (or pass --no-image-check)")
        if not args.images.is_dir():
            raise UserError(f"image folder not found: {args.images}")
    report = validate_coco(args.ann, args.images, check_images=args.check_images)
    for line in report.warning_lines():
        print(f"warning: {line}", file=sys.stderr)
    if report.errors:
        for line in report.errors[:MAX_PRINTED_ERRORS]:
            print(f"error: {line}", file=sys.stderr)
        if len(report.errors) > MAX_PRINTED_ERRORS:
            print(f"error: ... and {len(report.errors) - MAX_PRINTED_ERRORS} more problems", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
