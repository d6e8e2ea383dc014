"""Transforms keep masks aligned with the image and boxes consistent; collate pads correctly."""

from __future__ import annotations

import pytest
import torch

from rtinst.data.transforms import (
    Batch,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeFixed,
    ResizeShortEdge,
    collate,
    masks_to_boxes,
)


def make_sample(h: int = 60, w: int = 80) -> tuple[torch.Tensor, dict]:
    """Objects painted white (255) on black, so object pixels are known from the image alone."""
    rects = [(5, 4, 30, 20), (40, 10, 75, 50), (8, 35, 20, 58)]  # x0, y0, x1, y1
    masks = torch.zeros((len(rects), h, w), dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        masks[i, y0:y1, x0:x1] = True
    masks[1, 25:35, 50:60] = False  # a hole, to make things less regular
    image = masks.any(0).float().expand(3, h, w).clone() * 255.0
    target = {"masks": masks, "boxes": masks_to_boxes(masks), "labels": torch.tensor([0, 1, 2]),
              "image_id": 7, "orig_size": (h, w), "size": (h, w)}
    return image, target


def assert_aligned(image: torch.Tensor, target: dict) -> None:
    """Where the image is clearly object the union mask is set, where clearly background not."""
    assert image.shape[-2:] == target["masks"].shape[-2:] == target["size"]
    union = target["masks"].any(0)
    gray = image[0]
    assert union[gray >= 254].all()
    assert not union[gray <= 1].any()
    assert torch.equal(target["boxes"], masks_to_boxes(target["masks"]))
    assert target["masks"].flatten(1).any(1).all()  # no empty instances left
    assert len(target["labels"]) == len(target["masks"]) == len(target["boxes"])


def test_masks_to_boxes_pixel_edges():
    m = torch.zeros((2, 10, 12), dtype=torch.bool)
    m[0, 2:5, 3:8] = True
    assert masks_to_boxes(m).tolist() == [[3.0, 2.0, 8.0, 5.0], [0.0, 0.0, 0.0, 0.0]]
    assert masks_to_boxes(torch.zeros((0, 4, 4), dtype=torch.bool)).shape == (0, 4)


@pytest.mark.parametrize("transform", [
    ResizeShortEdge((30, 90), max_size=200, sample="range"),
    ResizeShortEdge((45, 120), max_size=140, sample="choice"),
    ResizeFixed(50, 50),
    ResizeFixed(131, 97),
    RandomCrop((0.5, 0.5), mode="relative_range"),
    RandomCrop((40, 40), mode="absolute"),
    RandomHorizontalFlip(1.0),
])
def test_geometric_transforms_keep_alignment(transform):
    torch.manual_seed(0)
    for _ in range(5):
        image, target = transform(*make_sample())
        assert_aligned(image, target)
        assert target["orig_size"] == (60, 80) and target["image_id"] == 7


def test_resize_short_edge_sizes():
    t = ResizeShortEdge(30, max_size=1000)
    image, target = t(*make_sample(60, 80))
    assert target["size"] == (30, 40)
    t = ResizeShortEdge(60, max_size=100)  # 60x160 would exceed max_size: long edge capped
    image, target = t(*make_sample(60, 160))
    assert target["size"] == (38, 100)


def test_flip_boxes():
    image, target = make_sample()
    fimage, ft = RandomHorizontalFlip(1.0)(image, target)
    assert torch.equal(ft["boxes"], masks_to_boxes(ft["masks"]))
    assert ft["boxes"][0].tolist() == [80 - 30, 4, 80 - 5, 20]
    assert torch.equal(fimage.flip(-1), image)


def test_crop_drops_vanished_instances():
    image, target = make_sample()
    crop = RandomCrop((20, 20), mode="absolute")
    torch.manual_seed(1)
    seen = set()
    for _ in range(30):
        cimage, ct = crop(image, target)
        assert_aligned(cimage, ct)
        seen.add(len(ct["labels"]))
    assert 0 in seen or 1 in seen  # some crops miss objects


def test_random_transforms_deterministic():
    t = Compose([ResizeShortEdge((30, 90), max_size=200, sample="range"), RandomCrop((0.3, 0.3)),
                 RandomHorizontalFlip()])
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append([t(*make_sample()) for _ in range(4)])
    for (i1, t1), (i2, t2) in zip(*outs):
        assert torch.equal(i1, i2) and torch.equal(t1["masks"], t2["masks"])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = RandomCrop((0.3, 0.3), generator=g1)(*make_sample())
    b = RandomCrop((0.3, 0.3), generator=g2)(*make_sample())
    assert torch.equal(a[1]["masks"], b[1]["masks"])


def test_normalize():
    image, target = make_sample()
    out, t2 = Normalize()(image, target)
    assert t2 is target
    assert torch.allclose(out[:, 0, 0], -torch.tensor([123.675, 116.28, 103.53]) / torch.tensor([58.395, 57.12, 57.375]))


def test_collate_pads_to_divisibility():
    a = make_sample(60, 80)
    b = ResizeFixed(33, 45)(*make_sample())
    batch = collate([a, b], size_divisibility=32)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.images.shape == (2, 3, 64, 96)
    assert batch.image_sizes == [(60, 80), (33, 45)]
    assert batch.orig_sizes == [(60, 80), (60, 80)] and batch.image_ids == [7, 7]
    assert torch.equal(batch.images[1, :, :33, :45], b[0])
    assert batch.images[1, :, 33:].abs().sum() == 0 and batch.images[1, :, :, 45:].abs().sum() == 0
    for t, (_, orig) in zip(batch.targets, [a, b]):
        assert t["masks"].shape[-2:] == (64, 96)
        h, w = orig["masks"].shape[-2:]
        assert torch.equal(t["masks"][:, :h, :w], orig["masks"]) and not t["masks"][:, h:].any()
    empty = ResizeFixed(10, 10)(torch.zeros(3, 5, 5), {"masks": torch.zeros((0, 5, 5), dtype=torch.bool),
                                                       "boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                                                       "image_id": 1, "orig_size": (5, 5), "size": (5, 5)})
    batch = collate([empty], size_divisibility=1)
    assert batch.images.shape == (1, 3, 10, 10) and batch.targets[0]["masks"].shape == (0, 10, 10)
    assert batch.to("cpu").images.shape == (1, 3, 10, 10)
