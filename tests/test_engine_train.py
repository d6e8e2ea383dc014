"""End to end: `run_training` on generated synthetic data with a toy detector.

The toy detector (tests/_sweep_toy.py) follows the model contract (losses in training, per-image predictions in
eval), so this exercises data building, the loop, inference at original size, COCO
evaluation, TIDE and the run record without depending on a real model.
"""

import json

import pytest
import torch

from rtinst.config import load_config
from rtinst.engine import train as train_mod
from rtinst.engine.inference import postprocess_masks
from rtinst.errors import UserError
from rtinst.records import read_record

from _sweep_toy import BlobDetector  # a toy detector following the model contract


@pytest.fixture()
def smoke_cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "build_model", BlobDetector)
    return load_config(overrides=[
        f"data.root={tmp_path / 'data'}", "data.synthetic_train=6", "data.synthetic_val=3",
        "data.synthetic_size=96", "data.train_short_edge=[64, 96]", "data.train_max_size=96",
        "data.test_short_edge=72", "data.test_max_size=96", "data.num_workers=0",
        "model.num_classes=10", "train.max_iters=6", "train.batch_size=2", "train.lr=0.01",
        "train.warmup_iters=0", "train.checkpoint_period=3", "train.log_period=1",
        "preset=smoke", "device=cpu"])


def test_run_training_end_to_end(smoke_cfg, tmp_path):
    run_dir = tmp_path / "run"
    record = train_mod.run_training(smoke_cfg, run_dir, progress=False)
    assert record.status == "done"
    for key in ("ap", "ap50", "ar100", "ap_s", "tide_cls", "tide_miss", "train_iterations",
                "step_time_s"):
        assert key in record.metrics
    assert record.metrics["train_iterations"] == 6
    assert record.provenance["backbone_init"] == "scratch"
    on_disk = read_record(run_dir)
    assert on_disk.status == "done" and on_disk.config_hash == record.config_hash
    results = json.loads((run_dir / "coco_segm_results.json").read_text())
    gt = json.loads((tmp_path / "data/annotations/instances_val.json").read_text())
    sizes = {im["id"]: [im["height"], im["width"]] for im in gt["images"]}
    assert results and all(r["segmentation"]["size"] == sizes[r["image_id"]] for r in results)
    assert {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
    log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(6))
    # Running again on the finished folder resumes at the end: no extra training step.
    again = train_mod.run_training(smoke_cfg, run_dir, progress=False)
    assert again.metrics["train_iterations"] == 6
    assert again.metrics["ap"] == pytest.approx(record.metrics["ap"])


def test_class_count_mismatch_fails_before_training(smoke_cfg, tmp_path):
    cfg = smoke_cfg
    cfg.model.num_classes = 80
    with pytest.raises(UserError, match="model.num_classes=80 but .* has 10 categories"):
        train_mod.run_training(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_nan_run_is_recorded_as_failed(smoke_cfg, tmp_path, monkeypatch):
    class Exploding(BlobDetector):
        def forward(self, images, targets=None):
            out = super().forward(images, targets)
            if self.training:
                out["loss_sem"] = out["loss_sem"] * float("inf")
            return out

    monkeypatch.setattr(train_mod, "build_model", Exploding)
    with pytest.raises(train_mod.TrainingDiverged):
        train_mod.run_training(smoke_cfg, tmp_path / "run", progress=False)
    rec = read_record(tmp_path / "run")
    assert rec.status == "failed" and "step 0: loss term 'loss_sem'" in rec.error


def test_postprocess_masks_crops_padding_and_resizes():
    # A probability map that is 1 on the left half of the *valid* region only.
    probs = torch.zeros(1, 8, 12)  # stride 4 over a 32x48 padded input
    probs[0, :6, :4] = 1.0  # valid image is 24x32 -> 6x8 cells; left half = 4 cells
    m = postprocess_masks(probs, (32, 48), (24, 32), (48, 64))
    assert m.shape == (1, 48, 64)
    assert m[0, :, :30].float().mean() > 0.95 and m[0, :, 34:].sum() == 0


def test_synthetic_data_made_with_other_settings_is_refused(smoke_cfg, tmp_path):
    from rtinst.data.build import build_dataset

    build_dataset(smoke_cfg.data, "val", progress=False)
    smoke_cfg.data.synthetic_size = 128
    with pytest.raises(UserError, match=r"generated with size 96 \(config: 128\)"):
        build_dataset(smoke_cfg.data, "val", progress=False)


def test_snapshots_give_an_ap_vs_minutes_curve(smoke_cfg, tmp_path):
    smoke_cfg.train.snapshot_minutes = [0.0, 1000.0]  # right after step 1; never
    run_dir = tmp_path / "run"
    record = train_mod.run_training(smoke_cfg, run_dir, progress=False)
    curve = json.loads((run_dir / "curve.json").read_text())
    assert record.artifacts["curve"] == "curve.json"
    assert [p["iteration"] for p in curve["points"]] == [1, 6]
    assert curve["points"][-1]["ap"] == record.metrics["ap"]
    assert curve["points"][0]["minutes"] <= curve["points"][-1]["minutes"]
    snap = torch.load(run_dir / "checkpoints" / "snapshot_0min.pt", weights_only=True)
    assert snap["iteration"] == 1 and "optimizer" not in snap
    assert not (run_dir / "snapshot_results.json").exists()


def test_iteration_snapshots_join_the_curve_in_training_order(smoke_cfg, tmp_path):
    smoke_cfg.train.snapshot_minutes = [1000.0]  # never reached
    smoke_cfg.train.snapshot_iters = [4, 2, 6, 50]  # 6 = the last step (the final point); 50: never
    run_dir = tmp_path / "run"
    record = train_mod.run_training(smoke_cfg, run_dir, progress=False)
    curve = json.loads((run_dir / "curve.json").read_text())
    assert [p["iteration"] for p in curve["points"]] == [2, 4, 6]
    assert curve["points"][-1]["ap"] == record.metrics["ap"]
    snap = torch.load(run_dir / "checkpoints" / "snapshot_2it.pt", weights_only=True)
    assert snap["iteration"] == 2
    # the final model's results are the ones left in the run folder
    results = json.loads((run_dir / "coco_segm_results.json").read_text())
    assert len(results) == record.metrics["num_detections"]
