"""Cost columns: FLOPs, parameters, latency and per-module time of one model at one input
size, measured at paper scale on random weights and cached as JSON (one file per model
config and size, so a model shared by several tables is measured once)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rtinst.config_schema import RunConfig
from rtinst.harness.external import build_detector
from rtinst.io import atomic_write_json, remove_stale_tmp
from rtinst.records import config_hash

DEFAULT_COST_SECONDS = 20.0  # per model, when no cached measurement tells better


def cost_key(cfg: RunConfig, size: tuple[int, int]) -> str:
    return f"{cfg.model.name}-{config_hash(cfg.model)}-{size[0]}x{size[1]}"


def timing_device() -> str:
    """Where latency is timed: the GPU when there is one (the papers' FPS are GPU numbers)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def latency_missing(data: dict, device: str) -> bool:
    """True when ``data`` lacks a latency worth keeping on ``device``: none yet, a CPU
    number where a GPU is present (it would sit next to the paper's GPU FPS), or on a GPU
    no fp16 attempt (a failed attempt is kept with its reason, not retried)."""
    if "latency_ms" not in data:
        return True
    if device == "cuda":
        return data.get("latency_kind") != "GPU latency" or not (
            "latency_fp16_ms" in data or "latency_fp16_error" in data)
    return False


def breakdown_missing(data: dict, device: str) -> bool:
    bd = data.get("breakdown")
    return bd is None or (device == "cuda" and bd.get("kind") != "GPU latency")


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
    # a measurement of the committed cache is the start; the result goes to this sweep's own file
    shared = job.get("shared")
    data = {} if job.get("force") else read_cost(path) or (read_cost(shared) if shared else None) or {}
    t0 = time.time()
    cfg = load_config(job["base_config"], job["overrides"])
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    image = torch.randn(1, 3, *job["input_size"])
    device = timing_device()
    # more runs where they are cheap; 60 per precision keep all 66 table models in one lease
    warmup, iters = (10, 50) if device == "cuda" else (3, 10)
    if "gflops" not in data:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings from data-dependent post-processing
            report = count_flops(model, image)
        data.update(gflops=report.gflops, params_m=count_params(model)["total_M"],
                    convention=report.convention, uncounted_ops=report.uncounted_ops,
                    input_size=list(job["input_size"]), model=cfg.model.name,
                    overrides=job["overrides"], provenance=provenance(device))
    if job.get("latency") and latency_missing(data, device):
        for key in [k for k in data if k.startswith(("latency", "fps"))]:
            data.pop(key)
        rec = measure_latency(model, image, device=device, warmup=warmup, iters=iters, progress=False)
        data.update(latency_ms=rec.mean_ms, latency_median_ms=rec.median_ms, fps=rec.fps,
                    latency_kind=rec.kind, latency_hardware=rec.provenance.get("hardware"),
                    latency_timing=f"{rec.timing}; {warmup} warm-up + {iters} timed runs")
        if device == "cuda":
            try:
                rec = measure_latency(model, image, device=device, warmup=warmup, iters=iters,
                                      fp16=True, progress=False)
                data.update(latency_fp16_ms=rec.mean_ms, fps_fp16=rec.fps)
            except Exception as e:  # noqa: BLE001 - an op without a half kernel: say which
                data["latency_fp16_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    if job.get("breakdown") and breakdown_missing(data, device):
        if "breakdown" in data:  # keep the CPU breakdown beside the GPU one
            data["breakdown_cpu"] = data.pop("breakdown")
        parts = {n: n for n, _ in model.named_children() if "criterion" not in n and "loss" not in n}
        rec = module_breakdown(model, image, modules=parts, device=device, warmup=max(2, warmup // 2),
                               iters=max(5, iters // 2), progress=False)
        data["breakdown"] = {"kind": rec.kind, "total_ms": rec.total_ms, "ms": rec.parts_ms,
                             "pct": rec.parts_pct, "hardware": rec.provenance.get("hardware")}
    data["seconds"] = data.get("seconds", 0.0) + time.time() - t0
    atomic_write_json(path, data)
    return {"key": job["key"], "status": "done", "seconds": time.time() - t0}
