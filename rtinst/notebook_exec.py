"""papermill execution of rtinst's notebooks, with a warm kernel reused across notebooks.

The sweep runs every training through ``notebooks/run.ipynb`` and ``rtinst reproduce``
executes one notebook per table: starting a kernel and importing torch/pandas each time
costs seconds per notebook, so this process keeps one kernel per (folder, environment)
alive and papermill reuses it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from rtinst.external import BUILD_MODEL_ENV

# A kernel keeps the environment it started with: these variables are part of its identity.
KERNEL_ENV = (BUILD_MODEL_ENV, "CUDA_VISIBLE_DEVICES", "PYTHONPATH")

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
            key = (kernel_name, os.getcwd(), *(os.environ.get(v) for v in KERNEL_ENV))
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
