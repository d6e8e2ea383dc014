"""Figures for understanding trained models, testable without a notebook.

- ``run``: load a run folder (record + config + ``checkpoints/last.pt``, else
  the committed compact ``model_fp16.pt``) and predict a few val
  images with the models' extras (IAMs, prototypes/coefficients, query locations).
- ``iam``: SparseInst instance activation maps beside their masks (paper Figure 4) and the
  mean activation of every IAM over the val split (Figure 6), Group-IAM groups separately.
- ``prototypes``: YOLACT's prototypes (Figure 5), the detections' coefficient vectors and the
  assembly prototypes x coefficients -> sigmoid -> crop -> mask for one instance.
- ``queries``: FastInst IA-guided query locations for the IA-loss variants beside the
  ground truth (Figure 3), and predicted masks with the location of their query.
- ``snapshot``: a run's predictions for a few val images, saved small
  (``predictions_snapshot.json``): the query figures of a run whose weights are not committed.
- ``confusion``: GT class x predicted class of the localized objects (what TIDE's Cls error
  hides: which classes are confused).
- ``compare``: dAP per TIDE error type across models or sweep rows (SparseInst Figure 7
  style) and AP vs FPS / GFLOPs (each paper's Figure 1).
- ``curves``: mask AP vs training minutes and steps across runs (their ``curve.json``).
- ``run_report``: one run's loss curve and a few of its predictions (notebooks/run.ipynb).
- ``table_plots``: the figure of each reproduced paper table and each paper's Figure 1 from
  the saved tables (used by ``rtinst.harness.tables`` and the summary notebook).

Every function returns a matplotlib Figure; ``save_figure`` writes it atomically.
"""

from rtinst.viz.compare import (speed_accuracy_figure, speed_accuracy_points, tide_comparison_figure,
                               tide_table)
from rtinst.viz.confusion import class_confusion, confusion_figure, localized_accuracy, run_confusion
from rtinst.viz.curves import curve_table, training_curve_figure
from rtinst.viz.draw import save_figure
from rtinst.viz.iam import iam_average, iam_average_figure, iam_figure
from rtinst.viz.prototypes import assembly_figure, coefficients_figure, prototypes_figure
from rtinst.viz.queries import query_locations_figure, query_masks_figure
from rtinst.viz.run import LoadedRun, Sample, load_run, predict
from rtinst.viz.snapshot import snapshot_samples, write_snapshot

__all__ = [
    "LoadedRun", "Sample", "assembly_figure", "class_confusion", "confusion_figure",
    "localized_accuracy", "run_confusion", "curve_table", "training_curve_figure", "coefficients_figure", "iam_average",
    "iam_average_figure", "iam_figure", "load_run", "predict", "prototypes_figure",
    "query_locations_figure", "query_masks_figure", "save_figure", "speed_accuracy_figure",
    "snapshot_samples", "speed_accuracy_points", "write_snapshot",
    "tide_comparison_figure", "tide_table",
]
