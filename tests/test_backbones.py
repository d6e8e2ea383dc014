"""Backbones: strides/channels, ResNet-d structure, DCN stages, frozen BN, weight loading."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rtinst.config import BackboneConfig
from rtinst.errors import UserError
from rtinst.models.backbones import (
    ModulatedDeformConv2d,
    ResNetBackbone,
    TinyBackbone,
    build_backbone,
    load_weights,
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
    assert isinstance(net.res2[0].downsample[0], nn.Conv2d)  # stride-1 stage unchanged
    out = net.eval()(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 2048, 2, 2)


def test_dcn_only_in_chosen_stages_and_starts_as_plain_conv():
    net = ResNetBackbone(50, dcn_stages=(5,)).eval()
    assert all(isinstance(b.conv2, ModulatedDeformConv2d) for b in net.res5)
    assert not any(isinstance(m, ModulatedDeformConv2d) for m in net.res4.modules())
    # Zero offsets and mask 0.5 at init: DCN == plain conv with half the weight.
    dcn = ModulatedDeformConv2d(4, 6, stride=2)
    x = torch.randn(1, 4, 9, 11)
    ref = nn.functional.conv2d(x, dcn.weight, stride=2, padding=1) * 0.5
    torch.testing.assert_close(dcn(x), ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(UserError, match="dcn_stages"):
        ResNetBackbone(50, dcn_stages=(6,))


def test_load_torchvision_state_dict_round_trip(tmp_path):
    tv = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    net = ResNetBackbone(50)
    report = load_weights(net, path)
    assert report["missing"] == []
    torch.testing.assert_close(net.res4[2].conv2.weight, tv.layer3[2].conv2.weight)
    torch.testing.assert_close(net.stem[0].weight, tv.conv1.weight)
    # ResNet-d: the deep stem has no ImageNet counterpart -> stays random, listed as missing.
    d = ResNetBackbone(50, resnet_d=True)
    report = load_weights(d, path)
    assert any(k.startswith("stem.0.") for k in report["missing"])
    torch.testing.assert_close(d.res2[0].conv1.weight, tv.layer1[0].conv1.weight)


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


def test_tiny_backbone_shapes():
    net = TinyBackbone().eval()
    out = net(torch.randn(2, 3, 64, 64))
    assert {k: v.shape[1:] for k, v in out.items()} == {
        "res3": (64, 8, 8), "res4": (128, 4, 4), "res5": (256, 2, 2)}
    assert net.out_channels == {"res3": 64, "res4": 128, "res5": 256}
    assert sum(p.numel() for p in net.parameters()) < 3e6
