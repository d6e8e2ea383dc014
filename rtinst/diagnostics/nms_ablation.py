"""YOLACT Table 2a on a trained run: the same weights with every NMS variant.

For each variant (standard, Fast, Cluster, Matrix NMS) the trained model is evaluated on the
val split (mask AP), and NMS alone is timed per image on the model's own decoded boxes and
scores (what NMS sees at test time: the real score distribution, not a synthetic one). Each
variant other than the one the run was trained with gets an evaluation-only run record in
the folder a sweep would use for that config (so Table 2a's "standard" row reuses it); the
whole table goes to ``<run>/nms_ablation.json``. The captured NMS inputs can be saved for
``tests/benchmarks/bench_nms.py --scores``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from rtinst.config import save_config
from rtinst.data.build import collate_fn
from rtinst.engine.restore import LoadedRun, load_run
from rtinst.engine.train import CURVE_KEYS, evaluate_run
from rtinst.errors import UserError
from rtinst.io import atomic_torch_save, atomic_write_json
from rtinst.ops import nms as nms_ops
from rtinst.provenance import provenance
from rtinst.records import RECORD_NAME, RunRecord, read_record, run_dir_for, write_record


@torch.inference_mode()
def capture_nms_inputs(run: LoadedRun, max_images: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(boxes (A, 4), scores (A, K)) per val image, as the trained model produces them."""
    dataset = run.val_set
    if max_images is not None:
        dataset = Subset(dataset, range(min(max_images, len(dataset))))
    out = []
    for batch in DataLoader(dataset, batch_size=1, collate_fn=collate_fn(run.cfg.data)):
        boxes, scores = run.model.nms_inputs(batch.images)
        out.append((boxes[0], scores[0]))
    return out


def time_nms(inputs: list[tuple[torch.Tensor, torch.Tensor]], kind: str, model_cfg,
             repeats: int = 3, threads: int = 1) -> tuple[list[float], list[float]]:
    """Wall and thread-CPU milliseconds of ``kind`` NMS per image (medians of ``repeats``),
    with the model's thresholds and ``threads`` torch threads.

    One thread by default: per-image NMS inputs are small, and on a shared 2-core machine
    the intra-op pool's wake-ups dominate and vary with load (measured: standard NMS 1.3 ms
    with 1 thread vs 5.2 ms with 2 while another job ran). Thread CPU time excludes the time
    the thread was descheduled, so it stays comparable on a busy machine.
    """
    kw = dict(score_threshold=model_cfg.score_threshold, iou_threshold=model_cfg.nms_iou_threshold,
              top_k=model_cfg.nms_top_k, max_detections=model_cfg.max_detections)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        nms_ops.nms(kind, *inputs[0], **kw)  # warm-up (lazy inits, caches)
        wall, cpu = [], []
        for boxes, scores in inputs:
            w, c = [], []
            for _ in range(repeats):
                c0, t0 = time.thread_time(), time.perf_counter()
                nms_ops.nms(kind, boxes, scores, **kw)
                w.append((time.perf_counter() - t0) * 1e3)
                c.append((time.thread_time() - c0) * 1e3)
            wall.append(statistics.median(w))
            cpu.append(statistics.median(c))
    finally:
        torch.set_num_threads(before)
    return wall, cpu


def nms_ablation(run_dir: str | Path, kinds: tuple[str, ...] = nms_ops.NMS_KINDS,
                 max_images: int | None = None, runs_dir: str | Path | None = None,
                 dump: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Mask AP and NMS ms/image of each variant for the trained YOLACT run in ``run_dir``."""
    unknown = [k for k in kinds if k not in nms_ops.NMS_KINDS]
    if unknown:
        raise UserError(f"unknown NMS kind(s) {unknown}; expected some of {list(nms_ops.NMS_KINDS)}")
    run = load_run(run_dir)
    if run.cfg.model.name != "yolact":
        raise UserError(f"{run.run_dir}: a {run.cfg.model.name} run; the NMS ablation needs a YOLACT run")
    if run.record.status != "done":
        raise UserError(f"{run.run_dir}: run status is {run.record.status!r}, not 'done'")
    runs_dir = Path(runs_dir) if runs_dir is not None else run.run_dir.parent
    if max_images is not None:
        run.cfg.eval.max_images = max_images
    inputs = capture_nms_inputs(run, run.cfg.eval.max_images)
    if dump is not None:
        atomic_torch_save({"boxes": torch.stack([b for b, _ in inputs]),
                           "scores": torch.stack([s for _, s in inputs])}, dump)
    trained_kind = run.cfg.model.nms
    machine = provenance("cpu")
    rows: list[dict[str, Any]] = []
    for kind in tqdm(kinds, desc="nms variants", disable=not progress):
        cfg = replace(run.cfg, model=replace(run.cfg.model, nms=kind))
        run.model.cfg = cfg.model  # post-processing reads the NMS kind from here
        ms, cpu_ms = time_nms(inputs, kind, cfg.model)
        out_dir = run.run_dir if kind == trained_kind else run_dir_for(cfg, runs_dir)
        record = RunRecord.start(cfg)
        metrics = evaluate_run(run.model, cfg, run.val_set, out_dir, torch.device("cpu"), progress=False,
                               results_name=("coco_segm_results.json" if kind != trained_kind
                                             else f"nms_{kind}_results.json"), with_tide=False)
        timing = {"nms_ms_per_image": statistics.median(ms), "nms_ms_mean": statistics.fmean(ms),
                  "nms_ms_p90": sorted(ms)[int(0.9 * (len(ms) - 1))],
                  "nms_thread_cpu_ms_per_image": statistics.median(cpu_ms),
                  "nms_threads": 1, "nms_timed_images": len(ms),
                  "nms_anchors": int(inputs[0][0].shape[0]), "nms_classes": int(inputs[0][1].shape[1])}
        rows.append({"nms": kind, **{k: metrics[k] for k in CURVE_KEYS},
                     **timing, "num_detections": metrics.get("num_detections"),
                     "record": str(out_dir)})
        if kind == trained_kind:
            (run.run_dir / f"nms_{kind}_results.json").unlink(missing_ok=True)
            continue  # the training record stands for its own NMS
        record.provenance = {**machine, **run.record.provenance,
                             "evaluation_only": True, "trained_in": str(run.run_dir)}
        record.artifacts = {"results": "coco_segm_results.json", "config": "config.yaml",
                            "trained_in": str(run.run_dir)}
        save_config(cfg, out_dir / "config.yaml")
        # A sweep may already have evaluated this variant (a spec's eval_of row, with TIDE):
        # add the timing to its metrics instead of dropping what this pass does not compute.
        earlier = (read_record(out_dir).metrics or {}) if (out_dir / RECORD_NAME).is_file() else {}
        write_record(record.finish({**earlier, **metrics, **timing}), out_dir)
    run.model.cfg = run.cfg.model
    table = pd.DataFrame(rows)
    atomic_write_json(run.run_dir / "nms_ablation.json", {
        "what": "the trained run's weights evaluated with each NMS variant; NMS timed alone per "
                "image on the model's decoded boxes/scores (CPU, 1 torch thread; medians over images "
                "of the median of 3 repeats)",
        "hardware": machine.get("hardware"),
        "rows": rows})
    return table
