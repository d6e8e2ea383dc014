"""A sweep's progress (bar with its own ETA, the running job's step line) and what own sweeps
may write: committed cost files are kept, other seed sets get their own table files."""

import json
from pathlib import Path

import pytest

import _sweep_toy as toy
from rtinst import paths
from rtinst.harness.plan import CostJob, is_committed_cost
from rtinst.harness.progress import SweepProgress, job_status_line
from rtinst.harness.tables import output_paths_by_name, reproduce_table, seeds_suffix


def _log(run_dir: Path, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_job_status_line_from_the_last_two_log_rows(tmp_path):
    assert job_status_line(tmp_path / "none", 10) is None
    _log(tmp_path / "r", [{"iter": 9, "seconds": 5.0, "loss": 3.0},
                          {"iter": 19, "seconds": 9.0, "loss": 2.5}])
    # (9 - 5) s over 10 steps; 80 steps left at 0.4 s
    assert job_status_line(tmp_path / "r", 100) == "step 20/100  loss 2.500  0.40 s/step  eta 32s"


def test_the_bar_counts_runs_and_its_eta_is_the_estimate_left(tmp_path):
    lines = []
    bar = SweepProgress({"a": 120.0, "b": 60.0}, parallel=1, enabled=True, log=lines.append)
    assert "eta ~3 min (estimate)" in bar.bar.postfix
    _log(tmp_path / "run-a", [{"iter": 0, "seconds": 1.0, "loss": 4.0},
                              {"iter": 1, "seconds": 2.0, "loss": 3.0}])
    bar.watch({"a": (str(tmp_path / "run-a"), 4)})
    assert lines == ["  run-a: step 2/4  loss 3.000  1.00 s/step  eta 2s"]
    assert "run-a: step 2/4" in bar.bar.postfix
    bar.watch({"a": (str(tmp_path / "run-a"), 4)})  # no new step logged: no new line
    assert len(lines) == 1
    bar.finished("a")
    assert bar.bar.n == 1 and "eta ~60 s (estimate)" in bar.bar.postfix
    bar.close()


def test_a_committed_cost_file_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    committed = tmp_path / "results" / "costs" / "m.json"
    committed.parent.mkdir(parents=True)
    committed.write_text(json.dumps({"gflops": 1.0, "params_m": 2.0}))  # no latency in it
    job = CostJob("m", str(committed), "cfg.yaml", [], (32, 32), latency=True)
    assert is_committed_cost(committed) and not job.missing("cpu")
    own = CostJob("m", str(tmp_path / "results-own" / "costs" / "m.json"), "cfg.yaml", [],
                  (32, 32), latency=True, shared=str(committed))
    assert own.data() == {"gflops": 1.0, "params_m": 2.0}  # read from the committed cache
    assert own.missing("cpu")  # its latency is measured into the own file


def test_seed_sets_name_their_table_files():
    assert seeds_suffix([0]) == "" and seeds_suffix(None) == ""
    assert seeds_suffix([2, 0, 1]) == "_seeds0-1-2"
    a = output_paths_by_name("/r", "tiny", "yolact/table2a")
    b = output_paths_by_name("/r", "tiny", "yolact/table2a", seeds=[5])
    assert a["csv"].name == "yolact_table2a.csv" and b["csv"].name == "yolact_table2a_seeds5.csv"
    assert b["figure"].name == "yolact_table2a_seeds5.png"


@pytest.fixture
def toy_detector(monkeypatch):
    monkeypatch.setenv("RTINST_BUILD_MODEL", toy.HOOK)


def test_two_seed_sets_into_one_results_folder_keep_both_tables(tmp_path, toy_detector):
    spec = toy.write_fixture(tmp_path / "fx", data_root=tmp_path / "data")
    common = dict(preset="smoke", executor="inline", via_notebook=False, cost_preset=None,
                  runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", log=None)
    first = reproduce_table(spec, seeds="0", **common)
    before = first.paths["csv"].read_bytes()
    second = reproduce_table(spec, seeds="5", **common)
    assert first.paths["csv"] != second.paths["csv"] and second.paths["csv"].name.endswith("_seeds5.csv")
    assert first.paths["csv"].read_bytes() == before  # the seed-0 table is untouched
    import pandas as pd

    runs_first = set(pd.read_csv(first.paths["csv"])["runs"].dropna())
    runs_second = set(pd.read_csv(second.paths["csv"])["runs"].dropna())
    assert runs_first and runs_second and not runs_first & runs_second


def test_kept_committed_costs_are_reported(tmp_path, monkeypatch):
    from rtinst.harness.plan import Plan, kept_costs

    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    committed = tmp_path / "results" / "costs" / "m.json"
    committed.parent.mkdir(parents=True)
    committed.write_text(json.dumps({"gflops": 1.0}))
    plan = Plan("tiny", [0], str(tmp_path / "runs"), str(committed.parent), "coco")
    plan.costs["m"] = CostJob("m", str(committed), "cfg.yaml", [], (32, 32), latency=True)
    plan.costs["n"] = CostJob("n", str(committed.with_name("n.json")), "cfg.yaml", [], (32, 32),
                              latency=True)  # not measured yet: nothing kept, it is measured
    assert [c.key for c in kept_costs(plan)] == ["m"]
    plan.costs["m"].latency = False
    assert kept_costs(plan) == []
