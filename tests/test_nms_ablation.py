"""`rtinst bench nms` and the sweep's evaluation-only rows, on a trained (smoke) YOLACT."""

import json
from pathlib import Path

import pytest
import torch

from rtinst.cli import main as cli_main
from rtinst.config import load_config
from rtinst.diagnostics.nms_ablation import nms_ablation
from rtinst.engine.train import run_training
from rtinst.errors import UserError
from rtinst.records import read_record

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs"


@pytest.fixture(scope="module")
def yolact_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("nms_runs")
    cfg = load_config(CONFIGS / "yolact" / "smoke.yaml",
                      ["model.backbone.pretrained=none", "model.score_threshold=0.01"])
    run_training(cfg, root / "trained", progress=False)
    return root / "trained"


def test_every_variant_evaluated_and_recorded(yolact_run, tmp_path):
    before = json.loads((yolact_run / "record.json").read_text())
    table = nms_ablation(yolact_run, runs_dir=tmp_path / "runs", dump=tmp_path / "inputs.pt",
                         progress=False)
    assert list(table["nms"]) == ["standard", "fast", "cluster", "matrix"]
    rows = table.set_index("nms")
    # the trained run's own NMS (fast) reproduces its record; Cluster NMS == standard NMS
    assert rows.loc["fast", "ap"] == pytest.approx(before["metrics"]["ap"])
    assert rows.loc["cluster", "ap"] == rows.loc["standard", "ap"]
    assert rows.loc["cluster", "num_detections"] == rows.loc["standard", "num_detections"]
    assert (table["nms_ms_per_image"] > 0).all() and (table["nms_timed_images"] == 8).all()
    # evaluation-only records for the other variants; the training record is untouched
    assert json.loads((yolact_run / "record.json").read_text()) == before
    for kind in ("standard", "cluster", "matrix"):
        rec = read_record(rows.loc[kind, "record"])
        assert rec.status == "done" and rec.config["model"]["nms"] == kind
        assert rec.provenance["evaluation_only"] and rec.provenance["trained_in"] == str(yolact_run)
        assert rec.metrics["nms_ms_per_image"] == rows.loc[kind, "nms_ms_per_image"]
        assert Path(rows.loc[kind, "record"]).parent == tmp_path / "runs"
    saved = json.loads((yolact_run / "nms_ablation.json").read_text())
    assert [r["nms"] for r in saved["rows"]] == list(table["nms"])
    # a second pass over an existing evaluation record (e.g. a sweep's, with TIDE) keeps the
    # metrics it does not recompute
    standard = Path(rows.loc["standard", "record"])
    data = json.loads((standard / "record.json").read_text())
    data["metrics"]["tide_cls"] = 12.5
    (standard / "record.json").write_text(json.dumps(data))
    nms_ablation(yolact_run, kinds=("standard",), runs_dir=tmp_path / "runs", progress=False)
    again = read_record(standard).metrics
    assert again["tide_cls"] == 12.5 and again["ap"] == rows.loc["standard", "ap"] and "nms_ms_per_image" in again
    dump = torch.load(tmp_path / "inputs.pt", weights_only=True)
    assert dump["boxes"].shape[:1] == (8,) and dump["boxes"].shape[-1] == 4
    assert dump["scores"].shape[:2] == dump["boxes"].shape[:2] and dump["scores"].shape[-1] == 10


def test_bad_requests_fail_before_any_work(yolact_run, tmp_path, capsys):
    with pytest.raises(UserError, match="unknown NMS kind\\(s\\) \\['soft'\\]"):
        nms_ablation(yolact_run, kinds=("fast", "soft"))
    assert cli_main(["bench", "nms", "--run", str(tmp_path)]) == 2
    assert "run record not found" in capsys.readouterr().err


def test_a_sweep_evaluation_only_row_falls_back_to_the_committed_compact(yolact_run, tmp_path):
    """A resumed sweep on a fresh machine has no checkpoint of the trained run (checkpoints are
    not committed): its evaluation-only rows evaluate the compact model_fp16.pt instead."""
    import shutil

    from rtinst.engine.compact import write_compact
    from rtinst.harness.runner import run_one

    def scores(run):
        return sorted(d["score"] for d in json.loads((run / "coco_segm_results.json").read_text()))

    trained = tmp_path / "trained"
    shutil.copytree(yolact_run, trained)
    before = json.loads((trained / "record.json").read_text())
    cfg, std_nms = str(trained / "config.yaml"), ["model.nms=standard"]
    exact = run_one(cfg, std_nms, tmp_path / "exact", trained_from=str(trained))  # from last.pt
    assert "checkpoint" not in exact.provenance and exact.config["model"]["nms"] == "standard"
    write_compact(trained)
    shutil.rmtree(trained / "checkpoints")
    std = run_one(cfg, std_nms, tmp_path / "std", trained_from=str(trained))
    assert std.status == "done" and std.config["model"]["nms"] == "standard"
    assert std.provenance["checkpoint"].endswith("trained/model_fp16.pt")
    assert std.artifacts["trained_in"].endswith("trained")
    assert not (tmp_path / "std" / "checkpoints").exists()  # nothing was trained
    # float16 weights, the same predictions up to rounding
    assert std.metrics["num_detections"] == pytest.approx(exact.metrics["num_detections"], rel=0.02)
    assert exact.metrics["num_detections"] > 50
    top, top_exact = scores(tmp_path / "std")[-50:], scores(tmp_path / "exact")[-50:]
    assert top == pytest.approx(top_exact, abs=2e-3)
    assert json.loads((trained / "record.json").read_text()) == before
    # neither file: a failed record and an error naming the run and the re-creating command
    (trained / "model_fp16.pt").unlink()
    with pytest.raises(UserError, match=r"trained: the trained run has neither checkpoints/last.pt "
                                        r"nor model_fp16.pt to evaluate; re-create its checkpoint "
                                        r"with `.*rtinst train --config .*trained/config.yaml"):
        run_one(cfg, std_nms, tmp_path / "none", trained_from=str(trained))
    assert read_record(tmp_path / "none").status == "failed"
