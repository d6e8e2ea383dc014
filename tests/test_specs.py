"""Experiment specs: every shipped spec validates; bad specs fail in one line before any run."""

import filecmp
import re
import subprocess
import sys

import pytest

from rtinst.cli import main
from rtinst.config import load_config
from rtinst.harness.paper_tables import PaperTableError, paper_tables_dir
from rtinst.harness.plan import plan_sweep
from rtinst.harness.specs import REPO_ROOT, SpecError, find_spec, list_specs, load_spec, load_specs
from rtinst.harness.table_spec import row_base, row_config, row_overrides
from rtinst.records import config_hash

GOOD = """\
paper: fastinst
table: t6a
title: test
paper_csv: fastinst/table6a_decoder_layers.csv
model: fastinst
metrics: [ap]
baseline: D=3
rows:
  - {label: D=1, match: {decoder_layers: 1}, overrides: [model.decoder_layers=1]}
  - {label: D=3, match: {decoder_layers: 3}}
claims:
  - {metric: ap, a: D=3, op: ">", b: D=1}
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_spec_validates_at_every_preset():
    specs = load_specs(presets=("smoke", "tiny", "coco"))
    assert len(specs) == 24
    assert {s.paper for s in specs} == {"fastinst", "sparseinst", "yolact"}
    for spec in specs:
        assert spec.rows and all(r.paper_row is not None for r in spec.rows)
        assert spec.baseline is None or spec.baseline in [r.label for r in spec.rows]


def test_vendored_paper_tables_match_the_shared_copy():
    vendored = REPO_ROOT / "experiments" / "paper_tables"
    shared = REPO_ROOT.parent / "shared" / "paper_tables"
    csvs = sorted(p.relative_to(vendored) for p in vendored.rglob("*.csv"))
    assert len(csvs) == 24
    if not shared.is_dir():
        pytest.skip("no ../shared/paper_tables beside the repo")
    for rel in csvs:
        assert filecmp.cmp(vendored / rel, shared / rel, shallow=False), rel


def test_paper_tables_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("RTINST_PAPER_TABLES", str(REPO_ROOT / "experiments" / "paper_tables"))
    assert paper_tables_dir() == REPO_ROOT / "experiments" / "paper_tables"
    monkeypatch.setenv("RTINST_PAPER_TABLES", str(tmp_path / "nope"))
    with pytest.raises(PaperTableError, match="RTINST_PAPER_TABLES"):
        paper_tables_dir()


def test_good_spec_and_row_config(tmp_path):
    spec = load_spec(write(tmp_path, GOOD), presets=("tiny", "coco"))
    d1 = spec.row("D=1")
    assert d1.paper_row == 1
    cfg = row_config(spec, d1, "tiny", ["seed=2"])
    assert cfg.model.decoder_layers == 1 and cfg.preset == "tiny" and cfg.seed == 2
    # The cached resolution is the same config (and hash) as load_config.
    direct = load_config(row_base(spec, d1, "tiny"), row_overrides(spec, d1, "tiny") + ["seed=2"])
    assert config_hash(direct) == config_hash(cfg)


@pytest.mark.parametrize("edit, message", [
    (("metrics: [ap]", "metrics: [ap]\nrow: []"), r"spec.yaml: unknown key 'row'; did you mean 'rows'\?"),
    (("overrides: [model.decoder_layers=1]", "overides: [model.decoder_layers=1]"),
     r"spec.yaml: row 'D=1': unknown key 'overides'; did you mean 'overrides'\?"),
    (("{decoder_layers: 1}", "{decoder_layers: 7}"),
     r"spec.yaml:\d+: row 'D=1': no paper row matches \{'decoder_layers': 7\} in fastinst/table6a"),
    (("{decoder_layers: 1}", "{decoder_layer: 1}"),
     r"row 'D=1': match column 'decoder_layer' is not in .*; did you mean 'decoder_layers'\?"),
    (("model.decoder_layers=1", "model.decoder_layer=1"),
     r"spec.yaml:\d+: row 'D=1': override 'model.decoder_layer=1': unknown key "
     r"'model.decoder_layer'; did you mean 'model.decoder_layers'\? \(on .*coco.yaml\)"),
    (("model.decoder_layers=1", "model.query_type=ia"),
     r"row 'D=1': .*model.query_type: invalid value 'ia'"),
    (('op: ">"', 'op: "<"'), r"claim .* does not hold in the paper"),
    (("b: D=1}", "b: D=2}"), r"claim .*unknown row 'D=2'"),
    (("metrics: [ap]", "metrics: [apx]"), r"unknown metric 'apx'"),
    (("baseline: D=3", "baseline: D=4"), r"baseline 'D=4' is not a row label"),
])
def test_bad_spec_is_a_one_line_error(tmp_path, edit, message):
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_eval_only_rows_may_only_change_inference(tmp_path):
    text = GOOD.replace("overrides: [model.decoder_layers=1]",
                        "eval_of: D=3, overrides: [model.decoder_layers=1]")
    with pytest.raises(SpecError, match="evaluation-only row may only change inference"):
        load_spec(write(tmp_path, text))


def test_cli_rejects_a_bad_spec_before_any_run(tmp_path, capsys):
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, GOOD.replace("model.decoder_layers=1", "model.decoder_layer=1"), "bad.yaml")
    runs = tmp_path / "runs"
    code = main(["sweep", str(good), str(bad), "--preset", "smoke", "--runs-dir", str(runs),
                 "--results-dir", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert re.search(r"bad.yaml:\d+: row 'D=1'", err) and "did you mean 'model.decoder_layers'" in err
    assert not runs.exists() and not (tmp_path / "res").exists()


def test_find_spec_by_name_prefix_and_typo():
    assert find_spec("fastinst/table6a").stem == "table6a_decoder_layers"
    with pytest.raises(SpecError, match="ambiguous"):
        find_spec("fastinst/table6")
    with pytest.raises(SpecError, match="did you mean 'yolact/table2a_fast_nms'"):
        find_spec("yolact/table2a_fastnms")


def test_identical_configs_across_tables_are_one_run(tmp_path):
    specs = load_specs(presets=("tiny",))
    plan = plan_sweep(specs, "tiny", [0, 1], tmp_path / "runs", tmp_path / "costs", cost_preset=None)
    baseline = config_hash(load_config(REPO_ROOT / "rtinst/configs/fastinst/tiny.yaml", ["seed=0"]))
    assert baseline in plan.runs
    tables = {u.split(":")[0] for u in plan.runs[baseline].used_by}
    assert len(tables) >= 10  # the D3 baseline: Tables 1-7 (at tiny, 6b/6c share it via N_a=50)
    assert len({r.run for r in plan.rows if r.run}) == len(plan.runs)  # seeds: distinct runs
    assert {j.seed for j in plan.runs.values()} == {0, 1}
    # YOLACT's standard-NMS row re-evaluates the fast-NMS model of the same seed.
    nms = [j for j in plan.runs.values() if j.trained_from]
    assert len(nms) == 2 and all(plan.runs[j.depends_on].seed == j.seed for j in nms)


def test_notebooks_are_generated_from_the_template():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "notebooks/_make_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for spec in list_specs():
        assert (REPO_ROOT / "notebooks" / spec.parent.name / f"{spec.stem}.ipynb").is_file()
