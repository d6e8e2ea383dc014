"""Benchmark: GFLOPs and parameters of SparseInst (R50) for the default model and every row of
the paper's Tables 2, 3, 4 and 7, next to the paper's measured times (2080Ti, ms).

Not a pytest test (no ``test_`` prefix). Run from the repository root:

    python tests/benchmarks/bench_sparseinst_cost.py [--size 640x864] [--only default,t2_*]

Conventions: ``rtinst.engine.flops.count_flops`` in the detectron2 convention (fvcore trace,
1 multiply-add = 1 flop, batch_norm and elementwise ops ignored, deform_conv2d counted as a
regular conv), batch 1, eval mode, including the model's own post-processing (thresholding
and mask rescoring at 1/4 resolution; the engine's resize to the image is not part of the
model). Weights are random, so every prediction passes the 0.005 threshold: the worst case
for post-processing. Parameters: every parameter (frozen-BN affine terms are buffers, as in
detectron2).

Rows
  * ``default``: SparseInst R50 with Group-IAM (G=4), rtinst/configs/sparseinst/coco.yaml
    (the Table 1 "SparseInst R-50" architecture).
  * ``t2_*`` / ``t3_*`` / ``t4_*`` / ``t7_*``: the ablation default (the row shared by
    Tables 2-7: PPM + fusion, depth 4, width 256, coord, no dconv, 3x3 conv + sigmoid, G=1)
    with the row's switches. ``paper_ms`` is the row's t (ms) as printed.

Writes ``results/benchmarks/sparseinst_cost.json`` and ``.md`` atomically and prints a table.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from rtinst.cli.bench import parse_size  # noqa: E402
from rtinst.config import load_config  # noqa: E402
from rtinst.errors import UserError  # noqa: E402
from rtinst.engine.flops import count_flops, count_params  # noqa: E402
from rtinst.io import atomic_write_json, atomic_write_text  # noqa: E402
from rtinst.models import build_model  # noqa: E402
from rtinst.provenance import provenance  # noqa: E402

CONFIG = REPO / "rtinst" / "configs" / "sparseinst" / "coco.yaml"
ABLATION = ["model.iam_groups=1"]  # the ablations' shared default: plain 3x3 sigmoid IAM

# (row id, table, label, overrides on top of coco.yaml, paper t (ms) on a 2080Ti or None)
ROWS: list[tuple[str, str, str, list[str], float | None]] = [
    ("default", "Table 1", "R50 G-IAM (G=4) default", [], None),
    ("t2_vanilla", "Table 2", "no fusion, no PPM (vanilla FPN P3)",
     ABLATION + ["model.encoder_fusion=false", "model.encoder_ppm=false"], 22.0),
    ("t2_ppm", "Table 2", "PPM only", ABLATION + ["model.encoder_fusion=false"], 22.2),
    ("t2_fusion", "Table 2", "fusion only", ABLATION + ["model.encoder_ppm=false"], 22.8),
    ("t2_both", "Table 2", "fusion + PPM (ablation default)", ABLATION, 22.9),
    ("t3_nocoord", "Table 3", "depth 4, width 256, no coord", ABLATION + ["model.coord_features=false"], 22.9),
    ("t3_coord", "Table 3", "depth 4, width 256, coord (ablation default)", ABLATION, 22.9),
    ("t3_dconv", "Table 3", "depth 4, width 256, coord, dconv", ABLATION + ["model.deform_last_conv=true"], 24.6),
    ("t3_depth2", "Table 3", "depth 2, width 256, coord", ABLATION + ["model.decoder_depth=2"], 20.6),
    ("t3_depth6", "Table 3", "depth 6, width 256, coord", ABLATION + ["model.decoder_depth=6"], 25.5),
    ("t3_width128", "Table 3", "depth 4, width 128, coord", ABLATION + ["model.decoder_width=128"], 19.7),
    ("t4_3x3_sigmoid", "Table 4", "3x3 conv, sigmoid (ablation default)", ABLATION, 22.9),
    ("t4_3x3_softmax", "Table 4", "3x3 conv, softmax", ABLATION + ["model.iam_activation=softmax"], 22.9),
    ("t4_1x1", "Table 4", "1x1 conv, sigmoid", ABLATION + ["model.iam_conv=1x1"], 22.4),
    ("t4_3x3_relu_3x3", "Table 4", "3x3 conv, ReLU, 3x3 conv", ABLATION + ["model.iam_conv=3x3-relu-3x3"], 23.6),
    ("t4_g2", "Table 4", "group 3x3 conv (2 groups)", ["model.iam_groups=2"], 23.1),
    ("t4_g4", "Table 4", "group 3x3 conv (4 groups)", ["model.iam_groups=4"], 23.3),
    ("t7_1x1", "Table 7", "1x1 conv", ABLATION + ["model.iam_conv=1x1"], 22.4),
    ("t7_3x3", "Table 7", "3x3 conv", ABLATION, 22.9),
    ("t7_group", "Table 7", "group 3x3 conv (4 groups)", ["model.iam_groups=4"], 23.3),
    ("t7_cross_attention", "Table 7", "cross attention (4 heads, 100 queries)",
     ABLATION + ["model.instance_head=cross_attention"], 23.4),
]


def measure(overrides: list[str], size: tuple[int, int]) -> dict:
    cfg = load_config(CONFIG, overrides + ["model.backbone.pretrained=none"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings from data-dependent post-processing
        report = count_flops(model, torch.randn(1, 3, *size))
    params = count_params(model)
    top = {k: round(v, 3) for k, v in report.per_module_gflops.items() if "." not in k}
    return {"gflops": report.gflops, "gflops_per_module": top, "params_M": params["total_M"],
            "params_per_module_M": {k: round(v, 4) for k, v in params["per_module_M"].items()},
            "per_operator_gflops": {k: round(v, 4) for k, v in report.per_operator_gflops.items()},
            "uncounted_ops": report.uncounted_ops}


def markdown(result: dict) -> str:
    size = "x".join(map(str, result["input_size"]))
    lines = [f"# SparseInst cost at {size} (R50, batch 1, detectron2 FLOP convention)", "",
             "GFLOPs: fvcore trace, 1 multiply-add = 1 flop, model post-processing included. "
             "`paper ms`: the row's time in the paper (2080Ti); `d` columns: difference to the "
             "ablation default row (t2_both).", "",
             "| row | table | setting | GFLOPs | params (M) | d GFLOPs | paper ms | d paper ms |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    base = result["rows"].get("t2_both")
    for rid, row in result["rows"].items():
        dg = f"{row['gflops'] - base['gflops']:+.2f}" if base else ""
        ms = row["paper_ms"]
        dms = f"{ms - 22.9:+.1f}" if ms is not None else ""
        lines.append(f"| {rid} | {row['table']} | {row['label']} | {row['gflops']:.2f} | "
                     f"{row['params_M']:.2f} | {dg} | {'' if ms is None else ms} | {dms} |")
    d = result["rows"].get("default")
    if d:
        lines += ["", "Default (R50 G-IAM) per module: GFLOPs "
                  + ", ".join(f"{k} {v:.2f}" for k, v in d["gflops_per_module"].items())
                  + "; params (M) " + ", ".join(f"{k} {v:.2f}" for k, v in d["params_per_module_M"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="640x864", help="input HxW (default 640x864)")
    p.add_argument("--only", default="*", help="comma-separated row ids / globs")
    p.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "sparseinst_cost"))
    args = p.parse_args(argv)
    try:
        size = parse_size(args.size)
    except UserError as e:
        p.error(str(e))
    patterns = args.only.split(",")
    cache: dict[tuple, dict] = {}
    rows = {}
    for rid, table, label, overrides, ms in ROWS:
        if not any(fnmatch.fnmatch(rid, pat) for pat in patterns):
            continue
        key = tuple(sorted(overrides))
        if key not in cache:
            t0 = time.perf_counter()
            cache[key] = measure(overrides, size)
            print(f"{rid:20s} {cache[key]['gflops']:7.2f} GFLOPs {cache[key]['params_M']:6.2f} M "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        else:
            print(f"{rid:20s} (same architecture as an earlier row)", flush=True)
        rows[rid] = {"table": table, "label": label, "overrides": overrides, "paper_ms": ms,
                     **cache[key]}
    torch_threads = torch.get_num_threads()
    result = {"config": str(CONFIG.relative_to(REPO)), "input_size": list(size),
              "convention": "detectron2", "rows": rows,
              "provenance": {**provenance("cpu"), "torch_threads": torch_threads}}
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), result)
    md = markdown(result)
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
