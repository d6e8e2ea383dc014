"""`rtinst export onnx`: a detector's network to an ONNX file (post-processing stays in Python)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from rtinst.cli.config import add_override_argument

DESCRIPTION = """\
Export a detector's network, from images to its raw outputs, as ONNX (torch.export, opset 18).

In the graph: backbone, neck, heads; FastInst's IA-guided query selection and masked
attention; YOLACT's anchors (computed from the input size and returned as an output).
In Python (rtinst.engine.export.OnnxDetector): each model's own post-processing on the
onnxruntime outputs (FastInst top-k and mask scores, SparseInst thresholds and mask
rescoring, YOLACT box decoding and NMS), so detections match eager PyTorch.

Batch, height and width are dynamic for all three models (the file's metadata records
which dimensions are; --static fixes them at --size, batch 1). Deformable convolutions
(model.backbone.dcn_stages, model.deform_last_conv) have no ONNX operator and are refused.

--checkpoint: a run checkpoint (RUN/checkpoints/last.pt) or a plain state dict; without
it the weights are random (fine for latency, meaningless for predictions).
"""


def _load_model(config: str, overrides: list[str], checkpoint: str | None):
    from rtinst.config import load_config
    from rtinst.engine.checkpoint import load_checkpoint
    from rtinst.errors import UserError
    from rtinst.models import build_model

    cfg = load_config(config, overrides)
    model_cfg = cfg.model
    if checkpoint:  # every weight comes from the checkpoint: no backbone file needed
        model_cfg = replace(model_cfg, backbone=replace(model_cfg.backbone, pretrained="none"))
    from rtinst.engine.export import check_config

    check_config(model_cfg)  # a refused switch fails before the model is built
    model = build_model(model_cfg)
    if checkpoint:
        state = load_checkpoint(checkpoint)
        state = state.get("model", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise UserError(f"{checkpoint}: weights do not fit {config} ({first})") from None
    return model.eval()


def _onnx(args: argparse.Namespace) -> int:
    from rtinst.cli.bench import parse_size
    from rtinst.engine.export import export_onnx

    size = parse_size(args.size)
    model = _load_model(args.config, args.override, args.checkpoint)
    if not args.checkpoint:
        print("note: no --checkpoint, exporting random weights (latency only)")
    report = export_onnx(model, args.out, example_size=size, dynamic=not args.static,
                         verify=not args.no_verify)
    dyn = ", ".join(k for k, v in report.dynamic.items() if v) or "none (fixed at --size)"
    print(f"wrote {report.path}: {report.model}, outputs {', '.join(report.outputs)}; "
          f"dynamic: {dyn} ({report.export_s:.1f} s)")
    if report.max_abs_diff:
        worst = max(report.max_abs_diff.values())
        print(f"onnxruntime vs PyTorch at {size[0]}x{size[1]}: max abs difference {worst:.2e} "
              f"({', '.join(f'{k} {v:.1e}' for k, v in report.max_abs_diff.items())})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a detector (ONNX)",
                                   description="Export a detector for other runtimes.")
    sub = parser.add_subparsers(dest="export_command", metavar="FORMAT")
    p = sub.add_parser("onnx", help="the network to its raw outputs as ONNX",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="CONFIG.yaml",
                   help="run config (a run's config.yaml or a preset)")
    add_override_argument(p)
    p.add_argument("--checkpoint", metavar="FILE.pt",
                   help="weights (default: random, for latency only)")
    p.add_argument("--out", required=True, metavar="MODEL.onnx", help="output file")
    p.add_argument("--size", default="128x160", metavar="HxW",
                   help="example input size for tracing and the check (default 128x160; "
                   "with --static the only size the file accepts)")
    p.add_argument("--static", action="store_true",
                   help="fix batch 1 and --size instead of dynamic shapes")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the onnxruntime vs PyTorch check on the example")
    p.set_defaults(func=_onnx)
