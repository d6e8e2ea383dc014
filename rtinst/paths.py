"""Where rtinst's relative paths point: the one rule for specs, configs, data roots, run and
results folders, whatever the current folder is.

A notebook's kernel starts in the notebook's own folder (JupyterLab opens
``notebooks/yolact/table2a_fast_nms.ipynb`` with the kernel in ``notebooks/yolact/``), a sweep
worker wherever it was launched: a relative path such as ``results/runs`` or
``data/synthetic`` must name the same folder from all of them, or a notebook silently builds
a second dataset and retrains into ``notebooks/yolact/results/``.

The rule:

- in a checkout (the package's parent folder holds ``pyproject.toml`` and ``experiments/``),
  relative paths resolve against that repository root;
- otherwise (rtinst installed from a wheel) against ``$RTINST_HOME`` when set, else the
  current folder - the folder holding a user's own ``experiments/``, ``data/`` and runs;
- ``$RTINST_HOME`` also overrides the checkout's root (e.g. to keep data and runs elsewhere);
- absolute paths are kept as they are.

Config values (``data.root``) are stored as written, so config hashes do not depend on where
the repository lives; they are resolved when used.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # rtinst/
HOME_ENV = "RTINST_HOME"


def checkout_root() -> Path | None:
    """The repository folder when rtinst runs from a checkout, else None."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "experiments").is_dir() else None


def base_dir() -> Path:
    """What relative paths resolve against (see the module doc)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve()
    return checkout_root() or Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """``path`` as an absolute path: kept when absolute, else under :func:`base_dir`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir() / p


def display(path: str | os.PathLike) -> str:
    """``path`` relative to :func:`base_dir` where it lies below it (short messages)."""
    p = Path(path)
    try:
        return p.resolve().relative_to(base_dir()).as_posix()
    except ValueError:
        return str(p)
