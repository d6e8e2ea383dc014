"""`rtinst pretrain` on a tiny split: weights + card written, loadable by the tiny backbone."""

import hashlib
import json

import torch

from rtinst.config import BackboneConfig
from rtinst.engine.pretrain import ObjectCrops, PretrainConfig, pretrain
from rtinst.models.backbones import build_backbone


def test_pretrain_writes_loadable_weights_and_card(tmp_path):
    cfg = PretrainConfig(data_root=str(tmp_path / "pre"), num_images=8, holdout_images=2,
                         size=96, crop=32, batch_size=8, minutes=5, max_iters=3)
    out = tmp_path / "tiny.pt"
    card = pretrain(cfg, out, progress=False)
    assert card["iterations"] == 3 and card["train_crops"] > 0 and card["held_out_crops"] > 0
    assert 0.0 <= card["held_out_accuracy"] <= 1.0
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(out.with_suffix(".json").read_text())["config"]["seed"] == 1000
    net = build_backbone(BackboneConfig(name="tiny", pretrained=str(out)))
    assert net.init_source == str(out)
    saved = torch.load(out, weights_only=True)
    torch.testing.assert_close(net.res3.conv1.weight, saved["res3.conv1.weight"])


def test_held_out_crops_are_fixed_and_disjoint(tmp_path):
    cfg = PretrainConfig(data_root=str(tmp_path / "pre"), num_images=6, holdout_images=2, size=96,
                         crop=32)
    from rtinst.data.coco import CocoInstanceDataset
    from rtinst.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "pre", 6, 0, 1000, 96)
    ds = CocoInstanceDataset(tmp_path / "pre/annotations/instances_train.json", tmp_path / "pre/train",
                             training=False)
    held = ObjectCrops(ds, ds.ids[:2], cfg, train=False)
    train = ObjectCrops(ds, ds.ids[2:], cfg, train=True)
    assert {i for i, _, _ in held.items}.isdisjoint({i for i, _, _ in train.items})
    x1, y1 = held[0]
    x2, y2 = held[0]
    assert torch.equal(x1, x2) and y1 == y2 and x1.shape == (3, 32, 32)
