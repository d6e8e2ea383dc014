"""noise_from: one-seed claims judged against the seed noise of recorded seed-noise runs."""

import math
from pathlib import Path

import pandas as pd
import pytest

from rtinst.config import save_config, to_dict
from rtinst.harness import tables
from rtinst.harness.claim_noise import load_references, reference_noise
from rtinst.harness.specs import SpecError, load_spec
from rtinst.harness.table_spec import row_config
from rtinst.records import RunRecord, config_hash, run_dir_for, write_record

NOISE_A = """\
paper: own
table: noise_a
model: yolact
metrics: [ap, ap_s]
cost_metrics: []
baseline: base
rows:
  - {label: base, overrides: []}
"""
NOISE_B = NOISE_A.replace("noise_a", "noise_b").replace("overrides: []", "overrides: [model.fpn_channels=32]")

TABLE = """\
paper: own
table: judged
model: yolact
metrics: [ap, ap_s]
cost_metrics: []
tolerance: 0.05
noise_from: {noise_from}
baseline: small
rows:
  - {{label: small, overrides: [model.fpn_channels=32]}}
  - {{label: wide, overrides: [model.fpn_channels=64]}}
claims:
  - {{metric: ap, a: wide, op: ">", b: small, text: one}}
  - {{metric: ap, a: wide, op: ">", b: small, text: two, noise_from: [{noise_from}, {other}]}}
  - {{metric: ap, a: wide, op: ">", b: small, text: floor, tolerance: 5.0}}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_seeds(runs: Path, spec, aps: list[float], preset: str = "smoke") -> None:
    """Done records of the spec's baseline row, one per seed, as a sweep leaves them."""
    row = spec.row(spec.baseline)
    for seed, ap in enumerate(aps):
        cfg = row_config(spec, row, preset, [f"seed={seed}"])
        folder = run_dir_for(cfg, runs)
        save_config(cfg, folder / "config.yaml")
        write_record(RunRecord(config=to_dict(cfg), config_hash=config_hash(cfg), status="done",
                               metrics={"ap": ap, "ap_s": ap / 2}, provenance={}), folder)


@pytest.fixture()
def setup(tmp_path):
    a = load_spec(write(tmp_path / "noise_a.yaml", NOISE_A), presets=("smoke",))
    b = load_spec(write(tmp_path / "noise_b.yaml", NOISE_B), presets=("smoke",))
    spec = load_spec(write(tmp_path / "judged.yaml", TABLE.format(
        noise_from=tmp_path / "noise_a.yaml", other=tmp_path / "noise_b.yaml")), presets=("smoke",))
    return tmp_path, a, b, spec


def one_seed_table(spec, small: float, wide: float) -> pd.DataFrame:
    runs = pd.DataFrame([{"label": "small", "seed": 0, "status": "done", "error": None, "ap": small,
                          "ap_s": small / 2, "config_hash": "s"},
                         {"label": "wide", "seed": 0, "status": "done", "error": None, "ap": wide,
                          "ap_s": wide / 2, "config_hash": "w"}])
    return tables.build_table(spec, runs, None, "smoke")


def test_one_seed_claim_uses_sqrt2_times_the_referenced_seed_std(setup):
    tmp_path, a, b, spec = setup
    fake_seeds(tmp_path / "runs", a, [10.0, 11.0, 12.0])  # std 1.0
    fake_seeds(tmp_path / "runs", a, [0.0], preset="tiny")  # another preset: not counted
    refs = load_references(spec, "smoke", tmp_path / "runs")
    ref = refs[str(tmp_path / "noise_a.yaml")]
    assert ref.spec == "own/noise_a" and ref.seeds("ap") == 3 and ref.std["ap"] == pytest.approx(1.0)
    assert ref.std["ap_s"] == pytest.approx(0.5)
    # a difference of 1.2: beyond the fixed 0.05, within sqrt(2) x 1.0 = 1.41 (not within 1.0)
    claims = tables.judge_claims(spec, one_seed_table(spec, 20.0, 21.2), "smoke", refs).set_index("claim")
    assert claims.at["one", "noise"] == pytest.approx(math.sqrt(2))
    assert claims.at["one", "verdict"] == tables.WITHIN_NOISE
    assert claims.at["one", "noise_basis"] == "seed noise of own/noise_a (3 seeds, std 1.00) x sqrt(2)"
    # a claim's own tolerance stays a floor above the referenced noise
    assert claims.at["floor", "noise"] == 5.0 and claims.at["floor", "noise_basis"] == "claim tolerance"
    # the table's attribute is the default source, as reproduce_table sets it
    t = one_seed_table(spec, 20.0, 21.2)
    t.attrs["noise_refs"] = refs
    assert tables.judge_claims(spec, t, "smoke").set_index("claim").at["one", "noise"] == pytest.approx(math.sqrt(2))


def test_two_model_claim_adds_both_stds_in_quadrature(setup):
    tmp_path, a, b, spec = setup
    fake_seeds(tmp_path / "runs", a, [10.0, 11.0, 12.0])  # std 1.0
    fake_seeds(tmp_path / "runs", b, [5.0, 7.0])  # std sqrt(2)
    refs = load_references(spec, "smoke", tmp_path / "runs")
    claims = tables.judge_claims(spec, one_seed_table(spec, 20.0, 21.2), "smoke", refs).set_index("claim")
    assert claims.at["two", "noise"] == pytest.approx(math.sqrt(1.0 + 2.0))
    assert claims.at["two", "noise_basis"] == ("seed noise of own/noise_a (3 seeds, std 1.00) and "
                                               "own/noise_b (2 seeds, std 1.41) in quadrature")


def test_fewer_than_two_seeds_fall_back_to_the_fixed_tolerance(setup):
    tmp_path, a, b, spec = setup
    fake_seeds(tmp_path / "runs", a, [10.0])
    refs = load_references(spec, "smoke", tmp_path / "runs")
    claims = tables.judge_claims(spec, one_seed_table(spec, 20.0, 21.2), "smoke", refs).set_index("claim")
    assert claims.at["one", "noise"] == 0.05 and claims.at["one", "verdict"] == tables.REPRODUCED
    assert claims.at["one", "noise_basis"] == "fixed tolerance (1 seed; own/noise_a has 1 seed(s) of ap)"
    # the two-model claim: b has no runs at all; the spec's noise_from is tried next
    assert claims.at["two", "noise"] == 0.05
    assert "own/noise_b has 0 seed(s) of ap" in claims.at["two", "noise_basis"]
    # no references read (judge_claims on a bare table): the fixed tolerance, as before
    bare = tables.judge_claims(spec, one_seed_table(spec, 20.0, 21.2), "smoke").set_index("claim")
    assert bare.at["one", "noise"] == 0.05


def test_a_table_with_several_seeds_keeps_its_own_seed_std(setup):
    tmp_path, a, b, spec = setup
    fake_seeds(tmp_path / "runs", a, [10.0, 11.0, 12.0])
    refs = load_references(spec, "smoke", tmp_path / "runs")
    runs = pd.DataFrame([{"label": lab, "seed": s, "status": "done", "error": None, "ap": v,
                          "ap_s": 1.0, "config_hash": lab}
                         for lab, vals in (("small", [20.0, 20.3]), ("wide", [22.0, 22.4]))
                         for s, v in enumerate(vals)])
    claims = tables.judge_claims(spec, tables.build_table(spec, runs, None, "smoke"), "smoke", refs)
    one = claims.set_index("claim").loc["one"]
    assert one["noise_basis"] == "seed std"
    assert one["noise"] == pytest.approx(math.sqrt(0.3**2 / 2 + 0.4**2 / 2))


def test_reference_without_a_baseline_row_names_its_file(tmp_path):
    two_rows = NOISE_A.replace("baseline: base\n", "") + "  - {label: other, overrides: [model.fpn_channels=32]}\n"
    path = write(tmp_path / "nobase.yaml", two_rows)
    with pytest.raises(SpecError, match=r"nobase.yaml: used as noise_from, it needs a baseline row"):
        reference_noise(str(path), "smoke", tmp_path / "runs")


def test_unknown_noise_from_is_a_one_line_error_at_its_line(tmp_path):
    text = TABLE.format(noise_from="examples/no_such_noise", other="examples/yolact_seed_noise")
    path = write(tmp_path / "judged.yaml", text)
    with pytest.raises(SpecError) as e:
        load_spec(path, presets=("smoke",))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:7: noise_from: unknown spec 'examples/no_such_noise'")
    text = TABLE.format(noise_from="examples/yolact_seed_noise", other="examples/nope")
    with pytest.raises(SpecError, match=r"judged.yaml:14: noise_from: unknown spec 'examples/nope'"):
        load_spec(write(tmp_path / "judged.yaml", text), presets=("smoke",))
    three = text.replace("examples/nope", "examples/yolact_seed_noise, examples/fastinst_seed_noise")
    with pytest.raises(SpecError, match="noise_from takes one spec or two .* got 3"):
        load_spec(write(tmp_path / "judged.yaml", three), presets=("smoke",))


def test_the_repository_specs_name_their_seed_noise_specs():
    from rtinst.harness.specs import list_specs
    want = {"fastinst": "examples/fastinst_seed_noise", "yolact": "examples/yolact_seed_noise",
            "sparseinst": "examples/sparseinst_seed_noise"}
    for path in list_specs():
        spec = load_spec(path, presets=())
        if spec.metrics:
            assert spec.noise_from == want[spec.paper], path
