"""experiments/analysis_runs.yaml: figure -> spec rows -> the run folders the sweep uses, the
notebooks' defaults, and `rtinst records compact --analysis`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtinst.cli import main as cli_main
from rtinst.engine.compact import COMPACT, SNAPSHOT
from rtinst.errors import UserError
from rtinst.harness import analysis_runs as ar
from rtinst.harness.plan import plan_sweep
from rtinst.harness.specs import load_spec, load_specs
from rtinst.records import read_record

REPO = Path(__file__).resolve().parents[1]
FIGURES_NEEDING_WEIGHTS = {"iam", "prototypes", "queries"}


def test_each_figure_resolves_to_the_sweeps_run_folder():
    runs = ar.analysis_runs("tiny")
    assert {a.figure for a in runs if a.weights} == FIGURES_NEEDING_WEIGHTS
    assert {a.figure for a in runs if a.weights is True} == FIGURES_NEEDING_WEIGHTS
    for a in runs:
        spec = load_specs([a.spec], presets=("tiny",))[0]
        plan = plan_sweep([spec], "tiny", seeds=[0], cost_preset=None)
        assert a.run_dir == Path(plan.runs_for(spec.id, a.row)[0].run_dir)
        assert a.run_dir.parent == REPO / "results" / "runs"
        assert a.run_dir.name.startswith(f"{spec.model}-tiny-")
    by_figure = {f: [a for a in runs if a.figure == f] for f in FIGURES_NEEDING_WEIGHTS}
    assert [a.row for a in by_figure["queries"]] == ["baseline", "- bi. matching", "- loc. cost"]
    assert len({a.run_dir for a in by_figure["queries"]}) == 3  # three IA-loss variants
    # the default run's compact is committed, the two variants draw from their snapshots
    assert [a.weights for a in by_figure["queries"]] == [True, "snapshot", "snapshot"]


def test_the_defaults_are_the_presets_default_models():
    # the iam / prototypes rows are the default configs: no override changes the config
    from rtinst.config import load_config
    from rtinst.records import config_hash

    for figure, model in (("iam", "sparseinst"), ("prototypes", "yolact")):
        (run_dir,) = ar.run_dirs(figure, "tiny")
        default = load_config(REPO / "rtinst" / "configs" / model / "tiny.yaml", ["seed=0"])
        assert run_dir.name == f"{model}-tiny-{config_hash(default)}"


def test_a_preset_changes_the_folders_not_the_names():
    tiny, smoke = ar.run_dirs("queries", "tiny"), ar.run_dirs("queries", "smoke")
    assert all("-smoke-" in p.name for p in smoke) and all("-tiny-" in p.name for p in tiny)
    assert ar.labels("tide") == ["YOLACT tiny", "SparseInst tiny", "FastInst D3 tiny"]
    assert ar.labels("iam") is None


def test_bad_entries_name_the_file_and_what_is_wrong(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("figures:\n  iam:\n    weights: true\n    rows:\n"
                   "      - {spec: sparseinst/table4_iam, row: G=5}\n")
    with pytest.raises(UserError, match=rf"^{bad}: figure 'iam': sparseinst/table4_iam has no trained "
                                        r"row 'G=5'"):
        ar.analysis_runs("tiny", path=bad)
    bad.write_text("figures:\n  iam:\n    weights: true\n    rows:\n      - {spec: x, rows: y}\n")
    with pytest.raises(UserError, match=r"figure 'iam' row 1: expected keys spec, row"):
        ar.analysis_runs("tiny", path=bad)
    with pytest.raises(UserError, match=r"no figure 'iams'.*iam"):
        ar.analysis_runs("tiny", figures=["iams"])
    bad.write_text("figures:\n  iam:\n    weights: maybe\n    rows:\n"
                   "      - {spec: sparseinst/table4_iam, row: 'group 3x3 conv, G=4'}\n")
    with pytest.raises(UserError, match=rf"^{bad}: figure 'iam': expected 'weights: true\|false\|snapshot' "
                                        r"\(got 'maybe'\)"):
        ar.analysis_runs("tiny", path=bad)
    bad.write_text("figures:\n  iam:\n    weights: true\n    rows:\n"
                   "      - {spec: sparseinst/table4_iam, row: 'group 3x3 conv, G=4', weights: 1}\n")
    with pytest.raises(UserError, match=rf"^{bad}: figure 'iam' row 1: weights: expected "
                                        r"true\|false\|snapshot, got 1"):
        ar.analysis_runs("tiny", path=bad)


def test_a_rows_weights_override_its_figures(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("figures:\n  q:\n    weights: snapshot\n    rows:\n"
                    "      - {spec: fastinst/table6f_ia_loss, row: baseline, weights: true}\n"
                    "      - {spec: fastinst/table6f_ia_loss, row: '- loc. cost'}\n"
                    "      - {spec: fastinst/table6f_ia_loss, row: '- bi. matching', weights: false}\n")
    assert [a.weights for a in ar.analysis_runs("tiny", path=path)] == [True, "snapshot", False]


def test_compact_analysis_compacts_finished_runs_and_lists_the_rest(tmp_path, capsys):
    from tests.test_compact import make_run

    runs = [a for a in ar.analysis_runs("smoke", runs_dir=tmp_path) if a.weights]
    first = runs[0]  # iam: SparseInst smoke
    (tmp_path / "made").mkdir()
    made, _ = make_run(tmp_path / "made", "sparseinst")
    first.run_dir.parent.mkdir(parents=True, exist_ok=True)
    made.rename(first.run_dir)
    report = ar.compact_analysis_runs("smoke", runs_dir=tmp_path)
    assert [c.run_dir for c in report.compacted] == [first.run_dir]
    assert (first.run_dir / COMPACT).is_file()
    done, names, untrained = ar.recorded_runs("tide", "smoke", runs_dir=tmp_path)
    assert done == [first.run_dir] and names == ["SparseInst tiny"]  # the same SparseInst row
    assert len(untrained) == 2 and all("not trained; train it with `rtinst sweep" in u for u in untrained)
    lacking = "\n".join(report.lacking)
    for a in runs[1:]:
        assert f"{a.run_dir.name} ({a.spec}: {a.row}): not trained; train it with " \
               f"`rtinst sweep {a.spec} --preset smoke`" in lacking
    (first.run_dir / "checkpoints" / "last.pt").unlink()
    report = ar.compact_analysis_runs("smoke", runs_dir=tmp_path)
    assert report.kept == [first.run_dir / COMPACT] and not report.compacted
    (first.run_dir / COMPACT).unlink()
    report = ar.compact_analysis_runs("smoke", runs_dir=tmp_path)
    assert any(f"{first.run_dir.name} ({first.spec}: {first.row}): no checkpoint; re-create with "
               f"`OMP_NUM_THREADS=1 rtinst train --config" in line for line in report.lacking)
    assert cli_main(["records", "compact"]) != 0
    assert "give run folders or --analysis" in capsys.readouterr().err


def test_compact_analysis_writes_the_snapshots_of_snapshot_rows(tmp_path):
    from rtinst.cli.records import _write_snapshot
    from tests.test_compact import make_run

    (row,) = [a for a in ar.analysis_runs("smoke", ["queries"], runs_dir=tmp_path)
              if a.row == "- loc. cost"]
    assert row.weights == "snapshot"
    (tmp_path / "made").mkdir()
    made, _ = make_run(tmp_path / "made", "fastinst")
    made.rename(row.run_dir)
    report = ar.compact_analysis_runs("smoke", runs_dir=tmp_path, snapshot=_write_snapshot)
    assert report.snapshots == [row.run_dir / SNAPSHOT] and not report.compacted
    assert not (row.run_dir / COMPACT).is_file()  # a snapshot row commits no weights
    assert any(line.endswith("kB (predictions snapshot)") for line in report.lines())
    lacking = "\n".join(report.lacking)
    assert f"{row.run_dir.name} ({row.spec}: {row.row})" not in lacking
    assert "- bi. matching): not trained; train it with `rtinst sweep" in lacking
    without_writer = ar.compact_analysis_runs("smoke", runs_dir=tmp_path)
    assert any(f"({row.spec}: {row.row}): predictions snapshot not written here" in line
               for line in without_writer.lacking)
    (row.run_dir / "checkpoints" / "last.pt").unlink()
    report = ar.compact_analysis_runs("smoke", runs_dir=tmp_path, snapshot=_write_snapshot)
    assert report.kept == [row.run_dir / SNAPSHOT] and not report.snapshots
    (row.run_dir / SNAPSHOT).unlink()
    report = ar.compact_analysis_runs("smoke", runs_dir=tmp_path, snapshot=_write_snapshot)
    assert any(f"({row.spec}: {row.row}): no checkpoint to write its predictions snapshot from; "
               f"re-create with `OMP_NUM_THREADS=1 rtinst train" in line for line in report.lacking)


def test_every_recorded_tiny_analysis_run_commits_its_compact_checkpoint_or_snapshot():
    needed = [a for a in ar.analysis_runs("tiny") if a.weights]
    recorded = [a for a in needed if (a.run_dir / "record.json").is_file()
                and read_record(a.run_dir).status == "done"]
    if not recorded:
        pytest.skip("no analysis run at preset tiny has a finished record made since compact "
                    "checkpoints exist")
    missing = [f"{a.run_dir.name}/{COMPACT if a.weights is True else SNAPSHOT}" for a in recorded
               if not (a.run_dir / (COMPACT if a.weights is True else SNAPSHOT)).is_file()]
    assert not missing, f"run `rtinst records compact --analysis --preset tiny` and commit: {missing}"


def test_git_tracks_predictions_snapshots():
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for name in (SNAPSHOT, COMPACT):
        path = f"results/runs/fastinst-tiny-000000000000/{name}"
        # exit status 1: no ignore rule matches the path
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 1, path


def test_the_tide_figures_runs_keep_their_tide_plot_in_git():
    """`rtinst viz tide` copies each run's TIDE plot beside the comparison; run folders' plots
    are git-ignored except these, so a fresh clone redraws the whole figure."""
    import subprocess

    repo = Path(ar.__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "results/runs"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.split()
    for run_dir in ar.run_dirs("tide"):
        model = run_dir.name.split("-")[0]
        assert f"results/runs/{run_dir.name}/{model}_mask_summary.png" in tracked, run_dir.name
