"""Sweeps: specs -> one run per (config, seed) -> records, cached, resumable, fanned out.

``plan_sweep`` resolves every implemented row of the given specs at a preset and seeds into
run jobs keyed by config hash (``RunConfig.seed`` is part of the hash), so identical configs
across tables - FastInst's D3 baseline appears in ten - are one run. Each run lives in
``<runs_dir>/<model>-<preset>-<hash>/`` (the folder ``rtinst train`` would use) and holds its
record, checkpoint and the executed ``run.ipynb``. Cost columns are one job per (model
config, input size) at paper scale, cached in ``<costs_dir>/<key>.json``.

``run_sweep`` executes what is missing:

- a run whose record says ``done`` is reused, never recomputed unless ``force``;
- a run whose record says ``failed`` keeps its reason and is not retried unless
  ``retry_failed`` (or ``force``); the sweep always continues past a failure;
- a run killed at any moment (``running`` record, checkpoint, stray ``*.tmp``) resumes from
  its checkpoint: every file is written atomically and stray temp files are removed first;
- a per-run file lock makes two sweeps over the same folder wait for each other instead of
  computing a run twice.

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

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from rtinst.config import RunConfig, config_hash
from rtinst.errors import UserError
from rtinst.experiments import RECORD_NAME, RunRecord, read_record, run_dir_for, write_record
from rtinst.io import atomic_write_json
from rtinst.specs import (
    REPO_ROOT, TableSpec, cost_size, row_base, row_config, row_overrides, trained_row,
)

RUN_NOTEBOOK = REPO_ROOT / "notebooks" / "run.ipynb"
EXECUTORS = ("local", "inline", "submitit")
# Seconds per run when no finished record of the same model and preset exists yet.
DEFAULT_RUN_SECONDS = {"smoke": 20.0, "tiny": 11 * 60.0, "coco": 2 * 86400.0, "custom": 11 * 60.0}
DEFAULT_COST_SECONDS = 20.0
LOCK_NAME = ".lock"
# "path/to/file.py:factory" or "package.module:factory": builds every detector of a sweep
# instead of rtinst.models.build_model (tests register a toy detector this way; it reaches
# the papermill kernels and pool workers through the environment).
BUILD_MODEL_ENV = "RTINST_BUILD_MODEL"


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

    def missing(self) -> bool:
        data = read_cost(self.path)
        if data is None:
            return True
        return (self.latency and "latency_ms" not in data) or (self.breakdown and "breakdown" not in data)


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


def cost_key(cfg: RunConfig, size: tuple[int, int]) -> str:
    return f"{cfg.model.name}-{config_hash(cfg.model)}-{size[0]}x{size[1]}"


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
                                 seed, gpus=gpus)
                    if row.eval_of:
                        tcfg, _ = _resolve(spec, trained_row(spec, row), preset, seed, data_root, overrides)
                        job.trained_from = str(run_dir_for(tcfg, runs_dir))
                        job.depends_on = config_hash(tcfg)
                    plan.runs[job.config_hash] = job
                job.used_by.append(where)
                plan.rows.append(PlannedRow(spec.id, row.label, seed, job.config_hash, key))
    return plan


# ----------------------------------------------------------------------------- status


def run_status(run_dir: str | Path) -> str:
    """``done`` / ``failed`` / ``running`` (started or killed) / ``missing``."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return "missing"
    try:
        return read_record(path).status
    except UserError:
        return "missing"


def read_cost(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pending_runs(plan: Plan, force: bool = False, retry_failed: bool = False) -> list[RunJob]:
    todo = []
    for job in plan.runs.values():
        status = job.status()
        if force or status in ("missing", "running") or (status == "failed" and retry_failed):
            todo.append(job)
    return todo


def pending_costs(plan: Plan, force: bool = False) -> list[CostJob]:
    return [c for c in plan.costs.values() if force or c.missing()]


# --------------------------------------------------------------------------- estimate


@dataclass
class Estimate:
    runs: int
    costs: int
    seconds: float
    workers: int
    basis: dict[str, str]

    def __str__(self) -> str:
        if not self.runs and not self.costs:
            return "nothing to compute: every run and cost is cached"
        basis = "; ".join(f"{k}: {v}" for k, v in self.basis.items())
        return (f"to compute: {self.runs} run(s) and {self.costs} cost measurement(s), about "
                f"{_fmt_seconds(self.seconds)} with {self.workers} worker(s) ({basis})")


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _past_run_seconds(runs_dir: Path, model: str, preset: str) -> list[float]:
    out = []
    for path in runs_dir.glob(f"{model}-{preset}-*/{RECORD_NAME}"):
        try:
            rec = read_record(path)
        except UserError:
            continue
        if rec.status == "done" and rec.wall_time_s and not rec.artifacts.get("trained_in"):
            out.append(float(rec.wall_time_s))
    return out


def estimate(plan: Plan, runs: list[RunJob], costs: list[CostJob], workers: int = 1) -> Estimate:
    """Time of the missing work, from the wall times of finished runs of the same model and
    preset (else a default per preset) and of cached cost measurements."""
    total, basis, per_group = 0.0, {}, {}
    for job in runs:
        group = (job.model, job.preset)
        if group not in per_group:
            past = _past_run_seconds(Path(plan.runs_dir), *group)
            if past:
                per_group[group] = statistics.fmean(past)
                basis[f"{group[0]}-{group[1]}"] = f"{_fmt_seconds(per_group[group])}/run from {len(past)} record(s)"
            else:
                per_group[group] = DEFAULT_RUN_SECONDS.get(group[1], DEFAULT_RUN_SECONDS["custom"])
                basis[f"{group[0]}-{group[1]}"] = f"{_fmt_seconds(per_group[group])}/run (default)"
        total += per_group[group] * (0.05 if job.trained_from else 1.0)
    if costs:
        past = [d["seconds"] for d in map(read_cost, Path(plan.costs_dir).glob("*.json"))
                if d and d.get("seconds")]
        per = statistics.fmean(past) if past else DEFAULT_COST_SECONDS
        basis["costs"] = f"{_fmt_seconds(per)}/model" + (" (default)" if not past else "")
        total += per * len(costs)
    return Estimate(len(runs), len(costs), total / max(1, workers), workers, basis)


# -------------------------------------------------------------------------- execution


def model_builder() -> Callable | None:
    """The detector factory named by $RTINST_BUILD_MODEL, or None (rtinst's own models)."""
    spec = os.environ.get(BUILD_MODEL_ENV)
    if not spec:
        return None
    import importlib
    import importlib.util

    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        mod_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def _build_model(model_cfg):
    builder = model_builder()
    if builder is not None:
        return builder(model_cfg)
    from rtinst.models import build_model

    return build_model(model_cfg)


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """An exclusive lock on the run folder; released by the OS if the process dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete the temp files a killed writer left (atomic writes use ``.<name>.*.tmp``)."""
    removed = []
    for p in Path(folder).rglob("*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _clear_run(run_dir: Path) -> None:
    for p in run_dir.iterdir():
        if p.name == LOCK_NAME:
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _link_checkpoint(trained_from: Path, run_dir: Path) -> None:
    """Give an evaluation-only run the trained run's checkpoint (hard link, else a copy).
    The loop then resumes at the end of training and only evaluates."""
    from rtinst.io import atomic_path

    src = trained_from / "checkpoints" / "last.pt"
    dst = run_dir / "checkpoints" / "last.pt"
    if dst.exists():
        return
    if not src.is_file():
        raise UserError(f"{src}: the trained run has no checkpoint to evaluate")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)


def _failure_reason(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)  # papermill's PapermillExecutionError
    if ename:
        return f"{ename}: {getattr(exc, 'evalue', '')}"
    return f"{type(exc).__name__}: {exc}"


def _ensure_failed_record(base_config: str, overrides: list[str], run_dir: Path, reason: str) -> None:
    """A run that died before ``run_training`` wrote its record still gets a failed record."""
    status = run_status(run_dir)
    if status == "failed":
        return
    from rtinst.config import load_config

    try:
        rec = read_record(run_dir) if status != "missing" else RunRecord.start(load_config(base_config, overrides))
    except UserError as e:  # the config itself is broken: record what we know
        rec = RunRecord(config={"base_config": base_config, "overrides": overrides},
                        config_hash=run_dir.name.rsplit("-", 1)[-1], error=str(e))
    write_record(rec.fail(reason), run_dir)


def run_one(base_config: str, overrides: list[str], run_dir: str | Path,
            trained_from: str | None = None, gpus: int = 1, progress: bool = False) -> RunRecord:
    """Train + evaluate one run in ``run_dir`` (what ``notebooks/run.ipynb`` calls).

    Always leaves a record: ``done``, or ``failed`` with the reason (then re-raises).
    """
    from rtinst.config import load_config, save_config

    run_dir = Path(run_dir)
    try:
        cfg = load_config(base_config, overrides)
        if trained_from:
            _link_checkpoint(Path(trained_from), run_dir)
        if gpus > 1:
            save_config(cfg, run_dir / "sweep_config.yaml")
            cmd = ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "rtinst", "train",
                   "--config", str(run_dir / "sweep_config.yaml"), "--run-dir", str(run_dir), "--quiet"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"torchrun exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
            record = read_record(run_dir)
        else:
            from rtinst.engine import train

            if model_builder() is not None:
                train.build_model = _build_model
            record = train.run_training(cfg, run_dir, progress=progress)
    except Exception as e:  # Ctrl-C is not a failure: the run stays resumable
        _ensure_failed_record(base_config, overrides, run_dir, _failure_reason(e))
        raise
    if trained_from and record.status == "done":
        record.artifacts["trained_in"] = str(trained_from)
        write_record(record, run_dir)
    return record


_WARM_KERNELS: dict[tuple, Any] = {}  # (kernel, cwd, env) -> a started kernel manager


def shutdown_kernels() -> None:
    from jupyter_core.utils import run_sync

    for km in list(_WARM_KERNELS.values()):
        with contextlib.suppress(Exception):
            run_sync(km.shutdown_kernel)(now=True)
    _WARM_KERNELS.clear()


def execute_notebook(input_path: str | Path, output_path: str | Path, parameters: dict,
                     warm: bool = True, cwd: str | Path | None = None) -> None:
    """papermill-execute ``input_path`` into ``output_path`` (written even when a cell fails).

    ``warm``: reuse this process's kernel across notebooks (started on first use, restarted
    if it died), so each notebook after the first skips the kernel start and the torch /
    pandas imports - the per-run papermill overhead drops from seconds to a fraction. Every
    notebook sets all of its variables from its parameters cell, so nothing leaks across.
    """
    import papermill
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class WarmKernelEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None,
                                     **kwargs):
            from jupyter_core.utils import run_sync
            from papermill.engines import logger

            # A kernel keeps the environment and folder it started with: reuse it only for
            # the same ones (else start a fresh kernel and retire the old one).
            key = (kernel_name, os.getcwd(), os.environ.get(BUILD_MODEL_ENV),
                   os.environ.get("CUDA_VISIBLE_DEVICES"))
            km = _WARM_KERNELS.get(key)
            if km is None and _WARM_KERNELS:
                shutdown_kernels()
            if km is not None and not run_sync(km.is_alive)():
                _WARM_KERNELS.pop(key)
                km = None
            client = PapermillNotebookClient(
                nb_man, km=km, timeout=execution_timeout, startup_timeout=start_timeout,
                kernel_name=kernel_name, log=logger, log_output=log_output,
                stdout_file=stdout_file, stderr_file=stderr_file)
            try:
                return client.execute(cleanup_kc=False)
            finally:
                if client.km is not None:
                    if not _WARM_KERNELS:
                        import atexit

                        atexit.register(shutdown_kernels)
                    _WARM_KERNELS[key] = client.km
                if client.kc is not None:
                    client.kc.stop_channels()

    if warm and "rtinst-warm" not in papermill_engines._engines:
        papermill_engines.register("rtinst-warm", WarmKernelEngine)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # papermill: output name not *.ipynb (a temp)
        papermill.execute_notebook(str(input_path), str(output_path), parameters=parameters,
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   cwd=str(cwd or os.getcwd()),
                                   engine_name="rtinst-warm" if warm else None)


def _run_notebook(job: dict, run_dir: Path, warm: bool = True) -> None:
    """Execute ``notebooks/run.ipynb`` for this run; keep it as ``run_dir/run.ipynb``."""
    out = run_dir / f".run.ipynb.{os.getpid()}.tmp"
    params = {"base_config": job["base_config"], "overrides": job["overrides"],
              "run_dir": str(run_dir), "trained_from": job.get("trained_from"),
              "gpus": job.get("gpus", 1)}
    try:
        execute_notebook(RUN_NOTEBOOK, out, params, warm=warm)
    finally:
        if out.exists():
            os.replace(out, run_dir / "run.ipynb")


def execute_run(job: dict, via_notebook: bool = True, fresh: bool = False) -> dict:
    """Run one job (a ``RunJob`` as a dict) unless its record is already ``done``.

    ``fresh`` clears the folder first (``--force``, or retrying a failed run). Never raises
    for a failed run: returns ``{"status": "failed", "error": ...}`` so the sweep goes on.
    """
    run_dir = Path(job["run_dir"]).resolve()
    t0 = time.time()
    with _run_lock(run_dir):
        status = run_status(run_dir)
        if status == "done" and not fresh:
            return {"hash": job["config_hash"], "status": "cached", "error": None, "seconds": 0.0}
        if fresh:
            _clear_run(run_dir)
        remove_stale_tmp(run_dir)
        error = None
        try:
            if via_notebook:
                _run_notebook(job, run_dir)
            else:
                run_one(job["base_config"], job["overrides"], run_dir, job.get("trained_from"),
                        job.get("gpus", 1))
        except Exception as e:  # noqa: BLE001 - a failed run is a result, not a crash
            error = _failure_reason(e)
            _ensure_failed_record(job["base_config"], job["overrides"], run_dir, error)
        status = run_status(run_dir)
        if status != "done" and error is None:
            error = "the run ended without a done record"
        if status == "failed":
            error = read_record(run_dir).error or error
        return {"hash": job["config_hash"], "status": status, "error": error,
                "seconds": time.time() - t0}


def measure_cost(job: dict) -> dict:
    """FLOPs and parameters (and latency / per-module breakdown when asked) of one model at
    paper scale, random weights, batch 1; cached as JSON. Latency is labelled CPU or GPU."""
    import warnings

    import torch

    from rtinst.config import load_config
    from rtinst.engine.bench import count_flops, count_params, measure_latency, module_breakdown
    from rtinst.provenance import provenance

    path = Path(job["path"])
    remove_stale_tmp_for(path)
    data = {} if job.get("force") else read_cost(path) or {}
    t0 = time.time()
    cfg = load_config(job["base_config"], job["overrides"])
    torch.manual_seed(0)
    model = _build_model(cfg.model).eval()
    image = torch.randn(1, 3, *job["input_size"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if "gflops" not in data:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings from data-dependent post-processing
            report = count_flops(model, image)
        data.update(gflops=report.gflops, params_m=count_params(model)["total_M"],
                    convention=report.convention, uncounted_ops=report.uncounted_ops,
                    input_size=list(job["input_size"]), model=cfg.model.name,
                    overrides=job["overrides"], provenance=provenance(device))
    if job.get("latency") and "latency_ms" not in data:
        rec = measure_latency(model, image, device=device, warmup=3, iters=10, progress=False)
        data.update(latency_ms=rec.mean_ms, fps=rec.fps, latency_kind=rec.kind,
                    latency_hardware=rec.provenance.get("hardware"))
    if job.get("breakdown") and "breakdown" not in data:
        parts = {n: n for n, _ in model.named_children() if "criterion" not in n and "loss" not in n}
        rec = module_breakdown(model, image, modules=parts, device=device, warmup=2, iters=5,
                               progress=False)
        data["breakdown"] = {"kind": rec.kind, "total_ms": rec.total_ms, "ms": rec.parts_ms,
                             "pct": rec.parts_pct, "hardware": rec.provenance.get("hardware")}
    data["seconds"] = data.get("seconds", 0.0) + time.time() - t0
    atomic_write_json(path, data)
    return {"key": job["key"], "status": "done", "seconds": time.time() - t0}


def remove_stale_tmp_for(path: Path) -> None:
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _safe_cost(job: dict) -> dict:
    try:
        return measure_cost(job)
    except Exception as e:  # noqa: BLE001 - a model that cannot be built is reported, not fatal
        return {"key": job["key"], "status": "failed", "error": _failure_reason(e)}


# -------------------------------------------------------------------------- executors


def _worker_init(parent: int, threads: int | None) -> None:
    """Pool workers exit when the sweep that started them dies (kill -9 included), so a
    resumed sweep never races an orphan; their papermill kernels follow (ipykernel polls its
    parent too). With several workers on one machine each gets its share of the CPU threads
    (inherited by its kernels) instead of all of them fighting over every core."""
    if threads and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)

    def loop():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=loop, daemon=True).start()


class _InlineFuture:
    def __init__(self, fn: Callable, args: tuple):
        self._fn, self._args, self._value = fn, args, None
        self._ran = False

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if not self._ran:
            self._value, self._ran = self._fn(*self._args), True
        return self._value


class Executor:
    """``submit(fn, *args)`` -> an object with ``done()`` and ``result()``."""

    def __init__(self, kind: str = "local", workers: int = 1, folder: str | Path = "results/submitit",
                 submitit_params: dict | None = None):
        if kind not in EXECUTORS:
            raise UserError(f"--executor: unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
        self.kind, self.workers = kind, max(1, int(workers))
        self._pool = None
        if kind == "local":
            import concurrent.futures
            import multiprocessing

            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(), max(1, (os.cpu_count() or 1) // self.workers) if self.workers > 1 else None))
        elif kind == "submitit":
            import submitit

            params = dict(submitit_params or {})
            cluster = params.pop("cluster", None)
            self._pool = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            params.setdefault("timeout_min", 60 * 24)
            self._pool.update_parameters(**params)

    def submit(self, fn: Callable, *args: Any):
        if self.kind == "inline":
            return _InlineFuture(fn, args)
        return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        if self.kind == "local" and self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------ sweep


@dataclass
class SweepResult:
    plan: Plan
    cached: int = 0
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # hash -> reason
    skipped: dict[str, str] = field(default_factory=dict)
    failed_before: dict[str, str] = field(default_factory=dict)  # recorded failed, not retried
    costs_measured: int = 0
    costs_failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        before = (f", {len(self.failed_before)} failed before (not retried: --retry-failed)"
                  if self.failed_before else "")
        lines = [f"{len(self.plan.runs)} run(s): {self.cached} cached, {len(self.ran)} ran, "
                 f"{len(self.failed)} failed{before}; {len(self.plan.costs)} cost model(s): "
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
              announce: bool = True) -> SweepResult:
    """Execute the plan's missing runs and cost measurements; return what happened.
    ``announce``: log the time estimate before starting (callers that printed it: False)."""
    t0 = time.time()
    log = log or (lambda _msg: None)
    result = SweepResult(plan)
    todo = pending_runs(plan, force, retry_failed)
    costs = pending_costs(plan, force)
    result.cached = len(plan.runs) - len(todo)
    todo_hashes = {j.config_hash for j in todo}
    result.failed_before = {h: read_record(j.run_dir).error or "" for h, j in plan.runs.items()
                            if h not in todo_hashes and j.status() == "failed"}
    result.cached -= len(result.failed_before)
    if not todo and not costs:
        result.seconds = time.time() - t0
        return result
    if announce:
        log(str(estimate(plan, todo, costs, workers)))
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
                    out = {"status": "failed", "error": _failure_reason(e)}
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

