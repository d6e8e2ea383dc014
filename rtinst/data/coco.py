"""A pycocotools-backed COCO instance segmentation dataset.

* Polygons and RLE (compressed string or uncompressed list counts) are decoded with
  ``pycocotools.mask``, exactly as ``COCO.annToMask`` does.
* Crowd regions (``iscrowd=1``) are not training instances and are dropped from the targets,
  as in detectron2/DETR training; COCO evaluation still sees them, because it reads the
  annotation file (``dataset.coco``) itself. ``keep_crowd=True`` (YOLACT) appends them after
  the instances, flagged by ``target["iscrowd"]``, for the transforms to carry them along
  until :class:`rtinst.data.augment.SplitCrowd` turns them into ``crowd_boxes``.
* Labels are contiguous 0..K-1 in the order of increasing category id;
  ``contiguous_to_cat_id`` / ``cat_id_to_contiguous`` map between them and the file's ids
  (write ``contiguous_to_cat_id[label]`` into detection results).
* The file is checked by :func:`rtinst.data.validate.validate_coco` first: errors raise a
  one-line :class:`rtinst.errors.UserError`; degenerate annotations are skipped with one
  warning on the ``rtinst.data`` logger.
* ``training=True`` skips images without usable instances (one warning with the count);
  ``training=False`` keeps every image, as evaluation needs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from PIL import Image, UnidentifiedImageError

from rtinst.data.transforms import masks_to_boxes
from rtinst.data.validate import validate_coco
from rtinst.errors import UserError

logger = logging.getLogger("rtinst.data")


def decode_segmentation(segm: Any, h: int, w: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) -> (h, w) bool mask.

    Polygons with fewer than 3 points are ignored (pycocotools would misread a 4-number
    polygon as a box).
    """
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((h, w), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(bool)


def load_coco(data: dict) -> COCO:
    """A pycocotools COCO index over an already-parsed annotation dict (quietly)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoInstanceDataset(torch.utils.data.Dataset):
    """``dataset[i] -> (image, target)``; see the module docstring and ``rtinst.data.transforms``.

    ``image``: float (3, H, W), 0-255 RGB before transforms. ``target``: ``masks`` (N, H, W)
    bool, ``boxes`` (N, 4) float xyxy from the masks, ``labels`` (N,) int64 contiguous,
    ``image_id`` int, ``orig_size`` and ``size`` (h, w).
    """

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                 transforms: Callable | None = None, training: bool = True, check_images: bool = True,
                 keep_crowd: bool = False):
        self.ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        if not self.image_dir.is_dir():
            raise UserError(f"image folder not found: {self.image_dir}")
        report = validate_coco(self.ann_file, self.image_dir, check_images=check_images)
        report.raise_for_errors()
        for line in report.warning_lines():
            logger.warning(line)
        self.coco = load_coco(report.data)
        self.transforms, self.training, self.keep_crowd = transforms, training, keep_crowd
        self._skip = set(report.degenerate)

        cat_ids = sorted(self.coco.cats)
        self.contiguous_to_cat_id: dict[int, int] = dict(enumerate(cat_ids))
        self.cat_id_to_contiguous: dict[int, int] = {c: i for i, c in enumerate(cat_ids)}
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in cat_ids]

        ids = sorted(self.coco.imgs)
        if training:
            kept = [i for i in ids if self._instances(i)]
            skipped = len(ids) - len(kept)
            if skipped:
                logger.warning(f"{self.ann_file}: {skipped} of {len(ids)} images have no usable "
                               "instances; skipped for training")
            ids = kept
        self.ids: list[int] = ids
        self.num_skipped_images = len(self.coco.imgs) - len(ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _instances(self, image_id: int) -> list[dict]:
        return [a for a in self.coco.imgToAnns.get(image_id, [])
                if not a.get("iscrowd", 0) and a["id"] not in self._skip]

    def _crowds(self, image_id: int) -> list[dict]:
        return [a for a in self.coco.imgToAnns.get(image_id, [])
                if a.get("iscrowd", 0) and a["id"] not in self._skip]

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        try:  # PIL, not torchvision.io, whose image decoding is deprecated since 0.29
            with Image.open(path) as im:
                array = np.array(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{self.ann_file}: image id {image_id}: cannot read {path}: {e}") from None
        image = torch.from_numpy(array).permute(2, 0, 1)
        if tuple(image.shape[-2:]) != (info["height"], info["width"]):
            raise UserError(f"{self.ann_file}: image id {image_id}: {path} is "
                            f"{image.shape[-1]}x{image.shape[-2]} (WxH) but the annotation file says "
                            f"{info['width']}x{info['height']}")
        return image.float()

    def load_target(self, image_id: int) -> dict[str, Any]:
        info = self.coco.imgs[image_id]
        h, w = info["height"], info["width"]
        anns = self._instances(image_id)
        crowds = self._crowds(image_id) if self.keep_crowd else []
        anns = anns + crowds
        if anns:
            masks = torch.from_numpy(np.stack([decode_segmentation(a["segmentation"], h, w) for a in anns]))
        else:
            masks = torch.zeros((0, h, w), dtype=torch.bool)
        labels = torch.tensor([self.cat_id_to_contiguous[a["category_id"]] for a in anns], dtype=torch.int64)
        iscrowd = torch.arange(len(anns)) >= len(anns) - len(crowds)
        keep = masks.flatten(1).any(dim=1)  # zero-area masks were skipped by validation already
        masks, labels, iscrowd = masks[keep], labels[keep], iscrowd[keep]
        target = {"masks": masks, "boxes": masks_to_boxes(masks), "labels": labels,
                  "image_id": int(image_id), "orig_size": (h, w), "size": (h, w)}
        if self.keep_crowd:
            target["iscrowd"] = iscrowd
        return target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image, target = self.load_image(image_id), self.load_target(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
