"""`rtinst pretrain` on a tiny split: weights + card written, loadable by the tiny backbone."""

import hashlib
import json

import torch

from rtinst.config import BackboneConfig
from rtinst.data.transforms import collate
from rtinst.engine.pretrain import IGNORE, PretrainConfig, pretrain, semantic_targets
from rtinst.models.backbones import build_backbone


def test_pretrain_writes_loadable_weights_and_card(tmp_path):
    cfg = PretrainConfig(data_root=str(tmp_path / "pre"), num_images=8, holdout_images=2,
                         size=96, short_edge=(64, 72), batch_size=2, minutes=5, max_iters=3)
    out = tmp_path / "tiny.pt"
    card = pretrain(cfg, out, progress=False)
    assert card["iterations"] == 3 and card["train_images"] == 6 and card["held_out_images"] == 2
    assert 0.0 <= card["pixel_accuracy"] <= 1.0
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(out.with_suffix(".json").read_text())["config"]["seed"] == 1000
    net = build_backbone(BackboneConfig(name="tiny", pretrained=str(out)))
    assert net.init_source == str(out)
    saved = torch.load(out, weights_only=True)
    torch.testing.assert_close(net.res3.conv1.weight, saved["res3.conv1.weight"])


def test_semantic_targets_classes_background_and_padding():
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, :8, :8] = True
    target = {"masks": mask, "labels": torch.tensor([3]), "boxes": torch.zeros(1, 4),
              "image_id": 1, "orig_size": (16, 16), "size": (16, 16)}
    batch = collate([(torch.zeros(3, 16, 16), target)], size_divisibility=32)
    t = semantic_targets(batch, stride=8)
    assert t.shape == (1, 4, 4)
    assert t[0, 0, 0] == 4  # class 3 -> 4 (0 is background)
    assert t[0, 1, 1] == 0  # inside the image, no object
    assert (t[0, 2:, :] == IGNORE).all() and (t[0, :, 2:] == IGNORE).all()  # padding
