"""The papers' published tables: where the curated CSVs are, and how they are read.

Each spec's ``paper_csv`` names a CSV under the paper-tables folder: ``$RTINST_PAPER_TABLES``,
else ``../shared/paper_tables`` beside the repository (the curated source), else the copy
vendored in ``experiments/paper_tables/``. Cells are read as the strings they are (an empty
cell is ``''``); :func:`paper_numbers` is the numeric view of the metric columns.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd

from rtinst.errors import UserError

_REPO = Path(__file__).resolve().parents[2]
VENDORED_TABLES = _REPO / "experiments" / "paper_tables"
PAPER_TABLES_ENV = "RTINST_PAPER_TABLES"


class PaperTableError(UserError):
    """The paper-tables folder or one of its CSVs is missing; the message names which."""


def paper_tables_dir() -> Path:
    """The paper-tables folder: $RTINST_PAPER_TABLES, ../shared/paper_tables beside the repo
    (the curated source), or the copy vendored in experiments/paper_tables/."""
    env = os.environ.get(PAPER_TABLES_ENV)
    if env:
        if not Path(env).is_dir():
            raise PaperTableError(f"${PAPER_TABLES_ENV}={env}: not a folder")
        return Path(env)
    for candidate in (_REPO.parent / "shared" / "paper_tables", VENDORED_TABLES):
        if (candidate / "INDEX.md").is_file():
            return candidate
    raise PaperTableError(f"paper tables not found: set ${PAPER_TABLES_ENV} or restore {VENDORED_TABLES}")


@functools.lru_cache(maxsize=64)
def _read_csv(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_paper_csv(rel: str) -> pd.DataFrame:
    """The paper CSV as strings (empty cell = ''), exactly as curated."""
    path = paper_tables_dir() / rel
    if not path.is_file():
        raise PaperTableError(f"paper table {rel!r} not found under {paper_tables_dir()}")
    return _read_csv(str(path), path.stat().st_mtime).copy()


def paper_numbers(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Numeric view of the paper CSV's metric columns (empty -> NaN)."""
    out = pd.DataFrame(index=df.index)
    for c in columns:
        out[c] = pd.to_numeric(df[c], errors="coerce") if c in df else float("nan")
    return out
