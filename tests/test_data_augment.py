"""Training augmentations of the official recipes, on a COCO-format sample read from disk.

The sample has polygon objects (a triangle, an L shape, a rectangle, a disc), one crowd
region (uncompressed RLE) and one 3x3 px object. Its image encodes each pixel's original
coordinates (R = x, G = y, B = 0), so after any crop / zoom-out / flip the output pixel
values say where every pixel came from, and mask alignment can be checked exactly: an output
pixel taken from original (x, y) must carry each instance's original mask value at (x, y),
and canvas pixels must carry no mask.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from rtinst.config import ConfigError, load_config
from rtinst.config_schema import DataConfig, YolactConfig
from rtinst.records import config_hash
from rtinst.data.augment import (
    DiscardSmallBoxes,
    PhotometricDistort,
    RandomSampleCrop,
    SplitCrowd,
    TV2Step,
    ssd_augmentation,
    yolact_photometric_distort,
)
from rtinst.data.build import build_transforms
from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.transforms import IMAGENET_MEAN, RandomApply, RandomCrop, masks_to_boxes
from rtinst.models.yolact_loss import NEUTRAL, POSITIVE, YolactLoss, crowd_overlap, match_anchors
from torchvision import tv_tensors
from torchvision.transforms import v2

H, W = 150, 200
CROWD_LABEL = 4  # contiguous label of the crowd region's category
TINY_LABEL = 5


def _disc(cx, cy, r, n=24):
    return [v for k in range(n) for v in (cx + r * math.cos(2 * math.pi * k / n),
                                           cy + r * math.sin(2 * math.pi * k / n))]


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    (root / "img").mkdir()
    ys, xs = np.mgrid[0:H, 0:W]
    image = np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    Image.fromarray(image).save(root / "img" / "a.png")
    crowd = np.zeros((H, W), dtype=np.uint8, order="F")
    crowd[100:140, 130:190] = 1
    crowd_rle = mask_utils.encode(crowd)
    counts = []  # uncompressed RLE, as COCO stores crowd regions
    flat, run, value = crowd.flatten(order="F"), 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            run, value = 0, v
        run += 1
    counts.append(run)
    assert mask_utils.decode(mask_utils.frPyObjects({"counts": counts, "size": [H, W]}, H, W)).sum() \
        == mask_utils.area(crowd_rle)
    polys = [
        [[10, 10, 70, 15, 30, 60]],                                        # triangle
        [[90, 10, 150, 10, 150, 25, 105, 25, 105, 70, 90, 70]],            # L shape
        [[20, 80, 80, 80, 80, 120, 20, 120]],                              # rectangle
        [_disc(160, 50, 22)],                                              # disc
    ]
    anns = [{"id": i + 1, "image_id": 1, "category_id": i + 1, "segmentation": p, "iscrowd": 0,
             "area": 100.0, "bbox": [0, 0, 1, 1]} for i, p in enumerate(polys)]
    anns.append({"id": 10, "image_id": 1, "category_id": 5, "iscrowd": 1, "area": 2400.0,
                 "bbox": [130, 100, 60, 40], "segmentation": {"counts": counts, "size": [H, W]}})
    anns.append({"id": 11, "image_id": 1, "category_id": 6, "iscrowd": 0, "area": 9.0,
                 "bbox": [60, 130, 3, 3], "segmentation": [[60, 130, 63, 130, 63, 133, 60, 133]]})
    data = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
            "annotations": anns,
            "categories": [{"id": i, "name": f"c{i}"} for i in range(1, 7)]}
    (root / "ann.json").write_text(json.dumps(data))
    return root


def load(coco_dir, keep_crowd=True):
    ds = CocoInstanceDataset(coco_dir / "ann.json", coco_dir / "img", keep_crowd=keep_crowd)
    return ds[0]


def assert_boxes_from_masks(target):
    n = target["labels"].shape[0]
    assert target["masks"].shape[0] == target["boxes"].shape[0] == n
    if "iscrowd" in target:
        assert target["iscrowd"].shape[0] == n
    assert target["masks"].flatten(1).any(1).all()
    assert torch.equal(target["boxes"], masks_to_boxes(target["masks"]))


def assert_index_aligned(image, target, orig_target, mean=IMAGENET_MEAN):
    """Every output pixel is an original pixel (R = x, G = y) or canvas (the mean colour);
    each instance's mask equals its original mask at the source pixel, and is empty on canvas."""
    assert_boxes_from_masks(target)
    canvas = (image[2] - mean[2]).abs() < 1e-3
    assert (image[2][~canvas] == 0).all()
    src_x, src_y = image[0][~canvas].long(), image[1][~canvas].long()
    orig = {int(l): m for l, m in zip(orig_target["labels"], orig_target["masks"])}
    for label, mask in zip(target["labels"].tolist(), target["masks"]):
        assert torch.equal(mask[~canvas], orig[label][src_y, src_x]), label
        assert not mask[canvas].any()


def test_dataset_keeps_crowd_only_when_asked(coco_dir):
    _, t = load(coco_dir, keep_crowd=True)
    assert t["labels"].tolist() == [0, 1, 2, 3, TINY_LABEL, CROWD_LABEL]  # crowd appended last
    assert t["iscrowd"].tolist() == [False] * 5 + [True]
    assert t["boxes"][-1].tolist() == [130.0, 100.0, 190.0, 140.0]
    assert t["boxes"][4].tolist() == [60.0, 130.0, 63.0, 133.0]  # the 3x3 object
    _, t = load(coco_dir, keep_crowd=False)
    assert "iscrowd" not in t and CROWD_LABEL not in t["labels"].tolist()


@pytest.mark.parametrize("step", [
    TV2Step(v2.RandomZoomOut(fill={tv_tensors.Image: list(IMAGENET_MEAN), "others": 0},
                             side_range=(1.0, 4.0), p=1.0), translation=True),
    RandomSampleCrop([0.0]),
    RandomSampleCrop([0.1, 0.3, 0.7, 0.9]),
    RandomCrop((100, 180), mode="absolute_range"),
    RandomCrop((60, 100), mode="absolute_range"),
], ids=["zoom_out", "crop_unconstrained", "crop_min_iou", "abs_range_clamped", "abs_range_small"])
def test_geometric_steps_keep_masks_boxes_and_image_aligned(coco_dir, step):
    image, target = load(coco_dir)
    changed = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out = step(image.clone(), dict(target))
        assert_index_aligned(out_image, out, target)
        changed += tuple(out_image.shape[-2:]) != (H, W)
    assert changed > 0  # the step did crop / expand at least once


def test_zoom_out_canvas_is_the_mean_and_at_most_4x(coco_dir):
    image, target = load(coco_dir)
    (zoom,) = ssd_augmentation(photometric=False, expand=True, sample_crop=False)
    sides = []
    for seed in range(30):
        torch.manual_seed(seed)
        out_image, out = zoom(image.clone(), dict(target))
        assert_index_aligned(out_image, out, target)
        h, w = out_image.shape[-2:]
        sides.append(h / H)
        assert 1.0 <= h / H < 4.0 + 1e-6 and 1.0 <= w / W < 4.0 + 1e-6
        # the whole original is inside, untouched
        assert (out_image[2] == 0).sum() == H * W
    assert sum(s == 1.0 for s in sides) > 5 and max(sides) > 2.0  # p = 0.5, up to 4x


def test_sample_crop_keeps_instances_whose_box_centre_is_inside(coco_dir):
    image, target = load(coco_dir)
    crop = RandomSampleCrop([0.0])
    centres = (target["boxes"][:, :2] + target["boxes"][:, 2:]) / 2
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out = crop(image.clone(), dict(target))
        x0, y0 = out_image[0, 0, 0].item(), out_image[1, 0, 0].item()
        h, w = out_image.shape[-2:]
        inside = ((centres[:, 0] > x0) & (centres[:, 0] < x0 + w) &
                  (centres[:, 1] > y0) & (centres[:, 1] < y0 + h))
        window = target["masks"][:, int(y0):int(y0) + h, int(x0):int(x0) + w].flatten(1).any(1)
        expected = target["labels"][inside & window].tolist()
        assert out["labels"].tolist() == expected
        assert out["iscrowd"].tolist() == target["iscrowd"][inside & window].tolist()
        assert 0.3 * W - 1 <= w <= W and 0.3 * H - 1 <= h <= H and 0.5 <= w / h <= 2


def test_sample_crop_min_iou_option_is_honoured(coco_dir):
    from torchvision.ops import box_iou

    image, target = load(coco_dir)
    regular = ~target["iscrowd"]
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out = RandomSampleCrop([0.5])(image.clone(), dict(target))
        x0, y0 = out_image[0, 0, 0].item(), out_image[1, 0, 0].item()
        h, w = out_image.shape[-2:]
        window = torch.tensor([[x0, y0, x0 + w, y0 + h]])
        kept = torch.isin(target["labels"], out["labels"])
        assert box_iou(target["boxes"][kept], window).max() >= 0.5
        assert (kept & regular).any()  # never a crop with only the crowd region


def test_sample_crop_redraws_crops_left_with_only_crowd(coco_dir):
    image, target = load(coco_dir)
    # keep only the crowd region and the disc (far apart): many crops hold just one of them
    keep = torch.isin(target["labels"], torch.tensor([3, CROWD_LABEL]))
    small = {k: (v[keep] if k in ("masks", "boxes", "labels", "iscrowd") else v)
             for k, v in target.items()}
    crop = RandomSampleCrop([0.0])
    for seed in range(25):
        torch.manual_seed(seed)
        _, out = crop(image.clone(), dict(small))
        assert 3 in out["labels"].tolist()
    only_crowd = {k: (v[-1:] if k in ("masks", "boxes", "labels", "iscrowd") else v)
                  for k, v in target.items()}
    out_image, out = crop(image.clone(), only_crowd)
    assert out_image.shape == image.shape  # nothing to keep: left as it is


def test_photometric_distort_changes_colours_only_and_never_swaps_channels(coco_dir):
    image, target = load(coco_dir)
    t = yolact_photometric_distort()
    assert isinstance(t, PhotometricDistort) and isinstance(t, v2.RandomPhotometricDistort)
    assert t.brightness == pytest.approx((1 - 32 / 255, 1 + 32 / 255))
    assert t.contrast == (0.5, 1.5) and t.saturation == (0.5, 1.5)
    assert t.hue == pytest.approx((-0.05, 0.05)) and t.p == 0.5  # 18 degrees, p = 0.5 each
    parent = v2.RandomPhotometricDistort(p=0.5)
    swaps = 0
    for seed in range(20):
        torch.manual_seed(seed)
        assert t.make_params([image])["channel_permutation"] is None
        torch.manual_seed(seed)
        swaps += parent.make_params([image])["channel_permutation"] is not None
    assert swaps > 0  # torchvision's own transform would have swapped some
    step = TV2Step(t, unit_range=True)
    differ = 0
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out = step(image.clone(), dict(target))
        assert out_image.shape == image.shape and 0 <= out_image.min() and out_image.max() <= 255
        assert torch.equal(out["masks"], target["masks"]) and torch.equal(out["boxes"], target["boxes"])
        differ += not torch.allclose(out_image, image, atol=1.0)
    assert differ > 0


def test_small_boxes_are_dropped_with_their_masks_and_labels(coco_dir):
    image, target = load(coco_dir)
    _, out = DiscardSmallBoxes(4)(image, dict(target))
    assert TINY_LABEL not in out["labels"].tolist()
    assert out["labels"].tolist() == [0, 1, 2, 3, CROWD_LABEL]
    assert out["iscrowd"].tolist() == [False] * 4 + [True]
    assert_boxes_from_masks(out)
    _, out = DiscardSmallBoxes(3)(image, dict(target))  # 3 px wide: kept at a 3 px minimum
    assert TINY_LABEL in out["labels"].tolist()


def test_split_crowd_moves_crowd_out_of_the_targets(coco_dir):
    image, target = load(coco_dir)
    _, out = SplitCrowd()(image, dict(target))
    assert out["crowd_boxes"].tolist() == [[130.0, 100.0, 190.0, 140.0]]
    assert CROWD_LABEL not in out["labels"].tolist() and "iscrowd" not in out
    assert out["masks"].shape[0] == 5
    assert_boxes_from_masks(out)


def yolact_data(**extra) -> DataConfig:
    cfg = load_config("rtinst/configs/yolact/coco.yaml").data
    for k, v in extra.items():
        setattr(cfg, k, v)
    return cfg


def test_yolact_pipeline_is_deterministic_for_a_seed(coco_dir):
    cfg = yolact_data(keep_crowd=True, min_box_size=4.0)
    pipeline = build_transforms(cfg, train=True)
    image, target = load(coco_dir)

    def run(seed):
        torch.manual_seed(seed)
        return pipeline(image.clone(), dict(target))

    outs = [run(s) for s in range(6)]
    for (img, t), seed in zip(outs, range(6)):
        img2, t2 = run(seed)
        assert torch.equal(img, img2) and torch.equal(t["masks"], t2["masks"])
        assert torch.equal(t["crowd_boxes"], t2["crowd_boxes"])
        assert img.shape == (3, 550, 550)
        assert_boxes_from_masks(t)
        wh = t["boxes"][:, 2:] - t["boxes"][:, :2]
        assert (wh >= 4).all()  # discard after the resize to 550, as the official Resize
        assert CROWD_LABEL not in t["labels"].tolist()
    assert len({o[0].sum().item() for o in outs}) == 6  # different seeds, different samples


def test_crop_branch_probability_and_detectron2_crop_sizes():
    crop = RandomCrop((384, 600), mode="absolute_range")
    torch.manual_seed(0)
    sizes = [crop.crop_size(500, 700) for _ in range(300)]
    hs, ws = [s[0] for s in sizes], [s[1] for s in sizes]
    assert min(hs) >= 384 and max(hs) <= 500 and min(ws) >= 384 and max(ws) <= 600
    assert max(hs) == 500 and max(ws) == 600 and min(hs) < 400
    assert hs.count(500) < 30  # uniform in [384, 500], not drawn in [384, 600] and clamped
    assert crop.crop_size(300, 350) == (300, 350)  # [min(H, 384), min(H, 600)] = {300}
    applied = RandomApply(lambda i, t: (i, dict(t, hit=True)), p=0.5)
    torch.manual_seed(0)
    hits = sum("hit" in applied(None, {})[1] for _ in range(400))
    assert 160 < hits < 240


def test_fastinst_and_sparseinst_aug_pipelines_match_the_mappers():
    fast = load_config("rtinst/configs/fastinst/coco.yaml").data
    r = repr(build_transforms(fast, train=True))
    assert "RandomApply(Compose(ResizeShortEdge((400, 500, 600)" in r and "p=0.5" in r
    assert "RandomCrop((384, 600), mode='absolute_range'" in r
    assert r.index("RandomApply") < r.index("ResizeShortEdge((416, 448")
    sparse = load_config("rtinst/configs/sparseinst/coco.yaml", ["data.crop_prob=0.5"]).data
    assert "RandomApply" in repr(build_transforms(sparse, train=True))
    assert "RandomApply" not in repr(build_transforms(load_config(
        "rtinst/configs/sparseinst/coco.yaml").data, train=True))
    assert "RandomApply" not in repr(build_transforms(fast, train=False))


def test_default_data_config_builds_the_old_pipeline_and_keeps_hashes():
    r = repr(build_transforms(DataConfig(), train=True))
    assert r.startswith("Compose(ResizeShortEdge((416, 640), max_size=853, sample='range'), "
                        "RandomHorizontalFlip(p=0.5), Normalize(")
    cfg = load_config("rtinst/configs/sparseinst/tiny.yaml")
    before = config_hash(cfg)
    cfg.data.crop_prob = 0.0  # the default: same hash
    assert config_hash(cfg) == before
    cfg.data.crop_prob = 0.5
    assert config_hash(cfg) != before
    y = load_config("rtinst/configs/yolact/tiny.yaml")
    h = config_hash(y)
    y.model.crowd_iou_threshold = 0.7
    assert config_hash(y) != h


@pytest.mark.parametrize("extra, words", [
    ({"crop_size": [600, 384]}, "data.crop_size"),
    ({"crop_prob": 1.5}, "data.crop_prob"),
    ({"crop_prob": 0.5, "expand": True}, "exclude each other"),
    ({"random_sample_crop": True, "sample_crop_min_iou": []}, "data.sample_crop_min_iou"),
])
def test_bad_augment_settings_fail_with_the_key(extra, words):
    cfg = DataConfig()
    for k, v in extra.items():
        setattr(cfg, k, v)
    with pytest.raises(ConfigError, match=words):
        build_transforms(cfg, train=True)


# ------------------------------------------------------------------ YOLACT crowd matching


def test_crowd_makes_overlapping_non_positive_anchors_neutral():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],     # positive for the GT
                            [100.0, 100.0, 110.0, 110.0],  # fully inside the crowd box
                            [115.0, 100.0, 125.0, 110.0],  # half inside (0.5)
                            [128.0, 100.0, 138.0, 110.0],  # 0.2 inside
                            [300.0, 300.0, 310.0, 310.0]])  # far away
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    crowd = torch.tensor([[90.0, 90.0, 120.0, 130.0]])
    assert crowd_overlap(anchors, crowd).tolist() == pytest.approx([0.0, 1.0, 0.5, 0.0, 0.0])
    m = match_anchors(anchors, gt, torch.tensor([3]), 0.5, 0.4, crowd, 0.7)
    assert m.state.tolist() == [POSITIVE, NEUTRAL, 0, 0, 0]
    assert m.labels.tolist() == [4, -1, 0, 0, 0]
    m = match_anchors(anchors, gt, torch.tensor([3]), 0.5, 0.4, crowd, 0.4)
    assert m.state.tolist() == [POSITIVE, NEUTRAL, NEUTRAL, 0, 0]
    # a positive stays positive, even fully inside a crowd box
    m = match_anchors(anchors, torch.tensor([[100.0, 100.0, 110.0, 110.0]]), torch.tensor([0]),
                      0.5, 0.4, crowd, 0.7)
    assert m.state[1].item() == POSITIVE
    # threshold 1 (the official configs) and no crowd boxes: plain matching
    plain = match_anchors(anchors, gt, torch.tensor([3]), 0.5, 0.4)
    for c, t in ((crowd, 1.0), (torch.zeros(0, 4), 0.7), (None, 0.7)):
        assert torch.equal(match_anchors(anchors, gt, torch.tensor([3]), 0.5, 0.4, c, t).state,
                           plain.state)


def test_crowd_only_image_has_no_positives_and_neutral_crowd_anchors():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    m = match_anchors(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 0.5, 0.4,
                      torch.tensor([[40.0, 40.0, 70.0, 70.0]]), 0.7)
    assert m.state.tolist() == [0, NEUTRAL]


def test_yolact_loss_asks_for_crowd_targets_when_crowd_matching_is_on():
    cfg = YolactConfig(num_classes=3, crowd_iou_threshold=0.7)
    anchors = torch.tensor([[5.0, 5.0, 10.0, 10.0]])
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0]),
              "masks": torch.ones(1, 16, 16, dtype=torch.bool)}
    args = (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), torch.zeros(1, 1, 2),
            torch.zeros(1, 2, 4, 4), None, anchors)
    with pytest.raises(ConfigError, match="data.keep_crowd"):
        YolactLoss(cfg)(*args, [target], (16, 16))
    losses = YolactLoss(cfg)(*args, [dict(target, crowd_boxes=torch.zeros(0, 4))], (16, 16))
    assert torch.isfinite(losses["loss_cls"])


# ------------------------------------------------------- smoke training with the augmentations

AUG_OVERRIDES = {
    "yolact": ["data.photometric_distort=true", "data.expand=true", "data.random_sample_crop=true",
               "data.min_box_size=4", "data.keep_crowd=true", "model.crowd_iou_threshold=0.7"],
    "fastinst": ["data.crop_prob=0.5", "data.crop_short_edge=[64, 80, 96]", "data.crop_size=[48, 96]"],
    "sparseinst": ["data.crop_prob=0.5", "data.crop_short_edge=[64, 80, 96]", "data.crop_size=[48, 96]"],
}


@pytest.mark.parametrize("model", sorted(AUG_OVERRIDES))
def test_smoke_training_with_the_coco_augmentations(model, tmp_path_factory):
    from rtinst.engine.train import run_training

    data_root = tmp_path_factory.getbasetemp() / "aug_smoke_data"
    cfg = load_config(f"rtinst/configs/{model}/smoke.yaml", [
        f"data.root={data_root}", "train.max_iters=3", "eval.max_images=2", "eval.tide=false",
        "device=cpu", *AUG_OVERRIDES[model]])
    record = run_training(cfg, tmp_path_factory.mktemp(model) / "run", progress=False)
    assert record.status == "done" and record.metrics["train_iterations"] == 3
