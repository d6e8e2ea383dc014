"""`rtinst pretrain`: train the tiny preset's backbone once (stand-in for ImageNet)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from rtinst.models.backbones import TINY_WEIGHTS


def run(args: argparse.Namespace) -> int:
    from rtinst.engine.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)
                            if getattr(args, f.name, None) is not None})
    card = pretrain(cfg, args.out, progress=not args.quiet)
    print(f"wrote {args.out} ({card['iterations']} iterations, {card['minutes']} min, held-out "
          f"crop accuracy {card['held_out_accuracy']:.3f} on {card['held_out_objects']} objects, "
          f"sha256 {card['sha256'][:12]})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the tiny backbone on a separate synthetic split",
        description="Train the tiny backbone to classify object-centred crops of a synthetic "
        "split generated with its own seed (never the runs' train/val images): the tiny "
        "preset's stand-in for ImageNet pretraining. Writes the weights and a JSON card "
        "(settings, hash, held-out accuracy) next to them.",
    )
    p.add_argument("--out", default=str(TINY_WEIGHTS), help=f"weights file (default {TINY_WEIGHTS})")
    p.add_argument("--data-root", dest="data_root", help="where the pretraining split is generated")
    p.add_argument("--images", dest="num_images", type=int, help="images in the split (default 6000)")
    p.add_argument("--holdout-images", dest="holdout_images", type=int,
                   help="images whose objects are held out for accuracy (default 200)")
    p.add_argument("--seed", type=int, help="seed of the split (default 1000; runs use 0)")
    p.add_argument("--iters", type=int, help="steps; the cosine lr schedule spans them (default 20000)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="crops per step (default 64)")
    p.add_argument("--crop-size", dest="crop_size", type=int, help="crop side in px (default 64)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default 2e-3)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
