"""One run, end to end: data -> model -> train -> COCO results -> AP (+ TIDE) -> run record.

``run_training(cfg, run_dir)`` is what ``rtinst train`` and the sweep runner call. The run
folder holds ``config.yaml``, ``record.json`` (status ``running`` while training, then
``done`` or ``failed`` with the reason), ``train_log.jsonl``, ``coco_segm_results.json``,
``metrics.json``, TIDE's plot and ``checkpoints/last.pt`` (kept out of git). Re-running on
the same folder resumes from the checkpoint.
"""

from __future__ import annotations

import os
import random
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtinst.config import save_config
from rtinst.config_schema import RunConfig
from rtinst.data.build import build_dataset, collate_fn
from rtinst.engine.evaluate import METRIC_KEYS, evaluate_segm, write_results
from rtinst.engine.inference import predict_coco
from rtinst.engine.checkpoint import load_checkpoint
from rtinst.engine.loop import TrainingDiverged, snapshot_name, train_loop
from rtinst.errors import UserError
from rtinst.records import CURVE_NAME, RunRecord, write_record
from rtinst.io import atomic_write_json, file_sha256
from rtinst.models import build_model
from rtinst.models.backbones import check_pretrained
from rtinst.provenance import provenance


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={spec!r}: CUDA is not available on this machine; use cpu or auto")
    return torch.device(spec)


def init_distributed(device: torch.device) -> tuple[torch.device, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); return (device, rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return device, 0
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, torch.distributed.get_rank()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def backbone_init(model: torch.nn.Module) -> dict[str, Any]:
    """Where the backbone's initial weights came from, with the file's hash."""
    return init_source_record(getattr(getattr(model, "backbone", None), "init_source", None))


def init_source_record(source: str | None) -> dict[str, Any]:
    """A backbone's ``init_source`` (a weights file or "scratch") with the file's sha256."""
    sha = file_sha256(source) if source else None
    if sha and Path(source).resolve().is_relative_to(Path.cwd()):
        source = str(Path(source).resolve().relative_to(Path.cwd()))  # machine-independent
    return {"backbone_init": source, "backbone_init_sha256": sha}


def evaluate_run(model: torch.nn.Module, cfg: RunConfig, val_set, run_dir: Path,
                 device: torch.device, progress: bool = True,
                 results_name: str = "coco_segm_results.json",
                 with_tide: bool | None = None, with_targets: bool = False) -> dict[str, Any]:
    """Predict the val split, write the COCO results JSON, return AP (and TIDE) metrics.
    ``with_tide``: None follows ``cfg.eval.tide``; ``with_targets``: see ``predict_coco``."""
    results = predict_coco(model, val_set, collate_fn(cfg.data), val_set.contiguous_to_cat_id,
                           device=device, max_images=cfg.eval.max_images, progress=progress,
                           with_targets=with_targets)
    results_path = write_results(run_dir / results_name, results)
    if not results:  # an untrained model may detect nothing: AP is 0, not an error
        return {k: 0.0 for k in METRIC_KEYS} | {"num_detections": 0}
    image_ids = val_set.ids[: cfg.eval.max_images]
    gt = _gt_subset(val_set, image_ids, run_dir)
    metrics = evaluate_segm(gt, results, backend=cfg.eval.backend)
    if cfg.eval.tide if with_tide is None else with_tide:
        from rtinst.engine.tide import run_tide

        tide = run_tide(gt, results_path, out_dir=run_dir, name=f"{cfg.model.name}")
        metrics.update({k: v for k, v in tide.items() if k != "tide_plot"})
    return metrics


CURVE_KEYS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")


def evaluate_snapshots(model: torch.nn.Module, cfg: RunConfig, val_set, run_dir: Path,
                       device: torch.device, final: dict[str, Any], summary: dict[str, Any],
                       progress: bool = True) -> Path:
    """AP of every ``train.snapshot_minutes`` / ``snapshot_iters`` snapshot plus the final
    model -> ``curve.json``, in order of training time.

    The final weights are restored in ``model`` afterwards; snapshot results files are removed
    (only the final run's ``coco_segm_results.json`` is kept).
    """
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    points = []
    names = {snapshot_name(m) for m in cfg.train.snapshot_minutes}
    names |= {snapshot_name(iteration=i) for i in cfg.train.snapshot_iters}
    # a snapshot is missing when the run ended (max_iters, max_minutes) before it
    states = [load_checkpoint(p) for n in names if (p := run_dir / "checkpoints" / n).is_file()]
    states = [s for s in states if s["iteration"] < summary["iterations"]]  # final one follows
    for state in sorted(states, key=lambda s: s["iteration"]):
        model.load_state_dict(state["model"])
        metrics = evaluate_run(model, cfg, val_set, run_dir, device, progress,
                               results_name="snapshot_results.json", with_tide=False)
        points.append({"minutes": round(state["train_seconds"] / 60, 2), "iteration": state["iteration"],
                       **{k: metrics[k] for k in CURVE_KEYS}})
    (run_dir / "snapshot_results.json").unlink(missing_ok=True)
    model.load_state_dict(final_state)
    points.append({"minutes": round(summary["train_seconds"] / 60, 2), "iteration": summary["iterations"],
                   **{k: final[k] for k in CURVE_KEYS}})
    path = run_dir / CURVE_NAME
    atomic_write_json(path, {"what": "mask AP on the val split vs minutes of training",
                             "step_time_s": summary["step_time_s"], "points": points})
    return path


def _gt_subset(val_set, image_ids: list[int], run_dir: Path) -> Path:
    """The GT file, restricted to the evaluated images when ``eval.max_images`` is set."""
    if len(image_ids) == len(val_set.coco.imgs):
        return val_set.ann_file
    keep = set(image_ids)
    data = dict(val_set.coco.dataset)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = run_dir / "gt_subset.json"
    atomic_write_json(path, data, indent=None)
    return path


def run_training(cfg: RunConfig, run_dir: str | Path, progress: bool = True) -> RunRecord:
    """Train and evaluate ``cfg`` in ``run_dir``; always leaves a record (done or failed)."""
    run_dir = Path(run_dir)
    device, rank = init_distributed(resolve_device(cfg.device))
    # Everything that can fail on bad input fails here, before any long work.
    check_pretrained(cfg.model.backbone, cfg.preset)
    train_set = build_dataset(cfg.data, "train", progress)
    val_set = build_dataset(cfg.data, "val", progress)
    if cfg.model.num_classes != train_set.num_classes:
        raise UserError(f"model.num_classes={cfg.model.num_classes} but {train_set.ann_file} has "
                        f"{train_set.num_classes} categories; set model.num_classes="
                        f"{train_set.num_classes}")
    seed_everything(cfg.seed)
    model = build_model(cfg.model)

    record = RunRecord.start(cfg)
    record.provenance = {**provenance(str(device)), **backbone_init(model)}
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        write_record(record, run_dir)
    if rank != 0:  # other DDP processes only train; rank 0 records and evaluates
        train_loop(model, train_set, collate_fn(cfg.data), cfg.train, run_dir, seed=cfg.seed,
                   device=device, num_workers=cfg.data.num_workers, progress=False)
        return record
    try:
        summary = train_loop(model, train_set, collate_fn(cfg.data), cfg.train, run_dir,
                             seed=cfg.seed, device=device, num_workers=cfg.data.num_workers,
                             progress=progress)
        metrics = evaluate_run(model, cfg, val_set, run_dir, device, progress)
    except (TrainingDiverged, UserError) as e:
        write_record(record.fail(str(e)), run_dir)
        raise
    except Exception as e:
        write_record(record.fail(f"{type(e).__name__}: {e}\n{traceback.format_exc()}"), run_dir)
        raise
    metrics.update(train_iterations=summary["iterations"], train_seconds=summary["train_seconds"],
                   step_time_s=summary["step_time_s"])
    record.artifacts = {"results": "coco_segm_results.json", "train_log": "train_log.jsonl",
                        "checkpoint": "checkpoints/last.pt", "config": "config.yaml"}
    if cfg.train.snapshot_minutes or cfg.train.snapshot_iters:
        evaluate_snapshots(model, cfg, val_set, run_dir, device, metrics, summary, progress)
        record.artifacts["curve"] = CURVE_NAME
    write_record(record.finish(metrics), run_dir)
    return record
