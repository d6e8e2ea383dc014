"""Where a number came from: machine, software versions, git commit.

Every run record and benchmark record carries ``provenance()`` so a number can always be
traced to the hardware, thread count and code that produced it.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=1)
def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The checked-out commit (with ``-dirty`` when the tree has changes), or None."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str = "cpu") -> str:
    """A human-readable hardware label, e.g. 'NVIDIA H100 80GB HBM3' or 'CPU: AMD EPYC ... (2 cores)'."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU: {_cpu_model()} ({os.cpu_count()} cores)"


def provenance(device: str = "cpu") -> dict:
    """Machine and software facts to attach to every record."""
    import numpy
    import torch
    import torchvision

    return {
        "hardware": hardware(device),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
    }
