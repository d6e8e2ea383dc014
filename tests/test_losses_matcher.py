"""Generic losses (dice, focal, BCE, IoU) and Hungarian matching (generic + SparseInst's score)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from rtinst.models.losses import (
    bce_loss,
    dice_coefficient,
    dice_loss,
    paired_mask_iou,
    pairwise_dice_score,
    sigmoid_focal_loss,
)
from rtinst.models.matcher import hungarian_match, sparseinst_match, sparseinst_score


def test_dice_uses_squared_denominator():
    p = torch.tensor([[0.5, 0.5, 0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # 2 * (0.5 + 1) / ((0.25 + 0.25 + 1) + 2) = 3 / 3.5
    assert dice_coefficient(p, t, eps=0).item() == pytest.approx(3 / 3.5)
    # The linear-denominator (V-Net/Mask2Former) form differs: (3 + 1) / (2 + 2 + 1).
    assert dice_coefficient(p, t, squared=False).item() == pytest.approx(4 / 5)
    logits = torch.logit(p.clamp(1e-6, 1 - 1e-6))
    assert dice_loss(logits, t, num_instances=1.0).item() == pytest.approx(1 - 3 / 3.5, abs=1e-3)


def test_dice_loss_normalised_by_instances_and_perfect_prediction():
    t = (torch.rand(3, 8, 8) > 0.5).float()
    perfect = (t * 2 - 1) * 30
    assert dice_loss(perfect, t).item() == pytest.approx(0.0, abs=1e-3)
    logits = torch.randn(3, 8, 8)
    per = 1 - dice_coefficient(logits.sigmoid(), t)
    assert dice_loss(logits, t, num_instances=6.0).item() == pytest.approx(per.sum().item() / 6)
    assert dice_loss(logits[:0], t[:0]).item() == 0.0


def test_pairwise_dice_matches_elementwise():
    p, t = torch.rand(4, 5, 5), (torch.rand(3, 5, 5) > 0.5).float()
    pair = pairwise_dice_score(p, t)
    assert pair.shape == (4, 3)
    for i, j in itertools.product(range(4), range(3)):
        assert pair[i, j].item() == pytest.approx(dice_coefficient(p[i:i + 1], t[j:j + 1]).item(), rel=1e-5)


def test_focal_and_bce_wrap_torch():
    x, y = torch.randn(4, 7), (torch.rand(4, 7) > 0.7).float()
    ref = tv_focal(x, y, alpha=0.25, gamma=2.0, reduction="sum")
    assert sigmoid_focal_loss(x, y).item() == pytest.approx(ref.item(), rel=1e-5)
    assert sigmoid_focal_loss(x, y, normalizer=3.0).item() == pytest.approx(ref.item() / 3, rel=1e-5)
    assert sigmoid_focal_loss(x, y, reduction="mean").item() == pytest.approx(ref.item() / 28, rel=1e-5)
    assert bce_loss(x, y).item() == pytest.approx(F.binary_cross_entropy_with_logits(x, y).item())


def test_paired_mask_iou():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared
    assert paired_mask_iou(a, b).tolist() == pytest.approx([4 / 12, 0.0])


def _brute_force(cost: torch.Tensor, maximize: bool) -> float:
    q, t = cost.shape
    best = None
    for perm in itertools.permutations(range(q), t):
        v = sum(cost[perm[j], j].item() for j in range(t))
        best = v if best is None else (max(best, v) if maximize else min(best, v))
    return best


@pytest.mark.parametrize("maximize", [False, True])
def test_hungarian_is_optimal_and_one_to_one(maximize):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        cost = torch.rand(5, 3, generator=g)
        rows, cols = hungarian_match(cost, maximize=maximize)
        assert rows.dtype == torch.int64 and len(rows) == 3
        assert len(set(rows.tolist())) == 3 and sorted(cols.tolist()) == [0, 1, 2]
        assert cost[rows, cols].sum().item() == pytest.approx(_brute_force(cost, maximize), rel=1e-6)


def test_hungarian_edge_cases():
    rows, cols = hungarian_match(torch.zeros(4, 0))
    assert rows.numel() == 0 and cols.numel() == 0
    cost = torch.tensor([[float("nan"), 1.0], [0.0, float("inf")]])
    rows, cols = hungarian_match(cost)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}
    with pytest.raises(ValueError):
        hungarian_match(torch.zeros(3))


def test_sparseinst_score_formula_and_match():
    t = torch.zeros(2, 6, 6)
    t[0, :3] = 1
    t[1, 3:] = 1
    labels = torch.tensor([1, 0])
    masks = torch.stack([t[1] * 0.9, t[0] * 0.8, torch.full((6, 6), 0.5)])  # pred 0 ~ gt 1, pred 1 ~ gt 0
    cls = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.5, 0.5]])
    score = sparseinst_score(cls, masks, labels, t, alpha=0.8)
    dice = pairwise_dice_score(masks, t)
    expected = dice.pow(0.8) * cls[:, labels].pow(0.2)
    assert torch.allclose(score, expected)
    rows, cols = sparseinst_match(cls, masks, labels, t, alpha=0.8)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}
    # alpha = 1: dice only; alpha = 0: class probability only.
    assert torch.allclose(sparseinst_score(cls, masks, labels, t, alpha=1.0), dice)
    assert torch.allclose(sparseinst_score(cls, masks, labels, t, alpha=0.0), cls[:, labels])
    rows, cols = sparseinst_match(cls, masks, labels[:0], t[:0])
    assert rows.numel() == 0
