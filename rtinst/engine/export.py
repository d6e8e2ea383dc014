"""ONNX export of the three detectors: the network to its raw outputs, post-processing in Python.

What is in the graph (``RawNetwork``, one tuple of tensors per model):

- FastInst: ``class_logits`` (B, N_a, K+1) and ``mask_logits`` (B, N_a, H/8, W/8) of the last
  stage. The IA-guided query selection (softmax, 3x3 local-max filter, top-N_a), the gathers
  and the masked attention are all in the graph (TopK, GatherElements, Where): they have
  fixed output sizes, so they export.
- SparseInst: ``logits`` (B, N, K), ``objectness`` (B, N) when the model has the head, and
  ``masks`` (B, N, H/4, W/4) logits.
- YOLACT: ``class_logits`` (B, A, K+1), ``box_deltas`` (B, A, 4), ``mask_coefficients``
  (B, A, k) (or the fc-mask logits), ``prototypes`` (B, k, H/4, W/4) (not for fc-mask) and
  ``anchors`` (A, 4): the priors depend on the image size, so the graph computes them from
  its input and returns them.

Outside the graph (``OnnxDetector``): the model's own post-processing on those tensors, the
same Python code as eager inference (FastInst's top-k over queries x classes and mask scores,
SparseInst's thresholds and mask rescoring, YOLACT's box decoding, NMS and mask assembly).
NMS and thresholding have data-dependent output sizes and are not exported.

Exporter: ``torch.export`` (the dynamo exporter of ``torch.onnx``). The TorchScript exporter
cannot trace SparseInst's PPM (``adaptive_avg_pool2d`` of a dynamic input size) and needs
per-op fixes elsewhere; ``torch.export`` handles all three with symbolic batch, height and
width. ``torch.onnx.export`` silently falls back to a fixed-shape graph when a dynamic shape
cannot be kept, so this module runs ``torch.export.export`` itself (``Dim.AUTO``), reads
which dimensions stayed symbolic and records them; a fixed one is a clear error at run time.

Deformable convolutions (``torchvision::deform_conv2d``) have no ONNX operator: such a model
is refused before export, naming the switch.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from rtinst.errors import UserError
from rtinst.io import atomic_path

OPSET = 18
INPUT_NAME = "images"
EXAMPLE_SIZE = (128, 160)  # (H, W) of the example input; batch 2 (export specializes 0 and 1)
METADATA_KEY = "rtinst"


def deformable_switches(cfg) -> list[str]:
    """The config switches of ``cfg`` (a model config) that put deformable convs in the model."""
    found = []
    if list(getattr(cfg.backbone, "dcn_stages", []) or []):
        found.append(f"model.backbone.dcn_stages={list(cfg.backbone.dcn_stages)}")
    if getattr(cfg, "deform_last_conv", False):
        found.append("model.deform_last_conv=true")
    return found


def check_config(cfg) -> None:
    """Refuse a model config that ONNX cannot express (deformable convs), before building it."""
    if cfg.name not in ("fastinst", "sparseinst", "yolact"):
        raise UserError(f"model.name={cfg.name!r}: no ONNX export for this model")
    switches = deformable_switches(cfg)
    if switches:
        raise UserError(f"{', '.join(switches)}: deformable convolutions "
                        "(torchvision::deform_conv2d) have no ONNX operator; export the model "
                        "without this switch")


def check_exportable(model: nn.Module) -> None:
    """Refuse what ONNX cannot express, before any tracing."""
    check_config(model.cfg)
    for name, module in model.named_modules():
        if type(module).__name__ in ("DeformConv2d", "ModulatedDeformConv2d", "DeformConv3x3"):
            raise UserError(f"module {name}: deformable convolution (torchvision::deform_conv2d) "
                            "has no ONNX operator")


def output_names(model: nn.Module) -> list[str]:
    name = model.cfg.name
    if name == "fastinst":
        return ["class_logits", "mask_logits"]
    if name == "sparseinst":
        has_obj = model.cfg.objectness != "off"
        return ["logits", *(["objectness"] if has_obj else []), "masks"]
    if name == "yolact":
        return ["class_logits", "box_deltas", "mask_coefficients",
                *([] if model.fc_mask else ["prototypes"]), "anchors"]
    raise UserError(f"model.name={name!r}: no ONNX export for this model")


class AdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two averaging matrices, ``A_h x A_w^T``: ONNX has no
    adaptive pooling, and torch.export's decomposition of it bakes the example's bin
    boundaries into gather indices (wrong for any other size). Bin i of n over length L
    covers ``[floor(i L / n), ceil((i + 1) L / n))``, as PyTorch's kernel."""

    def __init__(self, output_size):
        super().__init__()
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
        self.output_size = tuple(int(s) for s in size)

    @staticmethod
    def _matrix(length, bins: int, like: torch.Tensor) -> torch.Tensor:
        i = torch.arange(bins, device=like.device)[:, None]
        j = torch.arange(length, device=like.device)[None]
        start = torch.div(i * length, bins, rounding_mode="floor")
        end = torch.div((i + 1) * length + bins - 1, bins, rounding_mode="floor")
        inside = ((j >= start) & (j < end)).to(like.dtype)
        return inside / inside.sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ah = self._matrix(x.shape[-2], self.output_size[0], x)
        aw = self._matrix(x.shape[-1], self.output_size[1], x)
        return ah @ x @ aw.T


def _export_friendly(detector: nn.Module) -> nn.Module:
    """A copy of ``detector`` whose adaptive pooling exports for any input size."""
    detector = copy.deepcopy(detector).eval()
    for name, module in list(detector.named_modules()):
        if isinstance(module, nn.AdaptiveAvgPool2d):
            parent, _, leaf = name.rpartition(".")
            setattr(detector.get_submodule(parent), leaf, AdaptiveAvgPool2d(module.output_size))
    return detector


class RawNetwork(nn.Module):
    """``detector`` (eval mode) from images to the tuple of raw outputs named by
    :func:`output_names` (see the module docstring). ``export_friendly``: run on a copy
    whose adaptive pooling exports (the same values, summed in another order)."""

    def __init__(self, detector: nn.Module, export_friendly: bool = False):
        super().__init__()
        check_exportable(detector)
        self.detector = _export_friendly(detector) if export_friendly else detector
        self.names = output_names(detector)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, name = self.detector, self.detector.cfg.name
        if name == "fastinst":
            last = m.forward_raw(images)["stages"][-1]
            return last["class_logits"], last["mask_logits"]
        if name == "sparseinst":
            out = m.forward_raw(images)
            return tuple(out[k] for k in self.names)
        return _yolact_raw(m, images)


def _yolact_raw(m: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    from rtinst.models.anchors import generate_anchors

    pyramid = m.fpn(m.backbone(images))
    outs = [m.head(p) for p in pyramid]
    cls, box, coeffs = (torch.cat([o[i] for o in outs], dim=1) for i in range(3))
    # generate_anchors, not the model's cache: the cache key needs concrete sizes
    anchors = generate_anchors([tuple(p.shape[-2:]) for p in pyramid], tuple(images.shape[-2:]),
                               m.level_scales, m.cfg.aspect_ratios, m.cfg.square_anchors,
                               device=images.device, dtype=images.dtype)
    if m.protonet is None:
        return cls, box, coeffs, anchors
    return cls, box, coeffs, m.protonet(pyramid[0]), anchors


@torch.no_grad()
def raw_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The eager raw outputs, by name (what the ONNX graph computes)."""
    net = RawNetwork(model).eval()
    return dict(zip(net.names, net(images)))


@torch.no_grad()
def postprocess_raw(model: nn.Module, raw: dict[str, torch.Tensor],
                    input_size: tuple[int, int]) -> list[dict]:
    """The model's own eval post-processing on raw outputs: the same per-image prediction
    dicts as ``model(images)`` in eval mode (``rtinst.engine.inference``)."""
    name = model.cfg.name
    if name == "fastinst":
        stage = {"class_logits": raw["class_logits"], "mask_logits": raw["mask_logits"]}
        return model.inference({"stages": [stage]}, tuple(input_size))
    if name == "sparseinst":
        return model.post({"logits": raw["logits"], "objectness": raw.get("objectness"),
                           "masks": raw["masks"]})
    protos = raw.get("prototypes")
    proto_size = (tuple(protos.shape[-2:]) if protos is not None
                  else _proto_size(raw["anchors"], input_size))
    return model.postprocess(raw["class_logits"], raw["box_deltas"], raw["mask_coefficients"],
                             protos, raw["anchors"], tuple(input_size), proto_size)


def _proto_size(anchors: torch.Tensor, input_size) -> tuple[int, int]:
    """fc-mask YOLACT pastes its masks on the grid prototypes would have (2x P3). P3 is the
    first anchor level, whose first centre sits half a cell from the origin."""
    cx0, cy0 = float(anchors[0, 0]), float(anchors[0, 1])
    return 2 * round(input_size[0] / (2 * cy0)), 2 * round(input_size[1] / (2 * cx0))


# ------------------------------------------------------------------------- export


@dataclass
class ExportReport:
    path: str
    model: str
    outputs: list[str]
    dynamic: dict[str, bool]  # batch / height / width: symbolic in the graph?
    ranges: dict[str, list]  # [min, max or None] of each symbolic axis
    example_size: list[int]
    opset: int
    export_s: float
    max_abs_diff: dict[str, float]  # onnxruntime vs eager on the example input

    def to_dict(self) -> dict:
        return dict(self.__dict__)


AXES = {"batch": 0, "height": 2, "width": 3}


def _dynamic_dims(ep) -> tuple[dict[str, bool], dict[str, list]]:
    """Which input axes stayed symbolic, and the range torch.export proved for each.
    The ranges are recorded, not enforced: they include torch's own assumptions (every
    symbolic size >= 2) and eager stride guards (YOLACT's P7 of more than one cell: height
    >= 65), while the graph matches eager at batch 1 and at 64x64 (tests/test_export_onnx.py)."""
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == INPUT_NAME)
    shape = node.meta["val"].shape
    dynamic, ranges = {}, {}
    for axis, i in AXES.items():
        dim = shape[i]
        dynamic[axis] = not isinstance(dim, int)
        if dynamic[axis]:
            r = ep.range_constraints[dim.node.expr]
            ranges[axis] = [_bound(r.lower), _bound(r.upper)]
    return dynamic, ranges


def _bound(value) -> int | None:
    """A sympy range bound as an int; None for torch's integer infinity (no bound)."""
    try:
        bound = int(value)
    except (AttributeError, OverflowError, TypeError):
        return None
    return bound if abs(bound) < 2 ** 62 else None


def export_onnx(model: nn.Module, out: str | Path,
                example_size: Sequence[int] = EXAMPLE_SIZE, dynamic: bool = True,
                opset: int = OPSET, verify: bool = True) -> ExportReport:
    """Write ``model``'s :class:`RawNetwork` as ONNX to ``out`` (atomically).

    ``dynamic``: batch, height and width symbolic where the model allows (the report and
    the file's metadata say which stayed so); else fixed at the example (batch 1).
    ``verify``: run the file once in onnxruntime on the example and record the max abs
    difference of every output against eager PyTorch."""
    from torch.export import Dim

    model.eval()
    net = RawNetwork(model, export_friendly=dynamic).eval()
    h, w = (int(s) for s in example_size)
    example = torch.randn(2 if dynamic else 1, 3, h, w, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    shapes = {INPUT_NAME: {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}} if dynamic else None
    with torch.no_grad():
        ep = torch.export.export(_Named(net), (example,), dynamic_shapes=shapes, strict=False)
    dims, ranges = _dynamic_dims(ep)
    program = torch.onnx.export(ep, (example,), input_names=[INPUT_NAME], output_names=net.names,
                                opset_version=opset, dynamo=True, verbose=False,
                                report=False)
    meta = {"model": model.cfg.name, "outputs": net.names, "dynamic": dims, "ranges": ranges,
            "example_size": [h, w], "post_processing": "python (rtinst.engine.export.OnnxDetector)"}
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        program.save(str(tmp))
    elapsed = time.perf_counter() - start
    diffs: dict[str, float] = {}
    if verify:
        with torch.no_grad():
            ref = RawNetwork(model).eval()(example)
        got = OnnxDetector(out, model).raw(example)
        diffs = {k: float((got[k] - r).abs().max()) if r.numel() else 0.0
                 for k, r in zip(net.names, ref)}
    return ExportReport(str(out), model.cfg.name, net.names, dims, ranges, [h, w], opset,
                        elapsed, diffs)


class _Named(nn.Module):
    """Gives the exported input the name ``images`` (torch.export names it after the argument)."""

    def __init__(self, net: RawNetwork):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor):
        return self.net(images)


# ------------------------------------------------------------------------- runtime


def providers(device: str = "cpu") -> list[str]:
    """onnxruntime execution providers for ``device`` (CUDA first when asked and available)."""
    import onnxruntime as ort

    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(f"device {device}: this onnxruntime has no CUDAExecutionProvider "
                            f"(available: {', '.join(ort.get_available_providers())}); install "
                            "onnxruntime-gpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxDetector:
    """An exported model in onnxruntime with the model's Python post-processing:
    ``detector(images)`` returns what ``model(images)`` returns in eval mode.

    ``model``: the same detector (config and post-processing settings; its weights are not
    used). ``threads``: onnxruntime's intra-op threads (default: its own choice)."""

    def __init__(self, path: str | Path, model: nn.Module, device: str = "cpu",
                 threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: ONNX file not found")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=providers(device))
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise UserError(f"{path}: not an rtinst export (no '{METADATA_KEY}' metadata)")
        self.meta = json.loads(meta)
        if self.meta["model"] != model.cfg.name:
            raise UserError(f"{path}: exported from a {self.meta['model']} model, "
                            f"but the config is {model.cfg.name}")
        self.model, self.path = model.eval(), path
        self.names = [o.name for o in self.session.get_outputs()]

    def _check(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise UserError(f"{self.path}: expects images (B, 3, H, W), got {tuple(images.shape)}")
        fixed = self.session.get_inputs()[0].shape
        for axis, i in AXES.items():
            if isinstance(fixed[i], int) and images.shape[i] != fixed[i]:
                raise UserError(f"{self.path}: exported with a fixed {axis} of {fixed[i]}, got "
                                f"{images.shape[i]} (re-export at this size, or with dynamic "
                                "shapes where the model allows)")

    def raw(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check(images)
        out = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(images.cpu().numpy(),
                                                                      dtype=np.float32)})
        return {k: torch.from_numpy(v) for k, v in zip(self.names, out)}

    def __call__(self, images: torch.Tensor, targets: Any = None) -> list[dict]:
        return postprocess_raw(self.model, self.raw(images), tuple(images.shape[-2:]))
