"""Benchmark: PyTorch eager vs the ONNX export in onnxruntime, the three default models.

Not a pytest test (no ``test_`` prefix). Run from the repository root:

    OMP_NUM_THREADS=1 nice -n 10 python tests/benchmarks/bench_onnx_latency.py [--rows tiny,paper]

Each row is ``rtinst bench latency --config C --size S --runtime onnxruntime``: random
weights, batch 1, the same input, thread count and post-processing for both runtimes (model
post-processing + the engine's mask resize to the image size); the export is fixed at the
row's size (onnxruntime's best case), CPU execution provider. Rows: the tiny presets at the
embedded dataset's 320x320, and the coco presets at the papers' sizes (FastInst / SparseInst
R50 at 640x864, YOLACT R101 at 550x550). Medians of ``--iters`` runs after ``--warmup``.

The load average before and after each row is recorded: other jobs share the 2-core CPU.
Writes ``results/benchmarks/onnx_latency.json`` and ``.md`` atomically after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

ROWS = {
    "tiny": [("fastinst", "rtinst/configs/fastinst/tiny.yaml", "320x320"),
             ("sparseinst", "rtinst/configs/sparseinst/tiny.yaml", "320x320"),
             ("yolact", "rtinst/configs/yolact/tiny.yaml", "320x320")],
    "paper": [("fastinst", "rtinst/configs/fastinst/coco.yaml", "640x864"),
              ("sparseinst", "rtinst/configs/sparseinst/coco.yaml", "640x864"),
              ("yolact", "rtinst/configs/yolact/coco.yaml", "550x550")],
}


def _markdown(record: dict) -> str:
    lines = [f"# PyTorch eager vs onnxruntime ({record['hardware']}, {record['threads']} threads, "
             "random weights, batch 1, post-processing included)", "",
             "| scale | model | size | eager median ms | onnxruntime median ms | speed-up | "
             "max abs diff (raw outputs) | load avg (1 min) before / after |",
             "|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['scale']} | {r['model']} | {r['size']} | {r['eager_median_ms']:.1f} | "
                     f"{r['onnxruntime_median_ms']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['max_abs_diff']:.1e} | {r['load_before']:.1f} / {r['load_after']:.1f} |")
    lines += ["", record["note"], ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="tiny,paper", help="comma-separated: tiny, paper")
    parser.add_argument("--models", default="fastinst,sparseinst,yolact",
                        help="comma-separated, in the order they run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and onnxruntime threads (default 1: on the shared 2-core "
                        "CPU, 2 threads made eager 4-10x slower, not faster)")
    parser.add_argument("--out", default=str(REPO / "results/benchmarks/onnx_latency.json"))
    args = parser.parse_args()

    from rtinst.cli import main as cli
    from rtinst.io import atomic_write_json, atomic_write_text
    from rtinst.provenance import provenance

    prov = provenance("cpu")
    record = {"what": "rtinst bench latency --runtime onnxruntime per row", "threads": args.threads,
              "hardware": prov["hardware"], "scale": "tiny presets at 320x320 and coco presets "
              "at paper sizes, random weights", "note": "", "rows": [], "provenance": prov}
    iters = {"tiny": (3, 20), "paper": (2, 10)}
    for scale in [s.strip() for s in args.rows.split(",") if s.strip()]:
        warmup, n = iters[scale]
        rows = {m: (m, c, sz) for m, c, sz in ROWS[scale]}
        for model, config, size in (rows[m.strip()] for m in args.models.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "row.json"
                load_before = os.getloadavg()[0]
                start = time.perf_counter()
                rc = cli(["bench", "latency", "--config", config, "--size", size, "--runtime",
                          "onnxruntime", "--threads", str(args.threads), "--warmup", str(warmup),
                          "--iters", str(n), "--out", str(out)])
                if rc:
                    raise SystemExit(f"{config} at {size}: rtinst bench exited {rc}")
                row = json.loads(out.read_text())
            eager, onnx = row["latency"], row["latency_onnxruntime"]
            record["rows"].append({
                "scale": scale, "model": model, "config": config, "size": size,
                "eager_median_ms": eager["median_ms"], "onnxruntime_median_ms": onnx["median_ms"],
                "speedup": eager["median_ms"] / onnx["median_ms"],
                "eager_p90_ms": eager["p90_ms"], "onnxruntime_p90_ms": onnx["p90_ms"],
                "max_abs_diff": max(onnx["export"]["max_abs_diff"].values()),
                "export_s": onnx["export"]["export_s"], "warmup": warmup, "iters": n,
                "eager_runtime": eager["runtime"], "onnxruntime_runtime": onnx["runtime"],
                "load_before": load_before, "load_after": os.getloadavg()[0],
                "row_wall_s": time.perf_counter() - start})
            record["note"] = (f"CPU latency on {prov['hardware']} shared with other jobs "
                              "(load averages per row); eager and onnxruntime of a row run "
                              "back to back on the same input. Not comparable with the papers' "
                              "GPU FPS.")
            atomic_write_json(args.out, record)
            atomic_write_text(Path(args.out).with_suffix(".md"), _markdown(record))
            print(f"{scale} {model} {size}: eager {eager['median_ms']:.1f} ms, onnxruntime "
                  f"{onnx['median_ms']:.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
