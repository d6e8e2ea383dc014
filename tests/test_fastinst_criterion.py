"""FastInst's matching cost and mask losses, term by term (paper §3.6, Mask2Former's
criterion): each term's direction, the dice form (plain denominator, +1 smoothing) and the
IA-loss no-object weight are pinned by values, so that a flipped sign, a dropped smoothing
term or the squared dice form fails here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rtinst.models.fastinst_loss import (FastInstCriterion, _pairwise_dice, point_sample,
                                         uncertain_points)

from test_fastinst import K, make_cfg


def _target(size: int = 32) -> dict:
    masks = torch.zeros(1, size, size, dtype=torch.bool)
    masks[0, :, : size // 2] = True  # left half
    return {"labels": torch.tensor([2]), "masks": masks}


def _stage(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> dict:
    return {"class_logits": class_logits[None], "mask_logits": mask_logits[None]}


def _left_right_masks(n: int = 3) -> torch.Tensor:
    """(n, 8, 8) mask logits: query 0 covers the left half (the GT), query 1 the right half,
    the others nothing."""
    m = torch.full((n, 8, 8), -10.0)
    m[0, :, :4] = 10.0
    m[1, :, 4:] = 10.0
    return m


def test_class_cost_matches_the_query_most_confident_in_the_gt_class():
    crit = FastInstCriterion(make_cfg(num_points=256, mask_weight=0.0, dice_weight=0.0))
    logits = torch.zeros(3, K + 1)
    logits[:, 2] = torch.tensor([0.0, 4.0, -4.0])  # query 1 believes in class 2 most
    masks = torch.zeros(3, 8, 8)  # identical masks: only the class term decides
    (qi, ti), = crit.match(_stage(logits, masks), [_target()], None, None)
    assert qi.tolist() == [1] and ti.tolist() == [0]


@pytest.mark.parametrize("term", ["dice", "mask"])
def test_mask_costs_match_the_query_whose_mask_covers_the_gt(term):
    weights = {"class_weight": 0.0, "mask_weight": 0.0, "dice_weight": 0.0, f"{term}_weight": 5.0}
    crit = FastInstCriterion(make_cfg(num_points=256, **weights))
    torch.manual_seed(0)
    (qi, _), = crit.match(_stage(torch.zeros(3, K + 1), _left_right_masks()), [_target()],
                          None, None)
    assert qi.tolist() == [0]


def test_matching_dice_cost_is_the_smoothed_plain_form():
    # probabilities 0.5 on 4 points against targets 1, 1, 0, 0:
    # 1 - (2 * 1 + 1) / ((2 + 2) + 1) = 0.4 (without smoothing: 0.5; squared: 1 - 2 / 3)
    cost = _pairwise_dice(torch.zeros(1, 4), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert cost.item() == pytest.approx(0.4)
    # an empty prediction against an empty target is a perfect match (0/0 without smoothing)
    empty = _pairwise_dice(torch.full((1, 4), -30.0), torch.zeros(1, 4))
    assert empty.item() == pytest.approx(0.0, abs=1e-6)


def test_stage_mask_losses_are_point_bce_and_smoothed_plain_dice():
    cfg = make_cfg(num_points=64)
    crit = FastInstCriterion(cfg)
    torch.manual_seed(3)
    mask_logits = torch.randn(2, 8, 8) * 2
    target = _target(16)
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    torch.manual_seed(11)
    losses = crit.stage_losses(_stage(torch.zeros(2, K + 1), mask_logits), [target], indices, 1.0)
    # the same points, drawn again from the same seed
    torch.manual_seed(11)
    pred = mask_logits[1][None, None]
    points = uncertain_points(pred, cfg.num_points, cfg.oversample_ratio,
                              cfg.importance_sample_ratio)
    x = point_sample(pred, points)[0, 0]
    t = point_sample(target["masks"][None].float(), points)[0, 0]
    p = x.sigmoid()
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    bce = F.binary_cross_entropy_with_logits(x, t)
    assert losses["dice"].item() == pytest.approx(cfg.dice_weight * dice.item(), rel=1e-5)
    assert losses["mask"].item() == pytest.approx(cfg.mask_weight * bce.item(), rel=1e-5)
    squared = 1 - 2 * (p * t).sum() / ((p * p).sum() + (t * t).sum())
    assert not math.isclose(dice.item(), squared.item(), rel_tol=1e-3)  # the test can tell


@pytest.mark.parametrize("weighting", ["paper", "official"])
def test_ia_loss_no_object_weight(weighting):
    cfg = make_cfg(ia_loss_no_object_weight=weighting)
    crit = FastInstCriterion(cfg)
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True  # covers the centre of cell (0, 0) of a 2x2 grid only
    target = [{"labels": torch.tensor([2]), "masks": masks}]
    torch.manual_seed(0)
    class_map = torch.randn(1, K + 1, 2, 2)
    loss = crit.proposal_loss(class_map, target)
    logits = class_map.flatten(2)[0].T  # (4 positions, K+1)
    labels = torch.tensor([2, K, K, K])  # the location cost puts the GT at position 0
    ce = F.cross_entropy(logits, labels, reduction="none")
    if weighting == "paper":  # no-object weighted 1/T (T = 4 positions), weighted mean
        w = torch.tensor([1.0, 0.25, 0.25, 0.25])
        expected = (w * ce).sum() / w.sum()
    else:  # the released criterion: plain cross-entropy
        expected = ce.mean()
    assert loss.item() == pytest.approx(cfg.proposal_weight * expected.item(), rel=1e-5)
