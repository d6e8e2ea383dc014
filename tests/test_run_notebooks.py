"""The figure cells of committed run notebooks: drawn from the run's files, or a line saying
why not and how to re-create what is missing; refreshing them touches nothing else."""

import shutil
from pathlib import Path

import nbformat
import pytest

from rtinst.viz import run_report

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "results" / "runs" / "yolact-tiny-2704d636eace"  # YOLACT Table 2b, k=32


def test_committed_run_has_a_loss_curve_and_says_how_to_get_predictions():
    fig = run_report.plot_loss_curve(RUN)
    assert fig is not None and len(fig.axes[0].lines) >= 2  # total loss and its terms
    assert run_report.plot_predictions(RUN) is None  # COCO results are not committed
    msg = run_report.explain_missing_predictions(RUN)
    assert ("rtinst train --config results/runs/yolact-tiny-2704d636eace/config.yaml "
            "--run-dir results/runs/yolact-tiny-2704d636eace") in msg
    assert msg.count("OMP_NUM_THREADS=2") == 1  # the thread count the run was recorded with


def test_a_run_without_log_rows_says_so(tmp_path):
    (tmp_path / "train_log.jsonl").write_text("")
    assert run_report.plot_loss_curve(tmp_path) is None
    assert "logged no training step" in run_report.explain_missing_loss_curve(tmp_path)


@pytest.mark.slow
def test_refresh_fills_the_figure_cells_and_changes_nothing_else(tmp_path):
    from rtinst.harness.run_notebooks import refresh_run_notebook

    run = tmp_path / RUN.name
    shutil.copytree(RUN, run)
    nb = nbformat.read(run / "run.ipynb", 4)
    for cell in nb.cells:  # as the committed notebooks were before: empty figure cells
        if "plot_loss_curve" in cell.source or "plot_predictions" in cell.source:
            cell.outputs = []
    nbformat.write(nb, run / "run.ipynb")
    others = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.ipynb"}
    assert refresh_run_notebook(run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.ipynb"} == others
    cells = {name: c for c in nbformat.read(run / "run.ipynb", 4).cells
             for name in ("plot_loss_curve", "plot_predictions") if name in c.source}
    assert any("image/png" in o.get("data", {}) for o in cells["plot_loss_curve"].outputs)
    text = "".join(o.get("text", "") for o in cells["plot_predictions"].outputs)
    assert "no coco_segm_results.json" in text and "rtinst train --config" in text


@pytest.mark.parametrize("name", ["iam", "prototypes", "queries"])
def test_analysis_notebooks_default_to_committed_runs(name):
    nb = nbformat.read(REPO / "notebooks" / "analysis" / f"{name}.ipynb", 4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    scope: dict = {}
    exec(params.source, scope)  # noqa: S102 - the notebook's own parameters cell
    runs = scope.get("run_dirs") or [scope["run_dir"]]
    for run in runs:
        assert (REPO / run / "record.json").is_file(), f"{name}.ipynb: default run {run} does not exist"
