"""YOLACT detector, losses and presets (rtinst.models.yolact / yolact_loss)."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import rtinst.ops.nms as nms_module
from rtinst.config import load_config
from rtinst.config_schema import BackboneConfig, YolactConfig
from rtinst.data.transforms import masks_to_boxes
from rtinst.engine.optim import build_optimizer, build_scheduler
from rtinst.models import build_model
from rtinst.models.yolact import Yolact, paste_masks
from rtinst.models.yolact_loss import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    crop_mask,
    crop_region,
    match_anchors,
    ohem_negatives,
)

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs" / "yolact"
SIZE = 64


def small_cfg(**kw) -> YolactConfig:
    base = dict(backbone=BackboneConfig(name="tiny", pretrained="none", frozen_bn=False),
                num_classes=3, image_size=SIZE, fpn_channels=32, num_prototypes=8)
    base.update(kw)
    return YolactConfig(**base)


def make_batch(n_images: int = 2, size: int = SIZE, seed: int = 0):
    """Images whose pixels tell the rectangles apart; targets as the data pipeline gives."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, 3, size, size, generator=g) * 0.1
    targets = []
    for i in range(n_images):
        masks = torch.zeros(3, size, size, dtype=torch.bool)
        s = size // 64
        masks[0, 4 * s:28 * s, 6 * s:30 * s] = True
        masks[1, 34 * s:60 * s, 30 * s:50 * s] = True
        masks[2, (8 + i) * s:(20 + i) * s, 44 * s:60 * s] = True
        for k in range(3):
            images[i, k][masks[k]] += 2.0
        targets.append({"labels": torch.tensor([0, 1, 2]), "masks": masks,
                        "boxes": masks_to_boxes(masks)})
    return images, targets


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Yolact(small_cfg()).eval()


# ----------------------------------------------------------------------------- matching


def test_matching_thresholds_and_forced_best_anchor():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # IoU 1 with gt0 -> positive
                            [0.0, 0.0, 10.0, 9.0],    # 0.9 -> positive
                            [0.0, 0.0, 10.0, 4.5],    # 0.45 -> neutral
                            [0.0, 0.0, 10.0, 3.0],    # 0.3 -> background
                            [50.0, 50.0, 60.0, 70.0],  # gt1's best anchor (IoU 0.25) -> forced
                            [100.0, 100.0, 110.0, 110.0]])  # nothing -> background
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 55.0]])
    m = match_anchors(anchors, gt, torch.tensor([2, 0]), 0.5, 0.4)
    assert m.state.tolist() == [POSITIVE, POSITIVE, NEUTRAL, NEGATIVE, POSITIVE, NEGATIVE]
    assert m.labels.tolist() == [3, 3, -1, 0, 1, 0]  # class + 1, 0 background, -1 ignored
    assert m.gt[4].item() == 1


def test_matching_without_gt_is_all_background():
    m = match_anchors(torch.rand(7, 4) * 10, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert m.state.tolist() == [NEGATIVE] * 7 and m.labels.tolist() == [0] * 7


# -------------------------------------------------------------------------------- OHEM


def test_ohem_keeps_three_negatives_per_positive_the_hardest():
    a = 40
    state = torch.full((a,), NEGATIVE)
    state[[0, 1]] = POSITIVE
    state[[2, 3, 4]] = NEUTRAL
    logits = torch.zeros(a, 4)
    hardness = torch.arange(a, dtype=torch.float32)  # background loss grows with the index
    logits[:, 1] = hardness
    # neutral and positive anchors are the very hardest: they must never be picked
    logits[[0, 1, 2, 3, 4], 1] = 1000.0
    sel = ohem_negatives(logits, state, 3.0)
    assert int(sel.sum()) == 6
    assert sorted(torch.nonzero(sel).squeeze(1).tolist()) == list(range(a - 6, a))
    assert not sel[:5].any()


def test_ohem_clamps_to_available_negatives_and_zero_positives():
    state = torch.tensor([POSITIVE, POSITIVE, NEGATIVE, NEGATIVE])
    assert int(ohem_negatives(torch.randn(4, 3), state, 3.0).sum()) == 2
    state = torch.full((5,), NEGATIVE)
    assert int(ohem_negatives(torch.randn(5, 3), state, 3.0).sum()) == 0


# -------------------------------------------------------------------------------- crop


def test_crop_zeroes_outside_the_box():
    masks = torch.ones(2, 8, 10)
    boxes = torch.tensor([[2.0, 1.0, 5.0, 4.0], [0.5, 6.2, 1.5, 7.8]])  # grid units
    out = crop_mask(masks, boxes)
    expected0 = torch.zeros(8, 10)
    expected0[1:4, 2:5] = 1
    assert torch.equal(out[0], expected0)
    expected1 = torch.zeros(8, 10)  # partially covered cells are kept
    expected1[6:8, 0:2] = 1
    assert torch.equal(out[1], expected1)
    assert torch.equal(crop_region(boxes, 8, 10), out.bool())


def test_paste_masks_fills_the_box_only():
    masks = torch.ones(1, 4, 4) * 0.8
    out = paste_masks(masks, torch.tensor([[2.0, 2.0, 6.0, 5.0]]), (8, 8))
    out = out * crop_region(torch.tensor([[2.0, 2.0, 6.0, 5.0]]), 8, 8)
    assert torch.allclose(out[0, 2:5, 2:6], torch.full((3, 4), 0.8))
    assert out.sum().item() == pytest.approx(0.8 * 12)


# --------------------------------------------------------------------- model structure


def test_head_layout_and_protonet_shapes(model):
    head = model.head
    assert head.shared.kernel_size == (3, 3) and head.shared.out_channels == 32
    assert head.cls.out_channels == 3 * 4 and head.box.out_channels == 3 * 4
    assert head.mask.out_channels == 3 * 8 and head.cls.kernel_size == (3, 3)
    with torch.no_grad():
        feats = model.fpn(model.backbone(torch.zeros(1, 3, SIZE, SIZE)))
        protos = model.protonet(feats[0])
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert protos.shape == (1, 8, SIZE // 4, SIZE // 4) and protos.min() >= 0  # ReLU
    # anchor scales follow image_size (s_x = s_550 / 550 * x)
    assert model.level_scales[0] == pytest.approx(24 * SIZE / 550)


def test_square_anchor_switch_keeps_head_and_params():
    torch.manual_seed(0)
    a, b = Yolact(small_cfg()), Yolact(small_cfg(square_anchors=True))
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    aa = a.anchors(sizes, (SIZE, SIZE), torch.device("cpu"))
    bb = b.anchors(sizes, (SIZE, SIZE), torch.device("cpu"))
    assert aa.shape == bb.shape and torch.equal(bb[:, 2], bb[:, 3])
    assert not torch.equal(aa[:, 2], aa[:, 3])


# ------------------------------------------------------------------------------ training


def test_training_forward_finite_losses_and_backward():
    torch.manual_seed(0)
    m = Yolact(small_cfg()).train()
    images, targets = make_batch()
    losses = m(images, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask", "loss_sem"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("head.cls.weight", "head.box.weight", "head.mask.weight",
                 "protonet.out.weight", "semantic.weight", "fpn.output.0.weight"):
        grad = m.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_training_with_an_empty_image_and_without_semantic_loss():
    torch.manual_seed(0)
    m = Yolact(small_cfg(semantic_seg_loss=False)).train()
    images, targets = make_batch()
    targets[1] = {"labels": torch.zeros(0, dtype=torch.long),
                  "masks": torch.zeros(0, SIZE, SIZE, dtype=torch.bool),
                  "boxes": torch.zeros(0, 4)}
    t0 = targets[0]  # plus a degenerate (zero-size) instance, which must be ignored
    targets[0] = {"labels": torch.cat([t0["labels"], torch.tensor([1])]),
                  "masks": torch.cat([t0["masks"], torch.zeros(1, SIZE, SIZE, dtype=torch.bool)]),
                  "boxes": torch.cat([t0["boxes"], torch.tensor([[5.0, 5.0, 5.0, 9.0]])])}
    losses = m(images, targets)
    assert "loss_sem" not in losses and m.semantic is None
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_fc_mask_variant_shapes_and_losses():
    torch.manual_seed(0)
    m = Yolact(small_cfg(mask_type="fc", fc_mask_size=16))
    assert m.protonet is None and m.head.mask.out_channels == 3 * 256
    images, targets = make_batch()
    losses = m.train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    m.eval()
    with torch.no_grad():
        out = m(images, None, extras=True)
    n = out[0]["scores"].shape[0]
    assert n > 0 and out[0]["mask_probs"].shape == (n, SIZE // 4, SIZE // 4)
    assert out[0]["fc_masks"].shape == (n, 16, 16)
    # zero outside each predicted box
    region = crop_region(out[0]["boxes"] / 4, SIZE // 4, SIZE // 4)
    assert (out[0]["mask_probs"][~region] == 0).all()


def test_smoke_config_overfits_a_fixed_batch():
    cfg = load_config(CONFIGS / "smoke.yaml", ["model.num_classes=3"])
    size = cfg.model.image_size
    torch.manual_seed(0)
    m = build_model(cfg.model).train()
    opt, images_targets = build_optimizer(m, cfg.train), make_batch(cfg.train.batch_size, size)
    sched = build_scheduler(opt, cfg.train)
    totals = []
    for _ in range(8):
        losses = m(*images_targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        nn.utils.clip_grad_norm_(m.parameters(), cfg.train.clip_grad_norm or 1e9)
        opt.step()
        sched.step()
        totals.append(total.item())
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-2:]) / 2 < 0.7 * totals[0], totals


# ---------------------------------------------------------------------------- inference


def test_eval_output_contract_and_extras(model):
    images, _ = make_batch()
    with torch.no_grad():
        plain = model(images, None)
        out = model(images, None, extras=True)
    assert len(out) == 2 and len(plain) == 2
    for o, p in zip(out, plain):
        n = o["scores"].shape[0]
        assert 0 < n <= 100
        assert o["labels"].dtype == torch.int64 and o["labels"].shape == (n,)
        assert ((o["labels"] >= 0) & (o["labels"] < 3)).all()
        assert (o["scores"][:-1] >= o["scores"][1:]).all() and (o["scores"] > 0.05).all()
        assert o["boxes"].shape == (n, 4)
        assert (o["boxes"] >= 0).all() and (o["boxes"] <= SIZE).all()
        assert o["mask_probs"].shape == (n, SIZE // 4, SIZE // 4)
        assert o["mask_probs"].min() >= 0 and o["mask_probs"].max() <= 1
        assert o["mask_threshold"] == 0.5
        assert "prototypes" not in p and "coefficients" not in p
        assert torch.equal(p["scores"], o["scores"])
        # masks are sigmoid(P C^T) cropped by the predicted box (in prototype cells)
        protos, coeffs = o["prototypes"], o["coefficients"]
        assert protos.shape == (8, SIZE // 4, SIZE // 4) and coeffs.shape == (n, 8)
        assert coeffs.abs().max() <= 1  # tanh
        assembled = torch.sigmoid(torch.einsum("khw,nk->nhw", protos, coeffs))
        expected = crop_mask(assembled, o["boxes"] / 4)
        assert torch.allclose(o["mask_probs"], expected, atol=1e-6)


def test_semantic_head_is_not_run_at_test_time(model):
    calls = []
    handle = model.semantic.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, SIZE, SIZE), None)
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize("kind", ["fast", "standard", "cluster", "matrix"])
def test_nms_kind_selects_the_post_processing_function(monkeypatch, kind):
    calls = []
    for name, fn in list(nms_module._VARIANTS.items()):
        def spy(*args, _name=name, _fn=fn, **kwargs):
            calls.append(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setitem(nms_module._VARIANTS, name, spy)
    torch.manual_seed(0)
    m = Yolact(small_cfg(nms=kind)).eval()
    with torch.no_grad():
        out = m(make_batch(1)[0], None)
    assert calls == [kind]
    assert out[0]["scores"].shape[0] > 0


def test_build_model_and_presets_load():
    coco = load_config(CONFIGS / "coco.yaml")
    assert coco.model.name == "yolact" and coco.model.backbone.name == "resnet101"
    assert not coco.model.backbone.frozen_bn and coco.model.image_size == 550
    assert coco.train.optimizer == "sgd" and coco.train.lr == 1e-3
    assert coco.train.steps == [280000, 600000, 700000, 750000] and coco.train.max_iters == 800000
    assert coco.train.batch_size == 8 and coco.train.weight_decay == 5e-4
    assert coco.data.fixed_size == 550 and coco.data.dataset == "coco"
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert tiny.model.backbone.name == "tiny" and tiny.preset == "tiny"
    assert tiny.data.dataset == "synthetic" and tiny.model.num_classes == 10
    smoke = load_config(CONFIGS / "smoke.yaml")
    assert smoke.preset == "smoke" and smoke.model.image_size <= 128
    assert isinstance(build_model(small_cfg()), Yolact)
