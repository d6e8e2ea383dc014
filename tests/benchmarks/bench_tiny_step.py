"""Training step time of each tiny preset through the real training loop, per DataLoader
worker count.

    python tests/benchmarks/bench_tiny_step.py [--steps 45] [--workers 0,1,2]
        [--models yolact,sparseinst,fastinst] [-o KEY=VALUE ...] [--out FILE.json]

Each (model, workers) pair trains the tiny preset for ``--steps`` steps (log every step, no
checkpoints) from the committed backbone and reports the median step time after the first
15 (warm-up, loader start). The tiny budgets are step counts, so this says how many minutes a
default run takes on this machine today. Run it on an otherwise idle machine: the number is
the machine's speed. Writes ``results/benchmarks/tiny_step_time.json`` atomically (or
``--out``). ``-o`` overrides apply to every model measured, for a variant's step time
(``--models yolact -o model.fpn_channels=32``); alternate variant and default runs to compare
them on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from rtinst.config import load_config
from rtinst.data.build import build_dataset, collate_fn
from rtinst.engine.loop import train_loop
from rtinst.io import atomic_write_json
from rtinst.models import build_model
from rtinst.provenance import provenance

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "results" / "benchmarks" / "tiny_step_time.json"
WARMUP = 15


def step_time(model_name: str, workers: int, steps: int, overrides: list[str] = ()) -> float:
    cfg = load_config(REPO / "rtinst" / "configs" / model_name / "tiny.yaml",
                      [*overrides, f"train.max_iters={steps}", "train.log_period=1",
                       "train.checkpoint_period=1000000"])
    dataset = build_dataset(cfg.data, "train", False)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with tempfile.TemporaryDirectory() as run_dir:
        train_loop(model, dataset, collate_fn(cfg.data), cfg.train, run_dir, seed=0,
                   num_workers=workers, progress=False)
        log = [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").open()]
    seconds = [b["seconds"] - a["seconds"] for a, b in zip(log[WARMUP - 1:], log[WARMUP:])]
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--models", default="yolact,sparseinst,fastinst")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every model measured (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.steps <= WARMUP + 1:
        parser.error(f"--steps must be > {WARMUP + 1} (the first {WARMUP} are warm-up)")
    rows = []
    for name in args.models.split(","):
        budget = load_config(REPO / "rtinst" / "configs" / name / "tiny.yaml",
                             args.override).train.max_iters
        for workers in (int(w) for w in args.workers.split(",")):
            s = step_time(name, workers, args.steps, args.override)
            rows.append({"model": name, "num_workers": workers, "median_step_s": round(s, 3),
                         "budget_steps": budget, "budget_minutes": round(s * budget / 60, 1)})
            print(rows[-1], flush=True)
    atomic_write_json(args.out, {"what": "tiny-preset training step time (batch 8) through "
                                         "train_loop, median of steps 15..N, per DataLoader workers",
                                 "scale": "tiny", "steps": args.steps, "overrides": args.override,
                                 "rows": rows, "provenance": provenance("cpu")})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
