"""Seed-to-seed spread of one table row at a preset, from its run records: the noise floor of
one-seed claims (two one-seed runs of one config differ by about sqrt(2) x the seed std).

    python tests/benchmarks/bench_seed_noise.py experiments/examples/fastinst_seed_noise.yaml D3
    python tests/benchmarks/bench_seed_noise.py yolact/table2a "YOLACT, fast" --out yolact

Train the seeds first (``rtinst sweep SPEC --seeds 0,1,2 --preset tiny``); this script reads
records only (seconds) and refuses to guess from fewer than two done seeds. Writes
``results/benchmarks/seed_noise_<out>_<preset>.json`` atomically: per seed the run and its
metrics, then mean, sample std and the one-seed tolerance sqrt(2) x std of every metric.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from rtinst.errors import UserError
from rtinst.harness.plan import parse_seeds, plan_sweep
from rtinst.harness.specs import find_spec, load_spec
from rtinst.io import atomic_write_json
from rtinst.provenance import provenance
from rtinst.records import RECORD_NAME, read_record

REPO = Path(__file__).resolve().parents[2]
METRICS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "ar100", "ar_s", "tide_cls", "tide_loc")


def seed_noise(spec_name: str, label: str, seeds: list[int], preset: str, runs_dir: str) -> dict:
    path = find_spec(spec_name)  # a file path or a paper/table name
    spec = load_spec(path, presets=(preset,))
    if label not in {r.label for r in spec.implemented_rows}:
        raise UserError(f"{path}: no implemented row {label!r}; rows: "
                        + ", ".join(r.label for r in spec.implemented_rows))
    plan = plan_sweep([spec], preset, seeds, runs_dir, REPO / "results" / "costs", cost_preset=None)
    runs, hardware = [], set()
    for seed, job in sorted(plan.runs_for(spec.id, label).items()):
        rec = read_record(job.run_dir) if (Path(job.run_dir) / RECORD_NAME).is_file() else None
        if rec is None or rec.status != "done":
            print(f"seed {seed}: {Path(job.run_dir).name} not done, left out", file=sys.stderr)
            continue
        hardware.add((rec.provenance or {}).get("hardware", "unknown hardware"))
        runs.append({"seed": seed, "run": Path(job.run_dir).name,
                     **{m: round(rec.metrics[m], 3) for m in METRICS if m in rec.metrics}})
    if len(runs) < 2:
        raise UserError(f"{spec.id} {label!r}: {len(runs)} done seed(s) of {seeds}; train them "
                        f"first: rtinst sweep {spec_name} --seeds {','.join(map(str, seeds))} --preset {preset}")
    summary = {}
    for m in METRICS:
        values = [r[m] for r in runs if m in r]
        if len(values) >= 2:
            std = statistics.stdev(values)
            summary[m] = {"mean": round(statistics.fmean(values), 3), "std": round(std, 3),
                          "one_seed_tolerance": round(math.sqrt(2) * std, 2)}
    return {"what": f"seed-to-seed spread of {spec.id} row {label!r} (same config; the seed "
                    "changes data order, augmentation and head initialization)",
            "command": f"rtinst sweep {spec_name} --seeds {','.join(map(str, seeds))} --preset {preset}",
            "model": spec.model, "scale": f"{preset} (runs trained on {', '.join(sorted(hardware))})", "runs": runs, "summary": summary,
            "note": "std is the sample std (n-1); one_seed_tolerance = sqrt(2) x std, the spread "
                    "of a difference of two one-seed runs",
            "provenance": provenance()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="spec file or paper/table name")
    parser.add_argument("row", help="row label")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--runs-dir", default=str(REPO / "results" / "runs"))
    parser.add_argument("--out", default=None, help="name in seed_noise_<out>_<preset>.json "
                                                    "(default: the spec's model)")
    args = parser.parse_args(argv)
    try:
        result = seed_noise(args.spec, args.row, parse_seeds(args.seeds), args.preset, args.runs_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = args.out or result["model"]
    out = REPO / "results" / "benchmarks" / f"seed_noise_{name}_{args.preset}.json"
    atomic_write_json(out, result)
    ap = result["summary"].get("ap", {})
    print(f"{out}: {len(result['runs'])} seeds, AP {ap.get('mean')} +- {ap.get('std')}, "
          f"one-seed tolerance {ap.get('one_seed_tolerance')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
