"""Every figure of one analysis for given runs, written to a folder (CLI and notebooks)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt

from rtinst.config_schema import RunConfig
from rtinst.engine.compact import run_weights
from rtinst.errors import UserError
from rtinst.io import atomic_path
from rtinst.records import RunRecord
from rtinst.viz.compare import tide_comparison_figure, tide_table
from rtinst.viz.confusion import confusion_figure, run_confusion
from rtinst.viz.curves import curve_table, training_curve_figure
from rtinst.viz.draw import save_figure
from rtinst.viz.iam import iam_average, iam_average_figure, iam_figure
from rtinst.viz.prototypes import assembly_figure, coefficients_figure, prototypes_figure
from rtinst.viz.queries import ia_loss_variant, query_locations_figure, query_masks_figure
from rtinst.viz.run import LoadedRun, Sample, load_run, predict
from rtinst.viz.snapshot import IMAGES as SNAPSHOT_IMAGES
from rtinst.viz.snapshot import has_snapshot, snapshot_run


def _save(fig, path: Path, written: list[Path], show: bool) -> None:
    written.append(save_figure(fig, path))
    if show:
        plt.show()
    plt.close(fig)


def _load(run: str | Path | LoadedRun, data_root, model: str) -> LoadedRun:
    loaded = run if isinstance(run, LoadedRun) else load_run(run, data_root)
    if loaded.cfg.model.name != model:
        raise UserError(f"{loaded.run_dir}: a {loaded.cfg.model.name} run; this figure needs {model}")
    return loaded


def render_iam(run, out: str | Path, images=(0, 1), average_images: int | None = 100,
               data_root=None, show: bool = False) -> list[Path]:
    """SparseInst: Figure 4 per image, Figure 6 per IAM group (mean over ``average_images``)."""
    loaded, out, written = _load(run, data_root, "sparseinst"), Path(out), []
    for s in predict(loaded, list(images)):
        _save(iam_figure(s, loaded.class_names), out / f"iam_image{s.image_id}.png", written, show)
    mean = iam_average(loaded, average_images)
    for g in range(mean.shape[1]):
        _save(iam_average_figure(mean, g), out / f"iam_mean_group{g + 1}.png", written, show)
    return written


def render_prototypes(run, out: str | Path, images=(0, 1, 2), data_root=None,
                      show: bool = False) -> list[Path]:
    """YOLACT: prototypes of several images, coefficients and assembly of the first image."""
    loaded, out, written = _load(run, data_root, "yolact"), Path(out), []
    samples = predict(loaded, list(images))
    _save(prototypes_figure(samples), out / "prototypes.png", written, show)
    first = samples[0]
    _save(coefficients_figure(first, loaded.class_names), out / f"coefficients_image{first.image_id}.png",
          written, show)
    if len(first.result["scores"]):
        _save(assembly_figure(first, loaded.class_names), out / f"assembly_image{first.image_id}.png",
              written, show)
    return written


def _query_panels(run, images, data_root, min_score) -> tuple[RunConfig, list[str], list[Sample]]:
    """A run's config, class names and samples: predicted when it has weights, else read from
    its predictions snapshot."""
    if isinstance(run, LoadedRun) or run_weights(run) is not None or not has_snapshot(run):
        loaded = _load(run, data_root, "fastinst")
        return loaded.cfg, loaded.class_names, predict(loaded, images)
    snap = snapshot_run(run, images, data_root, min_score)
    if snap.cfg.model.name != "fastinst":
        raise UserError(f"{run}: a {snap.cfg.model.name} run; this figure needs fastinst")
    return snap.cfg, snap.class_names, snap.samples


def render_queries(runs, out: str | Path, images=SNAPSHOT_IMAGES, labels: list[str] | None = None,
                   min_score: float = 0.3, data_root=None, show: bool = False) -> list[Path]:
    """FastInst: query locations of each run (e.g. the IA-loss variants) beside the GT, and
    the first run's masks with their query location. A run without weights (no checkpoint,
    no compact file) is drawn from its ``predictions_snapshot.json``."""
    runs = list(runs)
    if not runs:
        raise UserError("render_queries: no run given")
    if labels and len(labels) != len(runs):
        raise UserError(f"render_queries: {len(labels)} labels for {len(runs)} runs")
    drawn = [_query_panels(r, list(images), data_root, min_score) for r in runs]
    names = labels or [ia_loss_variant(cfg) for cfg, _, _ in drawn]
    class_names = drawn[0][1]
    out, written = Path(out), []
    per_run = [samples for _, _, samples in drawn]
    for j, image_id in enumerate(s.image_id for s in per_run[0]):
        panels = [(name, samples[j]) for name, samples in zip(names, per_run)]
        _save(query_locations_figure(panels, class_names, min_score),
              out / f"queries_image{image_id}.png", written, show)
        _save(query_masks_figure(per_run[0][j], class_names),
              out / f"query_masks_image{image_id}.png", written, show)
    return written


def render_tide(runs, out: str | Path, labels: list[str] | None = None, show: bool = False) -> list[Path]:
    """TIDE comparison across runs (+ the table as CSV); each run's own TIDE summary plot is
    copied next to it when the run left one."""
    runs = list(runs)
    table = tide_table(runs, labels)
    out, written = Path(out), []
    _save(tide_comparison_figure(table), out / "tide_comparison.png", written, show)
    with atomic_path(out / "tide_comparison.csv") as tmp:
        table.to_csv(tmp)
    written.append(out / "tide_comparison.csv")
    folders = [(Path(r), name) for r, name in zip(runs, table.index) if not isinstance(r, RunRecord)]
    for folder, name in folders:  # a RunRecord given in memory has no folder with a TIDE plot
        for plot in sorted(folder.glob("*_summary.png")):
            target = out / f"tide_summary_{_slug(name)}.png"
            with atomic_path(target) as tmp:
                shutil.copyfile(plot, tmp)
            written.append(target)
    return written


def render_curve(runs, out: str | Path, labels: list[str] | None = None, goal: float | None = None,
                 show: bool = False) -> list[Path]:
    """Mask AP vs training minutes and steps across runs (+ the points as CSV)."""
    table = curve_table(list(runs), labels)
    out, written = Path(out), []
    _save(training_curve_figure(table, goal=goal), out / "training_curves.png", written, show)
    with atomic_path(out / "training_curves.csv") as tmp:
        table.to_csv(tmp, index=False)
    written.append(out / "training_curves.csv")
    return written


def render_confusion(run: str | Path, out: str | Path, data_root=None, show: bool = False) -> list[Path]:
    """Class confusion of a finished run's localized objects (+ the counts as CSV)."""
    table = run_confusion(run, data_root=data_root)
    out, written = Path(out), []
    name = Path(run).name
    _save(confusion_figure(table), out / f"confusion_{name}.png", written, show)
    with atomic_path(out / f"confusion_{name}.csv") as tmp:
        table.to_csv(tmp)
    written.append(out / f"confusion_{name}.csv")
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
