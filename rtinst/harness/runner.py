"""One run in its folder: locked, resumable, always recorded.

``execute_run`` is what a sweep worker runs for one job: under an exclusive lock on the run
folder (two sweeps sharing a cache wait for each other instead of computing a run twice) it
skips a ``done`` run, removes stray temp files of a killed attempt, then trains and evaluates
through papermill (``notebooks/run.ipynb``, kept beside the record) or directly
(``run_one``). The training loop resumes from the run's checkpoint; a run that fails -
however early - still leaves a ``failed`` record with its reason, and the caller goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

from rtinst import paths
from rtinst.errors import UserError
from rtinst.harness.external import build_detector, model_builder
from rtinst.harness.notebook_exec import execute_notebook
from rtinst.harness.params import parse_overrides
from rtinst.io import remove_stale_tmp
from rtinst.records import RECORD_NAME, RunRecord, read_record, write_record

RUN_NOTEBOOK = paths.PACKAGE_DIR.parent / "notebooks" / "run.ipynb"
LOCK_NAME = ".lock"


def run_status(run_dir: str | Path) -> str:
    """``done`` / ``failed`` / ``running`` (started or killed) / ``missing``."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return "missing"
    try:
        return read_record(path).status
    except UserError:
        return "missing"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """An exclusive lock on the run folder; released by the OS if the process dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_locked(run_dir: Path) -> bool:
    """Whether a process holds :func:`run_lock` on ``run_dir`` now (a run being trained)."""
    lock = Path(run_dir) / LOCK_NAME
    if not lock.is_file():
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def _clear_run(run_dir: Path) -> None:
    for p in run_dir.iterdir():
        if p.name == LOCK_NAME:
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _evaluation_weights(trained_from: Path, run_dir: Path) -> Path | None:
    """Give an evaluation-only run what it evaluates: the trained run's weights file as
    :func:`~rtinst.engine.compact.run_weights` picks it. Its checkpoint is hard-linked (else
    copied) into the run, whose loop then resumes at the end of training and only evaluates:
    returns None. Without one (checkpoints are not committed, so a sweep resumed on another
    machine has none) the committed compact ``model_fp16.pt`` is returned, for
    :func:`~rtinst.engine.checkpoint_eval.evaluate_checkpoint` (its float16 rounding moves
    the tiny YOLACT default's mask AP by 0.003)."""
    from rtinst.engine.compact import COMPACT, compact_path, last_checkpoint, run_weights
    from rtinst.engine.restore import recreate_command
    from rtinst.io import atomic_path

    dst = last_checkpoint(run_dir)
    if dst.exists():
        return None
    src = run_weights(trained_from)
    if src is None:
        record = read_record(trained_from) if (trained_from / RECORD_NAME).is_file() else None
        raise UserError(f"{paths.display(trained_from)}: the trained run has neither "
                        f"checkpoints/last.pt nor {COMPACT} to evaluate; re-create its checkpoint "
                        f"with `{recreate_command(trained_from, record)}`")
    if src == compact_path(trained_from):
        return src
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)
    return None


def failure_reason(exc: BaseException) -> str:
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

    run_dir, base_config = paths.resolve(run_dir), paths.resolve(base_config)
    overrides = parse_overrides(overrides)
    try:
        cfg = load_config(base_config, overrides)
        compact = _evaluation_weights(Path(trained_from), run_dir) if trained_from else None
        if compact is not None:
            from rtinst.engine import checkpoint_eval

            if model_builder() is not None:
                checkpoint_eval.build_model = build_detector
            # no latency: a trained row's record has none either (speed comes from costs/)
            record = checkpoint_eval.evaluate_checkpoint(cfg, compact, run_dir, progress=progress, latency=False)
            record.provenance["checkpoint"] = paths.display(compact)  # not machine-specific
        elif gpus > 1:
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
                train.build_model = build_detector
            record = train.run_training(cfg, run_dir, progress=progress)
    except Exception as e:  # Ctrl-C is not a failure: the run stays resumable
        _ensure_failed_record(base_config, overrides, run_dir, failure_reason(e))
        raise
    if trained_from and record.status == "done":
        record.artifacts["trained_in"] = paths.display(trained_from)  # not machine-specific
        write_record(record, run_dir)
    return record


# What every run notebook imports first: a new kernel does it while the worker loads papermill.
RUN_PRELOAD = ("rtinst.harness.runner", "torch", "torchvision")


def _run_notebook(job: dict, run_dir: Path, warm: bool = True) -> None:
    """Execute ``notebooks/run.ipynb`` for this run; keep it as ``run_dir/run.ipynb``."""
    out = run_dir / f".run.ipynb.{os.getpid()}.tmp"
    params = {"base_config": job["base_config"], "overrides": job["overrides"],
              "run_dir": str(run_dir), "trained_from": job.get("trained_from"),
              "gpus": job.get("gpus", 1)}
    try:
        execute_notebook(RUN_NOTEBOOK, out, params, warm=warm, preload=RUN_PRELOAD)
    finally:
        if out.exists():
            os.replace(out, run_dir / "run.ipynb")


def execute_run(job: dict, via_notebook: bool = True, fresh: bool = False) -> dict:
    """Run one job (a ``RunJob`` as a dict) unless its record is already ``done``.

    ``fresh`` clears the folder first (``--force``, or retrying a failed run). Never raises
    for a failed run: returns ``{"status": "failed", "error": ...}`` so the sweep goes on.
    """
    run_dir = paths.resolve(job["run_dir"])
    t0 = time.time()
    with run_lock(run_dir):
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
            error = failure_reason(e)
            _ensure_failed_record(job["base_config"], job["overrides"], run_dir, error)
        status = run_status(run_dir)
        if status != "done" and error is None:
            error = "the run ended without a done record"
        if status == "failed":
            error = read_record(run_dir).error or error
        return {"hash": job["config_hash"], "status": status, "error": error,
                "seconds": time.time() - t0}
