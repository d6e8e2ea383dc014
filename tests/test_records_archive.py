"""`rtinst records archive`: stale run folders leave the run cache, their record and config kept."""

import datetime
import fcntl
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from rtinst.cli import main
from rtinst.config import save_config, to_dict
from rtinst.errors import UserError
from rtinst.harness import tables
from rtinst.harness.archive import INDEX_COLUMNS, archive_runs, check_runs
from rtinst.harness.plan import plan_sweep
from rtinst.harness.specs import load_spec
from rtinst.harness.table_spec import row_config
from rtinst.records import RunRecord, config_hash, load_records, run_dir_for, write_record

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "experiments" / "examples" / "yolact_fpn_width.yaml"
DAY1, DAY2 = datetime.date(2026, 12, 4), datetime.date(2026, 12, 9)


@pytest.fixture(scope="module")
def spec():
    return load_spec(EXAMPLE, presets=())


def fake_run(runs: Path, cfg, ap: float = 12.5, name: str | None = None, extra: bool = True) -> Path:
    """A run folder as a sweep leaves it, with a fake record (no training)."""
    folder = runs / name if name else run_dir_for(cfg, runs)
    save_config(cfg, folder / "config.yaml")
    write_record(RunRecord(config=to_dict(cfg), config_hash=config_hash(cfg), status="done",
                           metrics={"ap": ap, "ap50": 2 * ap}, provenance={}), folder)
    if extra:
        (folder / "run.ipynb").write_text("{}")
        (folder / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
        (folder / "yolact_mask_summary.png").write_bytes(b"\x89PNG fake")
        (folder / "curve.json").write_text('{"400": 3.0}')
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.pt").write_bytes(b"weights")
    return folder


@pytest.fixture
def runs(tmp_path, spec):
    """current (seed 0 and seed 1 of the FPN 32 row), hash mismatch, no current row, broken."""
    runs = tmp_path / "runs"
    row = spec.row("FPN 32")
    cur = row_config(spec, row, "smoke", ["seed=0"])
    folders = {
        "current": fake_run(runs, cur),
        "current_seed1": fake_run(runs, row_config(spec, row, "smoke", ["seed=1"])),
        # a config that hashes to another name today: the folder keeps its old hash
        "mismatch": fake_run(runs, cur, ap=3.25, name="yolact-smoke-0123456789ab"),
        "no_row": fake_run(runs, row_config(spec, row, "smoke", ["seed=0", "model.fpn_channels=48",
                                                                  "train.max_iters=7"]), ap=7.0),
    }
    broken = runs / "yolact-smoke-deadbeef0000"
    broken.mkdir()
    (broken / "run.ipynb").write_text("{}")
    folders["broken"] = broken
    (runs / "step_gflops.json").write_text("{}")  # files and _submitit are not run folders
    (runs / "_submitit").mkdir()
    return folders


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def index(archive: Path) -> pd.DataFrame:
    df = pd.read_csv(archive / "INDEX.csv", dtype=str, keep_default_na=False)
    assert list(df.columns) == INDEX_COLUMNS
    return df.set_index("run")


def test_current_runs_stay_stale_runs_are_archived_with_their_reasons(tmp_path, runs):
    before = {k: tree(p) for k, p in runs.items()}
    archive = tmp_path / "archive"
    result = archive_runs(tmp_path / "runs", archive, specs=[EXAMPLE], today=DAY1)
    reasons = {c.name: c.reason for c in result.checks}
    assert reasons[runs["current"].name] is None and reasons[runs["current_seed1"].name] is None
    assert reasons["yolact-smoke-0123456789ab"] == "hash mismatch"
    assert reasons[runs["no_row"].name] == "no current row"
    assert reasons["yolact-smoke-deadbeef0000"] == "broken: no record.json and no config.yaml"
    assert len(result.checks) == 5  # step_gflops.json and _submitit are no runs

    for k in ("current", "current_seed1"):
        assert tree(runs[k]) == before[k]
    for k in ("mismatch", "no_row", "broken"):
        assert not runs[k].exists()
    for k in ("mismatch", "no_row"):
        kept = tree(archive / "runs" / runs[k].name)
        assert kept == {n: before[k][n] for n in ("record.json", "config.yaml", "curve.json")}
    assert not (archive / "runs" / "yolact-smoke-deadbeef0000").exists()  # nothing to keep
    assert (tmp_path / "runs" / "step_gflops.json").is_file()

    df = index(archive)
    assert sorted(df.index) == sorted(["yolact-smoke-0123456789ab", runs["no_row"].name,
                                       "yolact-smoke-deadbeef0000"])
    assert df.loc["yolact-smoke-0123456789ab", ["model", "preset", "seed", "reason", "mask_ap"]].tolist() \
        == ["yolact", "smoke", "0", "hash mismatch", "3.25"]
    assert df.loc[runs["no_row"].name, "mask_ap"] == "7.00"
    assert df.loc["yolact-smoke-deadbeef0000", "seed"] == ""
    assert set(df["archived_at"]) == {"2026-12-04"} and set(df["git_commit"]) == {""}  # no git here
    readme = (archive / "README.md").read_text()
    assert "No table, figure, sweep or notebook reads this folder" in readme
    assert len(readme.strip().splitlines()) == 7  # a title, a blank line, five lines


def test_dry_run_changes_nothing(tmp_path, runs):
    before = tree(tmp_path)
    result = archive_runs(tmp_path / "runs", tmp_path / "archive", dry_run=True, specs=[EXAMPLE])
    assert tree(tmp_path) == before and not (tmp_path / "archive").exists()
    assert result.summary().startswith(
        "5 run folder(s): 2 current, 3 stale (1 hash mismatch, 1 no current row, 1 broken); "
        "would archive 3")
    assert result.summary().endswith("(--dry-run: nothing changed)")


def test_index_accumulates_across_archivings(tmp_path, runs, spec):
    archive = tmp_path / "archive"
    archive_runs(tmp_path / "runs", archive, specs=[EXAMPLE], today=DAY1)
    late = fake_run(tmp_path / "runs", row_config(spec, spec.row("FPN 64"), "smoke",
                                                  ["seed=0", "train.max_iters=9"]), ap=1.0)
    again = fake_run(tmp_path / "runs", row_config(spec, spec.row("FPN 32"), "smoke", ["seed=0"]),
                     ap=4.5, name="yolact-smoke-0123456789ab")  # restored, then stale again
    second = archive_runs(tmp_path / "runs", archive, specs=[EXAMPLE], today=DAY2)
    assert [c.name for c in second.archived] == sorted([late.name, again.name])
    df = index(archive)
    assert list(df.index) == sorted(df.index) and len(df) == 4  # one row per run
    assert df.loc[late.name, "archived_at"] == "2026-12-09"
    assert df.loc[runs["no_row"].name, "archived_at"] == "2026-12-04"
    assert df.loc["yolact-smoke-0123456789ab", ["mask_ap", "archived_at"]].tolist() == ["4.50", "2026-12-09"]
    third = archive_runs(tmp_path / "runs", archive, specs=[EXAMPLE], today=DAY2)
    assert third.archived == [] and len(index(archive)) == 4


def test_broken_folders_keep_what_they_have(tmp_path, spec):
    runs = tmp_path / "runs"
    cfg = row_config(spec, spec.row("FPN 32"), "smoke", ["seed=0"])
    no_config = fake_run(runs, cfg, name="yolact-smoke-aaaaaaaaaaaa")
    (no_config / "config.yaml").unlink()
    bad_record = fake_run(runs, cfg, name="yolact-smoke-bbbbbbbbbbbb")
    (bad_record / "record.json").write_text("{not json")
    bad_config = fake_run(runs, cfg, name="yolact-smoke-cccccccccccc")
    (bad_config / "config.yaml").write_text("model: {name: yolact, no_such_field: 1}\n")
    result = archive_runs(runs, tmp_path / "archive", specs=[EXAMPLE], today=DAY1)
    reasons = {c.name: c.reason for c in result.checks}
    assert reasons[no_config.name] == "broken: no config.yaml"
    assert reasons[bad_record.name].startswith("broken: ") and "not a valid run record" in reasons[bad_record.name]
    assert reasons[bad_config.name].startswith("broken: ") and "no_such_field" in reasons[bad_config.name]
    assert list(runs.iterdir()) == []
    kept = tmp_path / "archive" / "runs"
    assert sorted(p.name for p in (kept / no_config.name).iterdir()) == ["curve.json", "record.json"]
    assert (kept / bad_record.name / "record.json").read_text() == "{not json"
    df = index(tmp_path / "archive")
    assert df.loc[no_config.name, ["model", "preset", "mask_ap"]].tolist() == ["yolact", "smoke", "12.50"]
    assert df.loc[bad_record.name, "mask_ap"] == ""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_index_names_the_commit_that_still_holds_the_whole_folder(tmp_path, runs, spec):
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "runs")
    git(tmp_path, "commit", "-q", "-m", "runs")
    head = git(tmp_path, "rev-parse", "HEAD")
    fresh = fake_run(tmp_path / "runs", row_config(spec, spec.row("FPN 64"), "smoke",
                                                   ["seed=0", "train.max_iters=9"]))
    result = archive_runs(tmp_path / "runs", tmp_path / "archive", specs=[EXAMPLE], today=DAY1)
    df = index(tmp_path / "archive")
    assert df.loc[runs["no_row"].name, "git_commit"] == head
    assert git(tmp_path, "show", f"{head}:runs/{runs['no_row'].name}/run.ipynb") == "{}"
    assert df.loc[fresh.name, "git_commit"] == ""  # never committed: its notebook is gone
    assert result.not_in_git == [fresh.name] and "1 not committed at HEAD" in result.summary()
    assert "git show <git_commit>:runs/<run>/train_log.jsonl" in (tmp_path / "archive" / "README.md").read_text()


def test_a_rehash_map_follows_its_runs_once_none_is_left(tmp_path, runs):
    def write_map(name, old):
        (tmp_path / "runs" / name).write_text(json.dumps(
            {"what": "a change", "rows": {"smoke": {"t: row": {"old": old, "new": "yolact-smoke-x"}},
                                         "coco": {"t: row": {"old": "yolact-coco-never", "new": "y"}}}}))
    write_map("rehashed_gone.json", "yolact-smoke-0123456789ab")
    write_map("rehashed_live.json", runs["current"].name)
    text = (tmp_path / "runs" / "rehashed_gone.json").read_text()
    dry = archive_runs(tmp_path / "runs", tmp_path / "archive", dry_run=True, specs=[EXAMPLE])
    assert dry.maps_moved == ["rehashed_gone.json"] and dry.maps_kept == {"rehashed_live.json": 1}
    archive_runs(tmp_path / "runs", tmp_path / "archive", specs=[EXAMPLE], today=DAY1)
    assert not (tmp_path / "runs" / "rehashed_gone.json").exists()
    assert (tmp_path / "archive" / "rehashed_gone.json").read_text() == text
    assert (tmp_path / "runs" / "rehashed_live.json").is_file()


def test_every_check_runs_before_anything_is_touched(tmp_path, runs):
    before = tree(tmp_path)
    with pytest.raises(UserError, match="inside the runs folder"):
        archive_runs(tmp_path / "runs", tmp_path / "runs" / "archive", specs=[EXAMPLE])
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "INDEX.csv").write_text("name,when\nx,y\n")
    with pytest.raises(UserError, match=r"INDEX.csv: expected the columns run,model,"):
        archive_runs(tmp_path / "runs", tmp_path / "archive", specs=[EXAMPLE])
    (tmp_path / "archive" / "INDEX.csv").unlink()
    lock = runs["no_row"] / ".lock"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(UserError, match=f"{runs['no_row'].name} being trained"):
            archive_runs(tmp_path / "runs", tmp_path / "archive", specs=[EXAMPLE])
    lock.unlink()
    bad_map = tmp_path / "runs" / "rehashed_bad.json"
    bad_map.write_text('{"rows": ["fastinst-tiny-x"]}')
    with pytest.raises(UserError, match=r"rehashed_bad.json: not a rehash map"):
        archive_runs(tmp_path / "runs", tmp_path / "archive", specs=[EXAMPLE])
    bad_map.unlink()
    (tmp_path / "archive").rmdir()
    assert tree(tmp_path) == before
    with pytest.raises(UserError, match="runs folder not found"):
        check_runs(tmp_path / "nope")


def test_an_archived_run_is_not_found_by_the_sweep_or_the_tables(tmp_path, runs, spec):
    """Runs are found by config hash under the runs folder; the archive is not looked at."""
    plan = plan_sweep([spec], "smoke", [0], tmp_path / "runs", cost_preset=None)
    job = plan.runs[config_hash(row_config(spec, spec.row("FPN 32"), "smoke", ["seed=0"]))]
    assert job.status() == "done"
    # the current run as if archived: its record and config in the archive, gone from the cache
    kept = tmp_path / "archive" / "runs" / Path(job.run_dir).name
    kept.mkdir(parents=True)
    for name in ("record.json", "config.yaml"):
        (Path(job.run_dir) / name).rename(kept / name)
    plan = plan_sweep([spec], "smoke", [0], tmp_path / "runs", cost_preset=None)
    assert plan.runs[job.config_hash].status() == "missing"
    collected = tables.collect_runs(spec, plan).set_index("label")
    assert collected.loc["FPN 32", "status"] == "missing" and "ap" not in collected.columns
    assert Path(job.run_dir).name not in {Path(d).name for d in load_records(tmp_path / "runs")["run_dir"]}


def test_cli_prints_the_table_and_the_summary(tmp_path, runs, capsys):
    before = tree(tmp_path)
    args = ["records", "archive", "--runs-dir", str(tmp_path / "runs"),
            "--archive-dir", str(tmp_path / "archive")]
    assert main([*args, "--dry-run"]) == 0  # every spec under experiments/
    out = capsys.readouterr().out
    assert tree(tmp_path) == before
    assert "yolact-smoke-0123456789ab" in out and "no current row" in out and "12.50" not in out
    assert runs["current"].name not in out  # current runs are not listed
    assert ("5 run folder(s): 2 current, 3 stale (1 hash mismatch, 1 no current row, 1 broken); "
            "would archive 3") in out
    assert main(args) == 0
    assert "; archived 3" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        [runs["current"].name, runs["current_seed1"].name, "_submitit", "step_gflops.json"])
