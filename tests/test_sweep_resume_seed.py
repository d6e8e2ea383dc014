"""A sweep resumes an interrupted run from its checkpoint and honours its seeds (toy detector)."""

import json
from pathlib import Path

import pytest
import torch

import _sweep_toy as toy
from rtinst.config import load_config
from rtinst.harness.plan import plan_sweep
from rtinst.harness.specs import load_spec
from rtinst.harness.sweep import run_sweep
from rtinst.records import read_record

ITERS = 6
INTERRUPT_AFTER = 3  # checkpoint_period is 1: last.pt holds step 3 when Ctrl-C comes


@pytest.fixture(autouse=True)
def toy_detector(monkeypatch):
    monkeypatch.setenv("RTINST_BUILD_MODEL", toy.HOOK)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("toydata")


def _plan(tmp_path, data_root, name, seeds):
    spec = load_spec(toy.write_fixture(tmp_path / "fx", iters=ITERS, data_root=data_root), ("smoke",))
    return plan_sweep([spec], "smoke", seeds, tmp_path / name, tmp_path / f"{name}_costs", cost_preset=None)


def _log(job) -> list[dict]:
    return [json.loads(x) for x in (Path(job.run_dir) / "train_log.jsonl").read_text().splitlines()]


def _weights(job) -> dict[str, torch.Tensor]:
    return torch.load(Path(job.run_dir) / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_an_interrupted_sweep_run_resumes_from_its_checkpoint_not_from_step_0(tmp_path, data_root, monkeypatch):
    plan = _plan(tmp_path, data_root, "runs", [0])
    monkeypatch.setenv("RTINST_TOY_INTERRUPT_AFTER", str(INTERRUPT_AFTER))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C stops the sweep in its first run
        run_sweep(plan, executor="inline", via_notebook=False, log=None)
    (job,) = [j for j in plan.runs.values() if j.status() == "running"]
    before = _log(job)
    assert [r["iter"] for r in before] == list(range(INTERRUPT_AFTER))

    monkeypatch.delenv("RTINST_TOY_INTERRUPT_AFTER")
    result = run_sweep(plan, executor="inline", via_notebook=False, log=None)
    assert not result.failed and all(j.status() == "done" for j in plan.runs.values())
    after = _log(job)
    assert [r["iter"] for r in after] == list(range(ITERS))
    # The steps before the interruption were not trained again: their log lines are kept
    # (a restart from step 0 would log the losses of a model that had already trained).
    assert after[:INTERRUPT_AFTER] == before

    # The resumed run ends with the weights of the same run trained without interruption.
    clean = _plan(tmp_path, data_root, "clean", [0])
    run_sweep(clean, executor="inline", via_notebook=False, log=None)
    ref = clean.runs[job.config_hash]
    assert [r["loss"] for r in _log(ref)] == pytest.approx([r["loss"] for r in after], rel=1e-6)
    w, w_ref = _weights(job), _weights(ref)
    assert all(torch.allclose(w[k], w_ref[k], rtol=1e-5, atol=1e-7) for k in w_ref)


def test_a_sweep_over_two_seeds_trains_two_distinct_runs_per_row(tmp_path, data_root):
    plan = _plan(tmp_path, data_root, "runs", [0, 1])
    by_row: dict[str, dict[int, str]] = {}
    for row in plan.rows:
        by_row.setdefault(row.label, {})[row.seed] = row.run
    assert by_row and all(sorted(seeds) == [0, 1] for seeds in by_row.values())
    assert len(plan.runs) == 2 * len(by_row)  # no row's two seeds share a run
    for seeds in by_row.values():
        for seed, h in seeds.items():
            job = plan.runs[h]
            assert load_config(job.base_config, job.overrides).seed == seed
    label = next(iter(by_row))
    one_row = {h: plan.runs[h] for h in by_row[label].values()}
    plan.runs = one_row
    plan.rows = [r for r in plan.rows if r.label == label]
    result = run_sweep(plan, executor="inline", via_notebook=False, log=None)
    assert not result.failed
    j0, j1 = (plan.runs[by_row[label][s]] for s in (0, 1))
    assert read_record(j0.run_dir).config["seed"] == 0 and read_record(j1.run_dir).config["seed"] == 1
    w0, w1 = _weights(j0), _weights(j1)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    assert [r["loss"] for r in _log(j0)] != [r["loss"] for r in _log(j1)]
