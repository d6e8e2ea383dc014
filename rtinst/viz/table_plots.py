"""Plots of the comparison tables: one figure per paper table, and each paper's Figure 1.

:func:`plot_table` draws a table's metrics (the paper's dashed, ours solid with the seed std)
against the spec's x column or as bars per row; :func:`save_table_figure` draws it for a
reproduced table (:class:`rtinst.harness.tables.TableResult`) into the PNG beside its CSV.
:func:`plot_speed_accuracy` and :func:`plot_figure1` redraw the speed-accuracy figures from
our paper-scale cost columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rtinst.harness.specs import TableSpec, row_values
from rtinst.harness.tables import TableResult
from rtinst.io import atomic_path


def _row_values(spec: TableSpec, table: pd.DataFrame, column: str) -> pd.Series:
    """Each table row's ``column``: its paper CSV cell, or in an own ablation the config
    value its overrides set."""
    return pd.Series(row_values(spec, [spec.row(label) for label in table["row"]], column))


def _paper_x(spec: TableSpec, table: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(_row_values(spec, table, column), errors="coerce")


def plot_table(spec: TableSpec, table: pd.DataFrame, preset: str = "tiny"):
    """One figure per table: metrics against the plot's x column (or per row as bars);
    paper dashed, ours solid with seed std; accuracy on twin axes (different scales)."""
    import matplotlib.pyplot as plt

    cfg = dict(spec.plot)
    if cfg.get("kind") == "speed_accuracy":
        return plot_speed_accuracy(spec, table, preset)
    metrics = cfg.get("metrics") or ([spec.metrics[0]] if spec.metrics else []) + (
        ["gflops"] if "gflops" in spec.cost_metrics else [])
    metrics = [m for m in metrics if f"paper_{m}" in table or f"ours_{m}" in table or f"ours_{m}_mean" in table]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.6), squeeze=False)
    x_col = cfg.get("x")
    own = spec.paper_csv is None  # an own ablation: no paper numbers to draw
    t = table[table["implemented"]].reset_index(drop=True) if cfg.get("kind") != "bar" else table
    for ax, m in zip(axes[0], metrics):
        accuracy = m in spec.metrics
        ours = t[f"ours_{m}_mean"] if accuracy else t.get(f"ours_{m}", pd.Series(np.nan, index=t.index))
        err = t[f"ours_{m}_std"] if accuracy else None
        paper = t.get(f"paper_{m}", pd.Series(np.nan, index=t.index))
        ax2 = ax.twinx() if accuracy and not own else ax
        if x_col and cfg.get("kind") != "bar":
            x = _paper_x(spec, t, x_col)
            groups = _paper_group(spec, t, cfg.get("group"))
            for i, g in enumerate(dict.fromkeys(groups)):
                sel = (groups == g).to_numpy()
                order = np.argsort(x[sel].to_numpy())
                name = f" {g}" if g else ""
                c_paper, c_ours = (f"C{i}", f"C{i}") if g else ("C0", "C1")
                if not own:
                    ax.plot(x[sel].to_numpy()[order], paper[sel].to_numpy()[order], "o--",
                            alpha=0.6, color=c_paper, label=f"paper{name}")
                ax2.errorbar(x[sel].to_numpy()[order], ours[sel].to_numpy()[order],
                             yerr=None if err is None else err[sel].fillna(0).to_numpy()[order],
                             fmt="s-", capsize=3, color=c_ours, label=f"ours{name}")
            ax.set_xlabel(x_col)
        else:
            pos = np.arange(len(t))
            if not own:
                ax.bar(pos - 0.2, paper, 0.4, label="paper", alpha=0.7)
            ax2.bar(pos + (0 if own else 0.2), ours, 0.4, yerr=None if err is None else err.fillna(0),
                    color="C1", label="ours", capsize=3)
            ax.set_xticks(pos, t["row"], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"paper {m}" if accuracy else m)
        if accuracy:
            ax2.set_ylabel(f"ours {m} ({preset})", color="C1")
        title = f"{m} ({'paper scale' if not accuracy else preset})"
        ax.set_title(title, fontsize=9)
        handles = ax.get_legend_handles_labels()
        if ax2 is not ax:
            h2 = ax2.get_legend_handles_labels()
            handles = (handles[0] + h2[0], handles[1] + h2[1])
        ax.legend(*handles, fontsize=7)
    fig.suptitle(f"{spec.paper} {spec.title}", fontsize=10)
    fig.tight_layout()
    return fig


def save_table_figure(result: TableResult) -> Path | None:
    """Draw ``result``'s table once, into its PNG (``result.paths["figure"]``), and set
    ``result.figure`` to that file (notebooks show the file, not a second rendering).
    None when the table has nothing to plot."""
    import matplotlib.pyplot as plt

    fig = plot_table(result.spec, result.table, result.preset)
    if fig is None:
        return None
    with atomic_path(result.paths["figure"]) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    result.figure = result.paths["figure"]
    return result.figure


def _paper_group(spec: TableSpec, table: pd.DataFrame, column: str | None) -> pd.Series:
    if not column:
        return pd.Series([""] * len(table))
    return _row_values(spec, table, column)


def plot_speed_accuracy(spec: TableSpec, table: pd.DataFrame, preset: str = "tiny"):
    """Speed-accuracy (each paper's Figure 1) from our paper-scale cost columns: the paper's
    AP and ours against our GFLOPs; methods outside rtinst have no measured cost."""
    import matplotlib.pyplot as plt

    cfg = dict(spec.plot)
    x, y = cfg.get("x", "gflops"), cfg.get("y", spec.metrics[0] if spec.metrics else "ap")
    t = table[table["implemented"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (who, col) in zip(axes, [("paper", f"paper_{y}"), (f"ours ({preset})", f"ours_{y}_mean")]):
        if f"ours_{x}" not in t or col not in t:
            continue
        ax.scatter(t[f"ours_{x}"], t[col])
        for _, r in t.iterrows():
            if pd.notna(r[f"ours_{x}"]) and pd.notna(r[col]):
                ax.annotate(r["row"], (r[f"ours_{x}"], r[col]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(f"our {x} (paper scale, random weights)")
        ax.set_ylabel(f"{who} {y}")
        ax.set_title(f"{who} {y} vs our {x}", fontsize=9)
    fig.suptitle(f"{spec.paper} {spec.title}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_figure1(saved: dict[str, tuple[pd.DataFrame, pd.DataFrame]], preset: str):
    """Each paper's Figure 1 (speed-accuracy), regenerated: AP (paper, and ours at the preset)
    against our GFLOPs measured at paper scale, one panel per paper's Table 1."""
    import matplotlib.pyplot as plt

    names = [n for n in saved if n.endswith("table1_testdev")]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        t = saved[name][0]
        t = t[t["implemented"].astype(str).str.lower() == "true"] if "implemented" in t else t
        if "ours_gflops" not in t:
            continue
        ax.scatter(t["ours_gflops"], t["paper_ap"], label="paper AP", marker="o")
        if "ours_ap_mean" in t and t["ours_ap_mean"].notna().any():
            ax2 = ax.twinx()
            ax2.scatter(t["ours_gflops"], t["ours_ap_mean"], color="C1", marker="s",
                        label=f"ours AP ({preset})")
            ax2.set_ylabel(f"ours AP ({preset})", color="C1")
        for _, r in t.iterrows():
            if pd.notna(r["ours_gflops"]) and pd.notna(r["paper_ap"]):
                ax.annotate(r["row"], (r["ours_gflops"], r["paper_ap"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("our GFLOPs (paper scale)")
        ax.set_ylabel("paper AP")
        ax.set_title(f"{name.split('/')[0]}: Figure 1 from our cost columns", fontsize=9)
    fig.tight_layout()
    return fig
