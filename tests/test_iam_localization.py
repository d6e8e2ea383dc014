"""IAM localization (`rtinst bench iam`): the measures on hand-made maps, and the CLI on a run."""

import json

import pytest
import torch

from rtinst.cli import main
from rtinst.diagnostics.iam_localization import (ACTIVE_PEAK, active_groups, candidate_threshold,
                                                 focused_group, iam_weights,
                                                 localization_stats,
                                                 true_positive_matches, true_positive_stats)


def _square_mask(size: int = 16, lo: int = 4, hi: int = 8) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[0, lo:hi, lo:hi] = 1.0
    return m


def test_a_map_equal_to_its_object_has_all_its_mass_inside_and_the_object_as_support():
    gt = _square_mask()  # 16 of 256 positions
    weights = gt / gt.sum()
    s = localization_stats(weights, gt)
    assert s["mass_in_object"].item() == pytest.approx(1.0)
    assert s["area_fraction"].item() == pytest.approx(16 / 256)
    assert s["support"].item() == pytest.approx(16 / 256)


def test_a_uniform_map_puts_the_objects_area_share_inside_and_spans_the_whole_map():
    gt = _square_mask()
    weights = torch.full((1, 16, 16), 1 / 256)
    s = localization_stats(weights, gt)
    assert s["mass_in_object"].item() == pytest.approx(16 / 256)
    assert s["support"].item() == pytest.approx(1.0)


def test_gt_masks_at_input_resolution_are_resized_to_the_map():
    gt = _square_mask(size=64, lo=16, hi=32)  # the same square at 4x the map's resolution
    weights = _square_mask() / 16
    assert localization_stats(weights, gt)["mass_in_object"].item() == pytest.approx(1.0)


def test_each_group_is_normalised_before_the_groups_are_averaged():
    iam = torch.zeros(1, 2, 4, 4)
    iam[0, 0, 0, 0] = 0.9  # group 0: all on one position, small absolute values
    iam[0, 1] = 0.5  # group 1: uniform, large absolute values
    w = iam_weights(iam)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[0, 0, 0].item() == pytest.approx(0.5 + 0.5 / 16)  # not dominated by group 1's scale


def test_a_map_with_a_one_cell_halo_is_near_its_object_though_most_of_it_is_outside():
    gt = _square_mask()  # a 4x4-cell object
    halo = _square_mask(lo=3, hi=9)  # the object and the ring of cells around it: 36 cells
    s = localization_stats(halo / halo.sum(), gt)
    assert s["mass_in_object"].item() == pytest.approx(16 / 36)
    assert s["mass_near_object"].item() == pytest.approx(1.0)
    wider = _square_mask(lo=2, hi=10)  # two cells of halo: the outer ring is not "near"
    assert localization_stats(wider / wider.sum(), gt)["mass_near_object"].item() == pytest.approx(36 / 64)
    assert true_positive_stats((halo / halo.sum())[:, None], gt)["mass_near_object"].item() == pytest.approx(1.0)


def test_a_true_positives_map_fully_inside_its_object_scores_one():
    gt = _square_mask()
    iam = (gt / gt.sum())[:, None]  # (1, G=1, 16, 16)
    s = true_positive_stats(iam, gt)
    assert s["mass_in_object"].item() == pytest.approx(1.0)
    assert s["concentration"].item() == pytest.approx(256 / 16)
    assert s["support"].item() == pytest.approx(16 / 256)


def test_the_most_concentrated_group_is_scored_not_the_one_with_most_mass_inside():
    gt = _square_mask()  # rows/cols 4..7
    iam = torch.zeros(1, 3, 16, 16)
    iam[0, 0] = 1.0  # uniform: 1/16 of its mass inside
    iam[0, 1, 5, 5] = iam[0, 1, 5, 6] = 1.0  # two positions, both inside the object
    iam[0, 2, 12, 12] = 1.0  # one position, outside: the most concentrated
    focused, group = focused_group(iam)
    assert group.tolist() == [2] and focused.sum().item() == pytest.approx(1.0)
    s = true_positive_stats(iam, gt)
    assert s["group"].tolist() == [2] and s["mass_in_object"].item() == pytest.approx(0.0)
    iam[0, 2] = 0.0
    iam[0, 2, 4:8, 4:8] = 1.0  # now the 2-position group is the most concentrated
    s = true_positive_stats(iam, gt)
    assert s["group"].tolist() == [1] and s["mass_in_object"].item() == pytest.approx(1.0)
    # the group-averaged map, as for matched predictions: (1/16 + 1 + 1) / 3
    assert s["mass_in_object_group_mean"].item() == pytest.approx((1 / 16 + 2) / 3)


def test_an_off_sigmoid_group_is_not_chosen_even_if_its_noise_floor_is_concentrated():
    gt = _square_mask()  # rows/cols 4..7
    iam = torch.full((1, 2, 16, 16), 1e-3)
    iam[0, 0, 3:9, 3:9] = 0.9  # on: covers the object and a ring around it
    iam[0, 1] = 1e-5
    iam[0, 1, 14, 1] = 0.02  # off everywhere; normalised, nearly all of it on one spot outside
    assert active_groups(iam).tolist() == [[True, False]]
    s = true_positive_stats(iam, gt)
    assert s["group"].tolist() == [0] and s["active_groups"].tolist() == [1.0]
    assert s["mass_in_object"].item() == pytest.approx(16 * 0.9 / (36 * 0.9 + 220 * 1e-3), rel=1e-4)
    # choosing among all groups takes the off one: what `mass_in_object_any_group` reports
    assert focused_group(iam)[1].tolist() == [1]
    assert s["mass_in_object_any_group"].item() < 0.05
    # softmax / attention maps: every group is a candidate
    assert true_positive_stats(iam, gt, threshold=None)["group"].tolist() == [1]


def test_when_no_group_switches_on_the_highest_peak_is_the_candidate():
    iam = torch.full((2, 3, 4, 4), 0.01)
    iam[0, 2, 1, 1] = 0.3
    iam[1, 0, 0, 0] = 0.4
    iam[1, 1, 2, 2] = 0.6
    assert active_groups(iam).tolist() == [[False, False, True], [False, True, False]]
    assert active_groups(iam, threshold=0.2).tolist() == [[False, False, True], [True, True, False]]
    assert active_groups(iam, threshold=None).all()


def _box(lo: int, hi: int, size: int = 16) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[lo:hi, lo:hi] = True
    return m


def test_true_positive_matching_follows_coco():
    gt = torch.stack([_box(2, 8), _box(9, 15)])
    gt_labels = torch.tensor([0, 1])
    low_iou = _box(2, 5)  # IoU 9/36 with object 0
    masks = torch.stack([_box(2, 8), _box(2, 8), low_iou, _box(9, 15), _box(9, 14)])
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 0, 1])  # detection 3 has the wrong class for object 1
    det, obj = true_positive_matches(masks, scores, labels, gt, gt_labels)
    # 1 (highest score) takes object 0, so its duplicate 0 is a false positive; 2 misses on
    # IoU, 3 on class; 4 overlaps object 1 with IoU 25/36 >= 0.5
    assert det.tolist() == [1, 4] and obj.tolist() == [0, 1]
    none, _ = true_positive_matches(masks[:0], scores[:0], labels[:0], gt, gt_labels)
    assert none.numel() == 0


def test_cli_measures_a_trained_sparseinst_run_and_refuses_other_models(tmp_path, capsys):
    from rtinst.config import load_config
    from rtinst.engine.train import run_training

    data = f"data.root={tmp_path / 'data'}"
    cfg = load_config("rtinst/configs/sparseinst/smoke.yaml",
                      [data, "model.backbone.pretrained=none", "eval.tide=false"])
    run_training(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "iam.json"
    assert main(["bench", "iam", "--run", str(tmp_path / "run"), "--train-images", "8",
                 "--val-images", "6", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["val_instances"] > 0 and record["train_instances"] > 0
    assert 0.0 <= record["mass_in_object"]["median"] <= 1.0
    assert 0.0 < record["support"]["median"] <= 1.0
    assert all(0.0 <= record[k] <= 1.0 for k in ("head_accuracy", "probe_accuracy", "majority"))
    tp = record["true_positives"]
    assert 0 <= tp["count"] <= tp["detections"]
    if tp["count"]:
        assert 0.0 <= tp["mass_in_object"]["median"] <= 1.0
        assert sum(b["count"] for b in tp["by_object_cells"]) == tp["count"]
    printed = capsys.readouterr().out
    assert ("by the object's size in map cells" in printed) == bool(tp["count"])
    assert "linear probe of the pooled features" in printed and "true positives" in printed

    assert main(["bench", "iam", "--run", str(tmp_path / "run"), "--checkpoint", "nope.pt"]) == 2
    assert "nope.pt: neither a file nor in" in capsys.readouterr().err

    yolact = load_config("rtinst/configs/yolact/smoke.yaml",
                         [data, "model.backbone.pretrained=none", "eval.tide=false"])
    run_training(yolact, tmp_path / "yolact", progress=False)
    assert main(["bench", "iam", "--run", str(tmp_path / "yolact")]) == 2
    assert "needs a SparseInst run" in capsys.readouterr().err


def test_only_sigmoid_iams_restrict_the_candidates_to_groups_that_switch_on():
    from dataclasses import replace

    from rtinst.config_schema import SparseInstConfig

    cfg = SparseInstConfig()
    assert candidate_threshold(cfg) == ACTIVE_PEAK == 0.5
    assert candidate_threshold(replace(cfg, iam_activation="softmax")) is None
    assert candidate_threshold(replace(cfg, instance_head="cross_attention")) is None


def test_true_positives_are_split_by_their_objects_size_on_the_grid():
    from rtinst.diagnostics.iam_localization import by_object_cells

    small, large = _square_mask(lo=4, hi=7), _square_mask(lo=2, hi=12)  # 9 and 100 cells
    assert true_positive_stats((small / small.sum())[:, None], small)["object_cells"].item() == 9
    tp = {"object_cells": torch.tensor([9.0, 9.0, 100.0, 200.0]),
          "mass_in_object": torch.tensor([0.2, 0.4, 0.7, 0.9]),
          "mass_near_object": torch.tensor([0.5, 0.6, 0.8, 1.0])}
    bins = by_object_cells(tp, bins=(0, 16, 144))
    assert [b["cells"] for b in bins] == [[0, 16], [16, 144], [144, None]]
    assert [b["count"] for b in bins] == [2, 1, 1]
    assert bins[0]["mass_in_object"] == pytest.approx(0.2)  # torch's median: the lower middle
    assert bins[1]["mass_near_object"] == pytest.approx(0.8) and bins[2]["mass_in_object"] == pytest.approx(0.9)
    assert by_object_cells({k: v[:1] for k, v in tp.items()}, bins=(0, 16))[1] == {
        "cells": [16, None], "count": 0, "mass_in_object": None, "mass_near_object": None}
