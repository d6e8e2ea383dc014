"""`rtinst bench`: FLOPs, parameters and latency of a model at paper scale (random weights)."""

from __future__ import annotations

import argparse
import re
from typing import Callable

import torch
from torch import nn

from rtinst.cli.config import add_override_argument
from rtinst.errors import UserError
from rtinst.models.backbones import ResNetBackbone

CONVENTIONS_HELP = """\
Conventions
  FLOPs    fvcore FlopCountAnalysis, 1 fused multiply-add = 1 flop, batch 1, eval mode.
           'detectron2' (default, as FastInst/SparseInst report): batch_norm and cheap
           elementwise ops ignored as detectron2 does; deform_conv2d, attention (sdpa,
           baddbmm) and grid_sample counted. 'fvcore': plain fvcore defaults.
           Ops nobody counts are listed as 'uncounted', never dropped silently.
  params   all parameters (shared ones once), in millions, per top-level module.
  latency  batch 1, eval mode, inference_mode, --warmup untimed runs, then --iters timed
           runs; median / p90 / mean ms, FPS = 1000 / mean. On CUDA synchronize after each
           run; --fp16 times a .half() model (CUDA only). On CPU the torch thread count
           (--threads, default: torch's current) is fixed and recorded; CPU numbers are
           labelled 'CPU latency' and are not comparable with the papers' GPU FPS.
           --runtime onnxruntime: the ONNX export in onnxruntime beside eager PyTorch.
  breakdown  per-part latency (top-level modules; the rest is 'other') with hooks that
           synchronize around each part, as in SparseInst Table 8.
Weights are random: costs depend on the architecture and input size only.
"""


# Backbone name -> builder of an nn.Module taking one (1, 3, H, W) image tensor. Trainable
# BN so that plain fvcore sees (and counts) batch_norm, as in the 45.29 vs 45.04 check.
BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet50": lambda: ResNetBackbone(50, frozen_bn=False),
    "resnet101": lambda: ResNetBackbone(101, frozen_bn=False),
}


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'640x864' -> (640, 864) (height x width); '640' -> (640, 640). ``option`` names the
    flag in the error."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
        raise UserError(f"{option}: expected HxW such as 640x864, got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def _build(args: argparse.Namespace) -> nn.Module:
    """A backbone by name (--model) or a full detector from a run config (--config)."""
    if args.config is not None or args.override:
        from rtinst.config import load_config
        from rtinst.models import build_model

        cfg = load_config(args.config, args.override)
        args.model = f"{cfg.model.name} ({args.config or 'defaults'}{''.join(' ' + o for o in args.override)})"
        return build_model(cfg.model)
    if args.model is None:
        raise UserError("give --model NAME (a backbone) or --config CONFIG (a detector)")
    if args.model not in BACKBONES:
        raise UserError(f"--model: unknown model {args.model!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[args.model]()


def _image(args: argparse.Namespace) -> torch.Tensor:
    return torch.randn(1, 3, *parse_size(args.size))


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(headers, *cells)]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _ops(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counts.items()) or "none"


def _print_flops(name: str, report) -> None:
    shape = "x".join(map(str, report.input_size[0])) if report.input_size else "?"
    print(f"{name} @ {shape}: {report.gflops:.2f} GFLOPs "
          f"({report.convention} convention, 1 multiply-add = 1 flop)")
    top = {k: v for k, v in report.per_module_gflops.items() if "." not in k}
    print(_table(["module", "GFLOPs", "%"],
                 [[k, v, 100 * v / report.gflops if report.gflops else 0.0] for k, v in top.items()]))
    print(_table(["operator", "GFLOPs"], [[k, v] for k, v in report.per_operator_gflops.items()]))
    print(f"ignored by convention: {_ops(report.ignored_ops)}")
    print(f"uncounted (no handler): {_ops(report.uncounted_ops)}")


def _print_params(name: str, params: dict) -> None:
    print(f"{name}: {params['total_M']:.2f} M parameters ({params['trainable_M']:.2f} M trainable)")
    print(_table(["module", "params (M)"], [[k, v] for k, v in params["per_module_M"].items()]))


def _print_latency(name: str, rec) -> None:
    print(f"{name} {rec.kind} on {rec.provenance['hardware']}, {rec.precision}, "
          f"{rec.threads} threads, input {rec.input_size}, {rec.iters} runs")
    print(_table(["model", "median ms", "p90 ms", "mean ms", "FPS"],
                 [[name, rec.median_ms, rec.p90_ms, rec.mean_ms, rec.fps]]))


def _print_breakdown(name: str, rec) -> None:
    print(f"{name} {rec.kind} breakdown on {rec.provenance['hardware']}, {rec.precision}, "
          f"{rec.threads} threads, {rec.iters} runs, total {rec.total_ms:.2f} ms")
    print(_table(["part", "ms", "%"], [[k, v, rec.parts_pct[k]] for k, v in rec.parts_ms.items()]))


def _write_out(path: str | None, record: dict, device: str = "cpu") -> None:
    """``--out``: the record with the machine's provenance, written atomically."""
    if path:
        from rtinst.io import atomic_write_json
        from rtinst.provenance import provenance

        atomic_write_json(path, {**record, "provenance": provenance(device)})
        print(f"wrote {path}")


def _finish(args: argparse.Namespace, record: dict) -> int:
    _write_out(args.out, {"model": args.model, "size": list(parse_size(args.size)), **record},
               args.device)
    return 0


def _flops(args: argparse.Namespace, model: nn.Module) -> dict:
    from rtinst.engine.flops import count_flops

    device = args.device
    model = model.to(device) if device != "cpu" else model
    report = count_flops(model, _image(args).to(device), convention=args.convention)
    _print_flops(args.model, report)
    return {"flops": report.to_dict()}


def _params(args: argparse.Namespace, model: nn.Module) -> dict:
    from rtinst.engine.flops import count_params

    params = count_params(model)
    _print_params(args.model, params)
    return {"params": params}


def _timing_kwargs(args: argparse.Namespace) -> dict:
    return dict(device=args.device, warmup=args.warmup, iters=args.iters, fp16=args.fp16,
                threads=args.threads)


def _engine_postprocess(args: argparse.Namespace, model: nn.Module):
    """For detectors: the engine's mask post-processing to the image size (papers time it)."""
    if not hasattr(model, "backbone") or args.model in BACKBONES:
        return None
    from rtinst.engine.inference import postprocess_masks

    size = parse_size(args.size)

    def post(outputs):
        for out in outputs:
            postprocess_masks(out["mask_probs"], size, size, size, out.get("mask_threshold", 0.5))

    return post


def _latency(args: argparse.Namespace, model: nn.Module) -> dict:
    from rtinst.engine.latency import measure_latency

    runtime = getattr(args, "runtime", "torch")
    if runtime == "onnxruntime":
        _check_onnx_args(args, model)
    rec = measure_latency(model, _image(args), postprocess=_engine_postprocess(args, model),
                          **_timing_kwargs(args))
    _print_latency(args.model, rec)
    record = {"latency": {**rec.to_dict(), "runtime": f"PyTorch {torch.__version__} eager"}}
    if runtime == "onnxruntime":
        record["latency_onnxruntime"] = _onnx_latency(args, model, rec.threads)
    return record


def _check_onnx_args(args: argparse.Namespace, model: nn.Module) -> None:
    from rtinst.engine.export import check_exportable

    if args.model in BACKBONES:
        raise UserError("--runtime onnxruntime times a detector: give --config, not --model")
    if args.fp16:
        raise UserError("--runtime onnxruntime times the fp32 export; drop --fp16")
    check_exportable(model)


def _onnx_latency(args: argparse.Namespace, model: nn.Module, threads: int) -> dict:
    """The same model exported (fixed at --size, batch 1: the best case for onnxruntime) and
    timed with the same inputs, post-processing and thread count as the eager run."""
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    from rtinst.engine.export import OnnxDetector, export_onnx
    from rtinst.engine.latency import measure_latency

    size = parse_size(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(model, Path(tmp) / "model.onnx", example_size=size, dynamic=False)
        detector = OnnxDetector(report.path, model, device=args.device, threads=threads)
        rec = measure_latency(detector, _image(args), postprocess=_engine_postprocess(args, model),
                              **{**_timing_kwargs(args), "threads": threads})
    provider = detector.session.get_providers()[0]
    _print_latency(f"{args.model} [onnxruntime {provider}]", rec)
    return {**rec.to_dict(), "runtime": f"onnxruntime {ort.__version__} {provider}, "
            f"{threads} intra-op threads", "export": report.to_dict()}


def _breakdown(args: argparse.Namespace, model: nn.Module) -> dict:
    from rtinst.engine.latency import module_breakdown

    rec = module_breakdown(model, _image(args), postprocess=_engine_postprocess(args, model),
                           **_timing_kwargs(args))
    _print_breakdown(args.model, rec)
    return {"breakdown": rec.to_dict()}


def _handler(*steps: Callable) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        parse_size(args.size)  # fail fast, before building a model
        model = _build(args)
        record: dict = {}
        for step in steps:
            record.update(step(args, model))
        return _finish(args, record)

    return run


def _nms_ablation(args: argparse.Namespace) -> int:
    from rtinst.diagnostics.nms_ablation import nms_ablation

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    table = nms_ablation(args.run, kinds, args.max_images, args.runs_dir, args.dump,
                         progress=not args.quiet)
    cols = ["nms", "ap", "ap50", "ap75", "nms_ms_per_image", "nms_thread_cpu_ms_per_image"]
    print(_table(cols, [[r[c] if isinstance(r[c], str) else f"{r[c]:.2f}" for c in cols]
                        for r in table.to_dict("records")]))
    print(f"table: {args.run}/nms_ablation.json (records of the other variants: "
          f"{', '.join(table['record'])})")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from rtinst.config import load_config
    from rtinst.diagnostics.probe import detection_scale_probe

    if args.run:
        return _run_probe(args)
    overrides = list(args.override or [])
    if args.weights:
        overrides.append(f"model.backbone.pretrained={args.weights}")
    cfg = load_config(args.config, overrides)
    record = detection_scale_probe(cfg.model.backbone, cfg.data, args.train_images, args.val_images)
    _print_probe(record, record["init"])
    _write_out(args.out, {**record, "config": args.config})
    return 0


def _overfit(args: argparse.Namespace) -> int:
    from rtinst.config import load_config
    from rtinst.diagnostics.overfit import overfit

    cfg = load_config(args.config, args.override)
    record = overfit(cfg, args.images, args.steps, args.eval_every, progress=not args.quiet)

    def losses(terms: dict[str, float]) -> str:  # FastInst has ~20 terms: their sum only
        total = f"total={sum(terms.values()):.3f}"
        return total if len(terms) > 6 else total + " " + " ".join(f"{k}={v:.3f}" for k, v in terms.items())

    rows = [[p["step"], p["seconds"], losses(p["losses"]), f"{p['ap_train_padding']:.1f}",
             f"{p['ap_single']:.1f}"] for p in record["curve"]]
    print(f"{record['model']} ({args.config}): {record['num_images']} images, "
          f"{record['num_instances']} instances")
    print(_table(["step", "s", "losses", "AP (train padding)", "AP (one image)"], rows))
    _write_out(args.out, {**record, "config": args.config, "overrides": args.override or []},
               record["device"])
    return 0


def _iam(args: argparse.Namespace) -> int:
    from rtinst.diagnostics.iam_localization import iam_localization

    record = iam_localization(args.run, args.checkpoint, args.train_images, args.val_images,
                              args.data_root)
    rows = [[k, f"{record[k]['median']:.3f}", f"{record[k]['mean']:.3f}"]
            for k in ("mass_in_object", "area_fraction", "concentration", "support")]
    print(f"{record['run']} ({record['checkpoint']}): {record['val_instances']} matched val "
          f"instances")
    print(_table(["IAM", "median", "mean"], rows))
    print(f"class: head accuracy {record['head_accuracy']:.3f}, linear probe of the pooled "
          f"features {record['probe_accuracy']:.3f}, majority class {record['majority']:.3f}")
    tp = record["true_positives"]
    print(f"true positives (mask IoU >= 0.5, same class): {tp['count']} of {tp['detections']} "
          "detections; their most concentrated group map among those that switch on:")
    if tp["count"]:
        print(_table(["IAM", "median", "mean"],
                     [[k, f"{tp[k]['median']:.3f}", f"{tp[k]['mean']:.3f}"] for k in
                      ("mass_in_object", "mass_near_object", "concentration", "support",
                       "active_groups", "mass_in_object_any_group", "mass_in_object_group_mean")]))
        print("by the object's size in map cells (median):")
        print(_table(["cells", "count", "mass_in_object", "mass_near_object"],
                     [[f"{b['cells'][0]}-{b['cells'][1] or ''}", b["count"],
                       "-" if b["mass_in_object"] is None else f"{b['mass_in_object']:.3f}",
                       "-" if b["mass_near_object"] is None else f"{b['mass_near_object']:.3f}"]
                      for b in tp["by_object_cells"]]))
    _write_out(args.out, record)
    return 0


def _oracle_iam(args: argparse.Namespace) -> int:
    from rtinst.config import load_config
    from rtinst.diagnostics.oracle_iam import oracle_iam

    cfg = load_config(args.config, args.override)
    record = oracle_iam(cfg, args.steps, args.work_dir, progress=not args.quiet)
    m = record["metrics"]
    print(f"SparseInst with ground-truth instance maps ({args.config}, "
          f"{record['train_iterations']} steps, {record['step_time_s']:.2f} s/step): "
          f"mask AP {m['ap']:.2f}, AP50 {m['ap50']:.2f}"
          + (f", TIDE Cls {m['tide_cls']:.2f} Loc {m['tide_loc']:.2f}" if "tide_cls" in m else ""))
    print("losses (last 100 steps): " + " ".join(f"{k}={v:.3f}" for k, v in record["final_losses"].items()))
    _write_out(args.out, {**record, "config": args.config, "overrides": args.override or []},
               record["device"])
    return 0


def _print_probe(record: dict, source: str) -> None:
    acc = record["accuracy"]
    buckets = ["all", "small", "medium", "large"]
    print(f"{source}: {record['train_objects']} train / {record['val_objects']} val objects, "
          f"chance {record['chance']:.2f}")
    print(_table(["features"] + buckets, [[name] + ["-" if acc[name][b] is None else f"{acc[name][b]:.3f}"
                                                   for b in buckets] for name in acc]))


def _run_probe(args: argparse.Namespace) -> int:
    from rtinst.diagnostics.probe import run_stage_probe

    if args.weights or args.override:
        raise UserError("bench probe --run probes the run's own weights and config: "
                        "drop --weights / -o")
    stages = tuple(s for s in args.stages.split(",") if s) if args.stages else None
    record = run_stage_probe(args.run, stages, args.train_images, args.val_images, args.data_root)
    _print_probe(record, f"{record['run']} ({record['model']})")
    _write_out(args.out, record)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="FLOPs, parameters and latency of a model",
        description="Cost of a model at paper scale (random weights).\n\n" + CONVENTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")

    common = argparse.ArgumentParser(add_help=False)
    target = common.add_mutually_exclusive_group()
    target.add_argument("--model", choices=sorted(BACKBONES), metavar="NAME",
                        help=f"a backbone: {', '.join(sorted(BACKBONES))}")
    target.add_argument("--config", metavar="CONFIG.yaml",
                        help="a detector from a run config (with -o overrides), e.g. "
                        "--config cfg.yaml -o model.decoder_layers=1")
    add_override_argument(common)
    common.add_argument("--size", default="640x864", metavar="HxW",
                        help="input image height x width (default 640x864)")
    common.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    common.add_argument("--out", metavar="FILE.json", help="also write the record as JSON")

    flops = argparse.ArgumentParser(add_help=False)
    flops.add_argument("--convention", default="detectron2", choices=["detectron2", "fvcore"],
                       help="which ops count (default detectron2; see `rtinst bench --help`)")

    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument("--fp16", action="store_true", help="time a .half() model (CUDA only)")
    timing.add_argument("--threads", type=int, help="torch threads during timing "
                        "(default: torch's current count; recorded either way)")
    timing.add_argument("--iters", type=int, default=50, help="timed runs (default 50)")
    timing.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")

    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"],
                        help="latency only: onnxruntime also exports the detector (fixed at "
                        "--size) and times it beside PyTorch eager, same inputs, threads and "
                        "post-processing (CPU provider, CUDA provider with --device cuda)")

    commands = [
        ("flops", "GFLOPs per module and operator", [common, flops], (_flops,)),
        ("params", "parameter counts per top-level module", [common], (_params,)),
        ("latency", "batch-1 latency and FPS", [common, timing, runtime], (_latency,)),
        ("breakdown", "latency per top-level module (SparseInst Table 8 style)",
         [common, timing], (_breakdown,)),
        ("all", "flops, params and latency in one record", [common, flops, timing, runtime],
         (_flops, _params, _latency)),
    ]
    p = sub.add_parser("nms", help="a trained YOLACT run with every NMS variant: AP and NMS ms/image",
                       description="YOLACT Table 2a on a trained run: evaluate its weights with "
                       "standard, Fast, Cluster and Matrix NMS (mask AP) and time NMS alone per "
                       "image on the model's own decoded boxes and scores. Writes "
                       "RUN/nms_ablation.json and an evaluation-only run record per variant.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished YOLACT run folder")
    p.add_argument("--kinds", default="standard,fast,cluster,matrix",
                   help="comma-separated NMS variants (default: all four)")
    p.add_argument("--max-images", type=int, help="val images (default: the run's eval.max_images)")
    p.add_argument("--runs-dir", help="where the variants' records go (default: beside the run)")
    p.add_argument("--dump", metavar="FILE.pt", help="also save the captured NMS inputs "
                   "(for tests/benchmarks/bench_nms.py --scores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_nms_ablation)

    p = sub.add_parser("probe", help="linear probe of a backbone init (or a trained run) at "
                       "detection scale",
                       description="Fit a linear classifier on the mask-averaged frozen backbone "
                       "features of the GT objects of full train images and score it on val "
                       "objects (per level, per COCO area bucket): how much class information the "
                       "initialization gives the detection heads at the objects' own sizes. "
                       "With --run: the same probe on a trained run's feature maps, stage by "
                       "stage (backbone, neck, head branches), on the run's own data.")
    p.add_argument("--config", default="rtinst/configs/yolact/tiny.yaml",
                   help="run config: its backbone and data (default: the YOLACT tiny preset)")
    add_override_argument(p)
    p.add_argument("--weights", help="backbone weights to probe (default: the config's pretrained)")
    p.add_argument("--run", metavar="RUN_DIR", help="probe a trained run's stages instead")
    p.add_argument("--stages", help="with --run: comma-separated module paths (default per "
                   "model, e.g. backbone,encoder,decoder.inst_branch.convs for SparseInst)")
    p.add_argument("--data-root", help="with --run: replaces the run's data.root")
    p.add_argument("--train-images", type=int, default=400, help="images for fitting (default 400)")
    p.add_argument("--val-images", type=int, default=200, help="images for scoring (default 200)")
    p.add_argument("--out", metavar="FILE.json", help="also write the record as JSON")
    p.set_defaults(func=_probe)

    p = sub.add_parser("overfit", help="train on a few fixed train images and score AP on them",
                       description="Overfit check: the config's model, optimizer, warm-up and "
                       "clipping on one fixed batch of the first N train images (test-time "
                       "resize, no flip), with losses and mask AP on the same images every "
                       "--eval-every steps. High AP here and low AP on val = limited by what "
                       "the budget learns from the data, not by a bug.")
    p.add_argument("--config", required=True, metavar="CONFIG.yaml", help="run config")
    add_override_argument(p)
    p.add_argument("--images", type=int, default=8, help="fixed train images (default 8)")
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    p.add_argument("--eval-every", type=int, default=100, help="AP every N steps (default 100)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", metavar="FILE.json", help="also write the record as JSON")
    p.set_defaults(func=_overfit)

    p = sub.add_parser("iam", help="are a SparseInst run's instance activation maps on their "
                       "objects? (and the class information in the pooled features)",
                       description="For the predictions the loss matches to each GT object of "
                       "val images: the share of the IAM inside the object (vs the object's "
                       "share of the image), the map's effective support, the class head's "
                       "accuracy, and a linear probe of the pooled instance features fitted on "
                       "train images. Uniform maps = features that cannot carry the class. "
                       "Beside them, for the final detections that are true positives (same "
                       "class, mask IoU >= 0.5, COCO's greedy matching), the most concentrated "
                       "group map's share inside the object and its concentration (Figure 4).")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a SparseInst run folder")
    p.add_argument("--checkpoint", help="a file in RUN_DIR/checkpoints (e.g. snapshot_325it.pt) "
                   "or a path (default: last)")
    p.add_argument("--data-root", help="replaces the run's data.root")
    p.add_argument("--train-images", type=int, default=400, help="images for the probe fit (default 400)")
    p.add_argument("--val-images", type=int, default=200, help="images measured (default 200)")
    p.add_argument("--out", metavar="FILE.json", help="also write the record as JSON")
    p.set_defaults(func=_iam)

    p = sub.add_parser("oracle-iam", help="SparseInst trained and evaluated with ground-truth "
                       "masks as instance maps: is IAM localization what limits a run?",
                       description="Trains the config's SparseInst with the first K instance "
                       "maps of each image set to its K ground-truth masks (map k matched to "
                       "object k; the other maps learned, as negatives) and evaluates it the "
                       "same way on val. Its AP is what the rest of the model learns in the "
                       "budget once localization is solved (an upper bound).")
    p.add_argument("--config", required=True, help="a SparseInst config YAML")
    add_override_argument(p)
    p.add_argument("--steps", type=int, help="training steps (default: the config's max_iters)")
    p.add_argument("--work-dir", help="keep the scratch run here (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", metavar="FILE.json", help="also write the record as JSON")
    p.set_defaults(func=_oracle_iam)

    for name, help_text, parents, steps in commands:
        p = sub.add_parser(name, help=help_text, parents=parents, description=help_text +
                           ".\n\n" + CONVENTIONS_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=_handler(*steps))
