"""Benchmark: YOLACT parameters and GFLOPs at paper scale (R-50 / R-101 x 400 / 550 / 700).

Not a pytest test (no ``test_`` prefix). Run from the repository root:

    python tests/benchmarks/bench_yolact_cost.py [--sizes 400 550 700] [--no-fc-mask]

Each row builds ``rtinst/configs/yolact/coco.yaml`` (random weights, 80 classes) with
``model.backbone.name`` / ``model.image_size`` overridden, and counts on one square
``size x size`` input (the paper does not keep the aspect ratio; 550 is fed as 550, not
padded to 576):

- GFLOPs: ``rtinst.engine.flops.count_flops`` in the detectron2 convention (fvcore, 1
  multiply-add = 1 flop), eval mode, *including* post-processing (softmax, box decoding,
  Fast NMS, mask assembly and crop). Counted ops: ``conv`` (backbone, FPN, protonet, head),
  ``upsample_bilinear2d`` (FPN top-down, protonet x2) and ``matmul`` (mask assembly
  P C^T: 138*138*32 MACs per detection at 550, i.e. depends on how many detections survive
  NMS -- with these random weights the maximum, 100). batch_norm and elementwise ops are
  ignored as detectron2 does; NMS / top-k / comparisons have no fvcore handler and are
  listed under ``uncounted_ops``. The semantic-segmentation conv is training-only: 0 FLOPs.
- Parameters: ``count_params`` (all, incl. the training-only semantic conv, 0.02 M;
  BatchNorm affine parameters counted since YOLACT trains with unfrozen BN).

The paper's FPS (Table 1, Titan Xp) is copied from shared/paper_tables for reference.
Writes ``results/benchmarks/yolact_cost.json`` and ``.md`` atomically.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from rtinst.config import load_config  # noqa: E402
from rtinst.engine.flops import count_flops, count_params  # noqa: E402
from rtinst.io import atomic_write_json, atomic_write_text  # noqa: E402
from rtinst.models import build_model  # noqa: E402
from rtinst.provenance import provenance  # noqa: E402

CONFIG = REPO / "rtinst" / "configs" / "yolact" / "coco.yaml"
PAPER_TABLE1 = Path("/work/shared/paper_tables/yolact/table1_testdev.csv")
OUT_JSON = REPO / "results" / "benchmarks" / "yolact_cost.json"
OUT_MD = REPO / "results" / "benchmarks" / "yolact_cost.md"
BACKBONES = {"resnet50": "R-50-FPN", "resnet101": "R-101-FPN"}

# Third-party reference (not the official repository's own statement): OpenVINO Open Model Zoo
# card of the official YOLACT R-50 550 weights exported to ONNX. Its GFlops count 2 flops per
# multiply-add (59.29 GMACs); its MParams count the exported graph, where the shared
# prediction head appears once per FPN level (5 x 1.40 M instead of 1 x).
EXTERNAL = {
    "source": "https://docs.openvino.ai/2021.2/omz_models_public_yolact_resnet50_fpn_pytorch_"
              "yolact_resnet50_fpn_pytorch.html",
    "model": "yolact-resnet50-fpn-pytorch (official weights, ONNX, 1x3x550x550)",
    "gflops_2x_macs": 118.575, "gmacs": 118.575 / 2, "mparams_exported_graph": 36.829,
}


def paper_fps() -> dict[tuple[str, int], float]:
    out = {}
    if PAPER_TABLE1.is_file():
        with open(PAPER_TABLE1) as f:
            for row in csv.DictReader(f):
                if row["method"].startswith("YOLACT") and row["image_size"]:
                    out[(row["backbone"], int(row["image_size"]))] = float(row["fps"])
    return out


def measure(backbone: str, size: int, extra: list[str]) -> dict:
    overrides = [f"model.backbone.name={backbone}", f"model.image_size={size}",
                 f"data.fixed_size={size}", "model.backbone.pretrained=none", *extra]
    cfg = load_config(CONFIG, overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    params = count_params(model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings from data-dependent NMS code
        report = count_flops(model, torch.randn(1, 3, size, size), convention="detectron2")
    top = {k: round(v, 4) for k, v in report.per_module_gflops.items() if "." not in k}
    return {
        "backbone": backbone, "image_size": size, "overrides": overrides,
        "params_M": round(params["total_M"], 4), "params": params["total"],
        "params_per_module_M": {k: round(v, 4) for k, v in params["per_module_M"].items()},
        "gflops": round(report.gflops, 4), "gflops_per_module": top,
        "gflops_per_operator": {k: round(v, 4) for k, v in report.per_operator_gflops.items()},
        "ignored_ops": report.ignored_ops, "uncounted_ops": report.uncounted_ops,
        "count_seconds": round(time.perf_counter() - start, 1),
    }


def to_markdown(record: dict) -> str:
    lines = [
        "# YOLACT cost (rtinst, random weights, batch 1, square input)",
        "",
        "GFLOPs: fvcore, detectron2 convention (1 multiply-add = 1 flop), eval mode incl. "
        "post-processing. Params: all parameters (incl. the training-only semantic conv).",
        "",
        "| model | backbone | size | params (M) | GFLOPs | backbone | FPN | protonet | head | paper FPS (Titan Xp) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        g = r["gflops_per_module"]
        fps = r.get("paper_fps")
        lines.append(
            f"| {r['variant']} | {BACKBONES[r['backbone']]} | {r['image_size']} | "
            f"{r['params_M']:.2f} | {r['gflops']:.2f} | {g.get('backbone', 0):.2f} | "
            f"{g.get('fpn', 0):.2f} | {g.get('protonet', 0):.2f} | {g.get('head', 0):.2f} | "
            f"{'' if fps is None else fps} |")
    ext = record["external_reference"]
    lines += [
        "",
        f"External reference ({ext['model']}): {ext['gmacs']:.2f} GMACs "
        f"({ext['gflops_2x_macs']} GFlops at 2 per MAC), {ext['mparams_exported_graph']} M params "
        "in the exported graph (shared head counted once per level). Source: " + ext["source"],
        "",
        "Counted operators: conv, upsample_bilinear2d, matmul (mask assembly, scales with the "
        "number of detections). Uncounted (no handler): NMS / top-k / comparisons; see the JSON.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 550, 700])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--no-fc-mask", action="store_true",
                        help="skip the fc-mask (Table 2c) row at R-101 550")
    args = parser.parse_args()
    fps = paper_fps()
    rows = []
    jobs = [("YOLACT", b, s, []) for b in args.backbones for s in args.sizes]
    if not args.no_fc_mask:
        jobs.append(("fc-mask", "resnet101", 550, ["model.mask_type=fc"]))
    for variant, backbone, size, extra in jobs:
        row = {"variant": variant, **measure(backbone, size, extra)}
        row["paper_fps"] = fps.get((BACKBONES[backbone], size)) if variant == "YOLACT" else None
        rows.append(row)
        print(f"{variant:8s} {backbone:10s} {size}: {row['params_M']:.2f} M params, "
              f"{row['gflops']:.2f} GFLOPs  ({row['count_seconds']} s)", flush=True)
    record = {
        "benchmark": "yolact_cost", "config": str(CONFIG.relative_to(REPO)),
        "convention": "detectron2 (fvcore, 1 MAC = 1 flop), eval mode, post-processing included",
        "rows": rows, "external_reference": EXTERNAL, "provenance": provenance("cpu"),
    }
    atomic_write_json(OUT_JSON, record)
    atomic_write_text(OUT_MD, to_markdown(record))
    print(f"wrote {OUT_JSON.relative_to(REPO)} and {OUT_MD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
