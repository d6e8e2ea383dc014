"""Write the papermill notebooks from one template each, so that they stay consistent.

    python notebooks/_make_notebooks.py          # (re)writes the notebooks below
    python notebooks/_make_notebooks.py --check  # exit 1 when a notebook is out of date

- ``notebooks/run.ipynb``: one run (papermill parameters: base_config, overrides, run_dir,
  trained_from, gpus); trains + evaluates through ``rtinst.harness.runner.run_one``, then shows the
  loss curve and a few predictions on val images (``rtinst.viz.run_report``) and the AP / TIDE
  numbers (``rtinst.records.metrics_table``).
- ``notebooks/ablation.ipynb``: the same for any spec file, e.g. an own ablation without
  ``paper_csv`` (default parameter: ``experiments/examples/yolact_fpn_width.yaml``).
- ``notebooks/<paper>/<table>.ipynb``: one per spec in ``experiments/``; parameters preset,
  seeds, executor, workers, data_root, force, runs_dir, results_dir, cost_preset,
  via_notebook, run, overrides, latency; the table is ``rtinst.harness.tables.reproduce_table``,
  its figure ``rtinst.viz.table_plots.save_table_figure``.
- ``notebooks/analysis/*.ipynb``: figures of trained runs (parameters: run folders, out_dir,
  images, data_root); the plotting code is ``rtinst.viz`` (also ``rtinst viz ...``).
- ``notebooks/summary.ipynb``: every saved table of a preset, each paper's Figure 1 from our
  cost columns and the one-page list of claims and verdicts.

Notebooks are thin on purpose: the logic lives in rtinst (tested), not in cells.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _params(source: str):
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


def run_notebook():
    return [
        new_markdown_cell("# One run\n\nTrains and evaluates one config (resuming from its "
                          "checkpoint when there is one) and leaves `record.json` beside this "
                          "notebook. Executed by `rtinst sweep` through papermill."),
        _params('base_config = ""  # YAML run config\n'
                "overrides = []  # dotted config overrides\n"
                'run_dir = ""\n'
                "trained_from = None  # evaluation-only runs: the trained run's folder\n"
                "gpus = 1  # more than 1: torchrun with one process per GPU"),
        # %matplotlib inline first: evaluation would otherwise switch pyplot to Agg (TIDE)
        # and the figure cells below would stay empty
        new_code_cell("%matplotlib inline\nfrom rtinst import records\nfrom rtinst.harness import runner\nfrom rtinst.viz import run_report\n\n"
                      "record = runner.run_one(base_config, overrides, run_dir, trained_from=trained_from, gpus=gpus)\n"
                      "print(f\"{record.status}: {record.config['model']['name']} at preset "
                      "{record.config['preset']}, hash {record.config_hash}\")"),
        new_markdown_cell("## Loss curve"),
        # the inline backend shows the figure; None means there is nothing to draw: say why
        new_code_cell("if run_report.plot_loss_curve(run_dir) is None:\n"
                      "    print(run_report.explain_missing_loss_curve(run_dir))"),
        new_markdown_cell("## Predictions on a few val images"),
        new_code_cell("if run_report.plot_predictions(run_dir, n=3) is None:\n"
                      "    print(run_report.explain_missing_predictions(run_dir))"),
        new_markdown_cell("## COCO mask AP and TIDE errors"),
        new_code_cell("records.metrics_table(record)"),
    ]


def table_notebook(spec_rel: str, title: str, own: bool = False):
    intro = ("Spec: the `spec` parameter (any spec file; this default is an example without "
             "`paper_csv`, see experiments/README.md). Our numbers per row (mean ± std over "
             "seeds), the change against the baseline row, cost columns at paper scale, and "
             "whether each of the spec's claims (our hypotheses) holds at this scale."
             if own else
             f"Spec: `{spec_rel}`. The paper's numbers and ours side by side (mean ± std over "
             "seeds), the change against the baseline row, cost columns at paper scale, and "
             "whether each of the paper's claims is reproduced at this scale.")
    return [
        new_markdown_cell(f"# {title}\n\n{intro}"),
        _params(f'spec = "{spec_rel}"\n'
                'preset = "tiny"  # smoke | tiny | coco\n'
                'seeds = "0"  # e.g. "0,1,2"\n'
                'executor = "local"  # local | inline | submitit\n'
                "workers = 1\n"
                "data_root = None  # None: the preset's data folder\n"
                "force = False\n"
                'runs_dir = "results/runs"  # the run cache (relative: under the repository root)\n'
                'results_dir = "results-own"  # tables/figures/costs; rtinst reproduce writes results/\n'
                'cost_preset = "coco"  # paper scale; None skips the cost columns\n'
                "via_notebook = True  # each run through notebooks/run.ipynb\n"
                "run = True  # False: only tabulate the records that exist\n"
                "overrides = []  # dotted config overrides for every run\n"
                "latency = False  # also time the paper-scale models (CPU or GPU, labelled)"),
        new_code_cell("import pandas as pd\n"
                      "from rtinst.harness import tables\nfrom rtinst.viz.table_plots import save_table_figure\n\n"
                      "pd.set_option('display.max_columns', 60, 'display.max_rows', None, 'display.width', 250)\n"
                      "result = tables.reproduce_table(spec, preset=preset, seeds=seeds, executor=executor,\n"
                      "                                workers=workers, data_root=data_root, force=force,\n"
                      "                                runs_dir=runs_dir, results_dir=results_dir,\n"
                      "                                cost_preset=cost_preset, via_notebook=via_notebook, run=run,\n"
                      "                                overrides=overrides, latency=latency)\n"
                      "save_table_figure(result)\n"
                      "print(tables.SCALE_NOTE.get(preset, preset))"),
        new_markdown_cell("## Ours per row" if own else "## Paper vs ours"),
        new_code_cell("result.view"),
        new_markdown_cell("## The spec's claims at this scale" if own else "## The paper's claims at this scale"),
        new_code_cell("result.claims[['claim', 'metric', 'paper_diff', 'ours_diff', 'noise', 'margin', 'verdict', 'scale']].round(2)"),
        new_markdown_cell("## Plot"),
        new_code_cell("result.image()"),
        new_code_cell("{k: str(v) for k, v in result.paths.items()}"),
    ]


def summary_notebook():
    return [
        new_markdown_cell("# rtinst: paper tables reproduced\n\nEvery table of FastInst (CVPR "
                          "2023), SparseInst (CVPR 2022) and YOLACT (ICCV 2019): the paper's "
                          "numbers beside ours, each paper's Figure 1 regenerated from our cost "
                          "columns (paper scale), and which claims reproduce at which scale."),
        _params('preset = "tiny"\nresults_dir = "results"'),
        new_code_cell("import pandas as pd\nfrom IPython.display import Image, Markdown, display\n"
                      "from rtinst.harness import tables\nfrom rtinst.viz.table_plots import plot_figure1\n\n"
                      "pd.set_option('display.max_columns', 60, 'display.max_rows', None, 'display.width', 250)\n"
                      "saved = tables.load_saved(results_dir, preset)\n"
                      "page = tables.claims_page(saved, preset)\n"
                      "print(f'{len(saved)} tables at preset {preset}: ' + tables.SCALE_NOTE.get(preset, preset))"),
        new_markdown_cell("## Which claims reproduce (one page)"),
        new_code_cell("tables.verdict_counts(page)"),
        new_code_cell("page"),
        new_markdown_cell("## Figure 1 of each paper, from our cost columns"),
        new_code_cell("fig = plot_figure1(saved, preset)"),
        new_markdown_cell("## Every table"),
        new_code_cell("for name, (table, claims) in saved.items():\n"
                      "    display(Markdown(f'### {name}'))\n"
                      "    keep = [c for c in table.columns if c.startswith(('row', 'status', 'paper_', 'delta_', 'note'))\n"
                      "            or (c.startswith('ours_') and not c.endswith(('_mean', '_std', '_vs_base')))]\n"
                      "    display(table[keep].round(2))\n"
                      "    figure = tables.output_paths_by_name(results_dir, preset, name)['figure']\n"
                      "    if figure.is_file():\n"
                      "        display(Image(filename=str(figure)))"),
    ]


_ANALYSIS_SETUP = ("%matplotlib inline\n"
                   "import matplotlib.pyplot as plt\n"
                   "from IPython.display import Image, display\n"
                   "from rtinst import paths, viz\n"
                   "from rtinst.harness import analysis_runs\n"
                   "from rtinst.viz import render, run_report\n")
# None: the figure's runs at `preset`, as experiments/analysis_runs.yaml names them
_DEFAULT_RUNS = ('preset = "tiny"  # the preset the default runs are resolved at\n')


def _default_runs(figure: str, name: str = "run_dir") -> str:
    """Cell lines: a ``None`` parameter becomes the figure's analysis run(s) at ``preset``."""
    runs = f"analysis_runs.run_dirs({figure!r}, preset)"
    return (f"if {name} is None:\n"
            f"    {name} = {runs if name == 'run_dirs' else f'{runs}[0]'}\n")


def _with_checkpoint(call: str, runs: str = "[run_dir]", snapshot: bool = False) -> str:
    """The figure call, or - without checkpoints, which are not committed - how to get them
    (``snapshot``: the figure draws a run without weights from its predictions snapshot)."""
    check = "lambda r: run_report.missing_checkpoint(r, snapshot=True)" if snapshot else \
        "run_report.missing_checkpoint"
    return (f"missing = [m for m in map({check}, {runs}) if m]\n"
            "if missing:\n"
            "    print('\\n'.join(missing))\n"
            "else:\n"
            f"    written = {call}\n"
            "    print(*map(paths.display, written), sep='\\n')")


def analysis_notebooks() -> dict[str, list]:
    """notebooks/analysis/<name>.ipynb: thin calls into rtinst.viz.render, figures shown inline
    and written to ``out_dir``."""
    common = ('out_dir = "results-own/figures/analysis"\n'
              "data_root = None  # None: the run's own data.root\n")
    return {
        "iam": [
            new_markdown_cell("# SparseInst instance activation maps\n\nPer detection: the IAM of "
                              "each group beside its mask (paper Figure 4); per group: the mean "
                              "activation of each of the N IAMs over the val split (Figure 6)."),
            _params("run_dir = None  # None: the SparseInst analysis run of `preset`\n" + _DEFAULT_RUNS
                    + common + "images = [0, 1]  # val image positions\naverage_images = 100"),
            new_code_cell(_ANALYSIS_SETUP + "\n" + _default_runs("iam") + _with_checkpoint(
                "render.render_iam(paths.resolve(run_dir), paths.resolve(out_dir), images, "
                "average_images, data_root=data_root, show=True)")),
        ],
        "prototypes": [
            new_markdown_cell("# YOLACT prototypes and coefficients\n\nThe k prototypes for a few "
                              "images (paper Figure 5), the coefficient vectors of the detections "
                              "and the assembly prototypes x coefficients -> sigmoid -> crop -> mask "
                              "of one instance."),
            _params("run_dir = None  # None: the YOLACT analysis run of `preset`\n" + _DEFAULT_RUNS
                    + common + "images = [0, 1, 2]"),
            new_code_cell(_ANALYSIS_SETUP + "\n" + _default_runs("prototypes") + _with_checkpoint(
                "render.render_prototypes(paths.resolve(run_dir), paths.resolve(out_dir), "
                "images, data_root=data_root, show=True)")),
        ],
        "queries": [
            new_markdown_cell("# FastInst IA-guided query locations\n\nWhere the instance "
                              "activation-guided queries are picked for each IA-loss variant "
                              "(paper Figure 3: dense semantic loss / matching without and with "
                              "the location cost; give one run per variant), beside the ground "
                              "truth, and the predicted masks with the location of their query."),
            new_markdown_cell("A run without weights (its checkpoint is not committed, nor a "
                              "compact `model_fp16.pt`) is drawn from its `predictions_snapshot.json`: "
                              "its predictions on val images 0 and 1, written by `rtinst records "
                              "compact --analysis --preset tiny`."),
            _params("run_dirs = None  # None: the Table 6f IA-loss variants' runs of `preset`\n"
                    + _DEFAULT_RUNS + common
                    + "labels = None  # None: the IA-loss variant of each run\n"
                      "images = [0, 1]  # a run drawn from its snapshot has images 0 and 1\n"
                      "min_score = 0.3"),
            new_code_cell(_ANALYSIS_SETUP + "\n" + _default_runs("queries", "run_dirs") + _with_checkpoint(
                "render.render_queries([paths.resolve(r) for r in run_dirs], paths.resolve(out_dir), "
                "images, labels, min_score, data_root=data_root, show=True)", runs="run_dirs",
                snapshot=True)),
        ],
        "tide": [
            new_markdown_cell("# TIDE error analysis\n\nEach run's TIDE summary plot and our "
                              "comparison of dAP per error type across runs (SparseInst Figure 7 "
                              "style: SparseInst vs YOLACT vs FastInst), or across the rows of a "
                              "sweep: give `runs_root` to take every finished run with TIDE "
                              "numbers under it."),
            _params("run_dirs = None  # run folders, in legend order; None: the three default "
                    "models' runs of `preset`\n"
                    + _DEFAULT_RUNS + "labels = None\n"
                    "runs_root = None  # or: every run with TIDE numbers under this folder\n"
                    'out_dir = "results-own/figures/analysis"'),
            new_code_cell(_ANALYSIS_SETUP + "\n"
                          "if run_dirs is None and not runs_root:\n"
                          "    run_dirs, default_labels, untrained = analysis_runs.recorded_runs('tide', preset)\n"
                          "    labels = labels or default_labels\n"
                          "    print(*untrained, sep='\\n')\n"
                          "if runs_root:\n"
                          "    run_dirs = [p.parent for p in sorted(paths.resolve(runs_root).rglob('record.json'))\n"
                          "                if viz.compare.has_tide(p.parent)]\n"
                          "run_dirs = [paths.resolve(r) for r in run_dirs]\n"
                          "written = render.render_tide(run_dirs, paths.resolve(out_dir), labels)\n"
                          "for path in written:\n"
                          "    if path.suffix == '.png':\n"
                          "        display(Image(filename=str(path)))\n"
                          "viz.tide_table(run_dirs, labels).round(2)"),
        ],
        "speed_accuracy": [
            new_markdown_cell("# Speed vs accuracy\n\nOur AP (at the preset's scale) against our "
                              "paper-scale cost (GFLOPs, or FPS where latency was measured) for "
                              "every implemented row of every saved table (each paper's Figure 1, "
                              "from our own runs)."),
            _params('results_dir = "results"\npreset = "tiny"\nx = "gflops"  # gflops | fps\n'
                    'out_dir = "results-own/figures/analysis"'),
            new_code_cell(_ANALYSIS_SETUP + "from rtinst.harness import tables\n\n"
                          "saved = tables.load_saved(results_dir, preset)\n"
                          "points = viz.speed_accuracy_points(saved, x=x)\n"
                          "fig = viz.speed_accuracy_figure(points, x=x, y='ap', label='row', group='table',\n"
                          "                                xlabel=f'our {x} (paper scale)',\n"
                          "                                ylabel=f'our mask AP ({preset})',\n"
                          "                                title=f'AP vs {x}, every row of every table ({preset})')\n"
                          "viz.save_figure(fig, paths.resolve(out_dir) / f'speed_accuracy_{preset}_{x}.png')\n"
                          "points.round(2)"),
            new_markdown_cell("Each paper's Figure 1 as the paper draws it: only its Table 1 methods, "
                              "the paper's COCO AP on top and ours at the preset below, against our "
                              "paper-scale GFLOPs."),
            new_code_cell("from rtinst.viz.table_plots import plot_figure1\n\n"
                          "fig1 = plot_figure1(saved, preset)\n"
                          "if fig1 is None:\n"
                          "    print(f'no Table 1 saved at preset {preset}: run its table notebook first')\n"
                          "else:\n"
                          "    viz.save_figure(fig1, paths.resolve(out_dir) / f'figure1_{preset}.png')"),
        ],
    }


def _notebook(cells):
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"  # stable ids: regenerating gives the same file
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def all_notebooks() -> dict[Path, object]:
    sys.path.insert(0, str(REPO))
    import yaml

    from rtinst.harness.specs import list_specs

    out = {HERE / "run.ipynb": _notebook(run_notebook()),
           HERE / "summary.ipynb": _notebook(summary_notebook())}
    for name, cells in analysis_notebooks().items():
        out[HERE / "analysis" / f"{name}.ipynb"] = _notebook(cells)
    out[HERE / "ablation.ipynb"] = _notebook(table_notebook(
        "experiments/examples/yolact_fpn_width.yaml", "An own ablation", own=True))
    for spec in list_specs(REPO / "experiments"):
        data = yaml.safe_load(spec.read_text())
        title = f"{data['paper']} {data.get('title', spec.stem)}"
        rel = spec.relative_to(REPO).as_posix()
        out[HERE / spec.parent.name / f"{spec.stem}.ipynb"] = _notebook(table_notebook(rel, title))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check that the notebooks are current")
    args = p.parse_args(argv)
    stale = []
    for path, nb in all_notebooks().items():
        text = nbformat.writes(nb)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
