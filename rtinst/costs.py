"""Cost columns: FLOPs, parameters, latency and per-module time of one model at one input
size, measured at paper scale on random weights and cached as JSON (one file per model
config and size, so a model shared by several tables is measured once)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rtinst.config import RunConfig, config_hash
from rtinst.io import atomic_write_json, remove_stale_tmp
from rtinst.external import build_detector

DEFAULT_COST_SECONDS = 20.0  # per model, when no cached measurement tells better


def cost_key(cfg: RunConfig, size: tuple[int, int]) -> str:
    return f"{cfg.model.name}-{config_hash(cfg.model)}-{size[0]}x{size[1]}"


def read_cost(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def measure_cost(job: dict) -> dict:
    """FLOPs and parameters (and latency / per-module breakdown when asked) of one model at
    paper scale, random weights, batch 1; cached as JSON. Latency is labelled CPU or GPU."""
    import warnings

    import torch

    from rtinst.config import load_config
    from rtinst.engine.flops import count_flops, count_params
    from rtinst.engine.latency import measure_latency, module_breakdown
    from rtinst.provenance import provenance

    path = Path(job["path"])
    remove_stale_tmp(path)
    data = {} if job.get("force") else read_cost(path) or {}
    t0 = time.time()
    cfg = load_config(job["base_config"], job["overrides"])
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    image = torch.randn(1, 3, *job["input_size"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if "gflops" not in data:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings from data-dependent post-processing
            report = count_flops(model, image)
        data.update(gflops=report.gflops, params_m=count_params(model)["total_M"],
                    convention=report.convention, uncounted_ops=report.uncounted_ops,
                    input_size=list(job["input_size"]), model=cfg.model.name,
                    overrides=job["overrides"], provenance=provenance(device))
    if job.get("latency") and "latency_ms" not in data:
        rec = measure_latency(model, image, device=device, warmup=3, iters=10, progress=False)
        data.update(latency_ms=rec.mean_ms, fps=rec.fps, latency_kind=rec.kind,
                    latency_hardware=rec.provenance.get("hardware"))
    if job.get("breakdown") and "breakdown" not in data:
        parts = {n: n for n, _ in model.named_children() if "criterion" not in n and "loss" not in n}
        rec = module_breakdown(model, image, modules=parts, device=device, warmup=2, iters=5,
                               progress=False)
        data["breakdown"] = {"kind": rec.kind, "total_ms": rec.total_ms, "ms": rec.parts_ms,
                             "pct": rec.parts_pct, "hardware": rec.provenance.get("hardware")}
    data["seconds"] = data.get("seconds", 0.0) + time.time() - t0
    atomic_write_json(path, data)
    return {"key": job["key"], "status": "done", "seconds": time.time() - t0}
