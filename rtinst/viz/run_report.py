"""The figures of one run's report (notebooks/run.ipynb): its loss curve and a few predictions.

Drawn from the files a run folder holds (``train_log.jsonl``, ``coco_segm_results.json``,
``record.json``), so they need no model and no checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from rtinst import paths
from rtinst.records import read_record, read_train_log


def recreate_command(run_dir: str | Path) -> str:
    """:func:`rtinst.engine.restore.recreate_command` for a run folder, from its record when
    it has one."""
    from rtinst.engine.restore import recreate_command as command

    run_dir = paths.resolve(run_dir)
    record = read_record(run_dir) if (run_dir / "record.json").is_file() else None
    return command(run_dir, record)


def missing_checkpoint(run_dir: str | Path, snapshot: bool = False) -> str | None:
    """None when the run has weights to load (its checkpoint or its compact model_fp16.pt),
    or with ``snapshot`` (a figure that can draw from it) its predictions_snapshot.json, else
    one line saying how to re-create them."""
    from rtinst.engine.compact import COMPACT, run_weights, snapshot_path

    run_dir = paths.resolve(run_dir)
    if run_weights(run_dir) is not None or (snapshot and snapshot_path(run_dir).is_file()):
        return None
    if not (run_dir / "record.json").is_file():
        return (f"{paths.display(run_dir)} has no run record: not trained yet (`rtinst sweep SPEC "
                f"--preset PRESET --dry-run` lists a spec's runs to train)")
    return (f"{paths.display(run_dir)} has no checkpoint (checkpoints are not committed) and no "
            f"compact {COMPACT}; re-create it with `{recreate_command(run_dir)}`")


def explain_missing_loss_curve(run_dir: str | Path) -> str:
    trained_in = None
    if (paths.resolve(run_dir) / "record.json").is_file():
        trained_in = read_record(paths.resolve(run_dir)).artifacts.get("trained_in")
    if trained_in:
        return (f"no loss curve: {paths.display(run_dir)} is evaluation-only; the model was "
                f"trained in {trained_in} (its run.ipynb has the curve)")
    return f"no loss curve: {paths.display(run_dir)} logged no training step (no train_log.jsonl rows)"


def explain_missing_predictions(run_dir: str | Path) -> str:
    return (f"no predictions: {paths.display(run_dir)} has no coco_segm_results.json (COCO results "
            f"are not committed); re-create them with `{recreate_command(run_dir)}`")


def plot_loss_curve(run_dir: str | Path):
    """Total loss and each loss term against the iteration (None when nothing was logged)."""
    import matplotlib.pyplot as plt

    run_dir = paths.resolve(run_dir)
    log = read_train_log(run_dir)
    if log.empty:
        return None
    # Small, low-dpi figures without tight_layout: they are drawn once per run by papermill.
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=72)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.9)
    for col in [c for c in log.columns if c.startswith("loss")]:
        ax.plot(log["iter"], log[col], label=col, lw=2 if col == "loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(Path(run_dir).name, fontsize=9)
    return fig


def plot_predictions(run_dir: str | Path, n: int = 3, min_score: float = 0.3, max_masks: int = 20):
    """Predicted masks (from ``coco_segm_results.json``) over ``n`` val images."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    run_dir = paths.resolve(run_dir)
    results_path = run_dir / "coco_segm_results.json"
    if not results_path.is_file():
        return None
    rec = read_record(run_dir)
    data = rec.config.get("data", {})
    root = paths.resolve(data.get("root", ""))
    gt = json.loads((root / data.get("val_ann", "")).read_text())
    files = {im["id"]: root / data.get("val_images", "") / im["file_name"] for im in gt["images"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    results = json.loads(results_path.read_text())
    by_image: dict[int, list] = {}
    for r in sorted(results, key=lambda r: -r["score"]):
        if r["score"] >= min_score:
            by_image.setdefault(r["image_id"], []).append(r)
    image_ids = [i for i in files if i in by_image][:n] or list(files)[:n]
    fig, axes = plt.subplots(1, max(1, len(image_ids)), figsize=(3.5 * max(1, len(image_ids)), 3.6),
                             dpi=72)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.03)
    colors = plt.get_cmap("tab20")
    for ax, image_id in zip(np.atleast_1d(axes), image_ids):
        image = np.asarray(Image.open(files[image_id]).convert("RGB"), dtype=float) / 255
        for k, r in enumerate(by_image.get(image_id, [])[:max_masks]):
            m = mask_utils.decode(r["segmentation"]).astype(bool)
            image[m] = 0.5 * image[m] + 0.5 * np.array(colors(k % 20)[:3])
            ys, xs = np.nonzero(m)
            if len(xs):
                ax.text(xs.min(), ys.min(), f"{names.get(r['category_id'], r['category_id'])} "
                        f"{r['score']:.2f}", fontsize=6, color="white",
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        ax.imshow(image)
        ax.set_title(f"image {image_id}: {len(by_image.get(image_id, []))} masks >= {min_score}",
                     fontsize=8)
        ax.axis("off")
    return fig
