"""``rtinst predict --config C --checkpoint W --images DIR --out DIR``: masks drawn on each
image and a COCO results JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rtinst.cli.config import add_override_argument
from rtinst.errors import UserError

DESCRIPTION = """\
Run a checkpoint (an rtinst checkpoint, e.g. from `rtinst convert`) over every image of a
folder with CONFIG's test-time resizing, and write into --out:
  <image name>.png           the image with its masks drawn (score >= --min-score)
  coco_segm_results.json     every detection, COCO results format (compressed RLE)
  images.json                the COCO "images" section the results' image_id refer to
Category ids: those of --categories GT.json (a COCO file with the model's classes), else
COCO's 80 ids when the model has 80 classes, else 1..K.

example:
  rtinst predict --config rtinst/configs/sparseinst/coco.yaml \\
      --checkpoint weights/sparseinst_r50_giam.pt --images photos/ --out predictions/
"""

# COCO 2017's 80 thing categories (ids with gaps up to 90), in contiguous order.
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
            27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50,
            51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75,
            76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]


def _categories(path: Path | None, num_classes: int) -> tuple[list[int], list[str]]:
    """Category ids and names in the model's contiguous class order."""
    if path is not None:
        try:
            cats = sorted(json.loads(path.read_text())["categories"], key=lambda c: c["id"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"--categories {path}: cannot read its 'categories' ({e})") from None
        if len(cats) != num_classes:
            raise UserError(f"--categories {path}: {len(cats)} categories but the model has "
                            f"{num_classes} classes")
        return [int(c["id"]) for c in cats], [str(c.get("name", c["id"])) for c in cats]
    ids = COCO_IDS if num_classes == len(COCO_IDS) else list(range(1, num_classes + 1))
    return ids, [str(i) for i in ids]


def run(args: argparse.Namespace) -> int:
    from rtinst.config import load_config
    from rtinst.data.build import build_transforms, collate_fn
    from rtinst.data.folder import ImageFolder
    from rtinst.engine.checkpoint_eval import model_from_checkpoint
    from rtinst.engine.evaluate import masks_to_coco_results, write_results
    from rtinst.engine.inference import iter_predictions
    from rtinst.engine.tide import use_agg_backend
    from rtinst.engine.train import resolve_device
    from rtinst.io import atomic_write_json

    cfg = load_config(args.config, args.override)
    cat_ids, names = _categories(args.categories, cfg.model.num_classes)
    images = ImageFolder(args.images, build_transforms(cfg.data, train=False))
    model, _ = model_from_checkpoint(cfg, args.checkpoint)
    use_agg_backend()
    from rtinst.viz.predictions import draw_predictions

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for image_id, masks, scores, labels in iter_predictions(
            model, images, collate_fn(cfg.data), resolve_device(cfg.device),
            progress=not args.quiet):
        results += masks_to_coco_results(image_id, masks, scores,
                                         [cat_ids[int(c)] for c in labels.tolist()])
        keep = scores >= args.min_score
        draw_predictions(images.load_image(image_id - 1), masks[keep], labels[keep].tolist(),
                         scores[keep].tolist(), names,
                         args.out / f"{Path(images.info[image_id - 1]['file_name']).stem}.png")
    write_results(args.out / "coco_segm_results.json", results)
    atomic_write_json(args.out / "images.json", {"images": images.info})
    print(f"{len(images)} images, {len(results)} detections -> {args.out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="draw a checkpoint's masks on a folder of images",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML run config the checkpoint was made for")
    add_override_argument(p)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="W.pt", help="rtinst checkpoint")
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of images")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--categories", type=Path, metavar="GT.json",
                   help="COCO file whose categories name the classes (ids and names)")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="draw masks scoring at least this (default 0.3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
