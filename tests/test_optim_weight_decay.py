"""Weight decay per parameter kind: norm layers and embeddings as detectron2's
WEIGHT_DECAY_NORM / WEIGHT_DECAY_EMBED, everything else (biases included) at weight_decay."""

from pathlib import Path

import pytest
import torch
from torch import nn

from rtinst.config import load_config
from rtinst.config_schema import TrainConfig
from rtinst.records import config_hash
from rtinst.engine.optim import build_optimizer, param_groups
from rtinst.models import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.conv = nn.Conv2d(4, 8, 1)  # weight and bias: decayed
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.queries = nn.Embedding(5, 8)
        self.pos = nn.Parameter(torch.zeros(8, 3, 3))  # a raw parameter: decayed (as detectron2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def decay_by_name(model, cfg):
    by_id = {id(p): g["weight_decay"] for g in param_groups(model, cfg) for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def test_norm_and_embedding_decay_follow_their_switches():
    model = Net()
    cfg = TrainConfig(weight_decay=0.05, weight_decay_norm=0.0, weight_decay_embed=0.01)
    wd = decay_by_name(model, cfg)
    assert wd == {
        "backbone.0.weight": 0.05, "backbone.0.bias": 0.05,
        "backbone.1.weight": 0.0, "backbone.1.bias": 0.0,
        "conv.weight": 0.05, "conv.bias": 0.05,
        "gn.weight": 0.0, "gn.bias": 0.0, "ln.weight": 0.0, "ln.bias": 0.0,
        "queries.weight": 0.01, "pos": 0.05,
    }
    groups = param_groups(model, cfg)
    assert [g["name"] for g in groups] == ["head", "backbone", "backbone/norm", "head/norm", "head/embed"]
    # the lr split is kept: the backbone's norm group has the backbone lr
    assert {g["name"]: g["lr"] for g in groups}["backbone/norm"] == pytest.approx(cfg.lr * cfg.backbone_lr_mult)
    assert sum(len(g["params"]) for g in groups) == 12  # every trainable parameter once


def test_unset_switches_decay_everything_as_before():
    model = Net()
    cfg = TrainConfig(weight_decay=0.05)
    assert set(decay_by_name(model, cfg).values()) == {0.05}
    assert [g["name"] for g in param_groups(model, cfg)] == ["head", "backbone"]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimizer_applies_the_group_decay(optimizer):
    model = Net()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.0, weight_decay=0.5,
                      weight_decay_norm=0.0, weight_decay_embed=0.0, backbone_lr_mult=1.0)
    opt = build_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only weight decay moves a parameter
    assert torch.all(model.conv.weight < 1) and torch.all(model.pos < 1)
    for p in (model.gn.weight, model.ln.bias, model.backbone[1].weight, model.queries.weight):
        torch.testing.assert_close(p, torch.ones_like(p))


def test_fastinst_coco_preset_exempts_its_norms_and_query_embeddings():
    cfg = load_config(CONFIGS / "fastinst" / "coco.yaml", ["model.backbone.name=tiny",
                                                           "model.backbone.pretrained=none"])
    assert (cfg.train.weight_decay_norm, cfg.train.weight_decay_embed) == (0.0, 0.0)
    model = build_model(cfg.model)
    wd = decay_by_name(model, cfg.train)
    modules = dict(model.named_modules())
    for name, value in wd.items():
        owner = modules[name.rsplit(".", 1)[0]]
        expected = 0.0 if isinstance(owner, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)) else 0.05
        assert value == expected, name
    assert any(isinstance(m, nn.Embedding) for m in modules.values())
    assert 0.0 in wd.values() and 0.05 in wd.values()


def test_presets_and_hash():
    sparse = load_config(CONFIGS / "sparseinst" / "coco.yaml")
    assert (sparse.train.weight_decay_norm, sparse.train.weight_decay_embed) == (0.0, None)
    yolact = load_config(CONFIGS / "yolact" / "coco.yaml")  # SGD over net.parameters(): all decayed
    assert (yolact.train.weight_decay_norm, yolact.train.weight_decay_embed) == (None, None)
    tiny = load_config(CONFIGS / "fastinst" / "tiny.yaml")
    assert tiny.train.weight_decay_norm is None  # the committed tiny runs decayed everything
    changed = load_config(CONFIGS / "fastinst" / "tiny.yaml", ["train.weight_decay_norm=0"])
    assert config_hash(changed) != config_hash(tiny)
