"""Tiny-scale trials: one entry per trained run, appended to
``results/benchmarks/tiny_scale_trials.json`` (atomically), so the search for a tiny scale on
which every model learns keeps every measurement behind its conclusion.

    rtinst data synthetic --out /tmp/tiny/easy --difficulty easy
    rtinst train --config rtinst/configs/sparseinst/tiny.yaml -o data.dataset=coco \\
        -o data.root=/tmp/tiny/easy ... --run-dir /tmp/runs/s_easy
    python tests/benchmarks/bench_tiny_scale_trials.py /tmp/runs/s_easy --name sparseinst-easy \\
        --note "machine shared, load ~10"

An entry holds the generator options (the data root's ``generation.json``), the overrides
against the model's tiny preset (computed from the run's ``config.yaml``), steps, mask AP /
AP50 / TIDE Cls and Loc, training minutes (all steps, across resumes), the wall minutes of
the last start (a run extended by resuming with a larger ``train.max_iters`` records only
that part), s/step and torch threads from the run record, the
training losses of the last logged steps, and for SparseInst ``rtinst bench iam``'s numbers
(matched predictions and true positives). A run that has not finished (no done record) is
recorded with its last logged step and losses only, marked ``"status": "unfinished"``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from rtinst.config import load_config, to_dict
from rtinst.errors import UserError
from rtinst.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "results" / "benchmarks" / "tiny_scale_trials.json"
METRICS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "tide_cls", "tide_loc")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def overrides_against_preset(run_dir: Path) -> dict[str, Any]:
    run = _flat(to_dict(load_config(run_dir / "config.yaml")))
    preset = _flat(to_dict(load_config(REPO / "rtinst" / "configs" / run["model.name"] / "tiny.yaml")))
    return {k: v for k, v in run.items() if preset.get(k) != v}


def _losses(log: Path, last: int = 10) -> dict[str, Any]:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not rows:
        return {"last_iter": 0}
    tail = rows[-last:]
    keys = [k for k in tail[-1] if k.startswith("loss")]
    return {"last_iter": tail[-1]["iter"] + 1, "seconds": tail[-1]["seconds"],
            "mean_of_last_logged": {k: round(statistics.fmean(r[k] for r in tail), 4) for k in keys}}


def trial_entry(run_dir: Path, name: str, note: str, iam_images: int) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    generation = Path(cfg.data.root) / "generation.json"
    entry: dict[str, Any] = {
        "name": name, "model": cfg.model.name, "run": str(run_dir),
        "generator": json.loads(generation.read_text()) if generation.is_file() else None,
        "overrides": overrides_against_preset(run_dir),
        "train_losses": _losses(run_dir / "train_log.jsonl"), "note": note,
    }
    record = json.loads((run_dir / "record.json").read_text())
    entry["status"] = "done" if record.get("status") == "done" else "unfinished"
    if entry["status"] == "done":
        m = record["metrics"]
        entry.update(
            steps=m["train_iterations"], metrics={k: round(m[k], 2) for k in METRICS if m.get(k) is not None},
            wall_minutes_since_last_start=round(record["wall_time_s"] / 60.0, 1),
            train_minutes=round(m["train_seconds"] / 60.0, 1), s_per_step=round(m["step_time_s"], 3),
            torch_threads=record["provenance"].get("torch_threads"),
            hardware=record["provenance"].get("hardware"))
        if cfg.model.name == "sparseinst" and iam_images > 0:
            from rtinst.diagnostics.iam_localization import iam_localization

            iam = iam_localization(run_dir, train_images=iam_images, val_images=iam_images)
            entry["iam"] = {k: iam[k] for k in ("val_instances", "mass_in_object", "concentration",
                                                "head_accuracy", "probe_accuracy", "true_positives")}
    return entry


def append_trial(entry: dict[str, Any], out: Path = OUT) -> None:
    trials = json.loads(out.read_text())["trials"] if out.is_file() else []
    trials = [t for t in trials if t["name"] != entry["name"]] + [entry]  # re-recording replaces
    atomic_write_json(out, {
        "what": "tiny-scale trials: synthetic data level x model preset overrides -> "
                "mask AP on the set's own val split, SparseInst IAM focus; this 2-core CPU",
        "trials": trials})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder")
    parser.add_argument("--name", required=True, help="trial name (re-recording a name replaces it)")
    parser.add_argument("--note", default="", help="free text, e.g. the machine's load")
    parser.add_argument("--iam-images", type=int, default=200,
                        help="train and val images for `bench iam` (SparseInst; 0 skips it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        entry = trial_entry(args.run, args.name, args.note, args.iam_images)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    append_trial(entry, args.out)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
