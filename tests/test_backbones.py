"""Backbones: strides/channels, ResNet-d structure, DCN stages, frozen BN, weight loading."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rtinst.config_schema import BackboneConfig
from rtinst.errors import UserError
from rtinst.models.backbones import (
    TIMM_RESNET_D,
    DeformConv2d,
    MissingWeightsError,
    ResNetBackbone,
    TinyBackbone,
    WeightsMismatchError,
    backbone_init_identity,
    build_backbone,
    check_pretrained,
    load_weights,
    resolve_pretrained,
)


@pytest.fixture(scope="module")
def r50():
    return ResNetBackbone(50).eval()


def test_resnet50_returns_c3_c5_at_strides_8_16_32(r50):
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        out = r50(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res3": (1, 512, 8, 12), "res4": (1, 1024, 4, 6), "res5": (1, 2048, 2, 3)}
    # Same trunk parameters as torchvision's ResNet-50 without its classifier.
    tv = torchvision.models.resnet50(weights=None)
    n_tv = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    trainable_bn = ResNetBackbone(50, frozen_bn=False)
    assert sum(p.numel() for p in trainable_bn.parameters()) == n_tv
    # Frozen BN turns the affine parameters into buffers.
    n_bn = sum(m.weight.numel() * 2 for m in trainable_bn.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(p.numel() for p in r50.parameters()) == n_tv - n_bn


def test_frozen_bn_has_no_trainable_norm(r50):
    norms = [m for m in r50.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ResNetBackbone(50, frozen_bn=True).modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in ResNetBackbone(50, frozen_bn=False).modules())


def test_resnet_d_deep_stem_and_avgpool_shortcut():
    net = ResNetBackbone(50, resnet_d=True)
    convs = [m for m in net.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 32, (3, 3)), (32, 32, (3, 3)), (32, 64, (3, 3))]
    for stage in (net.res3, net.res4, net.res5):  # stride-2 stages
        ds = stage[0].downsample
        assert isinstance(ds[0], nn.AvgPool2d) and ds[1].stride == (1, 1)
    assert isinstance(net.res2[0].downsample[0], nn.Identity)  # stride-1 stage: no pooling
    out = net.eval()(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 2048, 2, 2)


@pytest.mark.parametrize("modulated", [True, False])
def test_dcn_only_in_chosen_stages_and_starts_as_plain_conv(modulated):
    net = ResNetBackbone(50, dcn_stages=(4, 5), dcn_modulated=modulated).eval()
    # stages 4, 5 = res4, res5 = torchvision's layer3, layer4: every bottleneck's 3x3 conv
    assert all(isinstance(b.conv2, DeformConv2d) and b.conv2.modulated == modulated
               for b in [*net.res4, *net.res5])
    assert not any(isinstance(m, DeformConv2d) for m in [*net.res2.modules(), *net.res3.modules()])
    assert net.res4[0].conv2.stride == 2 and net.res5[0].conv2.conv_offset.stride == (2, 2)
    # DCNv1 predicts 2 offsets per kernel position, DCNv2 also a mask logit
    assert net.res5[1].conv2.conv_offset.out_channels == (27 if modulated else 18)
    # Zero offsets (and mask 0.5) at init: DCN == plain conv (x0.5 for DCNv2).
    dcn = DeformConv2d(4, 6, stride=2, modulated=modulated)
    x = torch.randn(1, 4, 9, 11)
    ref = nn.functional.conv2d(x, dcn.weight, stride=2, padding=1) * (0.5 if modulated else 1.0)
    torch.testing.assert_close(dcn(x), ref, atol=1e-5, rtol=1e-4)
    # learned offsets move the samples: x offset +1 everywhere = the plain conv one pixel right
    dcn = DeformConv2d(4, 6, modulated=modulated)
    with torch.no_grad():
        dcn.conv_offset.bias[1:18:2] = 1.0  # x offsets of the 9 positions (y, x interleaved)
    ref = nn.functional.conv2d(x, dcn.weight, padding=1) * (0.5 if modulated else 1.0)
    torch.testing.assert_close(dcn(x)[..., :-1], ref[..., 1:], atol=1e-5, rtol=1e-4)
    with pytest.raises(UserError, match="dcn_stages"):
        ResNetBackbone(50, dcn_stages=(6,))


def test_load_torchvision_state_dict_round_trip(tmp_path):
    tv = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    net = ResNetBackbone(50)
    assert load_weights(net, path) == {"missing": []}
    torch.testing.assert_close(net.res4[2].conv2.weight, tv.layer3[2].conv2.weight)
    torch.testing.assert_close(net.stem[0].weight, tv.conv1.weight)
    # torchvision's 7x7-stem weights do not fit ResNet-d: a one-line error, not a half-load
    with pytest.raises(WeightsMismatchError, match=r"resnet50.pth: does not fit this ResNet-d-50: "
                       r".* missing .*timm's resnet50d"):
        load_weights(ResNetBackbone(50, resnet_d=True), path)


@pytest.fixture(scope="module")
def timm_resnet50d(tmp_path_factory):
    """A random timm resnet50d and its state dict saved as timm's ImageNet file would be."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet50d", pretrained=False).eval()
    # non-trivial BN statistics, so that a BN loaded into the wrong place shows
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("timm") / TIMM_RESNET_D[50][0]
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_resnet_d_loads_timm_resnet50d_and_computes_the_same(timm_resnet50d, frozen_bn):
    model, path = timm_resnet50d
    net = ResNetBackbone(50, resnet_d=True, frozen_bn=frozen_bn).eval()
    assert load_weights(net, path) == {"missing": []}
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        feats = model.forward_intermediates(x, indices=(2, 3, 4), intermediates_only=True)
        ours = net(x)
    for name, ref in zip(("res3", "res4", "res5"), feats):
        # FrozenBatchNorm2d folds BN in another order: float32 rounding over 50 layers
        torch.testing.assert_close(ours[name], ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))


def test_resnet_d_dcn_loads_timm_weights_offsets_start_at_zero(timm_resnet50d):
    model, path = timm_resnet50d
    net = ResNetBackbone(50, resnet_d=True, dcn_stages=(4, 5), dcn_modulated=False).eval()
    report = load_weights(net, path)
    # only the offset predictors of the 6 + 3 res4/res5 bottlenecks have no ImageNet weights
    assert len(report["missing"]) == 2 * (6 + 3)
    assert all(".conv2.conv_offset." in k for k in report["missing"])
    torch.testing.assert_close(net.res5[1].conv2.weight, model.layer4[1].conv2.weight)
    with torch.no_grad():  # zero offsets: DCNv1 starts as the ImageNet network itself
        ref = model.forward_intermediates(torch.ones(1, 3, 64, 64), indices=(4,),
                                          intermediates_only=True)[0]
        torch.testing.assert_close(net(torch.ones(1, 3, 64, 64))["res5"], ref, rtol=1e-3,
                                   atol=1e-4 * float(ref.abs().max()))


def test_wrong_weights_file_is_a_one_line_error(timm_resnet50d, tmp_path):
    _, path = timm_resnet50d
    with pytest.raises(WeightsMismatchError, match=r"does not fit this ResNet-50: .*missing"):
        load_weights(ResNetBackbone(50), path)  # timm's ResNet-d into a plain ResNet
    with pytest.raises(WeightsMismatchError, match=r"ResNet-d-101: 255 missing \(res4\.10\."):
        load_weights(ResNetBackbone(101, resnet_d=True), path)  # R50 blocks only
    state = torch.load(path, weights_only=True)
    state["layer1.0.extra.weight"] = torch.zeros(1)
    del state["layer4.2.conv3.weight"]
    state["conv1.0.weight"] = torch.zeros(32, 3, 7, 7)
    bad = tmp_path / "edited.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(ResNetBackbone(50, resnet_d=True), bad)
    msg = str(e.value)
    assert "\n" not in msg and "1 missing (res5.2.conv3.weight)" in msg
    assert "1 unexpected (res2.0.extra.weight)" in msg and "1 of another shape (stem.0.0.weight)" in msg
    with pytest.raises(WeightsMismatchError, match="not a state dict"):
        torch.save([1, 2], bad)
        load_weights(ResNetBackbone(50), bad)


def test_auto_finds_timm_resnet50d_in_the_hub_cache(timm_resnet50d, tmp_path, monkeypatch):
    _, path = timm_resnet50d
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    cfg = BackboneConfig(name="resnet50", resnet_d=True, pretrained="auto")
    expected = tmp_path / "hub" / "checkpoints" / "resnet50d_ra2-464e36ba.pth"
    assert resolve_pretrained(cfg) == expected
    assert backbone_init_identity(cfg) == "scratch"
    expected.parent.mkdir(parents=True)
    expected.symlink_to(path)
    net = build_backbone(cfg)
    assert net.init_source == str(expected)
    assert backbone_init_identity(cfg) != "scratch"  # the file's content is the identity


def test_timm_file_names_are_timms():
    timm = pytest.importorskip("timm")
    for depth, (filename, repo) in TIMM_RESNET_D.items():
        pc = timm.models.get_pretrained_cfg(f"resnet{depth}d")
        assert (pc.url.rsplit("/", 1)[-1], pc.hf_hub_id) == (filename, repo)


def test_build_backbone_weight_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.warns(UserWarning, match="training resnet50 from scratch"):
        net = build_backbone(BackboneConfig(name="resnet50", pretrained="auto"))
    assert net.init_source == "scratch"
    with pytest.raises(UserError, match="missing.pth: backbone weights file not found"):
        build_backbone(BackboneConfig(name="resnet50", pretrained=str(tmp_path / "missing.pth")))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load backbone weights"):
        build_backbone(BackboneConfig(name="resnet50", pretrained=str(garbage)))
    # The torchvision cache file is found by "auto" when present.
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(),
               cache / "resnet50-0676ba61.pth")
    net = build_backbone(BackboneConfig(name="resnet50", pretrained="auto"))
    assert net.init_source.endswith("resnet50-0676ba61.pth")


def test_missing_imagenet_weights_are_an_error_at_the_coco_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    auto = BackboneConfig(name="resnet50", pretrained="auto")
    with pytest.raises(MissingWeightsError) as e:
        check_pretrained(auto, "coco")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in msg
    assert "model.backbone.pretrained=PATH" in msg and "model.backbone.pretrained=none" in msg
    d = BackboneConfig(name="resnet50", resnet_d=True, pretrained="auto")
    with pytest.raises(MissingWeightsError, match="timm's resnet50d.*resnet50d_ra2-464e36ba.pth"):
        check_pretrained(d, "coco")
    for preset in ("tiny", "smoke", "custom"):  # elsewhere: from scratch with a warning
        check_pretrained(auto, preset)
    check_pretrained(BackboneConfig(name="resnet50", pretrained="none"), "coco")
    check_pretrained(BackboneConfig(name="tiny", pretrained="auto"), "coco")  # committed file
    with pytest.raises(MissingWeightsError, match="nope.pth: backbone weights file not found"):
        check_pretrained(BackboneConfig(name="resnet50", pretrained=str(tmp_path / "nope.pth")), "tiny")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet50-0676ba61.pth").write_bytes(b"")
    check_pretrained(auto, "coco")


def test_tiny_backbone_shapes():
    net = TinyBackbone().eval()
    out = net(torch.randn(2, 3, 64, 64))
    assert {k: v.shape[1:] for k, v in out.items()} == {
        "res3": (64, 8, 8), "res4": (128, 4, 4), "res5": (256, 2, 2)}
    assert net.out_channels == {"res3": 64, "res4": 128, "res5": 256}
    assert sum(p.numel() for p in net.parameters()) < 3e6


def _train_steps(backbone, steps: int = 2) -> None:
    from rtinst.config_schema import TrainConfig
    from rtinst.engine.optim import build_optimizer

    optimizer = build_optimizer(backbone, TrainConfig(lr=0.1, weight_decay=0.1))
    backbone.train()
    for _ in range(steps):
        out = backbone(torch.randn(2, 3, 64, 64))
        sum(v.square().mean() for v in out.values()).backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_freeze_at_keeps_the_first_stages_convolutions_and_bn_follows_frozen_bn(frozen_bn):
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(name="tiny", frozen_bn=frozen_bn, pretrained="none",
                                             freeze_at=3))
    with torch.no_grad():  # non-trivial affine BN weights, so that weight decay would move them
        for name, p in backbone.named_parameters():
            if "bn" in name or ".1." in name:
                p.add_(0.5)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    _train_steps(backbone)
    after = backbone.state_dict()
    stage = lambda k: k.split(".")[0]  # noqa: E731
    convs = [k for k in before if stage(k) in ("stem", "res2", "res3") and k.endswith("weight")
             and before[k].dim() == 4]
    norms = [k for k in before if stage(k) in ("stem", "res2", "res3") and before[k].dim() == 1
             and before[k].is_floating_point()]
    assert len(convs) >= 6 and norms
    assert all(torch.equal(before[k], after[k]) for k in convs)  # frozen stages' convolutions
    moved = [k for k in norms if not torch.equal(before[k], after[k])]
    if frozen_bn:  # FrozenBatchNorm: nothing of the frozen stages moves
        assert moved == []
    else:  # BatchNorm trains there: affine weights and running statistics move
        assert {k.rsplit(".", 1)[1] for k in moved} >= {"weight", "bias", "running_mean", "running_var"}
    # the later stages train
    assert not torch.equal(before["res4.conv1.weight"], after["res4.conv1.weight"])


def test_freeze_at_every_stage_and_bad_values():
    from rtinst.errors import UserError

    backbone = build_backbone(BackboneConfig(name="tiny", pretrained="none", frozen_bn=True,
                                             freeze_at=5))
    assert not any(p.requires_grad for p in backbone.parameters())
    x = torch.randn(1, 3, 64, 64)
    assert not backbone.train()(x)["res5"].requires_grad  # no graph through a frozen trunk
    trained_bn = build_backbone(BackboneConfig(name="tiny", pretrained="none", frozen_bn=False,
                                               freeze_at=5))
    assert {n.rsplit(".", 1)[1] for n, p in trained_bn.named_parameters() if p.requires_grad} == {"weight", "bias"}
    assert all(p.dim() == 1 for p in trained_bn.parameters() if p.requires_grad)  # BN affine only
    assert all(p.requires_grad for p in build_backbone(
        BackboneConfig(name="tiny", pretrained="none")).parameters())  # default 0: all train
    with pytest.raises(UserError, match=r"model.backbone.freeze_at: 0..5 .*got 6"):
        build_backbone(BackboneConfig(name="tiny", pretrained="none", freeze_at=6))
