"""Optimizers and learning-rate schedules as the papers use them.

- SGD with momentum (YOLACT) or AdamW (FastInst, SparseInst);
- per-module learning-rate multipliers: parameters under ``model.backbone`` get
  ``lr * backbone_lr_mult`` (0.1 in FastInst);
- weight decay on every parameter (Mask2Former-style configs exempt norm and embedding
  weights; that refinement is not modelled yet);
- linear warm-up from ``warmup_factor * lr`` over ``warmup_iters``, then step decay by
  ``gamma`` at ``steps`` (iterations, or fractions of ``max_iters`` when < 1).
"""

from __future__ import annotations

import torch
from torch import nn

from rtinst.config import TrainConfig


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr, "name": "head"}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def milestones(cfg: TrainConfig) -> list[int]:
    """Decay iterations; values < 1 are fractions of the schedule (FastInst: 0.9, 0.95)."""
    return sorted(int(round(s * cfg.max_iters)) if s < 1 else int(s) for s in cfg.steps)


def lr_factor(it: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at iteration ``it`` (0-based): warm-up x step decay."""
    warm = 1.0
    if it < cfg.warmup_iters:
        alpha = it / cfg.warmup_iters
        warm = cfg.warmup_factor * (1 - alpha) + alpha
    decay = cfg.gamma ** sum(it >= m for m in milestones(cfg))
    return warm * decay


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
