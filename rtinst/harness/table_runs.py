"""The run records of a spec's rows, as the tables read them: one row per (table row, seed).

Shared by the comparison tables and by the claims' noise floors (``noise_from``), so a
seed std is computed from the same records, the same way, wherever it is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rtinst.harness.specs import OUR_METRIC
from rtinst.harness.table_spec import TableSpec
from rtinst.records import read_record


def our_key(metric: str) -> str:
    return OUR_METRIC.get(metric, metric)


def metric_values(done: pd.DataFrame, metric: str) -> pd.Series:
    """The numeric values of ``metric`` over the given (done) runs; runs without it left out."""
    key = our_key(metric)
    if key not in getattr(done, "columns", []):
        return pd.Series(dtype=float)
    return pd.to_numeric(done[key], errors="coerce").dropna()


def collect_runs(spec: TableSpec, plan) -> pd.DataFrame:
    """One row per (table row, seed) of the plan: status, error and metrics from the record."""
    rows = []
    for label_row in spec.implemented_rows:
        for seed, job in sorted(plan.runs_for(spec.id, label_row.label).items()):
            entry: dict[str, Any] = {"label": label_row.label, "seed": seed, "run_dir": job.run_dir,
                                     "config_hash": job.config_hash, "status": "missing", "error": None}
            path = Path(job.run_dir) / "record.json"
            if path.is_file():
                rec = read_record(path)
                entry.update(status=rec.status, error=rec.error, wall_time_s=rec.wall_time_s,
                             hardware=rec.provenance.get("hardware"), **rec.metrics)
            rows.append(entry)
    return pd.DataFrame(rows, columns=None if rows else ["label", "seed", "status", "error"])
