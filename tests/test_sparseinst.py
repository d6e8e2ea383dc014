"""SparseInst: every paper switch (Tables 1-7) changes the computation as the paper says,
the training losses, and the inference contract (scores, rescoring, IAMs). Tiny inputs."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import DeformConv2d

from rtinst.config import load_config
from rtinst.config_schema import BackboneConfig, SparseInstConfig
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.models.backbones import DeformConv2d as BackboneDCN
from rtinst.models.necks import FPN, PPM, InstanceContextEncoder
from rtinst.models.sparseinst import (
    CrossAttentionInstanceBranch,
    DeformConv3x3,
    IAMInstanceBranch,
    SparseInst,
    SparseInstCriterion,
    SparseInstDecoder,
    build_iam_conv,
    coordinate_features,
)

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs" / "sparseinst"
H, W = 64, 96


def small_cfg(**kw) -> SparseInstConfig:
    base = dict(backbone=BackboneConfig(name="tiny", pretrained="none", frozen_bn=False),
                num_classes=5, encoder_channels=32, decoder_width=32, decoder_depth=2,
                kernel_dim=16, num_masks=12, iam_groups=1)
    base.update(kw)
    return SparseInstConfig(**base)


def small_model(**kw) -> SparseInst:
    torch.manual_seed(0)
    return SparseInst(small_cfg(**kw))


def targets(b: int = 2, empty_last: bool = False) -> list[dict]:
    out = []
    for i in range(b):
        masks = torch.zeros(3, H, W, dtype=torch.bool)
        masks[0, 4:30, 6:40] = True
        masks[1, 30:60, 50:90] = True
        masks[2, 8:20, 60:72] = True
        labels = torch.tensor([0, 3, 4])
        if empty_last and i == b - 1:
            masks, labels = masks[:0], labels[:0]
        out.append({"labels": labels, "masks": masks, "boxes": torch.zeros(len(labels), 4)})
    return out


def images(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, H, W, generator=torch.Generator().manual_seed(1))


def infer(model: SparseInst, extras: bool = False, b: int = 1):
    model.eval()
    with torch.no_grad():
        return model(images(b), None, extras=extras)


# ----------------------------------------------------------------- Table 2: encoder


@pytest.mark.parametrize("ppm,fusion", [(False, False), (True, False), (False, True), (True, True)])
def test_encoder_switches(ppm, fusion):
    enc = InstanceContextEncoder({"res3": 8, "res4": 16, "res5": 24}, 32, ppm=ppm, fusion=fusion)
    assert isinstance(enc.fpn.top, PPM) == ppm
    assert (enc.fusion is not None) == fusion
    assert len(enc.fpn.outputs) == (3 if fusion else 1)  # single level: no unused P4/P5 convs
    if fusion:
        assert (enc.fusion.in_channels, enc.fusion.out_channels, enc.fusion.kernel_size) == (96, 32, (1, 1))
    feats = {"res3": torch.randn(1, 8, 8, 12), "res4": torch.randn(1, 16, 4, 6),
             "res5": torch.randn(1, 24, 2, 3)}
    out = enc(feats)
    assert out.shape == (1, 32, 8, 12)  # single level at 1/8
    if not fusion:  # vanilla FPN: P3 of the pyramid
        assert torch.equal(out, enc.fpn([feats[k] for k in ("res3", "res4", "res5")])[0])


def test_ppm_structure_and_fpn_reuse():
    ppm = PPM(256)
    assert [s[0].output_size for s in ppm.stages] == [1, 2, 3, 6]
    assert all(s[1].out_channels == 64 for s in ppm.stages)
    assert ppm.bottleneck.in_channels == 256 + 4 * 64
    assert ppm(torch.randn(1, 256, 5, 7)).shape == (1, 256, 5, 7)
    fpn = FPN([8, 16], 32, norm="GN", activation=True)  # FastInst-style blocks
    assert isinstance(fpn.laterals[0][1], nn.GroupNorm)
    outs = fpn([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])
    assert [o.shape[-1] for o in outs] == [8, 4]
    p3_only = FPN([8, 16], 32, output_levels=[0])
    outs = p3_only([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])
    assert outs[0].shape == (1, 32, 8, 8) and outs[1] is None


def test_default_r50_channel_counts_match_reference():
    cfg = SparseInstConfig()  # R50 G-IAM defaults
    dec = SparseInstDecoder(cfg, 256)
    for branch in (dec.inst_branch, dec.mask_branch):
        convs = [m for m in branch.convs if isinstance(m, nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == \
            [(258, 256, (3, 3))] + [(256, 256, (3, 3))] * 3
    iam = dec.inst_branch.iam_conv
    assert (iam.in_channels, iam.out_channels, iam.groups, iam.kernel_size) == (256, 400, 4, (3, 3))
    fc = dec.inst_branch.fc[0]
    assert (fc.in_features, fc.out_features) == (1024, 1024)
    heads = dec.inst_branch.heads
    assert (heads.cls_score.in_features, heads.cls_score.out_features) == (1024, 80)
    assert (heads.mask_kernel.out_features, heads.objectness.out_features) == (128, 1)
    proj = dec.mask_branch.projection
    assert (proj.in_channels, proj.out_channels, proj.kernel_size) == (256, 128, (1, 1))


# ---------------------------------------------------------- Table 3: decoder structure


@pytest.mark.parametrize("depth,width", [(2, 32), (4, 16), (6, 8)])
def test_decoder_depth_and_width(depth, width):
    dec = SparseInstDecoder(small_cfg(decoder_depth=depth, decoder_width=width), 32)
    for branch in (dec.inst_branch, dec.mask_branch):
        convs = [m for m in branch.convs if isinstance(m, nn.Conv2d)]
        assert len(convs) == depth and all(c.out_channels == width for c in convs)
        assert sum(isinstance(m, nn.ReLU) for m in branch.convs) == depth
    out = dec(torch.randn(1, 32, 8, 12))
    assert out["masks"].shape == (1, 12, 16, 24)  # 1/8 -> 1/4


@pytest.mark.parametrize("coord", [True, False])
def test_coordinate_features_add_two_channels(coord):
    dec = SparseInstDecoder(small_cfg(coord_features=coord), 32)
    expected = 34 if coord else 32
    assert dec.inst_branch.convs[0].in_channels == expected
    assert dec.mask_branch.convs[0].in_channels == expected
    c = coordinate_features(torch.zeros(2, 5, 3, 4))
    assert c.shape == (2, 2, 3, 4)
    assert c[0, 0, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # x along width
    assert c[0, 1, :, 0].tolist() == pytest.approx([-1, 0, 1])  # y along height


def test_deformable_last_conv():
    dec = SparseInstDecoder(small_cfg(deform_last_conv=True, decoder_depth=3), 32)
    for branch in (dec.inst_branch, dec.mask_branch):
        layers = [m for m in branch.convs if not isinstance(m, nn.ReLU)]
        assert [type(m) for m in layers] == [nn.Conv2d, nn.Conv2d, DeformConv3x3]
        assert isinstance(layers[-1].conv, DeformConv2d)
    x = torch.randn(1, 32, 8, 12)
    dcn = dec.mask_branch.convs[4]
    # zero-initialised offsets: a regular grid, every tap weighted 0.5 -> 0.5 x plain conv
    xin = torch.cat([x, coordinate_features(x)], 1)
    xin = dec.mask_branch.convs[:4](xin)
    plain = nn.functional.conv2d(xin, dcn.conv.weight, None, padding=1)
    assert torch.allclose(dcn(xin) - dcn.conv.bias.view(1, -1, 1, 1), 0.5 * plain, atol=1e-5)
    with torch.no_grad():
        dcn.offset_mask.bias[:18] = 0.7  # shifted sampling changes the output
    assert not torch.allclose(dcn(xin) - dcn.conv.bias.view(1, -1, 1, 1), 0.5 * plain, atol=1e-3)
    assert not any(isinstance(m, DeformConv3x3) for m in SparseInstDecoder(small_cfg(), 32).modules())


# -------------------------------------------------------------------- Table 4: F_iam


@pytest.mark.parametrize("kind,kernels", [("1x1", [1]), ("3x3", [3]), ("3x3-relu-3x3", [3, 3])])
def test_iam_conv_variants(kind, kernels):
    m = build_iam_conv(kind, 16, 12, 1)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == kernels
    assert convs[-1].out_channels == 12
    assert any(isinstance(c, nn.ReLU) for c in m.modules()) == (kind == "3x3-relu-3x3")
    assert m(torch.randn(1, 16, 5, 5)).shape == (1, 12, 5, 5)


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_group_iam_really_grouped(groups):
    n, width = 6, 32
    conv = build_iam_conv("3x3", width, n * groups, groups)
    assert conv.groups == groups and conv.out_channels == n * groups
    assert conv.weight.shape == (n * groups, width // groups, 3, 3)
    x = torch.randn(1, width, 6, 6)
    x2 = x.clone()
    x2[:, : width // groups] += 1.0  # perturb input group 0 only
    changed = (conv(x2) - conv(x)).abs().flatten(2).amax(-1)[0] > 0
    assert changed[:n].all() and not changed[n:].any()  # only group 0's N maps move
    branch = IAMInstanceBranch(small_cfg(iam_groups=groups, num_masks=n), 34)
    assert isinstance(branch.fc, nn.Identity) == (groups == 1)
    assert branch.heads.cls_score.in_features == width * groups


def test_group_iam_aggregation_concatenates_each_instance_groups():
    n, g, width = 5, 4, 32  # width: small_cfg's decoder_width
    branch = IAMInstanceBranch(small_cfg(iam_groups=g, num_masks=n), 34).eval()
    seen = {}
    branch.iam_conv.register_forward_hook(lambda m, i, o: seen.update(logits=o, f=i[0]))
    branch.fc.register_forward_pre_hook(lambda m, i: seen.update(z=i[0]))
    out = branch(torch.randn(2, 34, 6, 7))
    act = seen["logits"].flatten(2).sigmoid()
    weights = act / act.sum(-1, keepdim=True)
    feats = seen["f"].flatten(2)  # (B, C, P)
    for inst in (0, 3):
        expected = torch.cat([(weights[:, gi * n + inst, None] * feats).sum(-1) for gi in range(g)], -1)
        assert torch.allclose(seen["z"][:, inst], expected, atol=1e-5)
    assert seen["z"].shape == (2, n, g * width)  # each instance: its G group features side by side
    assert out["iam"].shape == (2, n, g, 6, 7)
    assert out["logits"].shape == (2, n, 5) and out["objectness"].shape == (2, n)


def test_iam_groups_must_divide_width():
    with pytest.raises(UserError):
        IAMInstanceBranch(small_cfg(iam_groups=3, decoder_width=32), 34)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_iam_activation_normalisation(activation):
    model = small_model(iam_activation=activation, iam_groups=2)
    out = model.forward_raw(images(1), need_iam=True)
    iam = out["iam"]  # (B, N, G, h, w) activations
    assert iam.shape == (1, 12, 2, 8, 12)
    sums = iam.flatten(3).sum(-1)
    if activation == "softmax":  # softmax over spatial positions: each map sums to 1
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    else:  # sigmoid maps in (0, 1), normalised by their sum only for aggregation
        assert ((iam > 0) & (iam < 1)).all()
        assert not torch.allclose(sums, torch.ones_like(sums), atol=1e-2)


# ------------------------------------------------------- Table 7: cross attention


def test_cross_attention_replaces_iam():
    model = small_model(instance_head="cross_attention", cross_attention_heads=4, num_masks=100)
    branch = model.decoder.inst_branch
    assert isinstance(branch, CrossAttentionInstanceBranch)
    assert not hasattr(branch, "iam_conv")
    assert branch.attention.num_heads == 4 and branch.queries.shape == (100, 32)
    res = infer(model, extras=True)[0]
    assert res["iam"].shape[1:] == (4, 8, 12)  # per-head attention maps at 1/8
    sums = res["iam"].flatten(2).sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert res["mask_probs"].shape[1:] == (16, 24)
    model.train()
    losses = model(images(), targets())
    sum(losses.values()).backward()
    assert branch.queries.grad is not None and branch.queries.grad.abs().sum() > 0


# ------------------------------------------------------- losses (Tables 5, 6)


def test_training_losses_and_gradients():
    model = small_model(iam_groups=2).train()
    losses = model(images(), targets(empty_last=True))
    assert set(losses) == {"loss_cls", "loss_dice", "loss_mask", "loss_objectness"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.decoder.inst_branch.iam_conv.weight.grad.abs().sum() > 0
    assert model.backbone.res3.conv1.weight.grad is not None
    with pytest.raises(UserError):
        model(images(), None)
    empty = model(images(), [targets(1, empty_last=True)[0]] * 2)  # no instance at all
    assert all(torch.isfinite(v) for v in empty.values())


@pytest.mark.parametrize("dice,focal,bce", [(0, 0, 2), (2, 0, 0), (2, 2, 0), (2, 0, 5)])
def test_mask_loss_combinations(dice, focal, bce):
    model = small_model(dice_weight=float(dice), focal_mask_weight=float(focal), bce_weight=float(bce))
    losses = model.train()(images(), targets())
    assert ("loss_dice" in losses) == bool(dice)
    assert ("loss_mask_focal" in losses) == bool(focal)
    assert ("loss_mask" in losses) == bool(bce)


def test_loss_weights_scale_linearly():
    a = small_model(bce_weight=5.0, dice_weight=2.0, class_weight=2.0).train()(images(), targets())
    b = small_model(bce_weight=2.0, dice_weight=1.0, class_weight=1.0).train()(images(), targets())
    assert a["loss_mask"].item() == pytest.approx(2.5 * b["loss_mask"].item(), rel=1e-5)
    assert a["loss_dice"].item() == pytest.approx(2 * b["loss_dice"].item(), rel=1e-5)
    assert a["loss_cls"].item() == pytest.approx(2 * b["loss_cls"].item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["ce", "l1"])
def test_objectness_loss_on_iou_targets(kind):
    # one prediction, one target: matching is trivial, the target is IoU(pred >= 0.4, gt > 0.5)
    cfg = small_cfg(objectness_loss=kind, num_masks=1, num_classes=2)
    gt = torch.zeros(1, 32, 32, dtype=torch.bool)
    gt[0, :16] = True  # top half: 4 of 8 rows at the 1/4 prediction grid
    pred = torch.full((1, 1, 8, 8), -5.0)
    pred[0, 0, :6] = 5.0  # 6 of 8 rows at 1/4 -> IoU 4/6 with the 4 gt rows
    obj = torch.tensor([[0.3]], requires_grad=True)
    out = {"logits": torch.zeros(1, 1, 2), "masks": pred, "objectness": obj}
    losses = SparseInstCriterion(cfg)({**out}, [{"labels": torch.tensor([1]), "masks": gt}])
    iou = torch.tensor([4 / 6])
    if kind == "ce":
        expected = nn.functional.binary_cross_entropy_with_logits(obj.detach()[0], iou)
    else:
        expected = (obj.detach()[0].sigmoid() - iou).abs().mean()
    assert losses["loss_objectness"].item() == pytest.approx(expected.item(), rel=1e-5)
    losses["loss_objectness"].backward()
    assert obj.grad.abs().item() > 0


def test_objectness_off_has_no_head_and_no_loss():
    model = small_model(objectness="off")
    assert model.decoder.inst_branch.heads.objectness is None
    assert "loss_objectness" not in model.train()(images(), targets())
    assert infer(model)[0]["scores"].numel() > 0


# ------------------------------------------------------------------ inference


def _raw_and_results(model, **kw):
    model.eval()
    with torch.no_grad():
        raw = model.forward_raw(images(1))
        res = model(images(1), None, **kw)[0]
    return raw, res


@pytest.mark.parametrize("objectness", ["off", "no_rescore", "rescore"])
def test_objectness_rescoring(objectness):
    model = small_model(objectness=objectness, mask_rescore=False, score_threshold=0.0)
    raw, res = _raw_and_results(model)
    p = raw["logits"][0].sigmoid()
    if objectness == "rescore":  # p~ = sqrt(p * s)
        p = torch.sqrt(p * raw["objectness"][0].sigmoid()[:, None])
    scores, labels = p.max(-1)
    assert torch.allclose(res["scores"], scores) and torch.equal(res["labels"], labels)


def test_mask_rescoring_multiplies_by_mean_mask_prob_inside():
    model = small_model(mask_rescore=True, score_threshold=0.0)
    raw, res = _raw_and_results(model)
    p = torch.sqrt(raw["logits"][0].sigmoid() * raw["objectness"][0].sigmoid()[:, None]).max(-1).values
    m = raw["masks"][0].sigmoid()
    inside = (m > 0.45).float()
    mask_score = (m * inside).flatten(1).sum(1) / (inside.flatten(1).sum(1) + 1e-6)
    assert torch.allclose(res["scores"], p * mask_score, atol=1e-6)
    assert torch.allclose(res["mask_probs"], m)


def test_inference_contract_threshold_no_sorting_and_extras():
    model = small_model(iam_groups=2)
    with torch.no_grad():  # push some predictions below the threshold
        model.decoder.inst_branch.heads.cls_score.bias[:] = torch.linspace(-12, 0, 5)
        model.decoder.inst_branch.heads.cls_score.weight.mul_(100)
    out = infer(model, extras=True, b=2)
    assert len(out) == 2
    for res in out:
        n = res["scores"].numel()
        assert res["labels"].shape == (n,) and res["mask_probs"].shape == (n, H // 4, W // 4)
        assert res["mask_threshold"] == 0.45
        assert res["iam"].shape == (n, 2, H // 8, W // 8)
        idx = res["indices"]
        assert torch.equal(idx, torch.sort(idx).values)  # prediction order, no sorting
        assert n <= 100
    # keep exactly the predictions above the threshold (before mask rescoring)
    model.post.mask_rescore = False
    raw, res = _raw_and_results(model, extras=True)
    p = torch.sqrt(raw["logits"][0].sigmoid() * raw["objectness"][0].sigmoid()[:, None]).max(-1).values
    assert torch.equal(res["indices"], torch.nonzero(p > 0.005).squeeze(1))
    g1 = infer(small_model(iam_groups=1), extras=True)[0]
    assert g1["iam"].shape[1:] == (H // 8, W // 8)  # (N_kept, h, w) for plain IAM


def test_max_detections_when_more_masks_than_allowed():
    model = small_model(num_masks=12, max_detections=5, score_threshold=0.0)
    res = infer(model, extras=True)[0]
    assert res["scores"].numel() == 5


# ---------------------------------------------------- Table 1, presets, bench parts


def test_backbone_variants_build():
    cfg = small_cfg(backbone=BackboneConfig(name="resnet50", resnet_d=True, dcn_stages=[5],
                                            pretrained="none"))
    model = SparseInst(cfg)
    assert len(model.backbone.stem[0]) == 7  # ResNet-d deep stem convs (timm's conv1)
    assert isinstance(model.backbone.res5[0].conv2, BackboneDCN)
    assert not isinstance(model.backbone.res4[0].conv2, BackboneDCN)
    assert model.encoder.fpn.laterals[-1][0].in_channels == 2048


def test_presets_load_and_build():
    coco = load_config(CONFIGS / "coco.yaml")
    m = coco.model
    assert (m.name, m.backbone.name, m.iam_groups, m.num_masks, m.kernel_dim) == ("sparseinst", "resnet50", 4, 100, 128)
    assert m.backbone.frozen_bn and coco.train.lr == 5e-5 and coco.train.weight_decay == 0.05
    assert coco.train.max_iters == 270000 and coco.train.steps == [210000, 250000]
    assert coco.train.batch_size == 64 and coco.data.train_short_edge == list(range(416, 641, 32))
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert tiny.preset == "tiny" and tiny.model.backbone.name == "tiny" and tiny.model.num_classes == 10
    smoke = load_config(CONFIGS / "smoke.yaml")
    assert smoke.preset == "smoke" and smoke.data.synthetic_size <= 128
    model = build_model(smoke.model)
    assert [n for n, _ in model.named_children()] == ["backbone", "encoder", "decoder", "post"]
    model.eval()
    with torch.no_grad():
        res = model(torch.randn(1, 3, 64, 96))
    assert res[0]["mask_probs"].shape[1:] == (16, 24)
