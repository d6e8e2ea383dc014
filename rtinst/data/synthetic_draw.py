"""Drawing one image of the synthetic dataset: background, textured shapes, crowd clusters.

Everything here is pixels and the placement rules behind them: the ten shape classes, the
object sizes (COCO's area buckets), the visibility rules that keep every placed object
learnable, the textures, the cluttered background and the photo noise. It ends with the
image's JPEG bytes and a :class:`Canvas` (the instance-id map and the objects placed), from
which :mod:`rtinst.data.synthetic` writes the COCO annotations and the dataset folder; the
two are apart so that what an image looks like can be read without how it is stored.

Each image draws from its own generator, seeded by (seed, split, index).
"""

from __future__ import annotations

import colorsys
import io
import math
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rtinst.data.difficulty import REFERENCE_SIZE, Difficulty
from rtinst.data.segmentation import decode_polygons, mask_bbox
from rtinst.data.shapes import clip_polygon, shoelace, unit_shape

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

# REFERENCE_SIZE: areas below are in pixels at this long edge and scale with size**2.
# COCO area buckets: small < 32^2 <= medium < 96^2 <= large. Sampling mixture of target areas
# (probability, low, high); occlusion later moves some instances into smaller buckets.
AREA_MIXTURE = ((0.33, 140.0, 1024.0), (0.31, 1024.0, 9216.0), (0.36, 10500.0, 30000.0))
MIN_VISIBLE_PIXELS = 40
MIN_VISIBLE_FRACTION = 0.5
MIN_SIDE = 9
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


class Canvas:
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


def _place_crowd(canvas: Canvas, rng: np.random.Generator, scale2: float) -> None:
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


def draw_image(seed: int, split: str, index: int,
               difficulty: Difficulty = Difficulty()) -> tuple[bytes, Canvas, np.random.Generator]:
    """Draw one image; return its JPEG bytes, its canvas and its generator, which the
    annotation goes on drawing from (the segmentation formats are part of the same stream)."""
    size = difficulty.size
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], index]))
    ratio = ASPECT_RATIOS[rng.integers(len(ASPECT_RATIOS))]
    short = int(round(size * ratio))
    h, w = (short, size) if rng.random() < 0.5 else (size, short)
    scale2 = (size / REFERENCE_SIZE) ** 2
    canvas = Canvas(_background(rng, h, w, difficulty.clutter))

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
    return buf.getvalue(), canvas, rng
