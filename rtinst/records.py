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
CURVE_NAME = "curve.json"  # AP at each snapshot, written by training with snapshot_iters
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
# One run, for people: the loss curve, a few predictions, the metrics (notebooks/run.ipynb)
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


def plot_loss_curve(run_dir: str | Path):
    """Total loss and each loss term against the iteration (None when nothing was logged)."""
    import matplotlib.pyplot as plt

    log = read_train_log(run_dir)
    if log.empty:
        return None
    # Small, low-dpi figures without tight_layout: they are drawn once per run by papermill.
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=72)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.9)
    for col in [c for c in log.columns if c.startswith("loss")]:
        ax.plot(log["iter"], log[col], label=col, lw=2 if col == "loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(Path(run_dir).name, fontsize=9)
    return fig


def plot_predictions(run_dir: str | Path, n: int = 3, min_score: float = 0.3, max_masks: int = 20):
    """Predicted masks (from ``coco_segm_results.json``) over ``n`` val images."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    run_dir = Path(run_dir)
    results_path = run_dir / "coco_segm_results.json"
    if not results_path.is_file():
        return None
    rec = read_record(run_dir)
    data = rec.config.get("data", {})
    root = Path(data.get("root", ""))
    gt = json.loads((root / data.get("val_ann", "")).read_text())
    files = {im["id"]: root / data.get("val_images", "") / im["file_name"] for im in gt["images"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    results = json.loads(results_path.read_text())
    by_image: dict[int, list] = {}
    for r in sorted(results, key=lambda r: -r["score"]):
        if r["score"] >= min_score:
            by_image.setdefault(r["image_id"], []).append(r)
    image_ids = [i for i in files if i in by_image][:n] or list(files)[:n]
    fig, axes = plt.subplots(1, max(1, len(image_ids)), figsize=(3.5 * max(1, len(image_ids)), 3.6),
                             dpi=72)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.03)
    colors = plt.get_cmap("tab20")
    for ax, image_id in zip(np.atleast_1d(axes), image_ids):
        image = np.asarray(Image.open(files[image_id]).convert("RGB"), dtype=float) / 255
        for k, r in enumerate(by_image.get(image_id, [])[:max_masks]):
            m = mask_utils.decode(r["segmentation"]).astype(bool)
            image[m] = 0.5 * image[m] + 0.5 * np.array(colors(k % 20)[:3])
            ys, xs = np.nonzero(m)
            if len(xs):
                ax.text(xs.min(), ys.min(), f"{names.get(r['category_id'], r['category_id'])} "
                        f"{r['score']:.2f}", fontsize=6, color="white",
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        ax.imshow(image)
        ax.set_title(f"image {image_id}: {len(by_image.get(image_id, []))} masks >= {min_score}",
                     fontsize=8)
        ax.axis("off")
    return fig
