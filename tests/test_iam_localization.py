"""IAM localization (`rtinst bench iam`): the measures on hand-made maps, and the CLI on a run."""

import json

import pytest
import torch

from rtinst.cli import main
from rtinst.diagnostics.iam_localization import iam_weights, localization_stats


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
    assert "linear probe of the pooled features" in capsys.readouterr().out

    assert main(["bench", "iam", "--run", str(tmp_path / "run"), "--checkpoint", "nope.pt"]) == 2
    assert "nope.pt: neither a file nor in" in capsys.readouterr().err

    yolact = load_config("rtinst/configs/yolact/smoke.yaml",
                         [data, "model.backbone.pretrained=none", "eval.tide=false"])
    run_training(yolact, tmp_path / "yolact", progress=False)
    assert main(["bench", "iam", "--run", str(tmp_path / "yolact")]) == 2
    assert "needs a SparseInst run" in capsys.readouterr().err
