"""Fold what `tests/benchmarks/gpu_lease.sh` brought back from a GPU machine into results/.

    python tests/benchmarks/gpu_fold_back.py DIR      # DIR: the device call's files_at

- ``DIR/costs.tgz``: every cost file the GPU timed (``latency_kind`` "GPU latency") replaces
  results/costs/<key>.json; FLOPs and parameters are checked unchanged (same code, same
  model), so only the latency fields differ. The tables pick them up on the next
  ``make reproduce REPRODUCE_ARGS=--cached-only``.
- ``DIR/gpu_runs.tgz``: the tiny runs trained on the GPU go to
  results/benchmarks/gpu_tiny_runs/<run>/ (record, config, train log, curve; never into
  results/runs, whose CPU records the tables read). Beside them
  results/benchmarks/gpu_tiny_sweep.json compares each with the CPU record of the same
  config hash (AP, wall time) and projects the full tiny sweep on that GPU from the
  measured throughput: CPU machine hours of the runs finished per GPU wall second.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from rtinst.errors import UserError
from rtinst.harness.estimates import machine_share
from rtinst.io import atomic_write_json
from rtinst.records import RECORD_NAME, read_record

REPO = Path(__file__).resolve().parents[2]
KEEP = ("record.json", "config.yaml", "train_log.jsonl", "curve.json")


def _members(tgz: Path, dest: Path) -> list[Path]:
    with tarfile.open(tgz) as tar:
        tar.extractall(dest, filter="data")  # no absolute paths, links or devices
    return [p for p in dest.rglob("*") if p.is_file()]


def fold_costs(tgz: Path, costs_dir: Path) -> dict:
    out = {"replaced": [], "fp16_failed": {}, "not_timed_on_gpu": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(_members(tgz, Path(tmp))):
            if path.suffix != ".json":
                continue
            data = json.loads(path.read_text())
            if data.get("latency_kind") != "GPU latency":
                out["not_timed_on_gpu"] += 1
                continue
            here = costs_dir / path.name
            if here.is_file():
                old = json.loads(here.read_text())
                for k in ("gflops", "params_m"):
                    if old.get(k) != data.get(k):
                        raise UserError(f"{path.name}: {k} differs from results/costs ({data.get(k)} "
                                        f"vs {old.get(k)}): not the same model, not folded")
            atomic_write_json(here, data)
            out["replaced"].append(path.stem)
            if "latency_fp16_error" in data:
                out["fp16_failed"][path.stem] = data["latency_fp16_error"]
    return out


def fold_runs(tgz: Path, dest: Path, cpu_runs: Path) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        files = _members(tgz, Path(tmp))
        for rec_path in sorted(p for p in files if p.name == RECORD_NAME):
            rec = read_record(rec_path)
            if rec.status != "done":
                continue
            target = dest / rec_path.parent.name
            target.mkdir(parents=True, exist_ok=True)
            for name in KEEP:
                if (rec_path.parent / name).is_file():
                    shutil.copyfile(rec_path.parent / name, target / name)
            cpu_path = cpu_runs / rec_path.parent.name / RECORD_NAME
            cpu = read_record(cpu_path) if cpu_path.is_file() else None
            cpu_done = cpu is not None and cpu.status == "done"
            runs.append({
                "run": rec_path.parent.name,
                "gpu_started_at": rec.started_at, "gpu_wall_s": rec.wall_time_s,
                "gpu_ap": rec.metrics.get("ap"),
                "cpu_ap": cpu.metrics.get("ap") if cpu_done else None,
                "cpu_machine_s": (cpu.wall_time_s or 0) * machine_share(cpu.provenance) if cpu_done else None,
                "hardware": rec.provenance.get("hardware"),
            })
    return {"runs": runs}


def project(runs: list[dict], cpu_total_hours: float | None) -> dict:
    timed = [r for r in runs if r["gpu_wall_s"] and r["gpu_started_at"]]
    if not timed:
        return {"note": "no finished GPU run: nothing to project"}
    span = max(r["gpu_started_at"] + r["gpu_wall_s"] for r in timed) - min(r["gpu_started_at"] for r in timed)
    cpu_s = sum(r["cpu_machine_s"] or 0 for r in timed)
    out = {"finished_runs": len(timed), "gpu_wall_span_s": round(span, 1),
           "cpu_machine_hours_of_those_runs": round(cpu_s / 3600, 2)}
    if cpu_s and cpu_total_hours:
        rate = cpu_s / span  # CPU machine seconds of work finished per GPU wall second
        out["cpu_seconds_per_gpu_second"] = round(rate, 1)
        out["projected_full_tiny_sweep_minutes"] = round(cpu_total_hours * 3600 / rate / 60, 1)
        out["note"] = ("throughput projection: the sweep's total CPU machine hours "
                       "(results/benchmarks/tiny_sweep_cost.json) / the CPU machine hours the GPU "
                       "finished per wall second; runs that the time box cut off are not counted")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="the folder the device call's files came back to")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        raise SystemExit(f"error: {args.dir}: not a folder")
    summary: dict = {"from": str(args.dir)}
    for name in ("gpu.txt", "lease.log"):
        if (args.dir / name).is_file():
            summary[name.split(".")[0]] = (args.dir / name).read_text().strip().splitlines()
    if (args.dir / "costs.tgz").is_file():
        summary["costs"] = fold_costs(args.dir / "costs.tgz", args.results / "costs")
        print(f"costs: {len(summary['costs']['replaced'])} timed on the GPU, "
              f"{len(summary['costs']['fp16_failed'])} without fp16", file=sys.stderr)
    if (args.dir / "gpu_runs.tgz").is_file():
        bench = args.results / "benchmarks"
        folded = fold_runs(args.dir / "gpu_runs.tgz", bench / "gpu_tiny_runs", args.results / "runs")
        cost_file = bench / "tiny_sweep_cost.json"
        total = json.loads(cost_file.read_text()).get("total_hours") if cost_file.is_file() else None
        summary["tiny_sweep"] = {**folded, "projection": project(folded["runs"], total)}
        print(f"tiny sweep: {len(folded['runs'])} GPU run(s); "
              f"{summary['tiny_sweep']['projection']}", file=sys.stderr)
    atomic_write_json(args.results / "benchmarks" / "gpu_lease.json", summary)
    print(args.results / "benchmarks" / "gpu_lease.json")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        raise SystemExit(f"error: {e}")
