"""CocoInstanceDataset: polygon / RLE / crowd decoding, id mapping, training vs eval images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.transforms import Compose, RandomHorizontalFlip, ResizeFixed
from rtinst.errors import UserError

H, W = 24, 32


def _rect_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _compressed(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def _uncompressed(m: np.ndarray) -> dict:
    flat = m.ravel(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def write_tiny_coco(root: Path) -> Path:
    """4 tiny images; categories with non-contiguous ids 1, 5, 90."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(1, 5):
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(root / "img" / f"{i}.png")
    anns = [
        # image 1: a polygon (triangle) and a compressed RLE
        {"id": 10, "image_id": 1, "category_id": 90, "segmentation": [[2, 2, 14, 2, 2, 16]],
         "area": 84.0, "bbox": [2, 2, 12, 14], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 1, "segmentation": _compressed(_rect_mask(18, 4, 30, 20)),
         "area": 192.0, "bbox": [18, 4, 12, 16], "iscrowd": 0},
        # image 2: an uncompressed-RLE instance and a crowd region
        {"id": 20, "image_id": 2, "category_id": 5, "segmentation": _uncompressed(_rect_mask(1, 1, 9, 7)),
         "area": 48.0, "bbox": [1, 1, 8, 6], "iscrowd": 0},
        {"id": 21, "image_id": 2, "category_id": 1, "segmentation": _uncompressed(_rect_mask(12, 10, 30, 22)),
         "area": 216.0, "bbox": [12, 10, 18, 12], "iscrowd": 1},
        # image 3: only a crowd region -> no usable instance
        {"id": 30, "image_id": 3, "category_id": 5, "segmentation": _uncompressed(_rect_mask(0, 0, 5, 5)),
         "area": 25.0, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        # image 4: a polygon with two parts and a degenerate (empty) annotation
        {"id": 40, "image_id": 4, "category_id": 5,
         "segmentation": [[0, 0, 6, 0, 6, 6, 0, 6], [20, 10, 28, 10, 28, 18, 20, 18]],
         "area": 100.0, "bbox": [0, 0, 28, 18], "iscrowd": 0},
        {"id": 41, "image_id": 4, "category_id": 1, "segmentation": [], "area": 0.0,
         "bbox": [0, 0, 0, 0], "iscrowd": 0},
    ]
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in range(1, 5)],
        "annotations": anns,
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    return write_tiny_coco(tmp_path), tmp_path / "img"


def test_masks_equal_pycocotools(tiny):
    ann, img_dir = tiny
    ds = CocoInstanceDataset(ann, img_dir, training=False)
    coco = COCO(str(ann))
    for idx, image_id in enumerate(ds.ids):
        image, target = ds[idx]
        assert image.dtype == torch.float32 and image.shape == (3, H, W)
        assert float(image.max()) == 40 * image_id  # 0-255 scale, not normalized
        expected = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"] and a["segmentation"]]
        assert target["masks"].shape == (len(expected), H, W) and target["masks"].dtype == torch.bool
        for m, a in zip(target["masks"], expected):
            assert np.array_equal(m.numpy(), coco.annToMask(a).astype(bool))
        labels = [ds.contiguous_to_cat_id[int(l)] for l in target["labels"]]
        assert labels == [a["category_id"] for a in expected]
        assert target["image_id"] == image_id and target["orig_size"] == (H, W) == target["size"]


def test_boxes_from_masks(tiny):
    ann, img_dir = tiny
    ds = CocoInstanceDataset(ann, img_dir, training=False)
    _, target = ds[ds.ids.index(1)]
    # compressed-RLE rectangle covering columns 18..29 and rows 4..19
    assert target["boxes"][1].tolist() == [18.0, 4.0, 30.0, 20.0]
    _, target = ds[ds.ids.index(4)]  # two-part polygon: one instance spanning both parts
    assert target["boxes"].tolist() == [[0.0, 0.0, 28.0, 18.0]]


def test_contiguous_ids_both_ways(tiny):
    ds = CocoInstanceDataset(*tiny)
    assert ds.contiguous_to_cat_id == {0: 1, 1: 5, 2: 90}
    assert ds.cat_id_to_contiguous == {1: 0, 5: 1, 90: 2}
    assert ds.class_names == ["person", "airplane", "toothbrush"]
    assert ds.num_classes == 3
    for label, cat_id in ds.contiguous_to_cat_id.items():
        assert ds.cat_id_to_contiguous[cat_id] == label


def test_training_skips_images_without_instances_and_warns_once(tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="rtinst.data"):
        train = CocoInstanceDataset(*tiny, training=True)
    assert train.ids == [1, 2, 4] and train.num_skipped_images == 1
    lines = [r.getMessage() for r in caplog.records]
    assert sum("degenerate" in l for l in lines) == 1 and "ids 41" in " ".join(lines)
    assert sum("1 of 4 images have no usable instances" in l for l in lines) == 1
    crowd_only = CocoInstanceDataset(*tiny, training=False)
    assert crowd_only.ids == [1, 2, 3, 4]
    _, target = crowd_only[2]
    assert target["masks"].shape == (0, H, W) and target["boxes"].shape == (0, 4)
    assert target["labels"].dtype == torch.int64


def test_crowd_regions_are_not_instances(tiny):
    ds = CocoInstanceDataset(*tiny)
    _, target = ds[ds.ids.index(2)]
    assert target["labels"].tolist() == [ds.cat_id_to_contiguous[5]]


def test_transforms_are_applied(tiny):
    torch.manual_seed(0)
    ds = CocoInstanceDataset(*tiny, transforms=Compose([ResizeFixed(48, 48), RandomHorizontalFlip(1.0)]))
    image, target = ds[0]
    assert image.shape == (3, 48, 48) and target["size"] == (48, 48) and target["orig_size"] == (H, W)
    assert target["masks"].shape[-2:] == (48, 48)


def test_bad_dataset_is_a_one_line_user_error(tiny):
    ann, img_dir = tiny
    (img_dir / "3.png").unlink()
    with pytest.raises(UserError) as e:
        CocoInstanceDataset(ann, img_dir)
    msg = str(e.value)
    assert "\n" not in msg and "ann.json" in msg and "image id 3" in msg and "3.png" in msg
    with pytest.raises(UserError, match="image folder not found"):
        CocoInstanceDataset(ann, img_dir / "nope")


def test_synthetic_dataset_loads(tmp_path):
    from rtinst.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path, num_train=3, num_val=0, workers=1)
    ds = CocoInstanceDataset(tmp_path / "annotations" / "instances_train.json", tmp_path / "train")
    assert len(ds) == 3 and ds.num_classes == 10
    image, target = ds[0]
    assert image.shape[-2:] == target["masks"].shape[-2:] and len(target["labels"]) > 0
