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

from rtinst.external import BUILD_MODEL_ENV

# A kernel keeps the environment it started with: these variables are part of its identity.
KERNEL_ENV = (BUILD_MODEL_ENV, "CUDA_VISIBLE_DEVICES", "PYTHONPATH")

_WARM_KERNELS: dict[tuple, Any] = {}  # (kernel, cwd, env) -> a started kernel manager


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


def shutdown_kernels() -> None:
    for km in list(_WARM_KERNELS.values()):
        _shutdown(km)
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

    class KernelEngine(NBClientEngine):
        """papermill's nbclient engine with rtinst's kernels: IPC, and kept warm if asked."""

        keep_warm = True

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None,
                                     **kwargs):
            from jupyter_core.utils import run_sync
            from papermill.engines import logger

            # A kernel keeps the environment and folder it started with: reuse it only for
            # the same ones (else start a fresh kernel and retire the old one).
            key = (kernel_name, os.getcwd(), *(os.environ.get(v) for v in KERNEL_ENV))
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
                    if not _WARM_KERNELS:
                        import atexit

                        atexit.register(shutdown_kernels)
                    _WARM_KERNELS[key] = km
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
                                   cwd=str(cwd or os.getcwd()),
                                   engine_name="rtinst-warm" if warm else "rtinst-fresh")
