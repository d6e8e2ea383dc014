"""Oracle instance maps (`rtinst bench oracle-iam`): GT masks really become the IAMs, map k is
matched to object k, the model is restored afterwards, and bad configs fail up front."""

import json

import pytest
import torch
import torch.nn.functional as F

from rtinst.cli import main
from rtinst.diagnostics.oracle_iam import OracleIAM
from rtinst.errors import UserError
from rtinst.models.matcher import sparseinst_match
from test_sparseinst import H, W, images, small_model, targets


def _expected_maps(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]


@pytest.mark.parametrize("groups", [1, 4])
def test_the_first_k_maps_of_each_image_are_its_gt_masks_in_every_group(groups):
    model = small_model(iam_groups=groups).eval()
    model.post.score_threshold = -1.0  # keep every instance, in index order
    OracleIAM(model)
    t = targets(2, empty_last=True)
    with torch.no_grad():
        out = model(images(2), t, extras=True)
    iam = out[0]["iam"].view(model.cfg.num_masks, groups, H // 8, W // 8)
    expected = _expected_maps(t[0]["masks"], (H // 8, W // 8))
    for k in range(3):
        for g in range(groups):
            assert torch.allclose(iam[k, g], expected[k], atol=1e-5)
    assert iam[3:].std() < 0.01  # the learned maps: still near their uniform start
    assert out[1]["iam"].view(-1, groups, H // 8, W // 8).std() < 0.01  # no objects: all learned


def test_each_instance_sees_only_its_own_object(tmp_path):
    model = small_model(iam_groups=4)
    OracleIAM(model)
    captured = {}
    model.decoder.inst_branch.heads.register_forward_hook(
        lambda m, i, o: captured.__setitem__("logits", o["logits"].detach().clone()))
    x, t = images(1), targets(1)
    model.eval()
    with torch.no_grad():
        model(x, t)
        before = captured["logits"][0]
        t[0]["masks"][0] = False
        t[0]["masks"][0, 40:60, 10:30] = True  # object 0 moves; objects 1 and 2 stay
        model(x, t)
        after = captured["logits"][0]
    assert not torch.allclose(before[0], after[0])
    assert torch.equal(before[1:3], after[1:3])
    assert torch.equal(before[3:], after[3:])  # the learned (negative) maps do not see GT


def test_map_k_is_matched_to_object_k_and_remove_restores_the_hungarian_matching():
    model = small_model()
    oracle = OracleIAM(model)
    losses = model.train()(images(2), targets(2, empty_last=True))
    assert all(torch.isfinite(v) for v in losses.values())
    rows, cols = model.criterion.match(torch.rand(12, 5), torch.rand(12, 8, 8),
                                       torch.tensor([4, 0, 2]), torch.rand(3, 8, 8))
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 2]
    oracle.remove()
    assert model.criterion.match is sparseinst_match
    model.eval()
    with torch.no_grad():
        model(images(1), None)  # no targets needed once removed


def test_bad_configs_and_missing_targets_fail_with_one_clear_error():
    with pytest.raises(UserError, match="only sigmoid maps"):
        OracleIAM(small_model(iam_activation="softmax"))
    with pytest.raises(UserError, match="instance_head=iam"):
        OracleIAM(small_model(instance_head="cross_attention"))
    model = small_model().eval()
    OracleIAM(model)
    with pytest.raises(UserError, match="called without targets"):
        model(images(1), None)
    too_many = targets(1)
    too_many[0]["masks"] = torch.ones(13, H, W, dtype=torch.bool)
    too_many[0]["labels"] = torch.zeros(13, dtype=torch.long)
    with pytest.raises(UserError, match="13 objects, more than model.num_masks=12"):
        model(images(1), too_many)


def test_cli_trains_and_evaluates_with_oracle_maps(tmp_path, capsys):
    out = tmp_path / "oracle.json"
    assert main(["bench", "oracle-iam", "--config", "rtinst/configs/sparseinst/smoke.yaml",
                 "-o", f"data.root={tmp_path / 'data'}", "-o", "model.backbone.pretrained=none",
                 "-o", "eval.tide=false", "--steps", "2", "--quiet", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["train_iterations"] == 2
    assert 0.0 <= record["metrics"]["ap"] <= 100.0
    assert {"loss_cls", "loss_dice"} <= set(record["final_losses"])
    assert "ground-truth instance maps" in capsys.readouterr().out
    assert main(["bench", "oracle-iam", "--config", "rtinst/configs/yolact/smoke.yaml",
                 "-o", f"data.root={tmp_path / 'data'}", "--steps", "1"]) == 2
    assert "needs a SparseInst" in capsys.readouterr().err
