"""Run records: one JSON per run, written atomically, loaded into pandas.

A run record is the single source of truth for a run's numbers. It holds the resolved
config and its hash, the metrics, the status (``done`` / ``failed`` with the reason), the
scale the numbers belong to (preset, hardware) and provenance (git commit, machine,
versions, wall time). ``load_records`` turns a folder of records into one DataFrame, one row
per run, metrics and selected config keys as columns, for the table notebooks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from rtinst.config import config_hash, to_dict
from rtinst.errors import UserError
from rtinst.io import atomic_write_json
from rtinst.provenance import provenance

RECORD_NAME = "record.json"
SCHEMA_VERSION = 1
Status = Literal["running", "done", "failed"]


@dataclass
class RunRecord:
    """What one run produced. ``metrics`` values are numbers (AP in percent, ms, GFLOPs)."""

    config: dict
    config_hash: str
    status: Status = "running"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    wall_time_s: float | None = None
    provenance: dict[str, Any] = field(default_factory=provenance)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run dir
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def start(cls, cfg: Any) -> "RunRecord":
        return cls(config=to_dict(cfg), config_hash=config_hash(cfg))

    def finish(self, metrics: dict[str, float] | None = None) -> "RunRecord":
        self.metrics.update(metrics or {})
        self.status = "done"
        self.wall_time_s = time.time() - self.started_at
        return self

    def fail(self, reason: str) -> "RunRecord":
        self.status = "failed"
        self.error = reason
        self.wall_time_s = time.time() - self.started_at
        return self

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def write_record(record: RunRecord, run_dir: str | Path) -> Path:
    """Write ``run_dir/record.json`` atomically (temp + rename) and return its path."""
    path = Path(run_dir) / RECORD_NAME
    atomic_write_json(path, record.to_dict())
    return path


def read_record(path: str | Path) -> RunRecord:
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: run record not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a valid run record (line {e.lineno}: {e.msg})") from None
    known = RunRecord.__dataclass_fields__
    unknown = sorted(set(data) - set(known))
    if unknown or "config" not in data or "config_hash" not in data:
        raise UserError(f"{path}: not a run record (unexpected keys {unknown} or missing config)")
    return RunRecord(**data)


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def load_records(root: str | Path, config_keys: list[str] | None = None) -> pd.DataFrame:
    """All records under ``root`` (recursively) as a DataFrame, one row per run.

    Columns: ``run_dir``, ``config_hash``, ``status``, ``error``, ``wall_time_s``, the
    metrics, ``hardware``/``git_commit``/``preset``/``model``/``seed``, and ``config.<key>``
    for every config key (or only ``config_keys`` when given, as dotted paths).
    """
    rows = []
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        rec = read_record(path)
        flat_cfg = _flatten(rec.config)
        if config_keys is not None:
            flat_cfg = {k: flat_cfg.get(k) for k in config_keys}
        rows.append({
            "run_dir": str(path.parent),
            "config_hash": rec.config_hash,
            "status": rec.status,
            "error": rec.error,
            "wall_time_s": rec.wall_time_s,
            "model": rec.config.get("model", {}).get("name"),
            "preset": rec.config.get("preset"),
            "seed": rec.config.get("seed"),
            "hardware": rec.provenance.get("hardware"),
            "git_commit": rec.provenance.get("git_commit"),
            **rec.metrics,
            **{f"config.{k}": v for k, v in flat_cfg.items()},
        })
    return pd.DataFrame(rows)
