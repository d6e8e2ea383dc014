"""Run records and run identity: one JSON per run, keyed by a content hash, loaded into pandas.

A run's identity is :func:`config_hash`: a stable hash of its resolved config plus the
identity of the weights its backbone starts from, so the same YAML with another ImageNet
file is another run. It lives here, below the engine, because both the engine (which writes
and restores records) and the harness (which caches runs by it) need it, and because it
reaches into the model library, which the config dataclasses must not.

A run record is the single source of truth for a run's numbers. It holds the resolved
config and its hash, the metrics, the status (``done`` / ``failed`` with the reason), the
scale the numbers belong to (preset, hardware) and provenance (git commit, machine,
versions, wall time). ``load_records`` turns a folder of records into one DataFrame, one row
per run, metrics and selected config keys as columns, for the table notebooks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from rtinst.config import to_dict
from rtinst.config_schema import BackboneConfig
from rtinst.errors import UserError
from rtinst.io import atomic_write_json
from rtinst.provenance import provenance

RECORD_NAME = "record.json"
CURVE_NAME = "curve.json"  # AP at each snapshot, written by training with snapshot_iters
SCHEMA_VERSION = 1
Status = Literal["running", "done", "failed"]


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _hashed_view(cfg: Any) -> Any:
    """Plain data of ``cfg`` without fields marked ``metadata={"hash": False}``; a backbone
    adds the identity of its initial weights (``backbone_init_identity``)."""
    if dataclasses.is_dataclass(cfg):
        view = {
            f.name: _hashed_view(getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)
            if f.metadata.get("hash", True) is True
            or (f.metadata.get("hash") == "if_set" and getattr(cfg, f.name) != _default(f))
        }
        if isinstance(cfg, BackboneConfig):
            # Imported here: the model library pulls in torch, which reading records does not need.
            from rtinst.models.backbones import backbone_init_identity

            view["init"] = backbone_init_identity(cfg)
        return view
    if isinstance(cfg, (list, tuple)):
        return [_hashed_view(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: _hashed_view(v) for k, v in cfg.items()}
    return cfg


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable content hash: same resolved values -> same hash, whatever the YAML spelling."""
    canonical = json.dumps(_hashed_view(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


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


def run_dir_for(cfg: Any, runs_dir: str | Path) -> Path:
    """``<runs_dir>/<model>-<preset>-<hash>``: where ``rtinst train`` and sweeps put a run."""
    return Path(runs_dir) / f"{cfg.model.name}-{cfg.preset}-{config_hash(cfg)}"


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


# --------------------------------------------------------------------------------------
# One run, for people: its training log and metrics (notebooks/run.ipynb; figures: viz.run_report)
# --------------------------------------------------------------------------------------

RUN_METRIC_KEYS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "ar1", "ar10", "ar100",
                   "ar_s", "ar_m", "ar_l")


def read_train_log(run_dir: str | Path) -> pd.DataFrame:
    """``train_log.jsonl`` as a DataFrame (one row per logged step)."""
    path = Path(run_dir) / "train_log.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def metrics_table(record: RunRecord) -> pd.DataFrame:
    """AP family and TIDE dAPs of a record, one row per metric (preset labels the scale)."""
    rows = [{"group": "COCO mask", "metric": k, "value": record.metrics[k]}
            for k in RUN_METRIC_KEYS if k in record.metrics]
    rows += [{"group": "TIDE dAP", "metric": k, "value": v}
             for k, v in record.metrics.items() if k.startswith("tide_")]
    rows += [{"group": "training", "metric": k, "value": record.metrics[k]}
             for k in ("train_iterations", "train_seconds", "step_time_s") if k in record.metrics]
    df = pd.DataFrame(rows)
    df.attrs["preset"] = record.config.get("preset")
    return df
