"""Training curves across runs: mask AP vs minutes and vs steps from each run's ``curve.json``.

A run records its curve when trained with ``train.snapshot_iters`` / ``snapshot_minutes``
(the snapshots' AP plus the final one). Minutes are training time only, measured on the
run's own machine, so a figure mixing machines or busy and idle runs compares steps
honestly and minutes only roughly: both panels are drawn, and the legend names the hardware.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rtinst.errors import UserError
from rtinst.records import CURVE_NAME, read_record
from rtinst.viz.compare import run_label


def curve_table(runs: list[str | Path], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per curve point: ``run`` (label), ``iteration``, ``minutes``, ``ap`` (+ the other
    AP columns the curve holds), ``hardware``. A run without ``curve.json`` is an error
    naming it and how to record one."""
    runs = [Path(r) for r in runs]
    if labels is not None and len(labels) != len(runs):
        raise UserError(f"curve_table: {len(labels)} labels for {len(runs)} runs")
    frames = []
    for i, run in enumerate(runs):
        path = run / CURVE_NAME
        if not path.is_file():
            raise UserError(f"{path}: no training curve (train with -o 'train.snapshot_iters=[...]' "
                            "to record AP during training)")
        try:
            points = json.loads(path.read_text())["points"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a curve file ({exc})") from None
        if not points:
            raise UserError(f"{path}: the curve has no points")
        rec = read_record(run)
        name = labels[i] if labels is not None else run_label(rec)
        frames.append(pd.DataFrame(points).assign(
            run=name, hardware=(rec.provenance or {}).get("hardware", "?")))
    return pd.concat(frames, ignore_index=True)


def training_curve_figure(table: pd.DataFrame, metric: str = "ap", goal: float | None = None,
                          title: str = ""):
    """Two panels, ``metric`` vs training minutes and vs steps, a line per run; an optional
    horizontal ``goal`` line (e.g. the tiny preset's 15-AP goal)."""
    import matplotlib.pyplot as plt

    if table.empty:
        raise UserError("training_curve_figure: no runs")
    if metric not in table.columns:
        raise UserError(f"training_curve_figure: no column {metric!r} (has {list(table.columns)})")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name, part in table.groupby("run", sort=False):
        part = part.sort_values("iteration")
        hw = part["hardware"].iloc[0]
        for ax, x in zip(axes, ("minutes", "iteration")):
            ax.plot(part[x], part[metric], "o-", ms=4, label=f"{name} [{hw}]" if x == "minutes" else None)
    for ax, xlabel in zip(axes, ("training minutes", "training steps")):
        if goal is not None:
            ax.axhline(goal, color="grey", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mask {metric.upper()} (val)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title or f"mask {metric.upper()} during training", fontsize=10)
    fig.tight_layout()
    return fig
