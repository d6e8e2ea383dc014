"""`rtinst evaluate --config --checkpoint` and `rtinst predict` end to end on a smoke-sized
SparseInst and generated COCO-format data: the record carries the checkpoint's sha256 and
the same detections as the in-memory model; predict draws every image and writes results."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from rtinst.cli import main
from rtinst.config import load_config
from rtinst.records import config_hash
from rtinst.data.build import build_dataset, collate_fn
from rtinst.engine.checkpoint import save_checkpoint
from rtinst.engine.inference import predict_coco
from rtinst.records import read_record, run_dir_for
from rtinst.models import build_model

SMOKE = str(Path(__file__).resolve().parents[1] / "rtinst" / "configs" / "sparseinst" / "smoke.yaml")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt_eval")
    overrides = [f"data.root={tmp / 'data'}", "device=cpu", f"output_dir={tmp / 'runs'}"]
    cfg = load_config(SMOKE, overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    ckpt = tmp / "weights.pt"
    save_checkpoint(ckpt, model=model.state_dict())
    return tmp, overrides, cfg, model, ckpt


def _o(overrides):
    return [a for o in overrides for a in ("-o", o)]


def test_evaluate_checkpoint_records_metrics_and_sha(setup, capsys):
    tmp, overrides, cfg, model, ckpt = setup
    out = tmp / "eval"
    assert main(["evaluate", "--config", SMOKE, *_o(overrides), "--checkpoint", str(ckpt),
                 "--out", str(out), "--quiet"]) == 0
    assert "FPS" in capsys.readouterr().out
    record = read_record(out)
    assert record.status == "done" and record.config_hash == config_hash(cfg)
    assert record.provenance["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert record.metrics["fps"] > 0 and "ap" in record.metrics and "ap50" in record.metrics
    assert record.provenance["latency"]["kind"] == "CPU latency"
    # the weights evaluated are the checkpoint's: same detections as the model it was saved from
    val = build_dataset(cfg.data, "val", progress=False)
    expected = predict_coco(model, val, collate_fn(cfg.data), val.contiguous_to_cat_id,
                            max_images=cfg.eval.max_images, progress=False)
    got = json.loads((out / "coco_segm_results.json").read_text())
    assert len(got) == len(expected) > 0
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected])
    assert [r["segmentation"]["counts"] for r in got] == [r["segmentation"]["counts"] for r in expected]


def test_evaluate_as_run_fills_the_configs_run_folder(setup, tmp_path, capsys):
    tmp, overrides, cfg, model, ckpt = setup

    def args(weights):
        return ["evaluate", "--config", SMOKE, *_o(overrides), "--checkpoint", str(weights),
                "--as-run", "--no-latency", "--quiet"]

    assert main(args(ckpt)) == 0
    run_dir = run_dir_for(cfg, cfg.output_dir)
    assert read_record(run_dir).provenance["checkpoint"] == str(ckpt)
    assert main(args(ckpt)) == 0  # the same weights again: allowed
    other = tmp_path / "other.pt"
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint(other, model=state)
    capsys.readouterr()
    assert main(args(other)) == 2
    assert "already holds a run of this config not made from" in capsys.readouterr().err


def test_evaluate_argument_errors(setup, tmp_path, capsys):
    tmp, overrides, cfg, model, ckpt = setup
    assert main(["evaluate", "--config", SMOKE]) == 2
    assert "--config and --checkpoint go together" in capsys.readouterr().err
    assert main(["evaluate", "--config", SMOKE, "--checkpoint", str(tmp_path / "no.pt")]) == 2
    assert "no.pt: file not found" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "give --gt and --results" in capsys.readouterr().err
    # a checkpoint for another config: one line naming the key
    other = SMOKE.replace("sparseinst", "yolact")
    assert main(["evaluate", "--config", other, *_o(overrides), "--checkpoint", str(ckpt),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not in this config's yolact model" in err


def test_predict_draws_masks_and_writes_results(setup, tmp_path):
    tmp, overrides, cfg, model, ckpt = setup
    images = tmp / "data" / cfg.data.val_images
    out = tmp_path / "pred"
    assert main(["predict", "--config", SMOKE, *_o(overrides), "--checkpoint", str(ckpt),
                 "--images", str(images), "--out", str(out), "--min-score", "0", "--quiet"]) == 0
    files = sorted(p.stem for p in images.iterdir())
    assert sorted(p.stem for p in out.glob("*.png")) == files
    info = json.loads((out / "images.json").read_text())["images"]
    assert [i["id"] for i in info] == list(range(1, len(files) + 1))
    results = json.loads((out / "coco_segm_results.json").read_text())
    sizes = {i["id"]: [i["height"], i["width"]] for i in info}
    assert results and all(r["segmentation"]["size"] == sizes[r["image_id"]] for r in results)
    assert {r["category_id"] for r in results} <= set(range(1, cfg.model.num_classes + 1))
    # --categories maps contiguous labels onto a COCO file's own ids
    gt = tmp / "data" / cfg.data.val_ann
    out2 = tmp_path / "pred2"
    assert main(["predict", "--config", SMOKE, *_o(overrides), "--checkpoint", str(ckpt),
                 "--images", str(images), "--out", str(out2), "--categories", str(gt), "--quiet"]) == 0
    cat_ids = {c["id"] for c in json.loads(gt.read_text())["categories"]}
    assert {r["category_id"] for r in json.loads((out2 / "coco_segm_results.json").read_text())} <= cat_ids


def test_predict_refuses_a_folder_without_images(setup, tmp_path, capsys):
    tmp, overrides, cfg, model, ckpt = setup
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--config", SMOKE, *_o(overrides), "--checkpoint", str(ckpt),
                 "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err


def test_as_run_folder_is_the_one_the_sweep_looks_up():
    """experiments/README.md: `evaluate --as-run` with the row's overrides and the sweep's
    --data-root lands where `rtinst sweep fastinst/table6a --preset coco` looks for D=3."""
    from rtinst.harness.specs import load_spec
    from rtinst.harness.plan import plan_sweep

    root = Path(__file__).resolve().parents[1]
    spec = load_spec(root / "experiments" / "fastinst" / "table6a_decoder_layers.yaml")
    plan = plan_sweep([spec], preset="coco", seeds=[0], data_root="/data/coco", cost_preset=None)
    cfg = load_config(root / "rtinst" / "configs" / "fastinst" / "coco.yaml",
                      ["data.root=/data/coco", "model.decoder_layers=3"])
    d3 = [j for j in plan.runs.values() if "model.decoder_layers=3" in j.overrides]
    assert [Path(j.run_dir) for j in d3] == [run_dir_for(cfg, root / "results" / "runs")]
