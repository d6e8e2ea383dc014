"""rtinst viz curve: training curves read from the runs' curve.json, figure and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from rtinst import viz  # noqa: E402
from rtinst.cli import main as cli_main  # noqa: E402
from rtinst.config import load_config  # noqa: E402
from rtinst.engine.train import run_training  # noqa: E402
from rtinst.errors import UserError  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs"


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory):
    """A smoke YOLACT run with one snapshot: a two-point curve written by the training."""
    run = tmp_path_factory.mktemp("curve") / "yolact"
    cfg = load_config(CONFIGS / "yolact" / "smoke.yaml",
                      ["model.backbone.pretrained=none", "train.snapshot_iters=[4]"])
    run_training(cfg, run, progress=False)
    return run


def test_curve_table_reads_the_points_the_training_wrote(curve_run):
    points = json.loads((curve_run / "curve.json").read_text())["points"]
    table = viz.curve_table([curve_run, curve_run], labels=["a", "b"])
    assert list(table["run"]) == ["a", "a", "b", "b"]
    assert list(table["iteration"][:2]) == [4, 10] == [p["iteration"] for p in points]
    assert list(table["ap"][:2]) == [p["ap"] for p in points]
    assert table["hardware"].iloc[0] == json.loads((curve_run / "record.json").read_text())[
        "provenance"]["hardware"]


def test_training_curve_figure_has_a_line_per_run_in_both_panels(curve_run):
    table = viz.curve_table([curve_run, curve_run], labels=["a", "b"])
    table.loc[table["run"] == "b", "ap"] += 1.0
    fig = viz.training_curve_figure(table, goal=15.0)
    minutes_ax, steps_ax = fig.axes
    *lines, goal = steps_ax.get_lines()  # the runs' lines, then the goal line
    assert [list(ln.get_xdata()) for ln in lines] == [[4, 10], [4, 10]]
    assert list(goal.get_ydata()) == [15.0, 15.0]
    assert list(lines[1].get_ydata()) == list(table[table["run"] == "b"]["ap"])
    assert any(list(ln.get_ydata()) == [15.0, 15.0] for ln in minutes_ax.get_lines())  # goal line
    assert [t.get_text() for t in minutes_ax.get_legend().get_texts()][0].startswith("a [")
    plt.close(fig)


def test_curve_errors_name_the_run_and_the_fix(curve_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(UserError, match=r"bare/curve.json: no training curve \(train with"):
        viz.curve_table([bare])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "curve.json").write_text("{}")
    with pytest.raises(UserError, match="broken/curve.json: not a curve file"):
        viz.curve_table([broken])
    with pytest.raises(UserError, match="1 labels for 2 runs"):
        viz.curve_table([curve_run, curve_run], labels=["x"])


def test_cli_viz_curve_writes_png_and_csv(curve_run, tmp_path, capsys):
    out = tmp_path / "fig"
    assert cli_main(["viz", "curve", "--run", str(curve_run), "--run", str(curve_run),
                     "--label", "one", "--label", "two", "--goal", "15", "--out", str(out)]) == 0
    assert (out / "training_curves.png").stat().st_size > 2000
    csv = (out / "training_curves.csv").read_text().splitlines()
    assert csv[0].startswith("minutes,iteration,ap") and len(csv) == 5
    assert cli_main(["viz", "curve", "--run", str(tmp_path), "--out", str(out)]) != 0
    assert "no training curve" in capsys.readouterr().err
