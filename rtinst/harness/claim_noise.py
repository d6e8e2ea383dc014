"""Noise floors of one-seed claims from recorded seed-noise runs (``noise_from``).

A spec's ``noise_from`` names a seed-noise spec (e.g. ``examples/fastinst_seed_noise``: the
default model's row trained at several seeds). A difference of two one-seed runs of one
config spreads by sqrt(2) x the seed std, so that is the noise of an accuracy claim on a
one-seed table. A claim comparing two models names both specs (``noise_from: [a, b]``): its
noise is sqrt(std_a^2 + std_b^2). The stds come from the referenced spec's baseline row at
the preset being judged, over every seed recorded there, read with the tables' own
machinery (plan, records, :func:`rtinst.harness.table_runs.collect_runs`), so they follow
the preset whenever it changes. Fewer than two seeds with the metric: no noise here, and the
caller falls back to the spec's fixed ``tolerance``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from rtinst import paths
from rtinst.errors import UserError
from rtinst.harness.plan import plan_sweep
from rtinst.harness.specs import ACCURACY_METRICS, SpecError, find_spec, load_spec
from rtinst.harness.table_spec import ClaimSpec, TableSpec, row_config
from rtinst.harness.table_runs import collect_runs, metric_values
from rtinst.records import RECORD_NAME, read_record


@dataclass(frozen=True)
class RefNoise:
    """The seed spread of a referenced spec's baseline row at one preset, per metric."""

    spec: str  # the referenced spec's id, e.g. own/fastinst_seed_noise
    std: dict[str, float] = field(default_factory=dict)  # sample std (n-1)
    n: dict[str, int] = field(default_factory=dict)  # done seeds that have the metric

    def seeds(self, metric: str) -> int:
        return self.n.get(metric, 0)


def claim_references(spec: TableSpec, claim: ClaimSpec | None) -> list[str]:
    """The specs whose seed noise a claim uses: its own ``noise_from``, else the spec's."""
    if claim is not None and claim.noise_from:
        return list(claim.noise_from)
    return [spec.noise_from] if spec.noise_from else []


def references(spec: TableSpec) -> list[str]:
    names = [spec.noise_from] if spec.noise_from else []
    for c in spec.claims:
        names += list(c.noise_from or [])
    return list(dict.fromkeys(names))


def _baseline(spec: TableSpec):
    if spec.baseline is not None:
        return spec.row(spec.baseline)
    if len(spec.implemented_rows) == 1:
        return spec.implemented_rows[0]
    raise SpecError(f"{spec.where()}: used as noise_from, it needs a baseline row (or a single row)")


def _recorded_seeds(runs_dir: Path, model: str, preset: str) -> list[int]:
    """The seeds of every readable run record of ``model`` at ``preset``; which of them are
    runs of the referenced row is decided by config hash when they are planned."""
    seeds = set()
    for path in runs_dir.glob(f"{model}-{preset}-*/{RECORD_NAME}"):
        try:
            seed = read_record(path).config.get("seed")
        except UserError:
            continue  # a broken record of another run is reported where that run is tabulated
        if isinstance(seed, int):
            seeds.add(seed)
    return sorted(seeds)


def reference_noise(ref: str, preset: str, runs_dir: str | Path = "results/runs",
                    data_root: str | None = None, overrides=()) -> RefNoise:
    """The seed std of ``ref``'s baseline row per metric, at ``preset``, from the records."""
    spec = load_spec(find_spec(ref), presets=(preset,))
    row = _baseline(spec)
    runs_dir = paths.resolve(runs_dir)
    cfg = row_config(spec, row, preset)
    seeds = _recorded_seeds(runs_dir, cfg.model.name, cfg.preset)
    if not seeds:
        return RefNoise(spec.id)
    plan = plan_sweep([spec], preset, seeds, runs_dir, cost_preset=None, data_root=data_root,
                      overrides=overrides)
    runs = collect_runs(spec, plan)
    done = runs[(runs["label"] == row.label) & (runs["status"] == "done")]
    std, n = {}, {}
    for m in sorted(ACCURACY_METRICS):  # every metric the records hold, not only the shown ones
        vals = metric_values(done, m)
        n[m] = len(vals)
        if len(vals) >= 2:
            std[m] = float(vals.std(ddof=1))
    return RefNoise(spec.id, std, n)


def load_references(spec: TableSpec, preset: str, runs_dir: str | Path = "results/runs",
                    data_root: str | None = None, overrides=()) -> dict[str, RefNoise]:
    """Every ``noise_from`` of the spec and its claims, keyed as the spec writes it."""
    return {ref: reference_noise(ref, preset, runs_dir, data_root, overrides)
            for ref in references(spec)}


def claim_noise(names: list[str], refs: dict[str, RefNoise], metric: str) -> tuple[float, str] | None:
    """(noise, basis) from the named references, or None when one of them lacks two seeds
    of ``metric`` (or was not read)."""
    got = [refs.get(name) for name in names]
    if not got or any(r is None or r.seeds(metric) < 2 for r in got):
        return None
    parts = [f"{r.spec} ({r.seeds(metric)} seeds, std {r.std[metric]:.2f})" for r in got]
    if len(got) == 1:
        return math.sqrt(2) * got[0].std[metric], f"seed noise of {parts[0]} x sqrt(2)"
    return (math.sqrt(sum(r.std[metric] ** 2 for r in got)),
            f"seed noise of {' and '.join(parts)} in quadrature")


def missing_note(names: list[str], refs: dict[str, RefNoise], metric: str) -> str:
    """Why the references gave no noise, for the basis of the fallback."""
    short = [f"{refs[n].spec} has {refs[n].seeds(metric)} seed(s) of {metric}" if n in refs
             else f"{n} not read" for n in names]
    return "; ".join(short)
