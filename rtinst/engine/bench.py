"""Cost of a model: FLOPs, parameters, latency and a per-module latency breakdown.

FLOPs
    Counted with ``fvcore.nn.FlopCountAnalysis`` (a JIT trace, eval mode, no grad), where
    one fused multiply-add is one flop. Two conventions:

    ``"detectron2"`` (default, the one FastInst and SparseInst report)
        fvcore's handlers, minus the ops in :data:`DETECTRON2_IGNORED_OPS` (the set
        ``detectron2.utils.analysis.FlopCountAnalysis`` ignores: batch_norm, which folds into
        the conv at inference, plus cheap elementwise/reduction ops, max_pool2d and nms)
        and :data:`DATA_MOVEMENT_OPS` (no arithmetic), plus the handlers in
        :data:`EXTRA_HANDLERS` for ops our models use that fvcore skips silently.
        Norms other than batch_norm (group_norm, layer_norm, instance_norm), upsampling,
        adaptive_avg_pool2d and grid_sampler stay counted: detectron2 does not ignore them.
    ``"fvcore"``
        plain fvcore defaults (batch_norm counted, no extra handlers); reproduces the
        numbers a bare ``FlopCountAnalysis(model, x).total()`` gives.

    In both, fvcore's own list of no-arithmetic ops (view, cat, relu, slicing, ...) is
    never counted. Ops with no handler are not counted but are *reported* per operator in
    ``FlopReport.uncounted_ops``, so nothing is skipped silently.

    Extra handlers (all multiply-add counts, bias and scaling left out as in fvcore):

    - ``torchvision::deform_conv2d``: the MACs of a regular conv of the same shapes,
      ``out.numel() * Cin/groups * kh * kw``. The bilinear sampling of the offset input
      (4 MACs per sampled value) and the DCNv2 mask product are not counted. Note that
      detectron2's own DCN is a Python autograd op that fvcore cannot see, so papers'
      GFLOPs for DCN backbones count DCN layers as 0: subtract ``per_operator_gflops
      ["deform_conv2d"]`` to compare with them.
    - ``aten::scaled_dot_product_attention``: the two matmuls,
      ``B*H*Lq*Lk*d`` (Q K^T) + ``B*H*Lq*Lk*dv`` (attention @ V); softmax not counted.
    - ``aten::baddbmm``: the batched product ``b*n*m*p`` (nn.MultiheadAttention with a mask).
    - ``aten::grid_sampler_2d``: as fvcore's ``aten::grid_sampler`` (bilinear): 4 per
      output element, i.e. ``4 * N*C*Hout*Wout`` (MSDeformAttn's sampling).

    nn.MultiheadAttention's fused inference fast path is switched off while tracing, so it
    is counted through its parts: in-projection (linear), Q K^T and attention @ V
    (bmm/baddbmm/sdpa) and out-projection (linear). einsum, bmm, matmul, linear and conv
    use fvcore's built-in handlers.

Latency
    Batch as given (1 for the papers), eval mode, ``torch.inference_mode``, warm-up runs,
    then wall-clock times of ``iters`` runs. On CUDA, ``torch.cuda.synchronize`` after each
    run (as the papers' FPS scripts). FP16 means a ``.half()`` copy of the model fed
    ``.half()`` inputs (the usual meaning of the papers' FP16 numbers), not autocast; it
    needs CUDA. On CPU the torch thread count is fixed for the measurement, recorded, and
    restored afterwards. FPS = 1000 / mean latency (ms).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import statistics
import time
import warnings
from collections import Counter
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rtinst.errors import UserError
from rtinst.provenance import provenance

# Copied as a list of names from detectron2.utils.analysis._IGNORED_OPS (detectron2 main).
DETECTRON2_IGNORED_OPS = frozenset({
    "aten::add", "aten::add_", "aten::argmax", "aten::argsort", "aten::batch_norm",
    "aten::constant_pad_nd", "aten::div", "aten::div_", "aten::exp", "aten::log2",
    "aten::max_pool2d", "aten::meshgrid", "aten::mul", "aten::mul_", "aten::neg",
    "aten::nonzero_numpy", "aten::reciprocal", "aten::repeat_interleave", "aten::rsub",
    "aten::sigmoid", "aten::sigmoid_", "aten::softmax", "aten::sort", "aten::sqrt",
    "aten::sub", "torchvision::nms",
})

# Pure data movement (no arithmetic) that fvcore's own no-flop list misses; ignored in the
# detectron2 convention so ``uncounted_ops`` lists only ops that may really cost something.
DATA_MOVEMENT_OPS = frozenset({
    "aten::unflatten", "aten::clone", "aten::expand_as", "aten::view_as", "aten::repeat",
    "aten::flip", "aten::movedim",
})

CONVENTIONS = ("detectron2", "fvcore")


# ----------------------------------------------------------------------------- FLOPs


def _fvcore():
    with warnings.catch_warnings():  # fvcore scripts a loss at import: torch.jit FutureWarning
        warnings.simplefilter("ignore", FutureWarning)
        import fvcore.nn
        import fvcore.nn.jit_handles
    return fvcore.nn


def _shape(value) -> list[int]:
    return _fvcore().jit_handles.get_shape(value)


def deform_conv2d_flops(inputs: list, outputs: list) -> int:
    """torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): conv MACs."""
    weight = _shape(inputs[1])  # (Cout, Cin/groups, kh, kw)
    return math.prod(_shape(outputs[0])) * math.prod(weight[1:])


def sdpa_flops(inputs: list, outputs: list) -> int:
    """aten::scaled_dot_product_attention(q, k, v, ...): Q K^T plus attention @ V."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch, (lq, d), lk, dv = math.prod(q[:-2]), q[-2:], k[-2], v[-1]
    return batch * lq * lk * (d + dv)


def baddbmm_flops(inputs: list, outputs: list) -> int:
    """aten::baddbmm(bias, batch1, batch2, beta, alpha): the batched matmul only."""
    b, n, m = _shape(inputs[1])
    return b * n * m * _shape(inputs[2])[-1]


def grid_sampler_flops(inputs: list, outputs: list) -> int:
    """Bilinear sampling: 4 MACs per output element (fvcore's aten::grid_sampler rule)."""
    return 4 * math.prod(_shape(outputs[0]))


EXTRA_HANDLERS: dict[str, Callable] = {
    "torchvision::deform_conv2d": deform_conv2d_flops,
    "aten::scaled_dot_product_attention": sdpa_flops,
    "aten::baddbmm": baddbmm_flops,
    "aten::grid_sampler_2d": grid_sampler_flops,
}


@dataclasses.dataclass
class FlopReport:
    """FLOPs of one forward pass (1 multiply-add = 1 flop)."""

    convention: str
    total_flops: int
    gflops: float
    per_module_gflops: dict[str, float]  # top-level children and (dotted) grandchildren
    per_operator_gflops: dict[str, float]
    ignored_ops: dict[str, int]  # left out by the convention -> occurrences in this trace
    uncounted_ops: dict[str, int]  # no handler, not counted -> occurrences
    input_size: list[list[int]]
    provenance: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _TensorOutputs(nn.Module):
    """Traces ``model`` and returns every tensor of its (nested) output as a flat tuple,
    so dict/list/dataclass outputs trace and no output-producing op is dropped."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return tuple(_flatten_tensors(self.model(*args)))


def _flatten_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _flatten_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _flatten_tensors(v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _flatten_tensors(getattr(obj, f.name))


def _as_args(inputs: Any) -> tuple:
    """A tensor is one positional argument; a tuple/list is the positional arguments."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _input_size(args: tuple) -> list[list[int]]:
    return [list(t.shape) for t in _flatten_tensors(list(args))]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own training flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def _mha_fastpath(enabled: bool) -> Iterator[None]:
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _flop_analysis(model: nn.Module, args: tuple, convention: str):
    analysis = _fvcore().FlopCountAnalysis(_TensorOutputs(model), args)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    ignored: Counter = Counter()
    if convention == "detectron2":
        analysis.set_op_handle(**EXTRA_HANDLERS)
        for op in DETECTRON2_IGNORED_OPS | DATA_MOVEMENT_OPS:  # a handler that counts 0 but notes the op
            analysis.set_op_handle(op, _noting_ignored(op, ignored))
    return analysis, ignored


def _noting_ignored(op: str, seen: Counter) -> Callable:
    def handle(inputs, outputs):
        seen[op] += 1
        return Counter()

    return handle


def count_flops(model: nn.Module, inputs: Any, convention: str = "detectron2",
                depth: int = 2) -> FlopReport:
    """Count the FLOPs of ``model(*inputs)`` (``inputs``: a tensor or a tuple of tensors).

    The model is traced in eval mode without grad, on whatever device it is on; every
    submodule's training flag is restored afterwards. Outputs may be nested dicts/lists.
    ``per_module_gflops`` holds modules up to ``depth`` levels below the model.
    """
    if convention not in CONVENTIONS:
        raise UserError(f"unknown FLOP convention {convention!r}; choose one of {CONVENTIONS}")
    args = _as_args(inputs)
    with eval_mode(model), torch.no_grad(), _mha_fastpath(False):
        analysis, ignored = _flop_analysis(model, args, convention)
        total = int(analysis.total())
        by_module = analysis.by_module()
        by_operator = analysis.by_operator()
        uncounted = analysis.unsupported_ops()
    per_module = {}
    for name, flops in by_module.items():
        if name.startswith("model.") and name.count(".") <= depth:
            per_module[name[len("model."):]] = flops / 1e9
    device = next((str(p.device) for p in model.parameters()), "cpu")
    return FlopReport(
        convention=convention, total_flops=total, gflops=total / 1e9,
        per_module_gflops=per_module,
        per_operator_gflops={k: v / 1e9 for k, v in sorted(by_operator.items())},
        ignored_ops=dict(sorted(ignored.items())), uncounted_ops=dict(sorted(uncounted.items())),
        input_size=_input_size(args), provenance=provenance(device),
    )


# ---------------------------------------------------------------------------- params


def count_params(model: nn.Module) -> dict:
    """Parameter counts: total, trainable and per top-level child (shared ones once)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    per_module = {name: sum(p.numel() for p in child.parameters())
                  for name, child in model.named_children()}
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        per_module["(own)"] = own
    return {
        "total": total, "trainable": trainable,
        "total_M": total / 1e6, "trainable_M": trainable / 1e6,
        "per_module": per_module, "per_module_M": {k: v / 1e6 for k, v in per_module.items()},
    }


# --------------------------------------------------------------------------- latency


def _check_device(device: str | torch.device, fp16: bool) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device} requested but CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if fp16 and device.type != "cuda":
        raise UserError("fp16 timing needs a CUDA device (a .half() model on CPU is not "
                        "what the papers measure)")
    return device


def _to(obj: Any, device: torch.device, half: bool) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device)
        return obj.half() if half and obj.is_floating_point() else obj
    if isinstance(obj, Mapping):
        return {k: _to(v, device, half) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device, half) for v in obj)
    return obj


def _on_device(model: nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*model.parameters(), *model.buffers()])


@contextlib.contextmanager
def _bench_setup(model: Any, inputs: Any, device: Any, fp16: bool, threads: int | None):
    """Yield (runnable, args, device): the model in eval mode on ``device`` (a ``.half()``
    copy for fp16, a copy when it lives elsewhere, else itself), inputs moved there, with
    ``threads`` torch threads; the caller's model, flags and thread count are restored."""
    device = _check_device(device, fp16)
    if threads is not None and threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        args = _to(_as_args(inputs), device, fp16)
        if not isinstance(model, nn.Module):
            yield model, args, device
        elif fp16 or not _on_device(model, device):
            runnable = copy.deepcopy(model).to(device).eval()
            yield (runnable.half() if fp16 else runnable), args, device
        else:
            with eval_mode(model):
                yield model, args, device
    finally:
        torch.set_num_threads(previous_threads)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_runs(step: Callable[[], None], device: torch.device, warmup: int, iters: int,
                desc: str, progress: bool | None) -> list[float]:
    """Milliseconds of each of ``iters`` calls of ``step`` after ``warmup`` untimed ones."""
    if warmup < 0 or iters < 1:
        raise UserError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    disable = None if progress is None else not progress  # None: tqdm shows bars on a TTY
    times = []
    with torch.inference_mode():
        for _ in tqdm(range(warmup), desc=f"{desc} (warm-up)", disable=disable, leave=False):
            step()
        _sync(device)
        for _ in tqdm(range(iters), desc=desc, disable=disable, leave=False):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def _timing_note(device: torch.device, fp16: bool, per_module: bool) -> str:
    note = "wall clock per run"
    if device.type == "cuda":
        note += ", torch.cuda.synchronize after each run"
        if per_module:
            note += " and around each part (asynchronous execution disabled)"
    if fp16:
        note += ", fp16 = .half() model and inputs"
    return note


@dataclasses.dataclass
class LatencyRecord:
    """Latency of ``model(*inputs)`` (+ post-processing when included), in milliseconds."""

    kind: str  # "GPU latency" or "CPU latency": never compare the two
    device: str
    precision: str  # "fp32" or "fp16"
    threads: int
    input_size: list[list[int]]
    postprocess_included: bool
    warmup: int
    iters: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    fps: float  # 1000 / mean_ms
    timing: str
    provenance: dict
    times_ms: list[float]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _kind(device: torch.device) -> str:
    return "GPU latency" if device.type == "cuda" else "CPU latency"


def measure_latency(model_or_callable: Any, inputs: Any, device: str = "cpu", warmup: int = 10,
                    iters: int = 50, fp16: bool = False, threads: int | None = None,
                    postprocess: Callable[[Any], Any] | None = None,
                    progress: bool | None = None) -> LatencyRecord:
    """Time ``model_or_callable(*inputs)``, then ``postprocess(outputs)`` when given.

    ``inputs`` is a tensor or a tuple of positional arguments, moved to ``device``. A module
    runs in eval mode under ``torch.inference_mode``; the caller's module is left as it
    was. ``threads`` fixes torch's thread count for the measurement (restored after).
    """
    with _bench_setup(model_or_callable, inputs, device, fp16, threads) as (run, args, dev):
        def step():
            out = run(*args)
            if postprocess is not None:
                postprocess(out)

        times = _timed_runs(step, dev, warmup, iters, "latency", progress)
        used_threads, prov = torch.get_num_threads(), provenance(str(dev))
    mean = statistics.fmean(times)
    return LatencyRecord(
        kind=_kind(dev), device=str(dev), precision="fp16" if fp16 else "fp32",
        threads=used_threads, input_size=_input_size(args),
        postprocess_included=postprocess is not None, warmup=warmup, iters=iters,
        median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)),
        mean_ms=mean, std_ms=float(np.std(times)), min_ms=min(times), fps=1000.0 / mean,
        timing=_timing_note(dev, fp16, per_module=False), provenance=prov, times_ms=times,
    )


# ------------------------------------------------------------------ module breakdown

_RESERVED_PARTS = ("other", "postprocess", "total")


@dataclasses.dataclass
class BreakdownRecord:
    """Mean time per image spent in each part (SparseInst Table 8 style)."""

    kind: str
    device: str
    precision: str
    threads: int
    input_size: list[list[int]]
    postprocess_included: bool
    warmup: int
    iters: int
    total_ms: float  # mean of forward (+ post-processing) with the per-part syncs
    parts_ms: dict[str, float]  # the parts, "postprocess" when timed, and "other"
    parts_pct: dict[str, float]
    timing: str
    provenance: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _part_paths(model: nn.Module, modules: Mapping[str, nn.Module | str] | None) -> dict:
    """Map each part name to its dotted submodule path; parts must not nest."""
    if modules is None:
        modules = dict(model.named_children())
    paths = {id(m): name for name, m in model.named_modules()}
    out = {}
    for part, module in modules.items():
        if part in _RESERVED_PARTS:
            raise UserError(f"breakdown part name {part!r} is reserved; rename it")
        path = module if isinstance(module, str) else paths.get(id(module), "")
        try:
            found = bool(path) and model.get_submodule(path) is not None
        except AttributeError:
            found = False
        if not found:
            raise UserError(f"breakdown part {part!r} is not a submodule of the model")
        out[part] = path
    for a, pa in out.items():
        for b, pb in out.items():
            if pb.startswith(pa + "."):
                raise UserError(f"breakdown parts {a!r} and {b!r} nest; parts must be disjoint")
    return out


def _timing_hooks(parts: Mapping[str, nn.Module], device: torch.device, acc: Counter) -> list:
    handles = []
    for part, module in parts.items():
        starts: list[float] = []

        def pre(mod, args, starts=starts):
            _sync(device)
            starts.append(time.perf_counter())

        def post(mod, args, out, part=part, starts=starts):
            _sync(device)
            acc[part] += (time.perf_counter() - starts.pop()) * 1e3

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def module_breakdown(model: nn.Module, inputs: Any,
                     modules: Mapping[str, nn.Module | str] | None = None,
                     postprocess: Callable[[Any], Any] | None = None, device: str = "cpu",
                     warmup: int = 10, iters: int = 50, fp16: bool = False,
                     threads: int | None = None, progress: bool | None = None) -> BreakdownRecord:
    """Time each part of ``model`` (``{"backbone": model.backbone, ...}`` or dotted names;
    default: its top-level children) with forward pre/post hooks that synchronize CUDA,
    plus ``postprocess(outputs)``; whatever the parts do not cover is "other"."""
    if not isinstance(model, nn.Module):
        raise UserError("module_breakdown needs an nn.Module")
    part_paths = _part_paths(model, modules)
    rows: list[dict] = []
    with _bench_setup(model, inputs, device, fp16, threads) as (run, args, dev):
        acc: Counter = Counter()
        handles = _timing_hooks({p: run.get_submodule(s) for p, s in part_paths.items()}, dev, acc)

        def step():
            acc.clear()
            start = time.perf_counter()
            out = run(*args)
            _sync(dev)
            if postprocess is not None:
                post_start = time.perf_counter()
                postprocess(out)
                _sync(dev)
                acc["postprocess"] += (time.perf_counter() - post_start) * 1e3
            acc["total"] = (time.perf_counter() - start) * 1e3
            rows.append(dict(acc))

        try:
            _timed_runs(step, dev, warmup, iters, "breakdown", progress)
        finally:
            for h in handles:
                h.remove()
        used_threads, prov = torch.get_num_threads(), provenance(str(dev))
    rows = rows[-iters:]
    names = [*part_paths, *(["postprocess"] if postprocess is not None else [])]
    mean = {n: statistics.fmean(r.get(n, 0.0) for r in rows) for n in [*names, "total"]}
    total = mean.pop("total")
    mean["other"] = max(total - sum(mean.values()), 0.0)
    return BreakdownRecord(
        kind=_kind(dev), device=str(dev), precision="fp16" if fp16 else "fp32",
        threads=used_threads, input_size=_input_size(args),
        postprocess_included=postprocess is not None, warmup=warmup, iters=iters,
        total_ms=total, parts_ms=mean, parts_pct={n: 100 * v / total for n, v in mean.items()},
        timing=_timing_note(dev, fp16, per_module=True), provenance=prov,
    )
