"""Optimizers and learning-rate schedules as the papers use them.

- SGD with momentum (YOLACT) or AdamW (FastInst, SparseInst);
- per-module learning-rate multipliers: parameters under ``model.backbone`` get
  ``lr * backbone_lr_mult`` (0.1 in FastInst), any other module path listed in
  ``lr_mults`` gets ``lr`` times its multiplier;
- weight decay on every parameter (Mask2Former-style configs exempt norm and embedding
  weights; that refinement is not modelled yet);
- linear warm-up from ``warmup_factor * lr`` over ``warmup_iters``, then step decay by
  ``gamma`` at ``steps`` (iterations, or fractions of ``max_iters`` when < 1).
"""

from __future__ import annotations


import torch
from torch import nn

from rtinst.config import TrainConfig
from rtinst.errors import UserError, did_you_mean


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One group per lr: ``head`` (lr), ``backbone`` (lr x backbone_lr_mult) and one per
    ``lr_mults`` prefix (lr x its multiplier; the longest matching prefix wins)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for prefix in cfg.lr_mults:
        if not any(_under(n, prefix) for n, _ in named):
            modules = [m for m, _ in model.named_modules() if m]
            hint = did_you_mean(prefix, modules, cutoff=0.6)
            raise UserError(f"train.lr_mults: {prefix!r} names no trainable parameter of "
                            f"{type(model).__name__}{hint}")
    by_prefix = sorted(cfg.lr_mults, key=len, reverse=True)
    # head first (the training log reports group 0's lr), then backbone, then the prefixes
    groups = {(None, "head"): {"params": [], "lr": cfg.lr, "name": "head"},
              (None, "backbone"): {"params": [], "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"}}
    for q, mult in cfg.lr_mults.items():
        groups[("lr_mults", q)] = {"params": [], "lr": cfg.lr * mult, "name": q}
    for name, p in named:
        prefix = next((q for q in by_prefix if _under(name, q)), None)
        key = ("lr_mults", prefix) if prefix is not None else \
            (None, "backbone") if _under(name, "backbone") else (None, "head")
        groups[key]["params"].append(p)
    return [g for key, g in groups.items() if g["params"] or key == (None, "head")]


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
