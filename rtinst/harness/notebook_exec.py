"""papermill execution of rtinst's notebooks, with a warm kernel reused across notebooks.

The sweep runs every training through ``notebooks/run.ipynb`` and ``rtinst reproduce``
executes one notebook per table: starting a kernel and importing torch/pandas each time
costs seconds per notebook, so this process keeps one kernel per (folder, environment)
alive and papermill reuses it.

Kernels talk over IPC sockets in a private (0700) temp folder rather than TCP on localhost:
no port open to other local users' plain-text traffic, and no ipykernel warning about it on
every notebook of a sweep (TCP only where IPC does not exist, on Windows).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rtinst.harness.external import BUILD_MODEL_ENV

# A kernel keeps the environment it started with: these variables are part of its identity.
KERNEL_ENV = (BUILD_MODEL_ENV, "CUDA_VISIBLE_DEVICES", "PYTHONPATH")

_WARM_KERNELS: dict[tuple, Any] = {}  # (kernel, cwd, env) -> a started kernel manager
_AT_EXIT: list[bool] = []  # whether shutdown_kernels is registered with atexit


def _kernel_manager(kernel_name: str) -> Any:
    """A not yet started kernel manager (nbclient's default class) on IPC sockets in its own
    temp folder, removed again by :func:`_shutdown`."""
    from jupyter_client.manager import AsyncKernelManager

    if os.name == "nt":
        return AsyncKernelManager(kernel_name=kernel_name)
    folder = tempfile.mkdtemp(prefix="rtinst-kernel-")
    return AsyncKernelManager(kernel_name=kernel_name, transport="ipc",
                              ip=os.path.join(folder, "kernel"))


def _shutdown(km: Any) -> None:
    from jupyter_core.utils import run_sync

    with contextlib.suppress(Exception):
        run_sync(km.shutdown_kernel)(now=True)
    if km.transport == "ipc":
        shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)


def _keep_warm(key: tuple, km: Any) -> None:
    if not _AT_EXIT:
        import atexit

        atexit.register(shutdown_kernels)
        _AT_EXIT.append(True)
    _WARM_KERNELS[key] = km


def shutdown_kernels() -> None:
    for km in list(_WARM_KERNELS.values()):
        _shutdown(km)
    _WARM_KERNELS.clear()


def _kernel_key(kernel_name: str, cwd: str) -> tuple:
    # A kernel keeps the environment and folder it started with: reused only for the same ones.
    return (kernel_name, os.path.realpath(cwd), *(os.environ.get(v) for v in KERNEL_ENV))


def _prestart_kernel(kernel_name: str, cwd: str, preload: tuple[str, ...]) -> None:
    """Start this folder's warm kernel now, importing ``preload`` as it starts, unless it
    runs already: its start-up then overlaps this process's papermill import and notebook
    reading instead of following them (the first notebook of a process pays less)."""
    from jupyter_core.utils import run_sync

    key = _kernel_key(kernel_name, cwd)
    if key in _WARM_KERNELS:
        return
    shutdown_kernels()  # one warm kernel per process: a new folder / environment retires the old
    km = _kernel_manager(kernel_name)
    lines = [f"--IPKernelApp.exec_lines=import {module}" for module in preload]
    run_sync(km.start_kernel)(cwd=cwd, extra_arguments=lines)
    _keep_warm(key, km)


def execute_notebook(input_path: str | Path, output_path: str | Path, parameters: dict,
                     warm: bool = True, cwd: str | Path | None = None,
                     preload: tuple[str, ...] = ()) -> None:
    """papermill-execute ``input_path`` into ``output_path`` (written even when a cell fails).

    ``warm``: reuse this process's kernel across notebooks (started on first use, restarted
    if it died), so each notebook after the first skips the kernel start and the torch /
    pandas imports - the per-run papermill overhead drops from seconds to a fraction. Every
    notebook sets all of its variables from its parameters cell, so nothing leaks across.
    ``preload``: modules a new warm kernel imports while it starts (before papermill is
    even imported here), e.g. ``("torch",)``.
    """
    cwd = str(cwd or os.getcwd())
    if warm:
        _prestart_kernel("python3", cwd, preload)
    import papermill
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class KernelEngine(NBClientEngine):
        """papermill's nbclient engine with rtinst's kernels: IPC, and kept warm if asked."""

        keep_warm = True

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None,
                                     **kwargs):
            from jupyter_core.utils import run_sync
            from papermill.engines import logger

            key = _kernel_key(kernel_name, os.getcwd())  # papermill has chdir'd to cwd
            km = _WARM_KERNELS.pop(key, None) if cls.keep_warm else None
            if km is None and _WARM_KERNELS:
                shutdown_kernels()
            if km is not None and not run_sync(km.is_alive)():
                _shutdown(km)
                km = None
            km = km or _kernel_manager(kernel_name)
            client = PapermillNotebookClient(
                nb_man, km=km, timeout=execution_timeout, startup_timeout=start_timeout,
                kernel_name=kernel_name, log=logger, log_output=log_output,
                stdout_file=stdout_file, stderr_file=stderr_file)
            try:
                return client.execute(cleanup_kc=False)
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()
                if cls.keep_warm:
                    _keep_warm(key, km)
                else:
                    _shutdown(km)

    class FreshKernelEngine(KernelEngine):
        keep_warm = False

    for name, engine in (("rtinst-warm", KernelEngine), ("rtinst-fresh", FreshKernelEngine)):
        if name not in papermill_engines._engines:
            papermill_engines.register(name, engine)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # papermill: output name not *.ipynb (a temp)
        papermill.execute_notebook(str(input_path), str(output_path), parameters=parameters,
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   cwd=cwd,
                                   engine_name="rtinst-warm" if warm else "rtinst-fresh")
