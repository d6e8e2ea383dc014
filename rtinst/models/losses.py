"""Generic mask / classification losses shared by the query- and IAM-based detectors.

All functions take *logits* unless named ``*_from_probs`` and compute in float32 (safe under
autocast). Per-instance masks are flattened to ``(N, P)`` (``P`` pixels or sampled points).

- :func:`dice_loss`: ``1 - DICE`` with the squared denominator of SparseInst's Eq. (2),
  ``DICE(m, t) = 2 sum(m t) / (sum(m^2) + sum(t^2))``; ``squared=False`` gives the
  V-Net/Mask2Former form ``(2 sum(m t) + 1) / (sum(m) + sum(t) + 1)``.
- :func:`pairwise_dice_score`: the same DICE between every prediction and every target
  (matching costs).
- :func:`sigmoid_focal_loss`: ``torchvision.ops.sigmoid_focal_loss`` (alpha 0.25, gamma 2)
  with sum / mean / normalised reductions.
- :func:`bce_loss`: pixel-wise binary cross entropy with logits (mean over pixels).
- :func:`paired_mask_iou`: IoU of binarised masks, pair by pair (SparseInst's objectness targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as _tv_sigmoid_focal_loss

DICE_EPS = 1e-4


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.float().flatten(1)


def dice_coefficient(probs: torch.Tensor, targets: torch.Tensor, squared: bool = True,
                     eps: float = DICE_EPS) -> torch.Tensor:
    """Per-instance DICE of probabilities ``(N, ...)`` against targets ``(N, ...)`` -> ``(N,)``."""
    p, t = _flat(probs), _flat(targets)
    inter = 2 * (p * t).sum(1)
    if squared:
        return inter / ((p * p).sum(1) + (t * t).sum(1) + eps)
    return (inter + 1) / (p.sum(1) + t.sum(1) + 1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_instances: float | None = None,
              squared: bool = True, eps: float = DICE_EPS) -> torch.Tensor:
    """``sum_i (1 - DICE(sigmoid(logits_i), t_i)) / num_instances`` (default: mean over i)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    loss = 1 - dice_coefficient(logits.float().sigmoid(), targets, squared, eps)
    return loss.sum() / (num_instances if num_instances is not None else loss.numel())


def pairwise_dice_score(probs: torch.Tensor, targets: torch.Tensor, squared: bool = True,
                        eps: float = DICE_EPS) -> torch.Tensor:
    """DICE between every prediction ``(Q, ...)`` and every target ``(T, ...)`` -> ``(Q, T)``."""
    p, t = _flat(probs), _flat(targets)
    inter = 2 * p @ t.T
    if squared:
        return inter / ((p * p).sum(1)[:, None] + (t * t).sum(1)[None, :] + eps)
    return (inter + 1) / (p.sum(1)[:, None] + t.sum(1)[None, :] + 1)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "sum",
                       normalizer: float | None = None) -> torch.Tensor:
    """Focal loss (Lin et al.) on independent sigmoids via torchvision.

    ``reduction``: "sum", "mean" (over all elements) or "none"; with ``normalizer`` the sum is
    divided by it (RetinaNet / SparseInst: number of matched instances).
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    loss = _tv_sigmoid_focal_loss(logits.float(), targets.float(), alpha=alpha, gamma=gamma,
                                  reduction="none" if normalizer is not None else reduction)
    if normalizer is not None:
        return loss.sum() / normalizer
    return loss


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Pixel-wise binary cross entropy with logits (mean over every pixel by default)."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction=reduction)


def paired_mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks ``(N, ...)`` and ``(N, ...)`` -> ``(N,)``, pair by pair (0 when both
    empty); the ``(N, M)`` matrix over all pairs is :func:`rtinst.ops.mask_iou`."""
    p, t = pred.flatten(1).float(), target.flatten(1).float()
    inter = (p * t).sum(1)
    union = p.sum(1) + t.sum(1) - inter
    return inter / union.clamp(min=1e-6)


def mean_num_instances(local: int, device: torch.device) -> float:
    """The loss normaliser: matched instances of this process's batch, averaged over the
    processes of a DDP run (all_reduce / world size, as the official code does) and clamped
    to >= 1, so that every process divides by the same number."""
    n = float(local)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([n], dtype=torch.float32, device=device)
        torch.distributed.all_reduce(t)
        n = t.item() / torch.distributed.get_world_size()
    return max(n, 1.0)
