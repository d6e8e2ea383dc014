"""A run's predictions for a few val images, saved small: what the query figures draw.

The FastInst query figures (:mod:`rtinst.viz.queries`) read, per image, the IA queries'
locations, the detections' scores, labels and query index, and the masks of the highlighted
detections. ``<run>/predictions_snapshot.json`` holds exactly these, so a run whose weights
are not committed still draws its panels; the image and its ground truth come from the val
split, which the synthetic generator re-creates deterministically.

Of a prediction's detections it keeps the ``TOP`` best and every one scoring at least
``MIN_SCORE`` (in their order in the prediction, so colours match a live figure): every
detection above the image's ``kept_from`` score, so a figure highlighting the detections
above a threshold at least that high draws what the model would. Their
masks are the mask probabilities upsampled to the padded input and binarized at 0.5, stored
as COCO RLE. Each image's result is a dict of named fields, each a tensor given by dtype,
shape and either its values or, for binary maps, RLE counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from rtinst import paths
from rtinst.config_schema import RunConfig
from rtinst.data.build import build_dataset
from rtinst.engine.compact import COMPACT, snapshot_path
from rtinst.engine.restore import LoadedRun, recreate_hint, run_config
from rtinst.errors import UserError
from rtinst.io import atomic_write_json, file_sha256
from rtinst.records import read_record
from rtinst.viz.draw import to_input_grid
from rtinst.viz.run import Sample, as_sample, check_indices, predict, val_inputs

FORMAT = "rtinst-predictions-snapshot/1"
TOP = 10  # query_masks_figure draws the best 6
MIN_SCORE = 0.3  # the default of query_locations_figure and `rtinst viz queries --min-score`
IMAGES = (0, 1)  # the val images `rtinst viz queries` and the notebook draw by default
DETECTION_FIELDS = ("scores", "labels", "query_index")
IMAGE_FIELDS = ("query_locations",)


@dataclass
class SnapshotRun:
    run_dir: Path
    cfg: RunConfig
    class_names: list[str]
    samples: list[Sample]


def _float_values(t: torch.Tensor) -> list[float]:
    # the shortest decimal that reads back as the same float32: exact, and half the bytes
    return [float(np.format_float_positional(v, unique=True)) for v in t.numpy().astype(np.float32).ravel()]


def _encode(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().cpu()
    values = _float_values(t) if t.is_floating_point() else t.ravel().tolist()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "values": values}


def _encode_binary(masks: torch.Tensor) -> dict[str, Any]:
    """(K, H, W) bool -> RLE counts per map (float 0/1 when read)."""
    rles = mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    return {"dtype": "float32", "shape": list(masks.shape),
            "rle": [r["counts"].decode("ascii") for r in rles]}


def _decode(field: dict[str, Any]) -> torch.Tensor:
    dtype, shape = getattr(torch, field["dtype"]), field["shape"]
    if "rle" not in field:
        return torch.tensor(field["values"], dtype=dtype).reshape(shape)
    h, w = shape[1:]
    maps = [mask_utils.decode({"size": [h, w], "counts": c.encode("ascii")}) for c in field["rle"]]
    return torch.from_numpy(np.stack(maps) if maps else np.zeros((0, h, w), np.uint8)).to(dtype)


def keep_threshold(scores: torch.Tensor, top: int = TOP, min_score: float = MIN_SCORE) -> float:
    """The score from which on detections are kept: the ``top``-th best or ``min_score``,
    whichever is lower (so ties at the ``top``-th score stay too)."""
    if len(scores) == 0:
        return min_score
    return min(float(scores.sort(descending=True).values[:top][-1]), min_score)


def kept_detections(scores: torch.Tensor, top: int = TOP, min_score: float = MIN_SCORE) -> torch.Tensor:
    """Indices (ascending) of the detections scoring at least :func:`keep_threshold`."""
    return (scores >= keep_threshold(scores, top, min_score)).nonzero(as_tuple=True)[0]


def _weights(run: LoadedRun) -> dict[str, Any]:
    if run.weights is None:
        return {"file": None, "kind": "unknown", "sha256": None}
    kind = "compact" if run.weights.name == COMPACT else "checkpoint"
    try:
        name = run.weights.resolve().relative_to(run.run_dir.resolve()).as_posix()
    except ValueError:
        name = paths.display(run.weights)
    return {"file": name, "kind": kind, "sha256": file_sha256(run.weights)}


def _image_entry(run: LoadedRun, position: int, sample: Sample) -> dict[str, Any]:
    res = sample.result
    if "query_locations" not in res:
        raise UserError(f"{run.run_dir}: a prediction without 'query_locations': snapshots hold "
                        "the query figures' fields of a FastInst run with query_type=ia_guided")
    scores = res["scores"].cpu()
    keep = kept_detections(scores)
    masks = to_input_grid(res["mask_probs"][keep].cpu(), sample.padded, sample.padded) > 0.5
    fields = {name: _encode(res[name]) for name in IMAGE_FIELDS}
    fields.update({name: _encode(res[name][keep]) for name in DETECTION_FIELDS})
    fields["mask_probs"] = _encode_binary(masks)
    info = run.val_set.coco.imgs[sample.image_id]
    return {"position": position, "image_id": sample.image_id, "file_name": info["file_name"],
            "size": list(sample.size), "padded": list(sample.padded),
            "detections": len(scores), "kept_from": keep_threshold(scores), "fields": fields}


def write_snapshot(run: LoadedRun, images=IMAGES) -> Path:
    """Predict val images ``images`` (positions in the val split) and write
    ``<run>/predictions_snapshot.json``."""
    images = list(images)
    entries = [_image_entry(run, i, s) for i, s in zip(images, predict(run, images))]
    path = snapshot_path(run.run_dir)
    atomic_write_json(path, {
        "format": FORMAT, "run": run.name, "config_hash": run.record.config_hash,
        "weights": _weights(run), "kept": {"top": TOP, "min_score": MIN_SCORE}, "images": entries,
    }, indent=None)
    return path


def _how_to_write(run_dir: Path, cfg: RunConfig) -> str:
    how = (f"`rtinst records compact --analysis --preset {cfg.preset}` writes it from the run's "
           f"checkpoint")
    record = run_dir / "record.json"
    return how + ("; " + recreate_hint(run_dir, read_record(run_dir)) if record.is_file() else "")


def _read(path: Path, run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: no predictions snapshot; {_how_to_write(run_dir, cfg)}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: not a predictions snapshot (format {found!r}, expected {FORMAT!r})")
    recorded = read_record(run_dir).config_hash if (run_dir / "record.json").is_file() else None
    if recorded is not None and recorded != data.get("config_hash"):
        raise UserError(f"{path}: written for config {data.get('config_hash')}, but the run's "
                        f"record.json is config {recorded}; {_how_to_write(run_dir, cfg)}")
    return data


def snapshot_run(run_dir: str | Path, images=IMAGES, data_root: str | Path | None = None,
                 min_score: float | None = None) -> SnapshotRun:
    """A run's :class:`Sample` s of val images ``images`` rebuilt from its snapshot and the val
    split. ``min_score``: the figure's highlight threshold, refused when it is below the
    snapshot's (the detections under it were not kept)."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, data_root)
    path = snapshot_path(run_dir)
    data = _read(path, run_dir, cfg)
    images = list(images)
    by_position = {e["position"]: e for e in data["images"]}
    absent = [i for i in images if i not in by_position]
    if absent:
        raise UserError(f"{path}: no val image position {absent} (it holds {sorted(by_position)}); "
                        f"{_how_to_write(run_dir, cfg)}")
    val_set = build_dataset(cfg.data, "val", progress=False)
    check_indices(val_set, images)
    for i in images:
        entry, image_id = by_position[i], val_set.ids[i]
        file_name = val_set.coco.imgs[image_id]["file_name"]
        if (entry["image_id"], entry["file_name"]) != (image_id, file_name):
            raise UserError(f"{path}: val image {i} was image_id {entry['image_id']} "
                            f"({entry['file_name']}), {val_set.ann_file} now has {image_id} "
                            f"({file_name}): the data was generated differently; "
                            f"{_how_to_write(run_dir, cfg)}")
    samples = []
    for i, batch in zip(images, val_inputs(cfg, val_set, images)):
        entry = by_position[i]
        sample = as_sample(batch, {k: _decode(f) for k, f in entry["fields"].items()})
        if [list(sample.size), list(sample.padded)] != [entry["size"], entry["padded"]]:
            raise UserError(f"{path}: val image {i} is {sample.size} (padded {sample.padded}) at "
                            f"the run's input size, the snapshot's {tuple(entry['size'])} (padded "
                            f"{tuple(entry['padded'])}); {_how_to_write(run_dir, cfg)}")
        held = len(sample.result["scores"])
        if min_score is not None and held < entry["detections"] and min_score < entry["kept_from"]:
            raise UserError(f"{path}: val image {i}: holds the detections scoring >= "
                            f"{entry['kept_from']:.3g} ({held} of {entry['detections']}); "
                            f"min_score {min_score:g} needs the run's weights")
        samples.append(sample)
    return SnapshotRun(run_dir, cfg, val_set.class_names, samples)


def snapshot_samples(run_dir: str | Path, images=IMAGES, data_root: str | Path | None = None,
                     min_score: float | None = None) -> list[Sample]:
    """:func:`snapshot_run`'s samples: the result dicts hold the fields the query figures read,
    ``mask_probs`` as float 0/1 maps on the padded input grid."""
    return snapshot_run(run_dir, images, data_root, min_score).samples


def has_snapshot(run_dir: str | Path) -> bool:
    return snapshot_path(run_dir).is_file()


__all__ = ["FORMAT", "IMAGES", "MIN_SCORE", "TOP", "SnapshotRun", "has_snapshot", "kept_detections",
           "snapshot_run", "snapshot_samples", "write_snapshot"]
