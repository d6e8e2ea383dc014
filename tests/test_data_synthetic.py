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
from rtinst.data.synthetic import generate_synthetic
from rtinst.data.synthetic_draw import CATEGORIES
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


# ---------------------------------------------------------------------------------------------
# Difficulty levels.

# sha256 of the annotation files and generation.json written by the generator before
# difficulty levels existed (num_train=6, num_val=3, seed=3, size 320): the default level
# must keep the embedded dataset exactly. JPEG bytes depend on the libjpeg build, so the
# annotations (pixel-exact masks of what is drawn) stand for the images.
HARD_SHA256 = {
    "annotations/instances_train.json": "787c88385dab75246cd2ed061654044c40d0ea082df8668667043f4df5d4eaaf",
    "annotations/instances_val.json": "1a25b8e1de346779a8ce3873cab65d2a4cf9b0e79dc16cd4e8bd54e6ba191725",
    "generation.json": "2fcfd16dcd6662575d2287dfa48a417294ee5c4d073bc8fd07b820109c7f7ded",
}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ... and at the smoke presets' 128 px (num_train=4, num_val=2, seed=0)
HARD_128_SHA256 = {
    "annotations/instances_train.json": "42d4d0a01603479f5bf79ab9efa007815712b34dd064c987c33efa95e569b499",
    "annotations/instances_val.json": "b745c13fff71648f19f807a856cb31a60768d1798bc376ae92389852c2820e55",
    "generation.json": "dcb2b4b52fa48f3fbdb1bddd1585e9700041c1474bac15ddc8e381c90e9b5be3",
}


def test_default_and_named_hard_level_reproduce_the_embedded_dataset(small, tmp_path):
    assert {name: _sha256(small / name) for name in HARD_SHA256} == HARD_SHA256
    generate_synthetic(tmp_path / "hard", num_train=6, num_val=3, seed=3, workers=1, difficulty="hard")
    assert _files(tmp_path / "hard") == _files(small)
    generate_synthetic(tmp_path / "smoke", num_train=4, num_val=2, seed=0, size=128, workers=1)
    assert {name: _sha256(tmp_path / "smoke" / name) for name in HARD_128_SHA256} == HARD_128_SHA256


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("syn_easy")
    return out, generate_synthetic(out, num_train=40, num_val=0, seed=0, workers=2, difficulty="easy")


def _instances(out: Path):
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    return coco, [a for a in coco.anns.values() if not a["iscrowd"]]


def test_easy_level_has_its_size_object_count_and_object_sizes(easy):
    out, stats = easy
    from rtinst.data.difficulty import DIFFICULTIES

    level = DIFFICULTIES["easy"]
    coco, anns = _instances(out)
    assert all(max(img["width"], img["height"]) == level.size for img in coco.imgs.values())
    per_image = np.bincount([a["image_id"] for a in anns], minlength=len(coco.imgs) + 1)[1:]
    # planned 2-4, plus at most one same-class partner; placements may be rejected
    assert per_image.max() <= level.objects[1] + 1 and per_image.mean() >= level.objects[0]
    unoccluded = [a for a in anns if isinstance(a["segmentation"], list)]
    sides = np.sqrt([a["area"] for a in unoccluded])
    lo, hi = level.object_size
    # rasterised polygons miss or add a boundary row; border clipping only shrinks objects
    assert sides.max() <= hi * 1.05 and np.median(sides) >= lo
    assert stats["train"]["occlusion"]["occluded_percent"] > 5  # still occluded, COCO-like
    assert sorted(coco.cats) == [cid for cid, _ in CATEGORIES]
    generation = json.loads((out / "generation.json").read_text())
    assert generation["difficulty"] == "easy" and generation["size"] == level.size
    assert generation["generator"]["object_size"] == [lo, hi]


def test_easy_large_level_is_easy_with_coco_medium_objects(tmp_path):
    """The tiny presets' level: the same images as easy with --object-size 48-96, so a trial
    made with the knob and a run on the level train on the same bytes."""
    generate_synthetic(tmp_path / "level", num_train=30, num_val=0, seed=0, workers=1,
                       difficulty="easy-large")
    generate_synthetic(tmp_path / "knob", num_train=30, num_val=0, seed=0, workers=1,
                       difficulty=_level("easy", object_size=(48.0, 96.0)))
    annotations = "annotations/instances_train.json"
    assert _sha256(tmp_path / "level" / annotations) == _sha256(tmp_path / "knob" / annotations)
    generation = json.loads((tmp_path / "knob" / "generation.json").read_text())
    assert generation["difficulty"] == "easy-large"  # the knob's result is recognised as the level
    _, anns = _instances(tmp_path / "level")
    sides = np.sqrt([a["area"] for a in anns if isinstance(a["segmentation"], list)])
    # every whole object is COCO-medium (32-96 px): no small ones, border clipping aside
    assert np.median(sides) >= 48 and sides.max() <= 96 * 1.05 and np.mean(sides >= 32) > 0.95


def _background_and_object_spread(out: Path) -> tuple[float, float]:
    """Median over images of the background pixels' std, and over objects of their pixels'
    std (both after removing a 2-pixel border around every mask)."""
    from scipy.ndimage import binary_erosion

    coco = COCO(str(out / "annotations" / "instances_train.json"))
    back, objects = [], []
    for img_id, img in coco.imgs.items():
        pixels = np.asarray(Image.open(out / "train" / img["file_name"]).convert("L"), dtype=np.float32)
        masks = [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[img_id]]
        covered = np.logical_or.reduce(masks) if masks else np.zeros(pixels.shape, bool)
        back.append(pixels[binary_erosion(~covered, iterations=3)].std())
        for a, m in zip(coco.imgToAnns[img_id], masks):
            inner = binary_erosion(m, iterations=2)
            if not a["iscrowd"] and inner.sum() > 30:
                objects.append(pixels[inner].std())
    return float(np.median(back)), float(np.median(objects))


def test_clutter_and_texture_knobs_change_the_pixels(easy, tmp_path):
    out, _ = easy
    easy_back, easy_obj = _background_and_object_spread(out)
    # easy: flat background and solid objects, only pixel noise (std 2-7) and JPEG remain
    assert easy_back < 8 and easy_obj < 8
    generate_synthetic(tmp_path, num_train=40, num_val=0, seed=0, workers=2,
                       difficulty=_level("easy", clutter="full", textures=("stripes", "checker")))
    full_back, full_obj = _background_and_object_spread(tmp_path)
    assert full_back > 2 * easy_back and full_obj > 3 * easy_obj


def _level(name: str, **knobs):
    from rtinst.data.difficulty import resolve_difficulty

    return resolve_difficulty(name, **knobs)


def test_object_count_knob_is_used(tmp_path):
    generate_synthetic(tmp_path, num_train=20, num_val=0, seed=0, workers=1,
                       difficulty=_level("easy", objects=(1, 1)))
    _, anns = _instances(tmp_path)
    per_image = np.bincount([a["image_id"] for a in anns])[1:]
    assert per_image.max() <= 2 and per_image.min() >= 1  # one, or one and its partner


def test_bad_difficulty_knobs_are_one_line_user_errors():
    cases = [({"objects": (5, 2)}, "--objects: need 1 <= MIN <= MAX, got 5-2"),
             ({"object_size": (30.0, 150.0)}, "does not fit a 192 px image"),
             ({"textures": ("solid", "plaid")}, "--textures: need one or more of"),
             ({"clutter": "heavy"}, "--clutter: unknown level 'heavy'")]
    for knobs, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            _level("easy", **knobs)
    with pytest.raises(UserError, match="--difficulty: unknown level 'medium-ish'"):
        _level("medium-ish")


def test_generation_record_names_a_level_whatever_the_size_and_custom_otherwise():
    from rtinst.data.synthetic import generation_record

    assert generation_record(6, 3, 3) == {"train": 6, "val": 3, "seed": 3, "size": 320}
    assert generation_record(6, 3, 3, _level("hard", size=128)) == {"train": 6, "val": 3, "seed": 3,
                                                                     "size": 128}
    same_as_medium = _level("easy", objects=(3, 7), object_size=(16.0, 80.0),
                            textures=("solid", "stripes", "gradient"), clutter="light", size=256)
    record = generation_record(6, 3, 3, same_as_medium)
    assert record["difficulty"] == "medium" and record["size"] == 256
    assert generation_record(6, 3, 3, _level("medium", objects=(3, 8)))["difficulty"] == "custom"


def test_occlusion_pairs_and_crowds_can_be_switched_off(tmp_path):
    stats = generate_synthetic(tmp_path, num_train=30, num_val=0, seed=0, workers=1,
                               difficulty=_level("easy", occlusion=False, pair_probability=0.0,
                                                 crowd_probability=0.0))
    occlusion = stats["train"]["occlusion"]
    assert occlusion["occluded_instances"] == 0 and occlusion["adjacent_same_class_pairs"] == 0
    coco, anns = _instances(tmp_path)
    assert not any(a["iscrowd"] for a in coco.anns.values()) and len(anns) >= 30
    with pytest.raises(UserError, match=r"--pairs: a probability in \[0, 1\], got 1.5"):
        _level("easy", pair_probability=1.5)
