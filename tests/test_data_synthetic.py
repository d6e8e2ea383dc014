"""The synthetic dataset: determinism, valid COCO, statistics in range, exact annotations."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from rtinst.data.stats import dataset_statistics, format_statistics
from rtinst.data.segmentation import mask_to_polygons, rle_counts
from rtinst.data.synthetic import CATEGORIES, generate_synthetic
from rtinst.errors import UserError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn_small")
    generate_synthetic(out, num_train=6, num_val=3, seed=3, workers=1)
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("syn_sample")
    stats = generate_synthetic(out, num_train=60, num_val=0, seed=0, workers=2)
    return out, stats


def test_deterministic_and_independent_of_workers(small, tmp_path):
    generate_synthetic(tmp_path, num_train=6, num_val=3, seed=3, workers=2)
    assert _files(small) == _files(tmp_path)


def test_seed_changes_output(small, tmp_path):
    generate_synthetic(tmp_path, num_train=6, num_val=3, seed=4, workers=1)
    a = (small / "annotations" / "instances_train.json").read_bytes()
    b = (tmp_path / "annotations" / "instances_train.json").read_bytes()
    assert a != b


def test_layout_and_pycocotools_loads(small):
    stats = json.loads((small / "statistics.json").read_text())
    assert set(stats) == {"train", "val"}
    for split, n in (("train", 6), ("val", 3)):
        coco = COCO(str(small / "annotations" / f"instances_{split}.json"))
        assert len(coco.imgs) == n
        assert sorted(coco.cats) == [cid for cid, _ in CATEGORIES]
        for img in coco.imgs.values():
            with Image.open(small / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"])
                assert max(im.size) == 320
        for ann in coco.anns.values():
            m = coco.annToMask(ann)
            assert m.sum() == ann["area"] > 0


def test_masks_are_visible_parts_and_exact(small):
    """Instances never share a pixel (occluded parts are cut away) and each mask's pixels
    carry the object's appearance, i.e. masks are aligned with the image."""
    coco = COCO(str(small / "annotations" / "instances_train.json"))
    for img_id, img in coco.imgs.items():
        anns = [a for a in coco.imgToAnns[img_id] if not a["iscrowd"]]
        stack = np.stack([coco.annToMask(a) for a in anns]).astype(int)
        assert stack.sum(axis=0).max() == 1
        for a, m in zip(anns, stack):
            x, y, w, h = a["bbox"]
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)


def test_statistics_in_required_ranges(sample):
    _, stats = sample
    s = stats["train"]
    assert 5.0 <= s["instances_per_image"]["mean"] <= 8.5
    pct = {b: s["area_buckets"][b]["percent"] for b in ("small", "medium", "large")}
    assert 25 <= pct["small"] <= 45 and 30 <= pct["medium"] <= 52 and 15 <= pct["large"] <= 35, pct
    assert len(s["classes"]) >= 8 and all(c["count"] > 0 for c in s["classes"].values())
    assert s["min_box_side"] >= 7
    fmts = s["segmentation_formats"]
    assert fmts.get("polygon", 0) > fmts.get("rle_compressed", 0) > 0
    assert s["touching_same_class_pairs"] > 0
    assert s["occlusion"]["occluded_percent"] > 10
    assert s["occlusion"]["adjacent_same_class_pairs"] > 0
    assert len(s["image_sizes"]) >= 3  # several aspect ratios
    table = format_statistics(stats)
    assert table.startswith("| statistic | train |") and "small" in table


def test_colour_does_not_give_away_the_class(sample):
    out, _ = sample
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    feats, labels = [], []
    for img_id, img in coco.imgs.items():
        pixels = np.asarray(Image.open(out / "train" / img["file_name"]).convert("RGB"), dtype=np.float32)
        for a in coco.imgToAnns[img_id]:
            if not a["iscrowd"]:
                feats.append(pixels[coco.annToMask(a).astype(bool)].mean(axis=0))
                labels.append(a["category_id"])
    feats, labels = np.array(feats), np.array(labels)
    classes = sorted(set(labels))
    # Every class appears in most hue sextants ...
    hues = np.array([colorsys.rgb_to_hsv(*(f / 255.0))[0] for f in feats])
    for c in classes:
        assert len(set((hues[labels == c] * 6).astype(int))) >= 4
    # ... and a nearest-class-mean colour classifier is barely better than chance.
    centroids = np.stack([feats[labels == c].mean(axis=0) for c in classes])
    pred = np.array(classes)[np.argmin(((feats[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (pred == labels).mean() < 0.3


def test_mask_to_polygons_round_trip():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(30):
        m = np.zeros((30, 40), dtype=bool)
        for _ in range(3):
            y, x = rng.integers(0, 25), rng.integers(0, 35)
            m[y:y + rng.integers(1, 8), x:x + rng.integers(1, 8)] = True
        m[rng.integers(0, 30), rng.integers(0, 40)] = True  # isolated / diagonal pixels
        polys = mask_to_polygons(m)
        if polys is None:  # a hole: must really be one
            continue
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 30, 40)))
        assert np.array_equal(decoded.astype(bool), m)
    ring = np.ones((9, 9), dtype=bool)
    ring[3:6, 3:6] = False
    assert mask_to_polygons(ring) is None
    counts = rle_counts(ring)
    assert sum(counts) == 81 and counts[0] == 0


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        generate_synthetic(tmp_path, num_train=0, num_val=0)
    with pytest.raises(UserError):
        generate_synthetic(tmp_path, num_train=1, num_val=0, size=16)
    with pytest.raises(UserError):
        generate_synthetic(tmp_path, num_train=1, num_val=0, workers=0)


def test_dataset_statistics_on_file(small):
    s = dataset_statistics(small / "annotations" / "instances_val.json")
    assert s["images"] == 3 and s["instances"] > 0
    assert sum(b["count"] for b in s["area_buckets"].values()) == s["instances"]
