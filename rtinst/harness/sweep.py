"""Sweeps: specs -> one run per (config, seed) -> records, cached, resumable, fanned out.

``plan_sweep`` resolves every implemented row of the given specs at a preset and seeds into
run jobs keyed by config hash (``RunConfig.seed`` is part of the hash), so identical configs
across tables - FastInst's D3 baseline appears in ten - are one run. Each run lives in
``<runs_dir>/<model>-<preset>-<hash>/`` (the folder ``rtinst train`` would use) and holds its
record, checkpoint and the executed ``run.ipynb``. Cost columns are one job per (model
config, input size) at paper scale, cached in ``<costs_dir>/<key>.json``.

``run_sweep`` executes what is missing, one :func:`rtinst.runner.execute_run` per run:

- a run whose record says ``done`` is reused, never recomputed unless ``force``;
- a run whose record says ``failed`` keeps its reason and is not retried unless
  ``retry_failed`` (or ``force``); the sweep always continues past a failure;
- a run killed at any moment (``running`` record, checkpoint, stray ``*.tmp``) resumes from
  its checkpoint: every file is written atomically and stray temp files are removed first;
- a per-run file lock makes two sweeps over the same folder wait for each other instead of
  computing a run twice.

Estimates of the missing work (and what fits in a budget) are in :mod:`rtinst.estimates`.

Runs execute through papermill from ``notebooks/run.ipynb`` (``via_notebook=True``) or
directly (``execute_run(..., via_notebook=False)``), on an executor:

- ``local``: a ``concurrent.futures`` process pool (``workers`` processes; spawn);
- ``inline``: in this process, one at a time (debugging, tests);
- ``submitit``: SLURM through submitit (``cluster="local"`` runs jobs as local processes).

Multi-GPU runs (``gpus > 1``) launch ``torchrun --standalone --nproc_per_node=N -m rtinst
train --config <run_dir>/sweep_config.yaml --run-dir <run_dir>`` from the job; with
submitit, ask for the GPUs with ``slurm_gpus_per_node`` so that the job sees them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from rtinst.config import RunConfig, config_hash
from rtinst.costs import breakdown_missing, cost_key, latency_missing, measure_cost, read_cost, timing_device
from rtinst.errors import UserError
from rtinst.estimates import estimate
from rtinst.executors import Executor
from rtinst.experiments import read_record, run_dir_for
from rtinst.runner import execute_run, failure_reason, run_status
from rtinst.specs import TableSpec, cost_size, row_base, row_config, row_overrides, trained_row


# ------------------------------------------------------------------------------- plan


@dataclass
class RunJob:
    """One training (or evaluation-only) run."""

    config_hash: str
    run_dir: str
    base_config: str
    overrides: list[str]
    model: str
    preset: str
    seed: int
    trained_from: str | None = None  # evaluation-only: the run whose checkpoint is evaluated
    depends_on: str | None = None  # config hash of that run
    gpus: int = 1
    max_iters: int | None = None  # training steps (None: a minute budget), for the estimate
    used_by: list[str] = field(default_factory=list)  # "paper/table: row label"

    def status(self) -> str:
        return run_status(self.run_dir)


@dataclass
class CostJob:
    """FLOPs/params (and optionally latency / per-module breakdown) of one model at one size."""

    key: str
    path: str
    base_config: str
    overrides: list[str]
    input_size: tuple[int, int]
    latency: bool = False
    breakdown: bool = False
    used_by: list[str] = field(default_factory=list)

    def missing(self, device: str | None = None) -> bool:
        """``device``: where latency would be timed (default: this machine's, see timing_device)."""
        data = read_cost(self.path)
        if data is None:
            return True
        device = device or timing_device()
        return (self.latency and latency_missing(data, device)) or (
            self.breakdown and breakdown_missing(data, device))


@dataclass
class PlannedRow:
    spec: str
    label: str
    seed: int | None
    run: str | None = None  # config hash
    cost: str | None = None  # cost key


@dataclass
class Plan:
    preset: str
    seeds: list[int]
    runs_dir: str
    costs_dir: str
    cost_preset: str
    runs: dict[str, RunJob] = field(default_factory=dict)
    costs: dict[str, CostJob] = field(default_factory=dict)
    rows: list[PlannedRow] = field(default_factory=list)

    def runs_for(self, spec_id: str, label: str) -> dict[int, RunJob]:
        return {r.seed: self.runs[r.run] for r in self.rows
                if r.spec == spec_id and r.label == label and r.run is not None}

    def cost_for(self, spec_id: str, label: str) -> CostJob | None:
        key = next((r.cost for r in self.rows if r.spec == spec_id and r.label == label and r.cost), None)
        return self.costs.get(key) if key else None


def _data_root_override(cfg: RunConfig, data_root: str | None) -> list[str]:
    """``data.root`` for a user-given data folder. Synthetic datasets of different sizes get
    their own sub-folder (the generator refuses to reuse a folder of another size)."""
    if not data_root:
        return []
    d = cfg.data
    if d.dataset == "synthetic":
        name = f"synthetic_{d.synthetic_train}x{d.synthetic_val}_{d.synthetic_size}px_s{d.synthetic_seed}"
        return [f"data.root={Path(data_root) / name}"]
    return [f"data.root={data_root}"]


def _resolve(spec: TableSpec, row, preset: str, seed: int, data_root: str | None,
             overrides: list[str]) -> tuple[RunConfig, list[str]]:
    extra = [f"seed={seed}", *overrides]
    cfg = row_config(spec, row, preset, extra)
    extra += _data_root_override(cfg, data_root)
    if data_root:
        cfg = row_config(spec, row, preset, extra)
    return cfg, row_overrides(spec, row, preset) + extra


def plan_sweep(specs: Iterable[TableSpec], preset: str = "tiny", seeds: Iterable[int] = (0,),
               runs_dir: str | Path = "results/runs", costs_dir: str | Path = "results/costs",
               data_root: str | None = None, cost_preset: str | None = "coco",
               overrides: Iterable[str] = (), latency: bool = False, gpus: int = 1) -> Plan:
    """Resolve every row x seed into run jobs (deduplicated by config hash) and cost jobs.

    ``cost_preset=None`` skips the cost columns; ``"coco"`` (default) measures them at
    paper scale. ``overrides`` apply to every training run (e.g. ``train.max_iters=100``).
    """
    seeds = [int(s) for s in seeds]
    plan = Plan(preset, seeds, str(runs_dir), str(costs_dir), cost_preset or "none")
    overrides = list(overrides)
    for spec in specs:
        want_latency = latency or any(m in ("latency_ms", "fps") for m in spec.cost_metrics)
        want_breakdown = any(m.endswith(("_ms", "_pct")) and m != "latency_ms" for m in spec.cost_metrics)
        for row in spec.implemented_rows:
            where = f"{spec.id}: {row.label}"
            key = None
            if spec.cost_metrics and cost_preset:
                ccfg = row_config(spec, row, cost_preset, ["model.backbone.pretrained=none"])
                size = cost_size(spec, row)
                key = cost_key(ccfg, size)
                job = plan.costs.setdefault(key, CostJob(
                    key, str(Path(costs_dir) / f"{key}.json"), str(row_base(spec, row, cost_preset)),
                    row_overrides(spec, row, cost_preset) + ["model.backbone.pretrained=none"], size))
                job.latency |= want_latency
                job.breakdown |= want_breakdown
                job.used_by.append(where)
            if not spec.metrics:  # a cost-only table (SparseInst Table 8)
                plan.rows.append(PlannedRow(spec.id, row.label, None, None, key))
                continue
            for seed in seeds:
                cfg, ovr = _resolve(spec, row, preset, seed, data_root, overrides)
                job = plan.runs.get(config_hash(cfg))
                if job is None:
                    job = RunJob(config_hash(cfg), str(run_dir_for(cfg, runs_dir)),
                                 str(row_base(spec, row, preset)), ovr, cfg.model.name, cfg.preset,
                                 seed, gpus=gpus,
                                 max_iters=None if cfg.train.max_minutes else cfg.train.max_iters)
                    if row.eval_of:
                        tcfg, _ = _resolve(spec, trained_row(spec, row), preset, seed, data_root, overrides)
                        job.trained_from = str(run_dir_for(tcfg, runs_dir))
                        job.depends_on = config_hash(tcfg)
                    plan.runs[job.config_hash] = job
                job.used_by.append(where)
                plan.rows.append(PlannedRow(spec.id, row.label, seed, job.config_hash, key))
    return plan


# ---------------------------------------------------------------------------- pending


def pending_runs(plan: Plan, force: bool = False, retry_failed: bool = False) -> list[RunJob]:
    todo = []
    for job in plan.runs.values():
        status = job.status()
        if force or status in ("missing", "running") or (status == "failed" and retry_failed):
            todo.append(job)
    return todo


def pending_costs(plan: Plan, force: bool = False) -> list[CostJob]:
    device = timing_device()  # once, not per cost file
    return [c for c in plan.costs.values() if force or c.missing(device)]


# ------------------------------------------------------------------------------ costs


def _safe_cost(job: dict) -> dict:
    try:
        return measure_cost(job)
    except Exception as e:  # noqa: BLE001 - a model that cannot be built is reported, not fatal
        return {"key": job["key"], "status": "failed", "error": failure_reason(e)}


# ------------------------------------------------------------------------------ sweep


@dataclass
class SweepResult:
    plan: Plan
    cached: int = 0
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # hash -> reason
    skipped: dict[str, str] = field(default_factory=dict)
    failed_before: dict[str, str] = field(default_factory=dict)  # recorded failed, not retried
    not_trained: int = 0  # missing runs left alone (train=False)
    costs_measured: int = 0
    costs_failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        before = (f", {len(self.failed_before)} failed before (not retried: --retry-failed)"
                  if self.failed_before else "")
        lines = [f"{len(self.plan.runs)} run(s): {self.cached} cached, {len(self.ran)} ran, "
                 f"{len(self.failed)} failed{before}"
                 f"{f', {self.not_trained} not trained (costs only)' if self.not_trained else ''}; "
                 f"{len(self.plan.costs)} cost model(s): "
                 f"{self.costs_measured} measured, {len(self.costs_failed)} failed "
                 f"({self.seconds:.1f} s)"]
        for h, reason in {**self.failed, **self.skipped}.items():
            job = self.plan.runs[h]
            first = (reason or "").strip().splitlines()[0] if reason else "?"
            lines.append(f"  failed {Path(job.run_dir).name} ({', '.join(job.used_by[:2])}): {first}")
        for k, reason in self.costs_failed.items():
            lines.append(f"  cost failed {k}: {reason.splitlines()[0] if reason else '?'}")
        return "\n".join(lines)


def _job_dict(job: RunJob | CostJob) -> dict:
    d = dataclasses.asdict(job)
    d.pop("used_by", None)
    return d


def run_sweep(plan: Plan, executor: str = "local", workers: int = 1, force: bool = False,
              retry_failed: bool = False, via_notebook: bool = True,
              submitit_folder: str | Path | None = None, submitit_params: dict | None = None,
              log: Callable[[str], None] | None = print, poll: float = 0.1,
              announce: bool = True, on_settled: Callable[[str], None] | None = None,
              train: bool = True) -> SweepResult:
    """Execute the plan's missing runs and cost measurements; return what happened.
    ``announce``: log the time estimate before starting (callers that printed it: False).
    ``on_settled(config_hash)``: called as each missing run ends (done, failed or skipped),
    e.g. to write a table as soon as its last run is in rather than after the whole sweep.
    ``train=False``: measure the missing costs only (missing runs stay missing)."""
    settled = on_settled or (lambda _key: None)
    t0 = time.time()
    log = log or (lambda _msg: None)
    result = SweepResult(plan)
    todo = pending_runs(plan, force, retry_failed)
    costs = pending_costs(plan, force)
    result.cached = len(plan.runs) - len(todo)
    if not train:
        result.not_trained, todo = len(todo), []
    todo_hashes = {j.config_hash for j in todo}
    result.failed_before = {h: read_record(j.run_dir).error or "" for h, j in plan.runs.items()
                            if h not in todo_hashes and j.status() == "failed"}
    result.cached -= len(result.failed_before)
    if not todo and not costs:
        result.seconds = time.time() - t0
        return result
    if announce:
        log(str(estimate(plan, todo, costs, workers, executor)))
    fresh = {j.config_hash for j in todo if force or j.status() == "failed"}
    pool = Executor(executor, workers, submitit_folder or Path(plan.runs_dir) / "_submitit",
                    submitit_params)
    waiting = {j.config_hash: j for j in todo if j.depends_on and j.depends_on in {t.config_hash for t in todo}}
    handles: dict[Any, tuple[str, str]] = {}

    def submit_run(job: RunJob) -> None:
        handles[pool.submit(execute_run, _job_dict(job), via_notebook, job.config_hash in fresh)] = ("run", job.config_hash)

    try:
        for c in costs:
            handles[pool.submit(_safe_cost, {**_job_dict(c), "force": force})] = ("cost", c.key)
        for job in todo:
            if job.config_hash not in waiting:
                submit_run(job)
        while handles:
            finished = [h for h in handles if h.done()]
            if not finished:
                time.sleep(poll)
                continue
            for h in finished:
                kind, key = handles.pop(h)
                try:
                    out = h.result()
                except Exception as e:  # noqa: BLE001 - a worker that died
                    out = {"status": "failed", "error": failure_reason(e)}
                if kind == "cost":
                    if out["status"] == "done":
                        result.costs_measured += 1
                    else:
                        result.costs_failed[key] = out.get("error", "")
                        log(f"cost {key} failed: {out.get('error', '')}")
                    continue
                job = plan.runs[key]
                if out["status"] == "done":
                    result.ran.append(key)
                    log(f"done   {Path(job.run_dir).name} ({out.get('seconds', 0):.1f} s)")
                elif out["status"] == "cached":
                    result.cached += 1
                else:
                    result.failed[key] = out.get("error") or "unknown error"
                    first = (out.get("error") or "").strip().splitlines()[:1]
                    log(f"failed {Path(job.run_dir).name}: {first[0] if first else ''}")
                for dep in [d for d in waiting.values() if d.depends_on == key]:
                    del waiting[dep.config_hash]
                    if out["status"] in ("done", "cached"):
                        submit_run(dep)
                    else:
                        result.skipped[dep.config_hash] = f"its trained run {Path(job.run_dir).name} failed"
                        settled(dep.config_hash)
                settled(key)
    finally:
        pool.shutdown()
    result.seconds = time.time() - t0
    return result


def parse_seeds(text: str | Iterable[int] | int) -> list[int]:
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        return [int(s) for s in text]
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    return seeds

