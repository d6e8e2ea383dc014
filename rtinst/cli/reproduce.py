"""`rtinst reproduce`: every paper table -> executed notebooks -> results/summary.html.

1. load and validate every selected spec (a bad spec stops everything before any run);
2. print an up-front estimate of the missing work (from the step times of existing records);
3. run the union of all runs and cost measurements once (shared configs run once); with
   ``--budget-minutes M`` only the missing runs whose estimates fit in M minutes (the others
   stay missing cells, listed with the estimate of the rest: the next call goes on);
4. execute each table notebook (notebooks/<paper>/<table>.ipynb) with papermill into
   <results-dir>/notebooks/, reusing one warm kernel (all runs are cached by then);
5. execute notebooks/summary.ipynb and render it to <results-dir>/summary.html (nbconvert);
   the one-page list of claims also goes to <results-dir>/tables/<preset>/CLAIMS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from rtinst import paths
from rtinst.cli.sweep import add_sweep_arguments, check_gpus, cost_preset, submitit_params
from rtinst.io import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def render_html(notebook: Path, html: Path) -> None:
    from rtinst.viz.summary_html import render_summary_html

    render_summary_html(notebook, html)


def _execute(nb_in: Path, nb_out: Path, params: dict) -> str | None:
    """Execute one notebook (warm kernel); returns the error, or None."""
    from rtinst.harness.notebook_exec import execute_notebook
    from rtinst.io import atomic_path

    nb_out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(nb_out) as tmp:
        try:
            execute_notebook(nb_in, tmp, params, warm=True)
        except Exception as e:  # noqa: BLE001 - keep the executed notebook, report, go on
            return f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', e)}"
    return None


def reproduce(args: argparse.Namespace) -> int:
    from rtinst.errors import UserError
    from rtinst.harness import tables
    from rtinst.harness.estimates import estimate, within_budget
    from rtinst.harness.plan import kept_costs, parse_seeds, pending_costs, pending_runs, plan_sweep
    from rtinst.harness.specs import load_specs
    from rtinst.harness.sweep import run_sweep

    t0 = time.time()
    check_gpus(args)
    seeds = parse_seeds(args.seeds)
    cp = cost_preset(args)
    results = paths.resolve(args.results_dir)
    specs = load_specs(args.tables or None, presets=(args.preset,) + ((cp,) if cp else ()))
    plan = plan_sweep(specs, args.preset, seeds, args.runs_dir, results / "costs",
                      data_root=args.data_root, cost_preset=cp, overrides=args.override, gpus=args.gpus,
                      latency=args.latency)
    todo, costs = pending_runs(plan, args.force, args.retry_failed), pending_costs(plan, args.force)
    kept = [] if args.force else kept_costs(plan)
    if kept:
        _say(f"{len(kept)} committed cost file(s) in results/costs lack the asked latency or "
             "breakdown and are kept as measured (--force replaces them; another --results-dir "
             "measures into its own costs/)")
    _say(f"{len(specs)} table(s); {len(plan.runs)} distinct run(s) at preset {args.preset}, seeds "
         f"{seeds}; {len(plan.costs)} cost model(s) at {cp or 'no'} scale")
    if args.budget_minutes is not None and args.budget_minutes < 0:
        raise UserError(f"--budget-minutes must be >= 0, got {args.budget_minutes}")
    bounded = args.cached_only or args.budget_minutes is not None
    if args.cached_only:
        _say(f"cached only: {len(todo)} run(s) without a record are not trained, their accuracy "
             f"cells stay empty (marked missing); estimate: {estimate(plan, [], costs, args.workers, args.executor)}")
        todo = []
    elif args.budget_minutes is not None:
        todo, later = within_budget(plan, todo, args.budget_minutes * 60, args.workers,
                                    args.executor)
        _say(f"budget {args.budget_minutes:g} min: training {len(todo)} run(s) now "
             f"({estimate(plan, todo, costs, args.workers, args.executor)}); {len(later)} run(s) stay missing "
             f"for a later call ({estimate(plan, later, [], args.workers, args.executor)})")
    else:
        _say(f"estimate: {estimate(plan, todo, costs, args.workers, args.executor)}")
    if args.dry_run:
        return 0
    if bounded:  # run exactly the chosen runs (a forced or retried one included)
        plan = replace(plan, runs={j.config_hash: j for j in todo})
    result = run_sweep(plan, args.executor,
                       args.workers, force=args.force,
                       retry_failed=args.retry_failed, via_notebook=not args.no_notebook,
                       submitit_params=submitit_params(args), log=_say, announce=False)
    _say(result.summary())

    errors = {}
    for spec in specs:
        # an own ablation (no paper CSV) has no notebook of its own: the generic one takes it
        nb_in = (NOTEBOOKS / spec.paper / f"{spec.table}.ipynb" if spec.paper_csv is not None
                 else NOTEBOOKS / "ablation.ipynb")
        if not nb_in.is_file():
            raise UserError(f"{nb_in}: table notebook missing; run python notebooks/_make_notebooks.py")
        params = {"spec": str(spec.path), "preset": args.preset, "seeds": ",".join(map(str, seeds)),
                  "executor": args.executor, "workers": args.workers, "data_root": args.data_root,
                  "force": False, "runs_dir": str(args.runs_dir), "results_dir": str(results),
                  "cost_preset": cp, "via_notebook": not args.no_notebook,
                  "run": not bounded,
                  "overrides": list(args.override), "latency": args.latency}
        t = time.time()
        err = _execute(nb_in, results / "notebooks" / spec.paper / f"{spec.table}.ipynb", params)
        _say(f"table {spec.id}: {'ok' if err is None else 'FAILED: ' + err} ({time.time() - t:.1f} s)")
        if err:
            errors[spec.id] = err
    summary_nb = results / "notebooks" / "summary.ipynb"
    err = _execute(NOTEBOOKS / "summary.ipynb", summary_nb,
                   {"preset": args.preset, "results_dir": str(results)})
    if err:
        errors["summary"] = err
    render_html(summary_nb, results / "summary.html")
    from rtinst.harness.notebook_exec import shutdown_kernels

    shutdown_kernels()
    page = tables.claims_page(tables.load_saved(results, args.preset), args.preset)
    atomic_write_text(results / "tables" / args.preset / "CLAIMS.md", tables.claims_markdown(page, args.preset))
    counts = page["verdict"].value_counts().to_dict() if len(page) else {}
    print(f"{results / 'summary.html'}: {len(specs)} table(s), claims: "
          + (", ".join(f"{v} {k}" for k, v in counts.items()) or "none")
          + f" ({time.time() - t0:.1f} s)")
    for name, e in errors.items():
        print(f"error in {name}: {e}", file=sys.stderr)
    return 1 if errors or result.failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce", help="all paper tables -> notebooks -> results/summary.html",
        description="Reproduce the papers' tables: validate the specs, estimate, run what is "
        "missing (cached runs are reused), execute each table notebook into "
        "<results-dir>/notebooks/ and the summary notebook into <results-dir>/summary.html. "
        "A fully cached re-run only re-renders.",
    )
    p.add_argument("--tables", nargs="+", default=None,
                   help="specs to reproduce, e.g. fastinst/table6a yolact/table2a (default: all)")
    add_sweep_arguments(p, default_preset="tiny", default_results="results")
    p.add_argument("--cached-only", action="store_true",
                   help="train nothing: tabulate the runs that have a record (missing accuracy "
                   "cells stay empty, marked missing); cost columns are still measured")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="train only the missing runs whose estimated times fit in M minutes "
                   "(plan order); the rest stay missing cells for a later call (the cache keeps "
                   "every finished run). `make reproduce` uses 15")
    p.set_defaults(func=reproduce)
