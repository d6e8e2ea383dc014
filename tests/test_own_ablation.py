"""Own ablations: specs without a paper CSV (a table no paper printed), end to end."""

import os
from pathlib import Path

import pandas as pd
import pytest

from rtinst.harness import tables
from rtinst.harness.specs import SpecError, find_spec, list_specs, load_spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "experiments" / "examples" / "yolact_fpn_width.yaml"

OWN = """\
paper: own
table: t
model: yolact
rows:
  - {{label: A, overrides: [model.fpn_channels=32]}}
  - {{label: B, overrides: [model.fpn_channels=64]{extra}}}
plot: {{x: model.fpn_channels}}
"""


def write(tmp_path, text=OWN, **fmt):
    path = tmp_path / "own.yaml"
    path.write_text(text.format(**{"extra": "", **fmt}))
    return path


def test_the_example_is_a_valid_own_ablation_outside_all():
    spec = load_spec(find_spec("examples/yolact_fpn_width"), presets=("smoke", "tiny", "coco"))
    assert spec.paper_csv is None and spec.id == "own/yolact_fpn_width"
    assert all(r.paper_row is None for r in spec.rows)
    assert EXAMPLE not in list_specs() and len(list_specs()) == 24  # `all` = the paper tables


@pytest.mark.parametrize("row_extra, message", [
    (", match: {fpn: 64}", "row 'B': 'match' needs the spec's paper_csv"),
    (", paper_row: 1", "row 'B': 'paper_row' needs the spec's paper_csv"),
    (", implemented: false", "row 'B': 'implemented: false' rows show a paper's numbers"),
])
def test_paper_row_keys_without_a_paper_csv_are_one_line_errors(tmp_path, row_extra, message):
    with pytest.raises(SpecError, match=message) as e:
        load_spec(write(tmp_path, extra=row_extra), presets=("smoke",))
    assert "own.yaml" in str(e.value) and "\n" not in str(e.value)


def test_plot_x_must_be_a_key_every_row_sets(tmp_path):
    text = OWN.replace("model.fpn_channels=64", "train.lr=0.002")
    with pytest.raises(SpecError, match="row 'B': plot.x 'model.fpn_channels' must be a config key"):
        load_spec(write(tmp_path, text), presets=("smoke",))
    text = OWN + "paper_cost_columns: [fps]\n"  # nothing to show beside it
    with pytest.raises(SpecError, match="'fps' is not a cost column of a spec without paper_csv"):
        load_spec(write(tmp_path, text), presets=("smoke",))


def test_own_ablation_through_its_notebook_at_smoke(tmp_path):
    """notebooks/ablation.ipynb on the example spec: three YOLACT smoke runs, our numbers with
    empty paper columns, claims judged on ours, the plot, and kept out of the paper summary."""
    from rtinst.harness.notebook_exec import execute_notebook, shutdown_kernels

    os.environ.pop("RTINST_BUILD_MODEL", None)
    res = tmp_path / "results"
    params = {"spec": str(EXAMPLE), "preset": "smoke", "executor": "inline", "via_notebook": False,
              "runs_dir": str(tmp_path / "runs"), "results_dir": str(res), "cost_preset": "smoke",
              "overrides": ["train.max_iters=2"], "data_root": str(tmp_path / "data")}
    try:
        execute_notebook(REPO / "notebooks" / "ablation.ipynb", tmp_path / "ablation.ipynb", params,
                         cwd=REPO)
    finally:
        shutdown_kernels()
    t = pd.read_csv(res / "tables/smoke/own_yolact_fpn_width.csv").set_index("row")
    assert list(t.index) == ["FPN 32", "FPN 64", "FPN 128"]
    assert (t["status"] == "1/1 done").all() and t["ours_ap_mean"].notna().all()
    assert t["paper_ap"].isna().all() and t["delta_ap"].isna().all()
    g = t["ours_gflops"]
    assert g["FPN 32"] < g["FPN 64"] < g["FPN 128"]  # each width measured, not one model
    assert t.loc["FPN 64", "ours_gflops_vs_base"] == 0
    claims = pd.read_csv(res / "tables/smoke/own_yolact_fpn_width_claims.csv").set_index("claim")
    assert claims.loc["width costs FLOPs", "verdict"] == tables.REPRODUCED
    assert claims["paper_diff"].isna().all()
    assert (res / "figures/smoke/own_yolact_fpn_width.png").stat().st_size > 5_000
    assert tables.load_saved(res, "smoke") == {}  # not a paper claim
    assert "own/yolact_fpn_width" in tables.load_saved(res, "smoke", papers=None)
