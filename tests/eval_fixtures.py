"""Small COCO-format ground truth and predictions for the evaluation tests.

Independent of ``rtinst.data``: random ellipses and rectangles stored the three ways COCO
stores masks (polygons, compressed RLE, and an uncompressed-RLE ``iscrowd`` region), with
non-contiguous image, annotation and category ids, so id mix-ups show up in the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

CATEGORY_IDS = (1, 3, 7)
SIZES = ((64, 80), (128, 160))  # (height, width); the larger one holds a "large" object


def _ellipse_polygon(cx, cy, rx, ry, n=20):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).round(2).ravel().tolist()


def _rect_polygon(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def decode(seg, h: int, w: int) -> np.ndarray:
    """Any COCO segmentation (polygons, compressed or uncompressed RLE) -> (h, w) bool."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def encode(mask: np.ndarray) -> dict:
    """(h, w) bool -> compressed RLE with str counts (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """(h, w) bool -> COCO uncompressed RLE (column-major runs, starting with zeros)."""
    flat = mask.ravel(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).astype(int).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def _random_shape(rng, h, w, large=False):
    """A polygon (list of lists) for a random ellipse or rectangle inside an h x w image."""
    if large:
        return [_rect_polygon(5.0, 5.0, w - 10.0, h - 12.0)]
    bw, bh = rng.uniform(0.12, 0.5) * w, rng.uniform(0.12, 0.5) * h
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    if rng.random() < 0.5:
        return [_ellipse_polygon(x0 + bw / 2, y0 + bh / 2, bw / 2, bh / 2)]
    return [_rect_polygon(round(x0, 1), round(y0, 1), round(x0 + bw, 1), round(y0 + bh, 1))]


def make_gt(
    num_images: int = 4,
    sizes=SIZES,
    category_ids=CATEGORY_IDS,
    objects=(2, 5),
    seed: int = 0,
    crowd: bool = True,
) -> dict:
    """A COCO instances dict. Image ids start at 11 (step 2), annotation ids at 1001.

    Annotations alternate between polygon and compressed-RLE segmentation. Image 0 gets an
    uncompressed-RLE ``iscrowd`` region when ``crowd``; images of the second size get a
    large (> 96^2 px) object so every COCO area range is populated.
    """
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        h, w = sizes[i % len(sizes)]
        img_id = 11 + 2 * i
        images.append({"id": img_id, "file_name": f"img_{img_id}.png", "height": h, "width": w})
        n = int(rng.integers(objects[0], objects[1] + 1))
        shapes = [(_random_shape(rng, h, w), 0) for _ in range(n)]
        if h * w > 96 * 96 * 1.5:
            shapes.append((_random_shape(rng, h, w, large=True), 0))
        if crowd and i == 0:
            shapes.append((_random_shape(rng, h, w), 1))
        for poly, iscrowd in shapes:
            mask = decode(poly, h, w)
            if not mask.any():
                continue
            if iscrowd:
                seg = uncompressed_rle(mask)
            elif len(anns) % 2:
                seg = encode(mask)
            else:
                seg = poly
            rle = encode(mask)
            anns.append({
                "id": 1001 + len(anns),
                "image_id": img_id,
                "category_id": int(rng.choice(category_ids)),
                "segmentation": seg,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": iscrowd,
            })
    cats = [{"id": c, "name": f"class_{c}", "supercategory": "shape"} for c in category_ids]
    return {"info": {"description": "rtinst eval fixture"}, "images": images, "annotations": anns,
            "categories": cats}


def gt_masks(gt: dict):
    """Yield (annotation, image, bool mask) for every GT annotation."""
    imgs = {im["id"]: im for im in gt["images"]}
    for ann in gt["annotations"]:
        im = imgs[ann["image_id"]]
        yield ann, im, decode(ann["segmentation"], im["height"], im["width"])


def gt_as_predictions(gt: dict) -> list[dict]:
    """Every non-crowd GT mask as a prediction with score 1 (compressed RLE, original size)."""
    return [
        {"image_id": ann["image_id"], "category_id": ann["category_id"], "segmentation": encode(m), "score": 1.0}
        for ann, _, m in gt_masks(gt) if not ann["iscrowd"]
    ]


def _shift(mask, dy, dx):
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    yd, xd = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[ys, xs] = mask[yd, xd]
    return out


def _morph(mask, steps):
    """Erode (steps < 0) or dilate (steps > 0) with a 4-neighbourhood."""
    for _ in range(abs(steps)):
        nbrs = [_shift(mask, 1, 0), _shift(mask, -1, 0), _shift(mask, 0, 1), _shift(mask, 0, -1)]
        mask = np.logical_and.reduce([mask] + nbrs) if steps < 0 else np.logical_or.reduce([mask] + nbrs)
    return mask


def _random_fp(rng, h, w):
    return decode(_random_shape(rng, h, w), h, w)


def perturbed_predictions(
    gt: dict,
    seed: int = 1,
    miss: float = 0.15,
    wrong_class: float = 0.1,
    duplicate: float = 0.15,
    fp_per_image: int = 3,
    dets_per_image: int | None = None,
) -> list[dict]:
    """Imperfect predictions: shifted/eroded/dilated GT masks with random scores, some GT
    missed, some with the wrong class, some duplicated, plus random false positives (one
    inside the crowd region, which COCO must ignore). With ``dets_per_image`` every image
    is padded with false positives to exactly that many detections."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    per_image: dict[int, list[dict]] = {im["id"]: [] for im in gt["images"]}
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}

    def add(img_id, mask, cat):
        if mask.any():
            per_image[img_id].append({"image_id": img_id, "category_id": int(cat), "segmentation": mask,
                                      "score": round(float(rng.uniform(0.01, 1.0)), 6)})

    for ann, im, m in gt_masks(gt):
        if ann["iscrowd"]:
            add(im["id"], _morph(m, -1), ann["category_id"])  # matches the crowd region: ignored
            continue
        if rng.random() < miss:
            continue
        pm = _morph(_shift(m, int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), int(rng.integers(-2, 3)))
        cat = int(rng.choice(cats)) if rng.random() < wrong_class else ann["category_id"]
        add(im["id"], pm, cat)
        if rng.random() < duplicate:
            add(im["id"], _shift(pm, 1, 1), cat)
    for img_id, (h, w) in sizes.items():
        n_fp = fp_per_image if dets_per_image is None else max(dets_per_image - len(per_image[img_id]), 0)
        for _ in range(n_fp):
            add(img_id, _random_fp(rng, h, w), rng.choice(cats))
        if dets_per_image is not None:
            per_image[img_id] = per_image[img_id][:dets_per_image]

    results = []
    for dets in per_image.values():
        for d in dets:
            results.append(dict(d, segmentation=encode(d["segmentation"])))
    return results


def write_json(path, obj) -> Path:
    path = Path(path)
    path.write_text(json.dumps(obj))
    return path
