"""YOLACT anchors and SSD box encoding (rtinst.models.anchors)."""

import math

import pytest
import torch

from rtinst.models.anchors import (
    cxcywh_to_xyxy,
    decode_boxes,
    encode_boxes,
    generate_anchors,
    level_anchor_sizes,
    scaled_anchor_scales,
    xyxy_to_cxcywh,
)

RATIOS = [1.0, 0.5, 2.0]
SCALES_550 = [24.0, 48.0, 96.0, 192.0, 384.0]


def test_count_per_level_is_cells_times_three():
    sizes = [(8, 10), (4, 5), (2, 3), (1, 2), (1, 1)]
    anchors = generate_anchors(sizes, (64, 80), [8, 16, 32, 64, 128], RATIOS)
    assert anchors.shape == (sum(h * w * 3 for h, w in sizes), 4)


def test_yolact_550_has_19248_anchors():
    # ResNet feature sizes at 550: P3 69, P4 35, P5 18, P6 9, P7 5 (the official 19248 priors)
    sizes = [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
    assert generate_anchors(sizes, (550, 550), SCALES_550, RATIOS).shape[0] == 19248


def test_scales_follow_the_input_size():
    assert scaled_anchor_scales(SCALES_550, 550) == SCALES_550
    s400 = scaled_anchor_scales(SCALES_550, 400)
    assert s400 == pytest.approx([s * 400 / 550 for s in SCALES_550])
    s700 = scaled_anchor_scales(SCALES_550, 700)
    assert s700[0] == pytest.approx(24 * 700 / 550)


def test_centers_at_cell_centers_and_order_y_x_ratio():
    anchors = generate_anchors([(2, 4)], (16, 32), [8.0], RATIOS)  # stride 8 both ways
    a = anchors.view(2, 4, 3, 4)  # y, x, ratio, (cx, cy, w, h)
    assert torch.allclose(a[..., 0][:, :, 0], torch.tensor([4.0, 12.0, 20.0, 28.0]).expand(2, 4))
    assert torch.allclose(a[..., 1][:, :, 0], torch.tensor([[4.0] * 4, [12.0] * 4]))
    # all three ratios share the centre
    assert torch.equal(a[..., :2][:, :, 0], a[..., :2][:, :, 2])


def test_centers_when_input_is_not_a_multiple_of_the_stride():
    # 550 / 69 cells: the map covers the input evenly, as the official relative anchors
    anchors = generate_anchors([(69, 69)], (550, 550), [24.0], [1.0])
    cx = anchors[:69, 0]
    assert cx[0].item() == pytest.approx(0.5 * 550 / 69)
    assert cx[-1].item() == pytest.approx(68.5 * 550 / 69)


def test_aspect_ratios_are_w_over_h_with_constant_area():
    anchors = generate_anchors([(1, 1)], (32, 32), [24.0], RATIOS)
    w, h = anchors[:, 2], anchors[:, 3]
    assert torch.allclose(w / h, torch.tensor(RATIOS))
    assert torch.allclose(w * h, torch.full((3,), 24.0 ** 2))


def test_square_anchor_mode_keeps_three_square_anchors():
    sizes = level_anchor_sizes(24.0, RATIOS, square=True)
    assert [w for w, _ in sizes] == pytest.approx([24.0, 24 * math.sqrt(0.5), 24 * math.sqrt(2)])
    assert all(w == h for w, h in sizes)
    anchors = generate_anchors([(3, 3)], (24, 24), [24.0], RATIOS, square=True)
    assert anchors.shape == (27, 4) and torch.equal(anchors[:, 2], anchors[:, 3])


def test_box_format_conversions_round_trip():
    boxes = torch.tensor([[1.0, 2.0, 11.0, 7.0], [0.0, 0.0, 3.0, 30.0]])
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    assert torch.allclose(xyxy_to_cxcywh(boxes)[0], torch.tensor([6.0, 4.5, 10.0, 5.0]))


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.rand(50, 2, generator=g) * 100,
                         torch.rand(50, 2, generator=g) * 60 + 4], dim=1)
    xy = torch.rand(50, 2, generator=g) * 100
    gt = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 80 + 1], dim=1)
    deltas = encode_boxes(gt, anchors)
    assert torch.allclose(decode_boxes(deltas, anchors), gt, atol=1e-4)
    # and the other way round
    d = torch.randn(50, 4, generator=g)
    assert torch.allclose(encode_boxes(decode_boxes(d, anchors), anchors), d, atol=1e-4)


def test_ssd_encoding_uses_variances():
    anchors = torch.tensor([[10.0, 10.0, 4.0, 8.0]])
    gt = cxcywh_to_xyxy(torch.tensor([[11.0, 10.0, 8.0, 8.0]]))
    d = encode_boxes(gt, anchors, (0.1, 0.2))
    assert torch.allclose(d, torch.tensor([[1 / (0.1 * 4), 0.0, math.log(2) / 0.2, 0.0]]))
    # a box equal to its anchor encodes to zero
    assert torch.allclose(encode_boxes(cxcywh_to_xyxy(anchors), anchors), torch.zeros(1, 4),
                          atol=1e-6)
