"""Comparison tables: the paper's numbers and ours side by side, claims judged, saved.

For one spec, :func:`build_table` gives one row per table row with, for every metric ``m``:
``paper_m``, ``ours_m_mean``, ``ours_m_std`` (over seeds), ``ours_m`` ("mean ± std"),
``delta_m`` (ours - paper) and ``ours_m_vs_base`` / ``paper_m_vs_base`` (the change against
the table's baseline row, which is what an ablation is about). Cost columns are measured at
paper scale (``ours_gflops`` next to ``paper_gflops``); latency is labelled CPU or GPU.

:func:`judge_claims` checks every claim of the spec (``a op b`` on a metric) on our numbers:
``reproduced``, ``not reproduced`` (the opposite direction, beyond noise) or ``within noise``.
Noise is the spread of a difference of two runs, sqrt(std_a^2 + std_b^2) over seeds; with a
single seed, that of the ``noise_from`` seed-noise runs (:mod:`rtinst.harness.claim_noise`),
else the spec's fixed ``tolerance``; cost columns are deterministic and use a
relative ``cost_tolerance``. A claim's own ``tolerance`` is a floor on the noise.

:func:`reproduce_table` is what a table notebook calls: sweep (cached runs are reused), build,
judge, save CSV + parquet. This module returns data; the table's figure is drawn from it by
:func:`rtinst.viz.table_plots.save_table_figure` (the PNG next to the CSV).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rtinst import paths
from rtinst.harness.paper_tables import paper_numbers, read_paper_csv
from rtinst.harness.params import parse_overrides
from rtinst.harness.claim_noise import claim_noise, claim_references, load_references, missing_note
from rtinst.harness.specs import PAPERS, load_spec
from rtinst.harness.table_spec import TableSpec
from rtinst.harness.table_runs import collect_runs, metric_values  # collect_runs: re-exported
from rtinst.io import atomic_path

REPRODUCED, NOT_REPRODUCED, WITHIN_NOISE = "reproduced", "not reproduced", "within noise"
NO_DATA, NOT_IMPLEMENTED = "no data", "not implemented"
# both rows of an accuracy claim come from the same trained run at this preset (e.g. input
# sizes or backbones that exist at paper scale only): the comparison cannot be made here
NOT_TESTABLE = "not testable at this scale"
SCALE_NOTE = {
    "smoke": "smoke preset: a seconds-long test scale, the numbers mean nothing",
    "tiny": "tiny preset: embedded synthetic data, small backbone, CPU minutes",
    "coco": "coco preset: the papers' setting",
}


# ---------------------------------------------------------------------------- collect


# fp32 on CPU or GPU; fp16 (a .half() model) only where a GPU timed it
LATENCY_COLUMNS = ("latency_ms", "fps", "latency_fp16_ms", "fps_fp16")


def _cost_row(data: dict) -> dict:
    out = {k: data[k] for k in ("gflops", "params_m", *LATENCY_COLUMNS, "latency_kind")
           if k in data}
    bd = data.get("breakdown")
    if bd:
        out.update({f"{k}_ms": v for k, v in bd["ms"].items()})
        out.update({f"{k}_pct": v for k, v in bd["pct"].items()})
        out["breakdown_kind"] = bd["kind"]
    return out


def collect_costs(spec: TableSpec, plan) -> pd.DataFrame:
    """One row per implemented table row: the cached paper-scale cost measurement."""
    rows = []
    for row in spec.implemented_rows:
        job = plan.cost_for(spec.id, row.label)
        data = job.data() if job else None
        rows.append({"label": row.label, **(_cost_row(data) if data else {})})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ build


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def _status(group: pd.DataFrame | None, n_seeds: int) -> str:
    if group is None or group.empty:
        return "no runs"
    done = int((group["status"] == "done").sum())
    failed = group[group["status"] == "failed"]
    text = f"{done}/{len(group)} done"
    if len(failed):
        reason = str(failed["error"].iloc[0] or "").strip().splitlines()
        text += f", {len(failed)} failed: {reason[0][:120] if reason else '?'}"
    return text


def build_table(spec: TableSpec, runs: pd.DataFrame, costs: pd.DataFrame | None = None,
                preset: str = "tiny") -> pd.DataFrame:
    """The comparison table (one row per spec row, in the spec's order); see the module doc."""
    # an own ablation (no paper_csv) keeps the paper columns, empty
    csv = read_paper_csv(spec.paper_csv) if spec.paper_csv is not None else pd.DataFrame(index=[-1])
    paper_cols = list(dict.fromkeys(spec.metrics + spec.paper_cost_columns
                                    + [m for m in spec.cost_metrics if m in csv.columns]))
    paper = paper_numbers(csv, paper_cols)
    done = runs[runs["status"] == "done"] if len(runs) else runs
    costs = costs if costs is not None and len(costs) else pd.DataFrame({"label": []})
    out = []
    for row in spec.rows:
        entry: dict[str, Any] = {"row": row.label, "implemented": row.implemented,
                                 "paper_row": row.paper_row}
        at = row.paper_row if row.paper_row is not None else -1
        group = runs[runs["label"] == row.label] if len(runs) else None
        ours = done[done["label"] == row.label] if len(done) else done
        if not row.implemented:
            entry["status"] = NOT_IMPLEMENTED
        elif spec.metrics:
            entry["status"] = _status(group, len(group) if group is not None else 0)
        else:
            entry["status"] = "cost only"
        entry["n_seeds"] = len(ours) if row.implemented else 0
        entry["runs"] = (" ".join(sorted(set(group["config_hash"])))
                         if row.implemented and group is not None and "config_hash" in group else "")
        for m in spec.metrics:
            p = paper.at[at, m]
            entry[f"paper_{m}"] = p
            vals = metric_values(ours, m)
            mean = float(vals.mean()) if len(vals) else np.nan
            std = float(vals.std(ddof=1)) if len(vals) > 1 else (0.0 if len(vals) else np.nan)
            entry[f"ours_{m}_mean"], entry[f"ours_{m}_std"] = mean, std
            entry[f"ours_{m}"] = _fmt(mean, std, len(vals))
            entry[f"delta_{m}"] = mean - p if pd.notna(p) and pd.notna(mean) else np.nan
        for c in spec.paper_cost_columns:
            entry[f"paper_{c}"] = paper.at[at, c]
        crow = costs[costs["label"] == row.label] if "label" in costs else costs.iloc[0:0]
        for m in spec.cost_metrics:
            v = crow[m].iloc[0] if m in crow.columns and len(crow) else np.nan
            entry[f"ours_{m}"] = v
            if m in paper.columns and m not in spec.metrics:
                entry.setdefault(f"paper_{m}", paper.at[at, m])
                p = entry[f"paper_{m}"]
                if m in ("gflops", "params_m") or m.endswith("_pct"):  # not times: other hardware
                    entry[f"delta_{m}"] = v - p if pd.notna(p) and pd.notna(v) else np.nan
        for m in LATENCY_COLUMNS:  # measured on request (--latency): CPU or GPU, labelled
            if m not in spec.cost_metrics and m in crow.columns and len(crow):
                entry[f"ours_{m}"] = crow[m].iloc[0]
        for kind in ("latency_kind", "breakdown_kind"):
            if kind in crow.columns and len(crow):
                entry[kind] = crow[kind].iloc[0]
        entry["note"] = _row_note(row, preset)
        out.append(entry)
    table = pd.DataFrame(out)
    _add_vs_baseline(spec, table)
    table.attrs.update(spec=spec.id, preset=preset, scale=SCALE_NOTE.get(preset, preset))
    return table


def _row_note(row, preset: str) -> str:
    notes = [row.note] if row.note else []
    if row.implemented and row.paper_scale_overrides and preset != "coco":
        notes.append(f"at {preset}, accuracy comes from the {preset} model; "
                     f"{', '.join(row.paper_scale_overrides)} apply at paper scale only")
    if row.eval_of:
        notes.append(f"evaluation-only: the model trained for {row.eval_of!r}")
    return "; ".join(notes)


def _add_vs_baseline(spec: TableSpec, table: pd.DataFrame) -> None:
    if spec.baseline is None:
        return
    base = table[table["row"] == spec.baseline].iloc[0]
    for m in spec.metrics + [c for c in spec.cost_metrics if c == "gflops"]:
        for who in ("paper", "ours"):
            col = f"{who}_{m}_mean" if who == "ours" and m in spec.metrics else f"{who}_{m}"
            if col in table:
                table[f"{who}_{m}_vs_base"] = pd.to_numeric(table[col], errors="coerce") - pd.to_numeric(
                    pd.Series([base[col]]), errors="coerce").iloc[0]


# ----------------------------------------------------------------------------- claims


def _value(table: pd.DataFrame, label: str, column: str) -> float:
    row = table[table["row"] == label]
    if row.empty or column not in row:
        return np.nan
    v = pd.to_numeric(row[column], errors="coerce").iloc[0]
    return float(v) if pd.notna(v) else np.nan


def _directed(op: str, diff: float) -> float:
    """The difference a - b as the claim reads it: |a - b| for ~, a - b for >, b - a for <."""
    return abs(diff) if op == "~" else (diff if op == ">" else -diff)


def verdict(op: str, diff: float, noise: float) -> str:
    if diff is None or math.isnan(diff):
        return NO_DATA
    d = _directed(op, diff)
    if op == "~":
        return REPRODUCED if d <= noise else NOT_REPRODUCED
    if d > noise:
        return REPRODUCED
    if d < -noise:
        return NOT_REPRODUCED
    return WITHIN_NOISE


def margin(op: str, diff: float, noise: float) -> float:
    """Our difference in noise units: for > and <, signed in the claim's direction (> 1:
    reproduced, < -1: not reproduced); for ~, |diff| / noise (<= 1: reproduced). A margin
    between 1 and 2 is weak evidence: a pure-noise difference exceeds 1 sigma 32 % of the
    time."""
    if diff is None or math.isnan(diff) or math.isnan(noise):
        return math.nan
    d = _directed(op, diff)
    if noise <= 0:  # deterministic values (costs, identical seeds): any difference is decisive
        return 0.0 if d == 0 else math.copysign(math.inf, d)
    return d / noise


def _same_runs(table: pd.DataFrame, a: str, b: str) -> bool:
    if "runs" not in table:
        return False
    ra, rb = (table.loc[table["row"] == label, "runs"] for label in (a, b))
    return len(ra) > 0 and len(rb) > 0 and bool(ra.iloc[0]) and ra.iloc[0] == rb.iloc[0]


def seed_noise(spec: TableSpec, table: pd.DataFrame, a: str, b: str, metric: str,
               refs: dict | None = None, claim=None) -> tuple[float, str]:
    """The noise an accuracy difference a - b must exceed, and its basis: the two rows' seed
    stds added in quadrature when both have >= 2 seeds; else the seed noise of the claim's or
    the spec's ``noise_from`` runs (``refs``: :func:`rtinst.harness.claim_noise.load_references`,
    by default the table's ``noise_refs`` attribute); else the spec's fixed tolerance."""
    if min(_value(table, a, "n_seeds"), _value(table, b, "n_seeds")) >= 2:
        sa, sb = _value(table, a, f"ours_{metric}_std"), _value(table, b, f"ours_{metric}_std")
        return math.sqrt(sa**2 + sb**2), "seed std"
    refs = table.attrs.get("noise_refs", {}) if refs is None else refs
    tried = []
    for names in dict.fromkeys(tuple(n) for n in (claim_references(spec, claim),
                                                   claim_references(spec, None)) if n):
        found = claim_noise(list(names), refs, metric)
        if found is not None:
            return found
        tried.append(missing_note(list(names), refs, metric))
    return spec.tolerance, "fixed tolerance (1 seed" + "".join(f"; {t}" for t in tried) + ")"


def judge_claims(spec: TableSpec, table: pd.DataFrame, preset: str = "tiny",
                 refs: dict | None = None) -> pd.DataFrame:
    """Each claim of the spec on the paper's numbers and ours, with a verdict (``refs``: the
    ``noise_from`` seed noise, see :func:`seed_noise`)."""
    out = []
    implemented = {r.label for r in spec.implemented_rows}
    for c in spec.claims:
        accuracy = c.metric in spec.metrics
        ours_col = f"ours_{c.metric}_mean" if accuracy else f"ours_{c.metric}"
        pa, pb = _value(table, c.a, f"paper_{c.metric}"), _value(table, c.b, f"paper_{c.metric}")
        oa, ob = _value(table, c.a, ours_col), _value(table, c.b, ours_col)
        if accuracy:
            noise, basis = seed_noise(spec, table, c.a, c.b, c.metric, refs, c)
        else:
            noise, basis = spec.cost_tolerance * max(abs(oa), abs(ob)) if not math.isnan(oa + ob) else 0.0, "cost tolerance"
        if c.tolerance is not None and c.tolerance > noise:
            noise, basis = c.tolerance, "claim tolerance"
        scale = "paper scale (cost)" if not accuracy else preset
        v = NOT_IMPLEMENTED if not {c.a, c.b} <= implemented else verdict(c.op, oa - ob, noise)
        if accuracy and v != NOT_IMPLEMENTED and _same_runs(table, c.a, c.b):
            v = NOT_TESTABLE
        elif accuracy and v not in (NOT_IMPLEMENTED, NO_DATA) and min(oa, ob) < spec.learned_floor:
            low = c.a if oa < ob else c.b
            v, basis = NOT_TESTABLE, basis + f"; {low} below {spec.learned_floor:g} AP: not learned at this preset"
        if v == REPRODUCED and accuracy and c.op == "~" and max(abs(oa), abs(ob)) <= noise:
            # two models that both score ~0 are "equal" without telling anything
            v, basis = WITHIN_NOISE, basis + "; both values within the noise of 0"
        out.append({"claim": c.text or f"{c.a} {c.op} {c.b}", "metric": c.metric, "a": c.a,
                    "op": c.op, "b": c.b, "paper_a": pa, "paper_b": pb, "paper_diff": pa - pb,
                    "ours_a": oa, "ours_b": ob, "ours_diff": oa - ob, "noise": noise,
                    "margin": margin(c.op, oa - ob, noise),
                    "noise_basis": basis, "verdict": v, "scale": scale})
    claims = pd.DataFrame(out, columns=["claim", "metric", "a", "op", "b", "paper_a", "paper_b",
                                        "paper_diff", "ours_a", "ours_b", "ours_diff", "noise",
                                        "margin", "noise_basis", "verdict", "scale"])
    claims.attrs.update(spec=spec.id, preset=preset)
    return claims


# ------------------------------------------------------------------------------ views


def display_table(spec: TableSpec, table: pd.DataFrame) -> pd.DataFrame:
    """The compact view for notebooks: paper | ours (mean ± std) | delta per metric."""
    cols = ["row", "status"]
    for m in spec.metrics:
        cols += [f"paper_{m}", f"ours_{m}", f"delta_{m}"]
    for c in spec.paper_cost_columns:
        cols.append(f"paper_{c}")
    for m in spec.cost_metrics:
        cols.append(f"ours_{m}")
        if f"delta_{m}" in table:
            cols.append(f"delta_{m}")
    cols += [c for c in (*(f"ours_{m}" for m in LATENCY_COLUMNS), "latency_kind", "breakdown_kind",
                         "note") if c in table]
    view = table[[c for c in dict.fromkeys(cols) if c in table]].copy()
    return view.round(2)


# ------------------------------------------------------------------------------- save


DEFAULT_SEEDS = (0,)  # the seed set of the plain table names (the CLI's --seeds default)


def seeds_suffix(seeds) -> str:
    """``""`` for the default seed set, else e.g. ``"_seeds0-1-2"``: a table of other seeds is
    another file, never silently replacing the one of the default seeds (or of other seeds)."""
    if seeds is None:
        return ""
    seeds = tuple(sorted(int(s) for s in seeds))
    return "" if seeds == DEFAULT_SEEDS else "_seeds" + "-".join(map(str, seeds))


def output_paths_by_name(results_dir: str | Path, preset: str, name: str,
                         seeds=None) -> dict[str, Path]:
    """Where the table ``paper/table`` of a preset (and seed set) is saved."""
    results_dir = paths.resolve(results_dir)
    stem = name.replace("/", "_", 1) + seeds_suffix(seeds)
    return {"csv": results_dir / "tables" / preset / f"{stem}.csv",
            "parquet": results_dir / "tables" / preset / f"{stem}.parquet",
            "claims": results_dir / "tables" / preset / f"{stem}_claims.csv",
            "figure": results_dir / "figures" / preset / f"{stem}.png"}


def output_paths(spec: TableSpec, results_dir: str | Path, preset: str, seeds=None) -> dict[str, Path]:
    return output_paths_by_name(results_dir, preset, spec.id, seeds)


def save_outputs(spec: TableSpec, table: pd.DataFrame, claims: pd.DataFrame,
                 results_dir: str | Path, preset: str, seeds=None) -> dict[str, Path]:
    """Write the table (CSV + parquet) and its claims; the paths include where the figure goes."""
    out = output_paths(spec, results_dir, preset, seeds)
    with atomic_path(out["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out["parquet"]) as tmp:
        _parquet_safe(table).to_parquet(tmp, index=False)
    with atomic_path(out["claims"]) as tmp:
        claims.to_csv(tmp, index=False)
    return out


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.attrs = {}
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out


# -------------------------------------------------------------------------- reproduce


@dataclass
class TableResult:
    spec: TableSpec
    table: pd.DataFrame
    claims: pd.DataFrame
    paths: dict[str, Path]
    preset: str
    sweep: Any = None
    seconds: float = 0.0
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    figure: Path | None = None  # the saved PNG, set by viz.table_plots.save_table_figure

    @property
    def view(self) -> pd.DataFrame:
        return display_table(self.spec, self.table)

    def image(self):
        """The saved plot, for notebooks (no second rendering)."""
        from IPython.display import Image

        return Image(filename=str(self.figure)) if self.figure is not None else None


def reproduce_table(spec: str | Path | TableSpec, preset: str = "tiny", seeds: Any = "0",
                    executor: str = "local", workers: int = 1, data_root: str | None = None,
                    force: bool = False, runs_dir: str | Path = "results/runs",
                    results_dir: str | Path = "results", cost_preset: str | None = "coco",
                    via_notebook: bool = True, run: bool = True, overrides: list[str] | tuple = (),
                    latency: bool = False, log=print) -> TableResult:
    """Sweep one table (cached runs are reused), then build, judge and save it (no figure:
    :func:`rtinst.viz.table_plots.save_table_figure` draws it from the result)."""
    from rtinst.harness.plan import parse_seeds, plan_sweep
    from rtinst.harness.specs import find_spec
    from rtinst.harness.sweep import run_sweep

    t0 = time.time()
    overrides = parse_overrides(overrides)  # papermill -p overrides gives one string
    if not isinstance(spec, TableSpec):
        spec = load_spec(find_spec(str(spec)), presets=(preset,) + ((cost_preset,) if cost_preset else ()))
    results_dir = paths.resolve(results_dir)
    seeds = parse_seeds(seeds)
    plan = plan_sweep([spec], preset, seeds, runs_dir, results_dir / "costs",
                      data_root=data_root, cost_preset=cost_preset, overrides=overrides,
                      latency=latency)
    sweep = run_sweep(plan, executor, workers, force=force, via_notebook=via_notebook, log=log) if run else None
    runs = collect_runs(spec, plan)
    table = build_table(spec, runs, collect_costs(spec, plan), preset)
    # read with the same data folder and overrides, so the noise is of the runs judged here
    table.attrs["noise_refs"] = load_references(spec, preset, runs_dir, data_root, overrides)
    claims = judge_claims(spec, table, preset)
    saved = save_outputs(spec, table, claims, results_dir, preset, seeds)
    return TableResult(spec, table, claims, saved, preset, sweep, time.time() - t0, runs)


# ---------------------------------------------------------------------------- summary


def load_saved(results_dir: str | Path, preset: str,
               papers: tuple[str, ...] | None = PAPERS) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Every saved table of a preset: ``{"paper/table": (table, claims)}``; by default the
    three papers' tables only (own ablations saved beside them are not paper claims)."""
    out = {}
    folder = paths.resolve(results_dir) / "tables" / preset
    for csv in sorted(folder.glob("*.csv")):
        if csv.stem.endswith("_claims") or "_seeds" in csv.stem:
            continue  # tables of other seed sets are read by name, not mixed into the summary
        paper, _, table = csv.stem.partition("_")
        if papers is not None and paper not in papers:
            continue
        claims_path = csv.with_name(f"{csv.stem}_claims.csv")
        claims = pd.read_csv(claims_path) if claims_path.is_file() else pd.DataFrame()
        out[f"{paper}/{table}"] = (pd.read_csv(csv), claims)
    return out


def claims_page(saved: dict[str, tuple[pd.DataFrame, pd.DataFrame]], preset: str) -> pd.DataFrame:
    """One line per paper claim: the table, the claim, the paper's and our difference and the
    verdict at this preset (costs: at paper scale)."""
    frames = []
    for name, (_, claims) in saved.items():
        if claims.empty:
            continue
        cols = ["claim", "metric", "paper_diff", "ours_diff", "noise", "margin", "verdict", "scale"]
        c = claims[[col for col in cols if col in claims]].copy()  # tables saved before margin
        c.insert(0, "table", name)
        frames.append(c)
    if not frames:
        return pd.DataFrame(columns=["table", "claim", "verdict"])
    return pd.concat(frames, ignore_index=True).round(2)


def claims_markdown(page: pd.DataFrame, preset: str) -> str:
    """The one-page list as Markdown (readable where the 2 MB HTML summary is not rendered):
    verdict counts per paper, then every claim with both differences and the verdict."""
    lines = [f"# Paper claims at preset {preset}", "",
             f"Scale: {SCALE_NOTE.get(preset, preset)}; cost claims at paper scale. "
             "`paper_diff` / `ours_diff`: a - b of the claim; `noise`: what a difference must "
             "exceed to count; `margin`: our difference in noise units, in the claim's direction "
             "(> 1 reproduced, < -1 not reproduced; for a ~ claim |diff| / noise, <= 1 "
             "reproduced). Verdicts are one-noise-unit calls: a margin between 1 and 2 is weak "
             "evidence, since a pure-noise difference exceeds 1 sigma 32 % of the time "
             "(written by `rtinst reproduce`).", ""]
    if page.empty:
        return "\n".join(lines + ["No claims saved yet.", ""])
    lines += [verdict_counts(page).to_markdown(), ""]
    cols = [c for c in ("claim", "metric", "paper_diff", "ours_diff", "noise", "margin", "verdict")
            if c in page]
    for name, claims in page.groupby("table", sort=False):
        lines += [f"## {name}", "", claims[cols].to_markdown(index=False, floatfmt=".2f"), ""]
    return "\n".join(lines)


def verdict_counts(page: pd.DataFrame) -> pd.DataFrame:
    if page.empty:
        return page
    page = page.assign(paper=page["table"].str.split("/").str[0])
    return page.pivot_table(index="paper", columns="verdict", values="claim", aggfunc="count",
                            fill_value=0)
