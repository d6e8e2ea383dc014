"""Benchmark: FastInst GFLOPs and parameters for every row of Tables 2, 3, 4, 5, 6a, 6b, 6d,
6e and 7 (R50), plus the README's D3 R101, against the paper.

Not a pytest test (no ``test_`` prefix). Run from the repository root (CPU, ~10 minutes):

    python tests/benchmarks/bench_fastinst_gflops.py [--rows 6a,6b] [--height 640 --width 864]

Protocol: each row is ``rtinst/configs/fastinst/coco.yaml`` plus the row's overrides, randomly
initialized (FLOPs do not depend on weights), eval mode, batch 1, one padded input of
640x864 (the largest test input: short edge 640, long edge <= 853, padded to a multiple of
32), counted by ``rtinst.engine.flops.count_flops`` (fvcore, detectron2 convention,
attention matmuls counted) through the whole eval forward, post-processing included, with
every pixel-decoder level counted (see ``WithPixelDecoderOutputs``).

The paper's GFLOPs are averages over 100 COCO val2017 images resized to 640/853, most of
which pad to smaller inputs than 640x864, so a faithful model measures a few percent above
the paper, uniformly. The check is therefore relative: ``ratio_ours = ours / ours(D3
baseline)`` against ``ratio_paper = paper / 75.5``, and ``offset_pct = ours / paper - 1``
must be the same for every row.

Where a row's offset differs from the baseline's, the report says why, measured. First the
input-size hypothesis: only FLOPs that scale with the input area shrink on the paper's
smaller inputs, so each config is also counted at a second input (``--size2``, default
576x768) and split into an area part and a constant part (``const_share_pct``); the paper's
mean input area relative to ours is fitted on the baseline alone. Then, per row far from the
baseline's offset, ``excess_gflops`` (ours - paper x (1 + baseline offset)) and the modules
whose GFLOPs differ from the baseline's, next to the paper's change. One known convention
gap: our MSDeformAttn samples with ``F.grid_sample`` (counted, 4 MACs per output as fvcore's
rule), while Mask2Former's implementation runs a custom CUDA autograd Function on GPU, which
a JIT trace sees as an opaque Python op that fvcore skips, so the paper's figure most likely
leaves the sampling out; the report lists the grid sampler's share separately.

Writes ``results/benchmarks/fastinst_gflops.{csv,md,json}`` atomically (the JSON adds
per-module GFLOPs of each row and provenance) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
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

CONFIG = REPO / "rtinst" / "configs" / "fastinst" / "coco.yaml"
OUT = REPO / "results" / "benchmarks" / "fastinst_gflops"
BASELINE_PAPER = 75.5  # FastInst-D3 R50, the shared default of Tables 2-7

# (table, row label, overrides, paper GFLOPs)
ROWS: list[tuple[str, str, list[str], float]] = [
    ("2", "zero, D=1", ["query_type=zero", "decoder_layers=1"], 58.4),
    ("2", "learnable, D=1", ["query_type=learnable", "decoder_layers=1"], 58.4),
    ("2", "resize, D=1", ["query_type=resize", "decoder_layers=1"], 58.4),
    ("2", "IA-guided, D=1", ["decoder_layers=1"], 59.6),
    ("2", "zero, D=3", ["query_type=zero"], 74.3),
    ("2", "learnable, D=3", ["query_type=learnable"], 74.3),
    ("2", "resize, D=3", ["query_type=resize"], 74.3),
    ("2", "IA-guided, D=3", [], 75.5),
    ("3", "single pixel feat. update, D=6", ["dual_path=pixel_only", "decoder_layers=6"], 85.4),
    ("3", "single query update, D=6", ["dual_path=query_only", "decoder_layers=6"], 63.3),
    ("3", "dual query-then-pixel, D=3", ["dual_path=query_then_pixel"], 75.5),
    ("3", "dual pixel-then-query, D=3", [], 75.5),
    ("4", "w/o GT mask guidance", ["gt_mask_guidance=false"], 75.5),
    ("4", "w/ GT mask guidance", [], 75.5),
    ("5", "FPN", ["pixel_decoder=fpn"], 75.4),
    ("5", "Transformer-Encoder", ["pixel_decoder=transformer_encoder"], 78.5),
    ("5", "MSDeformAttn", ["pixel_decoder=msdeformattn"], 114.7),
    ("5", "PPM-FPN", [], 75.5),
    ("6a", "D=0", ["decoder_layers=0"], 51.6),
    ("6a", "D=1", ["decoder_layers=1"], 59.6),
    ("6a", "D=2", ["decoder_layers=2"], 67.5),
    ("6a", "D=3", [], 75.5),
    ("6a", "D=6", ["decoder_layers=6"], 99.3),
    ("6a", "D=9", ["decoder_layers=9"], 123.2),
    ("6b", "N_a=10", ["num_ia_queries=10"], 71.9),
    ("6b", "N_a=50", ["num_ia_queries=50"], 73.5),
    ("6b", "N_a=100", [], 75.5),
    ("6b", "N_a=200", ["num_ia_queries=200"], 79.5),
    ("6b", "N_a=300", ["num_ia_queries=300"], 83.5),
    ("6d", "N_a=100, N_b=0", ["num_aux_queries=0"], 75.2),
    ("6d", "N_a=108, N_b=0", ["num_ia_queries=108", "num_aux_queries=0"], 75.6),
    ("6d", "N_a=100, N_b=8", [], 75.5),
    ("6d", "N_a=100, N_b=16", ["num_aux_queries=16"], 75.7),
    ("6e", "E5", ["query_source=E5"], 74.6),
    ("6e", "E4", [], 75.5),
    ("6e", "E3", ["query_source=E3"], 79.1),
    ("7", "learnable", [], 75.5),
    ("7", "sinusoidal", ["pos_embedding=sinusoidal"], 75.5),
    # README of the official repository (REFERENCE_FACTS): FastInst-D3 R101 640, 53M, 112.9G.
    ("README", "D3 R101", ["backbone.name=resnet101"], 112.9),
]
# Reported besides the table: FastInst-D1 R50 at its own test size (README: 30M, 49.6 GFLOPs
# averaged at 576/777; 576x768 here) and the params of D1 / D3.
D1_576 = (["decoder_layers=1"], (576, 768), 49.6)

# What our variant is, for the rows whose layout the official code does not fix (printed
# beside the measured module deltas when the row's excess is large).
ROW_NOTES = {
    "single query update, D=6": (
        "Ours: 6 Mask2Former-order query layers (masked cross-attention of the queries to the "
        "fixed E3 pixel features, self-attention, FFN 1024) and, since the pixel features never "
        "change, one pixel projection shared by the 7 prediction stages. The official code has "
        "no switch for this variant, so where the paper's extra ~1 G sits is not known; a "
        "per-stage projection as in the dual path would add 6 x 0.57 G, far more than the gap."),
    "MSDeformAttn": (
        "Ours: 6 Deformable-DETR encoder layers (8 heads, 4 points, 3 levels, FFN 1024) on E5-E3. "
        "Without the grid sampler's count, which Mask2Former's CUDA op most likely hid from "
        "the paper's fvcore trace, the excess is ~0.3 G (0.2 %)."),
}


def build(overrides: list[str]) -> torch.nn.Module:
    overrides = [f"model.{o}" for o in overrides] + ["model.backbone.pretrained=none"]
    cfg = load_config(CONFIG, overrides)
    torch.manual_seed(0)
    return build_model(cfg.model).eval()


class WithPixelDecoderOutputs(torch.nn.Module):
    """``model(images)`` plus the pixel decoder's E3, E4, E5 as extra outputs.

    The FLOP count is a JIT trace, and a trace drops ops whose results reach no output.
    The pixel decoder always computes all three levels (eager PyTorch runs every conv), but
    some rows consume only some of them (query source E3 or E5 leaves E4 unused; zero /
    learnable queries leave E5 unused), so without this their output convs (1.27 G for E4,
    0.32 G for E5 at 640x864) would vanish from the count. The paper's rows count them: E3
    and E5 sources differ from E4 only by the proposal head, and zero / learnable / resize
    queries cost the same."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        levels: list[torch.Tensor] = []
        hook = self.model.pixel_decoder.register_forward_hook(lambda m, a, out: levels.extend(out))
        try:
            return self.model(images), levels
        finally:
            hook.remove()


def measure(overrides: list[str], size: tuple[int, int]) -> dict:
    model = build(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = count_flops(WithPixelDecoderOutputs(model), torch.randn(1, 3, *size), depth=3)
    params = count_params(model)
    per_module = {k.removeprefix("model."): v for k, v in report.per_module_gflops.items()
                  if k.startswith("model.")}
    return {"gflops": report.gflops, "params_M": params["total_M"],
            "per_module_gflops": {k: round(v, 4) for k, v in per_module.items()
                                  if k.count(".") == 0 or k.startswith(("layers.", "heads."))},
            "per_operator_gflops": {k: round(v, 4) for k, v in report.per_operator_gflops.items()},
            "uncounted_ops": report.uncounted_ops}


def area_split(f1: float, f2: float, area_ratio: float) -> tuple[float, float]:
    """(constant, area-proportional) GFLOPs from counts at two inputs: F = C + A * area."""
    a = (f1 - f2) / (1 - area_ratio)
    return f1 - a, a


def offset_model(split: tuple[float, float], s_eff: float, paper: float) -> dict:
    const, area = split
    predicted = const + s_eff * area
    return {"const_share_pct": round(100 * const / (const + area), 1),
            "area_model_residual_pct": round(100 * (predicted / paper - 1), 2)}


def module_deltas(row_measure: dict, base_measure: dict) -> list[tuple[str, float]]:
    """Top-level modules (and the grid sampler) whose GFLOPs differ from the baseline's."""
    mods, base = row_measure["per_module_gflops"], base_measure["per_module_gflops"]
    deltas = {m: mods.get(m, 0.0) - base.get(m, 0.0) for m in set(mods) | set(base) if "." not in m}
    grid = row_measure["per_operator_gflops"].get("grid_sampler", 0.0)
    if grid:
        deltas["of which grid_sampler"] = grid
    return sorted(((m, d) for m, d in deltas.items() if abs(d) >= 0.005), key=lambda kv: -abs(kv[1]))


def offset_notes(table: list[dict], cache: dict, summary: dict) -> list[str]:
    """Measured explanation of the rows whose offset differs most from the baseline's: is it
    the input size (FLOPs that do not scale with the input), or which module, how much."""
    base_offset = summary["baseline_offset_pct"]
    lines = [f"Input size does not explain the spread: counted at {summary['input']} and "
             f"{summary['size2']}, at most {summary['max_const_share_pct']:.1f} % of any row's "
             f"GFLOPs do not scale with the input area (`const_share_pct`), and the baseline "
             f"fits the paper at {summary['paper_mean_area_fraction']:.3f} x our input area "
             f"(the paper averages 100 smaller COCO inputs). A row's offset therefore differs "
             f"only where a module differs from the paper's. `excess_gflops` = ours - paper x "
             f"(1 + the baseline's offset {base_offset:+.2f} %): what a row has more (+) or less "
             f"(-) than the paper's figure implies, at {summary['input']}.", ""]
    seen = set()
    for row in sorted(table, key=lambda r: -abs(r["excess_gflops"])):
        if row["overrides"] in seen or abs(row["excess_gflops"]) < 0.5:
            continue
        seen.add(row["overrides"])
        key = tuple(sorted(o.removeprefix("model.") for o in row["overrides"].split()))
        deltas = module_deltas(cache[key], cache[()])
        paper_delta = (row["gflops_paper"] - BASELINE_PAPER) * (1 + base_offset / 100)
        lines.append(
            f"- {row['table']} {row['row']}: offset {row['offset_pct']:+.2f} %, excess "
            f"{row['excess_gflops']:+.2f} G. Versus the baseline ours changes "
            + ", ".join(f"{m} {d:+.2f} G" for m, d in deltas)
            + f"; the paper's change, at our input, is {paper_delta:+.2f} G."
            + (f" {ROW_NOTES[row['row']]}" if row["row"] in ROW_NOTES else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", help="comma-separated tables to run (default: all), e.g. 6a,6b")
    p.add_argument("--height", type=int, default=640)
    p.add_argument("--width", type=int, default=864)
    p.add_argument("--size2", default="576x768",
                   help="second input HxW for the area/constant split (the offset analysis)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = (args.height, args.width)
    tables = set(args.rows.split(",")) if args.rows else None
    rows = [r for r in ROWS if tables is None or r[0] in tables]

    try:
        size2 = parse_size(args.size2, "--size2")
    except UserError as e:
        p.error(str(e))
    area_ratio = size2[0] * size2[1] / (size[0] * size[1])
    cache: dict[tuple, dict] = {}
    t0 = time.time()
    for key in [()] + [tuple(sorted(r[2])) for r in rows]:
        if key not in cache:
            cache[key] = measure(list(key), size)
            second = measure(list(key), size2)
            cache[key]["at_size2"] = {"gflops": second["gflops"],
                                      "per_module_gflops": second["per_module_gflops"]}
            print(f"[{time.time() - t0:6.0f}s] {list(key) or 'baseline'}: "
                  f"{cache[key]['gflops']:.2f} GFLOPs", flush=True)
    base = cache[()]["gflops"]
    split = {k: area_split(v["gflops"], v["at_size2"]["gflops"], area_ratio)
             for k, v in cache.items()}
    c_base, a_base = split[()]
    s_eff = (BASELINE_PAPER - c_base) / a_base  # the paper's mean input area / ours

    table = []
    for tab, label, overrides, paper in rows:
        ours = cache[tuple(sorted(overrides))]
        ratio_ours, ratio_paper = ours["gflops"] / base, paper / BASELINE_PAPER
        table.append({
            "table": tab, "row": label, "overrides": " ".join(f"model.{o}" for o in overrides),
            "gflops_ours": round(ours["gflops"], 2), "gflops_paper": paper,
            "ratio_ours": round(ratio_ours, 4), "ratio_paper": round(ratio_paper, 4),
            "ratio_error_pct": round(100 * (ratio_ours / ratio_paper - 1), 2),
            "offset_pct": round(100 * (ours["gflops"] / paper - 1), 2),
            "params_M": round(ours["params_M"], 2),
            **offset_model(split[tuple(sorted(overrides))], s_eff, paper),
        })
    base_offset = base / BASELINE_PAPER - 1
    for r in table:
        r["excess_gflops"] = round(r["gflops_ours"] - r["gflops_paper"] * (1 + base_offset), 2)
    d1 = measure(D1_576[0], D1_576[1])
    d3 = cache[()]
    d1_params = cache.get(("decoder_layers=1",)) or measure(["decoder_layers=1"], size)
    offsets = [r["offset_pct"] for r in table]
    summary = {
        "input": f"1x3x{size[0]}x{size[1]}",
        "baseline_gflops_ours": round(base, 2), "baseline_gflops_paper": BASELINE_PAPER,
        "max_abs_ratio_error_pct": max(abs(r["ratio_error_pct"]) for r in table),
        "offset_pct_min": min(offsets), "offset_pct_max": max(offsets),
        "offset_spread_points": round(max(offsets) - min(offsets), 2),
        "params_M_D3": round(d3["params_M"], 2), "params_M_D3_paper": 34.0,
        "params_M_D1": round(d1_params["params_M"], 2), "params_M_D1_paper": 30.0,
        "d1_gflops_576x768": round(d1["gflops"], 2), "d1_gflops_paper_576": D1_576[2],
        "d1_offset_pct": round(100 * (d1["gflops"] / D1_576[2] - 1), 2),
        "size2": f"{size2[0]}x{size2[1]}", "area_ratio": round(area_ratio, 4),
        "paper_mean_area_fraction": round(s_eff, 4),
        "max_const_share_pct": max(r["const_share_pct"] for r in table),
        "baseline_offset_pct": round(100 * base_offset, 2),
    }

    fields = list(table[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(OUT.with_suffix(".csv"), buf.getvalue())
    md = [f"# FastInst GFLOPs vs paper (R50, eval, input {summary['input']})", "",
          "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    md += ["| " + " | ".join(str(r[f]) for f in fields) + " |" for r in table]
    md += ["", "## Summary", ""] + [f"- {k}: {v}" for k, v in summary.items()]
    md += ["", "## Why the offset is not uniform", ""] + offset_notes(table, cache, summary)
    prov = provenance("cpu")
    md += ["", f"git commit {prov['git_commit']}, torch {prov['torch']}, {prov['hardware']}", ""]
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(md))
    atomic_write_json(OUT.with_suffix(".json"), {
        "summary": summary, "rows": table,
        "per_config": {" ".join(k) or "baseline": v for k, v in cache.items()},
        "d1_576x768": d1, "provenance": prov})
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
