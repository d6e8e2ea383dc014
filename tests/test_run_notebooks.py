"""The figure cells of committed run notebooks: drawn from the run's files, or a line saying
why not and how to re-create what is missing; refreshing them touches nothing else."""

import shutil
from pathlib import Path

import nbformat
import pytest

from rtinst import paths
from rtinst.harness.runner import execute_run, run_one
from rtinst.records import read_record
from rtinst.viz import run_report

REPO = Path(__file__).resolve().parents[1]
SMOKE = "rtinst/configs/yolact/smoke.yaml"


def _as_committed(run: Path) -> Path:
    """A run folder as the repository commits it: no checkpoints, no COCO results."""
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    (run / "coco_segm_results.json").unlink()
    return run


@pytest.fixture(scope="module")
def committed_run(tmp_path_factory) -> Path:
    """A trained smoke run (a few seconds), left as a committed run folder."""
    run = tmp_path_factory.mktemp("runs") / "yolact-smoke-x"
    assert run_one(SMOKE, [], run).status == "done"
    return _as_committed(run)


def test_committed_run_has_a_loss_curve_and_says_how_to_get_predictions(committed_run):
    fig = run_report.plot_loss_curve(committed_run)
    assert fig is not None and len(fig.axes[0].lines) >= 2  # total loss and its terms
    assert "loss" in [line.get_label() for line in fig.axes[0].lines]
    assert run_report.plot_predictions(committed_run) is None  # COCO results are not committed
    msg = run_report.explain_missing_predictions(committed_run)
    rel = paths.display(committed_run)
    assert f"rtinst train --config {rel}/config.yaml --run-dir {rel}" in msg
    threads = read_record(committed_run).provenance["torch_threads"]
    assert msg.count(f"OMP_NUM_THREADS={threads} ") == 1  # the thread count the run was recorded with


def test_a_run_without_log_rows_says_so(tmp_path):
    (tmp_path / "train_log.jsonl").write_text("")
    assert run_report.plot_loss_curve(tmp_path) is None
    assert "logged no training step" in run_report.explain_missing_loss_curve(tmp_path)


@pytest.mark.slow
def test_refresh_fills_the_figure_cells_and_changes_nothing_else(tmp_path):
    from rtinst.harness.run_notebooks import refresh_run_notebook

    run = tmp_path / "yolact-smoke-x"
    job = {"base_config": SMOKE, "overrides": [], "run_dir": str(run), "config_hash": "x"}
    assert execute_run(job, via_notebook=True)["status"] == "done"  # writes run.ipynb
    _as_committed(run)
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


def _notebook_cells(name: str) -> tuple[str, str]:
    """An analysis notebook's parameters cell and the cell that resolves and draws its runs."""
    nb = nbformat.read(REPO / "notebooks" / "analysis" / f"{name}.ipynb", 4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    i = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    draw = "\n".join(line for line in code[i + 1].source.splitlines()
                     if not line.startswith("%"))  # IPython magics: not Python
    return code[i].source, draw


def _expected_run_dirs(figure: str, runs_dir: Path) -> list[Path]:
    """The sweep's run folders of the figure's rows in experiments/analysis_runs.yaml."""
    import yaml

    from rtinst.harness.plan import plan_sweep
    from rtinst.harness.specs import load_specs

    data = yaml.safe_load((REPO / "experiments" / "analysis_runs.yaml").read_text())
    seed = data.get("seed", 0)
    out = []
    for row in data["figures"][figure]["rows"]:
        spec = load_specs([row["spec"]], presets=("tiny",))[0]
        plan = plan_sweep([spec], "tiny", seeds=[seed], runs_dir=runs_dir, cost_preset=None)
        out.append(Path(plan.runs_for(spec.id, row["row"])[seed].run_dir))
    return out


RENDERERS = {"iam": "render_iam", "prototypes": "render_prototypes", "queries": "render_queries"}
MODELS = {"iam": "sparseinst", "prototypes": "yolact", "queries": "fastinst"}


@pytest.mark.parametrize("name", ["iam", "prototypes", "queries"])
def test_analysis_notebooks_default_to_the_analysis_runs_of_their_preset(name, committed_run, tmp_path,
                                                                         monkeypatch, capsys):
    from rtinst.harness import analysis_runs
    from rtinst.viz import render

    params, draw = _notebook_cells(name)
    scope: dict = {}
    exec(params, scope)  # noqa: S102 - the notebook's own parameters cell
    key = "run_dirs" if name == "queries" else "run_dir"
    assert scope[key] is None and scope["preset"] == "tiny"  # defaults: analysis_runs.yaml's runs
    drawn = []
    monkeypatch.setattr(render, RENDERERS[name], lambda *a, **k: drawn.append(a[0]) or [])
    # Where the runs live is not the point: an empty runs folder gives the same run names.
    runs_dir = tmp_path / "runs"
    monkeypatch.setattr(analysis_runs, "run_dirs", lambda figure, preset, f=analysis_runs.run_dirs:
                        f(figure, preset, runs_dir=runs_dir))
    exec(draw, scope)  # noqa: S102 - the notebook's drawing cell, with its default parameters
    expected = _expected_run_dirs(name, runs_dir)
    assert [Path(p) for p in ([scope["run_dir"]] if key == "run_dir" else scope["run_dirs"])] == expected
    assert all(p.name.startswith(f"{MODELS[name]}-tiny-") for p in expected)
    # Not trained yet: one line per run saying so and how to list what to train, no figure.
    out = capsys.readouterr().out
    assert not drawn
    for run in expected:
        assert f"{run} has no run record: not trained yet (`rtinst sweep SPEC --preset PRESET " \
               f"--dry-run`" in out
    # Recorded, its checkpoint not committed: the command that re-creates it.
    shutil.copytree(committed_run, expected[0])
    exec(draw, {**scope, key: None})  # noqa: S102
    out = capsys.readouterr().out
    assert not drawn
    assert f"{expected[0]} has no checkpoint (checkpoints are not committed)" in out
    assert "re-create it with `OMP_NUM_THREADS=" in out and f"--run-dir {expected[0]}`" in out
