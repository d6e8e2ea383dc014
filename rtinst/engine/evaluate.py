"""COCO mask AP through pycocotools or faster-coco-eval, with the same numbers from both.

Results follow the COCO results format: one dict per detection with ``image_id``,
``category_id`` (the dataset's real, possibly non-contiguous id), ``score`` and a compressed
RLE ``segmentation`` at the original image size. ``masks_to_coco_results`` writes exactly
that; ``evaluate_segm`` checks it before evaluating, so a bad file gives one clear error
instead of an assertion deep inside pycocotools.

Numbers are reported in percent, with the definitions of pycocotools' ``summarize()``.
A metric that pycocotools reports as -1 (no ground truth in that area range) is ``None``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from rtinst.errors import UserError
from rtinst.io import atomic_write_json

BACKENDS = ("faster_coco_eval", "pycocotools")
IOU_TYPES = ("segm", "bbox")

# Same order as pycocotools' COCOeval.stats (12 numbers from summarize()).
METRIC_KEYS = (
    "ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l",
    "ar1", "ar10", "ar100", "ar_s", "ar_m", "ar_l",
)

METRIC_LABELS = {
    "ap": "AP @[.50:.95]",
    "ap50": "AP @.50",
    "ap75": "AP @.75",
    "ap_s": "AP small",
    "ap_m": "AP medium",
    "ap_l": "AP large",
    "ar1": "AR maxDets=1",
    "ar10": "AR maxDets=10",
    "ar100": "AR maxDets=100",
    "ar_s": "AR small",
    "ar_m": "AR medium",
    "ar_l": "AR large",
}


# --------------------------------------------------------------------------- loading

def _read_json(path: str | os.PathLike, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} file {path} is a directory, not a JSON file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{what} file {path} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} file {path} is not a text JSON file") from None


def load_gt(gt: str | os.PathLike | dict | Any) -> tuple[dict, str]:
    """A private copy of the ground-truth dataset dict and a label naming it in errors.

    ``gt`` is a path, a COCO-format dict, or a loaded COCO object (pycocotools or
    faster-coco-eval; anything with a ``.dataset`` dict). Both COCO APIs modify annotations
    in place while evaluating, so the caller's object is copied, never touched.
    """
    if isinstance(gt, (str, os.PathLike)):
        label = f"ground-truth file {gt}"
        dataset = _read_json(gt, "ground-truth")
    elif isinstance(gt, dict):
        label, dataset = "ground-truth dict", copy.deepcopy(gt)
    elif isinstance(getattr(gt, "dataset", None), dict):
        src = getattr(gt, "annotation_file", None)
        label = f"ground-truth {src}" if isinstance(src, (str, os.PathLike)) else "ground-truth COCO object"
        dataset = copy.deepcopy(gt.dataset)
    else:
        raise TypeError(f"gt must be a path, a dict or a COCO object, got {type(gt).__name__}")
    if not isinstance(dataset, dict):
        raise UserError(f"{label} must hold a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise UserError(f"{label} has no '{key}' list; is it a COCO instances file?")
    for img in dataset["images"]:
        if not all(k in img for k in ("id", "height", "width")):
            raise UserError(f"{label}: image entry {img.get('id', img)!r} lacks id/height/width")
    img_ids = {img["id"] for img in dataset["images"]}
    cat_ids = {c.get("id") for c in dataset["categories"]}
    for ann in dataset["annotations"]:
        where = f"{label}: annotation {ann.get('id')!r}"
        missing = [k for k in ("id", "image_id", "category_id", "segmentation", "area") if k not in ann]
        if missing:
            raise UserError(f"{where} lacks {', '.join(missing)}")
        if ann["image_id"] not in img_ids:
            raise UserError(f"{where} refers to image_id {ann['image_id']!r}, which is not in 'images'")
        if ann["category_id"] not in cat_ids:
            raise UserError(f"{where} has category_id {ann['category_id']!r}, which is not in 'categories'")
    return dataset, label


def load_results(results: str | os.PathLike | Sequence[dict]) -> tuple[list[dict], str]:
    """A private (shallow-per-item) copy of the results list and a label naming it in errors.

    Both COCO APIs add keys (id, area, bbox, iscrowd) to every result dict in ``loadRes``.
    """
    if isinstance(results, (str, os.PathLike)):
        label = f"results file {results}"
        data = _read_json(results, "results")
    else:
        label, data = "results list", results
    if not isinstance(data, list):
        raise UserError(f"{label} must hold a JSON list of detections, got {type(data).__name__}")
    if len(data) == 0:
        raise UserError(f"{label} holds no detections (empty list); COCO AP is undefined")
    if not all(isinstance(r, dict) for r in data):
        bad = next(i for i, r in enumerate(data) if not isinstance(r, dict))
        raise UserError(f"{label}: detection #{bad} is not a JSON object")
    return [dict(r) for r in data], label


# --------------------------------------------------------------------------- validation

def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_results(results: list[dict], gt: dict, label: str, iou_type: str = "segm") -> None:
    """Raise a one-line ``UserError`` naming ``label`` and the offending detection.

    Checks: known image id, known category id, a finite score, and for ``segm`` a
    compressed RLE whose size equals the GT image's (height, width).
    """
    sizes = {img["id"]: [int(img["height"]), int(img["width"])] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, r in enumerate(results):
        img_id = r.get("image_id")
        where = f"{label}: detection #{i} (image_id {img_id!r})"
        if img_id not in sizes:
            raise UserError(f"{label}: detection #{i} has image_id {img_id!r}, which is not in the ground truth")
        if r.get("category_id") not in cat_ids:
            raise UserError(
                f"{where} has unknown category_id {r.get('category_id')!r}; "
                f"ground-truth categories are {sorted(cat_ids)}"
            )
        if iou_type == "segm":
            _check_rle(r.get("segmentation"), sizes[img_id], where)
        else:
            box = r.get("bbox")
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(map(_is_number, box))):
                raise UserError(f"{where} has no valid bbox [x, y, w, h]")
        if "score" not in r:
            raise UserError(f"{where} has no score")
        if not _is_number(r["score"]):
            raise UserError(f"{where} has score {r['score']!r}; expected a finite number")


def _check_rle(seg: Any, hw: list[int], where: str) -> None:
    if seg is None:
        raise UserError(f"{where} has no segmentation; results must carry a compressed RLE mask")
    if isinstance(seg, list):
        raise UserError(
            f"{where} has a polygon segmentation; results must be compressed RLE "
            "(use rtinst.engine.evaluate.masks_to_coco_results)"
        )
    if not (isinstance(seg, dict) and "counts" in seg and "size" in seg):
        raise UserError(f"{where} has a segmentation that is not RLE (needs 'size' and 'counts')")
    if not isinstance(seg["counts"], str):
        raise UserError(
            f"{where} has an uncompressed RLE (list counts); results must be compressed RLE "
            "(pycocotools.mask.encode)"
        )
    if list(seg["size"]) != hw:
        raise UserError(
            f"{where} has an RLE of size {list(seg['size'])} but the image is {hw} (height, width); "
            "masks must be at the original image size"
        )


# --------------------------------------------------------------------------- backends

def _stats_pycocotools(gt: dict, results: list[dict], iou_type: str) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(results)
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)


def _stats_faster(gt: dict, results: list[dict], iou_type: str, verbose: bool) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = print if verbose else (lambda *a, **k: None)
    coco_gt = COCO(gt, print_function=quiet)
    coco_dt = coco_gt.loadRes(results)
    # The defaults reproduce pycocotools: COCO area ranges, maxDets (1, 10, 100), no LVIS
    # rules, no extra stats. ``separate_eval=True`` keeps pycocotools' two-step
    # evaluate-then-accumulate; both modes give the same numbers (tests check it).
    ev = COCOeval_faster(
        coco_gt, coco_dt, iouType=iou_type, print_function=quiet,
        lvis_style=False, extra_calc=False, separate_eval=True,
    )
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:12], dtype=np.float64)


def _percent(x: float) -> float | None:
    return None if x < 0 else float(x) * 100.0


def evaluate_segm(
    gt: str | os.PathLike | dict | Any,
    results: str | os.PathLike | Sequence[dict],
    backend: str = "faster_coco_eval",
    iou_type: str = "segm",
    verbose: bool = False,
) -> dict:
    """COCO AP/AR of ``results`` against ``gt``, in percent.

    Returns ``ap, ap50, ap75, ap_s, ap_m, ap_l, ar1, ar10, ar100, ar_s, ar_m, ar_l``
    (pycocotools' 12 ``stats`` times 100; ``None`` where pycocotools gives -1), plus
    ``backend``, ``num_images`` (GT images evaluated) and ``num_detections``.

    For ``segm`` any ``bbox`` in the results is dropped before evaluating (as detectron2
    does): with a bbox present, pycocotools' ``loadRes`` would take the *box* area for the
    small/medium/large split of detections instead of the mask area.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown evaluation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if iou_type not in IOU_TYPES:
        raise UserError(f"unknown iou_type {iou_type!r}; choose one of {', '.join(IOU_TYPES)}")
    gt_data, _ = load_gt(gt)
    dets, label = load_results(results)
    validate_results(dets, gt_data, label, iou_type)
    if iou_type == "segm":
        for d in dets:
            d.pop("bbox", None)

    out = io.StringIO()
    with contextlib.redirect_stdout(out) if not verbose else contextlib.nullcontext():
        if backend == "pycocotools":
            stats = _stats_pycocotools(gt_data, dets, iou_type)
        else:
            stats = _stats_faster(gt_data, dets, iou_type, verbose)

    metrics: dict = {k: _percent(v) for k, v in zip(METRIC_KEYS, stats)}
    metrics.update(backend=backend, num_images=len(gt_data["images"]), num_detections=len(dets))
    return metrics


# --------------------------------------------------------------------------- writing results

def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def masks_to_coco_results(
    image_id: int,
    masks: Any,
    scores: Iterable[float] | Any,
    category_ids: Iterable[int] | Any,
) -> list[dict]:
    """COCO result dicts for one image: compressed RLE (``counts`` as str) per mask.

    ``masks`` is an (N, H, W) boolean tensor or array at the *original image size*;
    ``scores`` and ``category_ids`` (real dataset ids) have length N.
    """
    masks = _to_numpy(masks)
    scores = _to_numpy(scores).reshape(-1)
    cats = _to_numpy(category_ids).reshape(-1)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if not len(masks) == len(scores) == len(cats):
        raise ValueError(f"got {len(masks)} masks, {len(scores)} scores, {len(cats)} category ids")
    if len(masks) == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order.
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    out = []
    for rle, score, cat in zip(rles, scores, cats):
        out.append({
            "image_id": int(image_id),
            "category_id": int(cat),
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "score": float(score),
        })
    return out


def write_results(path: str | os.PathLike, results: Sequence[dict]) -> Path:
    """Write a COCO results list as compact JSON, atomically."""
    atomic_write_json(path, list(results), indent=None)
    return Path(path)


def format_metrics(metrics: dict) -> str:
    """A readable two-column table of the AP/AR family (and TIDE numbers when present)."""
    lines = [f"COCO metrics ({metrics.get('backend', '?')}, "
             f"{metrics.get('num_images', '?')} images, {metrics.get('num_detections', '?')} detections)"]
    for k in METRIC_KEYS:
        v = metrics.get(k)
        lines.append(f"  {METRIC_LABELS[k]:<16} {'n/a (no GT)' if v is None else f'{v:6.2f}':>12}")
    return "\n".join(lines)
