"""TIDE error breakdown (Bolya et al., ECCV 2020) for mask predictions, through tidecv.

TIDE matches predictions to ground truth at IoU 0.5 (background below 0.1) and reports,
per error type, how much AP50 would rise if that error were fixed (dAP):
Cls, Loc, Both, Dupe, Bkg, Miss, and the special FalsePos / FalseNeg.

TIDE's own AP50 differs slightly from pycocotools' AP50 (it averages over classes present
in predictions *or* GT and caps detections per image across classes), so it is returned as
``tide_ap50`` and must never be mixed with the pycocotools numbers.

Work-arounds for tidecv 1.0.1, all in this module (site-packages is left untouched):

- ``TIDE()`` builds a ``Plotter`` that calls ``seaborn.set()`` and changes
  ``figure.dpi``, i.e. the *global* matplotlib style: we run inside ``rc_context``.
- The plotter writes scratch PNGs into one shared user directory (``~/.local/share/tidecv
  /_tmp``, emptied on every plot), so parallel runs would clobber each other: each call
  gets its own temporary ``TIDE_PATH``.
- ``plot()`` divides by the sum of the main dAPs, so a perfect prediction set
  (all zero) raises ``ZeroDivisionError``: the plot is skipped (``tide_plot`` is None).
- ``plot()`` writes the PNG in place; we render into a temporary folder and move it.
- ``datasets.COCO`` needs ``bbox``, ``iscrowd`` and ``file_name`` on every GT entry even
  in mask mode: when missing they are filled in (box from the mask) in a temporary copy.
- seaborn 0.13 warns about ``palette`` without ``hue`` on every plot, and OpenCV about
  the float image tidecv passes to ``cv2.imwrite``: both silenced.

tidecv 1.0.1 itself runs on numpy 2 (no removed aliases on the mask-mode code path).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

from rtinst.engine.evaluate import load_gt, load_results, validate_results
from rtinst.errors import UserError
from rtinst.io import atomic_path, atomic_write_json

# tidecv short names -> our keys (order as TIDE prints them).
MAIN_ERRORS = {"Cls": "tide_cls", "Loc": "tide_loc", "Both": "tide_both",
               "Dupe": "tide_dupe", "Bkg": "tide_bkg", "Miss": "tide_miss"}
SPECIAL_ERRORS = {"FalsePos": "tide_fp", "FalseNeg": "tide_fn"}
TIDE_KEYS = ("tide_ap50", *MAIN_ERRORS.values(), *SPECIAL_ERRORS.values())


def use_agg_backend() -> None:
    """Select matplotlib's Agg backend unless the user (or Jupyter) already chose one.

    tidecv imports ``matplotlib.pyplot`` at import time and only ever saves figures, so a
    headless backend is right for scripts and sweeps; a notebook keeps its own backend.
    """
    import matplotlib

    if "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tide_ready_gt(gt: dict, scratch: Path, gt_path: str | os.PathLike | None) -> str:
    """A GT path tidecv's COCO loader can read: the original, or a filled-in copy."""
    from pycocotools import mask as mask_utils

    imgs = {im["id"]: im for im in gt["images"]}
    complete = all("file_name" in im for im in gt["images"]) and all(
        "bbox" in a and "iscrowd" in a for a in gt["annotations"]
    )
    if complete and gt_path is not None:
        return str(gt_path)
    for im in gt["images"]:
        im.setdefault("file_name", f"image_{im['id']}")
    for a in gt["annotations"]:
        a.setdefault("iscrowd", 0)
        if "bbox" not in a:
            im = imgs[a["image_id"]]
            seg = a["segmentation"]
            h, w = im["height"], im["width"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            a["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
    path = scratch / "gt_for_tide.json"
    atomic_write_json(path, gt, indent=None)
    return str(path)


def run_tide(
    gt_json: str | os.PathLike,
    results_json: str | os.PathLike | Sequence[dict],
    out_dir: str | os.PathLike | None = None,
    name: str = "model",
    plot_quality: float = 0.5,
) -> dict:
    """TIDE (mask mode) dAPs of ``results_json`` against ``gt_json``.

    Returns ``tide_ap50`` (TIDE's own AP at IoU 0.5, in percent), ``tide_cls, tide_loc,
    tide_both, tide_dupe, tide_bkg, tide_miss`` (main errors) and ``tide_fp, tide_fn``
    (special errors), all dAP in AP points, plus ``tide_plot``: the summary PNG written to
    ``out_dir/<name>_mask_summary.png`` when ``out_dir`` is given (None otherwise, or when
    every main error is zero and tidecv cannot draw its pie chart). ``plot_quality`` scales
    tidecv's plot resolution (1.0 = its default 300 dpi, a 2734 x 4299 px chart; the default
    0.5 is 150 dpi) and the PNG is stored with a palette of PLOT_COLORS colours: every run
    leaves one beside its record in git, at ~60 KB instead of ~450 KB.

    Inputs are validated exactly as in :func:`rtinst.engine.evaluate.evaluate_segm`.
    """
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        raise UserError(f"TIDE run name {name!r} must be a non-empty file-name-safe string")
    gt, _ = load_gt(gt_json)
    dets, label = load_results(results_json)
    validate_results(dets, gt, label, "segm")

    use_agg_backend()
    import matplotlib
    from tidecv import TIDE, datasets

    with tempfile.TemporaryDirectory(prefix="rtinst_tide_") as tmp:
        scratch = Path(tmp)
        gt_path = _tide_ready_gt(gt, scratch, gt_json if isinstance(gt_json, (str, os.PathLike)) else None)
        if isinstance(results_json, (str, os.PathLike)):
            res_path = str(results_json)
        else:
            res_path = str(scratch / "results_for_tide.json")
            atomic_write_json(res_path, dets, indent=None)

        with matplotlib.rc_context(), _env(TIDE_PATH=str(scratch / "tidecv")), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            tide = TIDE(mode=TIDE.MASK)
            tide.plotter.quality = plot_quality
            run = tide.evaluate(datasets.COCO(gt_path), datasets.COCOResult(res_path, name=name),
                                mode=TIDE.MASK, name=name)
            errors = tide.get_all_errors()
            main, special = errors["main"][name], errors["special"][name]
            out = {"tide_ap50": float(run.ap)}
            out.update({key: float(main[short]) for short, key in MAIN_ERRORS.items()})
            out.update({key: float(special[short]) for short, key in SPECIAL_ERRORS.items()})
            out["tide_plot"] = None
            if out_dir is not None and sum(main.values()) > 0:
                out["tide_plot"] = str(_plot(tide, scratch / "plot", Path(out_dir), name))
    return out


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """tidecv hands ``cv2.imwrite`` a float image; OpenCV converts it to 8 bit (the right
    result) but logs a warning to stderr each time."""
    try:
        from cv2.utils import logging as cv_logging
    except ImportError:  # pragma: no cover - cv2 without the logging module
        yield
        return
    level = cv_logging.getLogLevel()
    cv_logging.setLogLevel(cv_logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv_logging.setLogLevel(level)


def _plot(tide, render_dir: Path, out_dir: Path, name: str) -> Path:
    with _quiet_opencv():
        tide.plot(str(render_dir))
    png = render_dir / f"{name}_{tide.mode}_summary.png"
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"tidecv did not write its summary plot {png.name}")
    dest = out_dir / png.name
    with atomic_path(dest) as tmp:
        compact_png(png, tmp)
    return dest


PLOT_COLORS = 128  # flat pie / bar colours plus anti-aliased text: no visible banding


def compact_png(src: str | os.PathLike, dest: str | os.PathLike, scale: float = 1.0) -> None:
    """Write ``src`` to ``dest`` as a palette PNG (optionally rescaled by ``scale``)."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        if scale != 1.0:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.LANCZOS)
        im.quantize(colors=PLOT_COLORS).save(dest, format="PNG", optimize=True)


def format_tide(metrics: dict) -> str:
    """A readable block of TIDE numbers (dAP at IoU 0.5, in AP points)."""
    lines = [f"TIDE (mask, IoU 0.5): TIDE's own AP50 = {metrics['tide_ap50']:.2f} "
             "(not comparable with pycocotools' AP50)"]
    lines.append("  main errors dAP:    " + "  ".join(
        f"{short} {metrics[key]:.2f}" for short, key in MAIN_ERRORS.items()))
    lines.append("  special errors dAP: " + "  ".join(
        f"{short} {metrics[key]:.2f}" for short, key in SPECIAL_ERRORS.items()))
    if metrics.get("tide_plot"):
        lines.append(f"  plot: {metrics['tide_plot']}")
    return "\n".join(lines)
