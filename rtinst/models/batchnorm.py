"""How a model's BatchNorm layers train: as plain BN, frozen, or synchronised across processes.

YOLACT's official trainer (dbolya/yolact ``train.py``) freezes every BatchNorm whenever a GPU
holds fewer than 6 images (``batch_size // num_gpus < 6``; the paper's batch 8 on 8 GPUs is
1 image per GPU): the layers stay in eval mode (the pretrained running statistics) and their
affine weights get no gradient. Modes (``model.batch_norm``):

- ``train``: plain BatchNorm, per-process statistics (what the tiny records were made with);
- ``frozen``: always frozen (eval mode, affine weights without gradient, as the official
  ``freeze_bn``; the state dict keeps its keys, so checkpoints load into any mode);
- ``official``: frozen when the per-process batch is below :data:`OFFICIAL_MIN_BATCH`, else plain;
- ``sync``: ``torch.nn.SyncBatchNorm``, statistics over every process's images (needs CUDA
  once there is more than one process).
"""

from __future__ import annotations

from torch import nn

from rtinst.errors import UserError

OFFICIAL_MIN_BATCH = 6
MODES = ("train", "frozen", "official", "sync")


def freeze_batch_norm(model: nn.Module) -> None:
    """Every BatchNorm of ``model`` to eval mode with its affine weights frozen. ``train()``
    undoes the eval mode: a model using this calls it again from its ``train``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            if m.affine:
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)


def resolve_batch_norm_mode(mode: str, per_process_batch: int) -> str:
    """``official`` -> ``frozen`` below :data:`OFFICIAL_MIN_BATCH` images per process, else ``train``."""
    if mode not in MODES:
        raise UserError(f"model.batch_norm: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "official":
        return "frozen" if per_process_batch < OFFICIAL_MIN_BATCH else "train"
    return mode


def check_sync_batch_norm(world_size: int, device_type: str) -> None:
    if world_size > 1 and device_type != "cuda":
        raise UserError("model.batch_norm=sync: SyncBatchNorm needs CUDA devices under DDP "
                        f"({world_size} processes on {device_type}); use train, frozen or official")


def to_sync_batch_norm(model: nn.Module) -> nn.Module:
    """Every BatchNorm of ``model`` (not itself a BatchNorm) replaced in place by SyncBatchNorm."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
