"""Which class each localized object is given: a GT-class x predicted-class matrix.

TIDE's Cls error says how much AP misclassification costs, not which classes are confused.
Here every non-crowd GT instance is matched to the highest-scoring detection (any class)
whose mask IoU with it is >= ``iou``; the row is the GT class, the column that detection's
class, or "missed" when no detection overlaps enough.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from rtinst.errors import UserError
from rtinst.records import read_record

MISSED = "missed"


def class_confusion(gt: dict, results: list[dict], iou: float = 0.5, min_score: float = 0.05) -> pd.DataFrame:
    """Counts (GT classes x predicted classes + "missed") over the images of ``gt``."""
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    col = {c["id"]: i for i, c in enumerate(cats)}
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    by_image: dict[int, list[dict]] = {}
    for r in results:
        if r["score"] >= min_score:
            by_image.setdefault(r["image_id"], []).append(r)
    counts = np.zeros((len(cats), len(cats) + 1), dtype=np.int64)
    anns_by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and a["image_id"] in sizes:
            anns_by_image.setdefault(a["image_id"], []).append(a)
    for image_id, anns in anns_by_image.items():
        h, w = sizes[image_id]
        dets = by_image.get(image_id, [])
        if not dets:
            for a in anns:
                counts[col[a["category_id"]], -1] += 1
            continue
        gts = [_rle(a["segmentation"], h, w) for a in anns]
        ious = mask_utils.iou([d["segmentation"] for d in dets], gts, [0] * len(gts))  # (D, G)
        scores = np.array([d["score"] for d in dets])
        for j, a in enumerate(anns):
            hits = np.nonzero(ious[:, j] >= iou)[0]
            k = -1 if len(hits) == 0 else col[dets[hits[np.argmax(scores[hits])]]["category_id"]]
            counts[col[a["category_id"]], k] += 1
    table = pd.DataFrame(counts, index=pd.Index(names, name="ground truth"),
                         columns=pd.Index(names + [MISSED], name="predicted"))
    table.attrs.update(iou=iou, min_score=min_score)
    return table


def _rle(segmentation, h: int, w: int) -> dict:
    if isinstance(segmentation, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, h, w)
    return segmentation


def _predict_results(run_dir: Path, data_root: str | Path | None) -> tuple[list[dict], set[int]]:
    """The val predictions of the run's restored model (its checkpoint, else model_fp16.pt:
    then up to float16 rounding of the weights) over the images its evaluation used."""
    from rtinst.data.build import collate_fn
    from rtinst.engine.inference import predict_coco
    from rtinst.engine.restore import load_run

    run = load_run(run_dir, data_root)
    n = run.cfg.eval.max_images
    results = predict_coco(run.model, run.val_set, collate_fn(run.cfg.data),
                           run.val_set.contiguous_to_cat_id, max_images=n, progress=False)
    return results, set(run.val_set.ids[:n])


def run_confusion(run_dir: str | Path, iou: float = 0.5, min_score: float = 0.05,
                  data_root: str | Path | None = None) -> pd.DataFrame:
    """``class_confusion`` of a finished run, from its val GT and ``coco_segm_results.json``;
    without that file (it is not committed), from the predictions of its restored model."""
    from rtinst.engine.compact import COMPACT, run_weights

    run_dir = Path(run_dir)
    rec = read_record(run_dir)
    results_file = run_dir / "coco_segm_results.json"
    evaluated = None  # image ids, when predicted here
    if results_file.is_file():
        results = json.loads(results_file.read_text())
    elif run_weights(run_dir) is not None:
        results, evaluated = _predict_results(run_dir, data_root)
    else:
        from rtinst.engine.restore import recreate_hint

        raise UserError(f"{results_file}: the run's COCO results are not here (they are not "
                        f"committed), nor a checkpoint or {COMPACT} to predict them; "
                        f"{recreate_hint(run_dir, rec)}")
    data = rec.config.get("data", {})
    root = Path(data_root) if data_root is not None else Path(data.get("root", ""))
    gt_file = run_dir / "gt_subset.json"  # the evaluated images when eval.max_images cut the split
    if not gt_file.is_file():
        gt_file = root / data.get("val_ann", "")
    if not gt_file.is_file():
        raise UserError(f"{gt_file}: val annotations not found (pass data_root)")
    gt = json.loads(gt_file.read_text())
    if evaluated is not None:  # the images the evaluation used, as gt_subset.json holds them
        gt = {**gt, "images": [im for im in gt["images"] if im["id"] in evaluated]}
    return class_confusion(gt, results, iou, min_score)


def localized_accuracy(table: pd.DataFrame) -> float:
    """Fraction of localized GT instances (not missed) whose detection has the right class."""
    found = table.drop(columns=MISSED)
    total = found.to_numpy().sum()
    return float(np.trace(found.to_numpy()) / total) if total else float("nan")


def confusion_figure(table: pd.DataFrame, title: str = ""):
    """Row-normalized heat map (share of each GT class's instances), counts written in cells."""
    import matplotlib.pyplot as plt

    counts = table.to_numpy()
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.62 * counts.shape[1] + 2.2, 0.5 * counts.shape[0] + 1.6))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(counts.shape[1]), table.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(counts.shape[0]), table.index, fontsize=8)
    ax.set_xlabel(f"class of the best-scoring detection with mask IoU >= {table.attrs.get('iou', 0.5)}")
    ax.set_ylabel("ground-truth class")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02).set_label("share of the GT class", fontsize=8)
    acc = localized_accuracy(table)
    ax.set_title(title or f"Class confusion of localized objects (right class: {acc:.0%})", fontsize=10)
    fig.tight_layout()
    return fig
