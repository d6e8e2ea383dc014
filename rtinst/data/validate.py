"""Validation of a COCO instance-segmentation annotation file (and its images).

Used by :class:`rtinst.data.coco.CocoInstanceDataset` and by ``rtinst data check``.

Two kinds of problems:

* **errors** stop the dataset from loading: malformed JSON, missing top-level keys, a missing
  or unreadable image file, an annotation with an unknown ``image_id``/``category_id``, a
  segmentation that cannot be decoded. Each is one line naming the file and the id.
* **degenerate annotations**, which COCO itself tolerates (empty polygon list, polygons with
  fewer than 3 points, zero-area masks, zero-size boxes), are skipped and reported together
  in one warning line.

Images without usable instances are counted: kept for evaluation, skipped for training.
"""

from __future__ import annotations

import json
import numbers
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from rtinst.data.stats import area_bucket
from rtinst.errors import UserError

REQUIRED_KEYS = ("images", "annotations", "categories")
MAX_LISTED_IDS = 10


def rle_string_to_counts(s: str | bytes) -> list[int]:
    """Decode the counts of a compressed COCO RLE string.

    COCO's format: each count is written in 5-bit groups, least significant first, as the
    characters chr(48 + group), with bit 0x20 set on all groups but the last and bit 0x10 of
    the last group acting as the sign; counts from the third on are stored as differences to
    the count two places before. Raises ValueError on a malformed string.
    """
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError("truncated RLE string")
            c = data[pos] - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {chr(data[pos])!r} in RLE string")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def segmentation_area(segm: Any, h: int, w: int) -> tuple[int | None, str | None]:
    """(mask area, None), or (None, "degenerate: <reason>") or (None, "error: <reason>")."""
    if isinstance(segm, list):
        if not segm:
            return None, "degenerate: empty polygon list"
        if not all(isinstance(p, list) and all(_is_number(v) for v in p) for p in segm):
            return None, "error: segmentation is neither polygons [[x1, y1, ...], ...] nor RLE"
        if any(len(p) % 2 for p in segm):
            return None, "error: polygon with an odd number of coordinates"
        valid = [p for p in segm if len(p) >= 6]
        if not valid:
            return None, "degenerate: polygon with < 3 points"
        area = int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(valid, h, w))))
        return (area, None) if area > 0 else (None, "degenerate: zero-area mask")
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if not (isinstance(size, list) and len(size) == 2 and list(size) == [h, w]):
            return None, f"error: RLE size {size} does not match the image's [height, width] [{h}, {w}]"
        counts = segm["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                return None, "error: RLE counts must be non-negative integers"
        elif isinstance(counts, (str, bytes)):
            try:
                counts = rle_string_to_counts(counts)
            except ValueError as e:
                return None, f"error: cannot decode compressed RLE ({e})"
            if any(c < 0 for c in counts):
                return None, "error: cannot decode compressed RLE (negative run length)"
        else:
            return None, "error: RLE counts must be a list of integers or a string"
        if sum(counts) != h * w:
            return None, f"error: RLE counts sum to {sum(counts)}, expected height*width = {h * w}"
        area = sum(counts[1::2])
        return (area, None) if area > 0 else (None, "degenerate: zero-area mask")
    return None, "error: segmentation is neither polygons [[x1, y1, ...], ...] nor RLE {size, counts}"


@dataclass
class ValidationReport:
    """What :func:`validate_coco` found. ``data`` is the parsed JSON (None if unreadable)."""

    ann_file: Path
    image_dir: Path | None
    errors: list[str] = field(default_factory=list)
    degenerate: dict[Any, str] = field(default_factory=dict)  # annotation id -> reason
    missing_area: list[Any] = field(default_factory=list)
    num_images: int = 0
    num_instances: int = 0
    num_crowd: int = 0
    images_without_instances: list[Any] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    area_buckets: dict[str, int] = field(default_factory=dict)
    data: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise a one-line :class:`UserError` for the first error, if any."""
        if self.errors:
            more = len(self.errors) - 1
            suffix = f" (and {more} more problem{'s' * (more > 1)}; run `rtinst data check`)" if more else ""
            raise UserError(self.errors[0] + suffix)

    def warning_lines(self) -> list[str]:
        """At most one line about skipped degenerate annotations, one about missing areas."""
        lines = []
        if self.degenerate:
            ids = list(self.degenerate)
            shown = ", ".join(str(i) for i in ids[:MAX_LISTED_IDS]) + (", ..." if len(ids) > MAX_LISTED_IDS else "")
            reasons = Counter(self.degenerate.values())
            why = next(iter(reasons)) if len(reasons) == 1 else ", ".join(f"{n} {r}" for r, n in reasons.items())
            noun = "annotation" if len(ids) == 1 else "annotations"
            lines.append(f"{self.ann_file}: skipped {len(ids)} degenerate {noun} (ids {shown}): {why}")
        if self.missing_area:
            ids = ", ".join(str(i) for i in self.missing_area[:MAX_LISTED_IDS])
            lines.append(f"{self.ann_file}: {len(self.missing_area)} annotations have no 'area' "
                         f"(ids {ids}{', ...' if len(self.missing_area) > MAX_LISTED_IDS else ''}); "
                         "COCO evaluation needs it")
        return lines

    def summary(self) -> str:
        n = max(self.num_instances, 1)
        lines = [
            f"{self.ann_file}: {self.num_images} images, {self.num_instances} instances, "
            f"{self.num_crowd} crowd regions, {len(self.class_counts)} categories",
            f"images without instances: {len(self.images_without_instances)} "
            "(kept for evaluation, skipped for training)",
            "COCO areas: " + ", ".join(
                f"{b} {self.area_buckets.get(b, 0)} ({100.0 * self.area_buckets.get(b, 0) / n:.1f}%)"
                for b in ("small", "medium", "large")),
            "instances per class:",
        ]
        width = max((len(k) for k in self.class_counts), default=0)
        lines += [f"  {name:<{width}}  {count}" for name, count in self.class_counts.items()]
        return "\n".join(lines)


def _load_json(report: ValidationReport) -> dict | None:
    path = report.ann_file
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        report.errors.append(f"{path}: annotation file not found")
    except IsADirectoryError:
        report.errors.append(f"{path}: is a directory, expected a COCO JSON file")
    except json.JSONDecodeError as e:
        report.errors.append(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}")
    except (OSError, UnicodeDecodeError) as e:
        report.errors.append(f"{path}: cannot read: {e}")
    return None


def _check_top_level(report: ValidationReport, data: Any) -> bool:
    f = report.ann_file
    if not isinstance(data, dict):
        report.errors.append(f"{f}: expected a JSON object with keys {', '.join(REQUIRED_KEYS)}")
        return False
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        report.errors.append(f"{f}: missing top-level key{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}")
        return False
    wrong = [k for k in REQUIRED_KEYS if not isinstance(data[k], list)]
    if wrong:
        report.errors.append(f"{f}: top-level {', '.join(map(repr, wrong))} must be a list")
        return False
    for key, required in (("images", ("id", "file_name", "height", "width")),
                          ("categories", ("id", "name")),
                          ("annotations", ("id", "image_id", "category_id"))):
        for i, item in enumerate(data[key]):
            if not isinstance(item, dict):
                report.errors.append(f"{f}: {key}[{i}] is not an object")
                return False
            lacking = [k for k in required if k not in item]
            if lacking:
                what = f"{key[:-1]} id {item['id']}" if "id" in item else f"{key}[{i}]"
                report.errors.append(f"{f}: {what} has no {', '.join(map(repr, lacking))}")
                return False
    return True


def _check_image_file(report: ValidationReport, img: dict) -> None:
    from PIL import Image, UnidentifiedImageError

    path = report.image_dir / img["file_name"]
    prefix = f"{report.ann_file}: image id {img['id']}"
    if not path.is_file():
        report.errors.append(f"{prefix}: file not found: {path}")
        return
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as e:
        report.errors.append(f"{prefix}: cannot read image {path}: {e}")
        return
    if (h, w) != (img["height"], img["width"]):
        report.errors.append(f"{prefix}: {path} is {w}x{h} (WxH) but the annotation file says "
                             f"{img['width']}x{img['height']}")


def validate_coco(ann_file: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                  check_images: bool = True) -> ValidationReport:
    """Check a COCO instance annotation file; with ``check_images``, that its images exist
    with the declared size (only image headers are read). Never raises for bad data: the
    problems are in the report (``report.raise_for_errors()`` turns them into a UserError).
    """
    report = ValidationReport(Path(ann_file), Path(image_dir) if image_dir is not None else None)
    data = _load_json(report)
    if data is None or not _check_top_level(report, data):
        return report
    report.data = data
    f = report.ann_file

    cats: dict[Any, str] = {}
    for cat in data["categories"]:
        if cat["id"] in cats:
            report.errors.append(f"{f}: duplicate category id {cat['id']}")
        cats[cat["id"]] = str(cat["name"])
    images: dict[Any, dict] = {}
    for img in data["images"]:
        if img["id"] in images:
            report.errors.append(f"{f}: duplicate image id {img['id']}")
        if not all(isinstance(img[k], int) and img[k] > 0 for k in ("height", "width")):
            report.errors.append(f"{f}: image id {img['id']}: height and width must be positive integers")
            continue
        images[img["id"]] = img
        if check_images and report.image_dir is not None:
            _check_image_file(report, img)

    per_image = Counter()
    classes = Counter()
    buckets = Counter()
    seen: set = set()
    for ann in data["annotations"]:
        aid = ann["id"]
        prefix = f"{f}: annotation id {aid}"
        if aid in seen:
            report.errors.append(f"{f}: duplicate annotation id {aid}")
        seen.add(aid)
        img = images.get(ann["image_id"])
        if img is None:
            report.errors.append(f"{prefix}: unknown image_id {ann['image_id']}")
            continue
        if ann["category_id"] not in cats:
            report.errors.append(f"{prefix}: unknown category_id {ann['category_id']}")
            continue
        if "segmentation" not in ann:
            report.errors.append(f"{prefix}: has no 'segmentation'")
            continue
        area, problem = segmentation_area(ann["segmentation"], img["height"], img["width"])
        if problem is None:
            bbox = ann.get("bbox")
            if bbox is not None:
                if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                    problem = "error: bbox must be [x, y, width, height]"
                elif bbox[2] <= 0 or bbox[3] <= 0:
                    problem = "degenerate: zero-size bbox"
        if problem is not None:
            kind, _, reason = problem.partition(": ")
            if kind == "error":
                report.errors.append(f"{prefix}: {reason}")
            else:
                report.degenerate[aid] = reason
            continue
        if "area" not in ann:
            report.missing_area.append(aid)
        if ann.get("iscrowd", 0):
            report.num_crowd += 1
            continue
        report.num_instances += 1
        per_image[ann["image_id"]] += 1
        classes[ann["category_id"]] += 1
        buckets[area_bucket(ann.get("area", area))] += 1

    report.num_images = len(images)
    report.images_without_instances = [i for i in images if per_image[i] == 0]
    try:
        order = sorted(cats)
    except TypeError:  # mixed id types
        order = sorted(cats, key=str)
    report.class_counts = {cats[c]: classes[c] for c in order}
    report.area_buckets = {b: buckets[b] for b in ("small", "medium", "large")}
    return report
