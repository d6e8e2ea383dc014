"""A table notebook executed as JupyterLab runs it - the kernel in the notebook's own folder -
reuses the cached run records and the committed cost files and writes nothing under
notebooks/."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "yolact" / "table2a_fast_nms.ipynb"
TABLE = Path("tables") / "smoke" / "yolact_table2a_fast_nms.csv"


def _untracked_or_changed(folder: Path) -> list[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored",
                          "--", str(folder)], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if "__pycache__" not in line]


def _record_times(runs_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in runs_dir.glob("*/record.json")}


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the checkout's git status")
def test_table_notebook_in_its_own_folder_reuses_the_cached_runs(tmp_path):
    from rtinst.harness.notebook_exec import execute_notebook
    from rtinst.harness.tables import reproduce_table

    # The run cache: the table's smoke runs, trained here (seconds), costs from results/costs.
    runs_dir = tmp_path / "runs"
    first = reproduce_table("yolact/table2a_fast_nms", preset="smoke", executor="inline",
                            via_notebook=False, runs_dir=runs_dir, results_dir=tmp_path / "first",
                            log=None)
    assert not first.sweep.failed and first.sweep.costs_measured == 0
    records = _record_times(runs_dir)
    assert len(records) == 2  # both implemented rows (YOLACT standard / fast NMS)
    assert not (tmp_path / "first" / "costs").exists()  # committed cost files were enough
    before = _untracked_or_changed(REPO / "notebooks")
    # Relative, as the notebook's default runs_dir: it must resolve against the repository
    # root, not the kernel's folder.
    rel_runs = os.path.relpath(runs_dir, REPO)
    # papermill's own way to pass an override list: one string (here one that changes nothing)
    out = tmp_path / "executed.ipynb"
    execute_notebook(NOTEBOOK, out, {"preset": "smoke", "runs_dir": rel_runs,
                                     "results_dir": str(tmp_path / "results"), "run": True,
                                     "executor": "inline", "overrides": "seed=0"},
                     warm=False, cwd=NOTEBOOK.parent)
    assert _untracked_or_changed(REPO / "notebooks") == before  # no data/, results/ in there
    assert not (NOTEBOOK.parent / rel_runs).exists()  # the kernel's folder did not hold the cache
    assert _record_times(runs_dir) == records  # no run retrained or re-recorded
    written = tmp_path / "results" / TABLE
    assert written.read_bytes() == (tmp_path / "first" / TABLE).read_bytes()  # same runs, same costs
    assert not (tmp_path / "results" / "costs").exists()  # committed cost files were enough
