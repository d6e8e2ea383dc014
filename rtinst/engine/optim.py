"""Optimizers and learning-rate schedules as the papers use them.

- SGD with momentum (YOLACT) or AdamW (FastInst, SparseInst);
- per-module learning-rate multipliers: parameters under ``model.backbone`` get
  ``lr * backbone_lr_mult`` (0.1 in FastInst), any other module path listed in
  ``lr_mults`` gets ``lr`` times its multiplier;
- weight decay ``weight_decay`` on every parameter, biases included (detectron2's
  ``WEIGHT_DECAY_BIAS=None``), except where ``weight_decay_norm`` / ``weight_decay_embed``
  are set: the weights and biases of norm layers (BatchNorm/SyncBN/InstanceNorm/GroupNorm/
  LayerNorm) and ``nn.Embedding`` tables then get that value instead. The official FastInst
  (Mask2Former's optimizer) and SparseInst (no decay on "norm" parameters) use 0 for
  both; YOLACT decays everything (SGD over ``net.parameters()``). As in detectron2, an
  embedding is an ``nn.Embedding`` module: a learnable ``nn.Parameter`` grid (FastInst's
  positional embedding, the official ``meta_pos_embed``) is decayed like any weight;
- linear warm-up from ``warmup_factor * lr`` over ``warmup_iters``, then step decay by
  ``gamma`` at ``steps`` (iterations, or fractions of ``max_iters`` when < 1).
"""

from __future__ import annotations


import torch
from torch import nn

from rtinst.config_schema import TrainConfig, step_iterations
from rtinst.errors import UserError, did_you_mean


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# detectron2's norm_module_types (get_default_optimizer_params)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm,
               nn.LayerNorm, nn.LocalResponseNorm)


def _decay_kind(module: nn.Module, cfg: TrainConfig) -> tuple[str, float]:
    """("norm" | "embed" | "", weight decay) of the parameters owned by ``module``."""
    if isinstance(module, NORM_LAYERS) and cfg.weight_decay_norm is not None:
        return "norm", cfg.weight_decay_norm
    if isinstance(module, nn.Embedding) and cfg.weight_decay_embed is not None:
        return "embed", cfg.weight_decay_embed
    return "", cfg.weight_decay


def _named_trainable(model: nn.Module, cfg: TrainConfig) -> list[tuple[str, nn.Parameter, str, float]]:
    """(name, parameter, decay kind, weight decay), each shared parameter once."""
    seen, out = set(), []
    for module_name, module in model.named_modules():
        kind, wd = _decay_kind(module, cfg)
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append((f"{module_name}.{name}" if module_name else name, p, kind, wd))
    return out


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One group per lr: ``head`` (lr), ``backbone`` (lr x backbone_lr_mult) and one per
    ``lr_mults`` prefix (lr x its multiplier; the longest matching prefix wins); each split
    by weight decay where ``weight_decay_norm`` / ``weight_decay_embed`` are set (groups
    named e.g. ``head/norm``). Every group carries its ``weight_decay``."""
    params = _named_trainable(model, cfg)
    named = [(n, p) for n, p, _, _ in params]
    for prefix in cfg.lr_mults:
        if not any(_under(n, prefix) for n, _ in named):
            modules = [m for m, _ in model.named_modules() if m]
            hint = did_you_mean(prefix, modules, cutoff=0.6)
            raise UserError(f"train.lr_mults: {prefix!r} names no trainable parameter of "
                            f"{type(model).__name__}{hint}")
    by_prefix = sorted(cfg.lr_mults, key=len, reverse=True)
    # head first (the training log reports group 0's lr), then backbone, then the prefixes
    lrs = {(None, "head"): (cfg.lr, "head"),
           (None, "backbone"): (cfg.lr * cfg.backbone_lr_mult, "backbone")}
    for q, mult in cfg.lr_mults.items():
        lrs[("lr_mults", q)] = (cfg.lr * mult, q)
    groups = {(key, ""): {"params": [], "lr": lr, "weight_decay": cfg.weight_decay, "name": name}
              for key, (lr, name) in lrs.items()}
    for name, p, kind, wd in params:
        prefix = next((q for q in by_prefix if _under(name, q)), None)
        key = ("lr_mults", prefix) if prefix is not None else \
            (None, "backbone") if _under(name, "backbone") else (None, "head")
        if (key, kind) not in groups:
            lr, group_name = lrs[key]
            groups[(key, kind)] = {"params": [], "lr": lr, "weight_decay": wd,
                                   "name": f"{group_name}/{kind}"}
        groups[(key, kind)]["params"].append(p)
    return [g for key, g in groups.items() if g["params"] or key == ((None, "head"), "")]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def milestones(cfg: TrainConfig) -> list[int]:
    """Decay iterations; values < 1 are fractions of the schedule (FastInst: 0.9, 0.95)."""
    return step_iterations(cfg)


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
