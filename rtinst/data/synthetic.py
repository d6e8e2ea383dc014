"""The embedded synthetic dataset: textured shapes on cluttered backgrounds, in COCO format.

A laptop-scale stand-in for COCO instance segmentation. Ten shape classes (circle, square,
triangle, star, ring, cross, crescent, hexagon, heart, ellipse) are drawn with random
rotation, scale, slight stretch, texture (solid, stripes, dots, checker, gradient) and
colours sampled independently of the class, so the class is told by shape alone. Objects
overlap (later ones are drawn on top and the annotation is the *visible* part), some
same-class pairs touch, a few clusters of tiny objects are annotated as ``iscrowd=1`` regions,
and the background carries unlabelled clutter (lines, scribbles, blobs, pixel noise).
Areas span COCO's small / medium / large buckets at the stored resolution.

Annotations are exact: every mask a reader decodes with pycocotools is the set of pixels the
object covers in the image. Unoccluded shapes are stored as their polygons; occluded ones as
pixel-boundary polygons of the visible region; a random ~12% (and any region with a hole) as
compressed RLE; crowd regions as uncompressed RLE, as in COCO.

How hard the images are is a :class:`Difficulty`: objects per image, their size distribution,
the object textures and the background clutter. ``hard`` (the default) is the embedded dataset
described above; ``easy`` is solid-colour shapes, few and mid-sized, on a plain noisy
background; the levels in between are in :data:`DIFFICULTIES`. Every level keeps the COCO-like
parts that cost nothing: crowd regions, occlusion (visible-part masks), touching same-class
pairs, real (non-contiguous) category ids, RLE and polygon segmentations.

Each image is generated from its own seed derived from (seed, split, index), so the output is
byte-identical for the same arguments whatever the number of worker processes.

The images are drawn by :mod:`rtinst.data.synthetic_draw`; this module turns each drawn image
into COCO annotations and writes the dataset folder.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from rtinst.data.difficulty import DEFAULT_DIFFICULTY, DIFFICULTIES, Difficulty, resolve_difficulty
from rtinst.data.segmentation import (compressed_rle, decode_polygons, mask_bbox,
                                      mask_to_polygons, rle_counts)
from rtinst.data.synthetic_draw import CATEGORIES, Canvas, draw_image
from rtinst.errors import UserError
from rtinst.io import atomic_path, atomic_write_json

GENERATION_FILE = "generation.json"
RLE_PROBABILITY = 0.12

# ---------------------------------------------------------------------------------------------
# One image.


def _render(seed: int, split: str, index: int,
            difficulty: Difficulty = Difficulty()) -> tuple[bytes, dict, list[dict], dict]:
    """Draw one image; return its JPEG bytes, COCO image record, annotations and counters."""
    data, canvas, rng = draw_image(seed, split, index, difficulty)
    annotations, counters = _annotate(canvas, rng)
    record = {"id": index + 1, "file_name": f"{index + 1:06d}.jpg", "height": canvas.h,
              "width": canvas.w}
    return data, record, annotations, counters


def _annotate(canvas: Canvas, rng: np.random.Generator) -> tuple[list[dict], dict]:
    counters = {"instances": 0, "occluded": 0, "hidden_fraction_sum": 0.0, "pairs": 0}
    annotations = []
    for k, obj in enumerate(canvas.objects, start=1):
        visible = canvas.ids == k
        area = int(visible.sum())
        if area == 0:
            continue
        use_rle = rng.random() < RLE_PROBABILITY
        if obj["crowd"]:
            segmentation: Any = {"size": [canvas.h, canvas.w], "counts": rle_counts(visible)}
        else:
            counters["instances"] += 1
            counters["pairs"] += int(obj["pair"])
            occluded = area < obj["in_image"]
            if occluded:
                counters["occluded"] += 1
                counters["hidden_fraction_sum"] += 1.0 - area / obj["in_image"]
            if use_rle:
                segmentation = compressed_rle(visible)
            elif not occluded:
                segmentation = obj["polygons"]
            else:
                polys = mask_to_polygons(visible)
                exact = polys is not None and np.array_equal(
                    decode_polygons(polys, canvas.h, canvas.w), visible)
                segmentation = polys if exact else compressed_rle(visible)
        y0, y1, x0, x1 = mask_bbox(visible)
        annotations.append({
            "image_id": None,  # filled in by the caller
            "category_id": CATEGORIES[obj["cat"]][0],
            "segmentation": segmentation,
            "area": area,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "iscrowd": int(obj["crowd"]),
        })
    return annotations, counters


def _render_job(job: tuple[int, str, int, Difficulty, str]) -> tuple[dict, list[dict], dict]:
    seed, split, index, difficulty, image_dir = job
    data, record, annotations, counters = _render(seed, split, index, difficulty)
    with atomic_path(Path(image_dir) / record["file_name"]) as tmp:
        tmp.write_bytes(data)
    for ann in annotations:
        ann["image_id"] = record["id"]
    return record, annotations, counters


# ---------------------------------------------------------------------------------------------
# Public API.


def generate_split(out_dir: str | os.PathLike, split: str, num_images: int, seed: int = 0,
                   difficulty: Difficulty = Difficulty(), pool: Any = None,
                   progress: bool = True) -> dict:
    """Write ``out_dir/<split>/*.jpg`` and ``out_dir/annotations/instances_<split>.json``.

    Returns the generator's occlusion counters for the split.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, split, i, difficulty, str(image_dir)) for i in range(num_images)]
    results = pool.imap(_render_job, jobs, chunksize=8) if pool is not None else map(_render_job, jobs)
    images, annotations = [], []
    totals = {"instances": 0, "occluded": 0, "hidden_fraction_sum": 0.0, "pairs": 0}
    for record, anns, counters in tqdm(results, total=num_images, desc=f"synthetic {split}",
                                       disable=not progress, unit="img"):
        images.append(record)
        for ann in anns:
            ann["id"] = len(annotations) + 1
            annotations.append({"id": ann.pop("id"), **ann})
        for key in totals:
            totals[key] += counters[key]
    info = {"description": "rtinst synthetic shapes (COCO format)", "version": "1.0",
            "split": split, "seed": seed, "size": difficulty.size}
    extra = _generation_extra(difficulty)
    coco = {
        "info": {**info, **extra},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in CATEGORIES],
    }
    atomic_write_json(out_dir / "annotations" / f"instances_{split}.json", coco, indent=None)
    n = max(totals["instances"], 1)
    return {
        "occluded_instances": totals["occluded"],
        "occluded_percent": round(100.0 * totals["occluded"] / n, 1),
        "mean_hidden_fraction_of_occluded": round(totals["hidden_fraction_sum"] / max(totals["occluded"], 1), 3),
        "adjacent_same_class_pairs": totals["pairs"],
    }


def _generation_extra(difficulty: Difficulty) -> dict[str, Any]:
    """What a non-default level adds to ``info`` and ``generation.json``: nothing for the
    default level, so the embedded dataset's files stay byte-identical to earlier versions."""
    def same(level: Difficulty) -> bool:  # the size is stored on its own
        return replace(difficulty, size=level.size) == level

    if same(DIFFICULTIES[DEFAULT_DIFFICULTY]):
        return {}
    named = [name for name, d in DIFFICULTIES.items() if same(d)]
    described = difficulty.describe()
    described.pop("size")  # stored as "size" already
    return {"difficulty": named[0] if named else "custom", "generator": described}


def generation_record(num_train: int, num_val: int, seed: int,
                      difficulty: Difficulty = Difficulty()) -> dict[str, Any]:
    """The content of ``generation.json`` for these arguments: what a data folder is compared
    with before it is used (see ``rtinst.data.build.ensure_synthetic``)."""
    return {"train": num_train, "val": num_val, "seed": seed, "size": difficulty.size,
            **_generation_extra(difficulty)}


def generate_synthetic(out_dir: str | os.PathLike, num_train: int = 2000, num_val: int = 500,
                       seed: int = 0, size: int | None = None, workers: int | None = None,
                       progress: bool = False, difficulty: Difficulty | str = DEFAULT_DIFFICULTY
                       ) -> dict:
    """Generate the synthetic dataset under ``out_dir`` and return its statistics.

    Layout: ``annotations/instances_{train,val}.json``, images in ``train/`` and ``val/``
    (``file_name`` is relative to the split folder), and ``statistics.json``. ``difficulty``
    is a level name of :data:`DIFFICULTIES` or a :class:`Difficulty`; ``size`` (the long
    edge) replaces the level's. The output is byte-identical for the same (num_*, seed,
    size, difficulty), whatever ``workers`` is.
    Returns ``{"train": stats, "val": stats}`` as computed by
    :func:`rtinst.data.stats.dataset_statistics`, plus the generator's occlusion counters.
    """
    from rtinst.data.stats import dataset_statistics

    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise UserError(f"need a positive number of images, got --train {num_train} --val {num_val}")
    if isinstance(difficulty, str):
        difficulty = resolve_difficulty(difficulty, size=size)
    else:  # checked like a level with knobs
        difficulty = resolve_difficulty(DEFAULT_DIFFICULTY, **{**asdict(difficulty),
                                                               **({"size": size} if size else {})})
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    workers = workers or min(os.cpu_count() or 1, 8)
    out_dir = Path(out_dir)
    stats: dict[str, Any] = {}
    splits = [(s, n) for s, n in (("train", num_train), ("val", num_val)) if n > 0]
    # Workers only need numpy/PIL/pycocotools; fork is cheap and safe for that on Linux.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = context.Pool(workers) if workers > 1 else None
    try:
        for split, n in splits:
            occlusion = generate_split(out_dir, split, n, seed, difficulty, pool, progress)
            split_stats = dataset_statistics(out_dir / "annotations" / f"instances_{split}.json")
            split_stats["occlusion"] = occlusion
            stats[split] = split_stats
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    atomic_write_json(out_dir / "statistics.json", stats)
    # Written last: its presence means the folder is complete, its content what made it.
    atomic_write_json(out_dir / GENERATION_FILE, generation_record(num_train, num_val, seed, difficulty))
    return stats
