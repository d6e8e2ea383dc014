"""YOLACT's BatchNorm modes (rtinst.models.batchnorm): the official trainer's rule (frozen
below 6 images per GPU), always frozen, plain, SyncBatchNorm; applied by the training loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rtinst.config import load_config
from rtinst.records import _hashed_view, config_hash
from rtinst.data.build import build_dataset, collate_fn
from rtinst.engine.loop import train_loop
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.models.batchnorm import resolve_batch_norm_mode

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs" / "yolact"


def smoke(tmp_path, *overrides):
    return load_config(CONFIGS / "smoke.yaml", [f"data.root={tmp_path / 'data'}", *overrides])


def batch_norms(model) -> list[nn.modules.batchnorm._BatchNorm]:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns  # the smoke backbone trains its BatchNorm
    return bns


def one_step(model, cfg):
    dataset = build_dataset(cfg.data, "train", progress=False)
    batch = collate_fn(cfg.data)([dataset[0], dataset[1]])
    losses = model.train()(batch.images, batch.targets)
    sum(losses.values()).backward()


@pytest.mark.parametrize("per_process,expected", [(1, "frozen"), (5, "frozen"), (6, "train"),
                                                  (16, "train")])
def test_official_rule_freezes_below_six_images_per_process(per_process, expected):
    assert resolve_batch_norm_mode("official", per_process) == expected
    assert resolve_batch_norm_mode("train", 1) == "train"
    assert resolve_batch_norm_mode("frozen", 64) == "frozen"


def test_frozen_batch_norm_keeps_statistics_and_affine(tmp_path):
    cfg = smoke(tmp_path, "model.batch_norm=frozen")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.prepare_training(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(model, cfg)
    for bn in batch_norms(model):
        assert not bn.training and not bn.weight.requires_grad and bn.weight.grad is None
    state = model.state_dict()
    bn_keys = [k for k in state if "running_" in k]
    assert bn_keys and all(torch.equal(state[k], before[k]) for k in bn_keys)
    assert model.head.cls.weight.grad is not None  # the rest trains
    model.eval().train()  # train() again keeps BN frozen, as the official Yolact.train
    assert not any(bn.training for bn in batch_norms(model))


def test_plain_batch_norm_trains(tmp_path):
    cfg = smoke(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.prepare_training(2)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    one_step(model, cfg)
    assert all(bn.training and bn.weight.grad is not None for bn in batch_norms(model))
    after = model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())


def test_sync_batch_norm_converts_and_refuses_cpu_ddp(tmp_path):
    cfg = smoke(tmp_path, "model.batch_norm=sync")
    model = build_model(cfg.model)
    keys = set(model.state_dict())
    model.prepare_training(1, world_size=1, device_type="cpu")
    assert all(isinstance(bn, nn.SyncBatchNorm) for bn in batch_norms(model))
    assert set(model.state_dict()) == keys  # checkpoints stay interchangeable
    one_step(model, cfg)  # one process: no synchronisation needed
    with pytest.raises(UserError, match="model.batch_norm=sync: SyncBatchNorm needs CUDA"):
        build_model(cfg.model).prepare_training(1, world_size=2, device_type="cpu")


def test_training_loop_applies_the_official_rule(tmp_path):
    # batch 2 in one process -> frozen under "official": the run keeps the initial statistics
    cfg = smoke(tmp_path, "model.batch_norm=official", "train.max_iters=2")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    dataset = build_dataset(cfg.data, "train", progress=False)
    train_loop(model, dataset, collate_fn(cfg.data), cfg.train, tmp_path / "run", progress=False)
    assert model.batch_norm_mode == "frozen"
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_batch_norm_mode_hash_rule(tmp_path):
    default = smoke(tmp_path)
    assert "batch_norm" not in _hashed_view(default)["model"]  # tiny/smoke records keep their hash
    assert config_hash(smoke(tmp_path, "model.batch_norm=official")) != config_hash(default)
    assert load_config(CONFIGS / "coco.yaml").model.batch_norm == "official"
