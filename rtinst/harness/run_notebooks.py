"""Fill the figure cells of finished runs' ``run.ipynb`` without running anything again.

Runs executed before ``notebooks/run.ipynb`` drew its figures inline (evaluation switched
pyplot to Agg) have empty "Loss curve" and "Predictions" cells, although the loss curve is in
their ``train_log.jsonl``. This executes only those two cells of the current template for
each run (one warm kernel) and splices their outputs into the run's notebook: the record,
the config and every table stay byte for byte as they are. Predictions need the run's
``coco_segm_results.json``, which is not committed: the cell then says how to re-create it.

    python -m rtinst.harness.run_notebooks results/runs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rtinst import paths
from rtinst.harness.notebook_exec import execute_notebook
from rtinst.io import atomic_write_text

FIGURE_CELLS = ("plot_loss_curve", "plot_predictions")


def _figure_cells(nb) -> dict[str, int]:
    """Index of each figure cell in a run notebook, by the function it calls."""
    out = {}
    for i, cell in enumerate(nb.cells):
        for name in FIGURE_CELLS:
            if cell.cell_type == "code" and name in cell.source:
                out[name] = i
    return out


def refresh_run_notebook(run_dir: str | Path, template: Path | None = None) -> bool:
    """Re-draw the figure cells of ``run_dir/run.ipynb`` from the run's files; True when the
    notebook changed. Only ``run.ipynb`` is written."""
    import nbformat

    from rtinst.harness.runner import RUN_NOTEBOOK

    run_dir = paths.resolve(run_dir)
    path = run_dir / "run.ipynb"
    nb = nbformat.read(path, as_version=4)
    targets = _figure_cells(nb)
    if not targets:
        return False
    tpl = nbformat.read(template or RUN_NOTEBOOK, as_version=4)
    cells = _figure_cells(tpl)
    mini = nbformat.v4.new_notebook(metadata=tpl.metadata)
    params = nbformat.v4.new_code_cell('run_dir = ""')
    params.metadata["tags"] = ["parameters"]
    mini.cells = [params, nbformat.v4.new_code_cell("%matplotlib inline\nfrom rtinst.viz import run_report")]
    mini.cells += [tpl.cells[cells[name]] for name in FIGURE_CELLS if name in targets]
    src = run_dir / f".refresh.{os.getpid()}.ipynb"
    out = run_dir / f".refresh.{os.getpid()}.out.ipynb"
    try:
        nbformat.write(mini, src)
        execute_notebook(src, out, {"run_dir": paths.display(run_dir)}, warm=True)
        done = nbformat.read(out, as_version=4)
    finally:
        for p in (src, out):
            p.unlink(missing_ok=True)
    executed = [c for c in done.cells if any(n in c.source for n in FIGURE_CELLS)]
    for name, cell in zip([n for n in FIGURE_CELLS if n in targets], executed):
        old = nb.cells[targets[name]]
        old.source, old.outputs = cell.source, cell.outputs
        old.execution_count = old.execution_count or cell.execution_count
    text = nbformat.writes(nb)
    if text == path.read_text():
        return False
    atomic_write_text(path, text)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    args = p.parse_args(argv)
    folders = []
    for r in map(paths.resolve, args.runs):
        folders += [r] if (r / "run.ipynb").is_file() else sorted(q.parent for q in r.glob("*/run.ipynb"))
    changed = sum(refresh_run_notebook(f) for f in folders)
    print(f"{changed} of {len(folders)} run notebook(s) refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
