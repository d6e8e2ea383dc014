"""Bipartite matching of set predictions to ground truth (DETR-style), via scipy's Hungarian solver.

- :func:`hungarian_match`: any ``(Q, T)`` cost (or score) matrix -> matched (query, target)
  index tensors, one pair per target when ``Q >= T``.
- :func:`sparseinst_score` / :func:`sparseinst_match`: SparseInst's Eq. (1),
  ``C(i, k) = p_{i, c_k}^(1 - alpha) * DICE(m_i, t_k)^alpha`` (alpha 0.8), *maximised*,
  with DICE of Eq. (2) (squared denominator).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from rtinst.models.losses import pairwise_dice_score


def hungarian_match(cost: torch.Tensor, maximize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal one-to-one assignment for a ``(Q, T)`` matrix.

    Returns ``(query_idx, target_idx)`` int64 tensors (on ``cost``'s device), sorted by
    query index. Non-finite entries are replaced by a large finite penalty so scipy never
    fails; an empty side gives empty tensors.
    """
    if cost.dim() != 2:
        raise ValueError(f"hungarian_match: expected a (Q, T) matrix, got shape {tuple(cost.shape)}")
    device = cost.device
    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty.clone()
    c = cost.detach().float().cpu()
    if not torch.isfinite(c).all():
        finite = c[torch.isfinite(c)]
        big = (finite.abs().max().item() + 1.0) * 1e3 if finite.numel() else 1e6
        c = torch.nan_to_num(c, nan=-big if maximize else big, posinf=big, neginf=-big)
    rows, cols = linear_sum_assignment(c.numpy(), maximize=maximize)
    return (torch.as_tensor(rows, dtype=torch.int64, device=device),
            torch.as_tensor(cols, dtype=torch.int64, device=device))


def sparseinst_score(cls_prob: torch.Tensor, mask_prob: torch.Tensor, tgt_labels: torch.Tensor,
                     tgt_masks: torch.Tensor, alpha: float = 0.8) -> torch.Tensor:
    """SparseInst matching score ``(Q, T)``: ``p_{i,c_k}^(1-alpha) * DICE(m_i, t_k)^alpha``.

    ``cls_prob`` (Q, K) sigmoid class probabilities; ``mask_prob`` (Q, H, W) mask
    probabilities; ``tgt_labels`` (T,); ``tgt_masks`` (T, H, W) in [0, 1] at the same size.
    """
    dice = pairwise_dice_score(mask_prob, tgt_masks)  # (Q, T)
    prob = cls_prob.float()[:, tgt_labels]  # (Q, T)
    return dice.clamp(min=0).pow(alpha) * prob.clamp(min=0).pow(1 - alpha)


@torch.no_grad()
def sparseinst_match(cls_prob: torch.Tensor, mask_prob: torch.Tensor, tgt_labels: torch.Tensor,
                     tgt_masks: torch.Tensor, alpha: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian matching of one image maximising :func:`sparseinst_score`."""
    if tgt_labels.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=cls_prob.device)
        return empty, empty.clone()
    return hungarian_match(sparseinst_score(cls_prob, mask_prob, tgt_labels, tgt_masks, alpha),
                           maximize=True)
