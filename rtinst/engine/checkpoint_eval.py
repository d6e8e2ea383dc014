"""A weights file evaluated like a run: ``rtinst evaluate --config C --checkpoint W``.

The model of the config is built without its ImageNet backbone file (the checkpoint holds
every weight), loaded strictly, and evaluated on the config's val split as training ends a
run (COCO mask AP, TIDE when ``eval.tide``), plus its latency at batch 1 on the first val
image. The run record has the config (and its hash, unchanged by the implied
``pretrained=none``), the metrics, and the checkpoint's path and sha256 in its provenance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rtinst.config import save_config
from rtinst.config_schema import RunConfig
from rtinst.data.build import build_dataset, collate_fn
from rtinst.engine.checkpoint import load_checkpoint
from rtinst.engine.compact import FORMAT as COMPACT_FORMAT, read_compact
from rtinst.engine.latency import measure_latency
from rtinst.engine.train import evaluate_run, resolve_device
from rtinst.errors import UserError
from rtinst.records import RunRecord, write_record
from rtinst.io import file_sha256
from rtinst.models import build_model
from rtinst.provenance import provenance


def model_from_checkpoint(cfg: RunConfig, path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The config's model with the checkpoint's weights (strict), in eval mode, and the
    checkpoint's other entries (``converted_from`` for converted official weights). A compact
    ``model_fp16.pt`` is read as its float32 weights."""
    state = load_checkpoint(path)
    if isinstance(state, dict) and state.get("format") == COMPACT_FORMAT:
        state = read_compact(path, cfg.model.backbone)
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise UserError(f"{path}: not an rtinst checkpoint (no 'model' state dict); official "
                        f"checkpoints need `rtinst convert` first")
    model_cfg = replace(cfg.model, backbone=replace(cfg.model.backbone, pretrained="none"))
    model = build_model(model_cfg)
    own = model.state_dict()
    made_with = state.get("converted_from", {}).get("overrides") if isinstance(
        state.get("converted_from"), dict) else None
    hint = f" (it was converted with overrides {made_with})" if made_with else ""
    for key in weights:
        if key not in own:
            raise UserError(f"{path}: key '{key}' is not in this config's {cfg.model.name} "
                            f"model: evaluate with the config it was made for{hint}")
    for key, value in own.items():
        if key not in weights:
            raise UserError(f"{path}: lacks '{key}' of this config's {cfg.model.name} model: "
                            f"evaluate with the config it was made for{hint}")
        if tuple(weights[key].shape) != tuple(value.shape):
            raise UserError(f"{path}: '{key}' has shape {list(weights[key].shape)}, this config "
                            f"needs {list(value.shape)}: evaluate with the config it was made "
                            f"for{hint}")
    model.load_state_dict(weights, strict=True)
    return model.eval(), {k: v for k, v in state.items() if k != "model"}


def evaluate_checkpoint(cfg: RunConfig, checkpoint: str | Path, run_dir: str | Path,
                        progress: bool = True, latency: bool = True) -> RunRecord:
    """Evaluate ``checkpoint`` on ``cfg``'s val split into ``run_dir`` (record, results,
    metrics); latency at batch 1 on the first val image (CPU: 3 warm-up + 10 timed runs)."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    val_set = build_dataset(cfg.data, "val", progress)  # bad data fails before the model loads
    if cfg.model.num_classes != val_set.num_classes:
        raise UserError(f"model.num_classes={cfg.model.num_classes} but {val_set.ann_file} has "
                        f"{val_set.num_classes} categories")
    model, extra = model_from_checkpoint(cfg, checkpoint)
    record = RunRecord.start(cfg)
    record.provenance = {**provenance(str(device)), "checkpoint": str(checkpoint),
                         "checkpoint_sha256": file_sha256(checkpoint)}
    if "converted_from" in extra:
        record.provenance["converted_from"] = extra["converted_from"]
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    write_record(record, run_dir)
    try:
        metrics = evaluate_run(model, cfg, val_set, run_dir, device, progress)
        if latency:
            timing = _latency(model, cfg, val_set, device)
            metrics.update(latency_ms=timing.pop("latency_ms"), fps=timing.pop("fps"))
            record.provenance["latency"] = timing
    except Exception as e:
        write_record(record.fail(f"{type(e).__name__}: {e}"), run_dir)
        raise
    record.artifacts = {"results": "coco_segm_results.json", "config": "config.yaml"}
    write_record(record.finish(metrics), run_dir)
    return record


def _latency(model: nn.Module, cfg: RunConfig, val_set, device: torch.device) -> dict[str, Any]:
    batch = collate_fn(cfg.data)([val_set[0]])
    warmup, iters = (10, 50) if device.type == "cuda" else (3, 10)
    rec = measure_latency(model, batch.images, device=str(device), warmup=warmup, iters=iters,
                          progress=False)
    return {"latency_ms": rec.mean_ms, "fps": rec.fps, "median_ms": rec.median_ms,
            "kind": rec.kind, "hardware": rec.provenance.get("hardware"),
            "input_size": list(batch.images.shape[-2:]),
            "timing": f"{rec.timing}; {warmup} warm-up + {iters} timed runs"}
