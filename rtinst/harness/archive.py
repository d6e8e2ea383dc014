"""Stale run folders out of the run cache: their record and config kept, the rest removed.

The sweep and the tables find a run by its folder name under the runs folder
(``<model>-<preset>-<config hash>``, :func:`rtinst.records.run_dir_for`). A folder is
*current* when its ``config.yaml`` still hashes to that name and the config is a row of a
current spec (``experiments/**.yaml``) at the run's preset and seed. Every other folder is
*stale*: a config that hashes to another name today (a new config field, a new rule), a
config no row asks for any more (a preset or a spec changed), or a folder without a readable
``record.json`` / ``config.yaml`` (broken). Nothing reads stale folders, yet they weigh on
the repository (notebooks, logs, figures).

:func:`archive_runs` moves each stale folder's ``record.json`` and ``config.yaml`` (and
``curve.json``) to ``<archive>/runs/<run>/`` and removes the rest; ``<archive>/INDEX.csv`` lists every run ever
archived with the commit where its whole folder is still in git. Rehash maps
(``rehashed_*.json`` in the runs folder, old -> new run names of a change) follow their
runs into the archive once none of their old runs is left. The archive lies outside the runs
folder, so no sweep, table, figure or notebook reads it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rtinst.config import ConfigError, load_config
from rtinst.errors import UserError
from rtinst.harness.plan import plan_sweep
from rtinst.harness.runner import run_locked
from rtinst.harness.specs import EXPERIMENTS_DIR, load_spec
from rtinst.harness.table_spec import row_base
from rtinst.io import atomic_path, atomic_write_text
from rtinst.records import CURVE_NAME, RECORD_NAME, config_hash, read_record

CONFIG_NAME = "config.yaml"
REQUIRED = (RECORD_NAME, CONFIG_NAME)  # a folder without either is broken
# What of a run the archive keeps, a few kB: its numbers and config (and the AP-vs-step
# snapshots that learning-curve findings quote), not its notebook, log or figures.
KEPT = (*REQUIRED, CURVE_NAME)
INDEX_NAME = "INDEX.csv"
INDEX_COLUMNS = ["run", "model", "preset", "seed", "reason", "mask_ap", "archived_at", "git_commit"]
REHASH_MAPS = "rehashed_*.json"

HASH_MISMATCH = "hash mismatch"
NO_ROW = "no current row"
BROKEN = "broken"

README_TEXT = """\
# Archived run records

Run folders that no current config or spec row matches any more: each keeps its record.json and config.yaml (and curve.json) here.
INDEX.csv lists them (why each was archived, its mask AP, when), with `git_commit`, the commit whose tree still holds the whole folder:
`git show <git_commit>:{runs}/<run>/train_log.jsonl` (also the figures, and run.ipynb where it was committed).
No table, figure, sweep or notebook reads this folder: runs are found by config hash under {runs}/ only.
Written by `rtinst records archive`; rehash maps (old -> new run names) of archived runs are kept beside this file.
"""


@dataclass
class RunCheck:
    """One run folder and what the archive makes of it (``reason`` None: current)."""

    name: str
    path: Path
    model: str
    preset: str
    seed: int | None
    reason: str | None
    ap: float | None = None

    @property
    def stale(self) -> bool:
        return self.reason is not None


def _name_parts(name: str) -> tuple[str, str, str]:
    model, _, rest = name.partition("-")
    preset, _, digest = rest.rpartition("-")
    return model, preset, digest


def run_folders(runs_dir: Path) -> list[Path]:
    """Run folders of the runs folder (``_submitit``, hidden folders and files excluded)."""
    return sorted(p for p in runs_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")))


def _read(folder: Path) -> tuple[object | None, float | None, str | None]:
    """(config, mask AP, why it is broken or None)."""
    ap = None
    missing = [n for n in REQUIRED if not (folder / n).is_file()]
    if RECORD_NAME not in missing:
        try:
            ap = read_record(folder).metrics.get("ap")
        except UserError as e:
            return None, None, f"{BROKEN}: {e}"
    if missing:
        return None, ap, f"{BROKEN}: no {' and no '.join(missing)}"
    try:
        return load_config(folder / CONFIG_NAME), ap, None
    except ConfigError as e:
        return None, ap, f"{BROKEN}: {e}"


def spec_paths(root: Path = EXPERIMENTS_DIR) -> list[Path]:
    """Every spec under ``experiments/``: the paper tables and the own ablations, one folder
    down (the paper tables' hyperparameter sheets under ``paper_tables/`` and files at the top,
    such as ``analysis_runs.yaml``, are no specs)."""
    return sorted(p for p in root.rglob("*.yaml")
                  if p.parent != root and "paper_tables" not in p.relative_to(root).parts)


def current_hashes(presets: dict[str, set[int]], specs: list[Path] | None = None) -> set[str]:
    """Config hashes of every spec row at each preset and seed, resolved by the sweep's own
    plan (so eval-only rows and the spec-wide overrides count as they do in a sweep).

    The plan of the union of the runs' seeds holds the same hashes as one plan per run: the
    seed is part of the hash. A preset without base configs (``custom``) has no rows."""
    loaded = [load_spec(p, presets=()) for p in (spec_paths() if specs is None else specs)]
    out: set[str] = set()
    for preset, seeds in presets.items():
        at = [s for s in loaded if all(row_base(s, r, preset).is_file() for r in s.implemented_rows)]
        out |= set(plan_sweep(at, preset, sorted(seeds), cost_preset=None).runs)
    return out


def check_runs(runs_dir: str | Path, specs: list[Path] | None = None) -> list[RunCheck]:
    """Every run folder of ``runs_dir``, current or stale with the reason."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: runs folder not found")
    read = {}
    for folder in run_folders(runs_dir):
        cfg, ap, broken = _read(folder)
        read[folder] = (cfg, ap, broken)
    presets: dict[str, set[int]] = {}
    for cfg, _, _ in read.values():
        if cfg is not None:
            presets.setdefault(cfg.preset, set()).add(cfg.seed)
    rows = current_hashes(presets, specs) if presets else set()
    checks = []
    for folder, (cfg, ap, broken) in read.items():
        model, preset, digest = _name_parts(folder.name)
        if cfg is None:
            checks.append(RunCheck(folder.name, folder, model, preset, None, broken, ap))
            continue
        reason = (HASH_MISMATCH if config_hash(cfg) != digest
                  else NO_ROW if digest not in rows else None)
        checks.append(RunCheck(folder.name, folder, cfg.model.name, cfg.preset, cfg.seed, reason, ap))
    return checks


# ------------------------------------------------------------------------------ git


def _git(cwd: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_state(runs_dir: Path) -> tuple[str | None, set[str], str]:
    """(HEAD commit, the run folders HEAD holds, the runs folder's path in the repository);
    (None, empty, its name) outside a git repository."""
    head = _git(runs_dir, "rev-parse", "HEAD")
    if head is None:
        return None, set(), runs_dir.name
    tracked = set((_git(runs_dir, "ls-tree", "--name-only", "HEAD") or "").splitlines())
    prefix = (_git(runs_dir, "rev-parse", "--show-prefix") or "").rstrip("/")
    return head, tracked, prefix or "."


# -------------------------------------------------------------------------- archive


@dataclass
class ArchiveResult:
    checks: list[RunCheck]
    archived: list[RunCheck]
    maps_moved: list[str]
    maps_kept: dict[str, int]  # rehash map -> old runs still in the runs folder
    not_in_git: list[str]  # archived runs whose other files HEAD does not hold (lost)
    dry_run: bool

    @property
    def stale(self) -> list[RunCheck]:
        return [c for c in self.checks if c.stale]

    def summary(self) -> str:
        kinds = Counter(c.reason.partition(":")[0] for c in self.stale)
        parts = ", ".join(f"{kinds[k]} {k}" for k in (HASH_MISMATCH, NO_ROW, BROKEN) if kinds[k])
        verb = "would archive" if self.dry_run else "archived"
        line = (f"{len(self.checks)} run folder(s): {len(self.checks) - len(self.stale)} current, "
                f"{len(self.stale)} stale{f' ({parts})' if parts else ''}; {verb} {len(self.stale)}")
        if self.maps_moved:
            line += f"; {'would move' if self.dry_run else 'moved'} {', '.join(self.maps_moved)}"
        if self.not_in_git:
            line += (f"; {len(self.not_in_git)} not committed at HEAD (only their record.json "
                     "and config.yaml survive)")
        return line + (" (--dry-run: nothing changed)" if self.dry_run else "")


def _map_runs(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text())
        return {e["old"] for rows in data["rows"].values() for e in rows.values()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: not a rehash map (expected rows: {{preset: {{row: {{old, new}}}}}})") from None


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)


def _remove(folder: Path) -> None:
    """The record and config go last: a removal cut short leaves a folder that is still
    recognised (and archived again) the next time, not a broken one whose copy overwrites."""
    for p in sorted(folder.iterdir(), key=lambda p: p.name in KEPT):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    folder.rmdir()


def _index(archive_dir: Path, new: list[dict]) -> pd.DataFrame:
    path = archive_dir / INDEX_NAME
    old = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None
    if old is not None and list(old.columns) != INDEX_COLUMNS:
        raise UserError(f"{path}: expected the columns {','.join(INDEX_COLUMNS)}, "
                        f"found {','.join(old.columns)}")
    frames = [f for f in (old, pd.DataFrame(new, columns=INDEX_COLUMNS, dtype=str))
              if f is not None and not f.empty]
    if not frames:
        return pd.DataFrame(columns=INDEX_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    # a run archived again (restored from git, then stale again) keeps its latest row
    return df.drop_duplicates("run", keep="last").sort_values("run", ignore_index=True)


def archive_runs(runs_dir: str | Path, archive_dir: str | Path, dry_run: bool = False,
                 specs: list[Path] | None = None, today: datetime.date | None = None) -> ArchiveResult:
    """Archive every stale run of ``runs_dir`` into ``archive_dir`` (nothing when ``dry_run``).

    Every check runs before anything is touched; then the archive copies and INDEX.csv are
    written (atomically), and only then are the run folders removed."""
    runs_dir, archive_dir = Path(runs_dir).resolve(), Path(archive_dir).resolve()
    if archive_dir == runs_dir or runs_dir in archive_dir.parents:
        raise UserError(f"--archive-dir {archive_dir}: inside the runs folder {runs_dir}; the "
                        "archive must lie outside it, where no sweep looks")
    if archive_dir.exists() and not archive_dir.is_dir():
        raise UserError(f"--archive-dir {archive_dir}: not a folder")
    checks = check_runs(runs_dir, specs)
    stale = [c for c in checks if c.stale]
    busy = [c.name for c in stale if run_locked(c.path)]
    if busy:
        raise UserError(f"{runs_dir}: {', '.join(busy)} being trained (its lock is held); "
                        "archive once the sweep has finished")
    head, tracked, where = git_state(runs_dir)
    gone = {c.name for c in stale}
    left = {c.name for c in checks} - gone
    maps = {p: _map_runs(p) for p in sorted(runs_dir.glob(REHASH_MAPS))}
    moved = [p for p, old in maps.items() if not old & left]
    result = ArchiveResult(checks, stale, [p.name for p in moved],
                           {p.name: len(old & left) for p, old in maps.items() if old & left},
                           [c.name for c in stale if c.name not in tracked], dry_run)
    if dry_run or not (stale or moved):
        return result
    day = (today or datetime.datetime.now(datetime.timezone.utc).date()).isoformat()
    rows = [{"run": c.name, "model": c.model, "preset": c.preset,
             "seed": "" if c.seed is None else str(c.seed), "reason": c.reason,
             "mask_ap": "" if c.ap is None else f"{c.ap:.2f}", "archived_at": day,
             "git_commit": head if c.name in tracked and head else ""} for c in stale]
    index = _index(archive_dir, rows)
    for c in stale:
        for name in KEPT:
            if (c.path / name).is_file():
                _copy(c.path / name, archive_dir / "runs" / c.name / name)
    for p in moved:
        _copy(p, archive_dir / p.name)
    with atomic_path(archive_dir / INDEX_NAME) as tmp:
        index.to_csv(tmp, index=False)
    atomic_write_text(archive_dir / "README.md", README_TEXT.format(runs=where))
    for c in stale:
        _remove(c.path)
    for p in moved:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return result


def checks_table(checks: list[RunCheck]) -> pd.DataFrame:
    """The stale runs as the command prints them."""
    return pd.DataFrame([{"run": c.name, "model": c.model, "preset": c.preset, "reason": c.reason,
                          "mask AP": c.ap} for c in checks if c.stale],
                        columns=["run", "model", "preset", "reason", "mask AP"])
