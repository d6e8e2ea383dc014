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
"""

from __future__ import annotations

import colorsys
import io
import math
import multiprocessing
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rtinst.data.segmentation import (compressed_rle, decode_polygons, mask_bbox,
                                      mask_to_polygons, rle_counts)
from rtinst.data.difficulty import (DEFAULT_DIFFICULTY, DIFFICULTIES, REFERENCE_SIZE, TEXTURES,
                                    Difficulty, resolve_difficulty)
from rtinst.data.shapes import clip_polygon, shoelace, unit_shape
from rtinst.errors import UserError
from rtinst.io import atomic_path, atomic_write_json

# Real category ids are deliberately non-contiguous, like COCO's, so that code which mixes
# up category ids and contiguous labels fails on the synthetic data too.
CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "circle"),
    (2, "square"),
    (4, "triangle"),
    (5, "star"),
    (7, "ring"),
    (9, "cross"),
    (11, "crescent"),
    (13, "hexagon"),
    (16, "heart"),
    (18, "ellipse"),
)
SPLIT_CODES = {"train": 1, "val": 2}
JPEG_QUALITY = 90

GENERATION_FILE = "generation.json"
# REFERENCE_SIZE: areas below are in pixels at this long edge and scale with size**2.
# COCO area buckets: small < 32^2 <= medium < 96^2 <= large. Sampling mixture of target areas
# (probability, low, high); occlusion later moves some instances into smaller buckets.
AREA_MIXTURE = ((0.33, 140.0, 1024.0), (0.31, 1024.0, 9216.0), (0.36, 10500.0, 30000.0))
MIN_VISIBLE_PIXELS = 40
MIN_VISIBLE_FRACTION = 0.5
MIN_SIDE = 9
RLE_PROBABILITY = 0.12
ASPECT_RATIOS = (1.0, 0.75, 0.8, 2.0 / 3.0)
# ---------------------------------------------------------------------------------------------
# Appearance.


def _colour(rng: np.random.Generator) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.25, 1.0), rng.uniform(0.25, 1.0))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _texture(kind: str, h: int, w: int, c1: np.ndarray, c2: np.ndarray, period: float,
             rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) float32 texture patch."""
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "stripes":
        sel = (u / period) % 2.0 < 1.0
    elif kind == "checker":
        v = -xx * math.sin(angle) + yy * math.cos(angle)
        sel = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif kind == "dots":
        v = -xx * math.sin(angle) + yy * math.cos(angle)
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        sel = du * du + dv * dv > 0.09
    elif kind == "gradient":
        t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
        return c1 * (1.0 - t[..., None]) + c2 * t[..., None]
    else:
        raise ValueError(kind)
    return np.where(sel[..., None], c1, c2)


def _distinct_colours(rng: np.random.Generator, avoid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Two colours differing from each other and, when given, from the colour ``avoid``."""
    for _ in range(8):
        c1 = _colour(rng)
        if avoid is None or np.linalg.norm(c1 - avoid) > 70:
            break
    for _ in range(8):
        c2 = _colour(rng)
        if np.linalg.norm(c1 - c2) > 60:
            break
    return c1, c2


def _background(rng: np.random.Generator, h: int, w: int, clutter: str = "full") -> np.ndarray:
    """A smooth colour field, sometimes with a faint texture, plus unlabelled clutter; one flat
    colour for ``clutter="none"``, no blobs or lines for ``"light"``."""
    if clutter == "none":
        return np.broadcast_to(_colour(rng), (h, w, 3)).copy()
    gh, gw = rng.integers(2, 6, size=2)
    base = _colour(rng)
    grid = base * (1 - (a := rng.uniform(0.3, 0.8))) + a * rng.uniform(0, 255, (gh, gw, 3))
    img = Image.fromarray(grid.astype(np.uint8)).resize((w, h), Image.BICUBIC)
    canvas = np.asarray(img, dtype=np.float32).copy()
    if rng.random() < 0.5:
        kind = ("stripes", "checker", "dots")[rng.integers(3)]
        tex = _texture(kind, h, w, _colour(rng), _colour(rng), rng.uniform(4, 24), rng)
        alpha = rng.uniform(0.08, 0.3)
        canvas = canvas * (1 - alpha) + tex * alpha
    if clutter == "light":
        return canvas
    for _ in range(rng.integers(0, 4)):  # irregular blobs: thresholded smooth noise
        bh, bw = (int(v) for v in rng.integers(8, 60, size=2))
        noise = rng.uniform(0, 255, (4, 4)).astype(np.uint8)
        blob = np.asarray(Image.fromarray(noise).resize((bw, bh), Image.BICUBIC)) > 150
        y0, x0 = int(rng.integers(0, max(h - bh, 1))), int(rng.integers(0, max(w - bw, 1)))
        region = canvas[y0:y0 + bh, x0:x0 + bw]
        region[blob[: region.shape[0], : region.shape[1]]] = _colour(rng)
    img = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 8)):  # straight lines and scribbles
        n = 2 if rng.random() < 0.6 else int(rng.integers(3, 7))
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h)))]
        for _ in range(n - 1):
            step = rng.uniform(10, max(h, w) * 0.6)
            ang = rng.uniform(0, 2 * math.pi)
            pts.append((pts[-1][0] + step * math.cos(ang), pts[-1][1] + step * math.sin(ang)))
        draw.line(pts, fill=tuple(int(c) for c in _colour(rng)), width=int(rng.integers(1, 5)))
    return np.asarray(img, dtype=np.float32).copy()


# ---------------------------------------------------------------------------------------------
# One image.


def _sample_area(rng: np.random.Generator, scale2: float,
                 object_size: Optional[tuple[float, float]] = None) -> float:
    if object_size is not None:  # sqrt(area) log-uniform, in pixels at the stored size
        return float(math.exp(rng.uniform(2 * math.log(object_size[0]), 2 * math.log(object_size[1]))))
    u = rng.random()
    for p, lo, hi in AREA_MIXTURE:
        if u < p:
            break
        u -= p
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) * scale2


class _Canvas:
    """The image being drawn, its instance-id map, and the objects placed so far."""

    def __init__(self, image: np.ndarray):
        self.image = image
        h, w = image.shape[:2]
        self.h, self.w = h, w
        self.ids = np.zeros((h, w), dtype=np.int16)  # 0: background
        self.objects: list[dict[str, Any]] = []

    def try_place(self, polys: list[np.ndarray], full_area: float, guard: bool,
                  overlap: bool = True) -> tuple[np.ndarray, list[list[float]]] | None:
        """Rasterize, check visibility constraints, and return the mask; None to reject."""
        clipped = [clip_polygon(p, self.w, self.h) for p in polys]
        clipped = [np.round(c, 2) for c in clipped if len(c) >= 3]
        if not clipped:
            return None
        flat = [c.ravel().tolist() for c in clipped]
        mask = decode_polygons(flat, self.h, self.w)
        if not guard:
            return mask, flat
        area = int(mask.sum())
        if area < MIN_VISIBLE_FRACTION * full_area or area < MIN_VISIBLE_PIXELS:
            return None
        y0, y1, x0, x1 = mask_bbox(mask)
        if min(y1 - y0, x1 - x0) < MIN_SIDE:  # keep objects thick enough to stay learnable
            return None
        if not overlap and self.ids[mask].any():
            return None
        if self.objects:  # the new object must not hide too much of any object already placed
            window = mask[y0:y1, x0:x1]
            covered = np.bincount(self.ids[y0:y1, x0:x1][window], minlength=len(self.objects) + 1)
            for k in np.flatnonzero(covered[1:]):
                obj = self.objects[k]
                if obj["crowd"]:
                    continue
                left = obj["visible"] - int(covered[k + 1])
                if left < max(MIN_VISIBLE_FRACTION * obj["full_area"], MIN_VISIBLE_PIXELS):
                    return None
        return mask, flat

    def paint(self, mask: np.ndarray, texture: dict, record: dict) -> None:
        y0, y1, x0, x1 = mask_bbox(mask)
        window, ids = mask[y0:y1, x0:x1], self.ids[y0:y1, x0:x1]
        covered = np.bincount(ids[window], minlength=len(self.objects) + 1)
        for k in np.flatnonzero(covered[1:]):
            self.objects[k]["visible"] -= int(covered[k + 1])
        tex = _texture(texture["kind"], y1 - y0, x1 - x0, texture["c1"], texture["c2"],
                       texture["period"], texture["rng"])
        self.image[y0:y1, x0:x1][window] = tex[window]
        self.objects.append(record)
        record["visible"] = int(window.sum())
        ids[window] = len(self.objects)


def _shape_polygons(name: str, area: float, center: tuple[float, float], angle: float,
                    rng: np.random.Generator) -> tuple[list[np.ndarray], float, float]:
    """Image-space polygon(s) of a shape with the given target area; also area and radius."""
    radius_guess = math.sqrt(area / 2.0)
    n = int(np.clip(2 * math.pi * radius_guess / 3.0, 16, 64))
    outer, hole = unit_shape(name, n, rng)
    stretch = rng.uniform(0.88, 1.12, size=2)
    unit_area = (shoelace(outer) - (shoelace(hole) if hole is not None else 0.0)) * stretch[0] * stretch[1]
    r = math.sqrt(area / abs(unit_area))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def place(p: np.ndarray) -> np.ndarray:
        return (p * stretch * r) @ rot.T + np.asarray(center)

    if hole is None:
        return [place(outer)], area, r
    # A ring is one "bridged" polygon: around the outside, across, backwards around the hole.
    bridged = np.concatenate([outer, outer[:1], hole[:1], hole[::-1]], axis=0)
    return [place(bridged)], area, r


def _place_crowd(canvas: _Canvas, rng: np.random.Generator, scale2: float) -> None:
    """A cluster of tiny same-class objects, annotated as a single iscrowd=1 region."""
    cat = int(rng.integers(len(CATEGORIES)))
    name = CATEGORIES[cat][1]
    spread = rng.uniform(18, 40) * math.sqrt(scale2)
    cx, cy = rng.uniform(spread, canvas.w - spread), rng.uniform(spread, canvas.h - spread)
    union = np.zeros((canvas.h, canvas.w), dtype=bool)
    c1, c2 = _distinct_colours(rng, None)
    for _ in range(rng.integers(6, 15)):
        center = (cx + rng.uniform(-spread, spread), cy + rng.uniform(-spread, spread))
        polys, _, _ = _shape_polygons(name, rng.uniform(15, 45) * scale2, center,
                                      rng.uniform(0, 2 * math.pi), rng)
        placed = canvas.try_place(polys, 0.0, guard=False)
        if placed is not None:
            union |= placed[0]
    if union.sum() < MIN_VISIBLE_PIXELS:
        return
    texture = {"kind": "solid", "c1": c1, "c2": c2, "period": 4.0, "rng": rng}
    canvas.paint(union, texture, {"cat": cat, "crowd": True, "full_area": float(union.sum()),
                                  "polygons": None, "pair": False})


def _render(seed: int, split: str, index: int,
            difficulty: Difficulty = Difficulty()) -> tuple[bytes, dict, list[dict], dict]:
    """Draw one image; return its JPEG bytes, COCO image record, annotations and counters."""
    size = difficulty.size
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], index]))
    ratio = ASPECT_RATIOS[rng.integers(len(ASPECT_RATIOS))]
    short = int(round(size * ratio))
    h, w = (short, size) if rng.random() < 0.5 else (size, short)
    scale2 = (size / REFERENCE_SIZE) ** 2
    canvas = _Canvas(_background(rng, h, w, difficulty.clutter))

    if rng.random() < difficulty.crowd_probability:
        _place_crowd(canvas, rng, scale2)

    # Object plan: class and target area; a same-class pair sometimes; bigger ones mostly first.
    lo, hi = difficulty.objects
    plan = [{"cat": int(rng.integers(len(CATEGORIES))),
             "area": _sample_area(rng, scale2, difficulty.object_size),
             "pair": False} for _ in range(int(rng.integers(lo, hi + 1)))]
    if rng.random() < difficulty.pair_probability:
        first = plan[int(rng.integers(len(plan)))]
        plan.append({"cat": first["cat"], "area": first["area"] * rng.uniform(0.7, 1.3),
                     "pair": True, "partner": first})
    order = np.argsort([-p["area"] * rng.lognormal(0.0, 0.8) for p in plan], kind="stable")
    plan = [plan[i] for i in order]
    plan.sort(key=lambda p: p["pair"])  # a pair's second member after its partner
    max_area = 0.4 * h * w

    for item in plan:
        name = CATEGORIES[item["cat"]][1]
        area = min(item["area"], max_area)
        for _ in range(8):
            partner = item.get("partner", {}).get("placed")
            if partner is not None:  # touch or nearly touch the partner
                ang = rng.uniform(0, 2 * math.pi)
                dist = (partner["radius"] + math.sqrt(area / math.pi)) * rng.uniform(0.85, 1.05)
                center = (partner["center"][0] + dist * math.cos(ang),
                          partner["center"][1] + dist * math.sin(ang))
            elif item["pair"]:
                break  # partner was not placed
            else:
                center = (rng.uniform(0, w), rng.uniform(0, h))
            polys, full_area, radius = _shape_polygons(name, area, center,
                                                       rng.uniform(0, 2 * math.pi), rng)
            placed = canvas.try_place(polys, full_area, guard=True, overlap=difficulty.occlusion)
            if placed is None:
                continue
            mask, flat = placed
            kind = difficulty.textures[rng.integers(len(difficulty.textures))]
            y0, y1, x0, x1 = mask_bbox(mask)
            under = canvas.image[y0:y1, x0:x1][mask[y0:y1, x0:x1]].mean(axis=0)
            c1, c2 = _distinct_colours(rng, under)
            period = max(2.0, radius * rng.uniform(0.2, 0.5))
            record = {"cat": item["cat"], "crowd": False, "full_area": full_area,
                      "in_image": int(mask.sum()), "polygons": flat, "pair": item["pair"]}
            canvas.paint(mask, {"kind": kind, "c1": c1, "c2": c2, "period": period, "rng": rng},
                         record)
            item["placed"] = {"center": center, "radius": math.sqrt(area / math.pi)}
            break

    image = rng.standard_normal(canvas.image.shape, dtype=np.float32)
    image *= rng.uniform(2.0, 7.0)
    image += canvas.image
    np.clip(image, 0, 255, out=image)
    pil = Image.fromarray(image.astype(np.uint8))
    if rng.random() < 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.8)))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=JPEG_QUALITY)

    annotations, counters = _annotate(canvas, rng)
    record = {"id": index + 1, "file_name": f"{index + 1:06d}.jpg", "height": h, "width": w}
    return buf.getvalue(), record, annotations, counters


def _annotate(canvas: _Canvas, rng: np.random.Generator) -> tuple[list[dict], dict]:
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
