"""A table notebook executed as JupyterLab runs it - the kernel in the notebook's own folder -
reuses the committed run records and cost files and writes nothing under notebooks/."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "yolact" / "table2a_fast_nms.ipynb"
COMMITTED_TABLE = REPO / "results" / "tables" / "tiny" / "yolact_table2a_fast_nms.csv"


def _untracked_or_changed(folder: Path) -> list[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored",
                          "--", str(folder)], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if "__pycache__" not in line]


def _record_times(table: Path) -> dict[str, float]:
    import pandas as pd

    hashes = {h for runs in pd.read_csv(table)["runs"].dropna() for h in str(runs).split()}
    return {p.parent.name: p.stat().st_mtime_ns for h in hashes
            for p in (REPO / "results" / "runs").glob(f"*-{h}/record.json")}


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the checkout's git status")
def test_table_notebook_in_its_own_folder_reuses_the_committed_cache(tmp_path):
    from rtinst.harness.notebook_exec import execute_notebook

    before = _untracked_or_changed(REPO / "notebooks")
    records = _record_times(COMMITTED_TABLE)
    assert len(records) == 2  # both implemented rows (YOLACT standard / fast NMS) are committed
    # papermill's own way to pass an override list: one string (here one that changes nothing)
    out = tmp_path / "executed.ipynb"
    execute_notebook(NOTEBOOK, out, {"results_dir": str(tmp_path / "results"), "run": True,
                                     "executor": "inline", "overrides": "seed=0"},
                     warm=False, cwd=NOTEBOOK.parent)
    assert _untracked_or_changed(REPO / "notebooks") == before  # no data/, results/ in there
    assert _record_times(COMMITTED_TABLE) == records  # no run retrained or re-recorded
    written = tmp_path / "results" / "tables" / "tiny" / "yolact_table2a_fast_nms.csv"
    assert written.read_bytes() == COMMITTED_TABLE.read_bytes()  # same runs, same costs
    assert not (tmp_path / "results" / "costs").exists()  # committed cost files were enough
