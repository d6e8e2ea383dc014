"""Total CPU cost of the full tiny sweep (every distinct run of every spec, one seed), from
the committed run records: measured machine time of the runs that are done (wall time x
the share of the cores each had), the per-step estimate (`rtinst.harness.estimates`) for the
missing ones, per model and in total.

    python tests/benchmarks/bench_sweep_cost.py [--seeds 0] [--runs-dir results/runs]

Writes ``results/benchmarks/tiny_sweep_cost.json`` atomically. Reads records only (seconds).
A run trained with 1 of the 2 cores (beside another job) counts half its wall time: the
other half paid for the other job. Contention the record cannot see (two 2-thread jobs) is
still in its time, so the total is this machine's real bill, not an idle ideal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from rtinst.harness.estimates import machine_share, price_runs
from rtinst.harness.plan import parse_seeds, pending_runs, plan_sweep
from rtinst.harness.specs import load_specs
from rtinst.io import atomic_write_json
from rtinst.provenance import provenance
from rtinst.records import read_record

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "results" / "benchmarks" / "tiny_sweep_cost.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--runs-dir", default=str(REPO / "results" / "runs"))
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    specs = load_specs(presets=("tiny",))
    plan = plan_sweep(specs, "tiny", seeds, args.runs_dir, REPO / "results" / "costs", cost_preset=None)
    jobs = list(plan.runs.values())
    missing = pending_runs(plan, retry_failed=True)  # every run without a done record
    done = {j.config_hash for j in jobs} - {j.config_hash for j in missing}
    records = {h: read_record(plan.runs[h].run_dir) for h in done}
    prices, basis = price_runs(plan, missing)  # only these are priced
    price_of = {j.config_hash: p for j, p in zip(missing, prices)}
    models: dict[str, dict] = {}
    for job in jobs:
        m = models.setdefault(job.model, {"runs": 0, "done": 0, "done_hours": 0.0, "missing": 0,
                                          "missing_hours_estimated": 0.0, "done_run_minutes": []})
        m["runs"] += 1
        price = price_of.get(job.config_hash, 0.0)
        if job.config_hash in done:
            rec = records[job.config_hash]
            wall = (rec.wall_time_s or 0.0) * machine_share(rec.provenance)
            m["done"] += 1
            m["done_hours"] += wall / 3600
            m["done_run_minutes"].append(wall / 60)
        else:
            m["missing"] += 1
            m["missing_hours_estimated"] += price / 3600
    for m in models.values():
        mins = m.pop("done_run_minutes")
        m["median_done_run_minutes"] = round(statistics.median(mins), 1) if mins else None
        m["done_hours"] = round(m["done_hours"], 2)
        m["missing_hours_estimated"] = round(m["missing_hours_estimated"], 2)
    done = sum(m["done_hours"] for m in models.values())
    missing = sum(m["missing_hours_estimated"] for m in models.values())
    record = {
        "what": "CPU cost of the full tiny sweep (all 24 specs, distinct runs, machine hours)",
        "command": "python tests/benchmarks/bench_sweep_cost.py",
        "scale": "tiny", "seeds": seeds, "specs": len(specs), "distinct_runs": len(jobs),
        "per_model": models, "estimate_basis": basis,
        "total_hours": round(done + missing, 2), "done_hours": round(done, 2),
        "missing_hours_estimated": round(missing, 2),
        "note": "done = measured machine time of the committed records (training + evaluation "
                "+ TIDE; wall time x torch threads / cores); missing = median machine s/step of "
                "the finished runs x each run's steps",
        "provenance": provenance(),
    }
    atomic_write_json(OUT, record)
    print(f"{len(jobs)} runs: {done:.1f} h done, ~{missing:.1f} h missing, "
          f"~{done + missing:.1f} h in total -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
