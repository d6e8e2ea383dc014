"""Folding a GPU lease's files back: GPU-timed cost files replace the CPU ones (same model
only), GPU tiny runs stay out of results/runs, and the sweep projection's arithmetic."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

from rtinst.errors import UserError
from rtinst.records import RunRecord, write_record

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_fold_back", REPO / "tests/benchmarks/gpu_fold_back.py")
fold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fold)


def _tgz(path: Path, files: dict[str, str]) -> Path:
    src = path.parent / (path.stem + "_src")
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    with tarfile.open(path, "w:gz") as tar:
        for name in files:
            tar.add(src / name, arcname=name)
    return path


def test_gpu_timed_cost_files_replace_the_cpu_ones_and_others_are_left(tmp_path):
    costs = tmp_path / "costs"
    costs.mkdir()
    cpu = {"gflops": 75.0, "params_m": 34.0, "latency_ms": 900.0, "latency_kind": "CPU latency"}
    for key in ("a", "b"):
        (costs / f"{key}.json").write_text(json.dumps(cpu))
    gpu = {**cpu, "latency_ms": 20.0, "latency_kind": "GPU latency", "latency_fp16_error": "RuntimeError: x"}
    tgz = _tgz(tmp_path / "costs.tgz", {"results/costs/a.json": json.dumps(gpu),
                                        "results/costs/b.json": json.dumps(cpu)})
    out = fold.fold_costs(tgz, costs)
    assert out == {"replaced": ["a"], "fp16_failed": {"a": "RuntimeError: x"}, "not_timed_on_gpu": 1}
    assert json.loads((costs / "a.json").read_text()) == gpu
    assert json.loads((costs / "b.json").read_text()) == cpu

    other = {**gpu, "gflops": 80.0}  # another model under the same name: refuse, change nothing
    tgz = _tgz(tmp_path / "other.tgz", {"results/costs/b.json": json.dumps(other)})
    with pytest.raises(UserError, match=r"b.json: gflops differs"):
        fold.fold_costs(tgz, costs)
    assert json.loads((costs / "b.json").read_text()) == cpu


def test_gpu_runs_are_kept_apart_and_the_projection_is_throughput(tmp_path):
    runs_src = tmp_path / "src" / "rtinst_gpu_runs"
    cpu_runs = tmp_path / "runs"
    for i, (name, gpu_wall) in enumerate([("yolact-tiny-aaa", 60.0), ("yolact-tiny-bbb", 90.0)]):
        prov = {"hardware": "GPU: NVIDIA H200", "device": "cuda"}
        write_record(RunRecord(
            config={}, config_hash=name[-3:], status="done", metrics={"ap": 13.0 + i},
            started_at=1000.0 + 30 * i, wall_time_s=gpu_wall, provenance=prov), runs_src / name)
        (runs_src / name / "checkpoints").mkdir()
        (runs_src / name / "checkpoints" / "last.pt").write_text("x")
        write_record(RunRecord(
            config={}, config_hash=name[-3:], status="done", metrics={"ap": 13.4},
            started_at=0.0, wall_time_s=1800.0, provenance={"torch_threads": 1, "cpu_count": 2}),
            cpu_runs / name)
    tgz = tmp_path / "gpu_runs.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(runs_src, arcname="rtinst_gpu_runs")
    dest = tmp_path / "bench" / "gpu_tiny_runs"
    folded = fold.fold_runs(tgz, dest, cpu_runs)
    assert [r["run"] for r in folded["runs"]] == ["yolact-tiny-aaa", "yolact-tiny-bbb"]
    assert not list(dest.rglob("*.pt")) and (dest / "yolact-tiny-aaa" / "record.json").is_file()
    assert folded["runs"][1]["gpu_ap"] == 14.0 and folded["runs"][1]["cpu_ap"] == 13.4
    # CPU machine time: 1800 s wall on 1 of 2 cores = 900 s each; GPU span 1000..1120 s
    p = fold.project(folded["runs"], cpu_total_hours=1.0)
    assert p["gpu_wall_span_s"] == 120.0 and p["cpu_seconds_per_gpu_second"] == 15.0
    assert p["projected_full_tiny_sweep_minutes"] == 4.0  # 3600 s / 15 per s = 240 s
