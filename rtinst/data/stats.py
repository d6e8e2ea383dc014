"""Dataset statistics of a COCO instance annotation file, and a markdown rendering of them.

Works on any COCO-format file (the synthetic set or real COCO). Areas are the annotations'
``area`` field, which is what COCO evaluation uses for its small/medium/large buckets.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

SMALL_MAX = 32**2
LARGE_MIN = 96**2


def area_bucket(area: float) -> str:
    """COCO's bucket for an object area in pixels: small < 32^2 <= medium < 96^2 <= large."""
    if area < SMALL_MAX:
        return "small"
    return "medium" if area < LARGE_MIN else "large"


def _segmentation_format(segm: Any) -> str:
    if isinstance(segm, list):
        return "polygon"
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return "rle_uncompressed"
    return "rle_compressed"


def _touching_same_class_pairs(anns: list[dict], gap: float = 1.0) -> int:
    """Pairs of same-class instances in one image whose boxes touch or overlap (gap <= 1 px)."""
    pairs = 0
    for i, a in enumerate(anns):
        ax, ay, aw, ah = a["bbox"]
        for b in anns[i + 1:]:
            if b["category_id"] != a["category_id"]:
                continue
            bx, by, bw, bh = b["bbox"]
            dx = max(bx - (ax + aw), ax - (bx + bw), 0.0)
            dy = max(by - (ay + ah), ay - (by + bh), 0.0)
            pairs += int(dx <= gap and dy <= gap)
    return pairs


def _pct(count: int, total: int) -> float:
    return round(100.0 * count / total, 1) if total else 0.0


def dataset_statistics(ann_file: str | os.PathLike) -> dict:
    """Counts, instances per image, COCO area buckets, class balance and formats of a file.

    Crowd regions (``iscrowd=1``) are counted separately and excluded from everything else.
    """
    ann_file = Path(ann_file)
    with open(ann_file) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_image: dict[Any, list[dict]] = {img["id"]: [] for img in data["images"]}
    crowd = 0
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            crowd += 1
        elif ann["image_id"] in per_image:
            per_image[ann["image_id"]].append(ann)
    anns = [a for group in per_image.values() for a in group]
    counts = np.array([len(g) for g in per_image.values()] or [0])
    buckets = Counter(area_bucket(a["area"]) for a in anns)
    classes = Counter(a["category_id"] for a in anns)
    formats = Counter(_segmentation_format(a["segmentation"]) for a in data["annotations"])
    sizes = Counter(f"{img['width']}x{img['height']}" for img in data["images"])
    n = len(anns)
    sides = [min(a["bbox"][2], a["bbox"][3]) for a in anns if "bbox" in a]
    return {
        "file": ann_file.name,
        "images": len(data["images"]),
        "instances": n,
        "crowd_regions": crowd,
        "images_without_instances": int((counts == 0).sum()) if per_image else 0,
        "instances_per_image": {"mean": round(float(counts.mean()), 2), "min": int(counts.min()),
                                "max": int(counts.max())},
        "area_buckets": {b: {"count": buckets[b], "percent": _pct(buckets[b], n)}
                         for b in ("small", "medium", "large")},
        "classes": {names[cid]: {"count": classes[cid], "percent": _pct(classes[cid], n)}
                    for cid in sorted(names)},
        "segmentation_formats": dict(sorted(formats.items())),
        "image_sizes": dict(sorted(sizes.items())),
        "min_box_side": round(float(min(sides)), 1) if sides else None,
        "touching_same_class_pairs": sum(_touching_same_class_pairs(g) for g in per_image.values()),
    }


def _rows(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    ipi = stats["instances_per_image"]
    rows = [
        ("images", f"{stats['images']}"),
        ("instances (non-crowd)", f"{stats['instances']}"),
        ("crowd regions", f"{stats['crowd_regions']}"),
        ("images without instances", f"{stats['images_without_instances']}"),
        ("instances / image (mean, min-max)", f"{ipi['mean']:.2f} ({ipi['min']}-{ipi['max']})"),
    ]
    for bucket, limit in (("small", "< 32²"), ("medium", "32²-96²"), ("large", "≥ 96²")):
        b = stats["area_buckets"][bucket]
        rows.append((f"{bucket} ({limit} px)", f"{b['count']} ({b['percent']:.1f}%)"))
    occ = stats.get("occlusion")
    if occ:
        rows.append(("occluded instances", f"{occ['occluded_instances']} ({occ['occluded_percent']:.1f}%)"))
        rows.append(("mean hidden fraction of occluded", f"{occ['mean_hidden_fraction_of_occluded']:.2f}"))
        rows.append(("adjacent same-class pairs (placed)", f"{occ['adjacent_same_class_pairs']}"))
    rows.append(("same-class pairs with touching boxes", f"{stats['touching_same_class_pairs']}"))
    rows.append(("smallest box side (px)", f"{stats['min_box_side']}"))
    fmts = ", ".join(f"{k} {v}" for k, v in stats["segmentation_formats"].items())
    rows.append(("segmentation formats", fmts))
    rows.append(("image sizes (WxH)", ", ".join(f"{k} {v}" for k, v in stats["image_sizes"].items())))
    for name, c in stats["classes"].items():
        rows.append((f"class {name}", f"{c['count']} ({c['percent']:.1f}%)"))
    return rows


def format_statistics(stats: Mapping[str, Any]) -> str:
    """A markdown table of one split's statistics, or of several side by side.

    ``stats`` is either what :func:`dataset_statistics` returns or a mapping from split name
    to such dicts (what ``generate_synthetic`` returns).
    """
    splits = {"": stats} if "images" in stats else dict(stats)
    columns = {name: dict(_rows(s)) for name, s in splits.items()}
    keys = [k for k, _ in _rows(next(iter(splits.values())))]
    header = "| statistic | " + " | ".join(name or "value" for name in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(col.get(key, "") for col in columns.values()) + " |")
    return "\n".join(lines)
