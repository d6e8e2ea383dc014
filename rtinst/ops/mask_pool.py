"""Mask-averaged features: one feature vector per object, from the cells its mask covers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_pool(masks: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    """(B, O, H, W) object masks (binary or fractional, any resolution; all-zero = padding)
    and (B, C, h, w) features -> (B, O, C) features averaged over each mask.

    Each feature cell is weighted by the fraction of it the mask covers (the mask is
    area-averaged onto the feature grid), so a small object still gets the cells it touches.
    """
    cover = F.adaptive_avg_pool2d(masks.to(fmap.dtype), fmap.shape[-2:]).flatten(2)
    weights = cover / cover.sum(2, keepdim=True).clamp(min=1e-6)
    return torch.bmm(weights, fmap.flatten(2).transpose(1, 2))
