"""`rtinst pretrain`: train the tiny preset's backbone once (stand-in for ImageNet)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from rtinst.models.backbones import TINY_WEIGHTS


def run(args: argparse.Namespace) -> int:
    from rtinst.diagnostics.pretrain import CropScale, PretrainConfig, pretrain

    given = {f.name: getattr(args, f.name) for f in fields(PretrainConfig)
             if getattr(args, f.name, None) is not None}
    if "scales" in given:
        given["scales"] = tuple(CropScale.parse(text) for text in given["scales"])
    cfg = PretrainConfig(**given)
    card = pretrain(cfg, args.out, progress=not args.quiet)
    print(f"wrote {args.out} ({card['iterations']} iterations, {card['minutes']} min, held-out "
          f"crop accuracy {card['held_out_accuracy']:.3f} on {card['held_out_objects']} objects, "
          f"sha256 {card['sha256'][:12]})"
          + (f"; objects in full images by level {card['held_out_object_accuracy']}"
             if "held_out_object_accuracy" in card else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the tiny backbone on a separate synthetic split",
        description="Train the tiny backbone to classify object-centred crops of a synthetic "
        "split generated with its own seed (never the runs' train/val images): the tiny "
        "preset's stand-in for ImageNet pretraining. Writes the weights and a JSON card "
        "(settings, hash, held-out accuracy per crop size) next to them.",
    )
    p.add_argument("--out", default=str(TINY_WEIGHTS), help=f"weights file (default {TINY_WEIGHTS})")
    p.add_argument("--data-root", dest="data_root", help="where the pretraining split is generated")
    p.add_argument("--images", dest="num_images", type=int, help="images in the split (default 6000)")
    p.add_argument("--holdout-images", dest="holdout_images", type=int,
                   help="images whose objects are held out for accuracy (default 200)")
    p.add_argument("--seed", type=int, help="seed of the split (default 1000; runs use 0)")
    p.add_argument("--iters", type=int, help="steps; the cosine lr schedule spans them (default 15000)")
    p.add_argument("--scale", dest="scales", action="append", metavar="CROP:LOW:HIGH:BATCH",
                   help="a crop kind, repeatable, cycled step by step: crop side px, context "
                   "range (crop side / object side), crops per step (default 64:1.2:3.0:64, "
                   "stage 1; `make tiny-backbone` shows both stages)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default 2e-3)")
    p.add_argument("--warmup-iters", dest="warmup_iters", type=int, help="linear warm-up steps (default 200)")
    p.add_argument("--init", help="start from these backbone weights (a second stage) instead of random")
    p.add_argument("--object-steps", dest="object_steps", type=int,
                   help="per cycle of crop steps, this many steps of mask-pooled object "
                   "classification on full images (stage 3; default 0)")
    p.add_argument("--object-batch", dest="object_batch", type=int,
                   help="full images per object step (default 8)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
