"""Experiment specs: one YAML per paper table, validated completely before any run starts.

A spec (``experiments/<paper>/<table>.yaml``) says which paper CSV the table reproduces,
which base config each row starts from, the rows (a label, config overrides, the paper row
it maps to), the metrics to collect, and the paper's claims as pairwise comparisons::

    paper: fastinst
    table: table6a_decoder_layers
    title: "Table 6a: number of Transformer decoder layers D"
    paper_csv: fastinst/table6a_decoder_layers.csv     # under the paper-tables folder
    model: fastinst                  # base config: rtinst/configs/{model}/{preset}.yaml
    metrics: [ap, ap_s, ap_m, ap_l]  # accuracy columns: trained at the chosen preset
    paper_cost_columns: [gflops, fps]
    cost_metrics: [gflops, params_m] # measured at paper scale (coco preset, random weights)
    cost_input_size: [640, 864]
    baseline: D=3
    rows:
      - {label: D=0, match: {decoder_layers: 0}, overrides: [model.decoder_layers=0]}
      - {label: D=3, match: {decoder_layers: 3}}
    claims:
      - {metric: ap, a: D=3, op: ">", b: D=1, text: "more decoder layers, higher AP"}

Row keys: ``label``; ``match`` (CSV column -> value, must select exactly one CSV row) or
``paper_row`` (0-based row index); ``overrides`` (dotted config overrides, every scale);
``paper_scale_overrides`` (only where the model is built at paper scale: cost columns, and
training with the ``coco`` preset - backbones, input sizes); ``model`` (another base model,
for the comparison tables); ``eval_of`` (an evaluation-only variant: re-evaluates the model
trained for that row with inference-time overrides, e.g. YOLACT's NMS type);
``implemented: false`` (methods outside the three papers: the paper's numbers only) and
``note``; ``cost_input_size`` (per row).

An *own ablation* - a researcher's table that no paper printed - is a spec without
``paper_csv``: the same rows, overrides, metrics, costs, plot and claims, with the paper's
columns left empty and each claim checked on our numbers only (a hypothesis rather than a
paper's claim). Its rows carry no ``match`` / ``paper_row``, and the plot's ``x`` (and
``group``) name a dotted config key that every row sets in its overrides::

    paper: own                       # any name: outputs go to <paper>_<table>.csv
    table: yolact_fpn_width
    model: yolact
    rows:
      - {label: FPN 32, overrides: [model.fpn_channels=32]}
      - {label: FPN 64, overrides: [model.fpn_channels=64]}
    claims:
      - {metric: ap, a: FPN 64, op: ">", b: FPN 32}
    plot: {x: model.fpn_channels, metrics: [ap, gflops]}

Every problem - an unknown key, a paper row that does not exist, an override of a config
field that does not exist - is a one-line :class:`SpecError` naming the spec file and row.
This module reads and checks spec files; the spec they become, and what its rows resolve to
(configs, base files, cost sizes, plot values), is :mod:`rtinst.harness.table_spec`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rtinst import paths
from rtinst.config import ConfigError, apply_overrides, from_dict
from rtinst.errors import UserError, did_you_mean
from rtinst.harness.paper_tables import read_paper_csv
from rtinst.harness.table_spec import (ClaimSpec, RowSpec, TableSpec, base_config_data, row_base,
                                       row_config, row_values)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # rtinst/
REPO_ROOT = PACKAGE_DIR.parent
EXPERIMENTS_DIR = REPO_ROOT / "experiments"

# The papers whose tables experiments/ reproduces (the summary's scope).
PAPERS = ("fastinst", "sparseinst", "yolact")

# Paper column -> our metric key where the names differ (the papers' AR is AR@100).
OUR_METRIC = {"ar": "ar100"}
ACCURACY_METRICS = frozenset({
    "ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "ar", "ar1", "ar10", "ar100", "ar_s", "ar_m",
    "ar_l", "tide_ap50", "tide_cls", "tide_loc", "tide_both", "tide_dupe", "tide_bkg",
    "tide_miss", "tide_fp", "tide_fn",
})
# Measured at paper scale: FLOPs/params always, CPU latency on request (labelled CPU).
# ``<part>_ms`` / ``<part>_pct``: per-module latency breakdown (SparseInst Table 8 style).
COST_METRICS = frozenset({"gflops", "params_m", "latency_ms", "fps"})
PAPER_COST_COLUMNS = frozenset({"gflops", "fps", "time_ms", "params_m", "backbone_ms",
                                "backbone_pct", "encoder_ms", "encoder_pct", "decoder_ms",
                                "decoder_pct", "post_ms", "post_pct"})
# Overrides an evaluation-only row may make: they change inference, not the trained weights.
EVAL_ONLY_KEYS = ("model.nms", "model.nms_iou_threshold", "model.nms_top_k",
                  "model.score_threshold", "model.mask_threshold", "model.max_detections",
                  "model.mask_rescore", "eval.")
OPS = (">", "<", "~")


class SpecError(UserError):
    """A spec is invalid; the one-line message names the spec file (and the row)."""


# ----------------------------------------------------------------------------- spec files


def list_specs(root: Path = EXPERIMENTS_DIR) -> list[Path]:
    """The paper tables' specs (``all``); own ablations such as ``experiments/examples/`` are
    run by path or name, never as part of ``all``."""
    return sorted(p for p in root.glob("*/*.yaml") if p.parent.name in PAPERS)


def find_spec(name: str, root: Path = EXPERIMENTS_DIR) -> Path:
    """A spec by path, by ``paper/table`` or by a unique prefix such as ``fastinst/table6a``.

    A relative path resolves as :mod:`rtinst.paths` says (``experiments/yolact/x.yaml`` is the
    same file from any folder), then against the current folder (a user's own spec file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        for candidate in (paths.resolve(p), p):
            if candidate.is_file():
                return candidate
    if p.suffix in (".yaml", ".yml") or p.is_absolute() or name.startswith(("./", "../", "~")):
        raise SpecError(f"{name}: spec file not found")  # a path, not a spec name
    name = name.removeprefix("experiments/")
    own = root / f"{name.removesuffix('.yaml')}.yaml"  # e.g. examples/yolact_fpn_width
    if own.is_file():
        return own
    hits = [s for s in list_specs(root)
            if f"{s.parent.name}/{s.stem}".startswith(name.removesuffix(".yaml"))]
    exact = [s for s in hits if f"{s.parent.name}/{s.stem}" == name.removesuffix(".yaml")]
    if len(exact) == 1 or len(hits) == 1:
        return (exact or hits)[0]
    names = [f"{s.parent.name}/{s.stem}" for s in list_specs(root)]
    if hits:
        raise SpecError(f"spec {name!r} is ambiguous: {', '.join(f'{h.parent.name}/{h.stem}' for h in hits)}")
    raise SpecError(f"unknown spec {name!r}{did_you_mean(name, names, listing='known specs', cutoff=0.4)}")


# ----------------------------------------------------------------------------- loading


def _check_keys(data: dict, cls: type, where: str, what: str = "key") -> None:
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("path", "lines")]
    for key in data:
        if key not in names:
            raise SpecError(f"{where}: unknown {what} '{key}'{did_you_mean(key, names, listing='valid keys')}")


def _as_list(value: Any, where: str, name: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise SpecError(f"{where}: '{name}' must be a list, got {value!r}")
    return value


def _norm(value: Any) -> str:
    """Cell comparison: YAML true/1.0/'E4' vs the CSV's 'true'/'1'/'E4'; null = empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    try:
        f = float(text)
        return str(int(f)) if f.is_integer() else str(f)
    except ValueError:
        return text.lower()


def _resolve_paper_row(spec: TableSpec, row: RowSpec, csv: pd.DataFrame) -> int:
    where = spec.where(row)
    if row.paper_row is not None:
        if not 0 <= row.paper_row < len(csv):
            raise SpecError(f"{where}: paper_row {row.paper_row} out of range (the CSV "
                            f"{spec.paper_csv} has {len(csv)} rows)")
        return row.paper_row
    if not row.match:
        raise SpecError(f"{where}: give 'match' (CSV column -> value) or 'paper_row'")
    mask = pd.Series(True, index=csv.index)
    for col, value in row.match.items():
        if col not in csv.columns:
            raise SpecError(f"{where}: match column '{col}' is not in {spec.paper_csv}"
                            f"{did_you_mean(col, list(csv.columns))}")
        mask &= csv[col].map(_norm) == _norm(value)
    hits = list(csv.index[mask])
    if len(hits) != 1:
        what = "no paper row matches" if not hits else f"{len(hits)} paper rows match"
        raise SpecError(f"{where}: {what} {row.match} in {spec.paper_csv}")
    return int(hits[0])


def _parse_row(data: Any, where: str) -> RowSpec:
    if not isinstance(data, dict) or "label" not in data:
        raise SpecError(f"{where}: each row needs a 'label', got {data!r}")
    _check_keys(data, RowSpec, f"{where}: row {data['label']!r}")
    row = RowSpec(**data)
    row.label = str(row.label)
    for name in ("overrides", "paper_scale_overrides"):
        setattr(row, name, [str(o) for o in _as_list(getattr(row, name), where, name)])
    return row


def parse_spec(data: Any, path: Path | None = None) -> TableSpec:
    """Build a TableSpec from plain data (keys and row references checked, configs not)."""
    where = paths.display(path) if path else "spec"
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping at the top level")
    _check_keys(data, TableSpec, where)
    for key in ("paper", "table", "model", "rows"):
        if key not in data:
            raise SpecError(f"{where}: missing required key '{key}'")
    data = dict(data)
    rows = [_parse_row(r, where) for r in _as_list(data.pop("rows"), where, "rows")]
    claims = []
    for c in _as_list(data.pop("claims", []), where, "claims"):
        if not isinstance(c, dict):
            raise SpecError(f"{where}: a claim must be a mapping, got {c!r}")
        _check_keys(c, ClaimSpec, f"{where}: claim {c.get('text') or c}")
        claim = ClaimSpec(**c)
        if claim.noise_from is not None:
            claim.noise_from = [str(n) for n in _as_list(claim.noise_from, where, "noise_from")]
        claims.append(claim)
    spec = TableSpec(rows=rows, claims=claims, title=data.pop("title", ""), path=path, **data)
    for name in ("metrics", "cost_metrics", "paper_cost_columns", "overrides",
                 "paper_scale_overrides"):
        setattr(spec, name, [str(v) for v in _as_list(getattr(spec, name), where, name)])
    return spec


def _validate_structure(spec: TableSpec) -> None:
    where = spec.where()
    labels = [r.label for r in spec.rows]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise SpecError(f"{where}: duplicate row labels {dupes}")
    for m in spec.metrics:
        if m not in ACCURACY_METRICS:
            raise SpecError(f"{where}: unknown metric '{m}' in metrics; known: "
                            f"{', '.join(sorted(ACCURACY_METRICS))}")
    for m in spec.cost_metrics:
        if m not in COST_METRICS and not m.endswith(("_ms", "_pct")):
            raise SpecError(f"{where}: unknown cost metric '{m}'; known: {', '.join(sorted(COST_METRICS))}")
    _validate_models(spec)
    csv = read_paper_csv(spec.paper_csv) if spec.paper_csv is not None else None
    if csv is None:
        _validate_own_rows(spec)
    for c in spec.paper_cost_columns:
        if csv is None or c not in csv.columns or c not in PAPER_COST_COLUMNS:
            raise SpecError(f"{where}: paper_cost_columns: '{c}' is not a cost column of "
                            f"{spec.paper_csv or 'a spec without paper_csv'}")
    if spec.baseline is not None and spec.baseline not in labels:
        raise SpecError(f"{where}: baseline {spec.baseline!r} is not a row label")
    if len(spec.cost_input_size) != 2:
        raise SpecError(f"{where}: cost_input_size must be [height, width]")
    seen: dict[int, str] = {}
    for row in spec.rows:
        if csv is not None:  # an own ablation's rows map to no paper row
            row.paper_row = _resolve_paper_row(spec, row, csv)
            if row.paper_row in seen:
                raise SpecError(f"{spec.where(row)}: maps to the same paper row as {seen[row.paper_row]!r}")
            seen[row.paper_row] = row.label
        if row.eval_of is not None:
            base = next((r for r in spec.rows if r.label == row.eval_of), None)
            if base is None or not base.implemented or base.eval_of is not None:
                raise SpecError(f"{spec.where(row)}: eval_of {row.eval_of!r} must name a trained row")
            bad = [o for o in row.overrides if not o.split("=", 1)[0].startswith(EVAL_ONLY_KEYS)]
            if bad:
                raise SpecError(f"{spec.where(row)}: an evaluation-only row may only change "
                                f"inference settings ({', '.join(EVAL_ONLY_KEYS)}), not {bad}")
    known = set(spec.metrics) | set(spec.cost_metrics)
    for c in spec.claims:
        text = c.text or f"{c.a} {c.op} {c.b} ({c.metric})"
        if c.op not in OPS:
            raise SpecError(f"{where}: claim {text!r}: op must be one of {OPS}")
        if c.metric not in known:
            raise SpecError(f"{where}: claim {text!r}: metric '{c.metric}' is not in metrics or cost_metrics")
        for lab in (c.a, c.b):
            if lab not in labels:
                raise SpecError(f"{where}: claim {text!r}: unknown row {lab!r}{did_you_mean(lab, labels)}")
        if csv is not None:
            _check_claim_against_paper(spec, c, csv, text)
    _validate_noise_from(spec)


def _validate_noise_from(spec: TableSpec) -> None:
    """``noise_from`` names known specs: the spec's one, a claim's one or two."""
    entries = [(spec.noise_from, ("noise_from",))] if spec.noise_from is not None else []
    for i, c in enumerate(spec.claims):
        if c.noise_from is None:
            continue
        if len(c.noise_from) not in (1, 2):
            raise SpecError(f"{spec.where(None, 'claims', i, 'noise_from')}: claim "
                            f"{c.text or c.a + ' ' + c.op + ' ' + c.b!r}: noise_from takes one "
                            f"spec or two (the two models compared), got {len(c.noise_from)}")
        entries += [(n, ("claims", i, "noise_from", j)) for j, n in enumerate(c.noise_from)]
    for name, keys in entries:
        try:
            find_spec(str(name))
        except SpecError as e:
            raise SpecError(f"{spec.where(None, *keys)}: noise_from: {e}") from None


def _validate_models(spec: TableSpec) -> None:
    """With the default base config, ``model`` (spec-wide or a row's) must have a config
    folder: a typo is reported as a model name, not as a missing preset file."""
    if spec.base_config != TableSpec.base_config:
        return
    known = sorted(p.name for p in (PACKAGE_DIR / "configs").iterdir() if p.is_dir()
                   and not p.name.startswith("_"))
    for row, model, keys in [(None, spec.model, ("model",))] + [
            (r, r.model, ("model",)) for r in spec.rows if r.model]:
        if model not in known:
            raise SpecError(f"{spec.where(row, *keys)}: unknown model {model!r}"
                            f"{did_you_mean(model, known, listing='known models')}")


def _validate_own_rows(spec: TableSpec) -> None:
    """A spec without ``paper_csv``: no row maps to a paper row."""
    for row in spec.rows:
        if row.match or row.paper_row is not None:
            key = "match" if row.match else "paper_row"
            raise SpecError(f"{spec.where(row)}: '{key}' needs the spec's paper_csv (a spec "
                            f"without one is an own ablation: its rows map to no paper row)")
        if not row.implemented:
            raise SpecError(f"{spec.where(row)}: 'implemented: false' rows show a paper's "
                            f"numbers, and this spec has no paper_csv")


def _validate_own_plot(spec: TableSpec) -> None:
    """In an own ablation the plot's x / group are config keys that every row's overrides
    set (checked after the configs, so a misspelled override key is reported as such)."""
    if spec.paper_csv is not None:
        return
    for axis in ("x", "group"):
        key = spec.plot.get(axis)
        if not key:
            continue
        for row, value in zip(spec.rows, row_values(spec, spec.rows, key)):
            if value is None:
                raise SpecError(f"{spec.where(row, 'overrides')}: plot.{axis} '{key}' must be a config key "
                                f"that this row's overrides set (e.g. {key}=...)")



def _check_claim_against_paper(spec: TableSpec, c: ClaimSpec, csv: pd.DataFrame, text: str) -> None:
    """A claim must hold in the paper's own numbers (when the paper prints them)."""
    col = {"gflops": "gflops", "params_m": "params_m"}.get(c.metric, c.metric)
    if c.op == "~" or col not in csv.columns:
        return
    a = pd.to_numeric(csv.at[spec.row(c.a).paper_row, col], errors="coerce")
    b = pd.to_numeric(csv.at[spec.row(c.b).paper_row, col], errors="coerce")
    if pd.notna(a) and pd.notna(b) and not (a > b if c.op == ">" else a < b):
        raise SpecError(f"{spec.where()}: claim {text!r} does not hold in the paper "
                        f"({c.metric}: {a} vs {b})")


def _override_sources(spec: TableSpec, row: RowSpec, preset: str) -> list[tuple[str, tuple]]:
    """Each override of ``row_overrides`` with the spec entry it comes from."""
    i = spec.rows.index(row)
    out = [(o, ("overrides", j)) for j, o in enumerate(spec.overrides)]
    out += [(o, ("rows", i, "overrides", j)) for j, o in enumerate(row.overrides)]
    if preset == "coco":
        out += [(o, ("paper_scale_overrides", j)) for j, o in enumerate(spec.paper_scale_overrides)]
        out += [(o, ("rows", i, "paper_scale_overrides", j)) for j, o in enumerate(row.paper_scale_overrides)]
    return out


def _config_error(spec: TableSpec, row: RowSpec, preset: str, error: ConfigError) -> SpecError:
    """The error at the spec line of the first override that fails on its own (the preset
    file named after it), else at the row."""
    base = row_base(spec, row, preset)
    if base.is_file():
        data = base_config_data(base)
        for text, keys in _override_sources(spec, row, preset):
            try:
                from_dict(apply_overrides(data, [text]))
            except ConfigError as e:
                loc = paths.display(spec.path) if spec.path else spec.id
                line = f":{spec.lines[keys]}" if keys in spec.lines else ""
                return SpecError(f"{loc}{line}: row {row.label!r}: override '{text}': {e} "
                                 f"(on {paths.display(base)})")
    return SpecError(f"{spec.where(row)}: {error}")


def validate_configs(spec: TableSpec, presets: tuple[str, ...] = ("coco",)) -> None:
    """Resolve every implemented row's config at each preset with ``load_config``."""
    for row in spec.implemented_rows:
        for preset in presets:
            try:
                row_config(spec, row, preset)
            except ConfigError as e:
                raise _config_error(spec, row, preset, e) from None


def _node_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """1-based line of every mapping value and list item in a composed YAML document."""
    lines = {prefix: node.start_mark.line + 1} if prefix else {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            lines[prefix + (k.value,)] = k.start_mark.line + 1
            lines.update({key: n for key, n in _node_lines(v, prefix + (k.value,)).items()
                          if key != prefix + (k.value,)})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_node_lines(item, prefix + (i,)))
    return lines


def load_spec(path: str | Path, presets: tuple[str, ...] = ("coco",)) -> TableSpec:
    """Read, parse and fully validate a spec (configs resolved at ``presets``)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    # One pass of the safe loader keeps the node tree (line numbers for error messages) and
    # builds the data from it, as yaml.safe_load does internally.
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise SpecError(f"{paths.display(path)}: invalid YAML{at}: {getattr(e, 'problem', e)}") from None
    finally:
        loader.dispose()
    spec = parse_spec(data, path)
    spec.lines = _node_lines(node) if node is not None else {}
    _validate_structure(spec)
    validate_configs(spec, tuple(dict.fromkeys(presets)))
    _validate_own_plot(spec)
    return spec


def load_specs(names: list[str] | None = None, presets: tuple[str, ...] = ("coco",)) -> list[TableSpec]:
    """All specs (or the named ones), every one validated before the caller runs anything."""
    paths = [find_spec(n) for n in names] if names else list_specs()
    return [load_spec(p, presets) for p in paths]
