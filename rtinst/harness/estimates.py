"""How long the missing work of a sweep takes, and what fits in a time budget.

:func:`estimate` prices each missing run from the finished runs of the same model and preset
in the runs folder: their median *machine* time per unit of work times the run's own work,
or their median machine time per run where step counts are unknown; a per-preset default
before the first one; an evaluation-only run at 5 % of a training. The work of a run is
its steps (a 1440-step curve run beside 480-step table rows would otherwise triple the
price of every row) times the forward GFLOPs of one training batch (model GFLOPs at its
largest training input x batch size): SparseInst's Table 3 rows span 2-12 GFLOPs per image
at the tiny preset, so a per-step price from the default decoder's runs would price the
width-256, depth-6 row at a sixth of its time. The GFLOPs are counted once per model config
and input size (fvcore, random weights, ~0.5 s each) and kept in ``<runs>/step_gflops.json``;
where a count fails the group falls back to the per-step price. Each cost
measurement is priced at the mean of the cached ones. :func:`within_budget` picks the
missing runs that fit in a budget, for a bounded ``rtinst reproduce --budget-minutes``.

A run that was interrupted (a killed sweep) resumes from its last checkpoint, so it is priced
at its own measured machine seconds per step (its ``train_log.jsonl``) for the steps after that
checkpoint, plus the group's median evaluation time. FLOPs do not see every cost: SparseInst's
deformable-conv row of Table 3 counts 7.9 GFLOPs per 320 px image to its plain twin's 7.7 but
steps 2.5x slower here (12.9 vs 5.1 s/step on 1 thread: torchvision's deform_conv2d is slow
on a CPU); and a half-done run costs half.

Machine time, because local workers share one CPU: a run trained with 1 of 2 cores (a
``--workers 2`` sweep, or a job beside another) took twice the wall time for the same work,
so its wall time is scaled by the share of the cores it had, and a local pool of N workers
on a CPU finishes in the sum of its runs' machine times, not 1/N of it (measured on the
2-core machine: two 1-thread FastInst runs side by side step at 1.9 and 3.4 s where one
2-thread run alone steps at 0.97 and 1.5 s). Only cluster workers (submitit), each on its
own machine, divide the time.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from rtinst.config import from_dict
from rtinst.config_schema import RunConfig
from rtinst.errors import UserError
from rtinst.harness.costs import DEFAULT_COST_SECONDS, cost_key, read_cost
from rtinst.harness.plan import CostJob, Plan, RunJob
from rtinst.io import atomic_write_json
from rtinst.records import RECORD_NAME, read_record

# Seconds per run when no finished record of the same model and preset exists yet.
DEFAULT_RUN_SECONDS = {"smoke": 20.0, "tiny": 11 * 60.0, "coco": 2 * 86400.0, "custom": 11 * 60.0}


@dataclass
class Estimate:
    runs: int
    costs: int
    seconds: float
    workers: int
    basis: dict[str, str]
    executor: str = "local"

    def __str__(self) -> str:
        if not self.runs and not self.costs:
            return "nothing to compute: every run and cost is cached"
        basis = "; ".join(f"{k}: {v}" for k, v in self.basis.items())
        shared = (" sharing this machine" if self.workers > 1 and parallel_runs(self.executor, self.workers) == 1
                  else "")
        return (f"to compute: {self.runs} run(s) and {self.costs} cost measurement(s), about "
                f"{_fmt_seconds(self.seconds)} with {self.workers} worker(s){shared} ({basis})")


def parallel_runs(executor: str, workers: int) -> int:
    """How many runs' worth of work proceed at once: cluster jobs each get a machine; local
    workers split this machine's cores, which a CPU run already fills (see the module doc)."""
    return max(1, workers) if executor == "submitit" else 1


def machine_share(provenance: dict) -> float:
    """Share of its machine a recorded run had: torch threads / CPU cores on a CPU (1 when
    unknown or on a GPU). Records before ``cpu_count`` was kept name the cores in
    ``hardware`` ('CPU: ... (2 cores)')."""
    if str(provenance.get("device", "cpu")).startswith("cuda"):
        return 1.0
    threads = provenance.get("torch_threads")
    cores = provenance.get("cpu_count")
    if cores is None:
        m = re.search(r"\((\d+) cores\)", str(provenance.get("hardware", "")))
        cores = int(m.group(1)) if m else None
    if not threads or not cores:
        return 1.0
    return min(1.0, threads / cores)


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _steps(config: dict) -> int | None:
    """Steps a recorded run trained; None when a minute budget may have stopped it early."""
    train = config.get("train") or {}
    steps = train.get("max_iters")
    ok = isinstance(steps, int) and steps > 0 and train.get("max_minutes") is None
    return steps if ok else None


WORK_CACHE = "step_gflops.json"  # in the runs folder: {cost key: GFLOPs or null}


def _train_input(cfg: RunConfig) -> tuple[int, int]:
    side = cfg.data.fixed_size or min(max(cfg.data.train_short_edge), cfg.data.train_max_size)
    return side, side


def batch_gflops(cfg: RunConfig, cache: dict) -> float | None:
    """Forward GFLOPs of one training batch (the model at its largest square training input,
    times the batch size; backward costs about twice the forward, so a step's time is about
    proportional), counted once per model config and size into ``cache``; None if the model
    cannot be counted."""
    size = _train_input(cfg)
    key = cost_key(cfg, size)
    if key not in cache:
        cache[key] = _count_gflops(cfg, size)
    gflops = cache[key]
    return gflops * cfg.train.batch_size if gflops else None


def _count_gflops(cfg: RunConfig, size: tuple[int, int]) -> float | None:
    import warnings

    import torch

    from rtinst.engine.flops import count_flops
    from rtinst.harness.external import build_detector

    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings from post-processing
            torch.manual_seed(0)
            model = build_detector(cfg.model).eval()
            return float(count_flops(model, torch.randn(1, 3, *size)).gflops)
    except Exception:  # noqa: BLE001 - an estimate must not fail a sweep: price per step instead
        return None


class _WorkCache(dict):
    """``<runs>/step_gflops.json``, written back (atomically) only when a count was added."""

    def __init__(self, runs_dir: Path):
        self.path = runs_dir / WORK_CACHE
        try:
            super().__init__(json.loads(self.path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            super().__init__()
        self._loaded = len(self)

    def save(self) -> None:
        if len(self) != self._loaded and self.path.parent.is_dir():
            atomic_write_json(self.path, dict(sorted(self.items())))
            self._loaded = len(self)


def resumed_price(run_dir: str | Path, max_iters: int | None, eval_seconds: float) -> float | None:
    """Machine seconds left for an interrupted run that resumes from its last checkpoint (at a
    multiple of its ``train.checkpoint_period``): its own logged seconds per step x the steps
    after that checkpoint, plus ``eval_seconds``. None when the run has no checkpoint, log or
    readable record."""
    run_dir = Path(run_dir)
    log = run_dir / "train_log.jsonl"
    if not max_iters or not (run_dir / "checkpoints" / "last.pt").is_file() or not log.is_file():
        return None
    try:
        rec = read_record(run_dir / RECORD_NAME)
        period = int(rec.config["train"]["checkpoint_period"])
        last = json.loads(log.read_text().splitlines()[-1])
        steps, seconds = int(last["iter"]) + 1, float(last["seconds"])
    except (UserError, IndexError, KeyError, ValueError, TypeError):
        return None
    done = min(max_iters, steps // period * period)
    return seconds / steps * machine_share(rec.provenance) * (max_iters - done) + eval_seconds


Past = tuple[float, int | None, float | None, float | None]


def _past_runs(runs_dir: Path, model: str, preset: str, cache: dict) -> list[Past]:
    """(machine seconds, training steps or None, batch GFLOPs or None, machine seconds after
    training, i.e. evaluation, or None) of each finished training run."""
    out = []
    for path in runs_dir.glob(f"{model}-{preset}-*/{RECORD_NAME}"):
        try:
            rec = read_record(path)
        except UserError:
            continue
        if rec.status == "done" and rec.wall_time_s and not rec.artifacts.get("trained_in"):
            steps = _steps(rec.config)
            try:
                work = batch_gflops(from_dict(rec.config), cache) if steps else None
            except UserError:  # a record of an older config schema
                work = None
            share = machine_share(rec.provenance)
            train = (rec.metrics or {}).get("train_seconds")
            evaluation = (max(0.0, rec.wall_time_s - train) * share
                          if isinstance(train, (int, float)) else None)
            out.append((float(rec.wall_time_s) * share, steps, work, evaluation))
    return out


def _group_price(past: list[Past], preset: str):
    """For one (model, preset): a function (steps, batch GFLOPs) -> seconds, its basis, and
    whether it uses the GFLOPs (every record with steps has them)."""
    per_run = statistics.median(p[0] for p in past) if past else \
        DEFAULT_RUN_SECONDS.get(preset, DEFAULT_RUN_SECONDS["custom"])
    rates = [wall / steps for wall, steps, _, _ in past if steps]
    work_rates = [wall / (steps * work) for wall, steps, work, _ in past if steps and work]
    if not rates:
        origin = f"from {len(past)} record(s)" if past else "(default)"
        return lambda steps, work: per_run, f"{_fmt_seconds(per_run)}/run {origin}", False
    rate = statistics.median(rates)
    scaled = len(work_rates) == len(rates)
    work_rate = statistics.median(work_rates) if scaled else None

    def price(steps, work):
        if not steps:
            return per_run
        return work_rate * steps * work if work and work_rate else rate * steps

    text = f"{rate:.2f} s/step from {len(rates)} record(s)"
    return price, text + (", scaled by each run's GFLOPs per batch" if scaled else ""), scaled


def price_runs(plan: Plan, runs: list[RunJob]) -> tuple[list[float], dict[str, str]]:
    """Estimated seconds of each run (reading each model's past records once) and the basis."""
    from rtinst.config import load_config

    runs_dir = Path(plan.runs_dir)
    cache = _WorkCache(runs_dir)
    prices, basis, per_group, resumed = [], {}, {}, 0
    for job in runs:
        group = (job.model, job.preset)
        if group not in per_group:
            past = _past_runs(runs_dir, *group, cache)
            price, text, scaled = _group_price(past, group[1])
            evaluations = [p[3] for p in past if p[3] is not None]
            evaluation = statistics.median(evaluations) if evaluations else 0.0
            per_group[group], basis[f"{group[0]}-{group[1]}"] = (price, scaled, evaluation), text
        price, scaled, evaluation = per_group[group]
        left = None if job.trained_from else resumed_price(job.run_dir, job.max_iters, evaluation)
        if left is not None:
            prices.append(left)
            resumed += 1
            continue
        work = None
        if scaled and job.max_iters and not job.trained_from:
            work = batch_gflops(load_config(job.base_config, job.overrides), cache)
        prices.append(price(job.max_iters, work) * (0.05 if job.trained_from else 1.0))
    if resumed:
        basis["resumed"] = f"{resumed} interrupted run(s) at their own s/step"
    cache.save()
    return prices, basis


def estimate(plan: Plan, runs: list[RunJob], costs: list[CostJob], workers: int = 1,
             executor: str = "local") -> Estimate:
    """Time of the missing work, from the machine times of finished runs of the same model
    and preset (else a default per preset) and of cached cost measurements."""
    prices, basis = price_runs(plan, runs)
    total = sum(prices)
    if costs:
        past = [d["seconds"] for d in map(read_cost, Path(plan.costs_dir).glob("*.json"))
                if d and d.get("seconds")]
        per = statistics.fmean(past) if past else DEFAULT_COST_SECONDS
        basis["costs"] = f"{_fmt_seconds(per)}/model" + (" (default)" if not past else "")
        total += per * len(costs)
    return Estimate(len(runs), len(costs), total / parallel_runs(executor, workers), workers, basis,
                    executor)


def within_budget(plan: Plan, runs: list[RunJob], seconds: float, workers: int = 1,
                  executor: str = "local") -> tuple[list[RunJob], list[RunJob]]:
    """Split the missing ``runs`` into (fits, later): in plan order (an evaluation-only run
    right after the training run it evaluates), each run whose estimated time still fits in
    ``seconds`` is taken; an evaluation-only run only with (or after) its training run. A
    bounded reproduction trains ``fits`` now and leaves ``later`` to the next one (the cache
    keeps what is done)."""
    pending = {j.config_hash for j in runs}
    evaluations: dict[str, list[RunJob]] = {}
    for j in runs:
        if j.depends_on in pending:
            evaluations.setdefault(j.depends_on, []).append(j)
    ordered = []  # each evaluation right after the training run it needs
    for j in runs:
        if j.depends_on not in pending:
            ordered += [j] + evaluations.get(j.config_hash, [])
    fits: list[RunJob] = []
    later: list[RunJob] = []
    used = 0.0
    chosen: set[str] = set()
    prices, _ = price_runs(plan, ordered)
    for job, price in zip(ordered, prices):
        cost = price / parallel_runs(executor, workers)
        dep_ready = (job.depends_on is None or job.depends_on in chosen
                     or plan.runs[job.depends_on].status() == "done")
        if dep_ready and used + cost <= seconds:
            fits.append(job)
            chosen.add(job.config_hash)
            used += cost
        else:
            later.append(job)
    return fits, later
