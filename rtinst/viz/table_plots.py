"""Plots of the comparison tables: one figure per paper table, and each paper's Figure 1.

Paper numbers (COCO, the paper's hardware) and ours (a preset such as tiny, trained on this
2-core CPU) differ by an order of magnitude, so they never share a y axis: a twin axis would
draw 30.0 and 13.4 as equal bars and blow a 0.2-AP spread up to the full height. Each
accuracy metric gets one row of panels:

A. the paper's values on the paper's scale;
B. ours on the preset's scale, with the seed std;
C. (when the spec has a baseline row) the difference of every row to the baseline, paper and
   ours on one shared axis -- what an ablation is about -- with the band of our noise that
   the claims' verdicts use (:func:`rtinst.harness.tables.seed_noise`): an ours-delta inside
   the band is "within noise".

Cost metrics (GFLOPs, latency shares) are measured at the paper's input size, so paper and
ours share one panel. Legends sit below the panels (``fig.legend``), never over data.
:func:`save_table_figure` draws a reproduced table (:class:`rtinst.harness.tables.TableResult`)
into the PNG beside its CSV; :func:`plot_speed_accuracy` and :func:`plot_figure1` redraw the
speed-accuracy figures from our paper-scale cost columns, labels placed with adjustText.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rtinst.harness.table_spec import TableSpec, row_values
from rtinst.harness.tables import TableResult, seed_noise
from rtinst.io import atomic_path

HARDWARE = "this 2-core CPU"
PAPER_SCALE = "COCO, as published"
_HARDWARE_BOUND = ("_ms", "_pct", "fps")  # cost columns that depend on the machine
NOISE_LABEL = "ours: +- the noise a difference must exceed (claims' verdicts)"


def scale_label(preset: str) -> str:
    """How our accuracy numbers are labelled: the preset and the machine they ran on."""
    return f"{preset}, {HARDWARE}"


def _row_values(spec: TableSpec, table: pd.DataFrame, column: str) -> pd.Series:
    """Each table row's ``column``: its paper CSV cell, or in an own ablation the config
    value its overrides set."""
    return pd.Series(row_values(spec, [spec.row(label) for label in table["row"]], column))


def _paper_x(spec: TableSpec, table: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(_row_values(spec, table, column), errors="coerce")


def _paper_group(spec: TableSpec, table: pd.DataFrame, column: str | None) -> pd.Series:
    if not column:
        return pd.Series([""] * len(table))
    return _row_values(spec, table, column)


def _num(table: pd.DataFrame, column: str) -> pd.Series:
    if column not in table:
        return pd.Series(np.nan, index=table.index)
    return pd.to_numeric(table[column], errors="coerce")


def delta_noise(spec: TableSpec, table: pd.DataFrame, metric: str) -> pd.Series:
    """Per row, the noise its difference to the baseline row must exceed (as the claims'
    verdicts compute it); NaN without a baseline."""
    if spec.baseline is None:
        return pd.Series(np.nan, index=table.index)
    return pd.Series([seed_noise(spec, table, r, spec.baseline, metric)[0] for r in table["row"]],
                     index=table.index)


def _metrics(spec: TableSpec, table: pd.DataFrame) -> list[str]:
    cfg = dict(spec.plot)
    metrics = cfg.get("metrics") or ([spec.metrics[0]] if spec.metrics else []) + (
        ["gflops"] if "gflops" in spec.cost_metrics else [])
    return [m for m in metrics
            if f"paper_{m}" in table or f"ours_{m}" in table or f"ours_{m}_mean" in table]


def _series(ax, x, y, err, groups, style: str, who: str, band=None):
    """One line per group of ``y`` against ``x`` (sorted by x); ``band`` shades +-band
    around 0 in the group's colour."""
    for i, g in enumerate(dict.fromkeys(groups)):
        sel = (groups == g).to_numpy()
        order = np.argsort(x[sel].to_numpy(), kind="stable")
        xs = x[sel].to_numpy()[order]
        color = f"C{i}" if g else ("C0" if who == "paper" else "C1")
        name = f"{who} {g}".strip()
        if band is not None:
            b = band[sel].to_numpy()[order]
            ax.fill_between(xs, -b, b, color="0.75", alpha=0.5, lw=0, zorder=0, label=NOISE_LABEL)
        ax.errorbar(xs, y[sel].to_numpy()[order],
                    yerr=None if err is None else err[sel].fillna(0).to_numpy()[order],
                    fmt=style, capsize=3, color=color, label=name,
                    alpha=0.75 if who == "paper" else 1.0)


def _bars(ax, labels, series: list[tuple[str, pd.Series, pd.Series | None, str]], band=None):
    """Grouped bars, one group per row; ``band`` draws +-band around 0 behind ours."""
    pos = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for k, (name, y, err, color) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        if band is not None and name.startswith("ours"):
            ax.bar(pos + offset, 2 * band.to_numpy(), width * 1.15, bottom=-band.to_numpy(),
                   color="0.8", zorder=0, label=NOISE_LABEL)
        ax.bar(pos + offset, y.to_numpy(), width, yerr=None if err is None else err.fillna(0).to_numpy(),
               color=color, capsize=3, label=name, alpha=0.75 if name.startswith("paper") else 1.0)
    ax.set_xticks(pos, labels, rotation=30, ha="right", fontsize=7)


def _panel(ax, spec, t, x, groups, who, y, err=None, band=None, style="s-"):
    if x is not None:
        _series(ax, x, y, err, groups, style, who, band)
    else:
        color = "C0" if who == "paper" else "C1"
        _bars(ax, list(t["row"]), [(who, y, err, color)])


def _accuracy_row(axes, spec: TableSpec, t: pd.DataFrame, m: str, preset: str, x, groups) -> None:
    own = spec.paper_csv is None  # an own ablation: no paper numbers to draw
    panels = iter(axes)
    if not own:
        ax = next(panels)
        _panel(ax, spec, t, x, groups, "paper", _num(t, f"paper_{m}"), style="o--")
        ax.set_ylabel(f"paper {m}")
        ax.set_title(f"A. paper {m} ({PAPER_SCALE})", fontsize=9)
    ax = next(panels)
    _panel(ax, spec, t, x, groups, "ours", _num(t, f"ours_{m}_mean"), _num(t, f"ours_{m}_std"))
    ax.set_ylabel(f"ours {m} ({preset})")
    ax.set_title(f"{'B' if not own else 'A'}. ours {m} ({scale_label(preset)}), +- seed std", fontsize=9)
    if spec.baseline is None:
        return
    ax = next(panels)
    paper_d, ours_d = _num(t, f"paper_{m}_vs_base"), _num(t, f"ours_{m}_vs_base")
    band = delta_noise(spec, t, m).where(ours_d.notna())  # no band where we have no number
    if x is not None:
        if not own:
            _series(ax, x, paper_d, None, groups, "o--", "paper")
        _series(ax, x, ours_d, None, groups, "s-", "ours", band)
    else:
        bars = ([] if own else [("paper", paper_d, None, "C0")]) + [("ours", ours_d, None, "C1")]
        _bars(ax, list(t["row"]), bars, band)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_ylabel(f"{m} minus baseline row ({m} points)")
    who = "ours" if own else "paper and ours"
    # the baseline label can be long: on its own line, so the title stays within the panel
    ax.set_title(f"{'C' if not own else 'B'}. {m} vs baseline: {who}, one axis\n"
                 f"baseline: {spec.baseline}", fontsize=9)


def _cost_panel(ax, spec: TableSpec, t: pd.DataFrame, m: str, x, groups) -> None:
    ours_where = f"paper-scale input, {HARDWARE}" if m.endswith(_HARDWARE_BOUND) else "paper-scale input"
    own = spec.paper_csv is None
    if x is not None:
        if not own:
            _series(ax, x, _num(t, f"paper_{m}"), None, groups, "o--", "paper")
        _series(ax, x, _num(t, f"ours_{m}"), None, groups, "s-", "ours")
    else:
        bars = ([] if own else [("paper", _num(t, f"paper_{m}"), None, "C0")]) + [
            ("ours", _num(t, f"ours_{m}"), None, "C1")]
        _bars(ax, list(t["row"]), bars)
    ax.set_ylabel(m)
    ax.set_title(f"{m}: {'' if own else 'paper (as published) and'}\nours ({ours_where})", fontsize=9)


def _figure_legend(fig, axes) -> None:
    """One legend for the figure, below all panels, each label once."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncol=min(len(seen), 4), fontsize=7, frameon=False)


def plot_table(spec: TableSpec, table: pd.DataFrame, preset: str = "tiny"):
    """One figure per table: a row of panels per metric (see the module doc); None when the
    table has nothing to plot."""
    import matplotlib.pyplot as plt

    cfg = dict(spec.plot)
    if cfg.get("kind") == "speed_accuracy":
        return plot_speed_accuracy(spec, table, preset)
    metrics = _metrics(spec, table)
    if not metrics:
        return None
    own = spec.paper_csv is None
    n_acc = (1 if own else 2) + (spec.baseline is not None)
    ncols = max(n_acc if m in spec.metrics else 1 for m in metrics)
    bar = cfg.get("kind") == "bar" or not cfg.get("x")
    t = table if bar else table[table["implemented"]].reset_index(drop=True)
    if bar and len(metrics) > 1 and not any(m in spec.metrics for m in metrics):
        shape = (1, len(metrics))  # cost-only bar tables: one panel per metric, side by side
    else:
        shape = (len(metrics), ncols)
    fig, grid = plt.subplots(*shape, figsize=(4.3 * shape[1], 3.0 * shape[0] + 0.7),
                             squeeze=False, layout="constrained")
    x = None if bar else _paper_x(spec, t, cfg["x"])
    groups = _paper_group(spec, t, cfg.get("group"))
    cells = [list(r) for r in grid] if shape[0] == len(metrics) else [[a] for a in grid[0]]
    for row, m in zip(cells, metrics):
        if m in spec.metrics:
            _accuracy_row(row, spec, t, m, preset, x, groups)
            used = n_acc
        else:
            _cost_panel(row[0], spec, t, m, x, groups)
            used = 1
        for ax in row[:used]:
            if x is not None:
                ax.set_xlabel(cfg["x"])
        for ax in row[used:]:
            ax.set_axis_off()
    _figure_legend(fig, grid.ravel())
    fig.suptitle(f"{spec.paper} {spec.title}", fontsize=10)
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


ADJUST_ITERATIONS = 1000


def _labelled_scatter(ax, xs, ys, labels, **style) -> None:
    """Points with their row labels, moved apart by adjustText so none overlap."""
    from adjustText import adjust_text

    ax.scatter(xs, ys, **style)
    texts = [ax.text(x, y, str(label), fontsize=6) for x, y, label in zip(xs, ys, labels)]
    if texts:
        # an iteration budget, not adjustText's default 1-second one: the same table draws
        # the same figure on a busy machine
        adjust_text(texts, x=np.asarray(xs, float), y=np.asarray(ys, float), ax=ax,
                    iter_lim=ADJUST_ITERATIONS, arrowprops=dict(arrowstyle="-", color="0.5", lw=0.5))


def _speed_accuracy_panels(axes, t: pd.DataFrame, x: str, y: str, preset: str, paper_label: str):
    panels = [(f"paper {y} ({paper_label})", f"paper_{y}", "o", "C0"),
              (f"ours {y} ({scale_label(preset)})", f"ours_{y}_mean", "s", "C1")]
    for ax, (who, col, marker, color) in zip(axes, panels):
        if f"ours_{x}" not in t or col not in t:
            ax.set_axis_off()
            continue
        ok = t[pd.to_numeric(t[f"ours_{x}"], errors="coerce").notna()
               & pd.to_numeric(t[col], errors="coerce").notna()]
        _labelled_scatter(ax, ok[f"ours_{x}"].astype(float), ok[col].astype(float), ok["row"],
                          marker=marker, color=color, label=who)
        ax.set_xlabel(f"our {x} (paper-scale input, random weights)")
        ax.set_ylabel(who)
        ax.set_title(f"{who} vs our {x}", fontsize=9)


def plot_speed_accuracy(spec: TableSpec, table: pd.DataFrame, preset: str = "tiny"):
    """Speed-accuracy (each paper's Figure 1) from our paper-scale cost columns: the paper's
    AP and ours, each on its own panel, against our GFLOPs; methods outside rtinst have no
    measured cost and are not drawn."""
    import matplotlib.pyplot as plt

    cfg = dict(spec.plot)
    x, y = cfg.get("x", "gflops"), cfg.get("y", spec.metrics[0] if spec.metrics else "ap")
    t = table[table["implemented"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    _speed_accuracy_panels(axes, t, x, y, preset, PAPER_SCALE)
    _figure_legend(fig, axes)
    fig.suptitle(f"{spec.paper} {spec.title}", fontsize=10)
    return fig


def plot_figure1(saved: dict[str, tuple[pd.DataFrame, pd.DataFrame]], preset: str):
    """Each paper's Figure 1 (speed-accuracy), regenerated: one column per paper's Table 1,
    the paper's AP on top and ours at the preset below (two scales, two panels), against our
    GFLOPs measured at paper scale."""
    import matplotlib.pyplot as plt

    names = [n for n in saved if n.endswith("table1_testdev")]
    if not names:
        return None
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 7.6), squeeze=False,
                             layout="constrained")
    for col, name in enumerate(names):
        t = saved[name][0]
        t = t[t["implemented"].astype(str).str.lower() == "true"] if "implemented" in t else t
        _speed_accuracy_panels(axes[:, col], t, "gflops", "ap", preset, "COCO test-dev, as published")
        axes[0, col].set_title(f"{name.split('/')[0]}: paper AP vs our GFLOPs", fontsize=9)
        axes[1, col].set_title(f"{name.split('/')[0]}: ours AP ({scale_label(preset)})", fontsize=9)
    _figure_legend(fig, axes.ravel())
    fig.suptitle("Figure 1 of each paper, from our paper-scale cost columns", fontsize=10)
    return fig
