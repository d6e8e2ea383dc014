"""The plan of a sweep: specs -> one run job per (config, seed) and one cost job per model.

``plan_sweep`` resolves every implemented row of the given specs at a preset and seeds into
run jobs keyed by config hash (``RunConfig.seed`` is part of the hash), so identical configs
across tables - FastInst's D3 baseline appears in ten - are one run. Each run lives in
``<runs_dir>/<model>-<preset>-<hash>/`` (the folder ``rtinst train`` would use) and holds its
record, checkpoint and the executed ``run.ipynb``. Cost columns are one job per (model
config, input size) at paper scale, cached in ``<costs_dir>/<key>.json``.

``pending_runs`` / ``pending_costs`` say what of a plan is not cached yet; the estimates
(:mod:`rtinst.harness.estimates`) price it and the sweep (:mod:`rtinst.harness.sweep`)
executes it, both from these types.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from rtinst import paths
from rtinst.config import ConfigError
from rtinst.config_schema import DataConfig, RunConfig
from rtinst.data.difficulty import DEFAULT_DIFFICULTY, DIFFICULTIES, config_difficulty
from rtinst.errors import UserError
from rtinst.harness.costs import breakdown_missing, cost_key, latency_missing, read_cost, timing_device
from rtinst.harness.runner import run_status
from rtinst.harness.specs import SpecError
from rtinst.harness.table_spec import TableSpec, cost_size, row_base, row_config, row_overrides, trained_row
from rtinst.records import config_hash, run_dir_for


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

    # read-only: the committed measurement, used when ``path`` (this sweep's own) is not there
    shared: str | None = None

    def data(self) -> dict | None:
        return read_cost(self.path) or (read_cost(self.shared) if self.shared else None)

    def missing(self, device: str | None = None) -> bool:
        """``device``: where latency would be timed (default: this machine's, see timing_device)."""
        data = self.data()
        if data is None:
            return True
        if is_committed_cost(self.path):
            return False  # a committed measurement is kept (pending_costs(force=True) redoes it)
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


COMMITTED_COSTS = "results/costs"  # feed the committed tables: never rewritten unless forced


def is_committed_cost(path: str | Path) -> bool:
    """A cost file of the committed cache that exists: kept as measured (on the hardware its
    provenance names), not topped up with numbers of a busy or other machine."""
    p = paths.resolve(path)
    return p.is_file() and p.parent == paths.resolve(COMMITTED_COSTS)


def synthetic_folder(data: DataConfig) -> str:
    """The sub-folder of a user-given data folder that holds ``data``'s synthetic dataset:
    its sizes and seed, then its level unless ``hard`` and a short digest of the knobs that
    change the level (so the embedded dataset's folder keeps the name it always had)."""
    difficulty = config_difficulty(data)
    level = DIFFICULTIES[data.synthetic_difficulty]
    changed = {k: v for k, v in difficulty.describe().items()
               if k != "size" and v != level.describe()[k]}
    name = f"synthetic_{data.synthetic_train}x{data.synthetic_val}_{data.synthetic_size}px_s{data.synthetic_seed}"
    if data.synthetic_difficulty != DEFAULT_DIFFICULTY or changed:
        name += f"_{data.synthetic_difficulty}"
    if changed:
        name += "_" + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return name


def _data_root_override(cfg: RunConfig, data_root: str | None) -> list[str]:
    """``data.root`` for a user-given data folder. Synthetic datasets of other sizes, seeds or
    levels get their own sub-folder (ensure_synthetic refuses a folder made otherwise)."""
    if not data_root:
        return []
    if cfg.data.dataset == "synthetic":
        return [f"data.root={Path(data_root) / synthetic_folder(cfg.data)}"]
    return [f"data.root={data_root}"]


def _resolve(spec: TableSpec, row, preset: str, seed: int, data_root: str | None,
             overrides: list[str]) -> tuple[RunConfig, list[str]]:
    extra = [f"seed={seed}", *overrides]
    cfg = row_config(spec, row, preset, extra)
    if cfg.data.dataset == "synthetic":  # a bad level or knob fails the plan, not the run
        try:
            config_difficulty(cfg.data)
        except ConfigError as e:
            raise SpecError(f"{spec.where(row)}: {e} (at preset {preset})") from None
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
    runs_dir, costs_dir = paths.resolve(runs_dir), paths.resolve(costs_dir)  # not the cwd
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
                shared = paths.resolve(COMMITTED_COSTS) / f"{key}.json"
                job = plan.costs.setdefault(key, CostJob(
                    key, str(Path(costs_dir) / f"{key}.json"), str(row_base(spec, row, cost_preset)),
                    row_overrides(spec, row, cost_preset) + ["model.backbone.pretrained=none"], size,
                    shared=str(shared) if shared.parent != costs_dir else None))
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


def kept_costs(plan: Plan) -> list[CostJob]:
    """Committed cost files that lack what the plan asks (latency, breakdown) and are kept
    as they are: the caller says so, with the way out (--force, or another --results-dir)."""
    device = timing_device()
    out = []
    for c in plan.costs.values():
        data = read_cost(c.path) if is_committed_cost(c.path) else None
        if data and ((c.latency and latency_missing(data, device))
                     or (c.breakdown and breakdown_missing(data, device))):
            out.append(c)
    return out


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

