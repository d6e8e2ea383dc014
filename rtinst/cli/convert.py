"""``rtinst convert CKPT --from MODEL --config CONFIG.yaml --out OUT.pt``: official weights in."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtinst.cli.config import add_override_argument

DESCRIPTION = """\
Convert an official checkpoint into an rtinst checkpoint for CONFIG's model.

CKPT: a detectron2 .pth or .pkl holding the weights under "model" (FastInst, SparseInst)
or YOLACT's bare .pth state dict. .pth files are read with torch.load(weights_only=True),
.pkl files by an unpickler that only allows numpy arrays. Every checkpoint key is mapped
onto the model CONFIG builds (with -o overrides); a key that cannot be mapped, a missing
key or a shape mismatch stops the conversion with one line naming the key and the -o
overrides the checkpoint needs. The ImageNet backbone file is never read
(model.backbone.pretrained=none is implied). OUT.pt loads with `rtinst evaluate --config
CONFIG.yaml --checkpoint OUT.pt` and `rtinst predict`, with the same config and overrides.

examples:
  rtinst convert sparse_inst_r50_giam.pth --from sparseinst \\
      --config rtinst/configs/sparseinst/coco.yaml --out weights/sparseinst_r50_giam.pt
  rtinst convert fastinst_R50_ppm-fpn_x1_576.pth --from fastinst \\
      --config rtinst/configs/fastinst/coco.yaml -o model.decoder_layers=1 --out weights/fastinst_d1.pt
  rtinst convert yolact_resnet50_54_800000.pth --from yolact \\
      --config rtinst/configs/yolact/coco.yaml -o model.backbone.name=resnet50 \\
      -o model.square_anchors=true --out weights/yolact_r50.pt
"""


def run(args: argparse.Namespace) -> int:
    from rtinst.config import load_config, to_dict
    from rtinst.records import config_hash
    from rtinst.engine.checkpoint import save_checkpoint
    from rtinst.io import file_sha256
    from rtinst.models.convert import convert_official, load_official_state

    cfg = load_config(args.config, args.override)
    official = load_official_state(args.checkpoint)  # fails before any model is built
    conv = convert_official(official, args.source, cfg.model, label=str(args.checkpoint))
    provenance = {"file": str(args.checkpoint), "sha256": file_sha256(args.checkpoint),
                  "from": args.source, "config": str(args.config), "overrides": list(args.override),
                  "config_hash": config_hash(cfg), "dropped": conv.dropped,
                  "transformed": conv.transformed}
    save_checkpoint(args.out, model=conv.state, converted_from=provenance,
                    config=to_dict(cfg.model))
    n = sum(v.numel() for v in conv.state.values() if v.is_floating_point())
    print(f"{args.checkpoint}: {len(official)} tensors -> {len(conv.state)} rtinst tensors "
          f"({n:,} values), {len(conv.transformed)} changed beyond renaming")
    for key, what in sorted(conv.transformed.items()):
        if not key.startswith("layers."):  # per-layer q/k/v splits: summarised below
            print(f"  {key}: {what}")
    splits = sum(1 for k in conv.transformed if k.startswith("layers."))
    if splits:
        print(f"  {splits} decoder-layer q/k/v projections: rows of the packed in_proj")
    for key in conv.dropped:
        print(f"  dropped {key} (loss buffer, not a model weight)")
    for note in conv.notes:
        print(f"note: {note}")
    print(f"wrote {args.out}")
    return 0


def register(subparsers) -> None:
    from rtinst.models.convert import SOURCES

    p = subparsers.add_parser("convert",
                              help="official FastInst / SparseInst / YOLACT checkpoint -> rtinst",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="official .pth or .pkl checkpoint")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES,
                   help="which official code base trained it")
    p.add_argument("--config", required=True, help="rtinst YAML config of the same model")
    add_override_argument(p)
    p.add_argument("--out", required=True, type=Path, metavar="OUT.pt",
                   help="rtinst checkpoint to write")
    p.set_defaults(func=run)
