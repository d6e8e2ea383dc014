"""The committed tables re-render byte for byte from the committed records and cost files.

``rtinst reproduce --preset tiny --cached-only`` trains nothing: it re-tabulates every paper
table from ``results/runs`` and ``results/costs``, executes the table notebooks and redraws
the figures. Run on copies of those folders, every CSV, parquet file, claims page and table
figure must equal the committed one (the executed notebooks and summary.html embed run
times and are not compared). A change of a config hash, of the table code or of a plot
shows here as a named file.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_cached_tiny_rerender_is_byte_identical(tmp_path):
    if not (RESULTS / "runs").is_dir() or not (RESULTS / "tables" / "tiny").is_dir():
        pytest.skip("no committed runs or tables")
    runs, out = tmp_path / "runs", tmp_path / "results"
    shutil.copytree(RESULTS / "runs", runs)
    shutil.copytree(RESULTS / "costs", out / "costs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "rtinst", "reproduce", "--preset", "tiny", "--cached-only",
         "--runs-dir", str(runs), "--results-dir", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for folder in ("tables/tiny", "figures/tiny"):
        committed, rendered = RESULTS / folder, out / folder
        written = _files(rendered)
        assert written, f"{folder}: nothing rendered"
        assert written <= _files(committed), f"{folder}: not committed: {sorted(written - _files(committed))}"
        # own ablations (own_*) are tabulated by their own benchmarks, not by `reproduce` (all)
        assert all(Path(f).name.startswith("own_") for f in _files(committed) - written), folder
        _, differ, errors = filecmp.cmpfiles(committed, rendered, sorted(written), shallow=False)
        assert not differ and not errors, f"{folder}: differ from the committed files: {differ + errors}"
