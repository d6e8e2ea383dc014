"""The runs the analysis figures draw, named once in ``experiments/analysis_runs.yaml``.

Each figure names spec rows, not run folders: a row resolves to the run folder the sweep
uses for it (:func:`rtinst.harness.plan.plan_sweep`, i.e. the config hash at a preset), so
the notebooks' defaults follow the presets. :func:`compact_analysis_runs` writes the compact
checkpoints (``model_fp16.pt``) of the rows whose figure loads a model (``weights: true``) and
the predictions snapshots (``predictions_snapshot.json``) of the rows drawn from a few saved
predictions (``weights: snapshot``), so that a fresh clone can draw them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from rtinst import paths
from rtinst.engine.compact import (DEFAULT_MAX_MB, Compacted, TooLarge, compact_path, last_checkpoint,
                                   snapshot_path, write_compact)
from rtinst.engine.restore import recreate_hint
from rtinst.errors import UserError, did_you_mean
from rtinst.harness.plan import RunJob, plan_sweep
from rtinst.harness.specs import EXPERIMENTS_DIR, load_specs
from rtinst.records import read_record

ANALYSIS_RUNS = EXPERIMENTS_DIR / "analysis_runs.yaml"
ROW_KEYS = {"spec", "row", "label", "weights"}
WEIGHTS = (True, False, "snapshot")
Weights = bool | Literal["snapshot"]


@dataclass
class AnalysisRun:
    figure: str
    spec: str  # paper/table
    row: str  # the row's label in the spec
    label: str | None  # legend name in the figure (None: the figure's own)
    # True: the figure loads the model (needs a checkpoint or model_fp16.pt); "snapshot": it
    # draws the row from predictions_snapshot.json; False: from the run record only
    weights: Weights
    job: RunJob  # the sweep's run job of the row: config hash and run folder

    @property
    def run_dir(self) -> Path:
        return Path(self.job.run_dir)


def read_analysis_file(path: str | Path = ANALYSIS_RUNS) -> dict:
    """The file's figures, checked: ``{seed, figures: {name: {weights, rows: [...]}}}``; a
    row's own ``weights`` overrides its figure's."""
    path = paths.resolve(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: analysis runs file not found") from None
    if not isinstance(data, dict) or not isinstance(data.get("figures"), dict) or not data["figures"]:
        raise UserError(f"{path}: expected a mapping with 'figures' (figure name -> weights, rows)")
    if not isinstance(data.get("seed", 0), int):
        raise UserError(f"{path}: seed: expected an integer, got {data['seed']!r}")
    for name, fig in data["figures"].items():
        rows = fig.get("rows") if isinstance(fig, dict) else None
        if not isinstance(rows, list) or not rows or not _is_weights(fig.get("weights")):
            raise UserError(f"{path}: figure '{name}': expected 'weights: true|false|snapshot' "
                            f"(got {fig.get('weights')!r}) and a non-empty 'rows' list")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not {"spec", "row"} <= set(row) or set(row) - ROW_KEYS:
                raise UserError(f"{path}: figure '{name}' row {i + 1}: expected keys spec, row "
                                f"(and optionally label, weights), got {row!r}")
            if not _is_weights(row.get("weights", True)):
                raise UserError(f"{path}: figure '{name}' row {i + 1}: weights: expected "
                                f"true|false|snapshot, got {row['weights']!r}")
    return data


def _is_weights(value) -> bool:
    # `1 == True` in Python: only the YAML booleans and the word count
    return isinstance(value, bool) or value == "snapshot"


def analysis_runs(preset: str = "tiny", figures: list[str] | None = None,
                  path: str | Path = ANALYSIS_RUNS, runs_dir: str | Path = "results/runs") -> list[AnalysisRun]:
    """Every (or each named) figure's rows resolved to their runs at ``preset``, in file order."""
    path = paths.resolve(path)
    data = read_analysis_file(path)
    known = list(data["figures"])
    for name in figures or []:
        if name not in known:
            raise UserError(f"{path}: no figure '{name}'{did_you_mean(name, known, listing='figures')}")
    chosen = [(n, data["figures"][n]) for n in (figures or known)]
    spec_names = list(dict.fromkeys(r["spec"] for _, fig in chosen for r in fig["rows"]))
    specs = load_specs(spec_names, presets=(preset,))
    seed = data.get("seed", 0)
    plan = plan_sweep(specs, preset, seeds=[seed], runs_dir=runs_dir, cost_preset=None)
    by_name = dict(zip(spec_names, specs))
    out = []
    for name, fig in chosen:
        for r in fig["rows"]:
            spec = by_name[r["spec"]]
            jobs = plan.runs_for(spec.id, r["row"])
            if seed not in jobs:
                labels = [row.label for row in spec.implemented_rows if spec.metrics]
                raise UserError(f"{path}: figure '{name}': {spec.id} has no trained row '{r['row']}'"
                                f"{did_you_mean(r['row'], labels, listing='rows')}")
            out.append(AnalysisRun(name, spec.id, r["row"], r.get("label"), r.get("weights", fig["weights"]),
                                   jobs[seed]))
    return out


def run_dirs(figure: str, preset: str = "tiny", runs_dir: str | Path = "results/runs") -> list[Path]:
    """The run folders of one figure (what its notebook draws by default)."""
    return [a.run_dir for a in analysis_runs(preset, [figure], runs_dir=runs_dir)]


def labels(figure: str, preset: str = "tiny") -> list[str] | None:
    """The figure's legend names from the file (a row without one: its row label), None when
    the file gives none."""
    runs = analysis_runs(preset, [figure])
    return None if all(a.label is None for a in runs) else [a.label or a.row for a in runs]


def _where(a: AnalysisRun) -> str:
    return f"{paths.display(a.run_dir)} ({a.spec}: {a.row})"


def _untrained(a: AnalysisRun, preset: str) -> str:
    status = a.job.status()
    return (f"{_where(a)}: {'not trained' if status == 'missing' else status}; "
            f"train it with `rtinst sweep {a.spec} --preset {preset}`")


def recorded_runs(figure: str, preset: str = "tiny", runs_dir: str | Path = "results/runs"
                  ) -> tuple[list[Path], list[str] | None, list[str]]:
    """The figure's runs with a finished record, their legend names (None: the file gives
    none), and one line per other run saying how to train it."""
    runs = analysis_runs(preset, [figure], runs_dir=runs_dir)
    done = [a for a in runs if a.job.status() == "done"]
    names = None if all(a.label is None for a in runs) else [a.label or a.row for a in done]
    return [a.run_dir for a in done], names, [_untrained(a, preset) for a in runs if a not in done]


@dataclass
class CompactReport:
    compacted: list[Compacted] = field(default_factory=list)
    snapshots: list[Path] = field(default_factory=list)  # predictions snapshots written
    kept: list[Path] = field(default_factory=list)  # file there, no checkpoint to renew it
    lacking: list[str] = field(default_factory=list)  # one line each: the run and its command
    refused: list[str] = field(default_factory=list)  # over the size limit: not written

    def lines(self) -> list[str]:
        """What was done and what is missing (the refusals are the caller's error)."""
        out = [c.line() for c in self.compacted]
        out += [f"{paths.display(p)}: {p.stat().st_size / 1e3:.1f} kB (predictions snapshot)"
                for p in self.snapshots]
        out += [f"{paths.display(p)}: kept (no checkpoints/last.pt to renew it from)" for p in self.kept]
        return out + self.lacking

    def extend(self, other: "CompactReport") -> None:
        for name in ("compacted", "snapshots", "kept", "lacking", "refused"):
            getattr(self, name).extend(getattr(other, name))


def compact_runs(run_dirs: list[str | Path], max_mb: float = DEFAULT_MAX_MB) -> CompactReport:
    """``model_fp16.pt`` of each run folder; those over ``max_mb`` are refused, not written."""
    report = CompactReport()
    for run_dir in run_dirs:
        try:
            report.compacted.append(write_compact(run_dir, max_mb))
        except TooLarge as e:  # the other runs are still compacted
            report.refused.append(str(e))
    return report


def compact_analysis_runs(preset: str = "tiny", max_mb: float = DEFAULT_MAX_MB,
                          runs_dir: str | Path = "results/runs",
                          snapshot: Callable[[Path], Path] | None = None) -> CompactReport:
    """``model_fp16.pt`` of every analysis row with ``weights: true``, and the predictions
    snapshot of every row with ``weights: snapshot``, of the runs with a finished record and a
    checkpoint; the others are listed with how to make them. ``snapshot(run_dir)`` writes a
    run's snapshot and returns its path (the drawing layer above provides it; None: snapshot
    rows are listed, not written)."""
    report = CompactReport()
    seen = set()
    for a in analysis_runs(preset, runs_dir=runs_dir):
        if not a.weights or (a.job.config_hash, a.weights) in seen:
            continue
        seen.add((a.job.config_hash, a.weights))
        target = compact_path(a.run_dir) if a.weights is True else snapshot_path(a.run_dir)
        if a.job.status() != "done":
            report.lacking.append(_untrained(a, preset))
        elif last_checkpoint(a.run_dir).is_file():
            if a.weights is True:
                report.extend(compact_runs([a.run_dir], max_mb))
            elif snapshot is not None:
                report.snapshots.append(snapshot(a.run_dir))
            else:
                report.lacking.append(f"{_where(a)}: predictions snapshot not written here; "
                                      f"`rtinst records compact --analysis --preset {preset}` writes it")
        elif target.is_file():
            report.kept.append(target)
        else:
            what = "" if a.weights is True else " to write its predictions snapshot from"
            report.lacking.append(f"{_where(a)}: no checkpoint{what}; "
                                  f"{recreate_hint(a.run_dir, read_record(a.run_dir))}")
    return report
