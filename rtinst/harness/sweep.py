"""Sweeps: a plan's missing runs and costs -> records, cached, resumable, fanned out.

The plan (which runs and cost measurements a set of specs needs) is :mod:`rtinst.harness.plan`.
``run_sweep`` executes what is missing, one :func:`rtinst.harness.runner.execute_run` per run:

- a run whose record says ``done`` is reused, never recomputed unless ``force``;
- a run whose record says ``failed`` keeps its reason and is not retried unless
  ``retry_failed`` (or ``force``); the sweep always continues past a failure;
- a run killed at any moment (``running`` record, checkpoint, stray ``*.tmp``) resumes from
  its checkpoint: every file is written atomically and stray temp files are removed first;
- a per-run file lock makes two sweeps over the same folder wait for each other instead of
  computing a run twice.

Estimates of the missing work (and what fits in a budget) are in :mod:`rtinst.harness.estimates`.

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
from typing import Any, Callable

from rtinst.harness.costs import measure_cost
from rtinst.harness.estimates import estimate, parallel_runs, price_runs
from rtinst.harness.executors import Executor
from rtinst.harness.plan import CostJob, Plan, RunJob, pending_costs, pending_runs
from rtinst.harness.progress import SweepProgress
from rtinst.harness.runner import execute_run, failure_reason
from rtinst.records import read_record


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


def check_datasets(todo: list[RunJob]) -> None:
    """Validate each distinct dataset of the runs about to train once, before the first run:
    broken data then fails the sweep with one error instead of failing every run with it.
    A synthetic dataset not generated yet is skipped (the first run generates it)."""
    from rtinst.data.build import split_paths
    from rtinst.data.validate import validate_coco
    from rtinst.errors import UserError
    from rtinst.harness.table_spec import cached_load_config

    seen: set[tuple[Path, Path]] = set()
    for job in todo:
        data = cached_load_config(Path(job.base_config), list(job.overrides)).data
        for split in ("train", "val"):
            ann, images = split_paths(data, split)
            if (ann, images) in seen or (data.dataset == "synthetic" and not ann.exists()):
                continue
            seen.add((ann, images))
            try:
                validate_coco(ann, images).raise_for_errors()
            except UserError as e:
                raise UserError(f"{e} [data.root {data.root}, {split} split: {len(todo)} run(s) "
                                f"not started; `rtinst data check --ann {ann} --images {images}` lists every problem]") from None


def run_sweep(plan: Plan, executor: str = "local", workers: int = 1, force: bool = False,
              retry_failed: bool = False, via_notebook: bool = True,
              submitit_folder: str | Path | None = None, submitit_params: dict | None = None,
              log: Callable[[str], None] | None = print, poll: float = 0.1,
              announce: bool = True, on_settled: Callable[[str], None] | None = None,
              train: bool = True, progress: bool = True) -> SweepResult:
    """Execute the plan's missing runs and cost measurements; return what happened.
    ``announce``: log the time estimate before starting (callers that printed it: False).
    ``on_settled(config_hash)``: called as each missing run ends (done, failed or skipped),
    e.g. to write a table as soon as its last run is in rather than after the whole sweep.
    ``train=False``: measure the missing costs only (missing runs stay missing).
    ``progress``: a bar over the runs with the estimated time left, and the running job's
    step / loss / s/step, one line per logged step (:mod:`rtinst.harness.progress`)."""
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
    check_datasets(todo)
    prices, _ = price_runs(plan, todo)
    bar = SweepProgress({j.config_hash: p for j, p in zip(todo, prices)},
                        parallel_runs(executor, workers), enabled=progress and bool(todo), log=log)
    log = bar.write  # lines above the bar
    fresh = {j.config_hash for j in todo if force or j.status() == "failed"}
    pool = Executor(executor, workers, submitit_folder or Path(plan.runs_dir) / "_submitit",
                    submitit_params)
    waiting = {j.config_hash: j for j in todo if j.depends_on and j.depends_on in {t.config_hash for t in todo}}
    handles: dict[Any, tuple[str, str]] = {}
    watched = 0.0

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
                if time.time() - watched >= 1.0:  # the running job's log, once a second
                    watched = time.time()
                    bar.watch({k: (plan.runs[k].run_dir, plan.runs[k].max_iters)
                               for kind, k in handles.values() if kind == "run"})
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
                bar.finished(key)
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
                        bar.finished(dep.config_hash)
                        settled(dep.config_hash)
                settled(key)
    finally:
        pool.shutdown()
        bar.close()
    result.seconds = time.time() - t0
    return result
