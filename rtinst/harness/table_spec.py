"""A table spec in memory, and what each of its rows resolves to.

:class:`TableSpec` (with its :class:`RowSpec` rows and :class:`ClaimSpec` claims) is what
:func:`rtinst.harness.specs.load_spec` returns once a spec file has been read and checked.
The functions below answer what the harness asks of a row - its overrides at a preset, its
base config file, its resolved :class:`~rtinst.config.RunConfig`, the row it shares trained
weights with, its cost input size, its value on a plot axis. They are kept apart from the
reading and checking of spec files so that the planner, the tables and the plots depend on
what a spec *is*, not on how a YAML file becomes one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtinst import paths
from rtinst.config import (ConfigError, apply_overrides, from_dict, load_config, parse_override,
                           to_dict)
from rtinst.config_schema import RunConfig
from rtinst.harness.paper_tables import read_paper_csv


@dataclass
class ClaimSpec:
    """A paper claim as a comparison of two rows on one metric: ``a op b``."""

    metric: str
    a: str
    op: str
    b: str
    text: str = ""
    tolerance: float | None = None  # overrides the spec's noise floor for this claim
    # one or two seed-noise specs (a claim across two models): this claim's noise source
    noise_from: list[str] | None = None


@dataclass
class RowSpec:
    label: str
    match: dict[str, Any] = field(default_factory=dict)
    paper_row: int | None = None  # resolved CSV row index (from match when not given)
    overrides: list[str] = field(default_factory=list)
    paper_scale_overrides: list[str] = field(default_factory=list)
    model: str | None = None
    eval_of: str | None = None
    implemented: bool = True
    note: str = ""
    cost_input_size: list[int] | None = None


@dataclass
class TableSpec:
    paper: str
    table: str
    title: str
    model: str
    rows: list[RowSpec]
    paper_csv: str | None = None  # None: an own ablation, no paper numbers
    metrics: list[str] = field(default_factory=lambda: ["ap"])
    cost_metrics: list[str] = field(default_factory=lambda: ["gflops", "params_m"])
    paper_cost_columns: list[str] = field(default_factory=list)
    cost_input_size: list[int] = field(default_factory=lambda: [640, 864])
    base_config: str = "rtinst/configs/{model}/{preset}.yaml"
    overrides: list[str] = field(default_factory=list)
    paper_scale_overrides: list[str] = field(default_factory=list)
    baseline: str | None = None
    claims: list[ClaimSpec] = field(default_factory=list)
    plot: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 0.5  # AP points: the noise floor when there is one seed
    # a seed-noise spec whose baseline runs give the one-seed noise floor (claim_noise)
    noise_from: str | None = None
    # AP points: a row scoring below this has not learned at the preset, so no accuracy claim
    # on it can be judged (a chance-level model "beats" nothing and "equals" everything)
    learned_floor: float = 1.0
    cost_tolerance: float = 0.01  # relative: cost columns are deterministic
    notes: str = ""
    path: Path | None = None
    # line numbers of the spec file's entries, e.g. ("rows", 2, "overrides", 0) -> 17
    lines: dict[tuple, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return f"{self.paper}/{self.table}"

    def row(self, label: str) -> RowSpec:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(label)

    @property
    def implemented_rows(self) -> list[RowSpec]:
        return [r for r in self.rows if r.implemented]

    def where(self, row: RowSpec | None = None, *keys: Any) -> str:
        """``file:line: row 'label'`` for messages; ``keys`` below the row (or the top level,
        without a row) name the entry, e.g. ``where(row, "overrides", 1)``; the line is that of
        the deepest entry the file has."""
        loc = paths.display(self.path) if self.path else self.id
        path = (("rows", self.rows.index(row)) if row is not None and row in self.rows else ()) + keys
        while path and path not in self.lines:
            path = path[:-1]
        if path:
            loc += f":{self.lines[path]}"
        return f"{loc}: row {row.label!r}" if row is not None else loc


# ----------------------------------------------------------------------------- rows


def resolve_base_config(template: str, model: str, preset: str) -> Path:
    """The base config file: ``rtinst/...`` inside the package, other relative paths by the
    rule of :mod:`rtinst.paths` (never the current folder of a notebook's kernel)."""
    rel = template.format(model=model, preset=preset)
    if not Path(rel).is_absolute() and rel.startswith("rtinst/"):
        return paths.PACKAGE_DIR.parent / rel
    return paths.resolve(rel)


def row_overrides(spec: TableSpec, row: RowSpec, preset: str) -> list[str]:
    """Overrides of a row at a preset: spec-wide, the row's, and paper-scale ones at coco."""
    out = list(spec.overrides) + list(row.overrides)
    if preset == "coco":
        out += spec.paper_scale_overrides + row.paper_scale_overrides
    return out


def row_base(spec: TableSpec, row: RowSpec, preset: str) -> Path:
    return resolve_base_config(spec.base_config, row.model or spec.model, preset)


@functools.lru_cache(maxsize=32)
def _base_data(path: str, mtime: float) -> str:
    return json.dumps(to_dict(load_config(path)))


def base_config_data(path: Path) -> dict:
    """The plain data of the config file ``path`` (an existing file), its YAML chain read
    once per modification time; a fresh copy on every call."""
    return json.loads(_base_data(str(path), path.stat().st_mtime))


def cached_load_config(path: Path, overrides: list[str]) -> RunConfig:
    """``load_config(path, overrides)``, with the YAML chain of ``path`` read once."""
    if not path.is_file():
        return load_config(path, overrides)  # its error names the file
    data = base_config_data(path)
    try:
        return from_dict(apply_overrides(data, overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def row_config(spec: TableSpec, row: RowSpec, preset: str,
               extra: list[str] | tuple[str, ...] = ()) -> RunConfig:
    return cached_load_config(row_base(spec, row, preset), row_overrides(spec, row, preset) + list(extra))


def trained_row(spec: TableSpec, row: RowSpec) -> RowSpec:
    """The row whose trained model ``row`` is evaluated with (itself unless eval-only)."""
    return spec.row(row.eval_of) if row.eval_of else row


def cost_size(spec: TableSpec, row: RowSpec) -> tuple[int, int]:
    h, w = row.cost_input_size or spec.cost_input_size
    return int(h), int(w)


def row_values(spec: TableSpec, rows: list[RowSpec], column: str) -> list[Any]:
    """Each row's value of ``column`` for plots: the paper CSV's cell, or in an own ablation
    the value that the spec's and the row's overrides give the config key ``column``
    (None when they do not set it)."""
    if spec.paper_csv is not None:
        csv = read_paper_csv(spec.paper_csv)
        return [csv.at[row.paper_row, column] for row in rows]
    return [_override_value(list(spec.overrides) + list(row.overrides), column) for row in rows]


def _override_value(overrides: list[str], key: str) -> Any:
    value = None
    for text in overrides:
        try:
            keys, v = parse_override(text)
        except ConfigError:
            continue  # a malformed override is reported by specs.validate_configs, naming the row
        if ".".join(keys) == key:
            value = v
    return value
