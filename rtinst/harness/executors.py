"""Where sweep jobs run: ``local`` (a process pool), ``inline`` (this process, one at a
time) or ``submitit`` (SLURM; ``cluster="local"`` runs the jobs as local processes).
Each executor's ``submit(fn, *args)`` returns an object with ``done()`` and ``result()``."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from rtinst.errors import UserError

EXECUTORS = ("local", "inline", "submitit")


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
