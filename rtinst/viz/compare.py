"""Figures across runs: TIDE error breakdowns (SparseInst Figure 7 style), speed vs accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rtinst.errors import UserError
from rtinst.records import RunRecord, read_record

TIDE_ERRORS = ("cls", "loc", "both", "dupe", "bkg", "miss")
TIDE_NAMES = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg",
              "miss": "Miss", "fp": "FP", "fn": "FN"}


def run_label(record: RunRecord) -> str:
    return f"{record.config['model']['name']} ({record.config.get('preset', '?')}, {record.config_hash[:6]})"


def tide_table(runs: list[str | Path | RunRecord], labels: list[str] | None = None) -> pd.DataFrame:
    """dAP per TIDE error type (rows: runs; columns Cls..Miss, FP, FN; plus AP50 and AP).

    A run evaluated without TIDE (``eval.tide=false``) is an error naming it.
    """
    records = [r if isinstance(r, RunRecord) else read_record(r) for r in runs]
    if labels is not None and len(labels) != len(records):
        raise UserError(f"tide_table: {len(labels)} labels for {len(records)} runs")
    rows = {}
    for i, rec in enumerate(records):
        m = rec.metrics or {}
        if "tide_cls" not in m:
            raise UserError(f"run {rec.config_hash} ({rec.config['model']['name']}): no TIDE numbers "
                            "in its record (evaluated with eval.tide=false?)")
        name = labels[i] if labels is not None else run_label(rec)
        rows[name] = {**{TIDE_NAMES[k]: m[f"tide_{k}"] for k in (*TIDE_ERRORS, "fp", "fn")},
                      "AP50": m.get("tide_ap50", m.get("ap50")), "AP": m.get("ap")}
    return pd.DataFrame.from_dict(rows, orient="index")


def tide_comparison_figure(table: pd.DataFrame, title: str = ""):
    """Grouped bars of dAP (AP50 gained by fixing each error type) for every run in ``table``;
    a second panel with the false-positive / false-negative totals."""
    import matplotlib.pyplot as plt

    if table.empty:
        raise UserError("tide_comparison_figure: no runs")
    main = [TIDE_NAMES[k] for k in TIDE_ERRORS]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    n = len(table)
    width = 0.8 / n
    x = np.arange(len(main))
    colors = plt.get_cmap("tab10")
    for i, (name, row) in enumerate(table.iterrows()):
        ax.bar(x + (i - (n - 1) / 2) * width, row[main].astype(float), width, label=name, color=colors(i % 10))
        ax2.bar(np.arange(2) + (i - (n - 1) / 2) * width, row[["FP", "FN"]].astype(float), width,
                color=colors(i % 10))
    ax.set_xticks(x, main)
    ax.set_ylabel("dAP50 (AP gained if the error were fixed)")
    ax.set_title("Main errors", fontsize=9)
    ax.legend(fontsize=7)
    ax2.set_xticks(np.arange(2), ["FP", "FN"])
    ax2.set_ylabel("dAP50")
    ax2.set_title("Special errors", fontsize=9)
    for a in (ax, ax2):
        a.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "TIDE error breakdown (mask)", fontsize=10)
    fig.tight_layout()
    return fig


def speed_accuracy_figure(table: pd.DataFrame, x: str = "fps", y: str = "ap", label: str = "row",
                          group: str | None = None, title: str = "", xlabel: str | None = None,
                          ylabel: str | None = None):
    """AP vs speed (or GFLOPs) per run, points labelled, connected within each ``group``."""
    import matplotlib.pyplot as plt

    missing = [c for c in (x, y, label, group) if c is not None and c not in table.columns]
    if missing:
        raise UserError(f"speed_accuracy_figure: columns {missing} not in the table "
                        f"(has {list(table.columns)})")
    data = table.dropna(subset=[x, y])
    if data.empty:
        raise UserError(f"speed_accuracy_figure: no row has both {x!r} and {y!r}")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = data.groupby(group, sort=False) if group else [("", data)]
    for g, part in groups:
        part = part.sort_values(x)
        ax.plot(part[x], part[y], "o-", label=str(g) if group else None, ms=5)
        for _, r in part.iterrows():
            ax.annotate(str(r[label]), (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.grid(alpha=0.3)
    if group:
        ax.legend(fontsize=8)
    ax.set_title(title or f"{y} vs {x}", fontsize=10)
    fig.tight_layout()
    return fig


def speed_accuracy_points(saved: dict[str, tuple[pd.DataFrame, pd.DataFrame]], x: str = "gflops",
                          y: str = "ap") -> pd.DataFrame:
    """Every implemented row of the saved tables (``rtinst.harness.tables.load_saved``) that has our
    accuracy ``y`` (mean over seeds) and our paper-scale cost ``x``: table, row, x, y."""
    frames = []
    for name, (table, _) in saved.items():
        cols = {f"ours_{x}": x, f"ours_{y}_mean": y}
        if not set(cols) <= set(table.columns):
            continue
        part = table[table["implemented"].astype(bool)].rename(columns=cols)[["row", x, y]]
        frames.append(part.assign(table=name).dropna(subset=[x, y]))
    if not frames:
        return pd.DataFrame(columns=["table", "row", x, y])
    return pd.concat(frames, ignore_index=True)


def has_tide(run_dir: str | Path) -> bool:
    """Whether a finished run's record carries TIDE numbers."""
    rec = read_record(run_dir)
    return rec.status == "done" and "tide_cls" in (rec.metrics or {})
