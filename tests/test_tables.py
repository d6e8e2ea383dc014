"""Comparison tables on fake records: mean ± std, deltas, claim verdicts; reproduce end to end."""

import dataclasses
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from rtinst.harness import tables
from rtinst.harness.specs import load_spec
from rtinst.harness.table_spec import resolve_base_config
from rtinst.viz.table_plots import save_table_figure

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
paper: fastinst
table: t6a
title: "Table 6a (test)"
paper_csv: fastinst/table6a_decoder_layers.csv
model: fastinst
metrics: [ap, ap_s]
paper_cost_columns: [gflops, fps]
cost_metrics: [gflops, params_m]
baseline: D=3
tolerance: 0.5
rows:
  - {label: D=0, match: {decoder_layers: 0}, overrides: [model.decoder_layers=0]}
  - {label: D=1, match: {decoder_layers: 1}, overrides: [model.decoder_layers=1]}
  - {label: D=3, match: {decoder_layers: 3}}
  - {label: D=6, match: {decoder_layers: 6}, implemented: false}
claims:
  - {metric: ap, a: D=3, op: ">", b: D=1, text: "D3 > D1"}
  - {metric: ap, a: D=1, op: ">", b: D=0, text: "D1 > D0"}
  - {metric: ap_s, a: D=3, op: ">", b: D=0, text: "D3 > D0 small"}
  - {metric: ap, a: D=6, op: ">", b: D=3, text: "D6 > D3"}
  - {metric: gflops, a: D=3, op: ">", b: D=1, text: "D3 costs more"}
  - {metric: gflops, a: D=1, op: ">", b: D=0, text: "D1 costs more"}
plot: {x: decoder_layers, metrics: [ap, gflops]}
"""


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "t6a.yaml"
    path.write_text(SPEC)
    return load_spec(path, presets=("tiny",))


def fake_runs():
    ap = {"D=0": [10.0, 11.0, 12.0], "D=1": [20.0, 22.0, 24.0], "D=3": [21.0, 23.0, 25.0]}
    ap_s = {"D=0": [5.0, 5.0, 5.0], "D=1": [6.0, 6.0, 6.0], "D=3": [2.0, 2.0, 2.0]}
    rows = [{"label": lab, "seed": s, "status": "done", "error": None, "ap": ap[lab][s],
             "ap_s": ap_s[lab][s]} for lab in ap for s in range(3)]
    rows.append({"label": "D=3", "seed": 3, "status": "failed", "error": "non-finite loss at step 4",
                 "ap": None, "ap_s": None})
    return pd.DataFrame(rows)


def fake_costs():
    return pd.DataFrame([{"label": "D=0", "gflops": 50.0, "params_m": 30.0},
                         {"label": "D=1", "gflops": 58.0, "params_m": 31.0},
                         {"label": "D=3", "gflops": 74.0, "params_m": 34.0}])


def test_table_mean_std_delta_and_baseline(spec):
    t = tables.build_table(spec, fake_runs(), fake_costs(), preset="tiny").set_index("row")
    assert t.loc["D=1", "ours_ap_mean"] == pytest.approx(22.0)
    assert t.loc["D=1", "ours_ap_std"] == pytest.approx(2.0)
    assert t.loc["D=1", "ours_ap"] == "22.0 ± 2.0"
    assert t.loc["D=1", "paper_ap"] == 35.6 and t.loc["D=1", "delta_ap"] == pytest.approx(22.0 - 35.6)
    assert t.loc["D=1", "ours_ap_vs_base"] == pytest.approx(-1.0)  # vs D=3 (23.0)
    assert t.loc["D=1", "paper_ap_vs_base"] == pytest.approx(35.6 - 37.9)
    assert t.loc["D=3", "n_seeds"] == 3 and "1 failed: non-finite loss" in t.loc["D=3", "status"]
    assert t.loc["D=1", "ours_gflops"] == 58.0 and t.loc["D=1", "delta_gflops"] == pytest.approx(58.0 - 59.6)
    assert t.loc["D=1", "paper_fps"] == 48.8
    # Rows outside rtinst keep the paper's numbers.
    assert t.loc["D=6", "status"] == tables.NOT_IMPLEMENTED and t.loc["D=6", "paper_ap"] == 38.7
    assert math.isnan(t.loc["D=6", "ours_ap_mean"])


def test_claim_verdicts(spec):
    t = tables.build_table(spec, fake_runs(), fake_costs(), preset="tiny")
    c = tables.judge_claims(spec, t, preset="tiny").set_index("claim")
    # D3 - D1 = +1.0 but the seed noise is sqrt(2^2 + 2^2) = 2.83: within noise.
    assert c.loc["D3 > D1", "verdict"] == tables.WITHIN_NOISE
    assert c.loc["D3 > D1", "noise"] == pytest.approx(math.sqrt(8)) and c.loc["D3 > D1", "noise_basis"] == "seed std"
    assert c.loc["D1 > D0", "verdict"] == tables.REPRODUCED  # +11 >> noise
    assert c.loc["D3 > D0 small", "verdict"] == tables.NOT_REPRODUCED  # opposite, beyond noise
    assert c.loc["D6 > D3", "verdict"] == tables.NOT_IMPLEMENTED
    assert c.loc["D3 costs more", "verdict"] == tables.REPRODUCED
    assert c.loc["D3 costs more", "scale"] == "paper scale (cost)" and c.loc["D1 > D0", "scale"] == "tiny"
    assert c.loc["D3 > D1", "paper_diff"] == pytest.approx(2.3)
    # margin: our difference in noise units, in the claim's direction
    assert c.loc["D3 > D1", "margin"] == pytest.approx(1.0 / math.sqrt(8))
    assert c.loc["D3 > D0 small", "margin"] < -1 and c.loc["D1 > D0", "margin"] > 1
    assert math.isnan(c.loc["D6 > D3", "margin"])
    assert tables.margin("<", -1.0, 0.5) == pytest.approx(2.0)
    assert tables.margin("~", -0.3, 0.6) == pytest.approx(0.5)


def test_single_seed_uses_the_fixed_tolerance(spec):
    runs = fake_runs()
    one = runs[runs["seed"] == 0]  # D3 21.0, D1 20.0, D0 10.0
    c = tables.judge_claims(spec, tables.build_table(spec, one, None, "tiny"), "tiny").set_index("claim")
    assert c.loc["D3 > D1", "noise"] == 0.5 and c.loc["D3 > D1", "verdict"] == tables.REPRODUCED
    assert c.loc["D3 costs more", "verdict"] == tables.NO_DATA  # no cost measured
    assert tables.verdict("~", 0.3, 0.5) == tables.REPRODUCED
    assert tables.verdict("~", 0.7, 0.5) == tables.NOT_REPRODUCED
    assert tables.verdict("<", -1.0, 0.5) == tables.REPRODUCED
    assert tables.verdict(">", 0.2, 0.5) == tables.WITHIN_NOISE


def test_outputs_saved_as_csv_parquet_png(spec, tmp_path):
    t = tables.build_table(spec, fake_runs(), fake_costs(), preset="tiny")
    c = tables.judge_claims(spec, t, "tiny")
    paths = tables.save_outputs(spec, t, c, tmp_path / "results", "tiny")
    assert not paths["figure"].exists()  # the harness writes data; viz draws the figure
    result = tables.TableResult(spec, t, c, paths, "tiny")
    assert save_table_figure(result) == paths["figure"] == result.figure
    assert paths["csv"] == tmp_path / "results/tables/tiny/fastinst_t6a.csv"
    back = pd.read_parquet(paths["parquet"])
    assert list(back["row"]) == ["D=0", "D=1", "D=3", "D=6"]
    assert paths["figure"].stat().st_size > 1000
    saved = tables.load_saved(tmp_path / "results", "tiny")
    page = tables.claims_page(saved, "tiny")
    assert len(page) == 6 and set(page["table"]) == {"fastinst/t6a"}
    assert tables.verdict_counts(page).loc["fastinst", tables.REPRODUCED] == 3
    md = tables.claims_markdown(page, "tiny")
    # every claim on the page, each once, with its verdict on the same line
    for claim, verdict in zip(page["claim"], page["verdict"]):
        line = [ln for ln in md.splitlines() if f"| {claim} " in ln]
        assert len(line) == 1 and f"| {verdict} " in line[0], claim
    assert tables.claims_markdown(page.iloc[:0], "tiny").endswith("No claims saved yet.\n")
    view = tables.display_table(spec, t)
    assert {"paper_ap", "ours_ap", "delta_ap", "ours_gflops", "paper_gflops"} <= set(view.columns)


def test_reproduce_cached_only_trains_nothing_and_still_tabulates(tmp_path, capsys):
    """`--cached-only`: no run is trained, the accuracy cells say 0/1 done, costs are measured."""
    from rtinst.cli import main

    args = ["reproduce", "--preset", "smoke", "--tables", "yolact/table2a", "--executor", "inline",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--data-root", str(tmp_path / "data"), "--cost-preset", "smoke", "--cached-only"]
    assert main(args) == 0
    assert "2 run(s) without a record are not trained" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    t = pd.read_csv(tmp_path / "results/tables/smoke/yolact_table2a_fast_nms.csv").set_index("row")
    assert t.loc["YOLACT, fast", "status"] == "0/1 done" and pd.isna(t.loc["YOLACT, fast", "ours_ap"])
    assert t.loc["YOLACT, fast", "ours_gflops"] > 0
    assert (tmp_path / "results/summary.html").is_file()
    claims = (tmp_path / "results/tables/smoke/CLAIMS.md").read_text()
    assert claims.startswith("# Paper claims at preset smoke")
    saved = pd.read_csv(tmp_path / "results/tables/smoke/yolact_table2a_fast_nms_claims.csv")
    assert "## yolact/table2a" in claims and all(c in claims for c in saved["claim"])


def test_reproduce_budget_trains_only_what_fits_and_says_what_waits(tmp_path, capsys):
    from rtinst.cli import main

    args = ["reproduce", "--preset", "smoke", "--tables", "yolact/table2a", "--executor", "inline",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--data-root", str(tmp_path / "data"), "--cost-preset", "smoke", "--dry-run"]
    # smoke default: 20 s per training run, 1 s for the evaluation-only run of its weights
    assert main(args + ["--budget-minutes", "0.34"]) == 0
    assert "budget 0.34 min: training 1 run(s) now" in capsys.readouterr().err
    assert main(args + ["--budget-minutes", "0.36"]) == 0
    err = capsys.readouterr().err
    assert "training 2 run(s) now" in err and "0 run(s) stay missing" in err
    assert main(args + ["--budget-minutes", "-1"]) == 2
    assert "--budget-minutes must be >= 0" in capsys.readouterr().err


def test_reproduce_smoke_end_to_end(tmp_path):
    """`rtinst reproduce --preset smoke` on YOLACT Table 2a: a training run, an evaluation-only
    run (standard NMS on the Fast-NMS model), the table notebook and the HTML summary."""
    if not resolve_base_config("rtinst/configs/{model}/{preset}.yaml", "yolact", "smoke").is_file():
        pytest.skip("the YOLACT smoke preset is not there yet")
    from rtinst.cli import main

    os.environ.pop("RTINST_BUILD_MODEL", None)
    args = ["reproduce", "--preset", "smoke", "--tables", "yolact/table2a", "--executor", "inline",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--data-root", str(tmp_path / "data"), "--cost-preset", "smoke",
            "-o", "train.max_iters=2"]
    assert main(args) == 0
    res = tmp_path / "results"
    assert (res / "summary.html").stat().st_size > 10_000
    assert (res / "notebooks/yolact/table2a_fast_nms.ipynb").is_file()
    t = pd.read_csv(res / "tables/smoke/yolact_table2a_fast_nms.csv").set_index("row")
    assert t.loc["YOLACT, fast", "status"] == "1/1 done" and t.loc["YOLACT, standard", "status"] == "1/1 done"
    assert t.loc["Mask R-CNN, fast", "status"] == tables.NOT_IMPLEMENTED
    assert t.loc["YOLACT, fast", "ours_gflops"] > 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((r / "run.ipynb").is_file() for r in runs)
    # One run trains, the other only re-evaluates its checkpoint (its log stays empty); which
    # folder sorts first depends on the config hash, i.e. on tmp_path.
    log = "".join((r / "train_log.jsonl").read_text() for r in runs
                  if (r / "train_log.jsonl").is_file())
    assert "loss_box" in log and "loss_mask" in log  # YOLACT's losses, not a test toy's


def test_equality_of_near_zero_scores_or_of_one_shared_run_is_not_called_reproduced():
    spec7 = load_spec(REPO / "experiments/fastinst/table7_pos_embedding.yaml", ("tiny",))

    def judged(ap_learnable, ap_sinusoidal, hashes=("aaa", "bbb"), spec=spec7):
        runs = pd.DataFrame([{"label": label, "seed": 0, "status": "done", "error": None,
                              "config_hash": h, **{m: v for m in spec.metrics}}
                             for label, v, h in (("learnable", ap_learnable, hashes[0]),
                                                 ("sinusoidal", ap_sinusoidal, hashes[1]))])
        claims = tables.judge_claims(spec, tables.build_table(spec, runs, None, "tiny"), "tiny")
        return claims[claims["metric"] == "ap"].iloc[0]

    loose = dataclasses.replace(spec7, tolerance=2.0)
    near_zero = judged(1.2, 1.5, spec=loose)  # both within the noise of 0: "same AP" says nothing
    assert near_zero["verdict"] == tables.WITHIN_NOISE
    assert near_zero["noise_basis"].endswith("both values within the noise of 0")
    # a row below the spec's learned floor (1 AP) has not learned: no claim on it is judged
    untrained = judged(12.0, 0.52)
    assert untrained["verdict"] == tables.NOT_TESTABLE
    assert untrained["noise_basis"].endswith("sinusoidal below 1 AP: not learned at this preset")
    assert judged(0.44, 0.49)["verdict"] == tables.NOT_TESTABLE
    # learned values apart by less than the spec's one-seed tolerance: "same AP" holds
    assert judged(30.1, 30.1 + spec7.tolerance / 2)["verdict"] == tables.REPRODUCED
    assert judged(30.1, 32.0)["verdict"] == tables.NOT_REPRODUCED
    # both rows are one trained run at this preset: nothing to compare
    assert judged(30.1, 30.1, hashes=("aaa", "aaa"))["verdict"] == tables.NOT_TESTABLE
