"""`rtinst sweep`: run every row x seed of one or more table specs (cached, resumable)."""

from __future__ import annotations

import argparse
import sys

from rtinst.cli.config import add_override_argument


OWN_RESULTS = "results-own"  # git-ignored: a user's own tables, figures and cost files


def add_sweep_arguments(p: argparse.ArgumentParser, default_preset: str = "tiny",
                        default_results: str = OWN_RESULTS) -> None:
    """Options shared by `rtinst sweep` and `rtinst reproduce` (whose default results folder
    is the committed ``results/``: it reproduces the paper tables)."""
    p.add_argument("--preset", default=default_preset, choices=["smoke", "tiny", "coco"],
                   help=f"scale of the trained (accuracy) columns (default {default_preset})")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--executor", default="local", choices=["local", "inline", "submitit"],
                   help="local: process pool (default); inline: this process; submitit: SLURM")
    p.add_argument("--workers", type=int, default=1, help="parallel runs (local pool size)")
    p.add_argument("--force", action="store_true", help="recompute runs and costs even if cached")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--runs-dir", default="results/runs",
                   help="run folders, the cache shared with the committed runs (default "
                   "results/runs; a new config is a new folder, a finished run is never replaced "
                   "unless --force); relative paths are under the repository root")
    p.add_argument("--results-dir", default=default_results,
                   help=f"tables/, figures/, costs/ go here (default {default_results}); the "
                   "committed cost files in results/costs are read, and kept unless --force; a "
                   "seed set other than 0 gets its own table files (..._seeds0-1-2.csv)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder for every run (default: each preset's own data.root); "
                   "a synthetic dataset gets a sub-folder named by its images, size, seed and level")
    p.add_argument("--cost-preset", default="coco",
                   help="scale of the cost columns: coco (paper scale, default), another preset, "
                   "or none to skip them")
    p.add_argument("--latency", action="store_true",
                   help="also time every paper-scale model (batch 1; GPU when present, else "
                   "CPU, labelled so) next to the paper's FPS")
    p.add_argument("--no-notebook", action="store_true",
                   help="run directly instead of through papermill and notebooks/run.ipynb")
    p.add_argument("--gpus", type=int, default=1,
                   help="GPUs per run; more than 1 launches torchrun --nproc_per_node=GPUS")
    p.add_argument("--slurm-partition", default=None, help="submitit: SLURM partition")
    p.add_argument("--slurm-timeout-min", type=int, default=24 * 60, help="submitit: job time limit")
    p.add_argument("--cluster", default=None, choices=["slurm", "local", "debug"],
                   help="submitit cluster (default: auto-detect; local runs jobs as processes)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimate, run nothing")
    add_override_argument(p)


def submitit_params(args: argparse.Namespace) -> dict:
    params: dict = {"timeout_min": args.slurm_timeout_min}
    if args.cluster:
        params["cluster"] = args.cluster
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.gpus > 1:
        params["gpus_per_node"] = args.gpus
    return params


def check_gpus(args: argparse.Namespace) -> None:
    """``--gpus N`` must be there when the runs execute on this machine (local / inline
    executors, or submitit's local cluster); on SLURM the job's node has them."""
    from rtinst.errors import UserError

    if args.gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {args.gpus}")
    on_this_machine = args.executor in ("local", "inline") or args.cluster in ("local", "debug")
    if args.gpus > 1 and on_this_machine:
        import torch

        found = torch.cuda.device_count()
        if found < args.gpus:
            raise UserError(f"--gpus {args.gpus}: this machine has {found} GPU(s) and the runs "
                            f"execute here (--executor {args.executor}); use --gpus 1, or "
                            f"--executor submitit on a SLURM cluster")


def cost_preset(args: argparse.Namespace) -> str | None:
    return None if str(args.cost_preset).lower() in ("none", "") else args.cost_preset


def sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rtinst.harness import tables
    from rtinst.harness.estimates import estimate
    from rtinst.harness.plan import kept_costs, parse_seeds, pending_costs, pending_runs, plan_sweep
    from rtinst.harness.specs import load_specs
    from rtinst.harness.sweep import run_sweep
    from tqdm.auto import tqdm

    from rtinst.viz.table_plots import save_table_figure

    check_gpus(args)
    seeds = parse_seeds(args.seeds)
    cp = cost_preset(args)
    names = None if args.spec == ["all"] else args.spec
    specs = load_specs(names, presets=(args.preset,) + ((cp,) if cp else ()))  # all checked first
    plan = plan_sweep(specs, args.preset, seeds, args.runs_dir, Path(args.results_dir) / "costs",
                      data_root=args.data_root, cost_preset=cp, overrides=args.override, gpus=args.gpus,
                      latency=args.latency)
    todo = [] if args.costs_only else pending_runs(plan, args.force, args.retry_failed)
    costs = pending_costs(plan, args.force)
    print(f"{len(specs)} spec(s), {len(plan.runs)} distinct run(s) x seeds {seeds} at preset "
          f"{args.preset}, {len(plan.costs)} cost model(s) at {cp or 'no'} scale", file=sys.stderr)
    print(estimate(plan, todo, costs, args.workers, args.executor), file=sys.stderr)
    kept = [] if args.force else kept_costs(plan)
    if kept:
        print(f"{len(kept)} committed cost file(s) in results/costs lack the asked latency or "
              "breakdown and are kept as measured (--force replaces them; another --results-dir "
              "measures into its own costs/)", file=sys.stderr)
    if args.dry_run:
        for job in todo:
            print(f"  {job.status():8s} {Path(job.run_dir).name}  <- {', '.join(job.used_by[:3])}")
        return 0
    def write_table(spec) -> str:
        r = tables.reproduce_table(spec, args.preset, seeds, runs_dir=args.runs_dir,
                                   results_dir=args.results_dir, data_root=args.data_root,
                                   cost_preset=cp, run=False, overrides=args.override,
                                   latency=args.latency)
        save_table_figure(r)
        counts = r.claims["verdict"].value_counts().to_dict()
        return f"{spec.id}: {r.paths['csv']} ({', '.join(f'{v} {k}' for k, v in counts.items()) or 'no claims'})"

    # A long multi-table sweep writes each table once its last missing run is in, so the
    # finished tables can be read (and a session that stops the sweep keeps them).
    todo_hashes = {j.config_hash for j in todo}
    open_runs = {s.id: {r.run for r in plan.rows if r.spec == s.id and r.run in todo_hashes}
                 for s in specs}

    def settled(key: str) -> None:
        for spec in specs:
            runs = open_runs[spec.id]
            if key in runs:
                runs.discard(key)
                if not runs:  # tqdm.write: above the sweep's progress bar, not into it
                    tqdm.write(f"table written while the sweep goes on: {write_table(spec)}",
                               file=sys.stderr)

    result = run_sweep(plan, args.executor, args.workers, force=args.force,
                       retry_failed=args.retry_failed, via_notebook=not args.no_notebook,
                       submitit_params=submitit_params(args),
                       log=lambda m: print(m, file=sys.stderr, flush=True), announce=False,
                       on_settled=settled, train=not args.costs_only)
    print(result.summary())
    for spec in specs:  # all of them again: cost measurements may have ended after the runs
        print(write_table(spec))
    return 1 if result.failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="run the rows of table specs (cached by config hash, resumable)",
        description="Run every implemented row x seed of SPEC(s) (experiments/<paper>/<table>.yaml, "
        "'fastinst/table6a', or 'all'). One run per distinct config hash: finished runs are reused, "
        "killed runs resume from their checkpoint, failed runs are recorded with the reason and "
        "the sweep goes on. Cost columns are measured once per model at paper scale into "
        "<results-dir>/costs/. Saves each table to <results-dir>/tables/<preset>/ as soon as its "
        "last missing run ends, and all of them again at the end.",
    )
    p.add_argument("spec", nargs="+", help="spec file, paper/table name (prefix allowed) or 'all'")
    add_sweep_arguments(p)
    p.add_argument("--costs-only", action="store_true",
                   help="measure the missing cost columns only, train nothing (e.g. with --latency "
                   "on a GPU machine: fp32 and fp16 latency of every table row)")
    p.set_defaults(func=sweep)
