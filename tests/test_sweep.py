"""Sweeps with a toy detector: cache reuse, --force, failures, kill -9 resume, executors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import _sweep_toy as toy
from rtinst.harness.estimates import estimate
from rtinst.harness.executors import Executor
from rtinst.harness.plan import pending_costs, pending_runs, plan_sweep
from rtinst.harness.runner import execute_run, run_locked
from rtinst.harness.specs import load_spec
from rtinst.harness.sweep import run_sweep
from rtinst.records import RunRecord, read_record, write_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def toy_detector(monkeypatch):
    monkeypatch.setenv("RTINST_BUILD_MODEL", toy.HOOK)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("toydata")  # generated once, shared by every test here


def make_plan(tmp_path, data_root, seeds=(0,), cost_preset=None, latency=False, **fixture):
    spec = load_spec(toy.write_fixture(tmp_path / "fx", data_root=data_root, **fixture), ("smoke", "coco"))
    return spec, plan_sweep([spec], "smoke", seeds, tmp_path / "runs", tmp_path / "costs",
                            cost_preset=cost_preset, latency=latency)


def snapshot(plan):
    return {h: (Path(j.run_dir) / "record.json").read_text() for h, j in plan.runs.items()}


def no_tmp_files(root):
    return [p for p in Path(root).rglob("*.tmp")]


def test_cache_reuse_and_force_through_notebooks(tmp_path, data_root):
    spec, plan = make_plan(tmp_path, data_root)
    assert len(plan.runs) == 3  # 4 rows, one not implemented
    first = run_sweep(plan, executor="inline", via_notebook=True, log=None)
    assert len(first.ran) == 3 and not first.failed
    for job in plan.runs.values():
        nb = json.loads((Path(job.run_dir) / "run.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert any("image/png" in o.get("data", {}) for o in outputs)  # loss curve / predictions
        assert read_record(job.run_dir).status == "done"
    before = snapshot(plan)
    again = run_sweep(plan, executor="inline", via_notebook=True, log=None)
    assert again.ran == [] and again.cached == 3 and snapshot(plan) == before
    forced = run_sweep(plan, executor="inline", via_notebook=False, force=True, log=None)
    assert len(forced.ran) == 3
    assert all(json.loads(snapshot(plan)[h])["started_at"] > json.loads(before[h])["started_at"]
               for h in plan.runs)
    assert not no_tmp_files(tmp_path)


def test_failed_run_is_recorded_and_the_sweep_continues(tmp_path, data_root):
    spec, plan = make_plan(tmp_path, data_root, nan_row=True)
    result = run_sweep(plan, executor="inline", via_notebook=False, log=None)
    assert len(result.ran) == 2 and len(result.failed) == 1
    (bad,) = result.failed
    rec = read_record(plan.runs[bad].run_dir)
    assert rec.status == "failed" and "loss_sem" in rec.error and "step 0" in rec.error
    again = run_sweep(plan, executor="inline", via_notebook=False, log=None)
    assert again.ran == [] and not again.failed and list(again.failed_before) == [bad]
    assert "failed before" in again.summary()
    retried = run_sweep(plan, executor="inline", via_notebook=False, retry_failed=True, log=None)
    assert list(retried.failed) == [bad] and retried.cached == 2


KILL_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from rtinst.harness.plan import plan_sweep
from rtinst.harness.specs import load_spec
from rtinst.harness.sweep import run_sweep
if __name__ == "__main__":  # the local pool spawns workers that import this file
    spec = load_spec({spec!r}, ("smoke",))
    plan = plan_sweep([spec], "smoke", [0, 1], {runs!r}, {costs!r}, cost_preset=None)
    run_sweep(plan, executor="local", workers=1, via_notebook=False, log=None)
"""


def test_kill9_mid_sweep_resumes_without_loss(tmp_path, data_root):
    spec_path = toy.write_fixture(tmp_path / "fx", iters=6, data_root=data_root)
    spec = load_spec(spec_path, ("smoke",))
    plan = plan_sweep([spec], "smoke", [0, 1], tmp_path / "runs", tmp_path / "costs", cost_preset=None)
    script = tmp_path / "sweep.py"
    script.write_text(KILL_SCRIPT.format(tests=str(REPO / "tests"), spec=str(spec_path),
                                         runs=str(tmp_path / "runs"), costs=str(tmp_path / "costs")))
    env = {**os.environ, "RTINST_TOY_SLEEP": "0.25"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=REPO)
    jobs = list(plan.runs.values())
    deadline = time.time() + 90
    try:  # kill once one run is done and another has a checkpoint mid-training
        while time.time() < deadline:
            status = [j.status() for j in jobs]
            midway = [j for j in jobs if j.status() == "running"
                      and (Path(j.run_dir) / "checkpoints" / "last.pt").exists()]
            if "done" in status and midway:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no run reached the kill point")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {j.config_hash: (Path(j.run_dir) / "record.json").read_text()
                   for j in jobs if j.status() == "done"}
    killed = midway[0]
    ckpt_iters = len((Path(killed.run_dir) / "train_log.jsonl").read_text().splitlines())
    assert 1 <= ckpt_iters < 6
    for _ in range(100):  # the orphaned pool worker notices its parent died and exits
        if not any(run_locked(j.run_dir) for j in jobs):
            break
        time.sleep(0.1)
    result = run_sweep(plan, executor="inline", via_notebook=False, log=None)
    assert not result.failed and set(result.ran).isdisjoint(done_before)
    assert len(result.ran) == len(jobs) - len(done_before)
    for h, text in done_before.items():  # finished runs were not recomputed
        assert (Path(plan.runs[h].run_dir) / "record.json").read_text() == text
    assert all(j.status() == "done" for j in jobs)
    log = [json.loads(x)["iter"] for x in (Path(killed.run_dir) / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(6))  # resumed from the checkpoint: no step lost or repeated
    assert not no_tmp_files(tmp_path)


def test_submitit_local_executor_runs_one_run(tmp_path, data_root):
    spec, plan = make_plan(tmp_path, data_root)
    only = next(iter(plan.runs))
    plan.runs = {only: plan.runs[only]}
    result = run_sweep(plan, executor="submitit", via_notebook=False, log=None,
                       submitit_folder=tmp_path / "submitit",
                       submitit_params={"cluster": "local", "timeout_min": 5})
    assert result.ran == [only], result.summary()
    assert read_record(plan.runs[only].run_dir).status == "done"
    assert any((tmp_path / "submitit").iterdir())  # submitit's own logs


def test_costs_are_measured_once_and_cached(tmp_path, data_root):
    spec, plan = make_plan(tmp_path, data_root, cost_preset="coco", latency=True)
    assert len(plan.costs) == 3 and all(c.input_size == (64, 64) for c in plan.costs.values())
    plan.runs = {}
    result = run_sweep(plan, executor="inline", log=None)
    assert result.costs_measured == 3 and not result.costs_failed
    data = json.loads(Path(next(iter(plan.costs.values())).path).read_text())
    assert {"gflops", "params_m", "input_size", "provenance", "latency_ms"} <= set(data)
    assert data["latency_kind"] in ("CPU latency", "GPU latency")
    assert pending_costs(plan) == [] and run_sweep(plan, executor="inline", log=None).costs_measured == 0


def test_a_cpu_latency_is_stale_on_a_gpu_machine_and_fp16_is_tried_once():
    from rtinst.harness.costs import breakdown_missing, latency_missing

    cpu = {"latency_ms": 900.0, "latency_kind": "CPU latency"}
    gpu = {"latency_ms": 20.0, "latency_kind": "GPU latency", "latency_fp16_ms": 12.0}
    assert latency_missing({}, "cpu") and not latency_missing(cpu, "cpu")
    assert latency_missing(cpu, "cuda")  # would sit next to the paper's GPU FPS
    assert not latency_missing(gpu, "cuda")
    no_fp16 = {k: v for k, v in gpu.items() if k != "latency_fp16_ms"}
    assert latency_missing(no_fp16, "cuda")
    assert not latency_missing({**no_fp16, "latency_fp16_error": "RuntimeError: no half kernel"}, "cuda")
    assert breakdown_missing({}, "cpu") and not breakdown_missing({"breakdown": {"kind": "CPU latency"}}, "cpu")
    assert breakdown_missing({"breakdown": {"kind": "CPU latency"}}, "cuda")


def test_on_a_gpu_costs_time_fp32_and_fp16_and_keep_a_failed_fp16_reason(tmp_path, data_root, monkeypatch):
    """The CUDA branch of measure_cost, with the timers faked (no GPU here): a CPU latency
    is replaced by fp32 + fp16 GPU timings, an fp16 failure is recorded with its reason, and
    a CPU breakdown is kept beside the GPU one."""
    import rtinst.harness.costs as costs
    import rtinst.engine.latency as latency
    from types import SimpleNamespace

    spec, plan = make_plan(tmp_path, data_root, cost_preset="coco", latency=True)
    job = next(iter(plan.costs.values()))
    job.breakdown = True
    plan.runs, plan.costs = {}, {job.key: job}
    run_sweep(plan, executor="inline", log=None)  # CPU measurement first
    before = json.loads(Path(job.path).read_text())
    assert before["latency_kind"] == "CPU latency" and "latency_fp16_ms" not in before

    calls = []

    def fake_latency(model, image, device, warmup, iters, fp16=False, progress=None):
        calls.append((device, fp16, warmup, iters))
        if fp16 and len(calls) > 2:
            raise RuntimeError("\"slow_conv2d\" not implemented for 'Half'\nmore")
        ms = 6.0 if fp16 else 10.0
        return SimpleNamespace(mean_ms=ms, median_ms=ms, fps=1000 / ms, kind="GPU latency",
                               timing="cuda sync", provenance={"hardware": "GPU: NVIDIA H200"})

    def fake_breakdown(model, image, modules, device, warmup, iters, progress=None):
        return SimpleNamespace(kind="GPU latency", total_ms=10.0, parts_ms={"backbone": 10.0},
                               parts_pct={"backbone": 100.0}, provenance={"hardware": "GPU: NVIDIA H200"})

    monkeypatch.setattr(costs, "timing_device", lambda: "cuda")
    monkeypatch.setattr("rtinst.harness.plan.timing_device", lambda: "cuda")
    monkeypatch.setattr(latency, "measure_latency", fake_latency)
    monkeypatch.setattr(latency, "module_breakdown", fake_breakdown)
    assert pending_costs(plan) == [job]  # the CPU number is stale on a GPU machine
    run_sweep(plan, executor="inline", log=None)
    data = json.loads(Path(job.path).read_text())
    assert calls == [("cuda", False, 10, 50), ("cuda", True, 10, 50)]
    assert (data["latency_ms"], data["fps"], data["latency_fp16_ms"], data["fps_fp16"]) == (10.0, 100.0, 6.0, 1000 / 6)
    assert data["latency_kind"] == "GPU latency" and data["latency_hardware"] == "GPU: NVIDIA H200"
    assert data["breakdown"]["kind"] == "GPU latency" and data["breakdown_cpu"] == before["breakdown"]
    assert data["gflops"] == before["gflops"] and pending_costs(plan) == []

    Path(job.path).write_text(json.dumps({**before, "latency_kind": "CPU latency"}))
    run_sweep(plan, executor="inline", log=None)  # this time fp16 fails
    data = json.loads(Path(job.path).read_text())
    assert data["latency_ms"] == 10.0 and "latency_fp16_ms" not in data
    assert data["latency_fp16_error"] == "RuntimeError: \"slow_conv2d\" not implemented for 'Half'"
    assert pending_costs(plan) == []  # a failed fp16 attempt is not retried on every sweep


def test_cli_costs_only_measures_latency_and_trains_nothing(tmp_path, data_root, capsys):
    from rtinst.cli import main

    fixture = toy.write_fixture(tmp_path / "fx", data_root=data_root)
    runs, results = tmp_path / "runs", tmp_path / "results"
    code = main(["sweep", str(fixture), "--preset", "smoke", "--executor", "inline", "--costs-only",
                 "--latency", "--runs-dir", str(runs), "--results-dir", str(results)])
    assert code == 0
    assert not runs.exists() or not any(runs.glob("*/record.json"))
    costs = list((results / "costs").glob("*.json"))
    assert len(costs) == 3 and all("latency_ms" in json.loads(p.read_text()) for p in costs)
    import pandas as pd

    table = pd.read_csv(results / "tables/smoke/sparseinst_toy_objectness.csv")
    implemented = table[table["implemented"]]
    assert implemented["ours_fps"].notna().all() and set(implemented["latency_kind"]) == {"CPU latency"}
    assert "3 run(s): 0 cached, 0 ran, 0 failed, 3 not trained (costs only)" in capsys.readouterr().out


def test_execute_run_without_notebook_and_lock(tmp_path, data_root):
    spec, plan = make_plan(tmp_path, data_root)
    job = next(iter(plan.runs.values()))
    from dataclasses import asdict

    out = execute_run(asdict(job), via_notebook=False)
    assert out["status"] == "done" and not (Path(job.run_dir) / "run.ipynb").exists()
    assert execute_run(asdict(job), via_notebook=False)["status"] == "cached"


def test_estimate_from_existing_records(tmp_path, data_root):
    spec, plan = make_plan(tmp_path, data_root)
    todo = pending_runs(plan)
    assert "20 s/run (default)" in str(estimate(plan, todo, []))
    from rtinst.config import load_config

    for i, secs in enumerate([40.0, 44.0]):  # two finished runs of the same model and preset
        rec = RunRecord.start(load_config(todo[0].base_config, [
            f"seed={10 + i}", f"train.max_iters={todo[0].max_iters}"])).finish({})
        rec.wall_time_s = secs
        rec.provenance.update(device="cpu", torch_threads=2, cpu_count=2)
        write_record(rec, tmp_path / "runs" / f"sparseinst-smoke-old{i}")
    est = estimate(plan, todo, [])
    assert est.runs == 3 and est.seconds == pytest.approx(3 * 42.0) and "from 2 record(s)" in str(est)
    # local workers share this machine's cores: no faster; cluster workers each have a machine
    shared = estimate(plan, todo, [], workers=3)
    assert shared.seconds == pytest.approx(3 * 42.0) and "3 worker(s) sharing this machine" in str(shared)
    assert estimate(plan, todo, [], workers=3, executor="submitit").seconds == pytest.approx(42.0)


def test_estimate_counts_machine_time_of_runs_that_shared_the_cpu(tmp_path, data_root):
    """A record trained with 1 thread of 2 cores (a --workers 2 sweep) took twice the wall
    time for the same work: it is priced at half its wall time."""
    from rtinst.config import load_config
    from rtinst.harness.estimates import machine_share

    spec, plan = make_plan(tmp_path, data_root)
    todo = pending_runs(plan)
    for i, (secs, threads) in enumerate([(84.0, 1), (42.0, 2)]):
        rec = RunRecord.start(load_config(todo[0].base_config, [
            f"seed={10 + i}", f"train.max_iters={todo[0].max_iters}"])).finish({})
        rec.wall_time_s = secs
        rec.provenance.update(device="cpu", torch_threads=threads, cpu_count=2)
        write_record(rec, tmp_path / "runs" / f"sparseinst-smoke-old{i}")
    assert estimate(plan, todo, []).seconds == pytest.approx(3 * 42.0)
    # records from before cpu_count was kept: the cores are read from the hardware label
    assert machine_share({"device": "cpu", "torch_threads": 1,
                          "hardware": "CPU: AMD EPYC (2 cores)"}) == 0.5
    assert machine_share({"device": "cuda:0", "torch_threads": 1, "cpu_count": 16}) == 1.0
    assert machine_share({}) == 1.0


def test_estimate_prices_runs_per_training_step(tmp_path, data_root):
    """A long run (a 3x curve) beside a normal one: each missing run is priced at the median
    seconds per step times its own steps, not at the mean wall time of the records."""
    from rtinst.config import load_config

    spec, plan = make_plan(tmp_path, data_root)
    todo = pending_runs(plan)
    steps = todo[0].max_iters
    assert steps and all(j.max_iters == steps for j in todo)
    for i, (mult, secs) in enumerate([(1, 40.0), (3, 126.0), (1, 44.0)]):
        cfg = load_config(todo[0].base_config, [f"seed={10 + i}", f"train.max_iters={mult * steps}"])
        rec = RunRecord.start(cfg).finish({})
        rec.wall_time_s = secs
        rec.provenance.update(device="cpu", torch_threads=2, cpu_count=2)
        write_record(rec, tmp_path / "runs" / f"sparseinst-smoke-old{i}")
    est = estimate(plan, todo, [])
    assert est.seconds == pytest.approx(3 * 42.0)  # rates 40, 42, 44 s per `steps` -> median 42
    assert f"{42.0 / steps:.2f} s/step from 3 record(s), scaled by each run's GFLOPs" in str(est)
    # a minute-budgeted record may have stopped early: it prices per run, not per step
    cfg = load_config(todo[0].base_config, ["train.max_minutes=1"])
    rec = RunRecord.start(cfg).finish({})
    rec.wall_time_s = 60.0
    rec.provenance.update(device="cpu", torch_threads=2, cpu_count=2)
    write_record(rec, tmp_path / "runs" / "sparseinst-smoke-minutes")
    assert estimate(plan, todo, []).seconds == pytest.approx(3 * 42.0)
    assert "from 3 record(s)" in str(estimate(plan, todo, []))


def test_estimate_scales_with_the_gflops_of_a_training_batch(tmp_path, data_root, monkeypatch):
    """A run with twice the batch (or twice the model FLOPs) is priced twice its per-step time
    from the records; the counts are cached in the runs folder; without counts, per step."""
    import dataclasses

    import rtinst.harness.estimates as est_mod
    from rtinst.config import load_config

    spec, plan = make_plan(tmp_path, data_root)
    todo = pending_runs(plan)
    for i, secs in enumerate([40.0, 44.0]):
        rec = RunRecord.start(load_config(todo[0].base_config, [f"seed={10 + i}"])).finish({})
        rec.wall_time_s = secs
        rec.provenance.update(device="cpu", torch_threads=2, cpu_count=2)
        write_record(rec, tmp_path / "runs" / f"sparseinst-smoke-old{i}")
    base_batch = load_config(todo[0].base_config).train.batch_size
    double = dataclasses.replace(todo[0], overrides=todo[0].overrides + [
        f"train.batch_size={2 * base_batch}"])
    assert estimate(plan, [todo[0]], []).seconds == pytest.approx(42.0)
    assert estimate(plan, [double], []).seconds == pytest.approx(2 * 42.0)
    cache = json.loads((tmp_path / "runs" / est_mod.WORK_CACHE).read_text())
    # one entry per model config and input size (the records' base model and the row's)
    assert len(cache) == 2 and all(v > 0 for v in cache.values())

    # cached: no model is built or counted again
    def no_count(*args):
        raise AssertionError("counted again")

    monkeypatch.setattr(est_mod, "_count_gflops", no_count)
    assert estimate(plan, [double], []).seconds == pytest.approx(2 * 42.0)
    # a model that cannot be counted: the group prices per step again, and says so
    (tmp_path / "runs" / est_mod.WORK_CACHE).unlink()
    monkeypatch.setattr(est_mod, "_count_gflops", lambda cfg, size: None)
    flat = estimate(plan, [double], [])
    assert flat.seconds == pytest.approx(42.0) and "scaled" not in str(flat)


def test_an_interrupted_run_is_priced_at_its_own_step_time_for_the_steps_after_its_checkpoint(
        tmp_path, data_root):
    """FLOPs miss some costs (a deformable conv on a CPU): a killed run that resumes is
    priced from its own log, for the steps its last checkpoint has not kept, plus the
    group's evaluation time."""
    from rtinst.config import load_config

    spec, plan = make_plan(tmp_path, data_root)
    job = pending_runs(plan)[0]
    for i in range(2):
        rec = RunRecord.start(load_config(job.base_config, [f"seed={10 + i}"])).finish(
            {"train_seconds": 40.0})
        rec.wall_time_s = 42.0  # 2 s of evaluation
        rec.provenance.update(device="cpu", torch_threads=2, cpu_count=2)
        write_record(rec, tmp_path / "runs" / f"sparseinst-smoke-old{i}")
    fresh = estimate(plan, [job], []).seconds

    cfg = load_config(job.base_config, job.overrides)
    steps, period = 7, 3  # 7 steps logged, checkpoint at step 6: 6 done
    cfg.train.max_iters, cfg.train.checkpoint_period = 20, period
    job.max_iters = 20
    job.overrides = job.overrides + ["train.max_iters=20", f"train.checkpoint_period={period}"]
    run_dir = Path(job.run_dir)
    partial = RunRecord.start(cfg)
    partial.provenance.update(device="cpu", torch_threads=1, cpu_count=2)  # half the machine
    write_record(partial, run_dir)
    (run_dir / "train_log.jsonl").write_text("".join(
        json.dumps({"iter": i, "seconds": 10.0 * (i + 1), "loss": 1.0}) + "\n" for i in range(steps)))
    assert estimate(plan, [job], []).seconds != pytest.approx(5.0 * 14 + 2.0)  # no checkpoint yet
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    est = estimate(plan, [job], [])
    assert est.seconds == pytest.approx(5.0 * (20 - 6) + 2.0)  # 10 s/step x 1/2 machine
    assert "1 interrupted run(s) at their own s/step" in str(est)
    assert fresh == pytest.approx(42.0)


def test_unknown_executor_is_a_user_error():
    from rtinst.errors import UserError

    with pytest.raises(UserError, match="unknown executor 'slurmx'"):
        Executor("slurmx")


def test_within_budget_takes_runs_in_order_and_evaluations_only_with_their_run(tmp_path):
    from rtinst.harness.estimates import DEFAULT_RUN_SECONDS, within_budget
    from rtinst.harness.plan import Plan, RunJob

    def job(name, depends_on=None):
        return RunJob(config_hash=name, run_dir=str(tmp_path / name), base_config="x.yaml",
                      overrides=[], model="yolact", preset="tiny", seed=0,
                      trained_from=str(tmp_path / depends_on) if depends_on else None,
                      depends_on=depends_on)

    jobs = [job("a"), job("a_eval", depends_on="a"), job("b")]
    plan = Plan(preset="tiny", seeds=[0], runs_dir=str(tmp_path), costs_dir=str(tmp_path),
                cost_preset="coco", runs={j.config_hash: j for j in jobs})
    run = DEFAULT_RUN_SECONDS["tiny"]  # no records in runs_dir: the preset's default per run

    def names(budget):
        fits, later = within_budget(plan, jobs, budget)
        return [j.config_hash for j in fits], [j.config_hash for j in later]

    assert names(3 * run) == (["a", "a_eval", "b"], [])
    assert names(1.5 * run) == (["a", "a_eval"], ["b"])  # an evaluation costs ~5 % of a run
    assert names(0.5 * run) == ([], ["a", "a_eval", "b"])
    # "a" does not fit after "b": its evaluation cannot run without it, though it would fit
    fits, later = within_budget(plan, [jobs[2], jobs[0], jobs[1]], 1.5 * run)
    assert [j.config_hash for j in fits] == ["b"] and [j.config_hash for j in later] == ["a", "a_eval"]
    # an evaluation listed before its training run is taken right after it
    fits, later = within_budget(plan, [jobs[1], jobs[0], jobs[2]], 1.5 * run)
    assert [j.config_hash for j in fits] == ["a", "a_eval"] and [j.config_hash for j in later] == ["b"]


def test_cli_sweep_writes_each_table_when_its_last_run_is_in(tmp_path, data_root, capsys):
    """Two tables in one sweep: the first is written as soon as its runs are done, while the
    second table's runs are still to come; both are written again at the end."""
    from rtinst.cli import main

    first = toy.write_fixture(tmp_path / "a", data_root=data_root)
    second = tmp_path / "b" / "toy_b.yaml"
    second.parent.mkdir()
    second.write_text(first.read_text().replace("table: toy_objectness", "table: toy_b")
                      + "overrides: [train.lr=0.02]\n")  # other configs: runs of its own
    runs, results = tmp_path / "runs", tmp_path / "results"
    code = main(["sweep", str(first), str(second), "--preset", "smoke", "--executor", "inline",
                 "--no-notebook", "--cost-preset", "none", "--runs-dir", str(runs),
                 "--results-dir", str(results)])
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    early = [i for i, line in enumerate(err) if line.startswith("table written while the sweep goes on")]
    done = [i for i, line in enumerate(err) if line.startswith("done ")]
    assert len(done) == 6 and len(early) == 2
    assert "sparseinst/toy_objectness" in err[early[0]] and done[2] < early[0] < done[3]
    assert "sparseinst/toy_b" in err[early[1]] and early[1] > done[5]
    assert (results / "tables/smoke/sparseinst_toy_b.csv").is_file()
