"""The detection-scale linear probe (`rtinst bench probe`): pooling, fitting, CLI record."""

import json

import pytest
import torch

from rtinst.cli import main
from rtinst.data.transforms import collate
from rtinst.diagnostics.probe import LEVELS, fit_linear, pooled_object_features
from rtinst.errors import UserError


class _Identity(torch.nn.Module):
    """Every level is the image itself (stride 1), so pooled features are mean colours."""

    def forward(self, x):
        return {name: x for name in LEVELS}


class _OneImage:
    ann_file = "fake.json"

    def __init__(self):
        image = torch.zeros(3, 8, 8)
        image[0, :4, :4] = 2.0  # object 0: red 2 on its 16 pixels
        image[1, 4:, :] = torch.arange(8.0)  # object 1: green ramp 0..7 over the bottom half
        masks = torch.zeros(2, 8, 8, dtype=torch.bool)
        masks[0, :4, :4] = True
        masks[1, 4:, :] = True
        self.item = (image, {"masks": masks, "labels": torch.tensor([3, 5]),
                             "boxes": torch.zeros(2, 4), "image_id": 1, "orig_size": (8, 8)})

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.item


def test_pooling_averages_each_level_over_each_mask():
    feats, labels, areas = pooled_object_features(_Identity(), _OneImage(), collate, num_images=5)
    assert labels.tolist() == [3, 5] and areas.tolist() == [16.0, 32.0]
    for name in LEVELS:
        torch.testing.assert_close(feats[name], torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.5, 0.0]]))


def test_linear_fit_separates_separable_classes_and_not_shuffled_ones():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(40)
    x = torch.randn(120, 5, generator=g) * 0.3 + torch.eye(3, 5)[y] * 4
    predict = fit_linear(x, y)
    assert (predict(x) == y).all()
    # held-out points of random labels are not predicted above chance by much
    noise = torch.randn(600, 5, generator=g)
    rand_y = torch.randint(3, (600,), generator=g)
    predict = fit_linear(noise[:300], rand_y[:300])
    assert (predict(noise[300:]) == rand_y[300:]).float().mean() < 0.5


def test_probe_cli_writes_a_record(tmp_path, capsys):
    out = tmp_path / "probe.json"
    rc = main(["bench", "probe", "--config", "rtinst/configs/yolact/smoke.yaml",
               "-o", f"data.root={tmp_path / 'data'}", "-o", "data.synthetic_train=6",
               "-o", "data.synthetic_val=4", "--train-images", "6", "--val-images", "4",
               "--out", str(out)])
    assert rc == 0
    record = json.loads(out.read_text())
    assert record["init"] == "scratch" and record["chance"] == pytest.approx(0.1)
    assert record["train_objects"] > 0 and record["val_objects"] > 0
    assert set(record["accuracy"]) == {"res3", "res4", "res5", "all_levels"}
    assert 0.0 <= record["accuracy"]["all_levels"]["all"] <= 1.0
    assert "all_levels" in capsys.readouterr().out


def test_probe_of_missing_weights_fails_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert main(["bench", "probe", "--config", "rtinst/configs/yolact/smoke.yaml",
                 "--weights", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing}: backbone weights file not found"


class _TwoStage(torch.nn.Module):
    """stem -> (list of two maps) -> head; the head's output is not a map."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 1)
        self.pyramid = _Pyramid()

    def forward(self, x):
        return self.pyramid(self.stem(x))[0].mean()


class _Pyramid(torch.nn.Module):
    def forward(self, x):
        return [x, None, {"coarse": x[..., ::2, ::2], "vector": x.flatten(1)}]


def test_stage_features_name_every_map_a_stage_produces():
    from rtinst.diagnostics.probe import StageFeatures
    model = _TwoStage()
    extract = StageFeatures(model, ("stem", "pyramid"))
    maps = extract(torch.zeros(2, 3, 8, 8))
    assert sorted(maps) == ["pyramid[0]", "pyramid[2].coarse", "stem"]
    assert maps["pyramid[2].coarse"].shape == (2, 4, 4, 4)
    extract.close()
    assert extract(torch.zeros(1, 3, 8, 8)) == {}  # hooks removed


def test_stage_features_unknown_stage_names_the_closest_module():
    from rtinst.diagnostics.probe import StageFeatures
    with pytest.raises(UserError, match=r"probe stage 'pyramd': _TwoStage has no such submodule; "
                                        r"did you mean 'pyramid'\?"):
        StageFeatures(_TwoStage(), ("pyramd",))


def test_run_probe_cli_probes_each_stage_of_a_trained_run(tmp_path, capsys):
    from rtinst.config import load_config
    from rtinst.engine.train import run_training
    cfg = load_config("rtinst/configs/sparseinst/smoke.yaml", [
        f"data.root={tmp_path / 'data'}", "model.backbone.pretrained=none", "eval.tide=false"])
    run_training(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "probe.json"
    assert main(["bench", "probe", "--run", str(tmp_path / "run"), "--train-images", "8",
                 "--val-images", "6", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["model"] == "sparseinst" and record["val_objects"] > 0
    assert set(record["accuracy"]) == {"backbone.res3", "backbone.res4", "backbone.res5", "encoder",
                                       "decoder.inst_branch.convs", "decoder.mask_branch.convs"}
    assert all(0.0 <= a["all"] <= 1.0 for a in record["accuracy"].values())
    assert "decoder.inst_branch.convs" in capsys.readouterr().out
    assert main(["bench", "probe", "--run", str(tmp_path / "run"), "--weights", "x.pt"]) == 2
    assert "drop --weights" in capsys.readouterr().err
